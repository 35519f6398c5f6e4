"""The server side of a POP3 connection as a sans-I/O framer (bytes in, events out).

Purpose: split the byte stream from a client into command lines and hand them
out one typed event at a time. The service owns the socket and drives the
session; it feeds bytes with `receive_data`, drains `next_event` until
`NeedData`, and tells the framer when the stream changes meaning
(`expect_line` after a "+ " SASL challenge, `discard_buffered` after STLS).

Security (keep these true):
- The framer never reads ahead of the event it returns. Bytes after a command
  stay buffered until the service asks for the next event, so `expect_line`
  and `discard_buffered` apply exactly to the bytes that follow the command
  (RFC 2449 §6.6 PIPELINING).
- `discard_buffered` after "+OK" to STLS drops plaintext pipelined behind
  the STLS line, so it is never read as if it came through TLS
  (CVE-2011-0411, RFC 2595 §4).
- Memory is bounded: a line is held up to its limit, then reported once as
  `CommandRejected` and dropped as it arrives, however long it is.
- No input raises: malformed input becomes `CommandRejected`.

Standards: RFC 1939 §3 (CRLF-terminated commands), RFC 2449 §4 (lengths),
RFC 5034 §4 (SASL continuation lines).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from postwerk.protocols.pop3.commands import Command, Rejected
from postwerk.protocols.pop3.parser import parse_command

# RFC 2449 §4 requires 255 octets per command; 512 leaves room for long PASS
# and AUTH initial responses (design-m3-imap-pop.md, "Limits").
COMMAND_LINE_LIMIT: Final = 512
# SASL continuation lines: the same bound as SMTP AUTH (RFC 4954 §4).
AUTH_LINE_LIMIT: Final = 12288

LINE_TOO_LONG: Final = "line too long"


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing complete is buffered: read from the socket and call `receive_data`."""


@dataclass(frozen=True, slots=True)
class CommandReceived:
    command: Command


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A line that could not be parsed, or was too long; send `-ERR <text>`."""

    text: str


@dataclass(frozen=True, slots=True)
class LineReceived:
    """The raw line asked for by `expect_line`, without its line ending."""

    line: bytes


Event = NeedData | CommandReceived | CommandRejected | LineReceived


class _Mode(enum.Enum):
    COMMAND = enum.auto()
    LINE = enum.auto()  # one raw line for expect_line
    DISCARD = enum.auto()  # the rest of an over-long line


class Pop3Framer:
    """Incremental, pipelining-aware framer for the server side of POP3.

    Limits count the line ending as two octets: with `max_line=512` a command
    may carry 510 octets before its CRLF. A bare LF also ends a line (be
    liberal with commands); a CR elsewhere in a command is rejected by the
    parser.
    """

    def __init__(
        self, max_line: int = COMMAND_LINE_LIMIT, *, max_auth_line: int = AUTH_LINE_LIMIT
    ) -> None:
        self._max_line = max(max_line, 3)
        self._max_auth_line = max(max_auth_line, self._max_line)
        self._buf = bytearray()
        self._mode = _Mode.COMMAND

    def receive_data(self, data: bytes) -> None:
        if self._mode is _Mode.DISCARD:
            # Bound memory: keep only what follows the end of the over-long line.
            nl = data.find(b"\n")
            if nl < 0:
                return
            data = data[nl + 1 :]
            self._mode = _Mode.COMMAND
        self._buf += data

    def expect_line(self) -> None:
        """Call after sending a "+ " challenge: the next line is a SASL response.

        It comes back raw as `LineReceived` (RFC 5034 §4), up to `max_auth_line`.
        """
        if self._mode is _Mode.COMMAND:
            self._mode = _Mode.LINE

    def discard_buffered(self) -> int:
        """Drop every buffered byte and return to command mode; return the count.

        Call right after answering "+OK" to STLS and before the TLS handshake.
        """
        dropped = len(self._buf)
        self._buf.clear()
        self._mode = _Mode.COMMAND
        return dropped

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Event:
        if self._mode is _Mode.DISCARD:
            return NeedData()  # receive_data leaves this mode at the next LF
        buf = self._buf
        limit = self._max_auth_line if self._mode is _Mode.LINE else self._max_line
        # Look no further than the limit: a huge buffer is not scanned.
        nl = buf.find(b"\n", 0, limit)
        if nl < 0:
            if len(buf) < limit:
                return NeedData()
            # Over-long line: reject now, drop the rest of it as it arrives.
            self._mode = _Mode.COMMAND
            nl = buf.find(b"\n", limit)
            if nl < 0:
                buf.clear()
                self._mode = _Mode.DISCARD
            else:
                del buf[: nl + 1]
            return CommandRejected(LINE_TOO_LONG)
        # Only the CR of a CRLF is removed; a bare LF ends a line too.
        end = nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl
        line = bytes(buf[:end])
        del buf[: nl + 1]
        if end + 2 > limit:  # a line of limit-1 octets ending in a bare LF
            self._mode = _Mode.COMMAND
            return CommandRejected(LINE_TOO_LONG)
        if self._mode is _Mode.LINE:
            self._mode = _Mode.COMMAND
            return LineReceived(line)
        parsed = parse_command(line)
        if isinstance(parsed, Rejected):
            return CommandRejected(parsed.text)
        return CommandReceived(parsed)
