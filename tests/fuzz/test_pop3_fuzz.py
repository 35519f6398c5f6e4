"""Hypothesis fuzzing of the POP3 parser, framer, session and dot-stuffer.

No input may raise, the framer's memory stays bounded, and the streaming
stuffer equals a one-shot reference however the message is chunked.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwerk.protocols.pop3 import (
    Command,
    CommandReceived,
    CommandRejected,
    DotStuffer,
    LineReceived,
    NeedData,
    Pop3Framer,
    Pop3Session,
    Rejected,
    Reply,
    SendMessage,
    dot_stuff,
    parse_command,
    top_of,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b".",
    b" ",
    b"\x00",
    b"\xff",
    "ü".encode(),
    b"USER alice\r\n",
    b"PASS a b \r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    b"STLS\r\n",
    b"LIST\r\n",
    b"RETR 1\r\n",
    b"TOP 1 2147483648\r\n",
    b"DELE 2\r\n",
    b"QUIT\r\n",
    b"APOP a b\r\n",
    b"x" * 700,
]
chunks = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=64)), max_size=30).map(
    b"".join
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("data"), chunks),
        st.tuples(st.just("expect_line"), st.just(b"")),
        st.tuples(st.just("discard"), st.just(b"")),
    ),
    max_size=25,
)


@FUZZ
@given(operations, st.integers(min_value=-1, max_value=600), st.integers(0, 2000))
def test_framer_never_raises_and_stays_bounded(
    ops: list[tuple[str, bytes]], max_line: int, max_auth_line: int
) -> None:
    framer = Pop3Framer(max_line, max_auth_line=max_auth_line)
    bound = max(max_line, max_auth_line, 3)
    for name, payload in ops:
        if name == "data":
            framer.receive_data(payload)
        elif name == "expect_line":
            framer.expect_line()
        else:
            assert framer.discard_buffered() >= 0
            assert framer.buffered == 0
        # A bounded number of events empties any buffer, and what stays is
        # less than one line's limit.
        for _ in range(100_000):
            event = framer.next_event()
            if isinstance(event, NeedData):
                break
            assert isinstance(event, CommandReceived | CommandRejected | LineReceived)
        else:
            raise AssertionError("framer did not reach NeedData")
        assert framer.buffered < bound


@FUZZ
@given(st.binary(max_size=600))
def test_parse_command_never_raises_on_bytes(line: bytes) -> None:
    result = parse_command(line)
    assert isinstance(result, Rejected | Command)


KEYWORDS = ["USER", "PASS", "AUTH", "LIST", "RETR", "DELE", "TOP", "UIDL", "STAT", "UTF8", "APOP"]
PARTS = [" ", "  ", "0", "1", "9" * 12, "-", "+", "=", "A", "PLAIN", "ü", "١", "\t", "/", "."]


@FUZZ
@given(st.sampled_from(KEYWORDS), st.lists(st.sampled_from(PARTS) | st.text(max_size=5)))
def test_parse_command_never_raises_on_command_like_text(keyword: str, parts: list[str]) -> None:
    result = parse_command((keyword + "".join(parts)).encode("utf-8", "surrogatepass"))
    assert isinstance(result, Rejected | Command)
    if isinstance(result, Rejected):
        assert result.text.isascii()


@FUZZ
@given(
    st.lists(st.tuples(st.text("abc123-", min_size=1, max_size=8), st.integers(0, 10**9))),
    st.lists(st.binary(max_size=40), max_size=40),
)
def test_session_never_raises(entries: list[tuple[str, int]], lines: list[bytes]) -> None:
    # Unique uids, then any sequence of parsed commands, before and after login.
    maildrop = list({uid: size for uid, size in entries}.items())
    session = Pop3Session()
    for i, line in enumerate(lines):
        if i == len(lines) // 2:
            try:
                session.begin_transaction(maildrop)
            except RuntimeError:
                pass  # a QUIT already ended the session
        command = parse_command(line)
        if isinstance(command, Rejected):
            continue
        outcome = session.handle(command)
        if isinstance(outcome, Reply):
            outcome.to_bytes()
        if isinstance(outcome, SendMessage):
            assert 1 <= outcome.number <= len(maildrop)


# --- dot-stuffing ---------------------------------------------------------------

message_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"\n.", b"..", b"x", b"\r\n.\r\n"]),
        st.binary(max_size=8),
    ),
    max_size=40,
).map(b"".join)


def reference_stuff(message: bytes) -> bytes:
    """Slow model: lines end at LF (CR before it dropped); stuff; terminate."""
    if not message:
        return b".\r\n"
    *lines, last = message.split(b"\n")
    if last:  # unterminated last line; a lone trailing CR is its line end
        lines.append(last)
    out = []
    for line in lines:
        line = line.removesuffix(b"\r")
        out.append((b"." + line if line.startswith(b".") else line) + b"\r\n")
    return b"".join(out) + b".\r\n"


@FUZZ
@given(message_bytes, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_streaming_stuffer_equals_reference(message: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(message)) for c in cuts} | {0, len(message)})
    stuffer = DotStuffer()
    out = b"".join(stuffer.feed(message[a:b]) for a, b in itertools.pairwise(points))
    out += stuffer.finish()
    assert out == reference_stuff(message) == dot_stuff(message)
    # The body is well formed: CRLF lines only, and the only "." line is the last.
    assert out.endswith(b".\r\n")
    body_lines = out.split(b"\r\n")[:-1]
    assert body_lines.index(b".") == len(body_lines) - 1
    assert all(b"\n" not in line for line in body_lines)


@FUZZ
@given(message_bytes, st.integers(min_value=0, max_value=2**31))
def test_top_of_is_a_prefix_and_never_raises(message: bytes, lines: int) -> None:
    top = top_of(message, lines)
    assert message.startswith(top)
    assert top_of(message, 2**31) == message
