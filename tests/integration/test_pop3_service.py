"""The POP3 service with Python's poplib (and curl) over real sockets and real TLS.

Listeners are started inside the `org` server's event loop on ephemeral
loopback ports: 995-style (implicit TLS) and 110-style (STLS). Messages reach
alice's Inbox over SMTP first, so what POP3 sends is compared with what the
store holds.
"""

from __future__ import annotations

import base64
import poplib
import random
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

from postwerk.directory.passwords import LoginThrottle
from postwerk.frontend.routing import SingleServerLocator
from postwerk.protocols.pop3 import top_of
from postwerk.services.pop3 import (
    INLINE_MESSAGE_BYTES,
    Pop3Context,
    Pop3Listener,
    Pop3Settings,
    _TopCutter,
)
from postwerk.services.protocol_settings import LoginType
from postwerk.services.tls import server_context
from tests.conftest import DOMAIN, PASSWORD, RunningServer

ALICE = f"alice@{DOMAIN}"


@dataclass
class PopServer:
    org: RunningServer
    ctx: Pop3Context
    listeners: tuple[Pop3Listener, ...]

    @property
    def ssl_port(self) -> int:
        return self.listeners[0].bound_port

    @property
    def plain_port(self) -> int:
        return self.listeners[1].bound_port

    def ssl(self) -> poplib.POP3_SSL:
        return poplib.POP3_SSL(
            "127.0.0.1", self.ssl_port, context=self.org.client_context(), timeout=10
        )

    def plain(self) -> poplib.POP3:
        return poplib.POP3("127.0.0.1", self.plain_port, timeout=10)

    def login(self, user: str = ALICE) -> poplib.POP3_SSL:
        """A TLS session in TRANSACTION; retries while an earlier session's lock lingers."""
        deadline = time.monotonic() + 10
        while True:
            client = self.ssl()
            client.user(user)
            try:
                client.pass_(PASSWORD)
                return client
            except poplib.error_proto as exc:
                client.close()
                if b"[IN-USE]" not in exc.args[0] or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def make_message(subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "someone@remote.test"
    msg["To"] = ALICE
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@remote.test>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


BODIES = (
    ("first", "Hello Alice.\nSecond line.\nThird line.\n"),
    ("dots", "Line one.\n.leading dot\n..two dots\n.\nafter a lone dot\n"),
    ("third", "Short.\n"),
)


def start_pop(org: RunningServer, settings: Pop3Settings | None = None) -> PopServer:
    tls_dir = org.data_dir / "tls"
    tls_context = server_context(tls_dir / "server.crt", tls_dir / "server.key")

    async def start() -> PopServer:
        ctx = Pop3Context(
            directory=org.server.directory,
            locator=SingleServerLocator(org.server.mailbox_backend),
            throttle=LoginThrottle(time.monotonic),
            tls_context=tls_context,
            settings=settings or Pop3Settings(),
            tarpit_override=0.01,
        )
        implicit = Pop3Listener(ctx, "127.0.0.1", 0, implicit_tls=True)
        await implicit.start()
        explicit = Pop3Listener(ctx, "127.0.0.1", 0)
        await explicit.start()
        return PopServer(org, ctx, (implicit, explicit))

    return org.call(start())


def stop_pop(server: PopServer) -> None:
    async def stop() -> None:
        for listener in server.listeners:
            await listener.stop()

    server.org.call(stop())


@pytest.fixture
def pop(org: RunningServer) -> Iterator[PopServer]:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        for subject, body in BODIES:
            s.sendmail("someone@remote.test", [ALICE], make_message(subject, body))
    assert len(org.wait_inbox(ALICE, len(BODIES))) == len(BODIES)
    server = start_pop(org)
    try:
        yield server
    finally:
        stop_pop(server)


def stored(org: RunningServer) -> list[bytes]:
    """alice's Inbox as the store holds it, in UID order."""
    items = sorted(org.inbox(ALICE), key=lambda i: i.uid)
    return [org.read_item(item) for item in items]


def joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def test_stat_list_uidl_retr_top_over_implicit_tls(pop: PopServer) -> None:
    org = pop.org
    raw = stored(org)
    items = sorted(org.inbox(ALICE), key=lambda i: i.uid)
    uidvalidity = org.call(
        org.server.backend.sql.mailstore.get_folder(items[0].mailbox_id, "Inbox")
    ).uidvalidity
    client = pop.login()
    assert client.stat() == (3, sum(len(r) for r in raw))
    _resp, listing, _ = client.list()
    assert listing == [f"{n} {len(r)}".encode() for n, r in enumerate(raw, 1)]
    assert [i.size for i in items] == [len(r) for r in raw]
    _resp, uids, _ = client.uidl()
    assert uids == [f"{n} {uidvalidity}.{i.uid}".encode() for n, i in enumerate(items, 1)]
    for n, message in enumerate(raw, 1):
        resp, lines, _octets = client.retr(n)
        assert resp == f"+OK {len(message)} octets".encode()
        assert joined(lines) == message
    # The lines starting with "." came back exactly as stored (stuffed, then unstuffed).
    assert b"\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n" in raw[1]
    for lines_wanted in (0, 1, 2, 1000):
        _resp, lines, _ = client.top(2, lines_wanted)
        assert joined(lines) == top_of(raw[1], lines_wanted)
    assert client.quit().startswith(b"+OK")
    assert len(org.inbox(ALICE)) == 3  # nothing marked, nothing removed


def test_large_message_is_streamed_the_same(pop: PopServer) -> None:
    # Past INLINE_MESSAGE_BYTES RETR and TOP stream the file in chunks; below it
    # they read it whole. Both must give the same bytes, dots stuffed across chunks.
    org = pop.org
    body = "".join(f".line {n} with a leading dot\n" for n in range(12000))  # ~350 KB
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail("someone@remote.test", [ALICE], make_message("big one", body))
    org.wait_inbox(ALICE, len(BODIES) + 1)
    raw = stored(org)
    big = max(raw, key=len)
    assert len(big) > INLINE_MESSAGE_BYTES
    n = raw.index(big) + 1
    client = pop.login()
    resp, lines, _ = client.retr(n)
    assert resp == f"+OK {len(big)} octets".encode() and joined(lines) == big
    for lines_wanted in (0, 3, 20000):
        _resp, lines, _ = client.top(n, lines_wanted)
        assert joined(lines) == top_of(big, lines_wanted)
    assert client.quit().startswith(b"+OK")


def test_dele_quit_removes_and_dropped_connection_does_not(pop: PopServer) -> None:
    org = pop.org
    before = sorted(org.inbox(ALICE), key=lambda i: i.uid)
    client = pop.login()
    client.dele(1)
    with pytest.raises(poplib.error_proto, match=r"no such message"):
        client.retr(1)
    assert client.stat()[0] == 2
    # Dropped: no QUIT, so no UPDATE state. (The socket closes once its file is closed too.)
    client.file.close()
    client.sock.close()
    client = pop.login()
    assert client.stat()[0] == 3
    assert len(org.inbox(ALICE)) == 3
    client.dele(1)
    client.rset()
    client.dele(2)
    assert client.stat()[0] == 2
    client.quit()
    after = sorted(org.inbox(ALICE), key=lambda i: i.uid)
    assert [i.uid for i in after] == [before[0].uid, before[2].uid]


def test_uidls_stable_across_sessions(pop: PopServer) -> None:
    client = pop.login()
    first = client.uidl()[1]
    client.dele(2)
    client.quit()
    client = pop.login()
    second = client.uidl()[1]
    client.quit()
    # Message numbers shift; each remaining message keeps its unique-id.
    ids = [line.split()[1] for line in first]
    assert [line.split()[1] for line in second] == [ids[0], ids[2]]


def test_second_session_gets_in_use_until_the_first_ends(pop: PopServer) -> None:
    first = pop.login()
    second = pop.ssl()
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[IN-USE\]"):
        second.pass_(PASSWORD)
    # The lock is per mailbox, not per login name: the alias is the same maildrop.
    second.user(f"al@{DOMAIN}")
    with pytest.raises(poplib.error_proto, match=r"IN-USE"):
        second.pass_(PASSWORD)
    # bob is unaffected.
    bob = pop.ssl()
    bob.user(f"bob@{DOMAIN}")
    assert bob.pass_(PASSWORD).startswith(b"+OK")
    bob.quit()
    first.quit()
    second.user(ALICE)
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()


def test_alias_logs_in_to_the_same_maildrop(pop: PopServer) -> None:
    client = pop.login(f"al@{DOMAIN}")
    assert client.stat()[0] == 3
    client.quit()


def test_stls_and_secure_login(pop: PopServer) -> None:
    client = pop.plain()
    capa = client.capa()
    assert "STLS" in capa and "USER" not in capa
    assert "SASL" not in capa  # PLAIN/LOGIN are not offered in the clear
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        client.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        short(client, "AUTH PLAIN " + plain_ir(ALICE, PASSWORD))
    client.stls(context=pop.org.client_context())
    capa = client.capa()
    assert "STLS" not in capa and "USER" in capa
    assert capa["SASL"] == ["PLAIN", "LOGIN"]
    client.user(ALICE)
    client.pass_(PASSWORD)
    assert client.stat()[0] == 3
    client.quit()


def test_plaintext_login_setting_allows_user_pass_without_tls(org: RunningServer) -> None:
    server = start_pop(org, Pop3Settings(login_type=LoginType.PLAIN_TEXT_LOGIN))
    try:
        client = server.plain()
        assert "USER" in client.capa()
        client.user(ALICE)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        client.quit()
    finally:
        stop_pop(server)


def short(client: poplib.POP3, line: str) -> bytes:
    """Send a command poplib has no method for (typeshed omits `_shortcmd`)."""
    untyped: Any = client
    return bytes(untyped._shortcmd(line))


def long(client: poplib.POP3, line: str) -> list[bytes]:
    """A multi-line command poplib has no method for; its lines."""
    untyped: Any = client
    return list(untyped._longcmd(line)[1])


def plain_ir(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_wrong_password_then_right_one_in_the_same_session(pop: PopServer) -> None:
    client = pop.ssl()
    client.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        client.pass_("wrong")
    with pytest.raises(poplib.error_proto, match=r"send USER first"):
        client.pass_(PASSWORD)
    client.user("nobody@" + DOMAIN)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        client.pass_(PASSWORD)
    client.user(ALICE)
    assert client.pass_(PASSWORD).startswith(b"+OK")
    assert client.stat()[0] == 3
    client.quit()


def test_auth_plain_with_initial_response_and_with_challenge(pop: PopServer) -> None:
    client = pop.ssl()
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        short(client, "AUTH PLAIN " + plain_ir(ALICE, "wrong"))
    assert short(client, "AUTH PLAIN " + plain_ir(ALICE, PASSWORD)).startswith(b"+OK")
    assert client.stat()[0] == 3
    client.quit()
    client = pop.ssl()
    assert short(client, "AUTH PLAIN") == b"+ "
    assert short(client, plain_ir(ALICE, PASSWORD)).startswith(b"+OK")
    client.quit()
    client = pop.ssl()
    mechanisms = long(client, "AUTH")
    assert mechanisms == [b"PLAIN", b"LOGIN"]
    assert short(client, "AUTH LOGIN") == b"+ " + base64.b64encode(b"Username:")
    with pytest.raises(poplib.error_proto, match=r"authentication cancelled"):
        short(client, "*")
    client.quit()


def test_too_many_bad_commands_closes(pop: PopServer) -> None:
    client = pop.ssl()
    for _ in range(10):
        with pytest.raises(poplib.error_proto, match=r"unknown command"):
            short(client, "XYZZ")
    with pytest.raises(poplib.error_proto, match=r"too many bad commands"):
        short(client, "STAT")  # not valid before login: bad too
    with pytest.raises((poplib.error_proto, OSError)):
        short(client, "NOOP")  # the server hung up


def test_over_long_line_is_refused_and_session_continues(pop: PopServer) -> None:
    client = pop.ssl()
    with pytest.raises(poplib.error_proto, match=r"line too long"):
        short(client, "CAPA " + "x" * 5000)
    assert "TOP" in client.capa()
    client.user(ALICE)
    client.pass_(PASSWORD)
    assert client.noop().startswith(b"+OK")
    client.quit()


def test_curl_retrieves_message_1(pop: PopServer) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    raw = stored(pop.org)[0]
    result = subprocess.run(
        [
            curl,
            "-s",
            "--insecure",
            f"pop3s://127.0.0.1:{pop.ssl_port}/1",
            "-u",
            f"{ALICE}:{PASSWORD}",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == raw


@pytest.mark.parametrize("seed", range(20))
def test_streaming_top_cuts_where_top_of_does(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [b"a", b".", b"\r\n", b"\n", b"\r", b" "]
    message = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
    for lines in (0, 1, 2, 5, 100):
        cutter = _TopCutter(lines)
        out = b""
        pos = 0
        while pos < len(message) and not cutter.done:
            size = rng.randrange(1, 8)
            out += cutter.feed(message[pos : pos + size])
            pos += size
        assert out == top_of(message, lines), (message, lines)


def test_plaintext_pipelined_behind_stls_is_discarded(pop: PopServer) -> None:
    """CVE-2011-0411: a command injected after STLS must not run inside TLS."""

    def line(sock: socket.socket | ssl.SSLSocket) -> bytes:
        out = b""
        while not out.endswith(b"\n"):
            byte = sock.recv(1)
            if not byte:
                break
            out += byte
        return out

    with socket.create_connection(("127.0.0.1", pop.plain_port), timeout=10) as raw:
        assert line(raw).startswith(b"+OK")
        raw.sendall(b"STLS\r\nCAPA\r\n")
        assert line(raw) == b"+OK begin TLS negotiation\r\n"
        with pop.org.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"QUIT\r\n")
            assert line(tls) == b"+OK bye\r\n"  # not the CAPA listing


def test_connection_limit_per_address_and_idle_timeout(org: RunningServer) -> None:
    server = start_pop(org, Pop3Settings(max_connections_per_ip=2, idle_timeout_before_login=0.5))
    try:
        first = socket.create_connection(("127.0.0.1", server.plain_port), timeout=10)
        second = socket.create_connection(("127.0.0.1", server.plain_port), timeout=10)
        assert first.recv(512).startswith(b"+OK") and second.recv(512).startswith(b"+OK")
        third = socket.create_connection(("127.0.0.1", server.plain_port), timeout=10)
        assert third.recv(512).startswith(b"-ERR [SYS/TEMP]")  # the third from one address
        assert third.recv(512) == b""
        # RFC 1939 §3: an idle client is closed without a reply.
        assert first.recv(512) == b"" and second.recv(512) == b""
    finally:
        stop_pop(server)
