"""The sans-I/O SMTP client pieces in postwerk.protocols.smtp.client, table-driven."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from postwerk.protocols.smtp.client import (
    BDAT_CHUNK,
    Extensions,
    ReplyError,
    ReplyReader,
    ServerReply,
    Step,
    Transaction,
    dot_stuff,
    mail_command,
    rcpt_command,
)

# -- ReplyReader ------------------------------------------------------------------


def drain(reader: ReplyReader) -> list[ServerReply]:
    """Every complete reply the reader holds, until it asks for more bytes."""
    replies: list[ServerReply] = []
    while (reply := reader.next_reply()) is not None:
        replies.append(reply)
    return replies


def feed_in_pieces(reader: ReplyReader, data: bytes, size: int) -> list[ServerReply]:
    """Feed `data` `size` octets at a time, draining after each feed."""
    replies: list[ServerReply] = []
    for start in range(0, len(data), size):
        reader.feed(data[start : start + size])
        replies += drain(reader)
    return replies


VALID_STREAMS = [
    pytest.param(b"250 ok\r\n", [ServerReply(250, ("ok",))], id="single-line"),
    pytest.param(b"250-a\r\n250 b\r\n", [ServerReply(250, ("a", "b"))], id="multi-line"),
    pytest.param(b"250\r\n", [ServerReply(250, ("",))], id="bare-code"),
    pytest.param(b"250 \r\n", [ServerReply(250, ("",))], id="code-and-space"),
    pytest.param(b"250-a\r\n250\r\n", [ServerReply(250, ("a", ""))], id="bare-code-ends-multi"),
    pytest.param(b"250-\r\n250 x\r\n", [ServerReply(250, ("", "x"))], id="empty-continuation"),
    pytest.param(b"250-a\n250 b\n", [ServerReply(250, ("a", "b"))], id="bare-lf"),
    pytest.param(b"250-a\n250 b\r\n", [ServerReply(250, ("a", "b"))], id="mixed-line-ends"),
    pytest.param(b"550  two  spaces \r\n", [ServerReply(550, (" two  spaces ",))], id="verbatim"),
    pytest.param(b"550 caf\xe9\r\n", [ServerReply(550, ("caf\ufffd",))], id="invalid-utf8"),
    pytest.param("250 grüß dich\r\n".encode(), [ServerReply(250, ("grüß dich",))], id="utf8"),
    pytest.param(b"599 x\r\n", [ServerReply(599, ("x",))], id="code-599"),
    pytest.param(b"200 x\r\n", [ServerReply(200, ("x",))], id="code-200"),
    pytest.param(
        b"220 mx ready\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 go ahead\r\n",
        [
            ServerReply(220, ("mx ready",)),
            ServerReply(250, ("mx", "PIPELINING", "SIZE 10")),
            ServerReply(354, ("go ahead",)),
        ],
        id="several-replies",
    ),
    pytest.param(b"250 ok\r\n250-more", [ServerReply(250, ("ok",))], id="trailing-partial"),
    pytest.param(b"250 ok\r\n250-more\r\n", [ServerReply(250, ("ok",))], id="trailing-unfinished"),
    pytest.param(b"", [], id="nothing"),
]


@pytest.mark.parametrize(("data", "expected"), VALID_STREAMS)
def test_reader_parses_in_one_feed(data: bytes, expected: list[ServerReply]) -> None:
    reader = ReplyReader()
    reader.feed(data)
    assert drain(reader) == expected
    assert reader.next_reply() is None  # asking again changes nothing


@pytest.mark.parametrize(("data", "expected"), VALID_STREAMS)
def test_reader_parses_byte_by_byte(data: bytes, expected: list[ServerReply]) -> None:
    assert feed_in_pieces(ReplyReader(), data, 1) == expected


@pytest.mark.parametrize(("data", "expected"), VALID_STREAMS)
def test_reader_parses_at_every_split(data: bytes, expected: list[ServerReply]) -> None:
    for cut in range(len(data) + 1):
        reader = ReplyReader()
        reader.feed(data[:cut])
        replies = drain(reader)
        reader.feed(data[cut:])
        replies += drain(reader)
        assert replies == expected, cut


@pytest.mark.parametrize("size", [2, 3, 5, 7, 11])
def test_reader_parses_in_pieces_of_any_size(size: int) -> None:
    data = b"220 hi\r\n250-a\r\n250-b\r\n250 c\r\n550 5.1.1 no\r\n"
    expected = [
        ServerReply(220, ("hi",)),
        ServerReply(250, ("a", "b", "c")),
        ServerReply(550, ("5.1.1 no",)),
    ]
    assert feed_in_pieces(ReplyReader(), data, size) == expected


def test_reader_returns_one_reply_per_call() -> None:
    reader = ReplyReader()
    reader.feed(b"250 a\r\n251 b\r\n")
    assert reader.next_reply() == ServerReply(250, ("a",))
    assert reader.next_reply() == ServerReply(251, ("b",))
    assert reader.next_reply() is None


def test_reader_without_data_has_nothing() -> None:
    reader = ReplyReader()
    assert reader.next_reply() is None
    assert reader.buffered == 0


def test_buffered_counts_a_partial_line() -> None:
    reader = ReplyReader()
    reader.feed(b"250 o")
    assert reader.buffered == 5
    assert reader.next_reply() is None
    assert reader.buffered == 5
    reader.feed(b"k\r\n")
    assert reader.buffered == 8
    assert reader.next_reply() == ServerReply(250, ("ok",))
    assert reader.buffered == 0


def test_buffered_counts_what_follows_a_returned_reply() -> None:
    # What the outbound client checks after the 220 to STARTTLS.
    reader = ReplyReader()
    reader.feed(b"220 go ahead\r\nEHLO")
    assert reader.next_reply() == ServerReply(220, ("go ahead",))
    assert reader.buffered == 4
    assert reader.next_reply() is None
    assert reader.buffered == 4


def test_buffered_after_several_replies() -> None:
    reader = ReplyReader()
    reader.feed(b"250 a\r\n250 b\r\n2")
    assert reader.buffered == 15
    assert reader.next_reply() == ServerReply(250, ("a",))
    assert reader.buffered == 8
    assert reader.next_reply() == ServerReply(250, ("b",))
    assert reader.buffered == 1
    reader.feed(b"50 c\r\n")  # the consumed octets are dropped here
    assert reader.buffered == 7
    assert drain(reader) == [ServerReply(250, ("c",))]
    assert reader.buffered == 0


REPLY_ERRORS = [
    pytest.param(b"abc ok\r\n", "malformed", id="letters"),
    pytest.param(b"2x0 ok\r\n", "malformed", id="letter-inside-code"),
    pytest.param(b"25\r\n", "malformed", id="two-digits"),
    pytest.param(b"\r\n", "malformed", id="empty-line"),
    pytest.param(b"\n", "malformed", id="empty-line-bare-lf"),
    pytest.param(b" 250 ok\r\n", "malformed", id="leading-space"),
    pytest.param(b"050 x\r\n", "malformed", id="class-0"),
    pytest.param(b"150 x\r\n", "malformed", id="class-1"),
    pytest.param(b"650 x\r\n", "malformed", id="class-6"),
    pytest.param(b"750 x\r\n", "malformed", id="class-7"),
    pytest.param(b"850 x\r\n", "malformed", id="class-8"),
    pytest.param(b"950 x\r\n", "malformed", id="class-9"),
    pytest.param("２５０ x\r\n".encode(), "malformed", id="fullwidth-digits"),
    pytest.param(b"250_ok\r\n", "malformed", id="underscore-4th"),
    pytest.param(b"2500\r\n", "malformed", id="digit-4th"),
    pytest.param(b"250\tok\r\n", "malformed", id="tab-4th"),
    pytest.param(b"250\r\r\n", "malformed", id="cr-4th"),
    pytest.param(b"250-a\r\nxyz\r\n", "malformed", id="bad-continuation"),
    pytest.param(b"250-a\r\n251 b\r\n", "code changed", id="code-change"),
    pytest.param(b"250-a\r\n550-b\r\n550 c\r\n", "code changed", id="code-change-class"),
    pytest.param(b"250 ok\r\nbad\r\n", "malformed", id="after-good-reply"),
]


@pytest.mark.parametrize(("data", "match"), REPLY_ERRORS)
def test_reader_rejects_in_one_feed(data: bytes, match: str) -> None:
    reader = ReplyReader()
    reader.feed(data)
    with pytest.raises(ReplyError, match=match):
        drain(reader)


@pytest.mark.parametrize(("data", "match"), REPLY_ERRORS)
def test_reader_rejects_byte_by_byte(data: bytes, match: str) -> None:
    with pytest.raises(ReplyError, match=match):
        feed_in_pieces(ReplyReader(), data, 1)


def test_replies_before_an_error_are_returned() -> None:
    reader = ReplyReader()
    reader.feed(b"250 ok\r\n2x0\r\n")
    assert reader.next_reply() == ServerReply(250, ("ok",))
    with pytest.raises(ReplyError):
        reader.next_reply()


# The limit is on the octets before the LF, a CR included (so that a line
# without its LF yet can be judged the same way).
LINE_LIMITS = [
    pytest.param(b"250 abcde\r\n", True, id="cr-lf-at-limit"),
    pytest.param(b"250 abcdef\n", True, id="bare-lf-at-limit"),
    pytest.param(b"250-abcde\r\n250 abcde\r\n", True, id="multi-at-limit"),
    pytest.param(b"250 abcdef\r\n", False, id="cr-lf-over-limit"),
    pytest.param(b"250 abcdefg\n", False, id="bare-lf-over-limit"),
    pytest.param(b"250-abcde\r\n250 abcdefgh\r\n", False, id="multi-second-over-limit"),
    pytest.param(b"250 " + b"x" * 100 + b"\r\n", False, id="far-over-limit"),
]


@pytest.mark.parametrize(("data", "ok"), LINE_LIMITS)
@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_line_length_limit_with_newline(data: bytes, ok: bool, piece: int) -> None:
    reader = ReplyReader(max_line=10)
    if ok:
        assert len(feed_in_pieces(reader, data, piece)) == 1
    else:
        with pytest.raises(ReplyError, match="longer than 10 octets"):
            feed_in_pieces(reader, data, piece)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"250 abcdefghijklmnop", id="text"),
        pytest.param(b"250 abcdef\r", id="cr-counts"),
        pytest.param(b"xxxxxxxxxxxxxxx", id="garbage"),
    ],
)
def test_line_length_limit_without_newline(line: bytes) -> None:
    reader = ReplyReader(max_line=10)
    for i in range(len(line)):
        reader.feed(line[i : i + 1])
        if i + 1 <= 10:
            assert reader.next_reply() is None
            assert reader.buffered == i + 1
        else:
            with pytest.raises(ReplyError, match="longer than 10 octets"):
                reader.next_reply()
            return
    raise AssertionError("the line never exceeded the limit")


def test_line_length_limit_without_newline_in_one_feed() -> None:
    reader = ReplyReader(max_line=10)
    reader.feed(b"x" * 10)
    assert reader.next_reply() is None
    reader.feed(b"x")
    with pytest.raises(ReplyError, match="longer than 10 octets"):
        reader.next_reply()


def test_line_length_limit_after_a_reply() -> None:
    reader = ReplyReader(max_line=10)
    reader.feed(b"250 ok\r\n" + b"y" * 11)
    assert reader.next_reply() == ServerReply(250, ("ok",))
    with pytest.raises(ReplyError, match="longer than 10 octets"):
        reader.next_reply()


def test_default_line_limit() -> None:
    reader = ReplyReader()
    reader.feed(b"250 " + b"x" * 4090 + b"\r\n")  # 4095 octets before the LF
    assert drain(reader) == [ServerReply(250, ("x" * 4090,))]
    reader.feed(b"250 " + b"x" * 4092)  # 4096 octets, no LF yet: still acceptable
    assert reader.next_reply() is None
    reader.feed(b"x")
    with pytest.raises(ReplyError, match="longer than 4096 octets"):
        reader.next_reply()


@pytest.mark.parametrize("piece", [1, 4, 1000])
def test_line_count_limit(piece: int) -> None:
    at_limit = b"250-a\r\n250-b\r\n250 c\r\n"
    assert feed_in_pieces(ReplyReader(max_lines=3), at_limit, piece) == [
        ServerReply(250, ("a", "b", "c"))
    ]
    over = b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n"
    with pytest.raises(ReplyError, match="more than 3 lines"):
        feed_in_pieces(ReplyReader(max_lines=3), over, piece)


def test_line_count_limit_hits_before_the_reply_ends() -> None:
    reader = ReplyReader(max_lines=3)
    reader.feed(b"250-a\r\n250-b\r\n250-c\r\n")
    assert reader.next_reply() is None
    reader.feed(b"250-d\r\n")  # the reply is not over, yet already too long
    with pytest.raises(ReplyError, match="more than 3 lines"):
        reader.next_reply()


def test_line_count_is_per_reply() -> None:
    reader = ReplyReader(max_lines=2)
    reader.feed(b"250-a\r\n250 b\r\n251-c\r\n251 d\r\n")
    assert drain(reader) == [ServerReply(250, ("a", "b")), ServerReply(251, ("c", "d"))]


# -- ServerReply ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "lines", "status", "text"),
    [
        pytest.param(250, ("2.1.5 Ok",), "2.1.5", "Ok", id="split"),
        pytest.param(550, ("5.1.1 User unknown",), "5.1.1", "User unknown", id="split-5xx"),
        pytest.param(451, ("4.7.1 try later",), "4.7.1", "try later", id="split-4xx"),
        pytest.param(250, ("2.1.5\tOk",), "2.1.5", "Ok", id="tab"),
        pytest.param(250, ("2.1.5   Ok",), "2.1.5", "Ok", id="spaces"),
        pytest.param(250, ("2.1.5",), "2.1.5", "", id="status-only"),
        pytest.param(250, ("  2.1.5 Ok  ",), "2.1.5", "Ok", id="padded"),
        pytest.param(250, ("2.123.456 x",), "2.123.456", "x", id="three-digits"),
        pytest.param(250, ("5.1.1 x",), "2.0.0", "5.1.1 x", id="class-mismatch"),
        pytest.param(550, ("2.1.5 x",), "5.0.0", "2.1.5 x", id="class-mismatch-5xx"),
        pytest.param(250, ("Ok",), "2.0.0", "Ok", id="synth-2"),
        pytest.param(451, ("later",), "4.0.0", "later", id="synth-4"),
        pytest.param(554, ("no",), "5.0.0", "no", id="synth-5"),
        pytest.param(354, ("go ahead",), "4.0.0", "go ahead", id="synth-3xx-transient"),
        pytest.param(250, ("",), "2.0.0", "", id="empty"),
        pytest.param(250, ("2.1.5Ok",), "2.0.0", "2.1.5Ok", id="glued"),
        pytest.param(250, ("2.1234.5 x",), "2.0.0", "2.1234.5 x", id="four-digits"),
        pytest.param(250, ("2.1.5.3 x",), "2.0.0", "2.1.5.3 x", id="four-parts"),
        pytest.param(250, ("3.1.5 x",), "2.0.0", "3.1.5 x", id="class-3"),
        pytest.param(250, ("x 2.1.5",), "2.0.0", "x 2.1.5", id="not-at-start"),
        pytest.param(
            250,
            ("2.0.0 first", "2.0.0 second", "2.0.0 third"),
            "2.0.0",
            "first second third",
            id="multi-line",
        ),
        pytest.param(
            550,
            ("5.7.1 first", "5.7.2 second"),
            "5.7.1",
            "first second",
            id="first-status-wins",
        ),
        pytest.param(
            550,
            ("5.7.1 first", "plain", "2.0.0 bogus class"),
            "5.7.1",
            "first plain 2.0.0 bogus class",
            id="mixed-lines",
        ),
        pytest.param(250, ("", "x", "  ", "y"), "2.0.0", "x y", id="empty-lines-dropped"),
        pytest.param(250, ("  a  ", " b"), "2.0.0", "a b", id="lines-stripped"),
    ],
)
def test_status_and_text(code: int, lines: tuple[str, ...], status: str, text: str) -> None:
    reply = ServerReply(code, lines)
    assert reply.status == status
    assert reply.text == text


def test_status_digits_are_ascii() -> None:
    reply = ServerReply(250, ("2.١.٥ ok",))
    assert reply.status == "2.0.0"
    assert reply.text == "2.١.٥ ok"


@pytest.mark.parametrize(
    ("code", "positive"),
    [(199, False), (200, True), (250, True), (354, True), (399, True), (400, False), (550, False)],
)
def test_positive(code: int, positive: bool) -> None:
    assert ServerReply(code, ("x",)).positive is positive


# -- Extensions -------------------------------------------------------------------


def ehlo(*lines: str) -> Extensions:
    return Extensions.from_ehlo(ServerReply(250, ("mx.example.net greets you", *lines)))


def test_extensions_keywords() -> None:
    ext = ehlo(
        "pipelining",
        "Size 36700160",
        "8BITMIME",
        "dsn",
        "X-Custom  a b  ",
        "auth plain Login",
        "chunking",
    )
    assert dict(ext.keywords) == {  # keywords upper-cased, parameters kept as sent
        "PIPELINING": "",
        "SIZE": "36700160",
        "AUTH": "plain Login",
        "8BITMIME": "",
        "DSN": "",
        "X-CUSTOM": "a b",
        "CHUNKING": "",
    }


def test_extensions_ignore_the_greeting_line() -> None:
    ext = Extensions.from_ehlo(ServerReply(250, ("SIZE 5",)))
    assert dict(ext.keywords) == {}
    assert "SIZE" not in ext
    assert ext.size_limit == 0
    assert ext.auth_mechanisms == frozenset()


def test_extensions_skip_empty_lines() -> None:
    ext = ehlo("", "   ", "DSN")
    assert dict(ext.keywords) == {"DSN": ""}


@pytest.mark.parametrize("keyword", ["PIPELINING", "pipelining", "Pipelining", "pIpElInInG"])
def test_extensions_contains_ignores_case(keyword: str) -> None:
    ext = ehlo("PipeLining")
    assert keyword in ext
    assert "CHUNKING" not in ext
    assert "chunking" not in ext


def test_default_extensions_are_empty() -> None:
    ext = Extensions()
    assert "SIZE" not in ext
    assert ext.size_limit == 0
    assert ext.auth_mechanisms == frozenset()


@pytest.mark.parametrize(
    ("lines", "mechanisms"),
    [
        pytest.param(("AUTH PLAIN LOGIN",), {"PLAIN", "LOGIN"}, id="plain"),
        pytest.param(("auth plain cram-md5",), {"PLAIN", "CRAM-MD5"}, id="lower-case"),
        pytest.param(("AUTH=LOGIN PLAIN",), {"LOGIN", "PLAIN"}, id="alias-only"),
        pytest.param(("AUTH=LOGIN PLAIN", "AUTH PLAIN"), {"LOGIN", "PLAIN"}, id="alias-first"),
        pytest.param(("AUTH PLAIN", "AUTH=LOGIN"), {"LOGIN", "PLAIN"}, id="alias-second"),
        pytest.param(("AUTH", "AUTH PLAIN"), {"PLAIN"}, id="bare-then-mechanisms"),
        pytest.param(("AUTH PLAIN", "AUTH"), {"PLAIN"}, id="mechanisms-then-bare"),
        pytest.param(("AUTH",), set(), id="bare"),
        pytest.param((), set(), id="absent"),
    ],
)
def test_auth_mechanisms(lines: tuple[str, ...], mechanisms: set[str]) -> None:
    ext = ehlo(*lines)
    assert ext.auth_mechanisms == frozenset(mechanisms)
    assert ("AUTH" in ext) == bool(lines)
    if lines:
        assert {m.upper() for m in ext.keywords["AUTH"].split()} == mechanisms


@pytest.mark.parametrize(
    ("lines", "limit"),
    [
        pytest.param(("SIZE 1000",), 1000, id="number"),
        pytest.param(("size 36700160",), 36700160, id="lower-case"),
        pytest.param(("SIZE",), 0, id="bare"),
        pytest.param(("SIZE 0",), 0, id="zero"),
        pytest.param((), 0, id="absent"),
        pytest.param(("SIZE abc",), 0, id="garbage"),
        pytest.param(("SIZE -5",), 0, id="negative"),
        pytest.param(("SIZE 10.5",), 0, id="decimal"),
        pytest.param(("SIZE 10 20",), 0, id="two-numbers"),
        pytest.param(("SIZE 0x10",), 0, id="hex"),
    ],
)
def test_size_limit(lines: tuple[str, ...], limit: int) -> None:
    assert ehlo(*lines).size_limit == limit


@pytest.mark.parametrize("value", ["²", "①", "1²"])
def test_size_limit_garbage_digits(value: str) -> None:
    assert ehlo(f"SIZE {value}").size_limit == 0


# -- dot_stuff --------------------------------------------------------------------


def unstuff(wire: bytes) -> bytes:
    """The receiver's side, RFC 5321 §4.5.2: lines up to the lone `.`, one dot removed."""
    lines = wire.split(b"\r\n")
    assert lines[-1] == b"", "the wire must end with CRLF"
    lines.pop()
    assert lines and lines[-1] == b".", "the wire must end with the end-of-data line"
    lines.pop()
    assert b"." not in lines, "an early end-of-data line"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


DOT_STUFF = [
    pytest.param(b"", b".\r\n", id="empty"),
    pytest.param(b"hello\r\n", b"hello\r\n.\r\n", id="plain"),
    pytest.param(b"hello", b"hello\r\n.\r\n", id="missing-final-crlf"),
    pytest.param(b"a\r\nb", b"a\r\nb\r\n.\r\n", id="missing-final-crlf-2"),
    pytest.param(b"\r\n", b"\r\n.\r\n", id="empty-line"),
    pytest.param(b".leading\r\n", b"..leading\r\n.\r\n", id="leading-dot"),
    pytest.param(b".", b"..\r\n.\r\n", id="only-dot-unterminated"),
    pytest.param(b".\r\n", b"..\r\n.\r\n", id="only-dot-line"),
    pytest.param(b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n", id="dot-after-crlf"),
    pytest.param(b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n", id="dot-line-inside"),
    pytest.param(b"a\r\n...\r\n", b"a\r\n....\r\n.\r\n", id="three-dots"),
    pytest.param(b"..\r\n", b"...\r\n.\r\n", id="two-dots-first"),
    pytest.param(b".\r\n.\r\n.", b"..\r\n..\r\n..\r\n.\r\n", id="dots-everywhere"),
    pytest.param(b"\r\n.\r\n", b"\r\n..\r\n.\r\n", id="dot-after-empty-line"),
    pytest.param(b"a\r\n.", b"a\r\n..\r\n.\r\n", id="unterminated-dot-line"),
    pytest.param(b"a.b\r\nc.\r\n", b"a.b\r\nc.\r\n.\r\n", id="inner-dots"),
    pytest.param(b"a\r\n\r\n.x\r\n", b"a\r\n\r\n..x\r\n.\r\n", id="after-blank-line"),
]


@pytest.mark.parametrize(("data", "wire"), DOT_STUFF)
def test_dot_stuff(data: bytes, wire: bytes) -> None:
    assert dot_stuff(data) == wire


@pytest.mark.parametrize(("data", "wire"), DOT_STUFF)
def test_dot_stuff_round_trips(data: bytes, wire: bytes) -> None:
    expected = data if not data or data.endswith(b"\r\n") else data + b"\r\n"
    assert unstuff(dot_stuff(data)) == expected


# -- MAIL and RCPT ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "params", "utf8", "mail", "rcpt"),
    [
        pytest.param(
            "s@example.org",
            [],
            False,
            b"MAIL FROM:<s@example.org>\r\n",
            b"RCPT TO:<s@example.org>\r\n",
            id="plain",
        ),
        pytest.param("", [], False, b"MAIL FROM:<>\r\n", b"RCPT TO:<>\r\n", id="null"),
        pytest.param(
            "s@example.org",
            ["SIZE=10"],
            False,
            b"MAIL FROM:<s@example.org> SIZE=10\r\n",
            b"RCPT TO:<s@example.org> SIZE=10\r\n",
            id="one-param",
        ),
        pytest.param(
            "s@example.org",
            ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;s@example.org"],
            False,
            b"MAIL FROM:<s@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;s@example.org\r\n",
            b"RCPT TO:<s@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;s@example.org\r\n",
            id="two-params",
        ),
        pytest.param(
            "jörg@exämple.org",
            ["SMTPUTF8"],
            True,
            "MAIL FROM:<jörg@exämple.org> SMTPUTF8\r\n".encode(),
            "RCPT TO:<jörg@exämple.org> SMTPUTF8\r\n".encode(),
            id="utf8",
        ),
        pytest.param(
            "s@example.org",
            ["ENVID=x"],
            True,
            b"MAIL FROM:<s@example.org> ENVID=x\r\n",
            b"RCPT TO:<s@example.org> ENVID=x\r\n",
            id="utf8-ascii",
        ),
    ],
)
def test_commands(address: str, params: list[str], utf8: bool, mail: bytes, rcpt: bytes) -> None:
    assert mail_command(address, params, utf8=utf8) == mail
    assert rcpt_command(address, params, utf8=utf8) == rcpt
    assert mail_command(address, tuple(params), utf8=utf8) == mail


@pytest.mark.parametrize(
    ("address", "params"),
    [
        pytest.param("jörg@example.org", [], id="address"),
        pytest.param("s@example.org", ["ORCPT=utf-8;jörg@example.org"], id="param"),
    ],
)
def test_commands_refuse_non_ascii_without_utf8(address: str, params: list[str]) -> None:
    with pytest.raises(UnicodeEncodeError):
        mail_command(address, params, utf8=False)
    with pytest.raises(UnicodeEncodeError):
        rcpt_command(address, params, utf8=False)


# -- Transaction ------------------------------------------------------------------

MAIL = b"MAIL FROM:<s@example.org>\r\n"
R0 = b"RCPT TO:<a@example.net>\r\n"
R1 = b"RCPT TO:<b@example.net>\r\n"
DATA = b"DATA\r\n"
BODY = b"Subject: t\r\n\r\n.dot\r\nend\r\n"
STUFFED = b"Subject: t\r\n\r\n..dot\r\nend\r\n.\r\n"
BDAT_BODY = b"BDAT %d LAST\r\n" % len(BODY) + BODY
NOTHING = b""
END = b".\r\n"
TEN = b"0123456789"

M, R, D, B, C = Step.MAIL, Step.RCPT, Step.DATA, Step.BODY, Step.CHUNK


@dataclass(frozen=True)
class Script:
    """One transaction: the replies read back and everything that must follow.

    `writes` is first_write() then what each on_reply() returned; `steps` and
    `awaiting` are expect() and awaiting before each reply. The reply fields are
    indices into `codes` (each reply has its own text, so identity is checked).
    """

    pipelining: bool
    chunking: bool
    codes: tuple[int, ...]
    writes: tuple[bytes, ...]
    steps: tuple[Step, ...]
    awaiting: tuple[int, ...]
    accepted: tuple[int, ...]
    mail: int | None
    rcpts: tuple[int | None, ...]
    data: int | None
    body: int | None
    needs_rset: bool
    body_sent: bool
    message: bytes = BODY
    recipients: tuple[bytes, ...] = (R0, R1)
    chunk_size: int = BDAT_CHUNK


SCRIPTS = [
    # -- one command at a time, DATA ------------------------------------------
    pytest.param(
        Script(
            False, False, (250, 250, 250, 354, 250),
            (MAIL, R0, R1, DATA, STUFFED, NOTHING), (M, R, R, D, B), (1, 1, 1, 1, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=False, body_sent=True,
        ),
        id="plain-data-all-accepted",
    ),
    pytest.param(
        Script(
            False, False, (250, 550, 251, 354, 250),
            (MAIL, R0, R1, DATA, STUFFED, NOTHING), (M, R, R, D, B), (1, 1, 1, 1, 1),
            accepted=(1,), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=False, body_sent=True,
        ),
        id="plain-data-some-refused",
    ),
    pytest.param(
        Script(
            False, False, (250, 550, 450),
            (MAIL, R0, R1, NOTHING), (M, R, R), (1, 1, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=None, body=None,
            needs_rset=True, body_sent=False,
        ),
        id="plain-data-all-refused",
    ),
    pytest.param(
        Script(
            False, False, (550,),
            (MAIL, NOTHING), (M,), (1,),
            accepted=(), mail=0, rcpts=(None, None), data=None, body=None,
            needs_rset=True, body_sent=False,
        ),
        id="plain-data-mail-refused",
    ),
    pytest.param(
        Script(
            False, False, (250, 250, 250, 451),
            (MAIL, R0, R1, DATA, NOTHING), (M, R, R, D), (1, 1, 1, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=3, body=3,
            needs_rset=True, body_sent=False,
        ),
        id="plain-data-data-refused",
    ),
    pytest.param(
        Script(
            False, False, (250, 250, 250, 354, 550),
            (MAIL, R0, R1, DATA, STUFFED, NOTHING), (M, R, R, D, B), (1, 1, 1, 1, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=True, body_sent=True,
        ),
        id="plain-data-end-of-data-refused",
    ),
    pytest.param(
        Script(
            False, False, (250, 250, 354, 250),
            (MAIL, R0, DATA, b"x\r\n.\r\n", NOTHING), (M, R, D, B), (1, 1, 1, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=2, body=3,
            needs_rset=False, body_sent=True, message=b"x", recipients=(R0,),
        ),
        id="plain-data-one-recipient-unterminated-body",
    ),
    # -- one command at a time, BDAT ------------------------------------------
    pytest.param(
        Script(
            False, True, (250, 250, 250, 250),
            (MAIL, R0, R1, BDAT_BODY, NOTHING), (M, R, R, B), (1, 1, 1, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=False, body_sent=True,
        ),
        id="plain-bdat-all-accepted",
    ),
    pytest.param(
        Script(
            False, True, (250, 250, 550, 250),
            (MAIL, R0, R1, BDAT_BODY, NOTHING), (M, R, R, B), (1, 1, 1, 1),
            accepted=(0,), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=False, body_sent=True,
        ),
        id="plain-bdat-some-refused",
    ),
    pytest.param(
        Script(
            False, True, (250, 550, 550),
            (MAIL, R0, R1, NOTHING), (M, R, R), (1, 1, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=None, body=None,
            needs_rset=True, body_sent=False,
        ),
        id="plain-bdat-all-refused",
    ),
    pytest.param(
        Script(
            False, True, (550,),
            (MAIL, NOTHING), (M,), (1,),
            accepted=(), mail=0, rcpts=(None, None), data=None, body=None,
            needs_rset=True, body_sent=False,
        ),
        id="plain-bdat-mail-refused",
    ),
    pytest.param(
        Script(
            False, True, (250, 250, 250, 552),
            (MAIL, R0, R1, BDAT_BODY, NOTHING), (M, R, R, B), (1, 1, 1, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=True, body_sent=True,
        ),
        id="plain-bdat-last-refused",
    ),
    pytest.param(
        Script(
            False, True, (250, 250, 250),
            (MAIL, R0, b"BDAT 0 LAST\r\n", NOTHING), (M, R, B), (1, 1, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=2,
            needs_rset=False, body_sent=True, message=b"", recipients=(R0,),
        ),
        id="plain-bdat-empty-body",
    ),
    pytest.param(
        Script(
            False, True, (250, 250, 250),
            (MAIL, R0, b"BDAT 10 LAST\r\n" + TEN, NOTHING), (M, R, B), (1, 1, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=2,
            needs_rset=False, body_sent=True, message=TEN, recipients=(R0,), chunk_size=10,
        ),
        id="plain-bdat-body-of-exactly-one-chunk",
    ),
    # -- pipelined, DATA ------------------------------------------------------
    pytest.param(
        Script(
            True, False, (250, 250, 250, 354, 250),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, STUFFED, NOTHING),
            (M, R, R, D, B), (4, 3, 2, 1, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=False, body_sent=True,
        ),
        id="piped-data-all-accepted",
    ),
    pytest.param(
        Script(
            True, False, (250, 550, 250, 354, 250),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, STUFFED, NOTHING),
            (M, R, R, D, B), (4, 3, 2, 1, 1),
            accepted=(1,), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=False, body_sent=True,
        ),
        id="piped-data-some-refused",
    ),
    pytest.param(
        Script(
            True, False, (250, 550, 550, 554),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, D), (4, 3, 2, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=3, body=3,
            needs_rset=True, body_sent=False,
        ),
        id="piped-data-all-refused-data-554",
    ),
    pytest.param(
        Script(
            True, False, (250, 550, 550, 354, 554),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, END, NOTHING),
            (M, R, R, D, B), (4, 3, 2, 1, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=True, body_sent=False,
        ),
        id="piped-data-all-refused-data-354",
    ),
    pytest.param(
        Script(
            True, False, (550, 503, 503, 503),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, D), (4, 3, 2, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=3, body=3,
            needs_rset=True, body_sent=False,
        ),
        id="piped-data-mail-refused",
    ),
    pytest.param(
        Script(
            True, False, (550, 503, 503, 354, 503),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, END, NOTHING),
            (M, R, R, D, B), (4, 3, 2, 1, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=True, body_sent=False,
        ),
        id="piped-data-mail-refused-data-354",
    ),
    pytest.param(
        Script(
            True, False, (250, 250, 250, 451),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, D), (4, 3, 2, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=3, body=3,
            needs_rset=True, body_sent=False,
        ),
        id="piped-data-data-refused",
    ),
    pytest.param(
        Script(
            True, False, (250, 250, 250, 354, 550),
            (MAIL + R0 + R1 + DATA, NOTHING, NOTHING, NOTHING, STUFFED, NOTHING),
            (M, R, R, D, B), (4, 3, 2, 1, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=3, body=4,
            needs_rset=True, body_sent=True,
        ),
        id="piped-data-end-of-data-refused",
    ),
    # -- pipelined, BDAT ------------------------------------------------------
    pytest.param(
        Script(
            True, True, (250, 250, 250, 250),
            (MAIL + R0 + R1 + BDAT_BODY, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, B), (4, 3, 2, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=False, body_sent=True,
        ),
        id="piped-bdat-all-accepted",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 550, 250),
            (MAIL + R0 + R1 + BDAT_BODY, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, B), (4, 3, 2, 1),
            accepted=(0,), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=False, body_sent=True,
        ),
        id="piped-bdat-some-refused",
    ),
    pytest.param(
        Script(
            True, True, (250, 550, 550, 554),
            (MAIL + R0 + R1 + BDAT_BODY, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, B), (4, 3, 2, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=True, body_sent=True,
        ),
        id="piped-bdat-all-refused",
    ),
    pytest.param(
        Script(
            True, True, (550, 503, 503, 503),
            (MAIL + R0 + R1 + BDAT_BODY, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, B), (4, 3, 2, 1),
            accepted=(), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=True, body_sent=True,
        ),
        id="piped-bdat-mail-refused",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 250, 552),
            (MAIL + R0 + R1 + BDAT_BODY, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, R, B), (4, 3, 2, 1),
            accepted=(0, 1), mail=0, rcpts=(1, 2), data=None, body=3,
            needs_rset=True, body_sent=True,
        ),
        id="piped-bdat-last-refused",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 250, 250, 250),
            (MAIL + R0 + b"BDAT 4\r\n0123BDAT 4\r\n4567BDAT 2 LAST\r\n89",
             NOTHING, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, C, C, B), (5, 4, 3, 2, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=4,
            needs_rset=False, body_sent=True, message=TEN, recipients=(R0,), chunk_size=4,
        ),
        id="piped-bdat-chunks",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 250, 554, 554),
            (MAIL + R0 + b"BDAT 4\r\n0123BDAT 4\r\n4567BDAT 2 LAST\r\n89",
             NOTHING, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, C, C, B), (5, 4, 3, 2, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=3,
            needs_rset=True, body_sent=True, message=TEN, recipients=(R0,), chunk_size=4,
        ),
        id="piped-bdat-middle-chunk-refused",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 451, 503, 503),
            (MAIL + R0 + b"BDAT 4\r\n0123BDAT 4\r\n4567BDAT 2 LAST\r\n89",
             NOTHING, NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, C, C, B), (5, 4, 3, 2, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=2,
            needs_rset=True, body_sent=True, message=TEN, recipients=(R0,), chunk_size=4,
        ),
        id="piped-bdat-first-chunk-refused",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 250, 250),
            (MAIL + R0 + b"BDAT 4\r\n0123BDAT 4 LAST\r\n4567",
             NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, C, B), (4, 3, 2, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=3,
            needs_rset=False, body_sent=True, message=TEN[:8], recipients=(R0,), chunk_size=4,
        ),
        id="piped-bdat-exact-multiple-of-chunk",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 250, 250),
            (MAIL + R0 + b"BDAT 1\r\naBDAT 1 LAST\r\nb", NOTHING, NOTHING, NOTHING, NOTHING),
            (M, R, C, B), (4, 3, 2, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=3,
            needs_rset=False, body_sent=True, message=b"ab", recipients=(R0,), chunk_size=0,
        ),
        id="piped-bdat-chunk-size-zero-means-one",
    ),
    pytest.param(
        Script(
            True, True, (250, 250, 250),
            (MAIL + R0 + b"BDAT 0 LAST\r\n", NOTHING, NOTHING, NOTHING),
            (M, R, B), (3, 2, 1),
            accepted=(0,), mail=0, rcpts=(1,), data=None, body=2,
            needs_rset=False, body_sent=True, message=b"", recipients=(R0,),
        ),
        id="piped-bdat-empty-body",
    ),
]  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS)
def test_transaction(script: Script) -> None:
    replies = [ServerReply(code, (f"reply #{i}",)) for i, code in enumerate(script.codes)]
    tx = Transaction(
        mail=MAIL,
        rcpts=script.recipients,
        data=script.message,
        pipelining=script.pipelining,
        chunking=script.chunking,
        chunk_size=script.chunk_size,
    )
    assert (tx.expect(), tx.awaiting, tx.done) == (None, 0, False)
    writes = [tx.first_write()]
    steps: list[Step | None] = []
    awaiting: list[int] = []
    for reply in replies:
        assert not tx.done, "done before the last reply"
        steps.append(tx.expect())
        awaiting.append(tx.awaiting)
        writes.append(tx.on_reply(reply))
    assert tuple(writes) == script.writes
    assert tuple(steps) == script.steps
    assert tuple(awaiting) == script.awaiting
    assert tx.done
    assert (tx.expect(), tx.awaiting) == (None, 0)

    def pick(i: int | None) -> ServerReply | None:
        return None if i is None else replies[i]

    assert tx.accepted == list(script.accepted)
    assert tx.mail_reply is pick(script.mail)
    assert len(tx.recipient_replies) == len(script.rcpts)
    for got, want in zip(tx.recipient_replies, script.rcpts, strict=True):
        assert got is pick(want)
    assert tx.data_reply is pick(script.data)
    assert tx.body_reply is pick(script.body)
    assert tx.needs_rset is script.needs_rset
    assert tx.body_sent is script.body_sent
    with pytest.raises(ReplyError, match="unexpected reply 250"):
        tx.on_reply(ServerReply(250, ("late",)))


@pytest.mark.parametrize(("pipelining", "chunking"), [(False, False), (True, True)])
def test_body_sent_tracks_the_write(pipelining: bool, chunking: bool) -> None:
    ok = ServerReply(250, ("ok",))
    tx = Transaction(mail=MAIL, rcpts=[R0], data=BODY, pipelining=pipelining, chunking=chunking)
    out = tx.first_write()
    assert tx.body_sent is (BODY in out)
    while not tx.body_sent:
        out = tx.on_reply(ServerReply(354, ("go",)) if tx.expect() is Step.DATA else ok)
    assert BODY in out or STUFFED in out


def test_on_reply_before_first_write_raises() -> None:
    tx = Transaction(mail=MAIL, rcpts=[R0], data=BODY, pipelining=True, chunking=False)
    with pytest.raises(ReplyError, match="unexpected reply 220"):
        tx.on_reply(ServerReply(220, ("hi",)))


def test_transaction_needs_a_recipient() -> None:
    with pytest.raises(ValueError, match="at least one recipient"):
        Transaction(mail=MAIL, rcpts=[], data=BODY, pipelining=False, chunking=False)


def test_default_chunk_size() -> None:
    assert BDAT_CHUNK == 1 << 20
    body = b"x" * (BDAT_CHUNK + 1)
    tx = Transaction(mail=MAIL, rcpts=[R0], data=body, pipelining=True, chunking=True)
    out = tx.first_write()
    head = b"BDAT %d\r\n" % BDAT_CHUNK
    assert out == MAIL + R0 + head + body[:BDAT_CHUNK] + b"BDAT 1 LAST\r\nx"
    assert tx.awaiting == 4  # MAIL, RCPT, CHUNK, BODY


# Without PIPELINING each BDAT chunk waits for the previous reply (RFC 3030 §2).


def test_bdat_chunks_wait_for_each_reply_without_pipelining() -> None:
    ok = ServerReply(250, ("ok",))
    tx = Transaction(mail=MAIL, rcpts=[R0], data=TEN, pipelining=False, chunking=True, chunk_size=4)
    assert tx.first_write() == MAIL
    assert tx.on_reply(ok) == R0
    assert tx.on_reply(ok) == b"BDAT 4\r\n0123"
    assert (tx.expect(), tx.awaiting) == (Step.CHUNK, 1)
    assert tx.on_reply(ok) == b"BDAT 4\r\n4567"
    assert (tx.expect(), tx.awaiting) == (Step.CHUNK, 1)
    assert tx.on_reply(ok) == b"BDAT 2 LAST\r\n89"
    assert (tx.expect(), tx.awaiting) == (Step.BODY, 1)
    assert tx.on_reply(ok) == b""
    assert tx.done
    assert not tx.needs_rset


def test_refused_bdat_chunk_stops_the_body_without_pipelining() -> None:
    ok = ServerReply(250, ("ok",))
    refused = ServerReply(452, ("4.3.1 disk full",))
    tx = Transaction(mail=MAIL, rcpts=[R0], data=TEN, pipelining=False, chunking=True, chunk_size=4)
    tx.first_write()
    tx.on_reply(ok)
    assert tx.on_reply(ok) == b"BDAT 4\r\n0123"
    assert tx.on_reply(refused) == b""
    assert tx.done
    assert tx.awaiting == 0
    assert tx.body_reply is refused
    assert tx.needs_rset
