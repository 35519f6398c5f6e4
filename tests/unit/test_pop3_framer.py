"""Framing tests for postwerk.protocols.pop3.connection.Pop3Framer."""

from __future__ import annotations

import pytest

from postwerk.protocols.pop3 import (
    Auth,
    CommandReceived,
    CommandRejected,
    Event,
    LineReceived,
    List,
    NeedData,
    Pass,
    Pop3Framer,
    Quit,
    Retr,
    Stat,
    Stls,
    User,
)
from postwerk.protocols.pop3.connection import LINE_TOO_LONG
from postwerk.protocols.pop3.parser import UNKNOWN_COMMAND


def drain(framer: Pop3Framer) -> list[Event]:
    events: list[Event] = []
    while not isinstance(event := framer.next_event(), NeedData):
        events.append(event)
    return events


def feed(framer: Pop3Framer, data: bytes) -> list[Event]:
    framer.receive_data(data)
    return drain(framer)


def test_one_command() -> None:
    framer = Pop3Framer()
    assert framer.next_event() == NeedData()
    assert feed(framer, b"STAT\r\n") == [CommandReceived(Stat())]
    assert framer.buffered == 0


def test_bare_lf_ends_a_command() -> None:
    assert feed(Pop3Framer(), b"USER alice\nPASS s p\n") == [
        CommandReceived(User("alice")),
        CommandReceived(Pass("s p")),
    ]


def test_partial_line_waits_at_every_split() -> None:
    wire = b"USER alice\r\nRETR 1\r\nQUIT\r\n"
    expected = [CommandReceived(User("alice")), CommandReceived(Retr(1)), CommandReceived(Quit())]
    for cut in range(len(wire) + 1):
        framer = Pop3Framer()
        events = feed(framer, wire[:cut]) + feed(framer, wire[cut:])
        assert events == expected, cut


def test_bytewise_feed() -> None:
    framer = Pop3Framer()
    events: list[Event] = []
    for byte in b"LIST 2\r\nSTAT\r\n":
        events += feed(framer, bytes([byte]))
    assert events == [CommandReceived(List(2)), CommandReceived(Stat())]


def test_never_reads_ahead() -> None:
    # RFC 2449 §6.6 PIPELINING: the bytes after a command stay raw until asked for.
    framer = Pop3Framer()
    framer.receive_data(b"STAT\r\nLIST\r\nQUIT\r\n")
    assert framer.next_event() == CommandReceived(Stat())
    assert framer.buffered == len(b"LIST\r\nQUIT\r\n")
    assert framer.next_event() == CommandReceived(List(None))
    assert framer.buffered == len(b"QUIT\r\n")


def test_rejected_command_keeps_going() -> None:
    assert feed(Pop3Framer(), b"HELO x\r\nSTAT\r\n") == [
        CommandRejected(UNKNOWN_COMMAND.text),
        CommandReceived(Stat()),
    ]


def test_cr_inside_a_line_is_rejected() -> None:
    events = feed(Pop3Framer(), b"USER a\rb\r\nSTAT\r\n")
    assert isinstance(events[0], CommandRejected)
    assert events[1] == CommandReceived(Stat())


# --- limits ----------------------------------------------------------------------


def test_line_at_limit_is_accepted() -> None:
    # 512 with the CRLF (two octets even when it is a bare LF).
    password = b"x" * (512 - len(b"PASS \r\n"))
    framer = Pop3Framer()
    assert feed(framer, b"PASS " + password + b"\r\n") == [CommandReceived(Pass(password.decode()))]
    assert feed(framer, b"PASS " + password + b"\n") == [CommandReceived(Pass(password.decode()))]


def test_line_one_over_limit_is_rejected() -> None:
    password = b"x" * (513 - len(b"PASS \r\n"))
    framer = Pop3Framer()
    assert feed(framer, b"PASS " + password + b"\r\nSTAT\r\n") == [
        CommandRejected(LINE_TOO_LONG),
        CommandReceived(Stat()),
    ]
    assert feed(framer, b"PASS " + password + b"\nSTAT\r\n") == [
        CommandRejected(LINE_TOO_LONG),
        CommandReceived(Stat()),
    ]


def test_overlong_line_is_rejected_once_and_dropped_as_it_arrives() -> None:
    framer = Pop3Framer(max_line=64)
    assert feed(framer, b"A" * 100) == [CommandRejected(LINE_TOO_LONG)]
    assert framer.buffered == 0
    for _ in range(1000):
        assert feed(framer, b"B" * 1000) == []
        assert framer.buffered == 0  # memory stays bounded
    assert feed(framer, b"tail\r\nSTAT\r\n") == [CommandReceived(Stat())]


def test_overlong_line_with_end_in_same_chunk() -> None:
    framer = Pop3Framer(max_line=16)
    assert feed(framer, b"X" * 40 + b"\r\nQUIT\r\n") == [
        CommandRejected(LINE_TOO_LONG),
        CommandReceived(Quit()),
    ]


def test_buffer_never_exceeds_what_was_fed_below_limit() -> None:
    framer = Pop3Framer(max_line=32)
    framer.receive_data(b"x" * 31)
    assert framer.next_event() == NeedData()
    assert framer.buffered == 31


# --- SASL continuation lines -------------------------------------------------------


def test_expect_line_returns_the_raw_line() -> None:
    framer = Pop3Framer()
    assert feed(framer, b"AUTH PLAIN\r\n") == [CommandReceived(Auth("PLAIN"))]
    framer.expect_line()
    assert feed(framer, b"AGFsaWNlAHNlY3JldA==\r\nSTAT\r\n") == [
        LineReceived(b"AGFsaWNlAHNlY3JldA=="),
        CommandReceived(Stat()),
    ]


def test_expect_line_applies_to_pipelined_bytes() -> None:
    framer = Pop3Framer()
    framer.receive_data(b"AUTH LOGIN\r\nYWxpY2U=\r\n*\r\n")
    assert framer.next_event() == CommandReceived(Auth("LOGIN"))
    framer.expect_line()
    assert framer.next_event() == LineReceived(b"YWxpY2U=")
    framer.expect_line()
    assert framer.next_event() == LineReceived(b"*")
    assert framer.next_event() == NeedData()


def test_auth_line_may_be_long() -> None:
    framer = Pop3Framer()
    framer.expect_line()
    line = b"A" * (12288 - 2)
    assert feed(framer, line + b"\r\n") == [LineReceived(line)]
    framer.expect_line()
    assert feed(framer, line + b"A\r\nQUIT\r\n") == [
        CommandRejected(LINE_TOO_LONG),
        CommandReceived(Quit()),  # back in command mode after the rejection
    ]


def test_command_lines_do_not_get_the_auth_limit() -> None:
    framer = Pop3Framer()
    assert feed(framer, b"AUTH PLAIN " + b"A" * 600 + b"\r\n") == [CommandRejected(LINE_TOO_LONG)]


def test_expect_line_keeps_control_bytes_for_the_sasl_layer() -> None:
    framer = Pop3Framer()
    framer.expect_line()
    assert feed(framer, b"a\x00b\rc\r\n") == [LineReceived(b"a\x00b\rc")]


# --- STLS ---------------------------------------------------------------------------


def test_discard_buffered_after_stls() -> None:
    # CVE-2011-0411: plaintext pipelined after STLS must not survive the handshake.
    framer = Pop3Framer()
    framer.receive_data(b"STLS\r\nUSER evil\r\nPASS x\r\n")
    assert framer.next_event() == CommandReceived(Stls())
    assert framer.discard_buffered() == len(b"USER evil\r\nPASS x\r\n")
    assert framer.buffered == 0
    assert framer.next_event() == NeedData()
    assert feed(framer, b"USER alice\r\n") == [CommandReceived(User("alice"))]


def test_discard_buffered_leaves_discard_and_line_modes() -> None:
    framer = Pop3Framer(max_line=8)
    assert feed(framer, b"x" * 20) == [CommandRejected(LINE_TOO_LONG)]
    framer.discard_buffered()
    assert feed(framer, b"STAT\r\n") == [CommandReceived(Stat())]
    framer.expect_line()
    framer.discard_buffered()
    assert feed(framer, b"STAT\r\n") == [CommandReceived(Stat())]


@pytest.mark.parametrize("max_line", [-5, 0, 1, 2, 3])
def test_tiny_limits_do_not_break(max_line: int) -> None:
    framer = Pop3Framer(max_line=max_line, max_auth_line=0)
    events = feed(framer, b"STAT\r\n\r\nQUIT\r\n")
    assert events
    assert all(isinstance(e, CommandRejected) for e in events)
