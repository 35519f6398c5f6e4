"""Transport agents in a running server: what clients see, what gets delivered, what is logged.

Most tests share one server ("lab") whose agents react to trigger words in subjects,
senders and recipients; the agents below are loaded from this module by its dotted path,
as an operator's own agents would be.
"""

from __future__ import annotations

import asyncio
import email
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme

from postwerk.transport.agents import (
    AgentResult,
    MessageView,
    Route,
    SessionView,
    TransportAgent,
    Verdict,
)
from tests.conftest import (
    DOMAIN,
    PASSWORD,
    RunningServer,
    init_data_dir,
    populate,
    start_server,
    stop_server,
)
from tests.integration.wire import Wire
from tests.unit.test_agents import RecordingLog

ROUTED: list[tuple[str, tuple[Route, ...]]] = []  # (subject, routes) seen on_routed
SECOND_SAW: dict[str, list[str]] = {}  # subject -> X-Postwerk-Scanned values SecondAgent saw


def _subject(message: MessageView) -> str:
    return message.headers.get("Subject") or ""


class TriggerAgent(TransportAgent):
    """Acts on trigger words; the first agent in the lab's list."""

    async def on_connect(self, session: SessionView) -> AgentResult:
        if session.client_ip == "127.0.0.3":
            return Verdict.reject(554, "5.7.1", "Your address is refused by TriggerAgent")
        return None

    async def on_helo(self, session: SessionView) -> AgentResult:
        if session.helo == "bad.helo.test":
            return Verdict.reject(550, "5.7.1", "Bad HELO")
        return None

    async def on_auth(self, session: SessionView) -> AgentResult:
        if session.auth_user == f"bob@{DOMAIN}":
            return Verdict.reject(535, "5.7.1", "Bob may not log in today")
        return None

    async def on_mail_from(self, session: SessionView, message: MessageView) -> AgentResult:
        if message.sender.startswith("defer-me@"):
            return Verdict.defer(451, "4.7.1", "Come back later")
        return None

    async def on_rcpt_to(
        self, session: SessionView, message: MessageView, recipient: str
    ) -> AgentResult:
        if recipient.startswith("refuse-rcpt@"):
            return Verdict.reject(550, "5.7.1", "Recipient refused by TriggerAgent")
        return None

    async def on_end_of_headers(self, session: SessionView, message: MessageView) -> AgentResult:
        subject = _subject(message)
        if subject.startswith("raise"):
            raise RuntimeError(f"boom in {subject}")
        if subject.startswith("hang"):
            await asyncio.sleep(3600)
        return None

    async def on_end_of_data(self, session: SessionView, message: MessageView) -> AgentResult:
        subject = _subject(message)
        if subject.startswith("eod-reject"):
            return Verdict.reject(554, "5.7.1", "Rejected at end of data")
        if subject.startswith("eod-header"):
            body = await message.content()
            return Verdict.add_headers(("X-Eod", f"{len(body)} octets"))
        return None

    async def on_submitted(self, session: SessionView, message: MessageView) -> AgentResult:
        if _subject(message).startswith("copy-bob"):
            return [
                Verdict.change_recipients(add=[f"bob@{DOMAIN}"]),
                Verdict.add_headers(("X-Submitted", "copied")),
            ]
        return None

    async def on_resolved(self, session: SessionView, message: MessageView) -> AgentResult:
        if _subject(message).startswith("drop-bob"):
            return Verdict.change_recipients(remove=[f"bob@{DOMAIN}"])
        return None

    async def on_routed(self, session: SessionView, message: MessageView) -> AgentResult:
        ROUTED.append((_subject(message), message.routes))
        return None


class SecondAgent(TransportAgent):
    """Listed after the example agent: must see its header, and never win a RCPT reject."""

    async def on_rcpt_to(
        self, session: SessionView, message: MessageView, recipient: str
    ) -> AgentResult:
        if recipient.startswith("refuse-rcpt@"):
            return Verdict.reject(551, "5.7.1", "SecondAgent should not be heard")
        return None

    async def on_end_of_headers(self, session: SessionView, message: MessageView) -> AgentResult:
        SECOND_SAW[_subject(message)] = message.headers.get_all("X-Postwerk-Scanned")
        return Verdict.add_headers(("X-Order", "second"))


LAB_AGENTS = f"""[agents]
enabled = [
    "tests.integration.test_agents:TriggerAgent",
    "postwerk.transport.agents_example:ScannedHeaderAgent",
    "tests.integration.test_agents:SecondAgent",
    "postwerk.transport.agents_builtin:AddressRewriteAgent",
    "postwerk.transport.agents_builtin:AttachmentFilterAgent",
]
timeout = 0.5

[agents.options.ScannedHeaderAgent]
forbidden_subjects = ["forbidden"]

[agents.options.AddressRewriteAgent]
recipients = {{ "old.{DOMAIN}" = "{DOMAIN}", "boss@{DOMAIN}" = "alice@{DOMAIN}" }}
senders = {{ "{DOMAIN}" = "public.{DOMAIN}" }}

[agents.options.AttachmentFilterAgent]
max_size = 200000
"""


def configure_agents(data_dir: Path, section: str) -> None:
    """Replace the `[agents]` section `init` wrote (the last one) with `section`."""
    config = data_dir / "postwerk.toml"
    text = config.read_text()
    assert "\n[agents]\n" in text and "# options = {}" in text
    config.write_text(text[: text.index("\n[agents]\n") + 1] + section)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("agents") / "data"
    init_data_dir(data_dir, ca)
    populate(data_dir)
    configure_agents(data_dir, LAB_AGENTS)
    running = start_server(data_dir, ca)
    runner = running.server.transport.agents
    assert runner is not None and runner is running.server.listeners[0].ctx.agents
    runner.log = RecordingLog()
    try:
        yield running
    finally:
        stop_server(running)


def log_events(org: RunningServer) -> list[tuple[str, str, dict[str, Any]]]:
    log = org.server.transport.agents.log
    assert isinstance(log, RecordingLog)
    return list(log.events)


def text_message(subject: str, to: str = f"alice@{DOMAIN}", body: str = "hi\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "someone@remote.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def send(org: RunningServer, msg: EmailMessage, to: list[str] | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.send_message(msg, "someone@remote.test", to or [str(msg["To"])])


def delivered(
    org: RunningServer, address: str, subject: str, timeout: float = 5.0
) -> email.message.Message | None:
    """The delivered message with this subject, parsed; None if it does not arrive."""
    deadline = time.monotonic() + timeout
    while True:
        for item in org.inbox(address):
            if item.summary["subject"] == subject:
                return email.message_from_bytes(org.read_item(item))
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def event_ids(org: RunningServer, recipient: str) -> list[tuple[str, str]]:
    async def search() -> list[tuple[str, str]]:
        events = await org.server.backend.sql.tracking.search(recipient=recipient)
        return [(e.event_id, e.recipient_status) for e in events]

    return org.call(search())


# ---------------------------------------------------------------- SMTP receive events


def test_reject_at_connect_is_the_greeting(lab: RunningServer) -> None:
    w = Wire(lab.smtp_port, source="127.0.0.3")
    code, text = w.reply()
    assert (code, b"5.7.1 Your address is refused" in text) == (554, True)
    assert w.closed()


def test_reject_at_helo_leaves_the_client_ungreeted(lab: RunningServer) -> None:
    w = Wire(lab.smtp_port)
    w.reply()
    assert w.cmd(b"EHLO bad.helo.test") == (550, b"550 5.7.1 Bad HELO")
    assert w.cmd(b"MAIL FROM:<a@remote.test>")[0] == 503  # no greeting stands
    assert w.cmd(b"EHLO good.helo.test")[0] == 250
    w.close()


def test_reject_after_auth_forgets_the_login(lab: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", lab.submission_port, timeout=10) as s:
        s.starttls(context=lab.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login(f"bob@{DOMAIN}", PASSWORD)
        assert err.value.smtp_code == 535 and b"Bob may not" in err.value.smtp_error
        assert s.mail(f"bob@{DOMAIN}")[0] == 530  # still anonymous


def test_defer_at_mail(lab: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", lab.smtp_port, timeout=10) as s:
        s.ehlo()
        assert s.mail("defer-me@remote.test") == (451, b"4.7.1 Come back later")


def test_reject_at_rcpt_first_agent_wins(lab: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", lab.smtp_port, timeout=10) as s:
        s.ehlo()
        s.mail("someone@remote.test")
        # The trigger agent runs before the directory check (the user does not exist) and
        # before SecondAgent, which would have answered 551.
        code, text = s.rcpt(f"refuse-rcpt@{DOMAIN}")
        assert (code, text) == (550, b"5.7.1 Recipient refused by TriggerAgent")
        assert s.rcpt(f"alice@{DOMAIN}")[0] == 250


def test_reject_at_end_of_headers_by_the_example_agent(lab: RunningServer) -> None:
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(lab, text_message("a forbidden subject"))
    assert err.value.smtp_code == 550
    assert err.value.smtp_error == b"5.7.1 Message rejected: forbidden subject"
    assert delivered(lab, f"alice@{DOMAIN}", "a forbidden subject", timeout=0.3) is None


def test_reject_at_end_of_data_removes_the_file(lab: RunningServer) -> None:
    before = lab.call(lab.server.backend.blobs.ids())
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(lab, text_message("eod-reject please"))
    assert (err.value.smtp_code, err.value.smtp_error) == (554, b"5.7.1 Rejected at end of data")
    assert delivered(lab, f"alice@{DOMAIN}", "eod-reject please", timeout=0.3) is None
    assert set(lab.call(lab.server.backend.blobs.ids())) <= set(before)


def test_headers_added_at_end_of_headers_and_end_of_data_in_priority_order(
    lab: RunningServer,
) -> None:
    send(lab, text_message("eod-header check"))
    msg = delivered(lab, f"alice@{DOMAIN}", "eod-header check")
    assert msg is not None
    names = [n for n, _ in msg.items()]
    # Ours first (Return-Path, Received), the agents' right after our Received: the end-of-
    # data one (added last, inserted there), then end of headers' in agent order.
    assert names[:5] == ["Return-Path", "Received", "X-Eod", "X-Postwerk-Scanned", "X-Order"]
    assert msg["X-Postwerk-Scanned"] == "ScannedHeaderAgent; plain"
    assert msg["X-Eod"].endswith(" octets")
    assert msg["Subject"] == "eod-header check" and msg.get_payload() == "hi\r\n"
    # The later agent saw the earlier one's header in its view.
    assert SECOND_SAW["eod-header check"] == ["ScannedHeaderAgent; plain"]


def test_agent_that_raises_is_contained_and_logged(lab: RunningServer) -> None:
    send(lab, text_message("raise an error"))
    msg = delivered(lab, f"alice@{DOMAIN}", "raise an error")
    assert msg is not None
    assert msg["X-Postwerk-Scanned"] is not None  # the agents after it still ran
    failures = [f for _, e, f in log_events(lab) if e == "agent_failed"]
    mine = [f for f in failures if "boom in raise an error" in f["error"]]
    assert len(mine) == 1
    assert mine[0]["agent"] == "TriggerAgent" and mine[0]["event"] == "on_end_of_headers"
    assert mine[0]["session_id"] and mine[0]["queue_id"]


def test_agent_that_hangs_is_cut_at_its_time_limit(lab: RunningServer) -> None:
    started = time.monotonic()
    send(lab, text_message("hang forever"))
    assert time.monotonic() - started < 3  # the limit is 0.5 s
    assert delivered(lab, f"alice@{DOMAIN}", "hang forever") is not None
    timeouts = [f for _, e, f in log_events(lab) if e == "agent_timeout"]
    assert any(f["agent"] == "TriggerAgent" and f["timeout"] == 0.5 for f in timeouts)


# ---------------------------------------------------------------- routing events


def test_change_recipients_on_submitted(lab: RunningServer) -> None:
    send(lab, text_message("copy-bob too"))
    bob = delivered(lab, f"bob@{DOMAIN}", "copy-bob too")
    assert bob is not None and bob["X-Submitted"] == "copied"
    assert delivered(lab, f"alice@{DOMAIN}", "copy-bob too") is not None
    events = event_ids(lab, f"bob@{DOMAIN}")
    assert any(e == "AGENTINFO" and "TriggerAgent: recipients" in s for e, s in events)


def test_change_recipients_on_resolved_after_group_expansion(lab: RunningServer) -> None:
    send(lab, text_message("drop-bob from team", to=f"team@{DOMAIN}"))
    assert delivered(lab, f"alice@{DOMAIN}", "drop-bob from team") is not None
    assert delivered(lab, f"bob@{DOMAIN}", "drop-bob from team", timeout=0.5) is None
    # on_routed saw the final routes: alice only.
    routes = [r for s, r in ROUTED if s == "drop-bob from team"]
    assert [[x.address for x in r] for r in routes] == [[f"alice@{DOMAIN}"]]


# ---------------------------------------------------------------- built-in agents


def test_address_rewrite_at_rcpt(lab: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", lab.smtp_port, timeout=10) as s:
        # old.<domain> is not an accepted domain: without the rewrite this is 550 5.7.54.
        refused = s.sendmail(
            "someone@remote.test",
            [f"bob@old.{DOMAIN}", f"boss@{DOMAIN}"],
            b"Subject: rewritten\r\n\r\nhi\r\n",
        )
    assert refused == {}
    assert delivered(lab, f"bob@{DOMAIN}", "rewritten") is not None
    assert delivered(lab, f"alice@{DOMAIN}", "rewritten") is not None


def test_address_rewrite_of_the_sender_going_out(lab: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", lab.submission_port, timeout=10) as s:
        s.starttls(context=lab.client_context())
        s.login(f"alice@{DOMAIN}", PASSWORD)
        msg = text_message("outbound rewrite", to="far@elsewhere.test")
        msg.replace_header("From", f"alice@{DOMAIN}")
        s.send_message(msg, f"alice@{DOMAIN}", ["far@elsewhere.test"])

    async def senders() -> list[str]:
        return [
            m.sender
            for m in await lab.server.backend.sql.queue.list_messages()
            if m.subject == "outbound rewrite"
        ]

    assert lab.call(senders()) == [f"alice@public.{DOMAIN}"]


def attachment_message(subject: str, filename: str, ctype: str = "application/octet-stream") -> Any:
    msg = text_message(subject)
    maintype, subtype = ctype.split("/")
    msg.add_attachment(b"MZ\x90\x00payload", maintype=maintype, subtype=subtype, filename=filename)
    return msg


def test_attachment_filter_rejects_exe_and_allows_txt(lab: RunningServer) -> None:
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(lab, attachment_message("with an exe", "Setup.EXE"))
    assert err.value.smtp_code == 554
    assert err.value.smtp_error == b"5.7.1 Message rejected: attachment Setup.EXE is not allowed"
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(lab, attachment_message("with a program", "harmless.bin", "application/x-msdownload"))
    assert b"content type application/x-msdownload" in err.value.smtp_error
    send(lab, attachment_message("with a txt", "notes.txt", "text/plain"))
    assert delivered(lab, f"alice@{DOMAIN}", "with a txt") is not None
    assert delivered(lab, f"alice@{DOMAIN}", "with an exe", timeout=0.2) is None


def test_attachment_filter_size_limit(lab: RunningServer) -> None:
    big = text_message("too big", body=("x" * 76 + "\n") * 3000)  # ~230 KB > max_size 200000
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as err:
        send(lab, big)
    assert err.value.smtp_code == 552  # at MAIL, from smtplib's SIZE=
    # Without SIZE= the same limit applies at end of data.
    w = Wire(lab.smtp_port)
    w.reply()
    w.cmd(b"EHLO wire.test")
    assert w.cmd(b"MAIL FROM:<someone@remote.test>")[0] == 250
    assert w.cmd(f"RCPT TO:<alice@{DOMAIN}>".encode())[0] == 250
    assert w.cmd(b"DATA")[0] == 354
    w.send(b"Subject: big by wire\r\n\r\n" + (b"x" * 76 + b"\r\n") * 3000 + b".\r\n")
    code, text = w.reply()
    assert (code, text[:9]) == (552, b"552 5.3.4")
    w.close()


# ---------------------------------------------------------------- quarantine, no agents


def test_quarantine_keeps_the_message_out_of_delivery(tmp_path: Path, ca: trustme.CA) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)
    populate(data_dir)
    # Configured through the environment this time.
    org = start_server(
        data_dir,
        ca,
        {
            "POSTWERK_AGENTS__ENABLED": "postwerk.transport.agents_builtin:AttachmentFilterAgent",
            "POSTWERK_AGENTS__OPTIONS": '{"AttachmentFilterAgent": {"action": "quarantine"}}',
        },
    )
    try:
        send(org, attachment_message("quarantine me", "invoice.pdf.scr"))  # accepted: 250
        send(org, text_message("harmless"))
        assert delivered(org, f"alice@{DOMAIN}", "harmless") is not None
        assert delivered(org, f"alice@{DOMAIN}", "quarantine me", timeout=0.5) is None

        async def held() -> list[tuple[str, str, str]]:
            queue = org.server.backend.sql.queue
            out = []
            for m in await queue.list_messages():
                out += [
                    (r.status.value, r.next_hop, r.last_error) for r in await queue.recipients(m.id)
                ]
            return out

        [(status, hop, error)] = org.call(held())
        assert (status, hop) == ("suspended", "Quarantine")
        assert error == (
            "Quarantined by AttachmentFilterAgent: "
            "Message rejected: attachment invoice.pdf.scr is not allowed"
        )
        summaries = org.call(org.server.backend.sql.queue.summaries())
        assert [(q.name, q.count) for q in summaries] == [("Quarantine", 1)]
        events = event_ids(org, f"alice@{DOMAIN}")
        assert ("AGENTINFO", error) in events
        assert not any(e == "DELIVER" for e, s in events if "quarantine" in s.lower())
    finally:
        stop_server(org)


def test_no_agents_configured_means_no_runner(org: RunningServer) -> None:
    assert org.server.transport.agents is None
    assert all(listener.ctx.agents is None for listener in org.server.listeners)
    send(org, text_message("plain"))
    msg = delivered(org, f"alice@{DOMAIN}", "plain")
    assert msg is not None
    assert [n for n, _ in msg.items()][:3] == ["Return-Path", "Received", "From"]
