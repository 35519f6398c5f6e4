"""The IMAP service with imaplib and imapclient over real sockets and real TLS.

Listeners are started inside the `org` server's event loop on ephemeral
loopback ports: 993-style (implicit TLS) and 143-style (STARTTLS). Messages
reach alice's Inbox over SMTP, so what IMAP sends is compared with what the
store holds.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
from imapclient import IMAPClient  # type: ignore[import-untyped]

from postwerk.directory.passwords import LoginThrottle
from postwerk.frontend.routing import SingleServerLocator
from postwerk.services.imap import ImapContext, ImapListener, ImapSettings
from postwerk.services.tls import server_context
from tests.conftest import DOMAIN, PASSWORD, RunningServer

ALICE = f"alice@{DOMAIN}"


@dataclass
class ImapServer:
    org: RunningServer
    ctx: ImapContext
    listeners: tuple[ImapListener, ...]

    @property
    def ssl_port(self) -> int:
        return self.listeners[0].bound_port

    @property
    def plain_port(self) -> int:
        return self.listeners[1].bound_port

    def client(self) -> IMAPClient:
        c = IMAPClient(
            "127.0.0.1",
            port=self.ssl_port,
            ssl=True,
            ssl_context=self.org.client_context(),
            timeout=10,
        )
        c.login(ALICE, PASSWORD)
        return c

    def imaplib_ssl(self) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL(
            "127.0.0.1", self.ssl_port, ssl_context=self.org.client_context(), timeout=10
        )


def make_message(subject: str, body: str, sender: str = "someone@remote.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Some One <{sender}>"
    msg["To"] = ALICE
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@remote.test>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def make_multipart() -> bytes:
    msg = EmailMessage()
    msg["From"] = "carol@remote.test"
    msg["To"] = ALICE
    msg["Subject"] = "with attachment"
    msg.set_content("See the attachment.\n")
    msg.add_attachment(
        b"\x01\x02binary", maintype="application", subtype="octet-stream", filename="a.bin"
    )
    return msg.as_bytes().replace(b"\n", b"\r\n")


BODIES = (
    ("first", "Hello Alice.\nSecond line.\n", "someone@remote.test"),
    ("second news", "The zebra crossing is open.\n", "news@lists.test"),
    ("third", "Short.\n", "someone@remote.test"),
)


def send(org: RunningServer, message: bytes, sender: str = "someone@remote.test") -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail(sender, [ALICE], message)


def start_imap(org: RunningServer, settings: ImapSettings | None = None) -> ImapServer:
    tls_dir = org.data_dir / "tls"
    tls_context = server_context(tls_dir / "server.crt", tls_dir / "server.key")

    async def start() -> ImapServer:
        ctx = ImapContext(
            directory=org.server.directory,
            locator=SingleServerLocator(org.server.mailbox_backend),
            throttle=LoginThrottle(time.monotonic),
            tls_context=tls_context,
            settings=settings or ImapSettings(),
            tarpit_override=0.01,
        )
        implicit = ImapListener(ctx, "127.0.0.1", 0, implicit_tls=True)
        await implicit.start()
        explicit = ImapListener(ctx, "127.0.0.1", 0)
        await explicit.start()
        return ImapServer(org, ctx, (implicit, explicit))

    return org.call(start())


@pytest.fixture
def imap(org: RunningServer) -> Iterator[ImapServer]:
    for subject, body, sender in BODIES:
        send(org, make_message(subject, body, sender), sender)
    assert len(org.wait_inbox(ALICE, len(BODIES))) == len(BODIES)
    server = start_imap(org)
    try:
        yield server
    finally:

        async def stop() -> None:
            for listener in server.listeners:
                await listener.stop()

        org.call(stop())


# ---------------------------------------------------------------- login and TLS


def test_secure_login_requires_starttls(imap: ImapServer) -> None:
    c = imaplib.IMAP4("127.0.0.1", imap.plain_port, timeout=10)
    assert "LOGINDISABLED" in c.capabilities
    assert "STARTTLS" in c.capabilities
    assert "AUTH=PLAIN" not in c.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        c.login(ALICE, PASSWORD)
    c.starttls(ssl_context=imap.org.client_context())
    _typ, data = c.capability()
    caps = data[0].split()
    assert b"LOGINDISABLED" not in caps and b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps
    assert c.login(ALICE, PASSWORD)[0] == "OK"
    assert c.select("INBOX") == ("OK", [b"3"])
    c.logout()


def test_authenticate_plain_and_bad_password(imap: ImapServer) -> None:
    c = imap.imaplib_ssl()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(ALICE, "wrong")
    token = f"\0{ALICE}\0{PASSWORD}".encode()
    assert c.authenticate("PLAIN", lambda _challenge: token)[0] == "OK"
    c.logout()
    # SASL-IR with imapclient
    ic = IMAPClient(
        "127.0.0.1", port=imap.ssl_port, ssl=True, ssl_context=imap.org.client_context(), timeout=10
    )
    ic.plain_login(ALICE, PASSWORD)
    assert ic.namespace().personal == (("", "/"),)
    assert b"MOVE" in ic.capabilities()
    ic.logout()


# ---------------------------------------------------------------- folders


def test_list_special_use_and_hierarchy(imap: ImapServer) -> None:
    c = imap.client()
    folders = {name: flags for flags, _delim, name in c.list_folders()}
    assert "INBOX" in folders and "Calendar" not in folders and "Contacts" not in folders
    assert b"\\Sent" in folders["Sent Items"]
    assert b"\\Trash" in folders["Deleted Items"]
    assert b"\\Junk" in folders["Junk Email"]
    assert b"\\Drafts" in folders["Drafts"]
    c.create_folder("Projects/2026")
    c.create_folder("Grüße")
    folders = {name: flags for flags, _delim, name in c.list_folders()}
    assert b"\\HasChildren" in folders["Projects"]
    assert b"\\HasNoChildren" in folders["Projects/2026"]
    assert "Grüße" in folders
    assert [name for _f, _d, name in c.list_folders("", "Projects/%")] == ["Projects/2026"]
    with pytest.raises(IMAPClient.Error, match="ALREADYEXISTS"):
        c.create_folder("Projects")
    c.rename_folder("Projects/2026", "Projects/2027")
    with pytest.raises(IMAPClient.Error, match="NONEXISTENT"):
        c.select_folder("Projects/2026")
    c.delete_folder("Projects/2027")
    with pytest.raises(IMAPClient.Error, match="CANNOT"):
        c.delete_folder("Sent Items")
    with pytest.raises(IMAPClient.Error, match="NONEXISTENT"):
        c.delete_folder("nope")
    c.subscribe_folder("Projects")
    assert [name for _f, _d, name in c.list_sub_folders()] == ["Projects"]
    status = c.folder_status("INBOX", ["MESSAGES", "UNSEEN", "UIDNEXT", "UIDVALIDITY"])
    assert status[b"MESSAGES"] == 3 and status[b"UNSEEN"] == 3 and status[b"UIDNEXT"] == 4
    c.logout()


# ---------------------------------------------------------------- FETCH, STORE, SEARCH


def test_select_fetch_and_seen(imap: ImapServer) -> None:
    stored = imap.org.inbox(ALICE)
    c = imap.client()
    info = c.select_folder("INBOX")
    assert info[b"EXISTS"] == 3
    assert info[b"UIDNEXT"] == 4
    assert b"\\*" in info[b"PERMANENTFLAGS"] and info[b"READ-WRITE"]
    data = c.fetch([1], ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "FLAGS", "INTERNALDATE"])[1]
    env = data[b"ENVELOPE"]
    assert env.subject == b"first"
    assert env.from_[0].mailbox == b"someone" and env.from_[0].host == b"remote.test"
    assert data[b"BODYSTRUCTURE"][0].lower() == b"text"
    assert data[b"RFC822.SIZE"] == stored[0].size
    assert data[b"FLAGS"] == ()
    peek = c.fetch([1], ["BODY.PEEK[]"])[1]
    assert peek[b"BODY[]"] == imap.org.read_item(stored[0])
    assert c.get_flags([1])[1] == ()
    header = c.fetch([1], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])[1]
    assert header[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: first\r\n\r\n"
    text = c.fetch([1], ["BODY.PEEK[TEXT]<0.5>"])[1]
    assert text[b"BODY[TEXT]<0>"] == b"Hello"
    full = c.fetch([1], ["BODY[]"])[1]
    assert full[b"BODY[]"] == imap.org.read_item(stored[0])
    assert b"\\Seen" in full[b"FLAGS"]
    assert c.folder_status("INBOX", ["UNSEEN"])[b"UNSEEN"] == 2
    c.logout()


def test_fetch_parts_of_multipart(imap: ImapServer) -> None:
    send(imap.org, make_multipart(), "carol@remote.test")
    imap.org.wait_inbox(ALICE, 4)
    c = imap.client()
    c.select_folder("INBOX", readonly=True)
    data = c.fetch([4], ["BODY.PEEK[1]", "BODY.PEEK[2]", "BODY.PEEK[2.MIME]", "BODYSTRUCTURE"])[4]
    assert data[b"BODY[1]"] == b"See the attachment.\r\n"
    assert b"a.bin" in data[b"BODY[2.MIME]"]
    assert data[b"BODY[2]"].strip() == b"AQJiaW5hcnk="
    assert data[b"BODYSTRUCTURE"].is_multipart
    # EXAMINE: a plain BODY[] does not set \Seen
    c.fetch([4], ["BODY[]"])
    assert c.get_flags([4])[4] == ()
    c.logout()


def test_store_and_search(imap: ImapServer) -> None:
    c = imap.client()
    c.select_folder("INBOX")
    assert c.add_flags([1], [b"\\Flagged", b"$Important"])[1] == (b"\\Flagged", b"$Important")
    assert c.remove_flags([1], [b"$Important"])[1] == (b"\\Flagged",)
    assert c.set_flags([2], [b"\\Seen"])[2] == (b"\\Seen",)
    assert c.search(["UNSEEN"]) == [1, 3]
    assert c.search(["FLAGGED"]) == [1]
    assert c.search(["FROM", "news@lists"]) == [2]
    assert c.search(["SUBJECT", "THIRD"]) == [3]
    assert c.search(["BODY", "zebra"]) == [2]
    assert c.search(["TEXT", "second news"]) == [2]
    assert c.search(["UID", "2:*"]) == [2, 3]
    assert c.search(["HEADER", "Message-ID", "third@remote"]) == [3]
    assert c.search(["OR", "FLAGGED", "SEEN"]) == [1, 2]
    assert c.search(["NOT", "SMALLER", "1"]) == [1, 2, 3]
    assert c.search(["SINCE", "1-Jan-2000"]) == [1, 2, 3]
    with pytest.raises(IMAPClient.Error, match="BADCHARSET"):
        c.search(["SUBJECT", "x"], charset="KOI8-R")
    c.logout()


def test_copy_move_expunge_append(imap: ImapServer) -> None:
    c = imap.client()
    raw = c._imap  # imaplib keeps response codes aside: read them with response()
    c.select_folder("INBOX")
    uidvalidity = c.folder_status("Drafts", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    assert raw.uid("COPY", "1:2", "Drafts")[0] == "OK"
    assert raw.response("COPYUID") == ("COPYUID", [f"{uidvalidity} 1:2 1:2".encode()])
    c.move([3], "Deleted Items")
    assert c.search(["ALL"]) == [1, 2]
    c.set_flags([1], [b"\\Deleted"])
    c.expunge()
    assert c.search(["ALL"]) == [2]  # imapclient works with UIDs
    assert c.folder_status("Deleted Items", ["MESSAGES"])[b"MESSAGES"] == 1
    message = make_message("appended", "Written by APPEND.\n")
    c.append("Drafts", message, flags=[b"\\Draft"])
    code = raw.response("APPENDUID")[1][0]
    assert code is not None
    appended_validity, new_uid = (int(x) for x in code.split())
    assert appended_validity == uidvalidity and new_uid == 3
    c.select_folder("Drafts")
    data = c.fetch([new_uid], ["BODY.PEEK[]", "FLAGS", "ENVELOPE"])[new_uid]
    assert data[b"BODY[]"] == message and data[b"FLAGS"] == (b"\\Draft",)
    assert data[b"ENVELOPE"].subject == b"appended"
    with pytest.raises(IMAPClient.Error, match="TRYCREATE"):
        c.append("No Such Folder", message)
    c.logout()


def test_two_sessions_see_each_other(imap: ImapServer) -> None:
    a = imap.client()
    b = imap.client()
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    a.add_flags([2], [b"\\Flagged"])
    a.set_flags([3], [b"\\Deleted"])
    a.expunge()
    responses = b.noop()[1]
    assert (3, b"EXPUNGE") in responses
    assert any(r[1] == b"FETCH" and r[0] == 2 for r in responses)
    assert b.search(["ALL"]) == [1, 2]
    a.logout()
    b.logout()


def test_idle_wakes_on_delivery(imap: ImapServer) -> None:
    c = imap.client()
    c.select_folder("INBOX")
    c.idle()
    start = time.monotonic()
    send(imap.org, make_message("during idle", "Wake up.\n"))
    seen: list[object] = []
    while time.monotonic() - start < 10 and (4, b"EXISTS") not in seen:
        seen.extend(c.idle_check(timeout=1))
    c.idle_done()
    assert (4, b"EXISTS") in seen
    assert time.monotonic() - start < 5
    c.logout()


# ---------------------------------------------------------------- bad input


def raw_session(imap: ImapServer) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", imap.ssl_port), timeout=10)
    tls = imap.org.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
    tls.recv(4096)  # greeting
    return tls


def read_until(sock: ssl.SSLSocket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_garbage_and_toobig(imap: ImapServer) -> None:
    s = raw_session(imap)
    s.sendall(b"\r\n")
    assert read_until(s, b"\r\n").startswith(b"* BAD")
    s.sendall(b"a0 FROBNICATE\r\n")
    assert read_until(s, b"a0 ").startswith(b"a0 BAD")
    s.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
    assert b"a1 OK" in read_until(s, b"a1 ")
    s.sendall(b"a2 APPEND INBOX {999999999}\r\n")
    reply = read_until(s, b"\r\n")
    assert reply.startswith(b"a2 NO [TOOBIG]")
    s.sendall(b"a3 NOOP\r\n")
    assert b"a3 OK" in read_until(s, b"a3 ")
    s.close()


def test_too_many_bad_commands(imap: ImapServer) -> None:
    s = raw_session(imap)
    s.sendall(b"".join(b"x%d BOGUS\r\n" % n for n in range(12)))
    data = read_until(s, b"* BYE")
    assert b"* BYE" in data
    assert data.count(b" BAD ") == 10
    s.close()


def test_literal_plus_append_after_login(imap: ImapServer) -> None:
    """LITERAL+ is advertised: a non-synchronizing APPEND far above 4 KiB is accepted
    after login (RFC 7888 §3), while before login a large {n+} is refused."""
    s = raw_session(imap)
    s.sendall(b"a0 LOGIN {20000+}\r\n" + b"x" * 20000 + b' "pw"\r\n')
    assert read_until(s, b"\r\n").startswith(b"a0 BAD")  # skipped, never buffered
    s.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
    assert b"a1 OK" in read_until(s, b"a1 ")
    body = b"Subject: big literal\r\n\r\n" + (b"y" * 78 + b"\r\n") * 250
    s.sendall(b"a2 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    reply = read_until(s, b"a2 ")
    assert b"a2 OK [APPENDUID" in reply, reply


def test_connection_limit_per_address_and_idle_timeout(org: RunningServer) -> None:
    server = start_imap(org, ImapSettings(max_connections_per_ip=2, idle_timeout_before_login=0.5))
    try:
        first, second = raw_session(server), raw_session(server)
        sock = socket.create_connection(("127.0.0.1", server.ssl_port), timeout=10)
        third = org.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
        assert read_until(third, b"\r\n").startswith(b"* BYE")  # the third from one address
        assert third.recv(100) == b""
        # Nothing said within the pre-login timeout: BYE and the connection closes.
        assert read_until(first, b"\r\n").startswith(b"* BYE")
        assert read_until(second, b"\r\n").startswith(b"* BYE")
    finally:

        async def stop() -> None:
            for listener in server.listeners:
                await listener.stop()

        org.call(stop())


def test_plaintext_pipelined_behind_starttls_is_discarded(imap: ImapServer) -> None:
    """CVE-2011-0411: a command sent with STARTTLS must not run inside TLS."""
    sock = socket.create_connection(("127.0.0.1", imap.plain_port), timeout=10)
    greeting = b""
    while b"\r\n" not in greeting:
        greeting += sock.recv(4096)  # greeting
    sock.sendall(b"a1 STARTTLS\r\na2 LOGOUT\r\n")
    answer = b""
    while b"a1 " not in answer:
        answer += sock.recv(4096)
    assert b"a1 OK" in answer and b"a2" not in answer
    tls = imap.org.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
    tls.sendall(b"a3 NOOP\r\n")
    after = read_until(tls, b"a3 ")
    assert b"a2" not in after and b"BYE" not in after  # the injected LOGOUT never ran
    assert b"a3 OK" in after


def test_fetch_pages_read_files_alone_past_the_prefetch_limit(
    imap: ImapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a prefetch limit below the message size every file is read on its own
    # (and, with the inline limit at 0, in a thread): the bytes must not change.
    import postwerk.services.imap as service

    expected = {i.uid: imap.org.read_item(i) for i in imap.org.inbox(ALICE)}
    for prefetch, inline in ((100, 0), (10**6, 0), (10**6, 10**6)):
        monkeypatch.setattr(service, "PREFETCH_BYTES", prefetch)
        monkeypatch.setattr(service, "INLINE_FILE_BYTES", inline)
        client = imap.client()
        client.select_folder("INBOX", readonly=True)
        got = client.fetch(client.search(), ["BODY.PEEK[]"])
        assert {uid: data[b"BODY[]"] for uid, data in got.items()} == expected
        client.logout()
