"""Framing tests for postwerk.protocols.imap.framer.CommandFramer."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from postwerk.protocols.imap import (
    Append,
    Authenticate,
    Capability,
    CommandFramer,
    CommandReceived,
    CommandRejected,
    Event,
    Idle,
    LineReceived,
    LiteralNeeded,
    LiteralRefused,
    Login,
    NeedData,
    Noop,
    StartTls,
)


def drain(framer: CommandFramer, *, auto_expect: bool = True) -> list[Event]:
    """Events until NeedData (excluded), like a service that says "+" to every literal.

    With auto_expect, IDLE and AUTHENTICATE without initial response get
    `expect_line` (the service sent its "+" continuation).
    """
    events: list[Event] = []
    for _ in range(10_000):
        event = framer.next_event()
        if isinstance(event, NeedData):
            return events
        events.append(event)
        if auto_expect and isinstance(event, CommandReceived):
            command = event.command
            if isinstance(command, Idle) or (
                isinstance(command, Authenticate) and command.initial_response is None
            ):
                framer.expect_line()
    raise AssertionError("framer did not reach NeedData")


def feed(chunks: Iterable[bytes], **limits: int) -> list[Event]:
    framer = CommandFramer(**limits)
    events: list[Event] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        events += drain(framer)
    return events


def bytewise(wire: bytes) -> list[bytes]:
    return [wire[i : i + 1] for i in range(len(wire))]


SESSION = (
    b"a1 CAPABILITY\r\n"
    b"a2 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n"
    b"a3 AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n"
    b"a4 APPEND INBOX (\\Seen) {12}\r\nSubject: x\r\n\r\n"
    b"a5 IDLE\n"  # bare LF is tolerated
    b"DONE\r\n"
    b"+ BAD TAG\r\n"
    b"a6 NOOP\r\n"
)

SESSION_EVENTS: list[Event] = [
    CommandReceived(Capability("a1")),
    LiteralNeeded("a2", 5),
    CommandReceived(Login("a2", "alice", "secret")),
    CommandReceived(Authenticate("a3", "PLAIN")),
    LineReceived(b"AGFsaWNlAHNlY3JldA=="),
    LiteralNeeded("a4", 12),
    CommandReceived(Append("a4", "INBOX", b"Subject: x\r\n", ("\\Seen",))),
    CommandReceived(Idle("a5")),
    LineReceived(b"DONE"),
    CommandRejected(None, "Missing or invalid tag"),
    CommandReceived(Noop("a6")),
]


def test_session_one_shot_and_bytewise_agree() -> None:
    assert feed([SESSION]) == SESSION_EVENTS
    assert feed(bytewise(SESSION)) == SESSION_EVENTS


@pytest.mark.parametrize("split", [1, 5, 13, 27, 64, 100])
def test_any_split_gives_the_same_events(split: int) -> None:
    chunks = [SESSION[i : i + split] for i in range(0, len(SESSION), split)]
    assert feed(chunks) == SESSION_EVENTS


def test_never_reads_ahead_of_the_event() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a NOOP\r\nb NOOP\r\n")
    assert framer.next_event() == CommandReceived(Noop("a"))
    assert framer.buffered == len(b"b NOOP\r\n")
    framer.receive_data(b"c LOGIN {1}\r\nx y\r\n")
    assert framer.next_event() == CommandReceived(Noop("b"))
    assert framer.next_event() == LiteralNeeded("c", 1)
    assert framer.buffered == len(b"x y\r\n")  # the literal waits for the next call
    assert framer.next_event() == CommandReceived(Login("c", "x", "y"))
    assert framer.next_event() == NeedData()


def test_synchronizing_literal_flow() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a LOGIN {5}\r\n")
    assert framer.next_event() == LiteralNeeded("a", 5)
    assert framer.next_event() == NeedData()
    framer.receive_data(b"ali")
    assert framer.next_event() == NeedData()
    framer.receive_data(b"ce {3}\r\n")
    assert framer.next_event() == LiteralNeeded("a", 3)
    framer.receive_data(b"pw!\r\n")
    assert framer.next_event() == CommandReceived(Login("a", "alice", "pw!"))


def test_literal_plus_needs_no_continuation() -> None:
    events = feed([b"a LOGIN {5+}\r\nalice {3+}\r\npw!\r\n"])
    assert events == [CommandReceived(Login("a", "alice", "pw!"))]


def test_literal8_append() -> None:
    events = feed([b"a APPEND INBOX ~{3}\r\n\x00\r\n\r\n"])
    assert events == [
        LiteralNeeded("a", 3),
        CommandReceived(Append("a", "INBOX", b"\x00\r\n", binary=True)),
    ]


def test_oversize_synchronizing_literal_is_refused_before_it_is_sent() -> None:
    framer = CommandFramer(max_literal=100)
    framer.receive_data(b"a APPEND INBOX {101}\r\nb NOOP\r\n")
    assert framer.next_event() == LiteralRefused("a", 101, "Literal too big", True)
    # The client got NO and sends no literal: the next line is a new command.
    assert framer.next_event() == CommandReceived(Noop("b"))


def test_huge_synchronizing_literal_never_allocates() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a APPEND INBOX {999999999}\r\n")
    event = framer.next_event()
    assert isinstance(event, LiteralRefused) and event.synchronizing and event.size == 999999999
    assert framer.buffered == 0


def test_oversize_nonsync_literal_is_skipped_then_refused() -> None:
    framer = CommandFramer(max_nonsync_literal=10)
    framer.receive_data(b"a APPEND INBOX {20+}\r\n")
    assert framer.next_event() == NeedData()  # skipping: nothing to report yet
    framer.receive_data(b"x" * 15)
    assert framer.buffered == 0  # skipped octets are not buffered
    assert framer.next_event() == NeedData()
    # The last 5 octets, the rest of the command (with a second literal), the next one.
    framer.receive_data(b"x" * 5 + b" {2+}\r\nzz\r\nb NOOP\r\n")
    refused = LiteralRefused("a", 20, "Non-synchronizing literal too big", False)
    assert framer.next_event() == refused
    assert framer.next_event() == CommandReceived(Noop("b"))
    assert framer.next_event() == NeedData()


def test_huge_nonsync_literal_is_skipped_without_buffering() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a APPEND INBOX {999999999+}\r\n")
    assert framer.next_event() == NeedData()
    for _ in range(100):
        framer.receive_data(b"b NOOP\r\n" * 1000)
        assert framer.buffered == 0
        assert framer.next_event() == NeedData()


def test_nonsync_literal_within_limit_but_total_over_max_literal() -> None:
    events = feed([b"a LOGIN {8+}\r\n12345678 {8+}\r\n12345678\r\nb NOOP\r\n"], max_literal=10)
    assert events == [
        LiteralRefused("a", 8, "Non-synchronizing literal too big", False),
        CommandReceived(Noop("b")),
    ]


def test_total_literal_size_counts_every_literal() -> None:
    framer = CommandFramer(max_literal=10)
    framer.receive_data(b"a LOGIN {6}\r\n")
    assert framer.next_event() == LiteralNeeded("a", 6)
    framer.receive_data(b"123456 {5}\r\nb NOOP\r\n")
    assert framer.next_event() == LiteralRefused("a", 5, "Literal too big", True)
    assert framer.next_event() == CommandReceived(Noop("b"))


def test_sync_literal_without_a_valid_tag_gets_no_continuation() -> None:
    events = feed([b"+x LOGIN {5}\r\nb NOOP\r\n"])
    assert events == [CommandRejected(None, "Missing or invalid tag"), CommandReceived(Noop("b"))]


def test_discard_command_after_literal_needed() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a APPEND Nonexistent {5}\r\n")
    assert framer.next_event() == LiteralNeeded("a", 5)
    framer.discard_command()  # the service answered NO [TRYCREATE] instead of "+"
    framer.receive_data(b"b NOOP\r\n")
    assert framer.next_event() == CommandReceived(Noop("b"))


def test_over_long_line_is_rejected_and_memory_stays_bounded() -> None:
    framer = CommandFramer(max_line=100)
    framer.receive_data(b"a1 NOOP " + b"x" * 200)
    assert framer.next_event() == NeedData()  # rejection comes once the line is over
    assert framer.buffered == 0
    for _ in range(100):
        framer.receive_data(b"y" * 1000)
        assert framer.buffered == 0
    framer.receive_data(b"\r\nb NOOP\r\n")
    assert framer.next_event() == CommandRejected("a1", "Command line too long")
    assert framer.next_event() == CommandReceived(Noop("b"))


def test_line_of_exactly_max_line_is_accepted() -> None:
    line = b"a LOGIN x " + b"y" * 88 + b"\r\n"
    assert len(line) == 100
    assert feed([line], max_line=100) == [CommandReceived(Login("a", "x", "y" * 88))]
    assert feed([b"a" + line], max_line=100) == [CommandRejected("aa", "Command line too long")]


def test_over_long_line_of_one_token_echoes_no_tag() -> None:
    # A "tag" whose end was never seen is not echoed back (it could be 64 KiB).
    line = b"x" * 300 + b" NOOP\r\n"
    assert feed([line], max_line=100) == [CommandRejected(None, "Command line too long")]


def test_over_long_line_ending_in_nonsync_literal_skips_the_literal() -> None:
    wire = b"a APPEND INBOX " + b"x" * 200 + b" {9+}\r\nb NOOP\r\n\r\nc NOOP\r\n"
    for chunks in ([wire], bytewise(wire)):
        events = feed(chunks, max_line=100)
        assert events == [
            CommandRejected("a", "Command line too long"),
            CommandReceived(Noop("c")),
        ]


def test_command_text_limit_spans_literals() -> None:
    wire = b"a LOGIN {1+}\r\nx " + b"y" * 95 + b"\r\nb NOOP\r\n"
    assert feed([wire], max_line=100) == [
        CommandRejected("a", "Command line too long"),
        CommandReceived(Noop("b")),
    ]


def test_idle_done_line_mode() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a IDLE\r\n")
    assert framer.next_event() == CommandReceived(Idle("a"))
    framer.expect_line()  # after "+ idling"
    assert framer.next_event() == NeedData()
    framer.receive_data(b"DO")
    assert framer.next_event() == NeedData()
    framer.receive_data(b"NE\r\nb NOOP\r\n")
    assert framer.next_event() == LineReceived(b"DONE")
    assert framer.next_event() == CommandReceived(Noop("b"))


def test_raw_line_is_not_parsed_for_literals() -> None:
    framer = CommandFramer()
    framer.expect_line()
    framer.receive_data(b"abc {5}\r\n")
    assert framer.next_event() == LineReceived(b"abc {5}")


def test_over_long_raw_line() -> None:
    framer = CommandFramer(max_line=50)
    framer.expect_line()
    framer.receive_data(b"A" * 80)
    assert framer.next_event() == NeedData()
    framer.receive_data(b"A" * 80 + b"\r\nb NOOP\r\n")
    assert framer.next_event() == CommandRejected(None, "Line too long")
    assert framer.next_event() == CommandReceived(Noop("b"))


def test_expect_line_is_ignored_inside_a_command() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a LOGIN {1}\r\n")
    assert framer.next_event() == LiteralNeeded("a", 1)
    framer.expect_line()
    framer.receive_data(b"x y\r\n")
    assert framer.next_event() == CommandReceived(Login("a", "x", "y"))


def test_starttls_discards_pipelined_plaintext() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a STARTTLS\r\nb LOGIN evil injected\r\n")
    assert framer.next_event() == CommandReceived(StartTls("a"))
    assert framer.discard_buffered() == len(b"b LOGIN evil injected\r\n")
    assert framer.buffered == 0
    assert framer.next_event() == NeedData()
    framer.receive_data(b"c NOOP\r\n")  # after the handshake
    assert framer.next_event() == CommandReceived(Noop("c"))


def test_discard_buffered_resets_a_skip_in_progress() -> None:
    framer = CommandFramer(max_line=20)
    framer.receive_data(b"a " + b"x" * 40)
    assert framer.next_event() == NeedData()
    framer.discard_buffered()
    framer.receive_data(b"b NOOP\r\n")
    assert framer.next_event() == CommandReceived(Noop("b"))


def test_bare_lf_and_crlf_both_end_lines() -> None:
    assert feed([b"a NOOP\nb NOOP\r\n"]) == [
        CommandReceived(Noop("a")),
        CommandReceived(Noop("b")),
    ]
    # A bare CR inside a line is not a line end, and not valid syntax.
    assert feed([b"a NOOP\rb NOOP\r\n"]) == [
        CommandRejected("a", "This command takes no arguments")
    ]


def test_empty_line_is_rejected_untagged() -> None:
    assert feed([b"\r\n"]) == [CommandRejected(None, "Missing or invalid tag")]


def test_literal_limits_can_change_after_login() -> None:
    framer = CommandFramer(max_literal=10, max_nonsync_literal=10)
    framer.receive_data(b"a LOGIN {20}\r\n")
    assert framer.next_event() == LiteralRefused("a", 20, "Literal too big", True)
    framer.set_literal_limits(1000, 100)
    framer.receive_data(b"b APPEND INBOX {20+}\r\n" + b"x" * 20 + b"\r\n")
    assert framer.next_event() == CommandReceived(Append("b", "INBOX", b"x" * 20))
