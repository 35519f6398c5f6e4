"""The POP3 state machine as a pure object, the replies it sends, and the
helpers that put a stored message on the wire.

Purpose: `Pop3Session` answers the TRANSACTION commands from a `Maildrop`
snapshot and tells the service, with typed outcomes, what only the service
can do: authenticate (`Delegated`), stream a message (`SendMessage`), apply
deletions at QUIT (`Commit`), close (`Close`). `DotStuffer` and `top_of`
turn a stored message into a multi-line response body.

Security and invariants:
- Which command is valid in which state is one table, `ALLOWED`; anything
  else is answered `WRONG_STATE` before any handler runs (RFC 1939 §3).
- Messages are numbered from 1 in maildrop order, fixed for the session
  (RFC 1939 §5). A number out of range or marked deleted is `NO_SUCH_MESSAGE`.
- Nothing is deleted before QUIT in TRANSACTION: DELE only marks, RSET
  unmarks, and a dropped connection deletes nothing (RFC 1939 §6).
- A multi-line body can never end early: every line beginning with "." is
  stuffed, a bare LF counts as a line end and is sent as CRLF (a lenient
  client that splits on LF must not see a fake ".<LF>" terminator), and the
  body always ends "<CRLF>.<CRLF>" (RFC 1939 §3).
- A `Reply` refuses CR, LF and NUL in its texts, so no caller can inject a
  response line.
- No asyncio, socket, ssl or database here. Client input never raises;
  a service that breaks the contract (bad maildrop, login twice) gets an
  exception.

Standards: RFC 1939 (POP3), RFC 2449 (CAPA, response codes), RFC 3206
(SYS and AUTH codes), RFC 2595 §4 (STLS), RFC 5034 (SASL), RFC 6856 (UTF8).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple, assert_never

from postwerk.protocols.pop3.commands import (
    Auth,
    Capa,
    Command,
    Dele,
    List,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
)
from postwerk.protocols.sasl.mechanisms import MECHANISMS, encode_challenge

# --- replies -------------------------------------------------------------------


class ResponseCode(enum.StrEnum):
    """Extended response codes, sent in brackets after +OK/-ERR (RFC 2449 §8)."""

    IN_USE = "IN-USE"  # RFC 2449 §8.1.1: the maildrop is locked by another session
    LOGIN_DELAY = "LOGIN-DELAY"  # RFC 2449 §8.1.2: logged in too recently
    SYS_TEMP = "SYS/TEMP"  # RFC 3206 §4: a temporary system failure
    SYS_PERM = "SYS/PERM"  # RFC 3206 §4: a permanent system failure
    AUTH = "AUTH"  # RFC 3206 §5: the credentials are the problem
    UTF8 = "UTF8"  # RFC 6856 §3: the mailbox needs UTF-8 mode


_UNSAFE = re.compile(r"[\x00\r\n]")
# RFC 2449 §4: the first line of a response is at most 512 octets with CRLF.
MAX_FIRST_LINE: Final = 512


@dataclass(frozen=True, slots=True)
class Reply:
    """One POP3 response: +OK/-ERR, optional [code], text, optional multi-line body.

    `lines` None is a single-line response; a tuple (possibly empty) is a
    multi-line response whose lines are dot-stuffed and followed by ".".
    """

    ok: bool
    text: str = ""
    code: ResponseCode | None = None
    lines: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # A line break in a text would let it forge a second response.
        if _UNSAFE.search(self.text) or any(_UNSAFE.search(line) for line in self.lines or ()):
            raise ValueError("CR, LF or NUL in a POP3 reply")

    def with_text(self, text: str) -> Reply:
        return Reply(self.ok, text, self.code, self.lines)

    def status_line(self) -> str:
        parts = ["+OK" if self.ok else "-ERR"]
        if self.code is not None:
            parts.append(f"[{self.code}]")
        if self.text:
            parts.append(self.text)
        return " ".join(parts)

    def to_bytes(self) -> bytes:
        out = [self.status_line()]
        if self.lines is not None:
            out.extend("." + line if line.startswith(".") else line for line in self.lines)
            out.append(".")  # RFC 1939 §3: the multi-line terminator
        return ("\r\n".join(out) + "\r\n").encode("utf-8")


OK: Final = Reply(True)
BYE: Final = Reply(True, "bye")
LOGGED_IN: Final = Reply(True, "logged in")
USER_ACCEPTED: Final = Reply(True, "send PASS")  # same text whether the user exists or not
BEGIN_TLS: Final = Reply(True, "begin TLS negotiation")  # RFC 2595 §4
UTF8_ENABLED: Final = Reply(True, "UTF8 enabled")  # RFC 6856 §2
NO_SUCH_MESSAGE: Final = Reply(False, "no such message")
WRONG_STATE: Final = Reply(False, "command not valid in this state")
PASS_WITHOUT_USER: Final = Reply(False, "send USER first")
AUTH_FAILED: Final = Reply(False, "authentication failed", ResponseCode.AUTH)
AUTH_CANCELLED: Final = Reply(False, "authentication cancelled")  # RFC 5034 §4: client sent "*"
UNKNOWN_MECHANISM: Final = Reply(False, "unrecognized authentication mechanism")
PLAINTEXT_DISALLOWED: Final = Reply(
    False, "plaintext authentication disallowed without TLS", ResponseCode.AUTH
)
TLS_ACTIVE: Final = Reply(False, "TLS already active")
MAILDROP_IN_USE: Final = Reply(False, "maildrop in use", ResponseCode.IN_USE)
LOGIN_DELAYED: Final = Reply(False, "logged in too recently", ResponseCode.LOGIN_DELAY)
TEMP_FAILURE: Final = Reply(False, "temporary failure, try again later", ResponseCode.SYS_TEMP)
PERM_FAILURE: Final = Reply(False, "permanent failure", ResponseCode.SYS_PERM)
# RFC 1939 §6: the UPDATE state could not remove every message marked as deleted.
UPDATE_FAILED: Final = Reply(False, "some deleted messages not removed", ResponseCode.SYS_TEMP)


def greeting(text: str = "POP3 service is ready") -> Reply:
    """The "+OK" banner (RFC 1939 §4). No APOP timestamp: APOP is not offered."""
    reply = Reply(True, text)
    if len(reply.to_bytes()) > MAX_FIRST_LINE:
        raise ValueError("greeting longer than 512 octets")
    return reply


def sasl_challenge(data: bytes) -> bytes:
    """A server challenge line: "+ " and base64 (RFC 5034 §4); then call `expect_line`."""
    return b"+ " + encode_challenge(data) + b"\r\n"


# RFC 4422 §3.1: a mechanism name is 1 to 20 of A-Z 0-9 - _.
_SASL_MECH = re.compile(r"[A-Z0-9_-]{1,20}")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


def offered_mechanisms(mechanisms: Sequence[str], *, plaintext_allowed: bool) -> tuple[str, ...]:
    """The mechanisms to advertise: names checked, plaintext ones only when allowed.

    A mechanism the SASL registry marks `plaintext` (PLAIN, LOGIN) reveals the
    password, so it is offered only where USER/PASS would be (RFC 5034 §6).
    """
    offered = []
    for name in mechanisms:
        upper = name.upper()
        if not _SASL_MECH.fullmatch(upper):
            raise ValueError(f"bad SASL mechanism name {name!r}")
        known = MECHANISMS.get(upper)
        if known is not None and known.plaintext and not plaintext_allowed:
            continue
        if upper not in offered:
            offered.append(upper)
    return tuple(offered)


def auth_list_reply(mechanisms: Sequence[str], *, plaintext_allowed: bool) -> Reply:
    """The answer to a bare "AUTH": one mechanism per line (what Outlook asks for)."""
    return Reply(True, lines=offered_mechanisms(mechanisms, plaintext_allowed=plaintext_allowed))


def capa_reply(
    *,
    plaintext_allowed: bool,
    tls_active: bool,
    starttls_available: bool = True,
    sasl_mechanisms: Sequence[str] = (),
    expire_days: int | None = None,
    login_delay: int | None = None,
    utf8: bool = False,
    implementation: str | None = None,
) -> Reply:
    """The CAPA response (RFC 2449 §5-§6).

    - `plaintext_allowed`: USER/PASS and plaintext SASL mechanisms may be used
      on this connection (the listener allows it, or TLS is active).
    - `tls_active` / `starttls_available`: STLS is listed only when the
      listener has a certificate and the connection is not yet TLS (RFC 2595 §4).
    - `expire_days` None is "EXPIRE NEVER" (RFC 2449 §6.7), Exchange's policy.
    - `login_delay` in seconds, listed only when set (RFC 2449 §6.5).
    - `utf8` lists "UTF8 USER": UTF-8 names and passwords in USER/PASS (RFC 6856 §2).
    - `implementation` is free text; leave it None to avoid advertising a version.
    """
    lines = ["TOP", "UIDL"]
    mechanisms = offered_mechanisms(sasl_mechanisms, plaintext_allowed=plaintext_allowed)
    if mechanisms:
        lines.append("SASL " + " ".join(mechanisms))
    if plaintext_allowed:
        lines.append("USER")
    if starttls_available and not tls_active:
        lines.append("STLS")
    lines += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
    if expire_days is not None and expire_days < 0:
        raise ValueError("expire_days must be >= 0")
    lines.append("EXPIRE NEVER" if expire_days is None else f"EXPIRE {expire_days}")
    if login_delay is not None:
        if login_delay < 0:
            raise ValueError("login_delay must be >= 0")
        lines.append(f"LOGIN-DELAY {login_delay}")
    if utf8:
        lines.append("UTF8 USER" if plaintext_allowed else "UTF8")
    if implementation is not None:
        if not _PRINTABLE.fullmatch(implementation):
            raise ValueError("implementation must be printable ASCII")
        lines.append(f"IMPLEMENTATION {implementation}")
    return Reply(True, "capability list follows", lines=tuple(lines))


# --- the maildrop and the state machine ------------------------------------------


class MaildropEntry(NamedTuple):
    """One message of the snapshot: its unique-id and its size in octets.

    `size` is what LIST and STAT report: the octets of the message with CRLF
    line endings, before dot-stuffing (RFC 1939 §5, §11).
    """

    uid: str
    size: int


Maildrop = Sequence[MaildropEntry | tuple[str, int]]

# RFC 1939 §7: a unique-id is 1 to 70 characters in 0x21-0x7E.
_UNIQUE_ID = re.compile(r"[\x21-\x7e]{1,70}")


class State(enum.Enum):
    AUTHORIZATION = enum.auto()
    TRANSACTION = enum.auto()
    UPDATE = enum.auto()


# RFC 1939 §4-§7, RFC 2449 §5 (CAPA in any state before UPDATE), RFC 2595 §4 and
# RFC 5034 §4 (STLS, AUTH before login), RFC 6856 §2 (UTF8 before login).
ALLOWED: Final[Mapping[State, frozenset[type[Command]]]] = MappingProxyType(
    {
        State.AUTHORIZATION: frozenset({User, Pass, Auth, Stls, Capa, Utf8, Quit}),
        State.TRANSACTION: frozenset({Stat, List, Retr, Dele, Noop, Rset, Top, Uidl, Capa, Quit}),
        State.UPDATE: frozenset(),
    }
)

ServiceCommand = User | Pass | Auth | Stls | Capa | Utf8


@dataclass(frozen=True, slots=True)
class Delegated:
    """The service's job: authentication, STLS, CAPA (it knows TLS and settings), UTF8.

    After a successful login the service calls `Pop3Session.begin_transaction`.
    """

    command: ServiceCommand


@dataclass(frozen=True, slots=True)
class SendMessage:
    """RETR (`lines` None) or TOP (`lines` body lines): stream message `number`.

    The service loads the blob for `uid`; if that fails before anything was
    sent it answers `TEMP_FAILURE`. Otherwise it sends `head()`, then the
    message through `DotStuffer` (for TOP, `top_of(message, lines)` first),
    whose `finish()` ends the response. A failure half-way through a body
    cannot be reported: close the connection.
    """

    number: int
    uid: str
    size: int
    lines: int | None = None

    def head(self) -> Reply:
        if self.lines is None:
            return Reply(True, f"{self.size} octets")
        return Reply(True, "top of message follows")


@dataclass(frozen=True, slots=True)
class Commit:
    """QUIT in TRANSACTION: the session is now in UPDATE (RFC 1939 §6).

    The service removes the messages with these uids (maybe none), then sends
    `BYE`, or `UPDATE_FAILED` if any could not be removed, and closes.
    """

    delete: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """QUIT in AUTHORIZATION: send `reply`, close, and change nothing (RFC 1939 §4)."""

    reply: Reply


Outcome = Reply | Delegated | SendMessage | Commit | Close


class Pop3Session:
    """One POP3 session's state. Feed it commands; it returns what to do next."""

    def __init__(self) -> None:
        self._state = State.AUTHORIZATION
        self._entries: tuple[MaildropEntry, ...] = ()
        self._deleted: set[int] = set()  # 0-based indexes marked by DELE
        self._count = 0  # messages not marked as deleted
        self._octets = 0  # and their total size, so STAT is O(1)

    @property
    def state(self) -> State:
        return self._state

    def allowed(self, command: Command) -> bool:
        return type(command) in ALLOWED[self._state]

    def begin_transaction(self, maildrop: Maildrop) -> Reply:
        """Enter TRANSACTION with this snapshot, after the service authenticated
        the user and locked the maildrop (RFC 1939 §4). Returns `LOGGED_IN`.

        Raises ValueError for a malformed snapshot (bad or duplicate uid,
        negative size) and RuntimeError outside AUTHORIZATION: both are bugs
        in the caller, not client input.
        """
        if self._state is not State.AUTHORIZATION:
            raise RuntimeError("begin_transaction outside AUTHORIZATION")
        entries = tuple(MaildropEntry(uid, size) for uid, size in maildrop)
        seen: set[str] = set()
        for entry in entries:
            if not _UNIQUE_ID.fullmatch(entry.uid):
                raise ValueError(f"unique-id not 1-70 chars of 0x21-0x7E: {entry.uid!r}")
            if entry.uid in seen:
                raise ValueError(f"duplicate unique-id {entry.uid!r}")  # RFC 1939 §7
            if entry.size < 0:
                raise ValueError("negative message size")
            seen.add(entry.uid)
        self._entries = entries
        self._deleted = set()
        self._count = len(entries)
        self._octets = sum(entry.size for entry in entries)
        self._state = State.TRANSACTION
        return LOGGED_IN

    def handle(self, command: Command) -> Outcome:
        """The outcome of one parsed command; `WRONG_STATE` if `ALLOWED` refuses it."""
        if not self.allowed(command):
            return WRONG_STATE
        match command:
            case User() | Pass() | Auth() | Stls() | Capa() | Utf8():
                return Delegated(command)
            case Quit():
                return self._quit()
            case Stat():
                return Reply(True, f"{self._count} {self._octets}")  # RFC 1939 §5 drop listing
            case List(msg):
                return self._list(msg)
            case Uidl(msg):
                return self._uidl(msg)
            case Retr(msg):
                return self._send(msg, None)
            case Top(msg, lines):
                return self._send(msg, lines)
            case Dele(msg):
                return self._dele(msg)
            case Rset():
                return self._rset()
            case Noop():
                return OK
            case _:
                assert_never(command)

    # --- handlers (TRANSACTION) --------------------------------------------------

    def _index(self, msg: int) -> int | None:
        """0-based index of message `msg` if it exists and is not marked deleted."""
        index = msg - 1
        if 0 <= index < len(self._entries) and index not in self._deleted:
            return index
        return None

    def _live(self) -> Iterator[tuple[int, MaildropEntry]]:
        for index, entry in enumerate(self._entries):
            if index not in self._deleted:
                yield index + 1, entry

    def _list(self, msg: int | None) -> Reply:
        if msg is None:
            return Reply(
                True,
                f"{self._count} messages ({self._octets} octets)",
                lines=tuple(f"{number} {entry.size}" for number, entry in self._live()),
            )
        index = self._index(msg)
        if index is None:
            return NO_SUCH_MESSAGE
        return Reply(True, f"{msg} {self._entries[index].size}")

    def _uidl(self, msg: int | None) -> Reply:
        if msg is None:
            return Reply(
                True, lines=tuple(f"{number} {entry.uid}" for number, entry in self._live())
            )
        index = self._index(msg)
        if index is None:
            return NO_SUCH_MESSAGE
        return Reply(True, f"{msg} {self._entries[index].uid}")

    def _send(self, msg: int, lines: int | None) -> Reply | SendMessage:
        index = self._index(msg)
        if index is None:
            return NO_SUCH_MESSAGE
        entry = self._entries[index]
        return SendMessage(msg, entry.uid, entry.size, lines)

    def _dele(self, msg: int) -> Reply:
        index = self._index(msg)
        if index is None:
            return NO_SUCH_MESSAGE
        self._deleted.add(index)
        self._count -= 1
        self._octets -= self._entries[index].size
        return Reply(True, f"message {msg} deleted")

    def _rset(self) -> Reply:
        self._deleted.clear()
        self._count = len(self._entries)
        self._octets = sum(entry.size for entry in self._entries)
        return Reply(True, f"maildrop has {self._count} messages ({self._octets} octets)")

    def _quit(self) -> Commit | Close:
        if self._state is State.AUTHORIZATION:
            return Close(BYE)
        self._state = State.UPDATE
        return Commit(tuple(self._entries[index].uid for index in sorted(self._deleted)))


# --- message bodies on the wire ----------------------------------------------------

_TERMINATOR: Final = b".\r\n"
_BARE_LF = re.compile(rb"(?<!\r)\n")
_BLANK_LINE = re.compile(rb"(?:\A|\n)\r?\n")


class DotStuffer:
    """Turn a message, fed in chunks split anywhere, into a multi-line body.

    `feed(chunk)` returns the bytes to send for that chunk; `finish()` returns
    the end: a CRLF if the message did not end with a line break, then ".CRLF".
    A line that begins with "." gets one more (RFC 1939 §3); a bare LF is sent
    as CRLF, so every client sees the same lines. A bare CR is left alone.
    The output for any chunking equals `dot_stuff(whole_message)`.
    """

    __slots__ = ("_at_line_start", "_finished", "_last_cr")

    def __init__(self) -> None:
        self._at_line_start = True  # the message begins a line
        self._last_cr = False  # the previous chunk ended in CR (a CRLF may be split)
        self._finished = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk or self._finished:
            return b""
        out = chunk
        if b"\n" in out:
            # The regex only when there is a bare LF: stored mail is CRLF, and
            # count() runs at C speed where sub() does not.
            if out.count(b"\n") != out.count(b"\r\n"):
                out = _BARE_LF.sub(b"\r\n", out)
                if self._last_cr and chunk[0] == 0x0A:
                    out = out[1:]  # this LF completes the CR that ended the last chunk
            out = out.replace(b"\n.", b"\n..")
        if self._at_line_start and out[0] == 0x2E:  # "."
            out = b"." + out
        self._at_line_start = chunk[-1] == 0x0A
        self._last_cr = chunk[-1] == 0x0D
        return out

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        if self._at_line_start:  # empty message, or it ended with a line break
            return _TERMINATOR
        if self._last_cr:
            return b"\n" + _TERMINATOR
        return b"\r\n" + _TERMINATOR


def dot_stuff_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Stream `chunks` as a multi-line body, terminator included."""
    stuffer = DotStuffer()
    for chunk in chunks:
        out = stuffer.feed(chunk)
        if out:
            yield out
    yield stuffer.finish()


def dot_stuff(message: bytes) -> bytes:
    """The whole multi-line body for `message` in one call."""
    stuffer = DotStuffer()
    return stuffer.feed(message) + stuffer.finish()


def top_of(message: bytes, lines: int) -> bytes:
    """The headers, the blank line after them, and the first `lines` body lines (RFC 1939 §7).

    A message without a blank line is all header and is returned whole. Line
    breaks may be CRLF or bare LF; the result is raw, for `DotStuffer`.
    """
    blank = _BLANK_LINE.search(message)  # the header ends at the first empty line
    if blank is None:
        return message
    pos = blank.end()
    # Counting is C speed: a huge `lines` on a huge message costs no Python loop.
    if lines > message.count(b"\n", pos):
        return message
    for _ in range(lines):
        pos = message.index(b"\n", pos) + 1  # present: fewer than `lines` were counted
    return message[:pos]
