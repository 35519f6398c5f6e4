"""Raw-socket transcripts: BDAT, PIPELINING, STARTTLS injection, smuggling, limits."""

from __future__ import annotations

import time

import pytest

from tests.conftest import DOMAIN, RunningServer, cli
from tests.integration.wire import Wire

BODY = b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: wire\r\n\r\nline\r\n"


@pytest.fixture
def wire(org: RunningServer) -> Wire:
    w = Wire(org.smtp_port)
    assert w.reply()[0] == 220
    assert w.cmd(b"EHLO wire.test")[0] == 250
    return w


def test_bdat_chunks_deliver_one_message(org: RunningServer, wire: Wire) -> None:
    assert wire.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250
    assert wire.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    first, second = BODY[:30], BODY[30:]
    wire.send(b"BDAT %d\r\n" % len(first) + first)
    code, text = wire.reply()
    assert code == 250 and b"octets" in text
    wire.send(b"BDAT %d LAST\r\n" % len(second) + second)
    code, text = wire.reply()
    assert code == 250 and b"2.6.0" in text
    items = org.wait_inbox(f"alice@{DOMAIN}", 1)
    assert org.read_item(items[0]).endswith(BODY)


def test_bdat_without_mail_consumes_the_chunk(org: RunningServer, wire: Wire) -> None:
    payload = b"MAIL FROM:<evil@remote.test>\r\n"  # must be read as data, not as a command
    wire.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
    assert wire.reply()[0] == 503
    assert wire.cmd(b"NOOP")[0] == 250


def test_data_after_bdat_is_refused(org: RunningServer, wire: Wire) -> None:
    wire.cmd(b"MAIL FROM:<a@remote.test>")
    wire.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())
    wire.send(b"BDAT 3\r\nabc")
    assert wire.reply()[0] == 250
    assert wire.cmd(b"DATA")[0] == 503


def test_pipelined_transaction(org: RunningServer, wire: Wire) -> None:
    wire.send(
        b"MAIL FROM:<a@remote.test>\r\n"
        + f"RCPT TO:<alice@{DOMAIN}>\r\nRCPT TO:<nobody@{DOMAIN}>\r\n".encode()
        + f"RCPT TO:<bob@{DOMAIN}>\r\n".encode()
        + b"DATA\r\n"
    )
    codes = [wire.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 550, 250, 354]
    wire.send(BODY + b".\r\nQUIT\r\n")
    assert wire.reply()[0] == 250
    assert wire.reply()[0] == 221
    assert len(org.wait_inbox(f"bob@{DOMAIN}", 1)) == 1


def test_starttls_injection_is_discarded(org: RunningServer, wire: Wire) -> None:
    # CVE-2011-0411: commands sent in the same packet as STARTTLS must not be executed.
    wire.send(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
    assert wire.reply()[0] == 220
    assert wire.buf == b""
    ctx = org.client_context()
    wire.sock = ctx.wrap_socket(wire.sock, server_hostname="mail.example.test")
    assert wire.cmd(b"EHLO wire.test")[0] == 250
    # Had the injected MAIL been executed, this would be 503 (nested MAIL).
    assert wire.cmd(b"MAIL FROM:<a@remote.test>")[0] == 250


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r"],
)
def test_smtp_smuggling_never_splits_a_message(
    org: RunningServer, wire: Wire, smuggle: bytes
) -> None:
    wire.cmd(b"MAIL FROM:<a@remote.test>")
    wire.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())
    assert wire.cmd(b"DATA")[0] == 354
    hidden = (
        f"MAIL FROM:<admin@{DOMAIN}>\r\nRCPT TO:<bob@{DOMAIN}>\r\nDATA\r\n"
        "Subject: smuggled\r\n\r\nspoof\r\n"
    ).encode()
    wire.send(BODY + smuggle + hidden + b".\r\n")
    code, text = wire.reply()
    assert code == 550 and b"5.5.2" in text  # one message, rejected whole
    assert wire.cmd(b"NOOP")[0] == 250  # back in command mode, nothing pending
    time.sleep(0.3)
    assert org.inbox(f"bob@{DOMAIN}") == []
    assert org.inbox(f"alice@{DOMAIN}") == []


def test_line_too_long_then_next_command_works(org: RunningServer, wire: Wire) -> None:
    code, text = wire.cmd(b"NOOP " + b"x" * 100_000)
    assert code == 500 and b"5.5.2" in text
    assert wire.cmd(b"NOOP")[0] == 250


def test_too_many_bad_commands_disconnects(org: RunningServer, wire: Wire) -> None:
    codes = [wire.cmd(b"GARBAGE\x00\xff")[0] for _ in range(6)]
    assert codes[:5] == [500] * 5
    code = wire.reply()[0] if codes[5] == 500 else codes[5]
    assert code == 421
    assert wire.closed()
    other = Wire(org.smtp_port)
    assert other.reply()[0] == 220


def test_size_parameter_over_limit(org: RunningServer, wire: Wire) -> None:
    code, text = wire.cmd(b"MAIL FROM:<a@remote.test> SIZE=999999999")
    assert code == 552 and b"5.3.4" in text


def test_unknown_mail_parameter(org: RunningServer, wire: Wire) -> None:
    code, _ = wire.cmd(b"MAIL FROM:<a@remote.test> FROBNICATE=1")
    assert code == 555


def test_message_over_connector_size_limit(org: RunningServer) -> None:
    cli(
        org.data_dir,
        "connector",
        "receive",
        "set",
        "Default Frontend MAIL",
        "--max-message-size",
        "2000",
    )
    w = Wire(org.smtp_port)
    w.reply()
    w.cmd(b"EHLO x")
    w.cmd(b"MAIL FROM:<a@remote.test>")
    w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())
    assert w.cmd(b"DATA")[0] == 354
    w.send(BODY + b"x" * 5000 + b"\r\n.\r\n")
    code, text = w.reply()
    assert code == 552 and b"5.3.4" in text
    assert w.cmd(b"NOOP")[0] == 250
    assert org.inbox(f"alice@{DOMAIN}") == []


def test_recipient_limit(org: RunningServer, wire: Wire) -> None:
    wire.cmd(b"MAIL FROM:<a@remote.test>")
    lines = b"".join(f"RCPT TO:<alice@{DOMAIN}>\r\n".encode() for _ in range(201))
    wire.send(lines)
    codes = [wire.reply()[0] for _ in range(201)]
    assert codes[:200] == [250] * 200
    assert codes[200] == 452


def test_header_block_over_128_kb_is_refused(org: RunningServer, wire: Wire) -> None:
    wire.cmd(b"MAIL FROM:<a@remote.test>")
    wire.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())
    assert wire.cmd(b"DATA")[0] == 354
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 900) for i in range(150))
    wire.send(headers + b"\r\nbody\r\n.\r\n")
    code, _text = wire.reply()
    assert code == 552
    assert wire.cmd(b"NOOP")[0] == 250


def test_hop_count_loop_is_refused(org: RunningServer, wire: Wire) -> None:
    wire.cmd(b"MAIL FROM:<a@remote.test>")
    wire.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())
    assert wire.cmd(b"DATA")[0] == 354
    received = b"".join(
        b"Received: from hop%d by hop%d; Fri, 27 Nov 2026 10:00:00 +0000\r\n" % (i, i + 1)
        for i in range(100)
    )
    wire.send(received + BODY + b".\r\n")
    code, text = wire.reply()
    assert code == 554 and b"5.4.6" in text


def test_data_without_recipients(org: RunningServer, wire: Wire) -> None:
    wire.cmd(b"MAIL FROM:<a@remote.test>")
    assert wire.cmd(b"DATA")[0] == 554
    assert wire.cmd(b"RCPT TO:<alice@example.test>")[0] == 250


def test_commands_out_of_sequence(org: RunningServer) -> None:
    w = Wire(org.smtp_port)
    w.reply()
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 503  # no EHLO yet
    w.cmd(b"EHLO x")
    assert w.cmd(b"RCPT TO:<alice@example.test>")[0] == 503
    assert w.cmd(b"DATA")[0] == 503


def test_null_sender_accepted_for_bounces(org: RunningServer, wire: Wire) -> None:
    assert wire.cmd(b"MAIL FROM:<>")[0] == 250
    assert wire.cmd(f"RCPT TO:<bob@{DOMAIN}>".encode())[0] == 250
    assert wire.cmd(b"DATA")[0] == 354
    wire.send(BODY + b".\r\n")
    assert wire.reply()[0] == 250
    raw = org.read_item(org.wait_inbox(f"bob@{DOMAIN}", 1)[0])
    assert raw.startswith(b"Return-Path: <>\r\n")


def test_inactivity_timeout(org: RunningServer) -> None:
    cli(
        org.data_dir,
        "connector",
        "receive",
        "set",
        "Default Frontend MAIL",
        "--inactivity-timeout",
        "1",
    )
    w = Wire(org.smtp_port)
    w.reply()
    code, text = w.reply()  # the server gives up on us
    assert code == 421 and b"4.4.2" in text
    assert w.closed()


def test_bare_postmaster_means_the_default_domains(org: RunningServer, wire: Wire) -> None:
    cli(org.data_dir, "alias", "add", f"alice@{DOMAIN}", f"postmaster@{DOMAIN}")
    wire.cmd(b"MAIL FROM:<a@remote.test>")
    assert wire.cmd(b"RCPT TO:<Postmaster>")[0] == 250
    assert wire.cmd(b"DATA")[0] == 354
    wire.send(BODY + b".\r\n")
    assert wire.reply()[0] == 250
    assert len(org.wait_inbox(f"alice@{DOMAIN}", 1)) == 1


def test_connections_per_source_are_limited(org: RunningServer) -> None:
    cli(
        org.data_dir,
        "connector",
        "receive",
        "set",
        "Default Frontend MAIL",
        "--max-connections-per-source",
        "3",
    )
    held = [Wire(org.smtp_port) for _ in range(3)]
    for w in held:
        assert w.reply()[0] == 220
    extra = Wire(org.smtp_port)
    code, text = extra.reply()
    assert code == 421 and b"4.3.2" in text
    assert extra.closed()
    held[0].cmd(b"QUIT")
    held[0].close()
    time.sleep(0.2)
    again = Wire(org.smtp_port)
    assert again.reply()[0] == 220
