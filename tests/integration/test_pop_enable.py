"""`postwerk pop enable|disable|settings` against a running server: no restart.

POP3 is off after `init` (as in Exchange); `pop enable` makes the running server
listen on 110 (STLS) and 995 (TLS) within a poll; `pop settings` changes apply to
new connections; `pop disable` closes the listeners. Driven with poplib over
real TLS.
"""

from __future__ import annotations

import json
import poplib
import smtplib
import ssl
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli, wait_for


def pop_ports(org: RunningServer) -> dict[int, int]:
    async def read() -> dict[int, int]:
        return {k: v for k, v in org.server.ports.items() if k in (110, 995)}

    return org.call(read())


def deliver(org: RunningServer, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail(
            "someone@remote.test",
            [f"alice@{DOMAIN}"],
            f"From: someone@remote.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode(),
        )


def test_pop_is_off_until_enabled_then_follows_the_settings(org: RunningServer) -> None:
    data_dir = org.data_dir
    shown: dict[str, Any] = json.loads(cli(data_dir, "pop", "settings", "--json"))
    assert shown["enabled"] is False and shown["login_type"] == "SecureLogin"
    assert (shown["port"], shown["ssl_port"]) == (110, 995)
    assert pop_ports(org) == {}

    deliver(org, "over pop")
    org.wait_inbox(f"alice@{DOMAIN}", 1)
    assert json.loads(cli(data_dir, "pop", "enable", "--json"))["enabled"] is True
    wait_for(lambda: set(pop_ports(org)) == {110, 995}, timeout=10)
    ports = pop_ports(org)

    context = org.client_context()
    box = poplib.POP3_SSL("127.0.0.1", ports[995], context=context, timeout=10)
    try:
        box.user(f"alice@{DOMAIN}")
        box.pass_(PASSWORD)
        count, _size = box.stat()
        assert count == 1
        _resp, lines, _octets = box.retr(1)
        assert b"Subject: over pop" in lines
    finally:
        box.quit()

    # SecureLogin: no plaintext USER before STLS on 110.
    plain = poplib.POP3("127.0.0.1", ports[110], timeout=10)
    try:
        with pytest.raises(poplib.error_proto, match=r"AUTH"):
            plain.user(f"alice@{DOMAIN}")
    finally:
        plain.quit()

    # A settings change reaches new connections on the same listeners.
    cli(data_dir, "pop", "settings", "--login-type", "PlainTextLogin")

    def plaintext_login_works() -> bool:
        c = poplib.POP3("127.0.0.1", ports[110], timeout=10)
        try:
            c.user(f"alice@{DOMAIN}")
            c.pass_(PASSWORD)
            return True
        except poplib.error_proto:
            return False
        finally:
            c.quit()

    wait_for(plaintext_login_works, timeout=10)
    assert pop_ports(org) == ports  # same listeners

    # A refused setting leaves the stored ones alone.
    with pytest.raises(AssertionError):
        cli(data_dir, "pop", "settings", "--auth-timeout", "5")
    assert (
        json.loads(cli(data_dir, "pop", "settings", "--json"))["idle_timeout_after_login"] == 1800
    )

    cli(data_dir, "pop", "disable")
    wait_for(lambda: pop_ports(org) == {}, timeout=10)
    with pytest.raises(OSError):
        poplib.POP3_SSL("127.0.0.1", ports[995], context=ssl.create_default_context(), timeout=3)


def test_delivery_and_pop3_expunge_notify_watchers(org: RunningServer) -> None:
    """What IMAP IDLE will rely on: a delivery, and a POP3 QUIT that deletes, wake
    every session watching the mailbox."""
    alice = f"alice@{DOMAIN}"

    async def mailbox_id() -> int:
        return int((await org.server.directory.get(alice)).id)

    mid = org.call(mailbox_id())

    async def watch_for(seconds: float) -> bool:
        with org.server.notifier.watch(mid) as w:
            ready.set()
            return bool(await w.wait(seconds))

    import threading

    ready = threading.Event()
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(org.call(watch_for(10))))
    t.start()
    ready.wait(5)
    deliver(org, "wake up")
    t.join(15)
    assert woke == [True]

    cli(org.data_dir, "pop", "enable")
    wait_for(lambda: 995 in pop_ports(org), timeout=10)
    org.wait_inbox(alice, 1)
    ready.clear()
    woke.clear()
    t = threading.Thread(target=lambda: woke.append(org.call(watch_for(10))))
    t.start()
    ready.wait(5)
    box = poplib.POP3_SSL("127.0.0.1", pop_ports(org)[995], context=org.client_context())
    box.user(alice)
    box.pass_(PASSWORD)
    box.dele(1)
    box.quit()
    t.join(15)
    assert woke == [True]
