"""The IMAP4/POP3 proxy of the Client Access front end (frontend/mail_proxy.py).

A back-end IMAP4/POP3 listener (LocalRoute, accepting logins on a user's behalf
from organization servers) and a front-end listener whose locator sends every
mailbox to it (RemoteRoute, the back end's certificate pinned), both on the
`org` server's loop with real sockets and TLS; real clients (imaplib,
IMAPClient, poplib) on the front end, raw sockets for the wire details.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest
from imapclient import IMAPClient  # type: ignore[import-untyped]

from postwerk.directory.passwords import LoginThrottle
from postwerk.directory.server_auth import ServerTrust, certificate_sha256, server_password
from postwerk.frontend.mail_proxy import (
    ImapLogin,
    LoggedIn,
    Pop3Login,
    Refused,
    Send,
    plain_response,
)
from postwerk.frontend.routing import MailboxRoute, RemoteRoute, SingleServerLocator
from postwerk.services.imap import ImapContext, ImapListener, ImapSettings
from postwerk.services.pop3 import Pop3Context, Pop3Listener, Pop3Settings
from postwerk.services.tls import server_context
from postwerk.store.records import Recipient
from tests.conftest import DOMAIN, PASSWORD, RunningServer, wait_for

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
SECRET = "organization secret for the tests"
BACKEND_APPENDLIMIT = 12_345_678  # differs from the front end's: shows whose capabilities
BACKEND_USER_LIMIT = 3  # below the front end's, so the back end's limit shows


async def registered() -> list[str]:
    return ["CAS1", "MBX1"]


def trust(label: str = "CAS1") -> ServerTrust:
    return ServerTrust(SECRET, label, registered)


@dataclass
class RemoteLocator:
    """Every mailbox on the back end at `route` (a test may break the route)."""

    route: RemoteRoute
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def locate(self, mailbox: Recipient, protocol: str) -> MailboxRoute:
        self.calls.append((mailbox.primary_address, protocol))
        return self.route


@dataclass
class Proxy:
    org: RunningServer
    back_imap: ImapListener
    back_pop: Pop3Listener
    front_imap: ImapListener
    front_pop: Pop3Listener
    imap_locator: RemoteLocator
    pop_locator: RemoteLocator

    def imap(self) -> imaplib.IMAP4_SSL:
        ctx = self.org.client_context()
        return imaplib.IMAP4_SSL(
            "127.0.0.1", self.front_imap.bound_port, ssl_context=ctx, timeout=10
        )

    def imapclient(self) -> IMAPClient:
        return IMAPClient(
            "127.0.0.1",
            port=self.front_imap.bound_port,
            ssl=True,
            ssl_context=self.org.client_context(),
            timeout=10,
        )

    def pop(self) -> poplib.POP3_SSL:
        ctx = self.org.client_context()
        return poplib.POP3_SSL("127.0.0.1", self.front_pop.bound_port, context=ctx, timeout=10)

    def raw(self, port: int) -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        tls = self.org.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
        read_until(tls, b"\r\n")  # greeting
        return tls

    def open_users(self) -> tuple[int, int]:
        """Authenticated IMAP sessions (front end, back end), all users."""
        return self.front_imap.ctx.by_user.total, self.back_imap.ctx.by_user.total


def read_until(sock: ssl.SSLSocket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_tagged(sock: ssl.SSLSocket, tag: bytes) -> bytes:
    """Everything up to the end of the line of `tag`'s completion."""
    data = b""
    while True:
        at = data.find(b"\n" + tag + b" ") if not data.startswith(tag + b" ") else 0
        if at >= 0 and data.find(b"\r\n", at + 1) >= 0:
            return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def send_mail(org: RunningServer, subject: str, to: str = ALICE) -> None:
    message = (
        f"From: someone@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail("someone@remote.test", [to], message)


@pytest.fixture
def proxy(org: RunningServer) -> Iterator[Proxy]:
    tls_dir = org.data_dir / "tls"
    tls = server_context(tls_dir / "server.crt", tls_dir / "server.key")
    fingerprint = certificate_sha256(tls_dir / "server.crt")
    backend = org.server.mailbox_backend

    def back_imap_ctx() -> ImapContext:
        return ImapContext(
            directory=org.server.directory,
            locator=SingleServerLocator(backend),
            throttle=LoginThrottle(time.monotonic),
            tls_context=tls,
            settings=ImapSettings(
                append_limit=BACKEND_APPENDLIMIT, max_connections_per_user=BACKEND_USER_LIMIT
            ),
            tarpit_override=0.01,
            trust=trust("MBX1"),
            accepts_proxy_logins=True,
        )

    async def start() -> Proxy:
        back_imap = ImapListener(back_imap_ctx(), "127.0.0.1", 0, implicit_tls=True)
        back_pop = Pop3Listener(
            Pop3Context(
                directory=org.server.directory,
                locator=SingleServerLocator(backend),
                throttle=LoginThrottle(time.monotonic),
                tls_context=tls,
                tarpit_override=0.01,
                trust=trust("MBX1"),
                accepts_proxy_logins=True,
            ),
            "127.0.0.1",
            0,
            implicit_tls=True,
        )
        await back_imap.start()
        await back_pop.start()
        imap_locator = RemoteLocator(
            RemoteRoute("MBX1", "127.0.0.1", back_imap.bound_port, fingerprint)
        )
        pop_locator = RemoteLocator(
            RemoteRoute("MBX1", "127.0.0.1", back_pop.bound_port, fingerprint)
        )
        front_imap = ImapListener(
            ImapContext(
                directory=org.server.directory,
                locator=imap_locator,
                throttle=LoginThrottle(time.monotonic),
                tls_context=tls,
                tarpit_override=0.01,
                trust=trust(),
            ),
            "127.0.0.1",
            0,
            implicit_tls=True,
        )
        front_pop = Pop3Listener(
            Pop3Context(
                directory=org.server.directory,
                locator=pop_locator,
                throttle=LoginThrottle(time.monotonic),
                tls_context=tls,
                settings=Pop3Settings(),
                tarpit_override=0.01,
                trust=trust(),
            ),
            "127.0.0.1",
            0,
            implicit_tls=True,
        )
        await front_imap.start()
        await front_pop.start()
        return Proxy(org, back_imap, back_pop, front_imap, front_pop, imap_locator, pop_locator)

    running = org.call(start())

    async def stop() -> None:
        for listener in (running.front_imap, running.front_pop):
            await listener.stop()
        for back in (running.back_imap, running.back_pop):
            await back.stop()

    try:
        yield running
    finally:
        org.call(stop())


# ---------------------------------------------------------------- IMAP4 through the proxy


def test_imap_session_through_the_proxy_works_on_the_back_end(proxy: Proxy) -> None:
    org = proxy.org
    send_mail(org, "first")
    assert len(org.wait_inbox(ALICE, 1)) == 1
    c = proxy.imap()
    c.login(ALICE, PASSWORD)
    assert proxy.imap_locator.calls == [(ALICE, "imap4")]
    assert proxy.open_users() == (1, 1)  # counted on both sides while proxied
    typ, data = c.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    typ, fetched = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and isinstance(fetched[0], tuple)
    assert b"Subject: first" in fetched[0][1]
    # APPEND with a (synchronizing) literal, through the relay.
    body = b"From: alice@example.test\r\nSubject: appended\r\n\r\n" + b"x" * 70_000 + b"\r\n"
    typ, _ = c.append("INBOX", None, None, body)
    assert typ == "OK"
    items = org.inbox(ALICE)
    assert len(items) == 2
    assert org.read_item(items[1]).endswith(b"x" * 1000 + b"\r\n")
    assert c.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert c.expunge()[0] == "OK"
    remaining = org.inbox(ALICE)
    assert len(remaining) == 1 and remaining[0].uid == items[1].uid
    c.logout()
    wait_for(lambda: proxy.open_users() == (0, 0))


def test_capabilities_after_login_are_the_back_ends(proxy: Proxy) -> None:
    s = proxy.raw(proxy.front_imap.bound_port)
    s.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
    reply = read_tagged(s, b"a1")
    assert b"a1 OK [CAPABILITY " in reply
    assert f"APPENDLIMIT={BACKEND_APPENDLIMIT}".encode() in reply
    s.sendall(b"a2 CAPABILITY\r\n")
    caps = read_tagged(s, b"a2")
    assert f"APPENDLIMIT={BACKEND_APPENDLIMIT}".encode() in caps
    s.sendall(b"a3 LOGOUT\r\n")
    assert b"a3 OK" in read_tagged(s, b"a3")
    s.close()
    # IMAPClient too sees the back end's (from the OK's code).
    c = proxy.imapclient()
    c.login(ALICE, PASSWORD)
    assert f"APPENDLIMIT={BACKEND_APPENDLIMIT}".encode() in c.capabilities()
    c.logout()


def test_starttls_port_relays_over_the_upgraded_connection(proxy: Proxy) -> None:
    explicit = ImapListener(proxy.front_imap.ctx, "127.0.0.1", 0)
    proxy.org.call(explicit.start())
    try:
        c = imaplib.IMAP4("127.0.0.1", explicit.bound_port, timeout=10)
        c.starttls(ssl_context=proxy.org.client_context())
        c.login(ALICE, PASSWORD)
        assert c.select("INBOX")[0] == "OK"
        c.logout()
    finally:
        proxy.org.call(explicit.stop())


def test_idle_through_the_proxy_wakes_on_delivery(proxy: Proxy) -> None:
    c = proxy.imapclient()
    c.login(ALICE, PASSWORD)
    c.select_folder("INBOX")
    c.idle()
    start = time.monotonic()
    send_mail(proxy.org, "during idle")
    seen: list[object] = []
    while time.monotonic() - start < 10 and (1, b"EXISTS") not in seen:
        seen.extend(c.idle_check(timeout=1))
    c.idle_done()
    assert (1, b"EXISTS") in seen
    assert time.monotonic() - start < 5
    c.logout()


def test_pipelined_commands_after_login_reach_the_back_end(proxy: Proxy) -> None:
    s = proxy.raw(proxy.front_imap.bound_port)
    message = b"Subject: pipelined\r\n\r\nhi\r\n"
    s.sendall(
        f'a1 LOGIN {ALICE} "{PASSWORD}"\r\na2 SELECT INBOX\r\na3 NOOP\r\n'.encode()
        + b"a4 APPEND INBOX {%d+}\r\n%s\r\n" % (len(message), message)
        + b"a5 LOGOUT\r\n"
    )
    data = read_tagged(s, b"a5")
    for tag in (b"a1", b"a2", b"a3", b"a4", b"a5"):
        assert tag + b" OK" in data, data
    assert data.index(b"a1 OK") < data.index(b"a2 OK") < data.index(b"a5 OK")
    s.close()
    assert any(b"Subject: pipelined" in proxy.org.read_item(i) for i in proxy.org.inbox(ALICE))


def test_compress_deflate_passes_through(proxy: Proxy) -> None:
    s = proxy.raw(proxy.front_imap.bound_port)
    s.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
    assert b"a1 OK" in read_tagged(s, b"a1")
    s.sendall(b"a2 COMPRESS DEFLATE\r\n")
    assert read_tagged(s, b"a2").startswith(b"a2 OK")
    out = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    s.sendall(out.compress(b"a3 SELECT INBOX\r\n") + out.flush(zlib.Z_SYNC_FLUSH))
    plain = b""
    while b"a3 " not in plain:
        chunk = s.recv(65536)
        assert chunk
        plain += inflate.decompress(chunk)
    assert b"a3 OK [READ-WRITE]" in plain
    s.close()


def test_large_message_both_ways_with_flow_control(proxy: Proxy) -> None:
    """Megabytes each way, not an octet lost or reordered; a client that does not
    read holds the back end's output back (reading pauses on the back end's side)
    instead of the front end buffering the whole message."""
    c = proxy.imap()
    c.login(ALICE, PASSWORD)
    line = bytes(range(33, 111)) + b"\r\n"
    body = b"Subject: large\r\n\r\n" + line * 100_000  # 8 MB
    assert c.append("INBOX", None, None, body)[0] == "OK"
    c.logout()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a slow reader
    sock.settimeout(10)
    sock.connect(("127.0.0.1", proxy.front_imap.bound_port))
    s = proxy.org.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
    read_until(s, b"\r\n")
    s.sendall(
        f'a1 LOGIN {ALICE} "{PASSWORD}"\r\na2 SELECT INBOX\r\na3 FETCH 1 BODY.PEEK[]\r\n'.encode()
    )
    time.sleep(1.0)  # not reading meanwhile

    async def buffered() -> int:
        (connection,) = proxy.front_imap.live.values()
        transport = connection.channel.transport  # type: ignore[attr-defined]
        return int(transport.get_write_buffer_size())

    assert proxy.org.call(buffered()) < 2 * 1024 * 1024
    data = read_tagged(s, b"a3")
    assert b"a3 OK" in data
    assert b"{%d}\r\n" % len(body) + body + b")" in data
    s.close()


def test_a_client_that_goes_away_ends_the_back_end_session(proxy: Proxy) -> None:
    s = proxy.raw(proxy.front_imap.bound_port)
    s.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\na2 IDLE\r\n'.encode())
    assert b"+ " in read_until(s, b"+ ")
    assert proxy.open_users() == (1, 1)
    s.close()  # no DONE, no LOGOUT
    wait_for(lambda: proxy.open_users() == (0, 0))
    # And a server that stops hangs up relayed sessions on both sides.
    c = proxy.imapclient()
    c.login(ALICE, PASSWORD)
    c.select_folder("INBOX")
    proxy.org.call(proxy.front_imap.stop())
    wait_for(lambda: proxy.open_users() == (0, 0))
    with pytest.raises((OSError, IMAPClient.AbortError, imaplib.IMAP4.abort)):
        c.noop()


def test_per_user_limit_of_the_back_end_holds_through_the_front_end(proxy: Proxy) -> None:
    sessions = []
    for _ in range(BACKEND_USER_LIMIT):
        c = proxy.imap()
        c.login(ALICE, PASSWORD)
        sessions.append(c)
    extra = proxy.imap()
    with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\]"):
        extra.login(ALICE, PASSWORD)
    extra.logout()
    assert proxy.open_users() == (BACKEND_USER_LIMIT, BACKEND_USER_LIMIT)
    for c in sessions:
        c.logout()
    wait_for(lambda: proxy.open_users() == (0, 0))


# ---------------------------------------------------------------- POP3 through the proxy


def test_pop3_session_through_the_proxy(proxy: Proxy) -> None:
    org = proxy.org
    send_mail(org, "for pop")
    send_mail(org, "second for pop")
    assert len(org.wait_inbox(ALICE, 2)) == 2
    p = proxy.pop()
    p.user(ALICE)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    assert proxy.pop_locator.calls == [(ALICE, "pop3")]
    # The maildrop is locked on the back end: a second session anywhere is IN-USE.
    other = proxy.pop()
    other.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        other.pass_(PASSWORD)
    other.quit()
    assert p.stat()[0] == 2
    _resp, lines, _octets = p.retr(1)
    assert b"Subject: for pop" in lines
    p.dele(1)
    assert p.quit().startswith(b"+OK")
    wait_for(lambda: len(org.inbox(ALICE)) == 1)
    wait_for(lambda: proxy.front_pop.ctx.by_user.total == 0)
    assert proxy.back_pop.ctx.by_user.total == 0
    alice = org.call(org.server.directory.get(ALICE))
    assert not proxy.back_pop.ctx.locks.held(alice.id)


# ---------------------------------------------------------------- failures before the relay


def test_wrong_fingerprint_is_unavailable_and_the_front_end_stays_up(proxy: Proxy) -> None:
    good_imap, good_pop = proxy.imap_locator.route, proxy.pop_locator.route
    proxy.imap_locator.route = replace(good_imap, certificate_sha256="00" * 32)
    proxy.pop_locator.route = replace(good_pop, certificate_sha256="")
    c = proxy.imap()
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        c.login(ALICE, PASSWORD)
    c.logout()
    p = proxy.pop()
    p.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
        p.pass_(PASSWORD)
    p.quit()
    # No password was offered to the impostor: the back end saw no login at all.
    assert proxy.back_imap.ctx.by_user.total == 0
    assert proxy.back_imap.ctx.throttle.failures("127.0.0.1", "CAS1") == (0, 0)
    proxy.imap_locator.route, proxy.pop_locator.route = good_imap, good_pop
    c = proxy.imap()
    c.login(ALICE, PASSWORD)
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_back_end_not_listening_is_unavailable(proxy: Proxy) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    proxy.imap_locator.route = replace(proxy.imap_locator.route, port=closed_port)
    proxy.pop_locator.route = replace(proxy.pop_locator.route, port=closed_port)
    for _ in range(3):  # nothing held on failure: the per-user count stays at zero
        c = proxy.imap()
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            c.login(ALICE, PASSWORD)
        c.state = "AUTH"  # still not authenticated on the front end
        with pytest.raises(imaplib.IMAP4.error, match="not valid in not-authenticated"):
            c.select("INBOX")
        c.logout()
    p = proxy.pop()
    p.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
        p.pass_(PASSWORD)
    p.quit()
    assert proxy.front_imap.ctx.by_user.total == 0
    assert proxy.front_pop.ctx.by_user.total == 0


# ---------------------------------------------------------------- the back end's check


def back_end_authenticate(proxy: Proxy, authzid: str, authcid: str, password: str) -> bytes:
    s = proxy.raw(proxy.back_imap.bound_port)
    s.sendall(f"b1 AUTHENTICATE PLAIN {plain_response(authzid, authcid, password)}\r\n".encode())
    reply = read_tagged(s, b"b1")
    s.close()
    return reply


def test_back_end_accepts_a_registered_server_on_behalf_of_a_user(proxy: Proxy) -> None:
    reply = back_end_authenticate(proxy, ALICE, "CAS1", server_password(SECRET, "CAS1"))
    assert b"b1 OK" in reply


def test_back_end_refuses_a_wrong_server_password(proxy: Proxy) -> None:
    reply = back_end_authenticate(proxy, ALICE, "CAS1", "not the server password")
    assert b"b1 NO [AUTHENTICATIONFAILED]" in reply
    # Counted against the address, not the server label (which strangers could lock out).
    assert proxy.back_imap.ctx.throttle.failures("127.0.0.1", "CAS1") == (1, 0)


def test_back_end_refuses_a_user_acting_as_another(proxy: Proxy) -> None:
    reply = back_end_authenticate(proxy, BOB, ALICE, PASSWORD)
    assert b"b1 NO [AUTHENTICATIONFAILED]" in reply
    s = proxy.raw(proxy.back_pop.bound_port)
    s.sendall(f"AUTH PLAIN {plain_response(BOB, ALICE, PASSWORD)}\r\n".encode())
    assert read_until(s, b"\r\n").startswith(b"-ERR [AUTH]")
    s.close()


def test_back_end_refuses_an_unregistered_server_label(proxy: Proxy) -> None:
    reply = back_end_authenticate(proxy, ALICE, "EDGE9", server_password(SECRET, "EDGE9"))
    assert b"b1 NO [AUTHENTICATIONFAILED]" in reply
    # And an unknown mailbox, even from a registered server.
    reply = back_end_authenticate(
        proxy, f"nobody@{DOMAIN}", "CAS1", server_password(SECRET, "CAS1")
    )
    assert b"b1 NO [AUTHENTICATIONFAILED]" in reply


def test_client_facing_ports_never_take_logins_on_behalf(proxy: Proxy) -> None:
    # The front end holds server credentials too, but its 993 is for clients: a valid
    # server login on behalf of a user is refused there (the back end's 1993 only).
    s = proxy.raw(proxy.front_imap.bound_port)
    token = plain_response(ALICE, "CAS1", server_password(SECRET, "CAS1"))
    s.sendall(f"b1 AUTHENTICATE PLAIN {token}\r\n".encode())
    assert b"b1 NO [AUTHENTICATIONFAILED]" in read_tagged(s, b"b1")
    s.close()
    s = proxy.raw(proxy.front_pop.bound_port)
    s.sendall(f"AUTH PLAIN {token}\r\n".encode())
    assert read_until(s, b"\r\n").startswith(b"-ERR [AUTH]")
    s.close()


# ---------------------------------------------------------------- the login dialogs (sans-I/O)


def test_imap_login_dialog() -> None:
    d = ImapLogin("SVI=")
    assert d.receive_line(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready") == Send(
        b"PW1 AUTHENTICATE PLAIN SVI=\r\n"
    )
    assert d.receive_line(b"* 3 EXISTS") is None
    assert d.receive_line(b"PW1 OK [CAPABILITY IMAP4rev1 IDLE] done") == LoggedIn(
        ("IMAP4rev1", "IDLE"), "done"
    )
    # No capabilities in the OK: the dialog asks for them.
    d = ImapLogin("SVI=")
    d.receive_line(b"* OK ready")
    assert d.receive_line(b"PW1 OK done") == Send(b"PW2 CAPABILITY\r\n")
    assert d.receive_line(b"* CAPABILITY IMAP4rev1 MOVE") is None
    assert d.receive_line(b"PW2 OK done") == LoggedIn(("IMAP4rev1", "MOVE"), "done")
    # Refusals, with the code the services pass on.
    d = ImapLogin("SVI=")
    d.receive_line(b"* OK ready")
    assert d.receive_line(b"PW1 NO [LIMIT] too many") == Refused(
        "back end answered NO: too many", "LIMIT"
    )
    assert ImapLogin("x").receive_line(b"* PREAUTH hi") == Refused(
        "unexpected greeting '* PREAUTH hi'", None
    )


def test_pop3_login_dialog() -> None:
    d = Pop3Login("SVI=")
    assert d.receive_line(b"+OK ready") == Send(b"AUTH PLAIN SVI=\r\n")
    assert d.receive_line(b"+OK maildrop has 2 messages") == LoggedIn((), "maildrop has 2 messages")
    d = Pop3Login("SVI=")
    d.receive_line(b"+OK ready")
    assert d.receive_line(b"-ERR [IN-USE] maildrop in use") == Refused(
        "back end answered -ERR [IN-USE] maildrop in use", "IN-USE"
    )
    # Too long for a POP3 command line (RFC 2449 §4): sent after the "+ " instead.
    long = "A" * 300
    d = Pop3Login(long)
    assert d.receive_line(b"+OK ready") == Send(b"AUTH PLAIN\r\n")
    assert d.receive_line(b"+ ") == Send(long.encode() + b"\r\n")
    assert isinstance(d.receive_line(b"+OK in"), LoggedIn)
