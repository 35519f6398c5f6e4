"""The transport-agent runner, verdicts, views and the built-in agents, without a server."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from postwerk.config.settings import AgentSettings, Settings, render_toml
from postwerk.store.memory.blobs import MemoryBlobStore
from postwerk.store.records import QueuedRecipient, RecipientStatus
from postwerk.transport.agents import (
    CONTINUE,
    AgentLoadError,
    AgentResult,
    AgentRunner,
    Event,
    Headers,
    MessageView,
    Quarantine,
    Route,
    SessionView,
    TransportAgent,
    Verdict,
    handles,
    insert_headers,
    load_agents,
    quarantine_rows,
    release_quarantined,
)
from postwerk.transport.agents_builtin import (
    AddressMap,
    AddressRewriteAgent,
    AttachmentFilterAgent,
    extension,
    file_names_and_types,
)
from postwerk.transport.agents_example import ScannedHeaderAgent
from postwerk.transport.categorizer import Categorization, Resolved

SESSION = SessionView(session_id="s1", connector="Default Frontend", client_ip="192.0.2.1")


def message(**kw: Any) -> MessageView:
    base: dict[str, Any] = {
        "queue_id": "q1",
        "sender": "a@example.test",
        "recipients": ("b@example.test",),
    }
    return MessageView(**{**base, **kw})


class RecordingLog:
    """Stands in for the runner's structlog logger."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.bound: dict[str, Any] = {}

    def bind(self, **kw: Any) -> RecordingLog:
        child = RecordingLog()
        child.events = self.events
        child.bound = {**self.bound, **kw}
        return child

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.events.append((level, event, {**self.bound, **kw}))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def names(self) -> list[str]:
        return [e for _, e, _ in self.events]


def runner(*agents: TransportAgent, timeout: float = 1.0) -> tuple[AgentRunner, RecordingLog]:
    log = RecordingLog()
    return AgentRunner(agents, timeout, log), log  # type: ignore[arg-type]


class Fixed(TransportAgent):
    """Returns the same result for every message event."""

    def __init__(self, result: AgentResult, name: str = "") -> None:
        super().__init__()
        self.result = result
        self._name = name
        self.seen: list[MessageView] = []

    @property
    def agent_name(self) -> str:
        return self._name or "Fixed"

    async def on_end_of_headers(self, session: SessionView, message: MessageView) -> AgentResult:
        self.seen.append(message)
        return self.result

    async def on_submitted(self, session: SessionView, message: MessageView) -> AgentResult:
        self.seen.append(message)
        return self.result

    async def on_rcpt_to(
        self, session: SessionView, message: MessageView, recipient: str
    ) -> AgentResult:
        return self.result


# ---------------------------------------------------------------- verdicts


def test_verdict_constructors_check_their_input() -> None:
    assert Verdict.reject().reply is not None and Verdict.reject().reply.code == 550
    with pytest.raises(ValueError):
        Verdict.reject(450, "4.7.1", "x")  # a reject is permanent
    with pytest.raises(ValueError):
        Verdict.defer(550, "5.7.1", "x")
    with pytest.raises(ValueError):
        Verdict.reject(550, "4.7.1", "x")  # status class must match
    with pytest.raises(ValueError):
        Verdict.reject(550, "5.7.1", "two\r\nlines")  # reply injection
    with pytest.raises(ValueError):
        Verdict.add_headers(("X-Bad Name", "v"))
    with pytest.raises(ValueError):
        Verdict.add_headers(("X-Inject", "v\r\nBcc: someone@else.test"))
    with pytest.raises(ValueError):
        Verdict.change_recipients(add=["not an address"])
    assert Verdict.change_sender("").sender == ""


def test_handles_only_overridden_events() -> None:
    agent = Fixed(None)
    assert handles(agent, Event.END_OF_HEADERS)
    assert not handles(agent, Event.CONNECT)
    r, _ = runner(agent)
    assert r.has(Event.SUBMITTED) and not r.has(Event.RESOLVED) and r.routing


async def test_first_reject_wins_and_later_agents_are_not_called() -> None:
    first = Fixed(Verdict.reject(550, "5.7.1", "first"), "First")
    second = Fixed(Verdict.reject(554, "5.7.1", "second"), "Second")
    r, log = runner(first, second)
    outcome = await r.run(Event.END_OF_HEADERS, SESSION, message())
    assert outcome.reply is not None and outcome.reply.text == "first"
    assert outcome.rejected_by == "First"
    assert second.seen == []
    assert "agent_refused" in log.names()


async def test_headers_accumulate_in_priority_order_and_later_agents_see_them() -> None:
    a = Fixed(Verdict.add_headers(("X-Order", "a")), "A")
    b = Fixed([Verdict.add_headers(("X-Order", "b")), CONTINUE], "B")
    r, _ = runner(a, b)
    outcome = await r.run(Event.END_OF_HEADERS, SESSION, message())
    assert outcome.headers == [("X-Order", "a"), ("X-Order", "b")]
    assert b.seen[0].headers.get_all("x-order") == ["a"]


async def test_recipient_changes_apply_in_order() -> None:
    a = Fixed(Verdict.change_recipients(add=["c@example.test"]), "A")
    b = Fixed(Verdict.change_recipients(remove=["B@example.test"], add=["d@example.test"]), "B")
    r, _ = runner(a, b)
    outcome = await r.run(Event.SUBMITTED, SESSION, message())
    assert outcome.recipients == ("c@example.test", "d@example.test")
    assert b.seen[0].recipients == ("b@example.test", "c@example.test")
    assert len(outcome.notes) == 2


async def test_rcpt_change_must_leave_one_address() -> None:
    r, log = runner(Fixed(Verdict.change_recipients(add=["x@example.test"]), "Adder"))
    outcome = await r.run(Event.RCPT_TO, SESSION, message(), "b@example.test")
    assert outcome.recipients is None  # two addresses from one RCPT: refused, logged
    assert "agent_invalid_verdict" in log.names()
    rw = Fixed(
        Verdict.change_recipients(add=["x@example.test"], remove=["b@example.test"]), "Rewriter"
    )
    r, _ = runner(rw)
    outcome = await r.run(Event.RCPT_TO, SESSION, message(), "b@example.test")
    assert outcome.recipients == ("x@example.test",)


async def test_verdict_not_allowed_at_event_is_ignored_and_logged() -> None:
    r, log = runner(Fixed(Verdict.reject(), "Routing"))
    outcome = await r.run(Event.SUBMITTED, SESSION, message())
    assert outcome.reply is None
    [(level, _event, fields)] = [e for e in log.events if e[1] == "agent_invalid_verdict"]
    assert level == "error" and fields["agent"] == "Routing" and fields["queue_id"] == "q1"
    r, log = runner(Fixed("nonsense", "Weird"))  # type: ignore[arg-type]
    assert (await r.run(Event.SUBMITTED, SESSION, message())).reply is None
    assert "agent_invalid_verdict" in log.names()


class Raises(TransportAgent):
    async def on_end_of_headers(self, session: SessionView, message: MessageView) -> AgentResult:
        raise RuntimeError("boom")


class Hangs(TransportAgent):
    async def on_end_of_headers(self, session: SessionView, message: MessageView) -> AgentResult:
        await asyncio.sleep(3600)
        return Verdict.reject()


async def test_errors_and_timeouts_count_as_continue() -> None:
    after = Fixed(Verdict.add_headers(("X-After", "1")), "After")
    r, log = runner(Raises(), Hangs(), after, timeout=0.1)
    started = time.monotonic()
    outcome = await r.run(Event.END_OF_HEADERS, SESSION, message())
    assert time.monotonic() - started < 2
    assert outcome.reply is None
    assert outcome.headers == [("X-After", "1")]  # the agents after them still ran
    failed = {e: f for _, e, f in log.events}
    assert failed["agent_failed"]["agent"] == "Raises"
    assert "boom" in failed["agent_failed"]["error"]
    assert failed["agent_failed"]["session_id"] == "s1"
    assert failed["agent_timeout"]["agent"] == "Hangs"


async def test_quarantine_first_reason_kept() -> None:
    r, _ = runner(
        Fixed(Verdict.quarantine("one"), "A"),
        Fixed(Verdict.quarantine("two"), "B"),
    )
    outcome = await r.run(Event.END_OF_HEADERS, SESSION, message())
    assert outcome.quarantine == Quarantine("A", "one")


async def test_content_is_not_available_before_end_of_data() -> None:
    with pytest.raises(LookupError):
        await message().content()


# ---------------------------------------------------------------- routing


class Resolver:
    """A categorizer stand-in: x@ → mailbox:1, everything else → Unreachable."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, recipients: Sequence[str]) -> Categorization:
        self.calls.append(list(recipients))
        out = Categorization()
        for r in recipients:
            hop = "mailbox:1" if r.startswith("x@") else "Unreachable"
            out.recipients.append(Resolved(r, hop, r))
        return out


class RoutingAgent(TransportAgent):
    def __init__(self) -> None:
        super().__init__()
        self.routed: list[tuple[Route, ...]] = []

    async def on_submitted(self, session: SessionView, message: MessageView) -> AgentResult:
        return Verdict.add_headers(("X-Submitted", "1"))

    async def on_resolved(self, session: SessionView, message: MessageView) -> AgentResult:
        return Verdict.change_recipients(remove=["b@example.test"], add=["x@example.test"])

    async def on_routed(self, session: SessionView, message: MessageView) -> AgentResult:
        self.routed.append(message.routes)
        return Verdict.change_sender("rewritten@example.test")


async def test_routing_events_in_order() -> None:
    agent = RoutingAgent()
    r, _ = runner(agent)
    categorize = Resolver()
    routed = await r.route(SESSION, message(headers=Headers()), categorize)
    assert categorize.calls == [["b@example.test"], ["x@example.test"]]  # only the added one
    assert [x.address for x in routed.categorization.recipients] == ["x@example.test"]
    assert agent.routed == [(Route("x@example.test", "mailbox:1", "x@example.test"),)]
    assert routed.sender == "rewritten@example.test"
    assert routed.recipients == ("b@example.test",)  # envelope as submitted
    assert routed.headers == [("X-Submitted", "1")]


# ---------------------------------------------------------------- views and files


def test_headers_parse_unfolds_and_looks_up_case_insensitively() -> None:
    h = Headers.parse(
        b"Received: from a\r\n\tby b; date\r\nSubject: hi\r\n there\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody"
    )
    assert h.get("subject") == "hi there"
    assert h.get("received") == "from a\tby b; date"
    assert h.get_all("X-A") == ["1", "2"]
    assert h.get("missing") is None
    assert [n for n, _ in h.after_trace([("X-New", "v")])][:2] == ["Received", "X-New"]


async def test_insert_headers_goes_after_our_received_and_replaces_the_blob() -> None:
    blobs = MemoryBlobStore()
    original = b"Received: from a\r\n\tby b; x\r\nSubject: s\r\n\r\nbody\r\n"
    for data in (original, None):  # in memory, and streamed from the blob
        w = blobs.writer()
        await w.write(original)
        blob_id = await w.commit()
        new_id, size, new_data = await insert_headers(blobs, blob_id, [("X-A", "1")], data)
        stored = await blobs.read(new_id)
        assert stored == b"Received: from a\r\n\tby b; x\r\nX-A: 1\r\nSubject: s\r\n\r\nbody\r\n"
        assert size == len(stored)
        assert new_data == (stored if data is not None else None)
        assert blob_id not in await blobs.ids()


def test_quarantine_rows_and_release() -> None:
    rows = [
        QueuedRecipient("q", "a@x.test", RecipientStatus.READY, "mailbox:3", {}, 0, "", 1.0),
        QueuedRecipient("q", "b@y.test", RecipientStatus.UNREACHABLE, "Unreachable", {}, 0, "", 1),
        QueuedRecipient("q", "c@x.test", RecipientStatus.FAILED, "", {}, 0, "not found", 1.0),
    ]
    held = quarantine_rows(rows, Quarantine("Filter", "attachment x.exe"))
    assert [r.status for r in held] == [
        RecipientStatus.SUSPENDED,
        RecipientStatus.SUSPENDED,
        RecipientStatus.FAILED,
    ]
    assert held[0].next_hop == "Quarantine"
    assert held[0].last_error == "Quarantined by Filter: attachment x.exe"
    back = [release_quarantined(r, 5.0) for r in held]
    assert [(r.status, r.next_hop) for r in back] == [
        (RecipientStatus.READY, "mailbox:3"),
        (RecipientStatus.UNREACHABLE, "Unreachable"),
        (RecipientStatus.FAILED, ""),
    ]
    assert back[0].params == {}


# ---------------------------------------------------------------- loading


def test_loading_is_explicit_and_checked() -> None:
    assert load_agents(AgentSettings()) is None
    r = load_agents(
        AgentSettings(
            enabled=["postwerk.transport.agents_builtin:AddressRewriteAgent"],
            options={"AddressRewriteAgent": {"recipients": {"old.test": "new.test"}}},
            timeout=2.5,
        )
    )
    assert r is not None and r.timeout == 2.5 and r.has(Event.RCPT_TO)
    bad = [
        (["no.such.module:Agent"], {}),
        (["postwerk.transport.agents_builtin:NoSuchAgent"], {}),
        (["postwerk.transport.agents:Verdict"], {}),  # not an agent
        (["postwerk.transport.agents_builtin:AttachmentFilterAgent"], {"Typo": {}}),
        (
            ["postwerk.transport.agents_builtin:AttachmentFilterAgent"],
            {"AttachmentFilterAgent": {"max_sise": 5}},
        ),
    ]
    for enabled, options in bad:
        with pytest.raises(AgentLoadError):
            load_agents(AgentSettings(enabled=enabled, options=options))


def test_agent_settings_from_the_environment() -> None:
    s = AgentSettings.model_validate(
        {"enabled": "a.b:C, d.e:F", "options": '{"C": {"x": 1}}', "timeout": "0.5"}
    )
    assert s.enabled == ["a.b:C", "d.e:F"] and s.options == {"C": {"x": 1}}
    with pytest.raises(ValueError):
        AgentSettings(enabled=["no_colon"])


# ---------------------------------------------------------------- built-in agents


def test_address_map() -> None:
    m = AddressMap(
        {
            "boss@example.test": "alice@example.test",
            "old.test": "example.test",
            "*.legacy.test": "example.test",
        }
    )
    assert m.rewrite("Boss@Example.test") == "alice@example.test"
    assert m.rewrite("bob@OLD.test") == "bob@example.test"
    assert m.rewrite("bob@a.b.legacy.test") == "bob@example.test"
    assert m.rewrite("bob@legacy.test") == "bob@legacy.test"  # the wildcard is for subdomains
    assert m.rewrite("bob@other.test") == "bob@other.test"
    for bad in ({"old.test": "x@new.test"}, {"bad key": "x.test"}, {"a@b.test": "nope"}):
        with pytest.raises(ValueError):
            AddressMap(bad)


async def test_address_rewrite_agent_events() -> None:
    agent = AddressRewriteAgent(
        {"recipients": {"old.test": "example.test"}, "senders": {"example.test": "public.test"}}
    )
    v = await agent.on_rcpt_to(SESSION, message(), "bob@old.test")
    assert isinstance(v, Verdict) and v.add == ("bob@example.test",)
    assert await agent.on_rcpt_to(SESSION, message(), "bob@example.test") is None
    # Received over SMTP: rewritten at RCPT already; a DSN is rewritten on_submitted.
    assert await agent.on_submitted(SESSION, message(recipients=("a@old.test",))) is None
    v = await agent.on_submitted(SESSION, message(recipients=("a@old.test",), source="DSN"))
    assert isinstance(v, Verdict) and v.remove == ("a@old.test",) and v.add == ("a@example.test",)
    inside = (Route("b@example.test", "mailbox:1", "b@example.test"),)
    outside = (*inside, Route("c@far.test", "smtp:Internet:far.test", "c@far.test"))
    assert await agent.on_routed(SESSION, message(routes=inside)) is None
    v = await agent.on_routed(SESSION, message(routes=outside))
    assert isinstance(v, Verdict) and v.sender == "a@public.test"


MIXED = (
    b"Subject: files\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b'--b\r\nContent-Type: text/plain; name="notes.txt"\r\n'
    b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.txt\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment;\r\n filename*0*=us-ascii''set;\r\n filename*1=up.ExE.\r\n"
    b"\r\nMZ\r\n"
    b"--b--\r\n"
)


def test_file_names_from_every_part_decoded() -> None:
    found = file_names_and_types(MIXED)
    names = [n for n, _ in found if n]
    assert names == ["résumé.txt", "setup.ExE."]
    assert extension("setup.ExE. ") == "exe"
    assert extension("README") == ""


async def test_attachment_filter() -> None:
    agent = AttachmentFilterAgent({"max_size": 10_000})
    eod = message(size=len(MIXED), reader=lambda: _bytes(MIXED))
    v = await agent.on_end_of_data(SESSION, eod)
    assert isinstance(v, Verdict) and v.reply is not None
    assert (v.reply.code, v.reply.status) == (554, "5.7.1") and "setup.ExE." in v.reply.text
    big = message(size=20_000)
    v = await agent.on_end_of_data(SESSION, big)
    assert isinstance(v, Verdict) and v.reply is not None and v.reply.code == 552
    v = await agent.on_mail_from(SESSION, big)  # SIZE= too big: refused before DATA
    assert isinstance(v, Verdict) and v.reply is not None and v.reply.status == "5.3.4"
    ok = MIXED.replace(b"up.ExE.", b"up.txt")
    eod = message(size=len(ok), reader=lambda: _bytes(ok))
    assert await agent.on_end_of_data(SESSION, eod) is None
    typed = AttachmentFilterAgent({"blocked_content_types": ["Text/Plain"], "action": "quarantine"})
    v = await typed.on_end_of_data(SESSION, eod)
    assert isinstance(v, Verdict) and v.reason.startswith("Message rejected: content type")


async def _bytes(data: bytes) -> bytes:
    return data


# ---------------------------------------------------------------- docs and configuration file

ROOT = Path(__file__).resolve().parents[2]


def test_docs_show_the_example_agent_verbatim() -> None:
    doc = (ROOT / "docs" / "agents.md").read_text("utf-8")
    code = (ROOT / "src" / "postwerk" / "transport" / "agents_example.py").read_text("utf-8")
    section = doc[doc.index("## A worked example") :]
    start = section.index("```python\n") + len("```python\n")
    assert section[start : section.index("```", start)] == code


async def test_example_agent() -> None:
    agent = ScannedHeaderAgent({"forbidden_subjects": ["lottery"]})
    won = message(headers=Headers([("Subject", "=?utf-8?q?You_won_the_LOTTERY?=")]))
    v = await agent.on_end_of_headers(SESSION, won)
    assert isinstance(v, Verdict) and v.reply is not None and v.reply.code == 550
    v = await agent.on_end_of_headers(SESSION, message(headers=Headers([("Subject", "hi")])))
    assert isinstance(v, Verdict) and v.headers == (
        ("X-Postwerk-Scanned", "ScannedHeaderAgent; plain"),
    )
    with pytest.raises(ValueError):
        ScannedHeaderAgent({"forbidden_subjects": "lottery"})


def test_init_file_takes_agent_option_tables() -> None:
    text = render_toml(Settings())
    assert "# options = {}" in text  # an inline table would forbid the tables below
    text += '\n[agents.options.AddressRewriteAgent]\nrecipients = { "a.test" = "b.test" }\n'
    parsed = tomllib.loads(text)
    assert Settings.model_validate(parsed).agents.options == {
        "AddressRewriteAgent": {"recipients": {"a.test": "b.test"}}
    }
    # Options already set render as inline tables that read back the same.
    s = Settings(agents=AgentSettings(options={"X": {"k": "v", "n": [1, 2]}}))
    assert Settings.model_validate(tomllib.loads(render_toml(s))) == s
