"""Fuzzing the live POP3 service over real sockets: random command lines built
from POP3's command names (and unknown ones) with hostile arguments (0,
negative, 2^32, non-digits, over-long tokens, non-UTF-8 bytes), in the
AUTHORIZATION state (POP3S and the plaintext STLS port) and in TRANSACTION
(POP3S, logged in to alice's three-message maildrop), plus over-long lines and
raw garbage.

Whatever comes in: every line gets exactly one well-formed reply, "+OK" or
"-ERR" (a multi-line "+OK" read to its "."), or, past the bad-command limit,
one "-ERR" and a hang-up; no command gets "+OK" it should not; RETR, TOP,
LIST, UIDL and STAT agree with the store and with the DELE/RSET marks; no
exception reaches the server's log; and the server keeps serving: the session
still answers afterwards, nothing is deleted without QUIT, and a fresh
connection logs in.
"""

from __future__ import annotations

import base64
import logging
import re
import select
import socket
import ssl
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from postwerk.directory.passwords import LoginThrottle
from postwerk.protocols.pop3 import COMMAND_LINE_LIMIT, top_of
from tests.conftest import DOMAIN, PASSWORD
from tests.integration.test_pop3_service import (  # noqa: F401 (fixture)
    ALICE,
    PopServer,
    plain_ir,
    pop,
    stored,
)

# A session costs a few milliseconds over loopback TLS: 200 examples take 5-10 s.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Left out: QUIT (ends the session; UPDATE is checked explicitly below) and
# AUTH PLAIN/LOGIN without an initial response (they wait for a SASL line;
# LOGIN with a user name as initial response still asks for the password, and
# the client cancels that with "*").
# STLS is only sent over implicit TLS, where it must be refused; on the
# plaintext port it would switch the byte stream to TLS.
# LAST/RPOP/XTND are real but unsupported POP3 verbs; the rest are malformed.
COMMANDS = [
    "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "UTF8", "TOP", "RETR", "LIST", "UIDL",
    "STAT", "DELE", "NOOP", "RSET", "LAST", "RPOP", "XTND", "QUI", "STATS", "UTF-8", "",
]  # fmt: skip
# Each state's own commands come up as often again as all of COMMANDS together.
BEFORE_LOGIN = ["USER", "PASS", "AUTH", "CAPA"]
AFTER_LOGIN = ["TOP", "RETR", "LIST", "UIDL", "STAT", "DELE", "NOOP", "RSET"]
MSG_ARGS = {"TOP": 2, "RETR": 1, "DELE": 1, "LIST": 1, "UIDL": 1}
NUMBERS = [
    "0", "-1", "+1", "01", "1.0", "0x1", "1e3", "2147483647", "2147483648", "2147483649",
    "4294967296", "18446744073709551617", "9" * 40, "9" * 41, "\u0661", "\uff11",
]  # fmt: skip
WORDS = [
    ALICE, f"AL@{DOMAIN.upper()}", f"nobody@{DOMAIN}", "PLAIN", "LOGIN", "CRAM-MD5",
    "XOAUTH2", "=", "*", "AAAA", "A===", "wrong password", "x" * 41, "u" * 300,
    "\u00fc", "\u00a0", "\u2028", "[IN-USE]", ".", "..", "+OK", "-ERR",
]  # fmt: skip
SASL_IR = [
    "=", "*", "AAAA", "AA==", "A", "====", "!!!!", plain_ir(ALICE, "wrong"),
    plain_ir("", "wrong"), base64.b64encode(f"bob@{DOMAIN}\0{ALICE}\0x".encode()).decode(),
    base64.b64encode(ALICE.encode()).decode(),  # LOGIN then asks for the password
]  # fmt: skip
LOGIN_IR = base64.b64encode(ALICE.encode())

number = st.one_of(
    st.sampled_from(["1", "2", "3", "4"]),
    st.sampled_from(NUMBERS),
    st.integers(min_value=-10, max_value=2**40).map(str),
).map(str.encode)
# Garbage never holds LF: that would end the line (the framer's own tests cover it).
garbage = st.binary(min_size=1, max_size=8).map(lambda b: b.replace(b"\n", b" "))
token = st.one_of(
    number,
    st.sampled_from(WORDS).map(str.encode),
    st.text(alphabet="abcXYZ019*=+/.@-[]", min_size=1, max_size=12).map(str.encode),
    garbage,
)
initial_response = st.one_of(
    st.sampled_from(SASL_IR).map(str.encode), st.binary(max_size=40).map(base64.b64encode)
)


@st.composite
def auth_args(draw: st.DrawFn) -> list[bytes]:
    if draw(st.booleans()):
        return []  # bare AUTH: the multi-line list of mechanisms
    mechanism = draw(st.one_of(st.sampled_from(["PLAIN", "LOGIN", "plain"]).map(str.encode), token))
    # PLAIN and LOGIN always get an initial response: without one they wait for it.
    if mechanism.upper() in (b"PLAIN", b"LOGIN") or draw(st.booleans()):
        return [mechanism, draw(initial_response)]
    return [mechanism]


@st.composite
def command_line(draw: st.DrawFn, focus: list[str]) -> bytes:
    name = draw(st.one_of(st.sampled_from(focus), st.sampled_from(COMMANDS)))
    upper = name.upper()
    if upper == "AUTH":
        args = draw(auth_args())
    elif upper in MSG_ARGS and draw(st.booleans()):
        # Well-formed often enough to reach the maildrop; 1 to 3 exist.
        msg = st.one_of(st.sampled_from([b"1", b"2", b"3"]), number)
        args = [draw(msg), *(draw(number) for _ in range(MSG_ARGS[upper] - 1))]
    else:
        args = draw(st.lists(token, max_size=4))
    case = draw(st.sampled_from([str.upper, str.lower, str.capitalize]))
    sep = draw(st.sampled_from([b" ", b"  "]))
    line = sep.join([case(name).encode(), *args])
    if draw(st.booleans()):
        line += b" "  # trailing space: tolerated everywhere but inside PASS
    return line


# ---------------------------------------------------------------- the client


STATUS = re.compile(rb"(\+OK|-ERR)( [^\r\n]*)?\r\n")
TOO_MANY_BAD = b"-ERR too many bad commands, closing connection\r\n"
INTERNAL_ERROR = b"[SYS/TEMP] internal error"
# Multi-line when "+OK" (RFC 1939 §5, §7; RFC 2449 §5; RFC 5034 §4 bare AUTH).
MULTI_ALWAYS = {b"CAPA", b"RETR", b"TOP"}
MULTI_BARE = {b"LIST", b"UIDL", b"AUTH"}
MAX_MSG = 2**31


def words(line: bytes) -> list[bytes]:
    """The keyword (upper-cased; what precedes the first SPACE, maybe b"") and the
    arguments, runs of SPACE separating them (RFC 1939 §3)."""
    keyword, _, rest = line.partition(b" ")
    return [keyword.upper(), *(part for part in rest.split(b" ") if part)]


def is_multiline(line: bytes) -> bool:
    parts = words(line)
    return parts[0] in MULTI_ALWAYS or (parts[0] in MULTI_BARE and len(parts) == 1)


def content_length(line: bytes, ending: bytes) -> int:
    """Octets the framer counts before the line end: a CR right before LF is the CRLF."""
    return len((line + ending).removesuffix(b"\n").removesuffix(b"\r"))


@dataclass
class Answer:
    status: bytes  # the status line with its CRLF; b"" when the server hung up
    body: list[bytes] | None = None  # a multi-line body, un-stuffed, without CRLFs

    @property
    def ok(self) -> bool:
        return self.status.startswith(b"+OK")


class Client:
    """A POP3 client with its own buffer, so it can tell one reply from two."""

    def __init__(self, served: Served, *, tls: bool = True) -> None:
        port = served.pop.ssl_port if tls else served.pop.plain_port
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock: socket.socket = raw
        if tls:
            self.sock = served.context.wrap_socket(raw, server_hostname="localhost")
        self.buf = bytearray()
        self.closed = False
        assert self.line().startswith(b"+OK ")

    def line(self) -> bytes:
        """One line with its ending; b"" at EOF (a partial line comes back as is)."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                out = bytes(self.buf[: nl + 1])
                del self.buf[: nl + 1]
                return out
            data = self.sock.recv(65536)  # socket timeout: a hang fails the test
            if not data:
                out = bytes(self.buf)
                self.buf.clear()
                return out
            self.buf += data

    def command(self, line: bytes) -> Answer:
        self.sock.sendall(line + b"\r\n")
        status = self.line()
        challenged = False
        while status.startswith(b"+ "):
            # A SASL challenge: AUTH LOGIN with a user name as initial response asks
            # for the password. "*" cancels (RFC 5034 §4).
            assert words(line)[0] == b"AUTH", (line, status)
            challenged = True
            self.sock.sendall(b"*\r\n")
            status = self.line()
        if not status:
            self.closed = True
            return Answer(b"")
        assert STATUS.fullmatch(status), (line, status)
        assert INTERNAL_ERROR not in status, (line, status)
        if challenged:
            assert status == b"-ERR authentication cancelled\r\n", (line, status)
        if status == TOO_MANY_BAD:
            assert self.line() == b"", line  # and then the server hangs up
            self.closed = True
        if not (status.startswith(b"+OK") and is_multiline(line)):
            return Answer(status)
        body = []
        while (got := self.line()) != b".\r\n":
            assert got.endswith(b"\r\n"), (line, got)  # EOF inside a body fails here
            body.append(got[1:-2] if got.startswith(b".") else got[:-2])  # RFC 1939 §3
        return Answer(status, body)

    def quiet(self) -> bool:
        """Nothing more was sent: no stray line after the last reply."""
        if self.buf:
            return False
        pending = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
        return pending == 0 and not select.select([self.sock], [], [], 0)[0]

    def close(self) -> None:
        self.sock.close()


def login(served: Served, how: str = "user") -> Client:
    """A POP3S session in TRANSACTION as alice; waits out an earlier session's lock."""
    deadline = time.monotonic() + 10
    while True:
        client = Client(served)
        if how == "user":
            assert client.command(f"USER {ALICE}".encode()).ok
            answer = client.command(f"PASS {PASSWORD}".encode())
        else:
            answer = client.command(f"AUTH PLAIN {plain_ir(ALICE, PASSWORD)}".encode())
        if answer.ok:
            return client
        client.close()
        assert b"[IN-USE]" in answer.status and time.monotonic() < deadline, answer


# ---------------------------------------------------------------- the server side


class LogRecorder:
    """A structlog processor that keeps the service's log events for inspection."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> Any:
        self.events.append((method, dict(event)))
        raise structlog.DropEvent

    def failures(self) -> list[dict[str, Any]]:
        """Errors and anything logged with a traceback."""
        return [
            event
            for method, event in self.events
            if method in ("error", "critical") or "exception" in event
        ]


@dataclass
class Served:
    pop: PopServer
    log: LogRecorder
    messages: list[bytes]  # alice's Inbox as stored: message n is messages[n - 1]
    # One client context for all connections: building one loads the system's
    # CA store, which costs more than the TLS handshake itself.
    context: ssl.SSLContext

    def begin(self) -> None:
        """Start an example: its own log, so a failure is pinned on the example that
        caused it (and shrinks), and its own login throttle."""
        self.log.events.clear()
        # Examples share one server, so failed logins would add up to the
        # per-address lockout (30 in 10 minutes) and the correct logins that
        # check the server would be refused. A fresh throttle per example keeps
        # the real tarpit and counting in play (at most ~12 failures each).
        self.pop.ctx.throttle = LoginThrottle(time.monotonic)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    server: PopServer = request.getfixturevalue("pop")
    recorder = LogRecorder()
    # The service logs through ctx.log (bound per connection): record what it says,
    # format_exc_info turning any exc_info into an "exception" text.
    server.ctx.log = structlog.wrap_logger(
        None,
        processors=[structlog.processors.format_exc_info, recorder],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    yield Served(server, recorder, stored(server.org), server.org.client_context())


def assert_still_serving(served: Served) -> None:
    """Nothing was logged with a traceback, a fresh login works, and nothing was
    deleted: all three messages are there."""
    assert not served.log.failures(), served.log.failures()
    client = login(served)
    assert served.log.events, "the service's log is not being recorded"
    try:
        n = len(served.messages)
        assert client.command(b"STAT").status == b"+OK %d %d\r\n" % (
            n,
            sum(len(m) for m in served.messages),
        )
        assert client.command(b"QUIT").status == b"+OK bye\r\n"
    finally:
        client.close()


# ---------------------------------------------------------------- AUTHORIZATION


@FUZZ
@given(lines=st.lists(command_line(BEFORE_LOGIN), min_size=1, max_size=12), tls=st.booleans())
# Always run: every AUTHORIZATION path, and the bad-command limit.
@example(
    lines=[
        b"AUTH", b"AUTH LOGIN " + LOGIN_IR, b"AUTH PLAIN " + plain_ir(ALICE, "x").encode(),
        b"AUTH LOGIN =", b"AUTH XOAUTH2", b"STLS", b"USER " + ALICE.encode(), b"USER x",
        b"PASS wrong", b"PASS again", b"APOP a b", b"STAT",
    ],
    tls=True,
)  # fmt: skip
@example(lines=[b"AUTH PLAIN =", b"USER x", b"PASS y", *[b"LAST"] * 11], tls=False)
def test_random_commands_before_login(served: Served, lines: list[bytes], tls: bool) -> None:
    served.begin()
    # No correct password is ever generated, so nothing but these may succeed:
    # USER where plaintext login is allowed (TLS), bare AUTH listing mechanisms.
    may_succeed = {b"CAPA", b"AUTH"} | ({b"USER"} if tls else set())
    mechanisms = [b"PLAIN", b"LOGIN"] if tls else []  # RFC 5034 §6: not in the clear
    client = Client(served, tls=tls)
    try:
        for line in lines:
            if not tls and words(line) == [b"STLS"]:
                continue  # would start a TLS handshake on the plaintext port
            answer = client.command(line)
            if answer.ok:
                assert words(line)[0] in may_succeed, (line, answer)
                if words(line)[0] == b"AUTH":
                    assert answer.body == mechanisms, (line, answer)
            if client.closed:
                break  # too many bad commands; the server stays up (below)
        if not client.closed:
            capa = client.command(b"CAPA")
            assert capa.ok and capa.body is not None and b"TOP" in capa.body, capa
            assert (b"USER" in capa.body) == tls and (b"STLS" in capa.body) != tls, capa
            assert client.quiet()
    finally:
        client.close()
    assert_still_serving(served)


# ---------------------------------------------------------------- TRANSACTION


@dataclass
class Maildrop:
    """What the session should show: the stored messages, minus those DELE marked."""

    messages: list[bytes]
    uids: list[bytes]
    deleted: set[int] = field(default_factory=set)

    def live(self, n: int) -> bool:
        return 1 <= n <= len(self.messages) and n not in self.deleted

    def numbers(self) -> list[int]:
        return [n for n in range(1, len(self.messages) + 1) if n not in self.deleted]

    def stat(self) -> bytes:
        live = self.numbers()
        return b"+OK %d %d\r\n" % (len(live), sum(len(self.messages[n - 1]) for n in live))


def decimal(arg: bytes, minimum: int) -> int | None:
    """RFC 1939's number: digits only, at most 40 of them, `minimum` to 2^31."""
    if not (arg.isdigit() and len(arg) <= 40):
        return None
    value = int(arg)
    return value if minimum <= value <= MAX_MSG else None


def expected_ok(line: bytes, drop: Maildrop) -> bool | None:
    """Whether a line must get +OK (True), must get -ERR (False), or either (None)."""
    parts = words(line)
    if len(line) > COMMAND_LINE_LIMIT - 2:
        return None
    keyword, args = parts[0], parts[1:]
    if keyword in (b"USER", b"PASS", b"AUTH", b"APOP", b"STLS", b"UTF8"):
        return False  # not in TRANSACTION
    if keyword in (b"STAT", b"NOOP", b"RSET", b"CAPA", b"LIST", b"UIDL") and not args:
        return True
    if keyword in (b"RETR", b"DELE", b"LIST", b"UIDL") and len(args) == 1:
        msg = decimal(args[0], 1)
        return msg is not None and drop.live(msg)
    if keyword == b"TOP" and len(args) == 2:
        msg, count = decimal(args[0], 1), decimal(args[1], 0)
        return msg is not None and count is not None and drop.live(msg)
    return None


def check_transaction(line: bytes, answer: Answer, drop: Maildrop) -> None:
    """Hold `answer` against the maildrop model; apply DELE and RSET to it."""
    want = expected_ok(line, drop)
    if answer.status == TOO_MANY_BAD:
        assert want is not True, (line, answer)  # only a bad command counts
        return
    assert want is None or answer.ok == want, (line, answer)
    if not answer.ok:
        return
    keyword, args = words(line)[0], words(line)[1:]
    msg = int(args[0]) if args else 0
    if keyword == b"STAT":
        assert answer.status == drop.stat()
    elif keyword == b"RETR":
        message = drop.messages[msg - 1]
        assert answer.status == b"+OK %d octets\r\n" % len(message)
        assert answer.body is not None and b"".join(x + b"\r\n" for x in answer.body) == message
    elif keyword == b"TOP":
        cut = top_of(drop.messages[msg - 1], int(args[1]))
        assert answer.body is not None and b"".join(x + b"\r\n" for x in answer.body) == cut
    elif keyword == b"LIST":
        sizes = [b"%d %d" % (n, len(drop.messages[n - 1])) for n in drop.numbers()]
        got = answer.body if not args else [answer.status[4:-2]]
        assert got == (sizes if not args else [b"%d %d" % (msg, len(drop.messages[msg - 1]))])
    elif keyword == b"UIDL":
        uids = [b"%d %s" % (n, drop.uids[n - 1]) for n in drop.numbers()]
        got = answer.body if not args else [answer.status[4:-2]]
        assert got == (uids if not args else [b"%d %s" % (msg, drop.uids[msg - 1])])
    elif keyword == b"DELE":
        drop.deleted.add(msg)
    elif keyword == b"RSET":
        drop.deleted.clear()
    else:
        assert keyword in (b"NOOP", b"CAPA"), (line, answer)


@FUZZ
@given(
    lines=st.lists(command_line(AFTER_LOGIN), min_size=1, max_size=12),
    how=st.sampled_from(["user", "plain"]),
)
# Always run: marks seen by every command, RSET, and marks dropped on hang-up.
@example(
    lines=[
        b"DELE 1", b"RETR 1", b"TOP 1 0", b"LIST 1", b"UIDL 1", b"DELE 1", b"LIST", b"UIDL",
        b"STAT", b"RSET", b"RETR 1", b"TOP 2 2147483648", b"LIST 4", b"DELE 0", b"USER x",
    ],
    how="user",
)  # fmt: skip
@example(lines=[b"DELE 2", b"DELE 3", b"NOOP", *[b"LAST"] * 11], how="plain")
def test_random_commands_after_login(served: Served, lines: list[bytes], how: str) -> None:
    served.begin()
    client = login(served, how)
    try:
        uidl = client.command(b"UIDL")
        assert uidl.body is not None
        drop = Maildrop(served.messages, [entry.split(b" ")[1] for entry in uidl.body])
        assert client.command(b"STAT").status == drop.stat()  # earlier examples deleted nothing
        for line in lines:
            answer = client.command(line)
            assert answer.status, line  # the only hang-up is after TOO_MANY_BAD
            check_transaction(line, answer, drop)
            if client.closed:
                break  # no QUIT: the marks must be dropped (assert_still_serving)
        if not client.closed:
            assert client.command(b"STAT").status == drop.stat()
            # The maildrop stays locked to this session (RFC 1939 §8).
            second = Client(served)
            try:
                assert second.command(f"USER {ALICE}".encode()).ok
                refused = second.command(f"PASS {PASSWORD}".encode())
                assert refused.status.startswith(b"-ERR [IN-USE]"), refused
            finally:
                second.close()
            # RSET before QUIT: examples stay independent and UPDATE deletes nothing.
            assert client.command(b"RSET").ok
            assert client.quiet()
            assert client.command(b"QUIT").status == b"+OK bye\r\n"
            assert client.line() == b""
    finally:
        client.close()
    assert_still_serving(served)


# ---------------------------------------------------------------- over-long lines, garbage

# A line may carry COMMAND_LINE_LIMIT - 2 octets before its CRLF (RFC 2449 §4 asks
# for 255); anything longer is refused as "line too long" and dropped up to its LF.
long_line = st.builds(
    lambda body, size: (body * (size // len(body) + 1))[:size],
    st.binary(min_size=1, max_size=16).map(lambda b: b.replace(b"\n", b"x")),
    st.integers(min_value=COMMAND_LINE_LIMIT - 1, max_value=20_000),
)
# Garbage that can never be a command: a control character (refused anywhere) or
# an octet never valid in UTF-8, somewhere in a line within the length limit.
bad_line = st.builds(
    lambda head, bad, tail: head + bad + tail,
    garbage,
    st.sampled_from([b"\x00", b"\xff", b"\xc0", b"\x1b", b"\x7f", b"\r"]),
    garbage,
)


@settings(FUZZ, max_examples=100)
@given(
    lines=st.lists(st.one_of(long_line, bad_line), min_size=1, max_size=8),
    ending=st.sampled_from([b"\r\n", b"\n"]),
    logged_in=st.booleans(),
)
def test_over_long_lines_and_garbage(
    served: Served, lines: list[bytes], ending: bytes, logged_in: bool
) -> None:
    served.begin()
    client = login(served) if logged_in else Client(served)
    try:
        for line in lines:
            client.sock.sendall(line + ending)
            status = client.line()
            if content_length(line, ending) > COMMAND_LINE_LIMIT - 2:
                assert status == b"-ERR line too long\r\n", (line[:40], len(line), status)
            else:
                assert status.startswith(b"-ERR ") and STATUS.fullmatch(status), (line, status)
        # Eight bad lines stay under the limit of ten: the session goes on.
        capa = client.command(b"CAPA")
        assert capa.ok and capa.body is not None and b"TOP" in capa.body, capa
        if logged_in:
            assert client.command(b"STAT").ok
            assert client.command(b"QUIT").status == b"+OK bye\r\n"
    finally:
        client.close()
    assert_still_serving(served)


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_limit_boundary_and_pipelined_flood(served: Served, ending: bytes) -> None:
    client = login(served)
    try:
        longest = b"NOOP".ljust(COMMAND_LINE_LIMIT - 2)  # trailing spaces are tolerated
        client.sock.sendall(longest + ending)
        assert client.line() == b"+OK\r\n"
        client.sock.sendall(longest + b" " + ending)
        assert client.line() == b"-ERR line too long\r\n"
        # A megabyte without a line end, then a command in the same write: one
        # refusal, the flood dropped (not buffered), then the command's answer.
        client.sock.sendall(b"\xff\x00" * (1 << 19) + ending + b"STAT" + ending)
        assert client.line() == b"-ERR line too long\r\n"
        assert client.line() == b"+OK 3 %d\r\n" % sum(len(m) for m in served.messages)
        assert client.command(b"QUIT").status == b"+OK bye\r\n"
    finally:
        client.close()
    assert_still_serving(served)
