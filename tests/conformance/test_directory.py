"""DirectoryStore conformance: every backend behaves the same."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from postwerk.core.errors import AlreadyExists, InvalidName, NotFound
from postwerk.store.records import (
    DomainType,
    MailboxDatabase,
    ReceiveConnector,
    RecipientKind,
    ServerRecord,
)

MAILBOX = RecipientKind.MAILBOX
GROUP = RecipientKind.GROUP


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    """This store runs on PostgreSQL too (M4): memory, SQLite and PostgreSQL."""
    return backend_with_postgresql


async def test_organization_set_once_rename_keeps_created(backend: Any) -> None:
    d = backend.directory
    assert await d.get_organization() is None
    first = await d.set_organization("Contoso")
    renamed = await d.set_organization("Fabrikam")
    assert renamed.name == "Fabrikam"
    assert renamed.created == first.created
    assert await d.get_organization() == renamed


async def test_domains_lowercased_unique_single_default(backend: Any) -> None:
    d = backend.directory
    await d.add_domain("Example.COM", DomainType.AUTHORITATIVE, default=True)
    with pytest.raises(AlreadyExists):
        await d.add_domain("example.com", DomainType.INTERNAL_RELAY)
    await d.add_domain("other.test", DomainType.INTERNAL_RELAY, default=True)
    domains = await d.list_domains()
    assert [(x.name, x.type, x.default) for x in domains] == [
        ("example.com", DomainType.AUTHORITATIVE, False),
        ("other.test", DomainType.INTERNAL_RELAY, True),
    ]
    await d.remove_domain("EXAMPLE.com")
    assert [x.name for x in await d.list_domains()] == ["other.test"]
    with pytest.raises(NotFound):
        await d.remove_domain("example.com")


async def test_recipient_lookup_case_insensitive_keeps_spelling(backend: Any) -> None:
    d = backend.directory
    r = await d.add_recipient(MAILBOX, "Alice.Smith@Example.com", "Alice", password_hash="h1")
    found = await d.find_recipient("alice.smith@EXAMPLE.COM")
    assert found is not None and found.id == r.id
    assert found.primary_address == "Alice.Smith@Example.com"
    assert found.password_hash == "h1"
    assert await d.get_recipient(r.id) == found
    assert await d.find_recipient("alice@example.com") is None


async def test_duplicate_address_rejected_anywhere(backend: Any) -> None:
    d = backend.directory
    a = await d.add_recipient(MAILBOX, "a@example.com", "A")
    b = await d.add_recipient(MAILBOX, "b@example.com", "B")
    with pytest.raises(AlreadyExists):
        await d.add_recipient(MAILBOX, "A@EXAMPLE.COM", "A again")
    await d.add_alias(a.id, "sales@example.com")
    with pytest.raises(AlreadyExists):
        await d.add_recipient(GROUP, "Sales@Example.com", "Sales")
    with pytest.raises(AlreadyExists):
        await d.add_alias(b.id, "SALES@example.com")
    with pytest.raises(AlreadyExists):
        await d.add_alias(b.id, "a@example.com")
    assert len(await d.list_recipients()) == 2


async def test_aliases_lookup_and_removal(backend: Any) -> None:
    d = backend.directory
    r = await d.add_recipient(MAILBOX, "bob@example.com", "Bob")
    await d.add_alias(r.id, "Robert@Example.com")
    await d.add_alias(r.id, "bobby@example.com")
    via_alias = await d.find_recipient("ROBERT@example.COM")
    assert via_alias is not None and via_alias.id == r.id
    assert via_alias.aliases == ("Robert@Example.com", "bobby@example.com")
    with pytest.raises(InvalidName):
        await d.remove_alias("bob@example.com")  # the primary is not an alias
    await d.remove_alias("robert@EXAMPLE.com")
    assert await d.find_recipient("robert@example.com") is None
    got = await d.get_recipient(r.id)
    assert got is not None and got.aliases == ("bobby@example.com",)
    with pytest.raises(NotFound):
        await d.remove_alias("robert@example.com")
    with pytest.raises(NotFound):
        await d.add_alias(9999, "x@example.com")


async def test_remove_recipient_frees_its_addresses(backend: Any) -> None:
    d = backend.directory
    r = await d.add_recipient(MAILBOX, "c@example.com", "C")
    await d.add_alias(r.id, "c2@example.com")
    await d.remove_recipient(r.id)
    assert await d.get_recipient(r.id) is None
    assert await d.find_recipient("c2@example.com") is None
    again = await d.add_recipient(MAILBOX, "c2@example.com", "C2")
    assert again.id != r.id  # ids are never reused
    with pytest.raises(NotFound):
        await d.remove_recipient(r.id)


async def test_list_recipients_by_kind_and_password(backend: Any) -> None:
    d = backend.directory
    m = await d.add_recipient(MAILBOX, "m@example.com", "M", quota_bytes=10_000)
    g = await d.add_recipient(GROUP, "g@example.com", "G")
    await d.add_alias(m.id, "m2@example.com")
    assert [r.id for r in await d.list_recipients()] == [m.id, g.id]
    mailboxes = await d.list_recipients(MAILBOX)
    assert [(r.id, r.aliases, r.quota_bytes) for r in mailboxes] == [
        (m.id, ("m2@example.com",), 10_000)
    ]
    assert [r.id for r in await d.list_recipients(GROUP)] == [g.id]
    await d.set_password_hash(m.id, "$argon2id$new")
    got = await d.get_recipient(m.id)
    assert got is not None and got.password_hash == "$argon2id$new"
    with pytest.raises(NotFound):
        await d.set_password_hash(9999, "x")
    await d.set_quota(m.id, 2048)
    assert (await d.get_recipient(m.id)).quota_bytes == 2048  # type: ignore[union-attr]
    await d.set_quota(m.id, None)
    assert (await d.get_recipient(m.id)).quota_bytes is None  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await d.set_quota(9999, 1)
    with pytest.raises(InvalidName):
        await d.add_recipient(MAILBOX, "no-at-sign", "X")


async def test_group_members(backend: Any) -> None:
    d = backend.directory
    g = await d.add_recipient(GROUP, "team@example.com", "Team")
    m = await d.add_recipient(MAILBOX, "zed@example.com", "Zed")
    await d.add_group_member(g.id, "zed@example.com")
    await d.add_group_member(g.id, "Amy@Example.com")
    with pytest.raises(AlreadyExists):
        await d.add_group_member(g.id, "ZED@example.com")
    assert await d.group_members(g.id) == ["Amy@Example.com", "zed@example.com"]
    with pytest.raises(InvalidName):
        await d.add_group_member(m.id, "x@example.com")  # not a group
    with pytest.raises(NotFound):
        await d.add_group_member(9999, "x@example.com")
    await d.remove_group_member(g.id, "amy@example.com")
    assert await d.group_members(g.id) == ["zed@example.com"]
    with pytest.raises(NotFound):
        await d.remove_group_member(g.id, "amy@example.com")
    await d.remove_recipient(g.id)
    assert await d.group_members(g.id) == []


def _connector(name: str, **kw: Any) -> ReceiveConnector:
    fields: dict[str, Any] = {
        "name": name,
        "transport_role": "FrontendTransport",
        "bindings": ("0.0.0.0:25", "[::]:25"),
        "remote_ip_ranges": ("0.0.0.0/0",),
        "permission_groups": ("AnonymousUsers",),
        "auth_mechanisms": ("TLS",),
        "max_message_size": 36 * 1024 * 1024,
        "max_recipients_per_message": 200,
    }
    fields.update(kw)
    return ReceiveConnector(**fields)


async def test_receive_connectors_roundtrip_and_replace(backend: Any) -> None:
    d = backend.directory
    c1 = _connector("Default Frontend", banner="220 hi", require_tls=True)
    c2 = _connector("Client Frontend", bindings=("0.0.0.0:587",), bound=False)
    await d.put_receive_connector(c1)
    await d.put_receive_connector(c2)
    assert await d.list_receive_connectors() == [c2, c1]
    c1b = _connector("Default Frontend", max_recipients_per_message=5000)
    await d.put_receive_connector(c1b)
    assert await d.list_receive_connectors() == [c2, c1b]


async def test_servers_register_update_and_beat(backend: Any) -> None:
    d = backend.directory
    assert await d.list_servers() == []
    first = ServerRecord("MAIL", "mail.example.com", ("cas", "mailbox"), (), 0, "1", 100.0, 0.0)
    assert await d.put_server(first) == first
    edge = ServerRecord("EDGE", "edge.example.com", ("edge",), ("192.0.2.1",), 0, "1", 150.0)
    await d.put_server(edge)
    # Re-registered (a new version, another address): the first registration time stays.
    again = replace(first, addresses=("10.0.0.5",), version="2", registered_at=200.0)
    stored = await d.put_server(again)
    assert stored == replace(again, registered_at=100.0)
    await d.touch_server("MAIL", 300.0)
    assert await d.list_servers() == [edge, replace(stored, heartbeat_at=300.0)]
    await d.touch_server("MAIL", 310.0, stopping=True)
    [_, mail] = await d.list_servers()
    assert (mail.heartbeat_at, mail.stopped_at) == (300.0, 310.0)
    with pytest.raises(NotFound):
        await d.touch_server("NOPE", 1.0)


async def test_organization_has_a_secret_that_a_rename_keeps(backend: Any) -> None:
    d = backend.directory
    first = await d.set_organization("Contoso")
    assert len(first.secret) == 64
    assert (await d.set_organization("Fabrikam")).secret == first.secret
    assert (await d.get_organization()).secret == first.secret


async def test_server_certificate_pin_is_stored(backend: Any) -> None:
    d = backend.directory
    record = ServerRecord(
        "MBX1", "mbx1.example.com", ("mailbox",), (), certificate_sha256="ab" * 32
    )
    await d.put_server(record)
    assert (await d.list_servers())[0].certificate_sha256 == "ab" * 32


async def test_mailbox_databases_place_and_move_mailboxes(backend: Any) -> None:
    d = backend.directory
    assert await d.list_mailbox_databases() == []
    db1 = await d.put_mailbox_database(MailboxDatabase("DB1", "MBX1"))
    assert db1.created > 0
    await d.put_mailbox_database(MailboxDatabase("DB2", "MBX2"))
    alice = await d.add_recipient(MAILBOX, "alice@example.com", "Alice", database="DB1")
    assert alice.database == "DB1"
    assert (await d.find_recipient("alice@example.com")).database == "DB1"
    bob = await d.add_recipient(MAILBOX, "bob@example.com", "Bob")
    assert bob.database is None
    group = await d.add_recipient(GROUP, "all@example.com", "All")
    assert await d.mailbox_counts() == {"DB1": 1}
    # Unplaced mailboxes (made before placement) are adopted; groups never are.
    assert await d.adopt_unplaced_mailboxes("DB2") == 1
    assert (await d.get_recipient(bob.id)).database == "DB2"
    assert (await d.get_recipient(group.id)).database is None
    await d.set_recipient_database(alice.id, "DB2")
    assert await d.mailbox_counts() == {"DB2": 2}
    with pytest.raises(NotFound):
        await d.set_recipient_database(alice.id, "NOPE")
    with pytest.raises(NotFound):
        await d.set_recipient_database(10_000, "DB1")
    # Mounting a database on another server keeps it and its creation time.
    moved = await d.put_mailbox_database(MailboxDatabase("DB1", "MBX2"))
    assert (moved.server, moved.created) == ("MBX2", db1.created)
    assert [(x.name, x.server) for x in await d.list_mailbox_databases()] == [
        ("DB1", "MBX2"),
        ("DB2", "MBX2"),
    ]
    with pytest.raises(InvalidName):
        await d.put_mailbox_database(MailboxDatabase("", "MBX1"))
