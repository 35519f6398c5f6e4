"""DirectoryStore in dicts, for unit tests. Same semantics as `store.sqlite.directory`."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

from postwerk.core.errors import AlreadyExists, InvalidName, NotFound
from postwerk.store.api import address_key
from postwerk.store.records import (
    AcceptedDomain,
    DomainType,
    MailboxDatabase,
    Organization,
    ProtocolSettings,
    ReceiveConnector,
    Recipient,
    RecipientKind,
    SendConnector,
    ServerRecord,
)


class MemoryDirectory:
    def __init__(self) -> None:
        self._org: Organization | None = None
        self._domains: dict[str, AcceptedDomain] = {}
        self._recipients: dict[int, Recipient] = {}
        self._addresses: dict[str, int] = {}  # address_key -> recipient id
        self._members: dict[int, dict[str, str]] = {}  # group id -> key -> address
        self._connectors: dict[str, ReceiveConnector] = {}
        self._send_connectors: dict[str, SendConnector] = {}
        self._protocols: dict[tuple[str, str], ProtocolSettings] = {}
        self._servers: dict[str, ServerRecord] = {}
        self._databases: dict[str, MailboxDatabase] = {}
        self._next_id = 1

    async def get_organization(self) -> Organization | None:
        return self._org

    async def set_organization(self, name: str) -> Organization:
        created = self._org.created if self._org else time.time()
        secret = self._org.secret if self._org else secrets.token_hex(32)
        self._org = Organization(name, created, secret)
        return self._org

    async def add_domain(
        self, name: str, type: DomainType, default: bool = False
    ) -> AcceptedDomain:
        key = name.lower().rstrip(".")
        if not key:
            raise InvalidName("empty domain name")
        if key in self._domains:
            raise AlreadyExists(f"accepted domain {key} exists")
        if default:
            self._domains = {k: replace(d, default=False) for k, d in self._domains.items()}
        domain = AcceptedDomain(key, type, default)
        self._domains[key] = domain
        return domain

    async def remove_domain(self, name: str) -> None:
        key = name.lower().rstrip(".")
        if self._domains.pop(key, None) is None:
            raise NotFound(f"accepted domain {key} not found")

    async def list_domains(self) -> list[AcceptedDomain]:
        return [self._domains[k] for k in sorted(self._domains)]

    async def add_recipient(
        self,
        kind: RecipientKind,
        primary_address: str,
        display_name: str,
        password_hash: str | None = None,
        quota_bytes: int | None = None,
        database: str | None = None,
    ) -> Recipient:
        if "@" not in primary_address:
            raise InvalidName(f"not an address: {primary_address!r}")
        key = address_key(primary_address)
        if key in self._addresses:
            raise AlreadyExists(f"address {key} is in use")
        rid = self._next_id
        self._next_id += 1
        r = Recipient(
            id=rid,
            kind=kind,
            primary_address=primary_address,
            display_name=display_name,
            password_hash=password_hash,
            quota_bytes=quota_bytes,
            created=time.time(),
            database=database,
        )
        self._recipients[rid] = r
        self._addresses[key] = rid
        return r

    async def remove_recipient(self, recipient_id: int) -> None:
        r = self._recipients.pop(recipient_id, None)
        if r is None:
            raise NotFound(f"recipient {recipient_id} not found")
        for address in (r.primary_address, *r.aliases):
            self._addresses.pop(address_key(address), None)
        self._members.pop(recipient_id, None)

    async def find_recipient(self, address: str) -> Recipient | None:
        rid = self._addresses.get(address_key(address))
        return None if rid is None else self._recipients[rid]

    async def get_recipient(self, recipient_id: int) -> Recipient | None:
        return self._recipients.get(recipient_id)

    async def list_recipients(self, kind: RecipientKind | None = None) -> list[Recipient]:
        return [
            self._recipients[rid]
            for rid in sorted(self._recipients)
            if kind is None or self._recipients[rid].kind == kind
        ]

    async def set_password_hash(self, recipient_id: int, password_hash: str) -> None:
        r = self._require(recipient_id)
        self._recipients[recipient_id] = replace(r, password_hash=password_hash)

    async def set_quota(self, recipient_id: int, quota_bytes: int | None) -> None:
        r = self._require(recipient_id)
        self._recipients[recipient_id] = replace(r, quota_bytes=quota_bytes)

    async def add_alias(self, recipient_id: int, address: str) -> None:
        if "@" not in address:
            raise InvalidName(f"not an address: {address!r}")
        r = self._require(recipient_id)
        key = address_key(address)
        if key in self._addresses:
            raise AlreadyExists(f"address {key} is in use")
        self._addresses[key] = recipient_id
        self._recipients[recipient_id] = replace(r, aliases=(*r.aliases, address))

    async def remove_alias(self, address: str) -> None:
        key = address_key(address)
        rid = self._addresses.get(key)
        if rid is None:
            raise NotFound(f"alias {address} not found")
        r = self._recipients[rid]
        if address_key(r.primary_address) == key:
            raise InvalidName(f"{address} is a primary address, not an alias")
        del self._addresses[key]
        self._recipients[rid] = replace(
            r, aliases=tuple(a for a in r.aliases if address_key(a) != key)
        )

    async def add_group_member(self, group_id: int, address: str) -> None:
        group = self._recipients.get(group_id)
        if group is None:
            raise NotFound(f"group {group_id} not found")
        if group.kind != RecipientKind.GROUP:
            raise InvalidName(f"recipient {group_id} is not a group")
        members = self._members.setdefault(group_id, {})
        key = address_key(address)
        if key in members:
            raise AlreadyExists(f"{address} is already a member")
        members[key] = address

    async def remove_group_member(self, group_id: int, address: str) -> None:
        members = self._members.get(group_id, {})
        if members.pop(address_key(address), None) is None:
            raise NotFound(f"{address} is not a member of group {group_id}")

    async def group_members(self, group_id: int) -> list[str]:
        members = self._members.get(group_id, {})
        return [members[k] for k in sorted(members)]

    async def list_receive_connectors(self) -> list[ReceiveConnector]:
        return [self._connectors[k] for k in sorted(self._connectors)]

    async def put_receive_connector(self, connector: ReceiveConnector) -> None:
        self._connectors[connector.name] = connector

    async def get_protocol_settings(
        self, protocol: str, server: str = ""
    ) -> ProtocolSettings | None:
        return self._protocols.get((server, protocol)) or self._protocols.get(("", protocol))

    async def put_protocol_settings(self, settings: ProtocolSettings) -> None:
        self._protocols[(settings.server, settings.protocol)] = settings

    async def put_server(self, server: ServerRecord) -> ServerRecord:
        old = self._servers.get(server.name)
        stored = replace(server, registered_at=old.registered_at) if old else server
        self._servers[server.name] = stored
        return stored

    async def list_servers(self) -> list[ServerRecord]:
        return [self._servers[name] for name in sorted(self._servers)]

    async def touch_server(self, name: str, at: float, *, stopping: bool = False) -> None:
        old = self._servers.get(name)
        if old is None:
            raise NotFound(f"server {name} is not registered")
        if stopping:
            self._servers[name] = replace(old, stopped_at=at)
        else:
            self._servers[name] = replace(old, heartbeat_at=at)

    async def put_mailbox_database(self, database: MailboxDatabase) -> MailboxDatabase:
        if not database.name or not database.server:
            raise InvalidName("a mailbox database needs a name and a server")
        old = self._databases.get(database.name)
        created = old.created if old else (database.created or time.time())
        stored = replace(database, created=created)
        self._databases[database.name] = stored
        return stored

    async def list_mailbox_databases(self) -> list[MailboxDatabase]:
        return [self._databases[name] for name in sorted(self._databases)]

    async def mailbox_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._recipients.values():
            if r.database is not None:
                counts[r.database] = counts.get(r.database, 0) + 1
        return counts

    async def set_recipient_database(self, recipient_id: int, database: str | None) -> None:
        if database is not None and database not in self._databases:
            raise NotFound(f"mailbox database {database} not found")
        r = self._require(recipient_id)
        self._recipients[recipient_id] = replace(r, database=database)

    async def adopt_unplaced_mailboxes(self, database: str) -> int:
        moved = 0
        for rid, r in list(self._recipients.items()):
            if r.database is None and r.kind == RecipientKind.MAILBOX:
                self._recipients[rid] = replace(r, database=database)
                moved += 1
        return moved

    async def list_send_connectors(self) -> list[SendConnector]:
        return [self._send_connectors[k] for k in sorted(self._send_connectors)]

    async def put_send_connector(self, connector: SendConnector) -> None:
        self._send_connectors[connector.name] = connector

    async def remove_send_connector(self, name: str) -> None:
        if self._send_connectors.pop(name, None) is None:
            raise NotFound(f"send connector {name!r} not found")

    def _require(self, recipient_id: int) -> Recipient:
        r = self._recipients.get(recipient_id)
        if r is None:
            raise NotFound(f"recipient {recipient_id} not found")
        return r
