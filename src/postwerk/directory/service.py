"""Directory operations with their rules: what `postwerk domain|mailbox|alias|group` do.

The store keeps records; this module decides what is allowed (addresses must
be in an accepted domain, a proxy address belongs to one recipient, passwords
are hashed with argon2id) and provisions a new mailbox's folders.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from postwerk.core.addresses import Address, normalize_domain, parse_address
from postwerk.core.errors import AlreadyExists, InvalidName, NotFound
from postwerk.directory.credential_cache import CredentialCache
from postwerk.directory.passwords import PasswordHasher
from postwerk.directory.placement import pick_database
from postwerk.store.api import DirectoryStore, MailStore
from postwerk.store.records import (
    AcceptedDomain,
    DomainType,
    MailboxDatabase,
    Recipient,
    RecipientKind,
)


@dataclass
class Directory:
    store: DirectoryStore
    mail: MailStore
    hasher: PasswordHasher
    # Verified (hash, password) pairs: argon2id off the repeat-login path. None: off.
    credentials: CredentialCache | None = field(
        default_factory=lambda: CredentialCache(time.monotonic)
    )
    _dummy_hash: str = field(default="", init=False, repr=False)

    # ------------------------------------------------------------ domains

    async def add_domain(
        self, name: str, type: DomainType = DomainType.AUTHORITATIVE, default: bool = False
    ) -> AcceptedDomain:
        domain = normalize_domain(name)
        if domain.startswith("["):
            raise InvalidName("an accepted domain cannot be an address literal")
        existing = {d.name for d in await self.store.list_domains()}
        if domain in existing:
            raise AlreadyExists(f"accepted domain {domain} exists")
        return await self.store.add_domain(domain, type, default=default or not existing)

    async def accepted_domain(self, domain: str) -> AcceptedDomain | None:
        for d in await self.store.list_domains():
            if d.name == domain:
                return d
        return None

    async def remove_domain(self, name: str) -> None:
        domain = normalize_domain(name)
        users = [
            r
            for r in await self.store.list_recipients()
            if r.primary_address.rsplit("@", 1)[1] == domain
        ]
        if users:
            raise AlreadyExists(f"{len(users)} recipient(s) still use {domain}; remove them first")
        await self.store.remove_domain(domain)

    # ------------------------------------------------------------ recipients

    async def _checked_address(self, text: str) -> Address:
        address = parse_address(text.strip(), allow_utf8=True)
        if address.local.startswith('"'):
            raise InvalidName("quoted local parts are not allowed for recipients")
        if await self.accepted_domain(address.domain) is None:
            raise InvalidName(f"{address.domain} is not an accepted domain")
        if await self.store.find_recipient(str(address)) is not None:
            raise AlreadyExists(f"{address} is already a proxy address of a recipient")
        return address

    async def add_mailbox(
        self,
        address: str,
        password: str,
        display_name: str = "",
        quota_bytes: int | None = None,
        database: str | None = None,
    ) -> Recipient:
        """`database`: the mailbox database to create it in; None spreads new mailboxes
        over the live Mailbox servers' databases (directory/placement.py)."""
        addr = await self._checked_address(address)
        if not password:
            raise InvalidName("the password must not be empty")
        if database is None:
            database = await pick_database(self.store)
        else:
            await self.mailbox_database(database)
        recipient = await self.store.add_recipient(
            RecipientKind.MAILBOX,
            str(addr),
            display_name or addr.local,
            password_hash=self.hasher.hash(password),
            quota_bytes=quota_bytes,
            database=database,
        )
        await self.mail.create_default_folders(recipient.id)
        return recipient

    async def mailbox_database(self, name: str) -> MailboxDatabase:
        for db in await self.store.list_mailbox_databases():
            if db.name.lower() == name.lower():
                return db
        raise NotFound(f"no mailbox database {name}")

    async def add_mailbox_database(self, name: str, server: str) -> MailboxDatabase:
        """A new mailbox database mounted on `server` (a registered Mailbox server)."""
        name = name.strip()
        if not name or any(c in name for c in "\t\r\n"):
            raise InvalidName("a mailbox database needs a one-line name")
        if any(db.name.lower() == name.lower() for db in await self.store.list_mailbox_databases()):
            raise AlreadyExists(f"mailbox database {name} exists")
        return await self.store.put_mailbox_database(
            MailboxDatabase(name, await self._mailbox_server(server))
        )

    async def _mailbox_server(self, server: str) -> str:
        for record in await self.store.list_servers():
            if record.name == server.upper() or record.fqdn.lower() == server.lower():
                if "mailbox" not in record.roles:
                    raise InvalidName(f"server {record.name} does not have the Mailbox role")
                return record.name
        raise NotFound(f"no server {server} in the organization")

    async def move_mailbox(self, address: str, database: str) -> tuple[str | None, str]:
        """Re-home a mailbox in `database` (New-MoveRequest -TargetDatabase): its
        folders, items and UIDs stay; the next login and delivery go to the database's
        server. Returns (old database, new database)."""
        recipient = await self.get(address, RecipientKind.MAILBOX)
        target = await self.mailbox_database(database)
        await self.store.set_recipient_database(recipient.id, target.name)
        return recipient.database, target.name

    async def add_group(self, address: str, display_name: str = "") -> Recipient:
        addr = await self._checked_address(address)
        return await self.store.add_recipient(
            RecipientKind.GROUP, str(addr), display_name or addr.local
        )

    async def get(self, address: str, kind: RecipientKind | None = None) -> Recipient:
        recipient = await self.store.find_recipient(address.strip())
        if recipient is None or (kind is not None and recipient.kind != kind):
            what = kind.value if kind else "recipient"
            raise NotFound(f"no {what} with address {address}")
        return recipient

    async def remove(self, address: str, kind: RecipientKind) -> list[str]:
        """Remove a recipient; returns blob ids that the mailbox no longer references."""
        recipient = await self.get(address, kind)
        blobs: list[str] = []
        if recipient.kind == RecipientKind.MAILBOX:
            blobs = await self.mail.delete_mailbox(recipient.id)
        await self.store.remove_recipient(recipient.id)
        return blobs

    async def set_quota(self, address: str, quota_bytes: int | None) -> Recipient:
        """Set-Mailbox -ProhibitSendReceiveQuota: the storage limit (None: unlimited)."""
        if quota_bytes is not None and quota_bytes < 0:
            raise InvalidName("the quota must not be negative")
        recipient = await self.get(address, RecipientKind.MAILBOX)
        await self.store.set_quota(recipient.id, quota_bytes)
        found = await self.store.get_recipient(recipient.id)
        assert found is not None
        return found

    async def set_password(self, address: str, password: str) -> None:
        if not password:
            raise InvalidName("the password must not be empty")
        recipient = await self.get(address, RecipientKind.MAILBOX)
        await self.store.set_password_hash(recipient.id, self.hasher.hash(password))

    async def add_alias(self, owner: str, alias: str) -> None:
        recipient = await self.get(owner)
        addr = await self._checked_address(alias)
        await self.store.add_alias(recipient.id, str(addr))

    async def remove_alias(self, alias: str) -> None:
        recipient = await self.get(alias)
        if recipient.primary_address.lower() == alias.strip().lower():
            raise InvalidName("that is a primary address; remove the recipient instead")
        await self.store.remove_alias(alias.strip())

    async def add_member(self, group: str, member: str) -> None:
        recipient = await self.get(group, RecipientKind.GROUP)
        # Members may be external addresses (Exchange mail contacts); validate syntax only.
        addr = parse_address(member.strip())
        if str(addr).lower() in (m.lower() for m in await self.store.group_members(recipient.id)):
            raise AlreadyExists(f"{addr} is already a member of {recipient.primary_address}")
        await self.store.add_group_member(recipient.id, str(addr))

    async def remove_member(self, group: str, member: str) -> None:
        recipient = await self.get(group, RecipientKind.GROUP)
        await self.store.remove_group_member(recipient.id, member.strip())

    async def members(self, group: str) -> list[str]:
        recipient = await self.get(group, RecipientKind.GROUP)
        return await self.store.group_members(recipient.id)

    async def authenticate(self, login: str, password: str) -> Recipient | None:
        """The mailbox whose primary address or alias is `login`, if the password matches."""
        recipient = await self.store.find_recipient(login.strip())
        if (
            recipient is None
            or recipient.kind != RecipientKind.MAILBOX
            or not recipient.enabled
            or not recipient.password_hash
        ):
            # Spend the same time as a real check so that timing does not reveal addresses.
            if not self._dummy_hash:
                self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
            await self.hasher.verify(self._dummy_hash, password)
            return None
        cache = self.credentials
        if cache is not None and cache.known(recipient.password_hash, password):
            return recipient
        if await self.hasher.verify(recipient.password_hash, password):
            if cache is not None:
                cache.remember(recipient.password_hash, password)
            return recipient
        return None
