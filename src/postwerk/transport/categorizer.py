"""The categorizer: resolve recipients and decide each one's next hop.

Aliases resolve to their mailbox; distribution groups expand (recursively,
each member once, loops cut) as Exchange's categorizer does. Next hops in M1:
a mailbox in this organization (`mailbox:<id>`), or for addresses outside the
authoritative domains (and unknown ones in internal-relay domains) the next hop
of the send connector that routes their domain (`transport/routing.py`), or
`Unreachable` when none does. Duplicates collapse: one delivery per next hop and
address per message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from postwerk.core.addresses import parse_address
from postwerk.core.errors import InvalidName
from postwerk.directory.cache import RecipientLookup
from postwerk.store.records import DomainType, Recipient, RecipientKind
from postwerk.transport.routing import UNREACHABLE, intra_org_hop, route

MAILBOX_HOP = "mailbox:"  # + mailbox id: delivered by this organization's store driver
MAX_EXPANSION_DEPTH = 10


def mailbox_hop(mailbox_id: int) -> str:
    return f"{MAILBOX_HOP}{mailbox_id}"


@dataclass(frozen=True, slots=True)
class Resolved:
    address: str  # the address delivered to (primary address for mailboxes)
    next_hop: str
    original: str  # the envelope recipient it came from (ORCPT for DSNs)
    expanded_from: str = ""  # group address, when it came from an expansion


@dataclass
class Categorization:
    recipients: list[Resolved] = field(default_factory=list)
    resolved: list[tuple[str, str]] = field(default_factory=list)  # (from, to) alias resolutions
    expanded: list[tuple[str, list[str]]] = field(default_factory=list)  # (group, members)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reason)


@dataclass
class Categorizer:
    directory: RecipientLookup
    server_name: str | None = None  # for connectors restricted to source servers
    # The label of the Mailbox server serving a mailbox when that is another server
    # (directory/placement.py), None when this server delivers to it.
    hosted_elsewhere: Callable[[Recipient], Awaitable[str | None]] | None = None

    async def categorize(self, recipients: Sequence[str]) -> Categorization:
        result = Categorization()
        domains = {d.name: d.type for d in await self.directory.list_domains()}
        seen_hops: set[tuple[str, str]] = set()
        for original in recipients:
            await self._resolve(original, original, "", domains, result, seen_hops, set(), 0)
        return result

    async def _resolve(
        self,
        address: str,
        original: str,
        group: str,
        domains: dict[str, DomainType],
        result: Categorization,
        seen: set[tuple[str, str]],
        groups_open: set[str],
        depth: int,
    ) -> None:
        recipient = await self.directory.find_recipient(address)
        if recipient is None:
            try:
                domain = parse_address(address).domain
            except InvalidName:
                result.failed.append((address, "invalid address"))
                return
            if domains.get(domain) == DomainType.AUTHORITATIVE:
                # Accepted at RCPT time but gone since (removed meanwhile): a permanent failure.
                result.failed.append((address, "recipient not found"))
                return
            found = route(await self.directory.list_send_connectors(), domain, self.server_name)
            hop = found.next_hop if found is not None else UNREACHABLE
            self._add(result, seen, Resolved(address, hop, original, group))
            return
        if recipient.kind == RecipientKind.MAILBOX:
            if recipient.primary_address.lower() != address.lower():
                result.resolved.append((address, recipient.primary_address))
            hop = mailbox_hop(recipient.id)
            if self.hosted_elsewhere is not None:
                server = await self.hosted_elsewhere(recipient)
                if server is not None:  # Mailbox → Mailbox over SMTP (2525)
                    hop = intra_org_hop(server)
            self._add(result, seen, Resolved(recipient.primary_address, hop, original, group))
            return
        key = recipient.primary_address.lower()
        if key in groups_open or depth >= MAX_EXPANSION_DEPTH:
            return  # a group nested in itself: each member was already reached once
        members = await self.directory.group_members(recipient.id)
        result.expanded.append((recipient.primary_address, members))
        for member in members:
            await self._resolve(
                member,
                original,
                recipient.primary_address,
                domains,
                result,
                seen,
                groups_open | {key},
                depth + 1,
            )

    @staticmethod
    def _add(result: Categorization, seen: set[tuple[str, str]], item: Resolved) -> None:
        key = (item.next_hop, item.address.lower())
        if key in seen:
            return
        seen.add(key)
        result.recipients.append(item)
