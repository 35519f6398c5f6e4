"""Inbound mail on the Default Frontend (port 25) with smtplib over real sockets."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

from tests.conftest import DOMAIN, RunningServer


def make_message(to: str, subject: str = "hello", sender: str = "someone@remote.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@remote.test>"
    msg.set_content("Body line one.\n.leading dot line\nlast line\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def test_port_25_delivers_into_inbox(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        code, banner = s.ehlo("client.remote.test")
        assert code == 250
        assert b"CHUNKING" in banner and b"PIPELINING" in banner and b"STARTTLS" in banner
        assert b"AUTH" not in banner  # only after TLS
        refused = s.sendmail(
            "someone@remote.test",
            [f"alice@{DOMAIN}"],
            make_message(f"alice@{DOMAIN}", "first message"),
        )
        assert refused == {}
    items = org.wait_inbox(f"alice@{DOMAIN}", 1)
    assert len(items) == 1
    raw = org.read_item(items[0])
    assert raw.startswith(
        b"Return-Path: <someone@remote.test>\r\nReceived: from client.remote.test"
    )
    assert b"\r\n.leading dot line\r\n" in raw  # dot-unstuffed exactly once
    assert items[0].summary["subject"] == "first message"
    assert items[0].size == len(raw)


def test_alias_group_and_duplicates_deliver_once_each(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail(
            "x@remote.test",
            [f"al@{DOMAIN}", f"alice@{DOMAIN}", f"team@{DOMAIN}"],
            make_message(f"team@{DOMAIN}", "to the team"),
        )
    alice = org.wait_inbox(f"alice@{DOMAIN}", 1)
    bob = org.wait_inbox(f"bob@{DOMAIN}", 1)
    assert len(alice) == 1
    assert len(bob) == 1
    assert alice[0].blob_id == bob[0].blob_id  # one blob shared by every recipient


def test_unknown_recipient_is_550_5_1_1(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.ehlo()
        s.mail("x@remote.test")
        code, text = s.rcpt(f"nobody@{DOMAIN}")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, _ = s.rcpt(f"ALICE@{DOMAIN.upper()}")  # case-insensitive lookup
        assert code == 250


@pytest.mark.parametrize(
    "recipient,expected",
    [
        ("victim@elsewhere.test", b"5.7.54"),
        (f"victim%elsewhere.test@{DOMAIN}", b"5.1.1"),
        (f'"victim@elsewhere.test"@{DOMAIN}', b"5.1.1"),
        (f"@{DOMAIN}:victim@elsewhere.test", b"5.7.54"),
        ("victim@[192.0.2.1]", b"5.7.54"),
        (f"victim@elsewhere.test@{DOMAIN}", b"5.1."),
    ],
)
def test_open_relay_attempts_are_refused(
    org: RunningServer, recipient: str, expected: bytes
) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.ehlo()
        s.mail("spammer@remote.test")
        code, text = s.docmd(f"RCPT TO:<{recipient}>")
        assert code >= 500
        assert text.startswith(expected), text


def test_loopback_is_not_trusted_for_relay(org: RunningServer) -> None:
    # The client connects from 127.0.0.1; that grants nothing.
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.ehlo()
        s.mail("me@example.test")
        code, text = s.rcpt("friend@gmail.test")
        assert (code, text[:6]) == (550, b"5.7.54")


def test_auth_is_refused_without_tls(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.ehlo()
        code, text = s.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==")
        assert code == 530
        assert text.startswith(b"5.7.0")


def test_vrfy_does_not_reveal_addresses(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.ehlo()
        assert s.verify(f"alice@{DOMAIN}")[0] == 252
        assert s.verify(f"nobody@{DOMAIN}")[0] == 252


def test_tracking_records_receive_and_deliver(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail(
            "tracked@remote.test", [f"bob@{DOMAIN}"], make_message(f"bob@{DOMAIN}", "tracked")
        )
    org.wait_inbox(f"bob@{DOMAIN}", 1)

    async def events() -> list[str]:
        found = await org.server.backend.sql.tracking.search(sender="tracked@remote.test")
        return [e.event_id for e in found]

    import time

    for _ in range(100):
        ids = org.call(events())
        if "DELIVER" in ids:
            break
        time.sleep(0.05)
    assert "RECEIVE" in ids and "DELIVER" in ids
