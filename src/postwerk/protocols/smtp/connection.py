"""The server side of an SMTP connection as a sans-I/O framer (bytes in, events out).

Purpose: split the byte stream from a client into command lines, DATA bodies
and BDAT chunks, and hand them out one typed event at a time. The service owns
the socket and the SMTP state machine; it feeds bytes with `receive_data`,
drains `next_event` until `NeedData`, and tells the framer when the stream
changes meaning (`start_data` after 354, `expect_line` after 334).

Security (these are the reasons this module exists, keep them true):
- The framer never reads ahead of the event it returns. Bytes after a command
  stay buffered until the service asked for the next event, so a mode switch
  (`start_data`, `expect_line`, `discard_buffered`) applies exactly to the
  bytes that follow the command (RFC 2920 §3.1).
- A DATA body ends only at <CRLF>.<CRLF> (RFC 5321 §4.1.1.4). Any bare CR or
  bare LF in the body rejects the whole message (RFC 5321 §2.3.8), so no
  peer's idea of "end of data" can differ from ours: SMTP smuggling
  (CVE-2023-51766, CVE-2023-51764, CVE-2023-51765) cannot split one message
  into two.
- Memory is bounded: a command line is held up to its limit and then
  discarded as it arrives; body and chunk data are streamed out, holding back
  at most four octets that might begin the end marker.
- No input raises: malformed input becomes `CommandRejected` / `BodyRejected`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from postwerk.core import replies
from postwerk.core.replies import Reply
from postwerk.protocols.smtp.commands import Bdat, Command
from postwerk.protocols.smtp.parser import parse_command

# RFC 4954 §4: AUTH lines (command and continuation) may be up to 12288 octets.
AUTH_LINE_LIMIT = 12288


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing complete is buffered: read from the socket and call `receive_data`."""


@dataclass(frozen=True, slots=True)
class CommandReceived:
    command: Command


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A command line that could not be parsed (or was too long); send `reply`."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class LineReceived:
    """The raw line asked for by `expect_line`, without its line ending."""

    line: bytes


@dataclass(frozen=True, slots=True)
class BodyData:
    """A piece of the DATA body: CRLF line endings, dots already unstuffed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The <CRLF>.<CRLF> end marker was seen; the body is complete."""


@dataclass(frozen=True, slots=True)
class BodyRejected:
    """The body ended but must not be accepted; discard it and send `reply`."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class ChunkData:
    """A piece of a BDAT chunk, verbatim (RFC 3030: no dot-stuffing)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """All `size` octets of the BDAT chunk were consumed; `last` as in the command."""

    last: bool


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side; any unfinished command, body or chunk is void."""


Event = (
    NeedData
    | CommandReceived
    | CommandRejected
    | LineReceived
    | BodyData
    | BodyEnd
    | BodyRejected
    | ChunkData
    | ChunkEnd
    | ConnectionClosed
)


class _Mode(enum.Enum):
    COMMAND = enum.auto()
    LINE = enum.auto()  # one raw line for expect_line
    DISCARD = enum.auto()  # the rest of an over-long line
    DATA = enum.auto()
    CHUNK = enum.auto()


class ServerConnection:
    """Incremental, pipelining-aware framer for the server side of SMTP.

    `smtputf8` is set by the service while the current transaction was opened
    with SMTPUTF8 (RFC 6531 §3.4); it lets RCPT addresses contain UTF-8.
    """

    def __init__(
        self, max_command_line: int = 2048, *, max_auth_line: int = AUTH_LINE_LIMIT
    ) -> None:
        # Limits count the line ending as two octets, like RFC 5321 §4.5.3.1.4.
        self._max_line = max(max_command_line, 3)
        self._max_auth_line = max(max_auth_line, self._max_line)
        self._buf = bytearray()
        self._mode = _Mode.COMMAND
        self._eof = False
        self.smtputf8 = False
        # DATA state
        self._line_start = True  # at the first octet of the body
        self._body_bad = False  # a bare CR or LF was seen: reject at the end
        self._body_ended: Event | None = None  # BodyEnd/BodyRejected owed after BodyData
        # BDAT state
        self._chunk_left = 0
        self._chunk_last = False

    # --- input from the service ------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._eof or not data:
            return
        if self._mode is _Mode.DISCARD:
            # Bound memory: keep only what follows the end of the over-long line.
            nl = data.find(b"\n")
            if nl < 0:
                return
            data = data[nl + 1 :]
            self._mode = _Mode.COMMAND
        self._buf += data

    def receive_eof(self) -> None:
        self._eof = True

    def start_data(self) -> None:
        """Call after sending 354: the following bytes are a DATA body."""
        if self._mode in (_Mode.COMMAND, _Mode.LINE):
            self._mode = _Mode.DATA
            self._line_start = True  # the DATA command's CRLF precedes the body
            self._body_bad = False
            self._body_ended = None

    def expect_line(self) -> None:
        """Call after sending 334: the next line is an AUTH response (RFC 4954 §4)."""
        if self._mode is _Mode.COMMAND:
            self._mode = _Mode.LINE

    def discard_buffered(self) -> int:
        """Drop every buffered byte and return to command mode; return the count.

        Call right after STARTTLS is accepted and before the TLS handshake:
        plaintext that arrived after the STARTTLS line must not be read as if it
        came through TLS (CVE-2011-0411, RFC 3207 §4.2).
        """
        dropped = len(self._buf)
        self._buf.clear()
        self._mode = _Mode.COMMAND
        self._chunk_left = 0
        self._body_ended = None
        return dropped

    @property
    def buffered(self) -> int:
        return len(self._buf)

    # --- events ----------------------------------------------------------------

    def next_event(self) -> Event:
        if self._mode is _Mode.DATA:
            event = self._next_body_event()
        elif self._mode is _Mode.CHUNK:
            event = self._next_chunk_event()
        else:
            event = self._next_line_event()
        if isinstance(event, NeedData) and self._eof:
            return ConnectionClosed()
        return event

    # --- command lines ---------------------------------------------------------

    def _line_limit(self) -> int:
        if self._mode is _Mode.LINE or self._buf[:5].upper() == b"AUTH ":
            return self._max_auth_line
        return self._max_line

    def _next_line_event(self) -> Event:
        if self._mode is _Mode.DISCARD:
            return NeedData()  # receive_data leaves this mode at the next LF
        buf = self._buf
        limit = self._line_limit()
        # Only look as far as the limit allows: a huge buffer is not scanned twice.
        nl = buf.find(b"\n", 0, limit)
        if nl < 0:
            if len(buf) < limit:
                return NeedData()
            # Over-long line (RFC 5321 §4.5.3.1.4): reject now, drop it as it arrives.
            self._mode = _Mode.COMMAND
            nl = buf.find(b"\n", limit)
            if nl < 0:
                buf.clear()
                self._mode = _Mode.DISCARD
            else:
                del buf[: nl + 1]
            return CommandRejected(replies.LINE_TOO_LONG)
        # A bare LF ends a command line too; only the CR of a CRLF is removed.
        end = nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl
        if end + 2 > limit:
            del buf[: nl + 1]
            self._mode = _Mode.COMMAND
            return CommandRejected(replies.LINE_TOO_LONG)
        line = bytes(buf[:end])
        del buf[: nl + 1]
        if self._mode is _Mode.LINE:
            self._mode = _Mode.COMMAND
            return LineReceived(line)
        parsed = parse_command(line, self.smtputf8)
        if isinstance(parsed, Reply):
            return CommandRejected(parsed)
        if isinstance(parsed, Bdat):
            # RFC 3030 §2: the chunk follows whatever the server will answer.
            self._mode = _Mode.CHUNK
            self._chunk_left = parsed.size
            self._chunk_last = parsed.last
        return CommandReceived(parsed)

    # --- BDAT chunks -----------------------------------------------------------

    def _next_chunk_event(self) -> Event:
        if self._chunk_left == 0:
            self._mode = _Mode.COMMAND
            return ChunkEnd(self._chunk_last)
        if not self._buf:
            return NeedData()
        take = min(self._chunk_left, len(self._buf))
        data = bytes(self._buf[:take])
        del self._buf[:take]
        self._chunk_left -= take
        return ChunkData(data)

    # --- DATA body -------------------------------------------------------------

    def _next_body_event(self) -> Event:
        if self._body_ended is not None:
            owed, self._body_ended = self._body_ended, None
            self._mode = _Mode.COMMAND
            return owed
        data, ended = self._scan_body()
        if ended:
            end_event: Event = (
                BodyRejected(replies.BARE_LINE_ENDING) if self._body_bad else BodyEnd()
            )
            if data:
                self._body_ended = end_event  # owed on the next call, after the data
                return BodyData(data)
            self._mode = _Mode.COMMAND
            return end_event
        return BodyData(data) if data else NeedData()

    def _scan_body(self) -> tuple[bytes, bool]:
        """Take body octets from the buffer: (unstuffed data, whether the body ended).

        One pass of C-level `find`/`count`/`replace` per call, whatever the
        size of the buffer. Invariant between calls: the buffer never starts
        in the middle of a CRLF or of an end marker, because any suffix that
        could begin one ("\r", "\r\n", "\r\n.", "\r\n.\r") is held back.
        """
        buf = self._buf
        n = len(buf)
        pos = 0
        if self._line_start:
            # The very start of the body follows the CRLF of the DATA line, so a
            # dot here is either the end of an empty body or a stuffed dot.
            if n == 0:
                return b"", False
            if buf[0] == 0x2E:  # "."
                if n == 1 or (n == 2 and buf[1] == 0x0D):
                    return b"", False  # ".", ".\r": wait for the octet that decides
                if buf[1:3] == b"\r\n":
                    del buf[:3]
                    return b"", True
                pos = 1  # RFC 5321 §4.5.2: drop the stuffed dot
            self._line_start = False
        # RFC 5321 §4.1.1.4: only <CRLF>.<CRLF> ends the body; its CRLF is body text.
        end = buf.find(_END_MARKER, pos)
        if end >= 0:
            stop = end + 2
            consumed = end + len(_END_MARKER)
        else:
            stop = n - _partial_marker(buf, pos)
            consumed = stop
        data = b""
        if stop > pos and not self._body_bad:
            segment = bytes(buf[pos:stop])
            crlf = segment.count(b"\r\n")
            # RFC 5321 §2.3.8: CR and LF only as a CRLF pair. A bare one anywhere
            # rejects the message, so no other reading of the stream can find an
            # end of data where we do not (SMTP smuggling).
            if segment.count(b"\r") != crlf or segment.count(b"\n") != crlf:
                self._body_bad = True
            else:
                # RFC 5321 §4.5.2: remove the first dot of every line that has one.
                data = segment.replace(b"\r\n.", b"\r\n")
        del buf[:consumed]
        return data, end >= 0


_END_MARKER = b"\r\n.\r\n"


def _partial_marker(buf: bytearray, pos: int) -> int:
    """Length of the longest suffix of buf[pos:] that is a proper prefix of the end marker."""
    for size in (4, 3, 2, 1):
        if len(buf) - pos >= size and buf.endswith(_END_MARKER[:size]):
            return size
    return 0
