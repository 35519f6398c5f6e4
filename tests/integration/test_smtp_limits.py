"""SMTP limits over real sockets: each one shows the reply, then that the next client is served.

Covers the limits of docs/limits.md that test_smtp_wire.py does not: the connection
(session) timeout, the AUTH tarpit, the login lockout, the total connection limit and
the organization-wide recipient limit. Limits are shortened per test (connector fields
through the CLI, settings through `POSTWERK_<SECTION>__<FIELD>` overrides).
"""

from __future__ import annotations

import base64
import select
import time
from collections.abc import Callable

import pytest

from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli
from tests.integration.wire import Wire

BODY = b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: limits\r\n\r\nline\r\n"
DEFAULT_FRONTEND = "Default Frontend MAIL"
CLIENT_FRONTEND = "Client Frontend MAIL"

MakeOrg = Callable[..., RunningServer]


def set_connector(org: RunningServer, name: str, *options: str) -> None:
    cli(org.data_dir, "connector", "receive", "set", name, *options)


def greeted(port: int, source: str | None = None) -> Wire:
    w = Wire(port, source=source)
    code, text = w.reply()
    assert code == 220, text
    assert w.cmd(b"EHLO limits.test")[0] == 250
    return w


def submission(org: RunningServer, source: str | None = None) -> Wire:
    """A client on 587 after STARTTLS, ready for AUTH."""
    w = greeted(org.submission_port, source)
    w.starttls(org.client_context())
    return w


def quit_and_wait_close(w: Wire) -> None:
    """QUIT, then wait until the server has hung up (so its session no longer counts)."""
    assert w.cmd(b"QUIT")[0] == 221
    assert w.closed()
    w.close()


# ---------------------------------------------------------------- connection timeout


def test_connection_timeout_ends_a_busy_session(org: RunningServer) -> None:
    # Exchange's ConnectionTimeout (10 min) bounds the whole session, however active the
    # client is; the inactivity timeout (30 s here) never fires because we keep talking.
    set_connector(org, DEFAULT_FRONTEND, "--connection-timeout", "1", "--inactivity-timeout", "30")
    w = greeted(org.smtp_port)
    started = time.monotonic()
    while True:
        code, text = w.cmd(b"NOOP")
        if code != 250:
            break
        assert time.monotonic() - started < 5, "the connection timeout never fired"
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    assert code == 421 and b" 4.4." in text and b"timed out" in text, text
    assert 0.7 <= elapsed < 3, elapsed
    assert w.closed()
    # The next client is served (with its own one-second allowance).
    other = greeted(org.smtp_port)
    assert other.cmd(b"NOOP")[0] == 250


def test_connection_timeout_ends_a_trickling_data_transfer(org: RunningServer) -> None:
    set_connector(org, DEFAULT_FRONTEND, "--connection-timeout", "1", "--inactivity-timeout", "30")
    w = greeted(org.smtp_port)
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert w.cmd(b"DATA")[0] == 354
    w.send(BODY)
    started = time.monotonic()
    code, text = 0, b""
    while time.monotonic() - started < 5:
        try:
            w.send(b"more body\r\n")
        except OSError:  # the server hung up between two lines
            break
        w.sock.settimeout(0.1)
        try:
            code, text = w.reply()
            break
        except TimeoutError:
            continue
    w.sock.settimeout(5)
    if code == 0:
        code, text = w.reply()
    assert code == 421 and b" 4.4." in text, text
    assert w.closed()
    time.sleep(0.3)
    assert org.inbox(f"alice@{DOMAIN}") == []  # the unfinished message was dropped
    assert greeted(org.smtp_port).cmd(b"NOOP")[0] == 250


# ---------------------------------------------------------------- AUTH tarpit


@pytest.mark.parametrize(
    ("setting", "connector", "expected"),
    [
        ("0.1", "0.5", 0.5),  # connector AuthTarpitInterval larger
        ("0.5", "0.1", 0.5),  # setting auth.tarpit_seconds larger
    ],
)
def test_failed_auth_is_tarpitted_and_others_are_served_meanwhile(
    make_org: MakeOrg, setting: str, connector: str, expected: float
) -> None:
    org = make_org(environ={"POSTWERK_AUTH__TARPIT_SECONDS": setting}, tarpit_override=None)
    set_connector(org, CLIENT_FRONTEND, "--tarpit", connector)
    w = submission(org)
    started = time.monotonic()
    w.send(b"AUTH PLAIN " + base64.b64encode(f"\0alice@{DOMAIN}\0wrong".encode()) + b"\r\n")
    # While that client waits, another one is greeted and served: before the 535 comes.
    other = greeted(org.smtp_port)
    assert other.cmd(b"NOOP")[0] == 250
    assert select.select([w.sock], [], [], 0)[0] == [], "the 535 came before the tarpit"
    code, text = w.reply()
    delay = time.monotonic() - started
    assert (code, text[4:9]) == (535, b"5.7.8"), text
    assert delay >= expected, delay
    assert delay < expected + 2, delay
    # The session is still usable, and the right password is not delayed.
    started = time.monotonic()
    assert w.auth_plain(f"alice@{DOMAIN}", PASSWORD)[0] == 235
    assert time.monotonic() - started < expected


# ---------------------------------------------------------------- login lockout


def test_lockout_refuses_even_the_right_password(make_org: MakeOrg) -> None:
    org = make_org(
        environ={
            "POSTWERK_AUTH__LOCKOUT_FAILURES": "2",  # per account, from any address
            "POSTWERK_AUTH__LOCKOUT_IP_FAILURES": "4",  # per client address, any account
        }
    )
    alice, bob = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    w = submission(org, "127.0.0.1")
    for _ in range(2):
        assert w.auth_plain(alice, "wrong")[0] == 535
    # alice is locked out from every address, her right password included ...
    elsewhere = submission(org, "127.0.0.2")
    code, text = elsewhere.auth_plain(alice, PASSWORD)
    assert (code, text[4:9]) == (535, b"5.7.8"), text
    # ... while 127.0.0.1 (2 failures of 4) may still log in as bob.
    assert submission(org, "127.0.0.1").auth_plain(bob, PASSWORD)[0] == 235
    # Two more failures from 127.0.0.1, for an account that does not even exist, lock the
    # address out: bob's right password is now refused from there ...
    for _ in range(2):
        assert w.auth_plain(f"nobody@{DOMAIN}", "guess")[0] == 535
    code, text = submission(org, "127.0.0.1").auth_plain(bob, PASSWORD)
    assert (code, text[4:9]) == (535, b"5.7.8"), text
    # ... but not from another address: the server goes on serving other clients.
    assert submission(org, "127.0.0.3").auth_plain(bob, PASSWORD)[0] == 235


# ---------------------------------------------------------------- connection limits


def test_total_connection_limit(org: RunningServer) -> None:
    set_connector(org, DEFAULT_FRONTEND, "--max-connections", "2")
    # Two different sources, so the per-source limit (20) plays no part.
    held = [greeted(org.smtp_port, "127.0.0.1"), greeted(org.smtp_port, "127.0.0.2")]
    extra = Wire(org.smtp_port, source="127.0.0.3")
    code, text = extra.reply()
    assert code == 421 and b"4.3.2" in text, text
    assert extra.closed()
    for w in held:  # the sessions already open are not disturbed
        assert w.cmd(b"NOOP")[0] == 250
    quit_and_wait_close(held[0])
    again = greeted(org.smtp_port, "127.0.0.3")
    assert again.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250


# ---------------------------------------------------------------- recipients, organization-wide


def test_organization_recipient_limit_caps_the_connector_limit(make_org: MakeOrg) -> None:
    org = make_org(environ={"POSTWERK_TRANSPORT__MAX_RECIPIENTS_PER_MESSAGE": "2"})
    w = greeted(org.smtp_port)  # Default Frontend allows 200; the organization 2
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    # A distribution group is one envelope recipient, however many members it expands to.
    assert w.cmd(f"RCPT TO:<team@{DOMAIN}>".encode())[0] == 250
    code, text = w.cmd(f"RCPT TO:<bob@{DOMAIN}>".encode())
    assert code == 452 and b"4.5.3" in text, text
    assert w.cmd(b"DATA")[0] == 354
    w.send(BODY + b".\r\n")
    assert w.reply()[0] == 250
    assert len(org.wait_inbox(f"alice@{DOMAIN}", 1)) == 1
    assert len(org.wait_inbox(f"bob@{DOMAIN}", 1)) == 1  # through the group
    # The next transaction starts with a fresh count.
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<bob@{DOMAIN}>".encode())[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert w.cmd(f"RCPT TO:<al@{DOMAIN}>".encode())[0] == 452


# ---------------------------------------------------------------- per-connection disk bound


def test_ehlo_between_bdat_chunks_discards_the_partial_message(org: RunningServer) -> None:
    # A chunk above the blob writer's 256 KiB buffer is on disk in blobs/tmp/. EHLO resets
    # the transaction (RFC 5321 §4.1.4); the partial blob must go with it, or a client
    # looping BDAT + EHLO fills the disk.
    tmp_dir = org.data_dir / "blobs" / "tmp"
    chunk = b"x" * (300 * 1024)
    w = greeted(org.smtp_port)
    for _ in range(3):
        assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
        assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
        w.send(b"BDAT %d\r\n" % len(chunk) + BODY + chunk[len(BODY) :])
        assert w.reply()[0] == 250
        assert w.cmd(b"EHLO limits.test")[0] == 250
    deadline = time.monotonic() + 2
    while list(tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_dir.iterdir()) == []
    # The session goes on, and the next message is whole.
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    w.send(b"BDAT %d LAST\r\n" % len(BODY) + BODY)
    assert w.reply()[0] == 250
    items = org.wait_inbox(f"alice@{DOMAIN}", 1)
    assert len(items) == 1 and org.read_item(items[0]).endswith(BODY)
