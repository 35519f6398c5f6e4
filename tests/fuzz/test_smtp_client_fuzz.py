"""Hypothesis fuzzing of the SMTP client's reply reader, dot-stuffing and transaction."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwerk.protocols.smtp.client import (
    ReplyError,
    ReplyReader,
    ServerReply,
    Transaction,
    dot_stuff,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split_points(size: int, cuts: list[int]) -> list[int]:
    return sorted({min(c, size) for c in cuts} | {0, size})


# -- ReplyReader on anything ------------------------------------------------------

# Pieces that steer the reader into its interesting states.
TOKENS = [
    b"250",
    b"250 ",
    b"250-",
    b"251 ",
    b"354 go\r\n",
    b"550-",
    b"2",
    b"5",
    b"0",
    b"9",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"-",
    b"\t",
    b"ok",
    b"\x00",
    b"\xff",
    b"\xc2\xb2",
    "ü".encode(),
    b"x" * 40,
    b"250-" + b"y" * 30 + b"\r\n",
    b"250 2.1.5 ok\r\n",
]
# Whole lines, so that many streams get as far as a reply before anything breaks.
LINES = [
    b"250 ok\r\n",
    b"250-a\r\n",
    b"250 b\n",
    b"250\r\n",
    b"550-5.1.1 no\r\n",
    b"550 5.1.1 no\r\n",
    b"220 mx.example.net ESMTP\r\n",
]
streams = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.sampled_from(LINES), st.binary(max_size=16)),
    max_size=60,
).map(b"".join)


def whole(data: bytes, max_line: int, max_lines: int) -> tuple[list[ServerReply], bool]:
    """The replies of `data` fed at once, and whether it ended in a ReplyError."""
    reader = ReplyReader(max_line=max_line, max_lines=max_lines)
    reader.feed(data)
    replies: list[ServerReply] = []
    try:
        while (reply := reader.next_reply()) is not None:
            replies.append(reply)
    except ReplyError:
        return replies, True
    return replies, False


@FUZZ
@given(
    streams,
    st.lists(st.integers(min_value=0, max_value=1500), max_size=12),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=6),
)
def test_reader_yields_replies_or_reply_error(
    data: bytes, cuts: list[int], max_line: int, max_lines: int
) -> None:
    reader = ReplyReader(max_line=max_line, max_lines=max_lines)
    replies: list[ServerReply] = []
    failed = False
    for start, stop in itertools.pairwise(split_points(len(data), cuts)):
        chunk = data[start:stop]
        reader.feed(chunk)
        assert reader.buffered <= max_line + len(chunk)
        try:
            while (reply := reader.next_reply()) is not None:
                replies.append(reply)
                assert reader.buffered <= max_line + len(chunk)
        except ReplyError:
            failed = True
            break
        assert reader.buffered <= max_line  # what waits for more is one partial line
    for reply in replies:
        assert 200 <= reply.code <= 599
        assert 1 <= len(reply.lines) <= max_lines
        assert all(len(line) <= max(0, max_line - 4) for line in reply.lines)
        assert reply.status[0] in "245"
        assert isinstance(reply.text, str)
    # Where the feeds were cut changes nothing: the same replies, the same error.
    assert (replies, failed) == whole(data, max_line, max_lines)


# -- ReplyReader on well-formed replies -------------------------------------------

texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=30,
)
replies_st = st.lists(
    st.tuples(
        st.integers(min_value=200, max_value=599),
        st.lists(texts, min_size=1, max_size=5),
        st.sampled_from([b"\r\n", b"\n"]),
        st.booleans(),
    ),
    max_size=6,
)


def serialize(code: int, lines: list[str], eol: bytes, bare: bool) -> bytes:
    """`ddd-text` lines then `ddd text`; a last line without text as a bare `ddd` if `bare`."""
    out = b""
    for i, text in enumerate(lines):
        last = i == len(lines) - 1
        if last and bare and not text:
            out += b"%d" % code + eol
        else:
            out += b"%d" % code + (b" " if last else b"-") + text.encode() + eol
    return out


@FUZZ
@given(replies_st, st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_well_formed_replies_round_trip(
    spec: list[tuple[int, list[str], bytes, bool]], cuts: list[int]
) -> None:
    wire = b"".join(serialize(*reply) for reply in spec)
    reader = ReplyReader()
    got: list[ServerReply] = []
    for start, stop in itertools.pairwise(split_points(len(wire), cuts)):
        reader.feed(wire[start:stop])
        while (reply := reader.next_reply()) is not None:
            got.append(reply)
    assert got == [ServerReply(code, tuple(lines)) for code, lines, _, _ in spec]
    assert reader.buffered == 0


words = st.lists(st.text(alphabet="abcXYZ019,;:()<>@", min_size=1, max_size=8), max_size=5)


@FUZZ
@given(
    st.sampled_from([2, 4, 5]),
    st.integers(min_value=0, max_value=99),
    st.integers(min_value=0, max_value=999),
    st.integers(min_value=0, max_value=999),
    words,
    st.sampled_from([" ", "\t", "  "]),
)
def test_enhanced_status_round_trips(
    cls: int, rest: int, subject: int, detail: int, text: list[str], sep: str
) -> None:
    status = f"{cls}.{subject}.{detail}"
    line = f"{cls * 100 + rest:03d} {status}{sep}{' '.join(text)}\r\n"
    reader = ReplyReader()
    reader.feed(line.encode())
    reply = reader.next_reply()
    assert reply is not None
    assert reply.status == status
    assert reply.text == " ".join(text)


# -- dot_stuff --------------------------------------------------------------------

# Lines without CRLF inside (a lone CR or LF is fine), many starting with dots.
body_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [b"", b".", b"..", b"...", b". x", b".\r", b"\r", b"\n", b"\n.", b"From x"]
        ),
        st.binary(max_size=20),
    ).filter(lambda line: b"\r\n" not in line),
    max_size=20,
)


def unstuff(wire: bytes) -> bytes:
    """The receiver's side, RFC 5321 §4.5.2: lines up to the lone `.`, one dot removed."""
    lines = wire.split(b"\r\n")
    assert lines[-1] == b""
    lines.pop()
    assert lines and lines[-1] == b"."
    lines.pop()
    assert b"." not in lines
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


@FUZZ
@given(body_lines, st.booleans())
def test_dot_stuff_round_trips(lines: list[bytes], terminated: bool) -> None:
    # Unterminated, the last line lacks its CRLF.
    data = b"".join(line + b"\r\n" for line in lines) if terminated else b"\r\n".join(lines)
    wire = dot_stuff(data)
    # The first end-of-data marker is the one at the end (the body starts a line).
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    expected = data if not data or data.endswith(b"\r\n") else data + b"\r\n"
    assert unstuff(wire) == expected


# -- Transaction with any replies -------------------------------------------------

CODES = [250, 251, 354, 450, 451, 452, 503, 550, 552, 554]


@FUZZ
@given(
    st.booleans(),
    st.booleans(),
    st.integers(min_value=1, max_value=4),
    st.binary(max_size=12),
    st.integers(min_value=0, max_value=6),
    st.lists(st.sampled_from(CODES), min_size=20, max_size=20),
)
def test_transaction_ends_with_any_replies(
    pipelining: bool,
    chunking: bool,
    nrcpts: int,
    data: bytes,
    chunk_size: int,
    codes: list[int],
) -> None:
    rcpts = [b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(nrcpts)]
    tx = Transaction(
        mail=b"MAIL FROM:<>\r\n",
        rcpts=rcpts,
        data=data,
        pipelining=pipelining,
        chunking=chunking,
        chunk_size=chunk_size,
    )
    tx.first_write()
    replies = iter(codes)
    while tx.expect() is not None:
        assert not tx.done
        step = tx.expect()
        code = next(replies)  # 20 replies are always enough: the transaction must end
        tx.on_reply(ServerReply(code, (f"{step} {code}",)))
    assert tx.done
    assert tx.awaiting == 0
    assert tx.accepted == sorted(set(tx.accepted))
    assert tx.accepted == [
        i
        for i, reply in enumerate(tx.recipient_replies)
        if reply is not None and reply.code in (250, 251)
    ]
    assert tx.mail_reply is not None
    if not tx.needs_rset:
        # A clean session only once the body got its final answer. (Not necessarily
        # with a recipient accepted: a server may say 250 to a BDAT LAST anyway.)
        assert tx.mail_reply.code == 250
        assert tx.body_sent
        assert tx.body_reply is not None
    if tx.body_sent and tx.body_reply is None:
        raise AssertionError("a body was sent and nothing answered it")
    if tx.data_reply is not None:
        assert not chunking
    if chunking:
        assert tx.data_reply is None
