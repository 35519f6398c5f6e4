"""The server side of an IMAP4 connection as a sans-I/O framer (bytes in, events out).

Purpose: cut the client's byte stream into complete commands (text lines and
the literals between them), hand each to `parser.parse_command`, and say
when the service must act: send "+" for a synchronizing literal
(`LiteralNeeded`), refuse a literal (`LiteralRefused`), or read one raw line
(`expect_line`, for AUTHENTICATE continuations and IDLE's DONE). The service
owns the socket and the IMAP state machine; the framer never writes.

Security (these are the reasons this module exists, keep them true):
- Never reads ahead of the event it returns. Bytes after a command's final
  line stay buffered until the next `next_event`, so `expect_line` and
  `discard_buffered` (STARTTLS, RFC 9051 §11.1, CVE-2011-0411 class) apply
  exactly to the bytes that follow the command.
- Memory is bounded: the text of one command (all its lines, line endings
  counted) is at most `max_line` octets, the sum of its literals at most
  `max_literal`. A synchronizing literal over the limit is refused before
  the client sends it (RFC 9051 §7.5 / RFC 7889 TOOBIG); a non-synchronizing
  one (RFC 7888) is skipped as it arrives, never buffered, so
  `{999999999+}` costs nothing but time. An over-long line is dropped as it
  arrives, keeping only a few octets of its end.
- Literal data is never read as commands: when a refused or over-long line
  ends with a non-synchronizing literal announcement, its octets are skipped
  too, and so is the rest of that command.
- No input raises: malformed input becomes `CommandRejected`.

Standards: RFC 9051 §2.2 and §4.3 (lines, literals), RFC 3501, RFC 7888
(LITERAL+ / LITERAL-), RFC 3516 (literal8), RFC 2177 (IDLE), RFC 7889.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from postwerk.protocols.imap.commands import Command
from postwerk.protocols.imap.parser import CommandRejected, parse_command, parse_tag

DEFAULT_MAX_LINE = 65536  # Dovecot's limit; long UID sets from real clients fit
DEFAULT_MAX_LITERAL = 64 * 1024 * 1024  # the service passes its APPENDLIMIT
DEFAULT_MAX_NONSYNC_LITERAL = 4096  # RFC 7888 §4 LITERAL-

# A literal announcement at the end of a line; at most 20 digits keeps int() cheap.
_ANNOUNCEMENT = re.compile(rb"~?\{([0-9]{1,20})(\+?)\}\Z")
_TAIL = 32  # octets kept from a skipped line: enough for "~{" 20 digits "+}"


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing complete is buffered: read from the socket and call `receive_data`."""


@dataclass(frozen=True, slots=True)
class CommandReceived:
    command: Command


@dataclass(frozen=True, slots=True)
class LiteralNeeded:
    """A synchronizing literal `{size}` was announced and fits the limits.

    Send "+ Ready for literal data" and call `next_event` again. (To refuse
    it instead, answer the tag with NO and call `discard_command`.)
    """

    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class LiteralRefused:
    """A literal over the limits; the partial command is gone. Answer the tag.

    `synchronizing`: the client waits for "+" and sends nothing more
    (answer NO [TOOBIG]). Otherwise the literal and the rest of its command
    have already been skipped (answer BAD, RFC 7888 §4). `tag` is None if
    the command had no valid tag (answer `* BAD`).
    """

    tag: str | None
    size: int
    text: str
    synchronizing: bool


@dataclass(frozen=True, slots=True)
class LineReceived:
    """The raw line asked for by `expect_line`, without its line ending."""

    line: bytes


Event = NeedData | CommandReceived | CommandRejected | LiteralNeeded | LiteralRefused | LineReceived


class _Mode(enum.Enum):
    COMMAND = enum.auto()  # reading a line of a command
    LITERAL = enum.auto()  # reading `_need` literal octets into the command
    SKIP_LITERAL = enum.auto()  # dropping `_need` octets of a refused literal
    SKIP_LINE = enum.auto()  # dropping to the end of a refused command line
    RAW_LINE = enum.auto()  # one raw line for expect_line
    RAW_SKIP = enum.auto()  # dropping the rest of an over-long raw line


_SKIPPING = (_Mode.SKIP_LITERAL, _Mode.SKIP_LINE, _Mode.RAW_SKIP)


class CommandFramer:
    """Incremental, pipelining-aware framer for the server side of IMAP4.

    Drive it like this: `receive_data(bytes)`, then `next_event()` until
    `NeedData`; read more from the socket only after `NeedData` (that is
    what bounds `buffered`).
    """

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = DEFAULT_MAX_LITERAL,
        max_nonsync_literal: int = DEFAULT_MAX_NONSYNC_LITERAL,
    ) -> None:
        self._max_line = max(max_line, 16)
        self._max_literal = max(max_literal, 0)
        self._max_nonsync = max(min(max_nonsync_literal, self._max_literal), 0)
        self._buf = bytearray()
        self._mode = _Mode.COMMAND
        self._owed: Event | None = None  # reported when skipping ends
        self._need = 0  # literal octets still to read or skip
        self._tail = b""  # the last octets of a line being skipped
        self._scanned = 0  # buffered octets known to hold no LF (no rescans on slow input)
        # The command being assembled: text, literal, text, ... (see parser).
        self._pieces: list[bytes] = []
        self._tag: str | None = None
        self._text_total = 0
        self._literal_total = 0

    # --- input from the service ------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if data:
            self._buf += data
            self._skip()  # skipped octets are dropped on arrival: memory stays bounded

    def expect_line(self) -> None:
        """The next line is raw (`LineReceived`), not a command.

        Call after sending a "+" continuation for AUTHENTICATE (RFC 9051
        §6.2.2) or IDLE (RFC 2177 §3, waiting for DONE). Ignored in the
        middle of a command.
        """
        if self._mode is _Mode.COMMAND and not self._pieces and self._owed is None:
            self._mode = _Mode.RAW_LINE

    def discard_command(self) -> None:
        """Drop a command waiting for its synchronizing literal (after `LiteralNeeded`).

        For a service that answers NO instead of "+": the client sends no
        literal, and the next line is a new command.
        """
        if self._mode is _Mode.LITERAL:
            self._reset_command()
            self._mode = _Mode.COMMAND

    def discard_buffered(self) -> int:
        """Drop every buffered byte and any partial command; return the count.

        Call right after answering STARTTLS OK and before the TLS handshake:
        plaintext that came after the STARTTLS line must not be read as if it
        came through TLS (RFC 9051 §11.1, CVE-2011-0411).
        """
        dropped = len(self._buf)
        self._buf.clear()
        self._scanned = 0
        self._reset_command()
        self._mode = _Mode.COMMAND
        self._owed = None
        self._need = 0
        return dropped

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def set_literal_limits(self, max_literal: int, max_nonsync_literal: int) -> None:
        """Change the literal limits from the next announcement on.

        Keep them small before authentication (a LOGIN needs no megabytes)
        and raise `max_literal` to the APPENDLIMIT once the user is known.
        """
        self._max_literal = max(max_literal, 0)
        self._max_nonsync = max(min(max_nonsync_literal, self._max_literal), 0)

    # --- events ----------------------------------------------------------------------

    def next_event(self) -> Event:
        while True:
            self._skip()
            if self._mode in _SKIPPING:
                return NeedData()
            if self._owed is not None:
                owed, self._owed = self._owed, None
                return owed
            if self._mode is _Mode.LITERAL:
                if not self._read_literal():
                    return NeedData()
                continue
            if self._mode is _Mode.RAW_LINE:
                return self._raw_line()
            event = self._command_line()
            if event is not None:
                return event

    # --- command lines ---------------------------------------------------------------

    def _command_line(self) -> Event | None:
        """One line of a command; None when the command continues (read on)."""
        buf = self._buf
        room = self._max_line - self._text_total  # line endings count
        nl = buf.find(b"\n", self._scanned, max(room, 0))
        if nl < 0:
            if len(buf) < room:
                self._scanned = len(buf)
                return NeedData()
            self._scanned = 0
            tag = self._tag if self._pieces else parse_tag(bytes(buf[:room]))
            if tag is not None and len(tag) >= room:
                tag = None  # no end of it seen: an overlong token, not a tag to echo
            self._start_skip(_Mode.SKIP_LINE, CommandRejected(tag, "Command line too long"))
            return None
        line = bytes(buf[: nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl])
        del buf[: nl + 1]
        self._scanned = 0
        self._text_total += nl + 1
        if not self._pieces:
            self._tag = parse_tag(line)
        self._pieces.append(line)
        announced = _announcement(line)
        if announced is None:
            return self._finish()
        return self._literal_announced(*announced)

    def _finish(self) -> Event:
        parsed = parse_command(self._pieces)
        self._reset_command()
        if isinstance(parsed, CommandRejected):
            return parsed
        return CommandReceived(parsed)

    def _literal_announced(self, size: int, synchronizing: bool) -> Event | None:
        tag = self._tag
        room = self._max_literal - self._literal_total
        if synchronizing:
            if tag is None:
                # No "+" for a command we cannot answer by tag; nothing follows.
                self._reset_command()
                return CommandRejected(None, "Missing or invalid tag")
            if size > room:
                self._reset_command()
                return LiteralRefused(tag, size, "Literal too big", True)
            self._expect_literal(size)
            return LiteralNeeded(tag, size)
        if size > min(room, self._max_nonsync):
            # RFC 7888 §4: the octets are on their way; skip them, then answer.
            refused = LiteralRefused(tag, size, "Non-synchronizing literal too big", False)
            self._start_skip(_Mode.SKIP_LITERAL, refused)
            self._need = size
            return None
        self._expect_literal(size)
        return None

    def _expect_literal(self, size: int) -> None:
        self._mode = _Mode.LITERAL
        self._need = size
        self._literal_total += size

    def _read_literal(self) -> bool:
        if len(self._buf) < self._need:
            return False
        self._pieces.append(bytes(self._buf[: self._need]))
        del self._buf[: self._need]
        self._scanned = 0
        self._mode = _Mode.COMMAND
        return True

    def _reset_command(self) -> None:
        self._pieces = []
        self._tag = None
        self._text_total = 0
        self._literal_total = 0

    # --- raw lines (expect_line) -----------------------------------------------------

    def _raw_line(self) -> Event:
        buf = self._buf
        nl = buf.find(b"\n", self._scanned, self._max_line)
        if nl < 0:
            if len(buf) < self._max_line:
                self._scanned = len(buf)
                return NeedData()
            self._scanned = 0
            # The service knows which command waits for this line; it answers that tag.
            self._start_skip(_Mode.RAW_SKIP, CommandRejected(None, "Line too long"))
            return self.next_event()
        line = bytes(buf[: nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl])
        del buf[: nl + 1]
        self._scanned = 0
        self._mode = _Mode.COMMAND
        return LineReceived(line)

    # --- skipping --------------------------------------------------------------------

    def _start_skip(self, mode: _Mode, owed: Event) -> None:
        self._reset_command()
        self._mode = mode
        self._owed = owed
        self._tail = b""

    def _skip(self) -> None:
        """Drop buffered octets that belong to a refused command, and no more."""
        buf = self._buf
        if self._mode in _SKIPPING:
            self._scanned = 0
        while buf and self._mode in _SKIPPING:
            if self._mode is _Mode.SKIP_LITERAL:
                take = min(self._need, len(buf))
                del buf[:take]
                self._need -= take
                if self._need == 0:
                    self._mode = _Mode.SKIP_LINE  # the command goes on after its literal
                    self._tail = b""
                continue
            nl = buf.find(b"\n")
            if nl < 0:
                self._tail = (self._tail + bytes(buf[-_TAIL:]))[-_TAIL:]
                buf.clear()
                return
            end = (self._tail + bytes(buf[max(nl - _TAIL, 0) : nl])).removesuffix(b"\r")
            del buf[: nl + 1]
            announced = _announcement(end) if self._mode is _Mode.SKIP_LINE else None
            if announced is not None and not announced[1]:
                self._mode = _Mode.SKIP_LITERAL  # its data follows at once: skip it too
                self._need = announced[0]
            else:
                self._mode = _Mode.COMMAND


def _announcement(line: bytes) -> tuple[int, bool] | None:
    """(size, synchronizing) when the line ends with `{n}`, `{n+}` or `~{n}`."""
    m = _ANNOUNCEMENT.search(line, max(len(line) - _TAIL, 0))
    if m is None:
        return None
    return int(m.group(1)), not m.group(2)
