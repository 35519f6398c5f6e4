"""DirectoryStore on SQL: organization, accepted domains, recipients, connectors.

Every address a recipient answers to is a `proxy_address` row keyed by the
lower-cased address (unique), so `find_recipient` is one index probe and a
duplicate address anywhere (primary or alias) is an AlreadyExists.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import fields, replace
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from postwerk.core.errors import AlreadyExists, InvalidName, NotFound
from postwerk.store.api import address_key
from postwerk.store.records import (
    AcceptedDomain,
    AddressSpace,
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
from postwerk.store.sqlite.database import Database
from postwerk.store.sqlite.schema import (
    accepted_domain,
    group_member,
    mailbox_database,
    organization,
    protocol_settings,
    proxy_address,
    receive_connector,
    recipient,
    send_connector,
    server,
)

_CONNECTOR_TUPLES = frozenset(
    {"bindings", "remote_ip_ranges", "permission_groups", "auth_mechanisms"}
)


def _connector_row(c: ReceiveConnector) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in fields(c):
        value = getattr(c, f.name)
        row[f.name] = json.dumps(list(value)) if f.name in _CONNECTOR_TUPLES else value
    return row


def _connector(row: RowMapping) -> ReceiveConnector:
    kw: dict[str, Any] = {}
    for f in fields(ReceiveConnector):
        value = row[f.name]
        kw[f.name] = tuple(json.loads(value)) if f.name in _CONNECTOR_TUPLES else value
    return ReceiveConnector(**kw)


def _load_recipient(conn: Connection, recipient_id: int) -> Recipient | None:
    row = (conn.execute(select(recipient).where(recipient.c.id == recipient_id))).mappings().first()
    if row is None:
        return None
    aliases = (
        (
            conn.execute(
                select(proxy_address.c.address)
                .where(proxy_address.c.recipient_id == recipient_id, ~proxy_address.c.is_primary)
                .order_by(proxy_address.c.id)
            )
        )
        .scalars()
        .all()
    )
    return _recipient(row, tuple(aliases))


def _recipient(row: RowMapping, aliases: tuple[str, ...]) -> Recipient:
    return Recipient(
        id=row["id"],
        kind=RecipientKind(row["kind"]),
        primary_address=row["primary_address"],
        display_name=row["display_name"],
        aliases=aliases,
        password_hash=row["password_hash"],
        quota_bytes=row["quota_bytes"],
        enabled=row["enabled"],
        created=row["created"],
        database=row["database"],
    )


class SqliteDirectory:
    """DirectoryStore over a `Database` (SQLite now, PostgreSQL later: portable SQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------ organization

    async def get_organization(self) -> Organization | None:
        def run(conn: Connection) -> Organization | None:
            row = (conn.execute(select(organization))).mappings().first()
            if row is None:
                return None
            return Organization(row["name"], row["created"], row["secret"] or "")

        return await self._db.read(run)

    async def set_organization(self, name: str) -> Organization:
        """Create or rename the organization; its creation time never changes."""

        def run(conn: Connection) -> Organization:
            row = (conn.execute(select(organization))).mappings().first()
            if row is None:
                created = time.time()
                secret = secrets.token_hex(32)
                conn.execute(
                    insert(organization).values(id=1, name=name, created=created, secret=secret)
                )
                return Organization(name, created, secret)
            conn.execute(update(organization).values(name=name))
            return Organization(name, row["created"], row["secret"] or "")

        return await self._db.write(run)

    # ------------------------------------------------------------ domains

    async def add_domain(
        self, name: str, type: DomainType, default: bool = False
    ) -> AcceptedDomain:
        key = name.lower().rstrip(".")
        if not key:
            raise InvalidName("empty domain name")

        def run(conn: Connection) -> AcceptedDomain:
            exists = conn.scalar(
                select(accepted_domain.c.name).where(accepted_domain.c.name == key)
            )
            if exists is not None:
                raise AlreadyExists(f"accepted domain {key} exists")
            if default:
                # Exactly one default domain, as in Exchange.
                conn.execute(update(accepted_domain).values(is_default=False))
            conn.execute(
                insert(accepted_domain).values(name=key, type=type.value, is_default=default)
            )
            return AcceptedDomain(key, type, default)

        return await self._db.write(run)

    async def remove_domain(self, name: str) -> None:
        key = name.lower().rstrip(".")

        def run(conn: Connection) -> None:
            result = conn.execute(delete(accepted_domain).where(accepted_domain.c.name == key))
            if result.rowcount == 0:
                raise NotFound(f"accepted domain {key} not found")

        await self._db.write(run)

    async def list_domains(self) -> list[AcceptedDomain]:
        def run(conn: Connection) -> list[AcceptedDomain]:
            rows = (
                conn.execute(select(accepted_domain).order_by(accepted_domain.c.name))
            ).mappings()
            return [AcceptedDomain(r["name"], DomainType(r["type"]), r["is_default"]) for r in rows]

        return await self._db.read(run)

    # ------------------------------------------------------------ recipients

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

        def run(conn: Connection) -> Recipient:
            _require_free(conn, key)
            created = time.time()
            new_id = (
                conn.execute(
                    insert(recipient)
                    .values(
                        kind=kind.value,
                        primary_address=primary_address,
                        display_name=display_name,
                        password_hash=password_hash,
                        quota_bytes=quota_bytes,
                        enabled=True,
                        created=created,
                        database=database,
                    )
                    .returning(recipient.c.id)
                )
            ).scalar_one()
            conn.execute(
                insert(proxy_address).values(
                    address=primary_address, address_key=key, recipient_id=new_id, is_primary=True
                )
            )
            return Recipient(
                id=new_id,
                kind=kind,
                primary_address=primary_address,
                display_name=display_name,
                password_hash=password_hash,
                quota_bytes=quota_bytes,
                created=created,
                database=database,
            )

        return await self._db.write(run)

    async def remove_recipient(self, recipient_id: int) -> None:
        def run(conn: Connection) -> None:
            # Proxy addresses and group memberships go with it (ON DELETE CASCADE).
            result = conn.execute(delete(recipient).where(recipient.c.id == recipient_id))
            if result.rowcount == 0:
                raise NotFound(f"recipient {recipient_id} not found")

        await self._db.write(run)

    async def find_recipient(self, address: str) -> Recipient | None:
        key = address_key(address)

        def run(conn: Connection) -> Recipient | None:
            rid = conn.scalar(
                select(proxy_address.c.recipient_id).where(proxy_address.c.address_key == key)
            )
            return None if rid is None else _load_recipient(conn, rid)

        return await self._db.read(run)

    async def get_recipient(self, recipient_id: int) -> Recipient | None:
        def run(conn: Connection) -> Recipient | None:
            return _load_recipient(conn, recipient_id)

        return await self._db.read(run)

    async def list_recipients(self, kind: RecipientKind | None = None) -> list[Recipient]:
        def run(conn: Connection) -> list[Recipient]:
            query = select(recipient).order_by(recipient.c.id)
            if kind is not None:
                query = query.where(recipient.c.kind == kind.value)
            rows = (conn.execute(query)).mappings().all()
            # One query for every alias instead of one per recipient.
            aliases: dict[int, list[str]] = {}
            alias_rows = conn.execute(
                select(proxy_address.c.recipient_id, proxy_address.c.address)
                .where(~proxy_address.c.is_primary)
                .order_by(proxy_address.c.id)
            )
            for rid, address in alias_rows:
                aliases.setdefault(rid, []).append(address)
            return [_recipient(r, tuple(aliases.get(r["id"], ()))) for r in rows]

        return await self._db.read(run)

    async def set_password_hash(self, recipient_id: int, password_hash: str) -> None:
        await self._update_recipient(recipient_id, password_hash=password_hash)

    async def set_quota(self, recipient_id: int, quota_bytes: int | None) -> None:
        await self._update_recipient(recipient_id, quota_bytes=quota_bytes)

    async def _update_recipient(self, recipient_id: int, **values: Any) -> None:
        def run(conn: Connection) -> None:
            result = conn.execute(
                update(recipient).where(recipient.c.id == recipient_id).values(**values)
            )
            if result.rowcount == 0:
                raise NotFound(f"recipient {recipient_id} not found")

        await self._db.write(run)

    async def add_alias(self, recipient_id: int, address: str) -> None:
        if "@" not in address:
            raise InvalidName(f"not an address: {address!r}")
        key = address_key(address)

        def run(conn: Connection) -> None:
            if conn.scalar(select(recipient.c.id).where(recipient.c.id == recipient_id)) is None:
                raise NotFound(f"recipient {recipient_id} not found")
            _require_free(conn, key)
            conn.execute(
                insert(proxy_address).values(
                    address=address, address_key=key, recipient_id=recipient_id, is_primary=False
                )
            )

        await self._db.write(run)

    async def remove_alias(self, address: str) -> None:
        key = address_key(address)

        def run(conn: Connection) -> None:
            is_primary = conn.scalar(
                select(proxy_address.c.is_primary).where(proxy_address.c.address_key == key)
            )
            if is_primary is None:
                raise NotFound(f"alias {address} not found")
            if is_primary:
                raise InvalidName(f"{address} is a primary address, not an alias")
            conn.execute(delete(proxy_address).where(proxy_address.c.address_key == key))

        await self._db.write(run)

    # ------------------------------------------------------------ groups

    async def add_group_member(self, group_id: int, address: str) -> None:
        key = address_key(address)

        def run(conn: Connection) -> None:
            kind = conn.scalar(select(recipient.c.kind).where(recipient.c.id == group_id))
            if kind is None:
                raise NotFound(f"group {group_id} not found")
            if kind != RecipientKind.GROUP.value:
                raise InvalidName(f"recipient {group_id} is not a group")
            try:
                # A savepoint of our own, so the expected collision leaves the
                # transaction usable for the error path.
                with conn.begin_nested():
                    conn.execute(
                        insert(group_member).values(
                            group_id=group_id, address_key=key, address=address
                        )
                    )
            except IntegrityError as exc:
                raise AlreadyExists(f"{address} is already a member") from exc

        await self._db.write(run)

    async def remove_group_member(self, group_id: int, address: str) -> None:
        key = address_key(address)

        def run(conn: Connection) -> None:
            result = conn.execute(
                delete(group_member).where(
                    group_member.c.group_id == group_id, group_member.c.address_key == key
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"{address} is not a member of group {group_id}")

        await self._db.write(run)

    async def group_members(self, group_id: int) -> list[str]:
        def run(conn: Connection) -> list[str]:
            rows = conn.execute(
                select(group_member.c.address)
                .where(group_member.c.group_id == group_id)
                .order_by(group_member.c.address_key)
            )
            return list(rows.scalars())

        return await self._db.read(run)

    # ------------------------------------------------------------ connectors

    async def list_receive_connectors(self) -> list[ReceiveConnector]:
        def run(conn: Connection) -> list[ReceiveConnector]:
            rows = conn.execute(select(receive_connector).order_by(receive_connector.c.name))
            return [_connector(r) for r in rows.mappings()]

        return await self._db.read(run)

    async def put_receive_connector(self, connector: ReceiveConnector) -> None:
        """Create or replace by name."""
        row = _connector_row(connector)

        def run(conn: Connection) -> None:
            conn.execute(
                delete(receive_connector).where(receive_connector.c.name == connector.name)
            )
            conn.execute(insert(receive_connector).values(**row))

        await self._db.write(run)

    async def get_protocol_settings(
        self, protocol: str, server: str = ""
    ) -> ProtocolSettings | None:
        def run(conn: Connection) -> ProtocolSettings | None:
            rows = {
                r["server"]: r
                for r in conn.execute(
                    select(protocol_settings).where(
                        protocol_settings.c.protocol == protocol,
                        protocol_settings.c.server.in_([server, ""]),
                    )
                ).mappings()
            }
            row = rows.get(server) or rows.get("")
            if row is None:
                return None
            return ProtocolSettings(
                protocol=row["protocol"],
                enabled=bool(row["enabled"]),
                settings=json.loads(row["settings"]),
                server=row["server"],
            )

        return await self._db.read(run)

    async def put_server(self, record: ServerRecord) -> ServerRecord:
        def run(conn: Connection) -> ServerRecord:
            old = conn.execute(
                select(server.c.registered_at).where(server.c.name == record.name)
            ).first()
            stored = record if old is None else replace(record, registered_at=old[0])
            conn.execute(delete(server).where(server.c.name == record.name))
            conn.execute(
                insert(server).values(
                    name=stored.name,
                    fqdn=stored.fqdn,
                    roles=json.dumps(list(stored.roles)),
                    addresses=json.dumps(list(stored.addresses)),
                    port_offset=stored.port_offset,
                    version=stored.version,
                    registered_at=stored.registered_at,
                    heartbeat_at=stored.heartbeat_at,
                    stopped_at=stored.stopped_at,
                    certificate_sha256=stored.certificate_sha256,
                )
            )
            return stored

        return await self._db.write(run)

    async def list_servers(self) -> list[ServerRecord]:
        def run(conn: Connection) -> list[ServerRecord]:
            rows = conn.execute(select(server).order_by(server.c.name)).mappings()
            return [
                ServerRecord(
                    name=r["name"],
                    fqdn=r["fqdn"],
                    roles=tuple(json.loads(r["roles"])),
                    addresses=tuple(json.loads(r["addresses"])),
                    port_offset=r["port_offset"],
                    version=r["version"],
                    registered_at=r["registered_at"],
                    heartbeat_at=r["heartbeat_at"],
                    stopped_at=r["stopped_at"],
                    certificate_sha256=r["certificate_sha256"],
                )
                for r in rows
            ]

        return await self._db.read(run)

    async def touch_server(self, name: str, at: float, *, stopping: bool = False) -> None:
        values = {"stopped_at": at} if stopping else {"heartbeat_at": at}

        def run(conn: Connection) -> None:
            done = conn.execute(update(server).where(server.c.name == name).values(**values))
            if done.rowcount == 0:
                raise NotFound(f"server {name} is not registered")

        await self._db.write(run)

    # ------------------------------------------------------------ mailbox databases

    async def put_mailbox_database(self, database: MailboxDatabase) -> MailboxDatabase:
        if not database.name or not database.server:
            raise InvalidName("a mailbox database needs a name and a server")

        def run(conn: Connection) -> MailboxDatabase:
            old = conn.execute(
                select(mailbox_database.c.created).where(mailbox_database.c.name == database.name)
            ).first()
            if old is not None:
                conn.execute(
                    update(mailbox_database)
                    .where(mailbox_database.c.name == database.name)
                    .values(server=database.server)
                )
                return replace(database, created=old[0])
            stored = replace(database, created=database.created or time.time())
            conn.execute(
                insert(mailbox_database).values(
                    name=stored.name, server=stored.server, created=stored.created
                )
            )
            return stored

        return await self._db.write(run)

    async def list_mailbox_databases(self) -> list[MailboxDatabase]:
        def run(conn: Connection) -> list[MailboxDatabase]:
            rows = conn.execute(select(mailbox_database).order_by(mailbox_database.c.name))
            return [MailboxDatabase(r.name, r.server, r.created) for r in rows]

        return await self._db.read(run)

    async def mailbox_counts(self) -> dict[str, int]:
        def run(conn: Connection) -> dict[str, int]:
            rows = conn.execute(
                select(recipient.c.database, func.count())
                .where(recipient.c.database.is_not(None))
                .group_by(recipient.c.database)
            )
            return {name: count for name, count in rows}

        return await self._db.read(run)

    async def set_recipient_database(self, recipient_id: int, database: str | None) -> None:
        def run(conn: Connection) -> None:
            if database is not None and (
                conn.execute(
                    select(mailbox_database.c.name).where(mailbox_database.c.name == database)
                ).first()
                is None
            ):
                raise NotFound(f"mailbox database {database} not found")
            done = conn.execute(
                update(recipient).where(recipient.c.id == recipient_id).values(database=database)
            )
            if done.rowcount == 0:
                raise NotFound(f"recipient {recipient_id} not found")

        await self._db.write(run)

    async def adopt_unplaced_mailboxes(self, database: str) -> int:
        def run(conn: Connection) -> int:
            done = conn.execute(
                update(recipient)
                .where(
                    recipient.c.database.is_(None),
                    recipient.c.kind == RecipientKind.MAILBOX.value,
                )
                .values(database=database)
            )
            return int(done.rowcount)

        return await self._db.write(run)

    async def put_protocol_settings(self, settings: ProtocolSettings) -> None:
        row = {
            "server": settings.server,
            "protocol": settings.protocol,
            "enabled": settings.enabled,
            "settings": json.dumps(settings.settings, sort_keys=True),
        }

        def run(conn: Connection) -> None:
            conn.execute(
                delete(protocol_settings).where(
                    protocol_settings.c.protocol == settings.protocol,
                    protocol_settings.c.server == settings.server,
                )
            )
            conn.execute(insert(protocol_settings).values(**row))

        await self._db.write(run)

    async def list_send_connectors(self) -> list[SendConnector]:
        def run(conn: Connection) -> list[SendConnector]:
            rows = conn.execute(select(send_connector).order_by(send_connector.c.name))
            return [_send_connector(r) for r in rows.mappings()]

        return await self._db.read(run)

    async def put_send_connector(self, connector: SendConnector) -> None:
        row = _send_connector_row(connector)

        def run(conn: Connection) -> None:
            conn.execute(delete(send_connector).where(send_connector.c.name == connector.name))
            conn.execute(insert(send_connector).values(**row))

        await self._db.write(run)

    async def remove_send_connector(self, name: str) -> None:
        def run(conn: Connection) -> None:
            done = conn.execute(delete(send_connector).where(send_connector.c.name == name))
            if done.rowcount == 0:
                raise NotFound(f"send connector {name!r} not found")

        await self._db.write(run)


def _send_connector_row(c: SendConnector) -> dict[str, Any]:
    row: dict[str, Any] = {f.name: getattr(c, f.name) for f in fields(c)}
    row["address_spaces"] = json.dumps([[a.domain, a.cost] for a in c.address_spaces])
    row["smart_hosts"] = json.dumps(list(c.smart_hosts))
    row["source_servers"] = json.dumps(list(c.source_servers))
    return row


def _send_connector(row: RowMapping) -> SendConnector:
    kw: dict[str, Any] = {f.name: row[f.name] for f in fields(SendConnector)}
    kw["address_spaces"] = tuple(AddressSpace(d, c) for d, c in json.loads(row["address_spaces"]))
    kw["smart_hosts"] = tuple(json.loads(row["smart_hosts"]))
    kw["source_servers"] = tuple(json.loads(row["source_servers"]))
    return SendConnector(**kw)


def _require_free(conn: Connection, key: str) -> None:
    taken = conn.scalar(select(proxy_address.c.id).where(proxy_address.c.address_key == key))
    if taken is not None:
        raise AlreadyExists(f"address {key} is in use")
