"""SMTP policy over real sockets: connector selection, STARTTLS rules, SMTPUTF8, trace headers.

Addresses 127.0.0.2 and 127.0.0.3 stand for other clients: the client end of the socket is
bound to them before connecting to the server on 127.0.0.1.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage

from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli
from tests.integration.wire import Wire

DEFAULT_FRONTEND = "Default Frontend MAIL"
CLIENT_FRONTEND = "Client Frontend MAIL"
BODY = b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: policy\r\n\r\nline\r\n"


def set_connector(org: RunningServer, name: str, *options: str) -> None:
    cli(org.data_dir, "connector", "receive", "set", name, *options)


def greeted(port: int, source: str | None = None) -> tuple[Wire, bytes]:
    w = Wire(port, source=source)
    code, banner = w.reply()
    assert code == 220, banner
    assert w.cmd(b"EHLO policy.test")[0] == 250
    return w, banner


def send_body(w: Wire, body: bytes = BODY) -> tuple[int, bytes]:
    code, text = w.cmd(b"DATA")
    assert code == 354, text
    w.send(body + b".\r\n")
    return w.reply()


def unreachable_count(org: RunningServer) -> int:
    async def count() -> int:
        summaries = await org.server.backend.sql.queue.summaries()
        return sum(q.count for q in summaries if q.name == "Unreachable")

    return org.call(count())


# ---------------------------------------------------------------- connector selection


def test_no_matching_connector_is_554_then_503_until_quit(org: RunningServer) -> None:
    set_connector(org, DEFAULT_FRONTEND, "--remote-ip-ranges", "127.0.0.2/32")
    w = Wire(org.smtp_port, source="127.0.0.1")
    code, text = w.reply()
    assert code == 554 and b"5.7.1" in text, text
    # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT, answering 503.
    assert w.cmd(b"EHLO policy.test")[0] == 503
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 503
    assert w.cmd(b"QUIT")[0] == 221
    assert w.closed()
    # A refused client that will not leave is cut off after a few commands.
    stubborn = Wire(org.smtp_port, source="127.0.0.1")
    assert stubborn.reply()[0] == 554
    stubborn.send(b"NOOP\r\n" * 8)
    codes = [stubborn.reply()[0] for _ in range(6)]
    assert codes == [503] * 5 + [421]
    assert stubborn.closed()
    # The address the connector does accept is served normally.
    ok, _banner = greeted(org.smtp_port, source="127.0.0.2")
    assert ok.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250


def test_disabled_connector_leaves_no_connector(org: RunningServer) -> None:
    set_connector(org, DEFAULT_FRONTEND, "--disabled")
    w = Wire(org.smtp_port)
    code, text = w.reply()
    assert code == 554 and b"5.7.1" in text, text
    set_connector(org, DEFAULT_FRONTEND, "--enabled")
    assert greeted(org.smtp_port)[0].cmd(b"NOOP")[0] == 250


def test_most_specific_remote_range_wins_and_may_grant_relay(org: RunningServer) -> None:
    # An application server at 127.0.0.2 is allowed to relay, the Exchange way: its own
    # connector on the same binding, "externally secured" (ExternalAuthoritative +
    # ExchangeServers), with a narrower remote range than Default Frontend's 0.0.0.0/0.
    cli(
        org.data_dir,
        "connector",
        "receive",
        "set",
        "Relay App Server",
        "--new",
        "--bindings",
        "0.0.0.0:25",
        "--remote-ip-ranges",
        "127.0.0.2/32",
        "--permission-groups",
        "ExchangeServers",
        "--auth-mechanisms",
        "TLS,ExternalAuthoritative",
        "--banner",
        "relay.example.test relay connector",
    )
    app, banner = greeted(org.smtp_port, source="127.0.0.2")
    assert banner == b"220 relay.example.test relay connector"
    assert app.cmd(b"MAIL FROM:<app@app.example.test>")[0] == 250
    assert app.cmd(b"RCPT TO:<someone@elsewhere.test>")[0] == 250
    assert app.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert send_body(app)[0] == 250
    assert len(org.wait_inbox(f"alice@{DOMAIN}", 1)) == 1
    assert unreachable_count(org) == 1  # no send connector in M1: it waits there

    # 127.0.0.1 still falls under Default Frontend: anonymous, no relay.
    other, banner = greeted(org.smtp_port, source="127.0.0.1")
    assert b"relay connector" not in banner
    assert other.cmd(b"MAIL FROM:<app@app.example.test>")[0] == 250
    code, text = other.cmd(b"RCPT TO:<someone@elsewhere.test>")
    assert code == 550 and b"5.7.54" in text, text
    assert unreachable_count(org) == 1


# ---------------------------------------------------------------- STARTTLS


def test_starttls_inside_a_transaction_is_refused(org: RunningServer) -> None:
    w, _ = greeted(org.smtp_port)
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    code, text = w.cmd(b"STARTTLS")
    assert code == 503 and b"5.5.1" in text, text
    # Still plaintext, and the transaction is intact.
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert w.cmd(b"RSET")[0] == 250
    w.starttls(org.client_context())
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250


def test_starttls_twice_is_refused(org: RunningServer) -> None:
    w, _ = greeted(org.smtp_port)
    w.starttls(org.client_context())
    code, text = w.cmd(b"STARTTLS")
    assert code == 503 and b"5.5.1" in text, text
    # The TLS session goes on.
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert send_body(w)[0] == 250


def test_require_tls_refuses_mail_before_starttls(org: RunningServer) -> None:
    set_connector(org, DEFAULT_FRONTEND, "--require-tls")
    w, _ = greeted(org.smtp_port)
    code, text = w.cmd(b"MAIL FROM:<a@remote.test>")
    assert code == 530 and b"5.7.0" in text, text
    w.starttls(org.client_context())
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert send_body(w)[0] == 250
    assert len(org.wait_inbox(f"alice@{DOMAIN}", 1)) == 1


# ---------------------------------------------------------------- SMTPUTF8 and 8BITMIME


UTF8_USER = "jörg"


def test_smtputf8_address_and_headers_arrive_intact(org: RunningServer) -> None:
    cli(org.data_dir, "mailbox", "new", f"{UTF8_USER}@{DOMAIN}", "--password-stdin", input="x\n")
    message = (
        "From: Zoë Ångström <zoë@remote.test>\r\n"
        f"To: Jörg <{UTF8_USER}@{DOMAIN}>\r\n"
        "Subject: Grüße aus Köln ✓\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Schöne Grüße — 你好\r\n"
    ).encode()
    w, _ = greeted(org.smtp_port)
    assert w.cmd("MAIL FROM:<zoë@remote.test> SMTPUTF8 BODY=8BITMIME".encode())[0] == 250
    assert w.cmd(f"RCPT TO:<{UTF8_USER}@{DOMAIN}>".encode())[0] == 250
    assert send_body(w, message)[0] == 250
    items = org.wait_inbox(f"{UTF8_USER}@{DOMAIN}", 1)
    assert len(items) == 1
    raw = org.read_item(items[0])
    assert raw.endswith(message)
    assert raw.startswith("Return-Path: <zoë@remote.test>\r\n".encode())
    assert f"for <{UTF8_USER}@{DOMAIN}>".encode() in raw
    assert items[0].summary["subject"] == "Grüße aus Köln ✓"


def test_non_ascii_address_without_smtputf8_is_553_5_6_7(org: RunningServer) -> None:
    cli(org.data_dir, "mailbox", "new", f"{UTF8_USER}@{DOMAIN}", "--password-stdin", input="x\n")
    w, _ = greeted(org.smtp_port)
    code, text = w.cmd("MAIL FROM:<zoë@remote.test>".encode())
    assert code == 553 and b"5.6.7" in text, text
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    code, text = w.cmd(f"RCPT TO:<{UTF8_USER}@{DOMAIN}>".encode())
    assert code == 553 and b"5.6.7" in text, text
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250  # the session goes on
    # RFC 6531 §3.4: SMTPUTF8 lasts for one transaction only.
    assert send_body(w)[0] == 250
    assert w.cmd(b"MAIL FROM:<a@remote.test> SMTPUTF8")[0] == 250
    assert w.cmd(f"RCPT TO:<{UTF8_USER}@{DOMAIN}>".encode())[0] == 250
    assert w.cmd(b"RSET")[0] == 250
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<{UTF8_USER}@{DOMAIN}>".encode())[0] == 553


def test_8bitmime_body_is_delivered_byte_for_byte(org: RunningServer) -> None:
    # Latin-1 octets (not UTF-8) and every octet 0x80-0xFF: an 8-bit body is opaque.
    body = (
        b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: 8bit\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        b"caf\xe9 cr\xe8me br\xfbl\xe9e\r\n" + bytes(range(0x80, 0x100)) + b"\r\n"
    )
    w, _ = greeted(org.smtp_port)
    assert w.cmd(b"MAIL FROM:<a@remote.test> BODY=8BITMIME")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert send_body(w, body)[0] == 250
    raw = org.read_item(org.wait_inbox(f"alice@{DOMAIN}", 1)[0])
    assert raw.endswith(body)


# ---------------------------------------------------------------- trace headers


def trace_fields(raw: bytes) -> list[str]:
    """The header fields of `raw` up to the first one a client wrote, unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    fields = re.split(r"\r\n(?![ \t])", head)
    return [" ".join(f.split()) for f in fields]


def test_received_records_tls_and_return_path_is_stamped(org: RunningServer) -> None:
    msg = EmailMessage()
    msg["From"] = f"alice@{DOMAIN}"
    msg["To"] = f"bob@{DOMAIN}"
    msg["Subject"] = "trace"
    msg["Message-ID"] = "<trace@client.test>"
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0000"
    msg.set_content("hi\n")
    with smtplib.SMTP("127.0.0.1", org.submission_port, timeout=10) as s:
        s.ehlo("laptop.test")
        s.starttls(context=org.client_context())
        s.ehlo("laptop.test")
        s.login(f"alice@{DOMAIN}", PASSWORD)
        assert isinstance(s.sock, ssl.SSLSocket)
        tls_version, suite = s.sock.version(), s.sock.cipher()
        assert tls_version is not None and suite is not None
        cipher = suite[0]
        s.send_message(msg)
    fields = trace_fields(org.read_item(org.wait_inbox(f"bob@{DOMAIN}", 1)[0]))
    # Return-Path first (stamped at delivery, RFC 5321 §4.4), then our Received.
    assert fields[0] == f"Return-Path: <alice@{DOMAIN}>"
    received = fields[1]
    assert received.startswith("Received: from laptop.test ([127.0.0.1]) by mail.example.test")
    # RFC 3848 ESMTPSA, and the TLS version and cipher suite (RFC 8314 §4.4).
    assert re.search(r" with ESMTPSA \(version=TLS\S+ cipher=\S+ bits=\d+\) ", received), received
    assert f"version={tls_version.replace('v', '').replace('.', '_')}" in received
    assert f"cipher={cipher} " in received
    assert sum(f.startswith("Return-Path:") for f in fields) == 1

    # Without TLS the Received header says plain ESMTP and names no cipher.
    w, _ = greeted(org.smtp_port)
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert send_body(w)[0] == 250
    fields = trace_fields(org.read_item(org.wait_inbox(f"alice@{DOMAIN}", 1)[0]))
    assert fields[0] == "Return-Path: <a@remote.test>"
    assert " with ESMTP id " in fields[1] and "cipher" not in fields[1], fields[1]


def test_require_tls_refuses_auth_and_other_commands_before_starttls(org: RunningServer) -> None:
    # A connector offering AUTH without BasicAuthRequireTLS, but requiring TLS: no password
    # may cross in the clear, and RFC 3207 §4 asks for 530 to every command but NOOP,
    # EHLO, STARTTLS and QUIT.
    set_connector(org, DEFAULT_FRONTEND, "--require-tls", "--auth-mechanisms", "TLS,BasicAuth")
    w = Wire(org.smtp_port)
    assert w.reply()[0] == 220
    code, ehlo = w.cmd(b"EHLO policy.test")
    assert code == 250 and b"STARTTLS" in ehlo and b"AUTH" not in ehlo, ehlo
    for command in (f"AUTH PLAIN {'AGFsaWNlQGV4YW1wbGUudGVzdAB4'}", "VRFY alice", "RCPT TO:<x@y>"):
        code, text = w.cmd(command.encode())
        assert code == 530 and b"5.7.0" in text, (command, text)
    assert w.cmd(b"NOOP")[0] == 250
    w.starttls(org.client_context())
    assert w.auth_plain(f"alice@{DOMAIN}", PASSWORD)[0] == 235


def test_starttls_forgets_an_earlier_authentication(org: RunningServer) -> None:
    # RFC 3207 §4.2: after the handshake the server forgets what the client told it before
    # TLS; an AUTH given in the clear must not carry over into the TLS session.
    set_connector(org, DEFAULT_FRONTEND, "--auth-mechanisms", "TLS,BasicAuth")
    w, _ = greeted(org.smtp_port)
    assert w.auth_plain(f"alice@{DOMAIN}", PASSWORD)[0] == 235
    w.starttls(org.client_context())
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    code, text = w.cmd(b"RCPT TO:<someone@elsewhere.test>")
    assert code == 550 and b"5.7.54" in text, text  # anonymous again: no relay
    assert w.cmd(b"RSET")[0] == 250
    assert w.auth_plain(f"alice@{DOMAIN}", PASSWORD)[0] == 235  # may log in again
