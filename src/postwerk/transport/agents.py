"""Transport agents: Exchange's extension points in the mail pipeline, in Python.

An agent is a subclass of `TransportAgent` that overrides the async methods of
the events it cares about. Each method gets read-only views (`SessionView`,
`MessageView`) and returns a `Verdict`, a sequence of verdicts, or None
(continue). Events, in the order a message meets them:

    SMTP receive:  on_connect, on_helo, on_auth, on_mail_from, on_rcpt_to,
                   on_end_of_headers, on_end_of_data
    routing:       on_submitted (queued, before categorization),
                   on_resolved (recipients resolved and expanded),
                   on_routed (next hops chosen)

Agents run in configuration order (`[agents] enabled`, the first has the highest
priority); each sees what the agents before it changed. The first REJECT or
DEFER ends the event; header additions accumulate; recipient changes apply in
order. An agent that raises, overruns its time limit or returns a verdict the
event does not allow is logged (agent name, session and queue id) and counts as
CONTINUE: an agent can refuse mail only by saying so, never by failing.

Loading is explicit: `load_agents` imports each `module:Class` named in the
settings; nothing is discovered by name. No agents configured → no runner
(`None`), and the pipeline pays one truthiness check per event site.

The operator's documentation is docs/agents.md.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, overload

import structlog

from postwerk.core.addresses import parse_address
from postwerk.core.errors import InvalidName
from postwerk.core.replies import Reply
from postwerk.store.records import QueuedRecipient, RecipientStatus
from postwerk.transport.categorizer import Categorization, Resolved
from postwerk.transport.routing import UNREACHABLE

if TYPE_CHECKING:
    from postwerk.config.settings import AgentSettings
    from postwerk.store.api import BlobStore
    from postwerk.transport.envelope import ReceiveInfo

DEFAULT_TIMEOUT = 5.0
QUARANTINE_HOP = "Quarantine"
# Where a quarantined recipient's real next hop is kept (per-recipient params), so that
# releasing it (`release_quarantined`) needs no new categorization.
QUARANTINE_PARAM = "quarantine_next_hop"
AGENT_SOURCE = "AGENT"  # tracking-log source of agent actions (Exchange's AGENTINFO events)
MAX_HEADER_VALUE = 900  # stays under RFC 5322's 998-octet line limit with the name
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 §3.6.8: printable ASCII except ":"
_STATUS = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")


# ---------------------------------------------------------------- events and verdicts


class Event(StrEnum):
    """The events; each value is the name of the agent method that handles it."""

    CONNECT = "on_connect"
    HELO = "on_helo"
    AUTH = "on_auth"
    MAIL_FROM = "on_mail_from"
    RCPT_TO = "on_rcpt_to"
    END_OF_HEADERS = "on_end_of_headers"
    END_OF_DATA = "on_end_of_data"
    SUBMITTED = "on_submitted"
    RESOLVED = "on_resolved"
    ROUTED = "on_routed"


class Action(StrEnum):
    CONTINUE = "continue"
    REJECT = "reject"
    DEFER = "defer"
    QUARANTINE = "quarantine"
    ADD_HEADERS = "add_headers"
    CHANGE_RECIPIENTS = "change_recipients"
    CHANGE_SENDER = "change_sender"


_BASE = frozenset({Action.CONTINUE})
_REPLY = _BASE | {Action.REJECT, Action.DEFER}
# Which verdicts each event accepts. REJECT/DEFER need a client to answer, so they exist
# at SMTP events only; a routing agent that wants a message kept back quarantines it.
ALLOWED: Mapping[Event, frozenset[Action]] = MappingProxyType(
    {
        Event.CONNECT: _REPLY,
        Event.HELO: _REPLY,
        Event.AUTH: _REPLY,
        Event.MAIL_FROM: _REPLY | {Action.CHANGE_SENDER},
        Event.RCPT_TO: _REPLY | {Action.CHANGE_RECIPIENTS},
        Event.END_OF_HEADERS: _REPLY | {Action.QUARANTINE, Action.ADD_HEADERS},
        Event.END_OF_DATA: _REPLY | {Action.QUARANTINE, Action.ADD_HEADERS},
        Event.SUBMITTED: _BASE
        | {Action.QUARANTINE, Action.ADD_HEADERS, Action.CHANGE_RECIPIENTS, Action.CHANGE_SENDER},
        Event.RESOLVED: _BASE | {Action.QUARANTINE, Action.CHANGE_RECIPIENTS},
        Event.ROUTED: _BASE | {Action.QUARANTINE, Action.CHANGE_SENDER},
    }
)


def _check_text(text: str, what: str) -> str:
    # A CR or another control character in a reply or header would let an agent's input
    # (say, a Subject it quotes) inject protocol lines; "\n" in a reply makes it multi-line.
    if any(ord(c) < 0x20 and c not in "\t\n" for c in text) or "\x7f" in text:
        raise ValueError(f"{what} contains control characters: {text!r}")
    return text


def _reply(code: int, status: str, text: str, klass: str) -> Reply:
    m = _STATUS.match(status)
    if str(code)[0] != klass or not 100 <= code <= 599 or m is None or m.group(1) != klass:
        raise ValueError(f"a {klass}xx reply needs a {klass}xx code and {klass}.x.y status")
    return Reply(code, status, _check_text(text, "reply text"))


def _address(value: str) -> str:
    try:
        return str(parse_address(value, allow_utf8=True))
    except InvalidName as exc:
        raise ValueError(f"not an address: {value!r}") from exc


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an agent decides; build one with the class methods, not the constructor."""

    action: Action
    reply: Reply | None = None  # REJECT, DEFER
    headers: tuple[tuple[str, str], ...] = ()  # ADD_HEADERS
    add: tuple[str, ...] = ()  # CHANGE_RECIPIENTS
    remove: tuple[str, ...] = ()  # CHANGE_RECIPIENTS
    sender: str | None = None  # CHANGE_SENDER ("" is the null reverse-path)
    reason: str = ""  # QUARANTINE: shown in the queue viewer and tracking log

    @classmethod
    def reject(
        cls, code: int = 550, status: str = "5.7.1", text: str = "Message rejected by policy"
    ) -> Verdict:
        """A permanent refusal (5xx) of the command, or of the message at end of data."""
        return cls(Action.REJECT, reply=_reply(code, status, text, "5"))

    @classmethod
    def defer(
        cls, code: int = 451, status: str = "4.7.1", text: str = "Try again later"
    ) -> Verdict:
        """A temporary refusal (4xx): the client keeps the message and retries."""
        return cls(Action.DEFER, reply=_reply(code, status, text, "4"))

    @classmethod
    def quarantine(cls, reason: str) -> Verdict:
        """Accept the message but keep it out of delivery (the Quarantine queue)."""
        return cls(Action.QUARANTINE, reason=_check_text(reason, "reason").replace("\n", " "))

    @classmethod
    def add_headers(cls, *headers: tuple[str, str]) -> Verdict:
        """Header fields to add, e.g. `Verdict.add_headers(("X-Scanned", "yes"))`."""
        for name, value in headers:
            if not _FIELD_NAME.match(name):
                raise ValueError(f"not a header field name: {name!r}")
            _check_text(value, "header value")
            if "\n" in value or len(value) > MAX_HEADER_VALUE or not value.isascii():
                raise ValueError(f"header {name}: one ASCII line of at most {MAX_HEADER_VALUE}")
        return cls(Action.ADD_HEADERS, headers=tuple(headers))

    @classmethod
    def change_recipients(cls, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Verdict:
        """Remove, then add, envelope recipients (at RCPT: rewrite the one being given)."""
        return cls(
            Action.CHANGE_RECIPIENTS,
            add=tuple(_address(a) for a in add),
            remove=tuple(_address(r) for r in remove),
        )

    @classmethod
    def change_sender(cls, sender: str) -> Verdict:
        """Replace the envelope sender (MAIL FROM), e.g. for outbound address rewriting."""
        return cls(Action.CHANGE_SENDER, sender=_address(sender) if sender else "")


CONTINUE = Verdict(Action.CONTINUE)

AgentResult = Verdict | Sequence[Verdict] | None


# ---------------------------------------------------------------- views


class Headers(tuple[tuple[str, str], ...]):
    """A message's header fields in order, as (name, value) pairs; read-only.

    Values are unfolded but not RFC 2047 decoded (what the message says, byte for byte,
    read as UTF-8). Names compare case-insensitively in `get`/`get_all`.
    """

    __slots__ = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower()
        for n, v in self:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self if n.lower() == key]

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    def plus(self, more: Iterable[tuple[str, str]]) -> Headers:
        return Headers((*self, *more))

    def after_trace(self, more: Iterable[tuple[str, str]]) -> Headers:
        """With `more` after the first field when it is a Received field, as
        `insert_headers` places them in the message; else in front."""
        at = 1 if self and self[0][0].lower() == "received" else 0
        return Headers((*self[:at], *more, *self[at:]))

    @classmethod
    def parse(cls, block: bytes) -> Headers:
        """The fields of a header block (up to the first empty line)."""
        fields: list[tuple[str, str]] = []
        for raw in block.split(b"\r\n"):
            if not raw:
                break
            line = raw.decode("utf-8", "replace")
            if line[0] in " \t":
                if fields:  # a continuation line: unfold (RFC 5322 §2.2.3)
                    name, value = fields[-1]
                    fields[-1] = (name, value + line)
                continue
            name, colon, value = line.partition(":")
            if colon:
                fields.append((name.strip(), value.lstrip(" \t")))
        return cls(fields)


EMPTY_HEADERS = Headers()


@dataclass(frozen=True, slots=True)
class SessionView:
    """The SMTP session a message arrived in (routing events: what the queue kept)."""

    session_id: str  # "" for messages this server made (DSNs)
    connector: str  # receive connector name; for DSNs their source
    client_ip: str
    server_ip: str = ""
    helo: str | None = None  # the EHLO/HELO name; at on_helo the one just given
    esmtp: bool = False
    tls: bool = False
    tls_info: str = ""  # "version=TLS1_3 cipher=... bits=256" when known
    auth_user: str | None = None  # primary address after AUTH

    @classmethod
    def from_info(cls, info: ReceiveInfo) -> SessionView:
        proto = info.protocol
        return cls(
            session_id=info.session_id,
            connector=info.connector,
            client_ip=info.client_ip,
            server_ip=info.server_ip,
            helo=info.client_helo or None,
            esmtp=proto.startswith("ESMTP"),
            tls=proto.startswith(("ESMTPS", "SMTPS")),
            tls_info=info.tls,
            auth_user=info.auth_user,
        )


@dataclass(frozen=True, slots=True)
class Route:
    """One resolved recipient (on_resolved, on_routed)."""

    address: str  # the address delivered to (a mailbox's primary address)
    next_hop: str  # "mailbox:<id>", "smtp:<connector>:<domain>", "Unreachable"
    original: str  # the envelope recipient it came from
    expanded_from: str = ""  # the group, when it came from an expansion


def _no_content() -> Awaitable[bytes]:
    raise LookupError("the message content is available from on_end_of_data on")


@dataclass(frozen=True, slots=True)
class MessageView:
    """The message as far as it is known at the event; read-only.

    At MAIL and RCPT there are no headers yet (`recipients` are those accepted so
    far); from end of headers on, `headers` include the trace fields this server
    added (Received, and Message-ID/Date on submissions) and earlier agents' headers.
    """

    queue_id: str  # "" before DATA
    sender: str  # "" is the null reverse-path
    recipients: tuple[str, ...]
    headers: Headers = EMPTY_HEADERS
    size: int = 0  # octets: MAIL's SIZE= at MAIL/RCPT, so far at end of headers, then exact
    source: str = "SMTP"  # "SMTP", or "DSN" for messages this server generated
    mail_params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    routes: tuple[Route, ...] = ()  # on_resolved, on_routed
    reader: Callable[[], Awaitable[bytes]] = field(default=_no_content, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A dict handed in stays the caller's: agents get a read-only copy.
        if not isinstance(self.mail_params, MappingProxyType):
            object.__setattr__(self, "mail_params", MappingProxyType(dict(self.mail_params)))

    async def content(self) -> bytes:
        """The whole message as stored (headers and body), from end of data on."""
        return await self.reader()


# ---------------------------------------------------------------- agents


class TransportAgent:
    """Base class of agents: every event is a no-op until overridden.

    One instance serves every session and message, concurrently: keep per-message
    state in locals, not on `self`. Do blocking work in `asyncio.to_thread`, since an
    agent that blocks the event loop stalls every connection (the time limit can
    only cancel an agent at an `await`).
    """

    name: ClassVar[str] = ""  # in logs; defaults to the class name

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: Mapping[str, Any] = MappingProxyType(dict(options or {}))

    @property
    def agent_name(self) -> str:
        return self.name or type(self).__name__

    async def on_connect(self, session: SessionView) -> AgentResult:
        return None

    async def on_helo(self, session: SessionView) -> AgentResult:
        return None

    async def on_auth(self, session: SessionView) -> AgentResult:
        return None

    async def on_mail_from(self, session: SessionView, message: MessageView) -> AgentResult:
        return None

    async def on_rcpt_to(
        self, session: SessionView, message: MessageView, recipient: str
    ) -> AgentResult:
        return None

    async def on_end_of_headers(self, session: SessionView, message: MessageView) -> AgentResult:
        return None

    async def on_end_of_data(self, session: SessionView, message: MessageView) -> AgentResult:
        return None

    async def on_submitted(self, session: SessionView, message: MessageView) -> AgentResult:
        return None

    async def on_resolved(self, session: SessionView, message: MessageView) -> AgentResult:
        return None

    async def on_routed(self, session: SessionView, message: MessageView) -> AgentResult:
        return None


def handles(agent: TransportAgent, event: Event) -> bool:
    """True when the agent overrides the event's method (the others are never called)."""
    return getattr(type(agent), event.value) is not getattr(TransportAgent, event.value)


# ---------------------------------------------------------------- running them


@dataclass(frozen=True, slots=True)
class Quarantine:
    agent: str
    reason: str

    def text(self) -> str:
        return f"Quarantined by {self.agent}: {self.reason}"


@dataclass
class Outcome:
    """The combined verdicts of one event."""

    reply: Reply | None = None  # the first REJECT/DEFER: answer it and stop
    rejected_by: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    recipients: tuple[str, ...] | None = None  # the new list, when an agent changed it
    sender: str | None = None  # the new sender, when an agent changed it
    quarantine: Quarantine | None = None
    notes: list[str] = field(default_factory=list)  # recipient/sender changes, for tracking


def _apply_recipients(current: tuple[str, ...], v: Verdict) -> tuple[str, ...]:
    gone = {r.lower() for r in v.remove}
    kept = [r for r in current if r.lower() not in gone]
    present = {r.lower() for r in kept}
    for a in v.add:
        if a.lower() not in present:
            kept.append(a)
            present.add(a.lower())
    return tuple(kept)


class AgentRunner:
    """Calls the configured agents for an event and combines what they say."""

    def __init__(
        self,
        agents: Sequence[TransportAgent],
        timeout: float = DEFAULT_TIMEOUT,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.agents = tuple(agents)
        self.timeout = timeout
        self.log = log or structlog.get_logger("postwerk.agents")
        # Per event, only the agents that handle it: the others cost nothing.
        self._by_event = {e: tuple(a for a in self.agents if handles(a, e)) for e in Event}

    def __bool__(self) -> bool:
        return bool(self.agents)

    def has(self, event: Event) -> bool:
        return bool(self._by_event[event])

    @property
    def routing(self) -> bool:
        return self.has(Event.SUBMITTED) or self.has(Event.RESOLVED) or self.has(Event.ROUTED)

    @overload
    async def run(self, event: Event, session: SessionView) -> Outcome: ...
    @overload
    async def run(
        self, event: Event, session: SessionView, message: MessageView, recipient: str = ""
    ) -> Outcome: ...
    async def run(
        self,
        event: Event,
        session: SessionView,
        message: MessageView | None = None,
        recipient: str = "",
    ) -> Outcome:
        """Run the event's agents in priority order; errors count as CONTINUE."""
        outcome = Outcome()
        for agent in self._by_event[event]:
            name = agent.agent_name
            log = self.log.bind(
                agent=name,
                event=event.value,
                session_id=session.session_id,
                queue_id=message.queue_id if message is not None else "",
            )
            result = await self._call(agent, event, session, message, recipient, log)
            if result is None or isinstance(result, Verdict):
                verdicts: list[object] = [result or CONTINUE]
            elif isinstance(result, list | tuple):
                verdicts = list(result)
            else:
                verdicts = [result]  # not a verdict: logged below
            for v in verdicts:
                if not isinstance(v, Verdict) or v.action not in ALLOWED[event]:
                    what = v.action.value if isinstance(v, Verdict) else type(v).__name__
                    log.error("agent_invalid_verdict", verdict=what)
                    continue
                match v.action:
                    case Action.CONTINUE:
                        pass
                    case Action.REJECT | Action.DEFER:
                        assert v.reply is not None
                        log.info("agent_refused", code=v.reply.code, status=v.reply.status)
                        outcome.reply = v.reply
                        outcome.rejected_by = name
                        return outcome
                    case Action.QUARANTINE:
                        log.info("agent_quarantined", reason=v.reason)
                        if outcome.quarantine is None:
                            outcome.quarantine = Quarantine(name, v.reason)
                    case Action.ADD_HEADERS:
                        outcome.headers.extend(v.headers)
                        if message is not None:
                            message = replace(message, headers=message.headers.plus(v.headers))
                    case Action.CHANGE_RECIPIENTS:
                        if event == Event.RCPT_TO:
                            # At RCPT the change rewrites the one recipient being given.
                            changed = _apply_recipients((recipient,), v)
                            if len(changed) != 1:
                                log.error("agent_invalid_verdict", verdict="rcpt_not_one")
                                continue
                            if changed[0] != recipient:
                                outcome.notes.append(f"{name}: {recipient} -> {changed[0]}")
                            recipient = changed[0]
                            outcome.recipients = changed
                        elif message is not None:
                            changed = _apply_recipients(message.recipients, v)
                            outcome.notes.append(
                                f"{name}: recipients -{','.join(v.remove)} +{','.join(v.add)}"
                            )
                            outcome.recipients = changed
                            message = replace(message, recipients=changed)
                    case Action.CHANGE_SENDER:
                        assert v.sender is not None
                        if message is not None:
                            outcome.notes.append(f"{name}: sender {message.sender} -> {v.sender}")
                            message = replace(message, sender=v.sender)
                        outcome.sender = v.sender
        return outcome

    async def _call(
        self,
        agent: TransportAgent,
        event: Event,
        session: SessionView,
        message: MessageView | None,
        recipient: str,
        log: structlog.stdlib.BoundLogger,
    ) -> AgentResult:
        method = getattr(agent, event.value)
        if event in (Event.CONNECT, Event.HELO, Event.AUTH):
            call = method(session)
        elif event == Event.RCPT_TO:
            call = method(session, message, recipient)
        else:
            call = method(session, message)
        try:
            result: AgentResult = await asyncio.wait_for(call, self.timeout)
        except TimeoutError:
            log.error("agent_timeout", timeout=self.timeout)
            return None
        except Exception as exc:
            # Contained: a broken agent must not refuse or lose mail.
            log.error("agent_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return None
        return result

    # ------------------------------------------------------------ routing events

    async def route(
        self,
        session: SessionView,
        message: MessageView,
        categorize: Callable[[Sequence[str]], Awaitable[Categorization]],
    ) -> Routed:
        """on_submitted → categorize → on_resolved → on_routed.

        Recipients added at on_resolved are categorized on their own and merged;
        removed ones leave whether named by resolved or by envelope address.
        """
        routed = Routed(message.sender, message.recipients)
        if self.has(Event.SUBMITTED):
            o = await self.run(Event.SUBMITTED, session, message)
            routed.absorb(o)
            message = replace(message, sender=routed.sender, recipients=routed.recipients)
            message = replace(message, headers=message.headers.after_trace(o.headers))
        cat = await categorize(routed.recipients)
        if self.has(Event.RESOLVED):
            view = replace(
                message,
                recipients=tuple(r.address for r in cat.recipients),
                routes=_routes(cat.recipients),
            )
            o = await self.run(Event.RESOLVED, session, view)
            routed.absorb(o, keep_recipients=True)
            if o.recipients is not None:
                cat = await _recategorize(cat, view.recipients, o.recipients, categorize)
        if self.has(Event.ROUTED):
            view = replace(
                message,
                sender=routed.sender,
                recipients=tuple(r.address for r in cat.recipients),
                routes=_routes(cat.recipients),
            )
            routed.absorb(await self.run(Event.ROUTED, session, view))
        routed.categorization = cat
        return routed


@dataclass
class Routed:
    """What the routing events decided, for `TransportService.enqueue`."""

    sender: str
    recipients: tuple[str, ...]  # the envelope recipients after on_submitted
    categorization: Categorization = field(default_factory=Categorization)
    headers: list[tuple[str, str]] = field(default_factory=list)  # to add to the message
    quarantine: Quarantine | None = None
    notes: list[str] = field(default_factory=list)

    def absorb(self, o: Outcome, keep_recipients: bool = False) -> None:
        self.headers.extend(o.headers)
        self.notes.extend(o.notes)
        if o.sender is not None:
            self.sender = o.sender
        if o.recipients is not None and not keep_recipients:
            self.recipients = o.recipients
        if self.quarantine is None:
            self.quarantine = o.quarantine


def _routes(recipients: Iterable[Resolved]) -> tuple[Route, ...]:
    return tuple(Route(r.address, r.next_hop, r.original, r.expanded_from) for r in recipients)


async def _recategorize(
    cat: Categorization,
    before: tuple[str, ...],
    after: tuple[str, ...],
    categorize: Callable[[Sequence[str]], Awaitable[Categorization]],
) -> Categorization:
    old = {a.lower() for a in before}
    new = {a.lower() for a in after}
    removed = old - new
    added = [a for a in after if a.lower() not in old]
    kept = [
        r
        for r in cat.recipients
        if r.address.lower() not in removed and r.original.lower() not in removed
    ]
    out = Categorization(kept, list(cat.resolved), list(cat.expanded), list(cat.failed))
    if added:
        more = await categorize(added)
        seen = {(r.next_hop, r.address.lower()) for r in kept}
        for r in more.recipients:
            if (r.next_hop, r.address.lower()) not in seen:
                seen.add((r.next_hop, r.address.lower()))
                out.recipients.append(r)
        out.resolved += more.resolved
        out.expanded += more.expanded
        out.failed += more.failed
    return out


# ---------------------------------------------------------------- quarantine


def quarantine_rows(rows: Sequence[QueuedRecipient], q: Quarantine) -> list[QueuedRecipient]:
    """The queue rows of a quarantined message: held in the Quarantine queue.

    SUSPENDED is never due and never rerouted, so nothing delivers them; the real
    next hop is kept in the row's params for `release_quarantined`.
    """
    out = []
    for r in rows:
        if r.status in (RecipientStatus.READY, RecipientStatus.UNREACHABLE):
            params = {**r.params, QUARANTINE_PARAM: r.next_hop}
            r = replace(
                r,
                status=RecipientStatus.SUSPENDED,
                next_hop=QUARANTINE_HOP,
                params=params,
                last_error=q.text(),
            )
        out.append(r)
    return out


def release_quarantined(r: QueuedRecipient, now: float) -> QueuedRecipient:
    """A quarantined row made deliverable again, to the next hop it had (queue viewer)."""
    params = dict(r.params)
    hop = str(params.pop(QUARANTINE_PARAM, "") or "")
    if r.next_hop != QUARANTINE_HOP or not hop:
        return r
    status = RecipientStatus.UNREACHABLE if hop == UNREACHABLE else RecipientStatus.READY
    return replace(r, status=status, next_hop=hop, params=params, last_error="", next_attempt=now)


# ---------------------------------------------------------------- message files


def format_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    return "".join(f"{n}: {v}\r\n" for n, v in headers).encode("ascii")


def _first_field_end(head: bytes) -> int | None:
    """Where the first header field ends if it is a Received field (ours), else 0;
    None when `head` is too short to tell."""
    if not head[:9].lower().startswith(b"received:"):
        return 0 if len(head) >= 9 or b"\r\n" in head else None
    pos = 0
    while True:
        nl = head.find(b"\r\n", pos)
        if nl < 0 or nl + 2 >= len(head):
            return None
        if head[nl + 2 : nl + 3] not in (b" ", b"\t"):
            return nl + 2
        pos = nl + 2


async def insert_headers(
    blobs: BlobStore, blob_id: str, headers: Sequence[tuple[str, str]], data: bytes | None
) -> tuple[str, int, bytes | None]:
    """Write the message again with `headers` after its first Received field.

    A blob is immutable once committed, so headers added at end of data or on
    submitted cost a copy (end of headers is free: the intake still holds the
    header block). Returns the new blob id, size and (when `data` was given) bytes;
    the old blob is deleted.
    """
    extra = format_headers(headers)
    writer = blobs.writer()
    new_data: bytes | None = None
    try:
        if data is not None:
            cut = _first_field_end(data) or 0
            new_data = data[:cut] + extra + data[cut:]
            await writer.write(new_data)
        else:
            head = b""
            placed = False
            async for chunk in blobs.stream(blob_id):
                if placed:
                    await writer.write(chunk)
                    continue
                head += chunk
                found = _first_field_end(head)
                if found is None and len(head) < 1024 * 1024:
                    continue
                cut = found or 0
                await writer.write(head[:cut] + extra + head[cut:])
                placed = True
            if not placed:
                cut = _first_field_end(head) or 0
                await writer.write(head[:cut] + extra + head[cut:])
        new_id = await writer.commit()
    except BaseException:
        await writer.abort()
        raise
    size = writer.size
    await blobs.delete(blob_id)
    return new_id, size, new_data


async def read_headers(blobs: BlobStore, blob_id: str, data: bytes | None) -> Headers:
    """The header fields of a queued message (for routing events of messages that did
    not come through the intake, which already knows them)."""
    if data is not None:
        return Headers.parse(data)
    head = b""
    async for chunk in blobs.stream(blob_id):
        head += chunk
        if b"\r\n\r\n" in head or len(head) > 1024 * 1024:
            break
    return Headers.parse(head)


# ---------------------------------------------------------------- loading


class AgentLoadError(ValueError):
    """An agent named in the settings cannot be loaded; the message says which and why."""


def load_agent(path: str, options: Mapping[str, Any] | None = None) -> TransportAgent:
    """Import `module:Class` and instantiate it with its options."""
    module_name, colon, class_name = path.partition(":")
    if not colon or not module_name or not class_name:
        raise AgentLoadError(f"agent {path!r}: expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AgentLoadError(f"agent {path!r}: cannot import {module_name}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, TransportAgent):
        raise AgentLoadError(f"agent {path!r}: not a TransportAgent subclass")
    try:
        return cls(options or {})
    except Exception as exc:
        raise AgentLoadError(f"agent {path!r}: bad options: {exc}") from exc


def load_agents(settings: AgentSettings) -> AgentRunner | None:
    """The runner for the configured agents, in priority order; None when there are none."""
    if not settings.enabled:
        return None
    classes = [p.rpartition(":")[2] for p in settings.enabled]
    unknown = sorted(set(settings.options) - set(classes))
    if unknown:
        raise AgentLoadError(f"agents.options.{unknown[0]}: no such agent in agents.enabled")
    agents = [
        load_agent(p, settings.options.get(c))
        for p, c in zip(settings.enabled, classes, strict=True)
    ]
    return AgentRunner(agents, settings.timeout)
