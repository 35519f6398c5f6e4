"""Framing tests for postwerk.protocols.smtp.connection.ServerConnection."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from postwerk.core import replies
from postwerk.protocols.smtp import (
    Auth,
    Bdat,
    BodyData,
    BodyEnd,
    BodyRejected,
    ChunkData,
    ChunkEnd,
    CommandReceived,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    Event,
    LineReceived,
    MailFrom,
    NeedData,
    Noop,
    Quit,
    RcptTo,
    ServerConnection,
    StartTls,
)


def drain(conn: ServerConnection, *, auto_data: bool = True) -> list[Event]:
    """Events until NeedData (excluded) or ConnectionClosed (included).

    With auto_data, behave like a service that accepts every DATA command.
    """
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if isinstance(event, NeedData):
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events
        if auto_data and isinstance(event, CommandReceived) and isinstance(event.command, Data):
            conn.start_data()


def merge(events: Iterable[Event]) -> list[Event]:
    """Join adjacent BodyData / ChunkData so that different splits compare equal."""
    out: list[Event] = []
    for event in events:
        if out and isinstance(event, BodyData) and isinstance(out[-1], BodyData):
            out[-1] = BodyData(out[-1].data + event.data)
        elif out and isinstance(event, ChunkData) and isinstance(out[-1], ChunkData):
            out[-1] = ChunkData(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def feed(chunks: Iterable[bytes], *, eof: bool = False, **kwargs: int) -> list[Event]:
    conn = ServerConnection(**kwargs)
    events: list[Event] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        events += drain(conn)
    if eof:
        conn.receive_eof()
        events += drain(conn)
    return merge(events)


def skeleton(events: list[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, BodyData)]


def splits(data: bytes) -> Iterable[list[bytes]]:
    """Whole, every two-piece split, every three-piece split near the middle, byte by byte."""
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    mid = len(data) // 2
    for i in range(1, mid):
        yield [data[:i], data[i:mid], data[mid:]]
    yield [data[i : i + 1] for i in range(len(data))]


def cmd(command: object) -> CommandReceived:
    return CommandReceived(command)  # type: ignore[arg-type]


# --- commands and pipelining ---------------------------------------------------


PIPELINED = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@example.com>\r\n"
    b"RCPT TO:<b@example.com>\r\n"
    b"RCPT TO:<c@example.com>\r\n"
    b"DATA\r\n"
)


def test_pipelined_commands_come_out_one_at_a_time_in_order() -> None:
    conn = ServerConnection()
    conn.receive_data(PIPELINED)
    assert conn.next_event() == cmd(Ehlo("client.example"))
    assert conn.next_event() == cmd(MailFrom("a@example.com"))
    assert conn.next_event() == cmd(RcptTo("b@example.com"))
    assert conn.next_event() == cmd(RcptTo("c@example.com"))
    assert conn.next_event() == cmd(Data())
    assert conn.next_event() == NeedData()
    assert conn.buffered == 0


def test_pipelined_commands_at_every_split() -> None:
    expected = feed([PIPELINED])
    assert len(expected) == 5
    for chunks in splits(PIPELINED):
        assert feed(chunks) == expected, chunks


def test_framer_does_not_read_ahead() -> None:
    # RFC 2920 §3.1: bytes after a command stay raw until the next event is asked for.
    conn = ServerConnection()
    conn.receive_data(b"NOOP\r\nQUIT\r\n")
    assert conn.next_event() == cmd(Noop())
    assert conn.buffered == len(b"QUIT\r\n")


def test_bare_lf_ends_a_command_line() -> None:
    assert feed([b"NOOP\nQUIT\r\n"]) == [cmd(Noop()), cmd(Quit())]


def test_bare_cr_inside_a_command_line_is_a_syntax_error() -> None:
    assert feed([b"NO\rOP\r\nQUIT\r\n"]) == [CommandRejected(replies.SYNTAX_ERROR), cmd(Quit())]
    assert feed([b"NOOP\r\r\n"]) == [CommandRejected(replies.SYNTAX_ERROR)]


def test_syntax_errors_become_command_rejected() -> None:
    assert feed([b"FOO\r\nMAIL FROM:a@b.c\r\n"]) == [
        CommandRejected(replies.SYNTAX_ERROR),
        CommandRejected(replies.BAD_ADDRESS_SYNTAX.with_text("Address must be enclosed in <>")),
    ]


def test_empty_line_is_rejected() -> None:
    assert feed([b"\r\n"]) == [CommandRejected(replies.SYNTAX_ERROR)]


def test_smtputf8_flag_is_used_for_rcpt() -> None:
    line = "RCPT TO:<jöran@example.com>\r\n".encode()
    conn = ServerConnection()
    conn.receive_data(line)
    assert conn.next_event() == CommandRejected(replies.SMTPUTF8_REQUIRED)
    conn.smtputf8 = True  # the service accepted MAIL FROM ... SMTPUTF8
    conn.receive_data(line)
    assert conn.next_event() == cmd(RcptTo("jöran@example.com"))


# --- line length ---------------------------------------------------------------


def test_line_at_the_limit_is_accepted_and_one_more_is_not() -> None:
    # The limit counts the CRLF (RFC 5321 §4.5.3.1.4): 512 octets = 510 + CRLF.
    at_limit = b"NOOP " + b"x" * (512 - 2 - 5)
    assert feed([at_limit + b"\r\n"], max_command_line=512) == [cmd(Noop())]
    assert feed([at_limit + b"x\r\n"], max_command_line=512) == [
        CommandRejected(replies.LINE_TOO_LONG)
    ]
    # A bare LF still counts as if it were CRLF.
    assert feed([at_limit + b"x\n"], max_command_line=512) == [
        CommandRejected(replies.LINE_TOO_LONG)
    ]
    assert feed([at_limit + b"\n"], max_command_line=512) == [cmd(Noop())]


def test_huge_line_is_rejected_once_and_memory_stays_bounded() -> None:
    conn = ServerConnection(max_command_line=512)
    events: list[Event] = []
    piece = b"A" * 65536
    for _ in range(160):  # 10 MiB without a line ending
        conn.receive_data(piece)
        events += drain(conn)
        assert conn.buffered <= 512
    conn.receive_data(b"A" * 100 + b"\r\nQUIT\r\n")
    events += drain(conn)
    assert events == [CommandRejected(replies.LINE_TOO_LONG), cmd(Quit())]


def test_huge_line_in_one_piece_with_commands_after_it() -> None:
    data = b"NOOP\r\n" + b"B" * 100_000 + b"\r\nQUIT\r\n"
    expected = [cmd(Noop()), CommandRejected(replies.LINE_TOO_LONG), cmd(Quit())]
    assert feed([data]) == expected
    assert feed([data[:3000], data[3000:]]) == expected


@pytest.mark.parametrize("size", [1, 2047, 2048, 2049, 4096])
def test_long_line_at_any_split(size: int) -> None:
    data = b"x" * size + b"\r\nNOOP\r\n"
    for cut in (1, size - 1, size, size + 1, size + 2):
        assert feed([data[:cut], data[cut:]]) == [
            CommandRejected(replies.LINE_TOO_LONG if size > 2046 else replies.SYNTAX_ERROR),
            cmd(Noop()),
        ]


def test_auth_lines_may_be_longer() -> None:
    # RFC 4954 §4: 12288 octets for AUTH and its continuation lines.
    blob = b"QUFB" * 3000
    assert feed([b"AUTH PLAIN " + blob + b"\r\n"]) == [cmd(Auth("PLAIN", blob.decode()))]
    assert feed([b"AUTH PLAIN " + blob * 2 + b"\r\n"]) == [CommandRejected(replies.LINE_TOO_LONG)]
    conn = ServerConnection()
    conn.receive_data(b"AUTH PLAIN\r\n" + blob + b"\r\n")
    assert conn.next_event() == cmd(Auth("PLAIN", None))
    conn.expect_line()
    assert conn.next_event() == LineReceived(blob)


# --- expect_line (AUTH continuation) ---------------------------------------------


def test_expect_line_returns_the_next_line_raw() -> None:
    conn = ServerConnection()
    conn.receive_data(b"AUTH LOGIN\r\ndXNlcg==\r\nc2VjcmV0\nQUIT\r\n")
    assert conn.next_event() == cmd(Auth("LOGIN", None))
    conn.expect_line()
    assert conn.next_event() == LineReceived(b"dXNlcg==")
    conn.expect_line()
    assert conn.next_event() == LineReceived(b"c2VjcmV0")
    assert conn.next_event() == cmd(Quit())


def test_expect_line_across_pieces_and_cancel() -> None:
    conn = ServerConnection()
    conn.expect_line()
    conn.receive_data(b"*")
    assert conn.next_event() == NeedData()
    conn.receive_data(b"\r")
    assert conn.next_event() == NeedData()
    conn.receive_data(b"\nNOOP\r\n")
    assert conn.next_event() == LineReceived(b"*")
    assert conn.next_event() == cmd(Noop())


def test_expect_line_too_long_is_rejected_and_mode_ends() -> None:
    conn = ServerConnection()
    conn.expect_line()
    conn.receive_data(b"x" * 20000 + b"\r\nNOOP\r\n")
    assert conn.next_event() == CommandRejected(replies.LINE_TOO_LONG)
    assert conn.next_event() == cmd(Noop())


# --- STARTTLS ------------------------------------------------------------------


def test_discard_buffered_drops_injected_commands() -> None:
    # CVE-2011-0411: plaintext pipelined after STARTTLS must not survive the upgrade.
    injected = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<x@example.com>\r\n"
    conn = ServerConnection()
    conn.receive_data(b"STARTTLS\r\n" + injected)
    assert conn.next_event() == cmd(StartTls())
    assert conn.discard_buffered() == len(injected)
    assert conn.buffered == 0
    assert conn.next_event() == NeedData()
    conn.receive_data(b"EHLO again\r\n")
    assert conn.next_event() == cmd(Ehlo("again"))
    assert conn.discard_buffered() == 0


def test_discard_buffered_resets_a_pending_mode() -> None:
    conn = ServerConnection()
    conn.expect_line()
    conn.receive_data(b"junk")
    assert conn.discard_buffered() == 4
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() == cmd(Noop())


# --- DATA ----------------------------------------------------------------------


def body_events(body_wire: bytes) -> list[Event]:
    """Events for DATA + body_wire (which must include the end marker) + QUIT."""
    return feed([b"DATA\r\n" + body_wire + b"QUIT\r\n"])


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"Subject: x\r\n\r\nhello\r\n.\r\n", b"Subject: x\r\n\r\nhello\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n"),  # RFC 5321 §4.5.2: drop a lone leading dot too
        (b"a.\r\n.\r\n", b"a.\r\n"),
        (b"a\r\n. \r\n.\r\n", b"a\r\n \r\n"),
        (b"a\r\n\r\n..\r\n\r\n.\r\n", b"a\r\n\r\n.\r\n\r\n"),
        (b"\x00\xff\x80\r\n.\r\n", b"\x00\xff\x80\r\n"),
    ],
)
def test_data_body_with_dot_stuffing(wire: bytes, message: bytes) -> None:
    data = b"DATA\r\n" + wire + b"QUIT\r\n"
    expected: list[Event] = [cmd(Data())]
    if message:
        expected.append(BodyData(message))
    expected += [BodyEnd(), cmd(Quit())]
    for chunks in splits(data):
        assert feed(chunks) == expected, chunks


def test_data_at_every_byte_boundary_long_message() -> None:
    message = b"".join(b"..line %d\r\n" % i if i % 3 else b"line %d\r\n" % i for i in range(30))
    wire = message.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    data = b"DATA\r\n" + wire + b".\r\nNOOP\r\n"
    expected = [cmd(Data()), BodyData(message), BodyEnd(), cmd(Noop())]
    for chunks in splits(data):
        assert feed(chunks) == expected


def test_body_streams_and_holds_back_at_most_four_octets() -> None:
    conn = ServerConnection()
    conn.receive_data(b"DATA\r\n")
    assert conn.next_event() == cmd(Data())
    conn.start_data()
    got = b""
    line = b"x" * 70 + b"\r\n"
    for _ in range(100):
        for piece in (line[:10], line[10:71], line[71:]):
            conn.receive_data(piece)
            for event in drain(conn):
                assert isinstance(event, BodyData)
                got += event.data
            assert conn.buffered <= 4
    for piece in (b".", b"\r"):
        conn.receive_data(piece)
        assert conn.next_event() == NeedData()
    conn.receive_data(b"\n")
    events = drain(conn)
    assert events[-1] == BodyEnd()
    for event in events[:-1]:
        assert isinstance(event, BodyData)
        got += event.data
    assert got == line * 100


def test_body_is_not_parsed_as_commands_and_command_mode_resumes() -> None:
    wire = b"MAIL FROM:<x@y.z>\r\nQUIT\r\n.\r\nNOOP\r\n"
    assert feed([b"DATA\r\n" + wire]) == [
        cmd(Data()),
        BodyData(b"MAIL FROM:<x@y.z>\r\nQUIT\r\n"),
        BodyEnd(),
        cmd(Noop()),
    ]


def test_without_start_data_the_following_lines_are_commands() -> None:
    # RFC 2920 §3.1: if DATA is refused, the pipelined body is read as commands.
    conn = ServerConnection()
    conn.receive_data(b"DATA\r\nNOOP\r\n.\r\n")
    assert drain(conn, auto_data=False) == [
        cmd(Data()),
        cmd(Noop()),
        CommandRejected(replies.SYNTAX_ERROR),
    ]


def test_two_messages_back_to_back() -> None:
    data = b"DATA\r\none\r\n.\r\nDATA\r\ntwo\r\n.\r\n"
    expected = [
        cmd(Data()),
        BodyData(b"one\r\n"),
        BodyEnd(),
        cmd(Data()),
        BodyData(b"two\r\n"),
        BodyEnd(),
    ]
    for chunks in splits(data):
        assert feed(chunks) == expected


# --- SMTP smuggling ------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<admin@example.com>\r\n"
    b"RCPT TO:<victim@example.net>\r\n"
    b"DATA\r\n"
    b"From: admin@example.com\r\n\r\nsmuggled\r\n"
)

# Sequences some MTA may take for an end of data (CVE-2023-51766 and friends).
FAKE_ENDS = [
    b"\n.\r\n",
    b"\r\n.\n",
    b"\n.\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\r",
    b"\r.\n",
    b"\r\n.\r\r\n",
    b"\r\n\x00.\r\n",  # NUL is not a line ending: not even a bare one
    b"\r\n.\x00\r\n",
]


@pytest.mark.parametrize("fake", FAKE_ENDS, ids=[repr(f) for f in FAKE_ENDS])
def test_smuggling_sequences_never_end_the_body(fake: bytes) -> None:
    data = b"DATA\r\nSubject: hi\r\n\r\nbody" + fake + SMUGGLED + b"\r\n.\r\nQUIT\r\n"
    whole = feed([data])
    for chunks in splits(data):
        # How much body is streamed before a bare line ending is noticed depends on
        # the split; the framing (which events, in which order) must not.
        assert skeleton(feed(chunks)) == skeleton(whole)
    whole = skeleton(whole) if BodyRejected(replies.BARE_LINE_ENDING) in whole else whole
    kinds = [type(e) for e in whole]
    # Exactly one message, and the smuggled commands never surface as commands.
    assert kinds.count(CommandReceived) == 2
    assert whole[0] == cmd(Data())
    assert whole[-1] == cmd(Quit())
    end = whole[-2]
    bare = b"\r" in fake.replace(b"\r\n", b"") or b"\n" in fake.replace(b"\r\n", b"")
    if bare:
        assert end == BodyRejected(replies.BARE_LINE_ENDING)
    else:
        assert end == BodyEnd()
        assert isinstance(whole[1], BodyData)
        assert SMUGGLED in whole[1].data


@pytest.mark.parametrize(
    "wire",
    [
        b"a\nb\r\n.\r\n",
        b"a\rb\r\n.\r\n",
        b"a\r\r\n.\r\n",
        b"\n.\r\n\r\n.\r\n",
        b"\r\n\n\r\n.\r\n",
        b"line\r\n.\n\r\n.\r\n",
        b"a\r",  # completed below
    ],
)
def test_bare_cr_or_lf_rejects_the_message(wire: bytes) -> None:
    if wire == b"a\r":
        wire = b"a\rb\r\n.\r\n"
    data = b"DATA\r\n" + wire + b"NOOP\r\n"
    for chunks in splits(data):
        events = feed(chunks)
        assert events[-2:] == [BodyRejected(replies.BARE_LINE_ENDING), cmd(Noop())]
        # No emitted body piece carries a bare line ending.
        for event in events:
            if isinstance(event, BodyData):
                stripped = event.data.replace(b"\r\n", b"")
                assert b"\r" not in stripped and b"\n" not in stripped


def test_bare_cr_split_across_receive_calls() -> None:
    assert feed([b"DATA\r\nabc\r", b"def\r\n.\r\n"])[-1] == BodyRejected(replies.BARE_LINE_ENDING)
    assert feed([b"DATA\r\nabc\r", b"\ndef\r\n.\r\n"])[-1] == BodyEnd()


# --- BDAT ----------------------------------------------------------------------


def test_bdat_chunks_at_every_split() -> None:
    data = b"BDAT 11\r\n.\r\nQUIT\r\n\r\nBDAT 0 LAST\r\nNOOP\r\n"
    expected = [
        cmd(Bdat(11, False)),
        ChunkData(b".\r\nQUIT\r\n\r\n"),  # raw: no dot-unstuffing, no command parsing
        ChunkEnd(False),
        cmd(Bdat(0, True)),
        ChunkEnd(True),
        cmd(Noop()),
    ]
    for chunks in splits(data):
        assert feed(chunks) == expected


def test_bdat_last_with_data() -> None:
    assert feed([b"BDAT 3 LAST\r\nab", b"c", b"QUIT\r\n"]) == [
        cmd(Bdat(3, True)),
        ChunkData(b"abc"),
        ChunkEnd(True),
        cmd(Quit()),
    ]


def test_bdat_chunk_pieces_are_streamed() -> None:
    conn = ServerConnection()
    conn.receive_data(b"BDAT 1000000\r\n")
    assert conn.next_event() == cmd(Bdat(1000000, False))
    total = 0
    for _ in range(100):
        conn.receive_data(b"\n" * 10000)
        event = conn.next_event()
        assert isinstance(event, ChunkData)
        total += len(event.data)
        assert conn.buffered == 0
    assert total == 1000000
    assert conn.next_event() == ChunkEnd(False)


def test_bad_bdat_command_does_not_enter_chunk_mode() -> None:
    assert feed([b"BDAT x\r\nNOOP\r\n"]) == [
        CommandRejected(replies.PARAM_SYNTAX),
        cmd(Noop()),
    ]


def test_start_data_and_expect_line_are_ignored_inside_a_chunk() -> None:
    conn = ServerConnection()
    conn.receive_data(b"BDAT 4\r\nab")
    assert conn.next_event() == cmd(Bdat(4, False))
    conn.start_data()
    conn.expect_line()
    assert conn.next_event() == ChunkData(b"ab")
    conn.receive_data(b"\r\nNOOP\r\n")
    assert drain(conn) == [ChunkData(b"\r\n"), ChunkEnd(False), cmd(Noop())]


# --- end of file ---------------------------------------------------------------


def test_eof_after_buffered_events_are_drained() -> None:
    conn = ServerConnection()
    conn.receive_data(b"NOOP\r\nQUIT\r\nincomplete")
    conn.receive_eof()
    assert conn.next_event() == cmd(Noop())
    assert conn.next_event() == cmd(Quit())
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    conn.receive_data(b"NOOP\r\n")  # ignored after EOF
    assert conn.next_event() == ConnectionClosed()


@pytest.mark.parametrize(
    "data",
    [b"DATA\r\nhalf a message\r\n", b"DATA\r\n.", b"BDAT 10\r\nabc", b"x" * 5000],
)
def test_eof_in_the_middle_closes_without_completing(data: bytes) -> None:
    events = feed([data], eof=True)
    assert events[-1] == ConnectionClosed()
    assert not any(isinstance(e, (BodyEnd, BodyRejected, ChunkEnd)) for e in events)


def test_body_end_is_delivered_before_connection_closed() -> None:
    events = feed([b"DATA\r\nx\r\n.\r\n"], eof=True)
    assert events == [cmd(Data()), BodyData(b"x\r\n"), BodyEnd(), ConnectionClosed()]


# --- speed ---------------------------------------------------------------------


def test_decoding_a_10kb_message_is_fast() -> None:
    message = b"".join(
        b"Line %04d of a typical message body, not very long.\r\n" % i for i in range(190)
    )
    wire = b"DATA\r\n" + message + b".\r\n"
    assert len(message) > 10_000
    conn = ServerConnection()
    runs = 300
    best = float("inf")
    for _ in range(runs):
        conn.receive_data(wire)
        start = time.perf_counter()
        conn.next_event()
        conn.start_data()
        body = conn.next_event()
        end = conn.next_event()
        best = min(best, time.perf_counter() - start)
        assert isinstance(body, BodyData) and len(body.data) == len(message)
        assert end == BodyEnd()
    # Target is well under 100 µs; the bound is loose so a busy CI host does not flake.
    assert best < 500e-6, best
