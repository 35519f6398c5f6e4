"""Send connectors in the directory store: create, replace, list, remove."""

from __future__ import annotations

from typing import Any

import pytest

from postwerk.core.errors import NotFound
from postwerk.store.records import AddressSpace, ProtocolSettings, SendConnector


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    """This store runs on PostgreSQL too (M4): memory, SQLite and PostgreSQL."""
    return backend_with_postgresql


async def test_send_connector_roundtrip(backend: Any) -> None:
    d = backend.directory
    assert await d.list_send_connectors() == []
    internet = SendConnector("Internet", (AddressSpace("*", 1),))
    relay = SendConnector(
        "Relay",
        (AddressSpace("partner.test", 5), AddressSpace("*.partner.test", 10)),
        smart_hosts=("relay.isp.test:587", "[192.0.2.7]"),
        port=587,
        auth_user="relay-user",
        auth_password="secret",
        tls="required",
        verify_certificates=True,
        source_servers=("mbx1",),
        max_message_size=10 * 1024 * 1024,
        frontend_proxy=True,
        fqdn="out.example.test",
        enabled=False,
    )
    await d.put_send_connector(relay)
    await d.put_send_connector(internet)
    assert await d.list_send_connectors() == [internet, relay]
    changed = SendConnector("Internet", (AddressSpace("*", 3),), tls="none")
    await d.put_send_connector(changed)
    assert await d.list_send_connectors() == [changed, relay]
    await d.remove_send_connector("Relay")
    assert await d.list_send_connectors() == [changed]
    with pytest.raises(NotFound):
        await d.remove_send_connector("Relay")


async def test_protocol_settings_roundtrip(backend: Any) -> None:
    d = backend.directory
    assert await d.get_protocol_settings("pop3") is None
    pop = ProtocolSettings("pop3", True, {"login_type": "SecureLogin", "port": 110})
    await d.put_protocol_settings(pop)
    await d.put_protocol_settings(ProtocolSettings("imap4"))
    assert await d.get_protocol_settings("pop3") == pop
    assert await d.get_protocol_settings("imap4") == ProtocolSettings("imap4", False, {})
    off = ProtocolSettings("pop3", False, {"port": 10110})
    await d.put_protocol_settings(off)  # replaces
    assert await d.get_protocol_settings("pop3") == off


async def test_protocol_settings_per_server_with_organization_default(backend: Any) -> None:
    d = backend.directory
    default = ProtocolSettings("imap4", False, {"port": 143})
    await d.put_protocol_settings(default)
    # A server without its own row uses the organization's default.
    assert await d.get_protocol_settings("imap4", "MBX2") == default
    mine = ProtocolSettings("imap4", True, {"port": 143}, server="MBX2")
    await d.put_protocol_settings(mine)
    assert await d.get_protocol_settings("imap4", "MBX2") == mine
    assert await d.get_protocol_settings("imap4", "MAIL") == default  # others unchanged
    assert await d.get_protocol_settings("imap4") == default
    assert await d.get_protocol_settings("pop3", "MBX2") is None
