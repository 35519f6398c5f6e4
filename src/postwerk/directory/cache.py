"""A short-lived cache of directory lookups for the mail flow (Exchange's recipient cache).

Every RCPT and every categorization asks "is this domain accepted?" and "who
is this address?". Asking the database each time made those lookups the
largest cost of receiving a message, so the transport reads through this
cache. Entries live `ttl` seconds (default 5): an admin's change reaches the
mail flow within that time. Memory is bounded: at most `max_entries`
addresses, oldest first out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from postwerk.store.api import DirectoryStore
from postwerk.store.records import AcceptedDomain, Recipient


class RecipientLookup(Protocol):
    """The reads the transport needs from the directory."""

    async def list_domains(self) -> list[AcceptedDomain]: ...

    async def find_recipient(self, address: str) -> Recipient | None: ...

    async def group_members(self, group_id: int) -> list[str]: ...


@dataclass
class DirectoryCache:
    store: DirectoryStore
    ttl: float = 5.0
    max_entries: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _domains: tuple[float, list[AcceptedDomain]] | None = None
    _recipients: OrderedDict[str, tuple[float, Recipient | None]] = field(
        default_factory=OrderedDict
    )
    _members: dict[int, tuple[float, list[str]]] = field(default_factory=dict)

    def _fresh(self, stamp: float) -> bool:
        return self.clock() - stamp < self.ttl

    async def list_domains(self) -> list[AcceptedDomain]:
        if self._domains is not None and self._fresh(self._domains[0]):
            return self._domains[1]
        domains = await self.store.list_domains()
        self._domains = (self.clock(), domains)
        return domains

    async def find_recipient(self, address: str) -> Recipient | None:
        key = address.lower()
        hit = self._recipients.get(key)
        if hit is not None and self._fresh(hit[0]):
            return hit[1]
        recipient = await self.store.find_recipient(address)
        self._recipients[key] = (self.clock(), recipient)
        self._recipients.move_to_end(key)
        while len(self._recipients) > self.max_entries:
            self._recipients.popitem(last=False)
        return recipient

    async def group_members(self, group_id: int) -> list[str]:
        hit = self._members.get(group_id)
        if hit is not None and self._fresh(hit[0]):
            return hit[1]
        members = await self.store.group_members(group_id)
        if len(self._members) >= self.max_entries:
            self._members.clear()
        self._members[group_id] = (self.clock(), members)
        return members

    def clear(self) -> None:
        self._domains = None
        self._recipients.clear()
        self._members.clear()
