"""Hypothesis fuzzing of the SMTP parser and framer: no input may raise."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwerk.core.replies import Reply
from postwerk.protocols.smtp import (
    BodyData,
    BodyEnd,
    BodyRejected,
    CommandReceived,
    ConnectionClosed,
    Data,
    NeedData,
    ServerConnection,
    parse_command,
)
from postwerk.protocols.smtp.commands import Command

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that steer the framer into its interesting states.
TOKENS = [
    b"\r",
    b"\n",
    b".",
    b"\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"..",
    b" ",
    b"\x00",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 5 LAST\r\n",
    b"AUTH PLAIN ",
    b"MAIL FROM:<a@b.example> SMTPUTF8 SIZE=10\r\n",
    b'RCPT TO:<"q"@b.example>\r\n',
    b"STARTTLS\r\n",
    b"EHLO x\r\n",
    b"QUIT\r\n",
    b"\xff",
    "ü".encode(),
    b"x" * 700,
]
chunks = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=64)), max_size=30).map(
    b"".join
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("data"), chunks),
        st.tuples(st.just("start_data"), st.just(b"")),
        st.tuples(st.just("expect_line"), st.just(b"")),
        st.tuples(st.just("discard"), st.just(b"")),
        st.tuples(st.just("utf8"), st.just(b"")),
        st.tuples(st.just("eof"), st.just(b"")),
    ),
    max_size=25,
)


def drain(conn: ServerConnection, auto_data: bool) -> None:
    # The framer must make progress: a bounded number of events empties any buffer.
    for _ in range(100_000):
        event = conn.next_event()
        if isinstance(event, (NeedData, ConnectionClosed)):
            return
        if auto_data and isinstance(event, CommandReceived) and isinstance(event.command, Data):
            conn.start_data()
    raise AssertionError("framer did not reach NeedData")


@FUZZ
@given(operations, st.booleans(), st.integers(min_value=0, max_value=600))
def test_framer_never_raises(ops: list[tuple[str, bytes]], auto_data: bool, max_line: int) -> None:
    conn = ServerConnection(max_command_line=max_line)
    for name, payload in ops:
        if name == "data":
            conn.receive_data(payload)
        elif name == "start_data":
            conn.start_data()
        elif name == "expect_line":
            conn.expect_line()
        elif name == "discard":
            assert conn.discard_buffered() >= 0
            assert conn.buffered == 0
        elif name == "utf8":
            conn.smtputf8 = not conn.smtputf8
        else:
            conn.receive_eof()
        drain(conn, auto_data)
    conn.receive_eof()
    drain(conn, auto_data)
    assert conn.next_event() == ConnectionClosed()


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_parse_command_never_raises_on_bytes(line: bytes, smtputf8: bool) -> None:
    result = parse_command(line, smtputf8)
    assert isinstance(result, Reply | Command)


VERBS = ["HELO ", "EHLO ", "MAIL FROM:", "RCPT TO:", "BDAT ", "AUTH ", "VRFY ", "NOOP"]
PARTS = [
    "<",
    ">",
    "@",
    '"',
    "\\",
    ",",
    ":",
    "=",
    ";",
    "+",
    " ",
    "\t",
    "[",
    "]",
    ".",
    "SIZE",
    "BODY",
    "SMTPUTF8",
    "RET",
    "ENVID",
    "AUTH",
    "NOTIFY",
    "ORCPT",
    "LAST",
    "rfc822",
    "a",
    "ü",
    "0",
    "9" * 25,
    "+2B",
    "+zz",
]


@FUZZ
@given(st.sampled_from(VERBS), st.lists(st.sampled_from(PARTS) | st.text(max_size=5)))
def test_parse_command_never_raises_on_command_like_text(verb: str, parts: list[str]) -> None:
    result = parse_command((verb + "".join(parts)).encode("utf-8", "surrogatepass"))
    assert result is not None


# A body made of CRLF-terminated lines, any of which may start with dots.
lines = st.lists(
    st.one_of(
        st.sampled_from(["", ".", "..", ". x", ".\t", "...x", "From x"]),
        st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=20),
    ),
    max_size=20,
)


@FUZZ
@given(lines, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_data_round_trips_at_any_split(body_lines: list[str], cuts: list[int]) -> None:
    message = b"".join(line.encode("utf-8", "surrogatepass") + b"\r\n" for line in body_lines)
    stuffed = b"".join(
        (b"." + line if line.startswith(b".") else line) for line in message.splitlines(True)
    )
    wire = b"DATA\r\n" + stuffed + b".\r\nQUIT\r\n"
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    conn = ServerConnection()
    got = b""
    kinds: list[str] = []
    for start, stop in itertools.pairwise(points):
        conn.receive_data(wire[start:stop])
        while not isinstance(event := conn.next_event(), NeedData):
            if isinstance(event, CommandReceived) and isinstance(event.command, Data):
                conn.start_data()
            if isinstance(event, BodyData):
                got += event.data
            kinds.append(type(event).__name__)
    assert got == message
    assert "BodyRejected" not in kinds
    assert kinds[-2:] == ["BodyEnd", "CommandReceived"]


def reference_body(stream: bytes) -> tuple[bytes | None, bool]:
    """Slow, obvious model of the DATA decoder: (message or None if rejected, ended)."""
    virtual = b"\r\n" + stream  # the body starts right after the DATA line's CRLF
    end = virtual.find(b"\r\n.\r\n")
    if end < 0:
        return None, False
    raw = virtual[2 : end + 2]
    lines = raw.split(b"\r\n")[:-1]
    if any(b"\r" in line or b"\n" in line for line in lines):
        return None, True
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines), True


body_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"x", b"\x00"]),
        st.binary(max_size=8),
    ),
    max_size=40,
).map(b"".join)


@FUZZ
@given(body_bytes, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_data_decoder_matches_reference_model(body: bytes, cuts: list[int]) -> None:
    wire = b"DATA\r\n" + body
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    conn = ServerConnection()
    got = b""
    ends: list[object] = []
    for start, stop in itertools.pairwise(points):
        conn.receive_data(wire[start:stop])
        while not isinstance(event := conn.next_event(), NeedData):
            if isinstance(event, CommandReceived) and isinstance(event.command, Data):
                conn.start_data()
            elif isinstance(event, BodyData):
                assert not ends
                got += event.data
            elif isinstance(event, (BodyEnd, BodyRejected)):
                ends.append(event)
                break  # the rest is commands; not this test's business
        if ends:
            break
    message, ended = reference_body(body)
    assert len(ends) == int(ended)
    if ended:
        assert isinstance(ends[0], BodyEnd) == (message is not None)
        if message is not None:
            assert got == message
    else:
        # Unfinished: everything streamed so far is a prefix of the eventual message,
        # unless the body is already known to be bad.
        clean, _ = reference_body(body + b"\r\n.\r\n")
        if clean is not None:
            assert clean.startswith(got)
