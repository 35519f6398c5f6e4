"""Client submission on the Client Frontend (port 587): TLS, AUTH, send-as, Unreachable queue."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

from tests.conftest import DOMAIN, PASSWORD, RunningServer


def submission(org: RunningServer, login: bool = True) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", org.submission_port, timeout=10)
    s.ehlo("laptop")
    s.starttls(context=org.client_context())
    s.ehlo("laptop")
    if login:
        s.login(f"alice@{DOMAIN}", PASSWORD)
    return s


def message(sender: str, to: str, subject: str, with_ids: bool = True) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if with_ids:
        msg["Message-ID"] = f"<{time.time_ns()}@client.test>"
        msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0000"
    msg.set_content("hi\n")
    return msg


def test_anonymous_mail_is_530_5_7_57(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.submission_port, timeout=10) as s:
        s.ehlo()
        code, text = s.mail(f"alice@{DOMAIN}")
        assert (code, text[:6]) == (530, b"5.7.57")


def test_auth_not_offered_before_tls(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.submission_port, timeout=10) as s:
        code, text = s.ehlo()
        assert b"AUTH" not in text and b"STARTTLS" in text
        code, text = s.docmd("AUTH", "LOGIN")
        assert code == 530


def test_login_and_send_to_local_and_external(org: RunningServer) -> None:
    with submission(org) as s:
        assert s.has_extn("auth")
        refused = s.send_message(
            message(f"alice@{DOMAIN}", f"bob@{DOMAIN}, friend@elsewhere.test", "mixed"),
            to_addrs=[f"bob@{DOMAIN}", "friend@elsewhere.test"],
        )
        assert refused == {}
    assert len(org.wait_inbox(f"bob@{DOMAIN}", 1)) == 1

    async def unreachable() -> int:
        summaries = await org.server.backend.sql.queue.summaries()
        return sum(q.count for q in summaries if q.name == "Unreachable")

    assert org.call(unreachable()) == 1


def test_alias_is_a_valid_login_and_sender(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.submission_port, timeout=10) as s:
        s.starttls(context=org.client_context())
        s.login(f"al@{DOMAIN}", PASSWORD)
        s.send_message(message(f"al@{DOMAIN}", f"bob@{DOMAIN}", "from alias"))
    assert len(org.wait_inbox(f"bob@{DOMAIN}", 1)) == 1


def test_wrong_password_is_535_and_server_keeps_serving(org: RunningServer) -> None:
    with submission(org, login=False) as s:
        try:
            s.login(f"alice@{DOMAIN}", "wrong")
            raise AssertionError("login should fail")
        except smtplib.SMTPAuthenticationError as exc:
            assert exc.smtp_code == 535
            assert exc.smtp_error.startswith(b"5.7.8")
    with submission(org) as s:
        assert s.noop()[0] == 250


def test_envelope_sender_must_be_the_users(org: RunningServer) -> None:
    with submission(org) as s:
        code, text = s.mail(f"bob@{DOMAIN}")
        assert (code, text[:6]) == (550, b"5.7.60")


def test_from_header_must_be_the_users(org: RunningServer) -> None:
    with submission(org) as s:
        try:
            s.send_message(
                message(f"bob@{DOMAIN}", f"bob@{DOMAIN}", "spoof"), from_addr=f"alice@{DOMAIN}"
            )
            raise AssertionError("should be refused")
        except smtplib.SMTPDataError as exc:
            assert exc.smtp_code == 550
            assert exc.smtp_error.startswith(b"5.7.60")
        assert s.noop()[0] == 250
    time_limit = time.monotonic() + 0.5
    while time.monotonic() < time_limit:
        assert org.inbox(f"bob@{DOMAIN}") == []
        time.sleep(0.1)


def test_submission_gets_message_id_and_date(org: RunningServer) -> None:
    with submission(org) as s:
        s.send_message(message(f"alice@{DOMAIN}", f"bob@{DOMAIN}", "no ids", with_ids=False))
    item = org.wait_inbox(f"bob@{DOMAIN}", 1)[0]
    raw = org.read_item(item)
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nMessage-ID: <" in header
    assert b"\r\nDate: " in header
    assert b"with ESMTPSA (version=TLS" in header  # RFC 3848 + RFC 8314 details
