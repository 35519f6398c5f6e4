"""The client side of SMTP as sans-I/O pieces: reply bytes in, command bytes out.

Purpose: everything the outbound client (transport/smtp_client.py) needs to know
about the protocol, with no socket in sight, so that it can be tested with
tables and fuzzing:

- `ReplyReader`: an incremental parser of server replies (RFC 5321 §4.2),
  multi-line replies included, with bounded memory.
- `ServerReply`: one reply, with the enhanced status code split off (RFC 2034,
  RFC 3463) or synthesized.
- `Extensions`: the EHLO reply as keywords and parameters.
- `DotStuffer`: `dot_stuff` for a body that arrives in pieces (a relay that
  forwards a message as it is received).
- `Transaction`: one mail transaction planned for a peer's extensions: the
  commands to write (all at once under PIPELINING, RFC 2920; one at a time
  otherwise), the body framed as dot-stuffed DATA or as BDAT (CHUNKING, RFC 3030),
  and the bookkeeping that maps the replies read back onto the recipients.

Security: replies are untrusted input. A line longer than `max_line` or a reply
of more than `max_lines` lines is a protocol error, never an allocation; so is
anything that is not `ddd`, `ddd-text` or `ddd text`, or a continuation whose
code differs from the first line's. Addresses and parameters are checked for
CR/LF by the caller's message type before they reach the wire.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "BDAT_CHUNK",
    "DotStuffer",
    "Extensions",
    "ReplyError",
    "ReplyReader",
    "ServerReply",
    "Step",
    "Transaction",
    "dot_stuff",
    "mail_command",
    "rcpt_command",
]

# RFC 5321 §4.5.3.1.5 puts a reply line at 512 octets; real servers send longer
# texts (and long EHLO AUTH lines), so be liberal but bounded.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 200
BDAT_CHUNK = 1 << 20  # one chunk per message up to 1 MiB; larger bodies in 1 MiB chunks

_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:[ \t]+|$)")  # ASCII digits only


class ReplyError(Exception):
    """The peer sent something that is not an SMTP reply; the session is unusable."""


@dataclass(frozen=True, slots=True)
class ServerReply:
    """One reply from the server: its code and the text of each line."""

    code: int
    lines: tuple[str, ...]

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def status(self) -> str:
        """The first enhanced status code in the reply, or the synthesized `<class>.0.0`."""
        return self._split()[0]

    @property
    def text(self) -> str:
        """The text without enhanced status codes, the lines joined by spaces."""
        return self._split()[1]

    def _split(self) -> tuple[str, str]:
        cls = str(self.code)[:1]
        status: str | None = None
        parts: list[str] = []
        for raw in self.lines:
            line = raw.strip()
            m = _ENHANCED.match(line)
            # RFC 3463 §2: the class must be the reply code's, or the detail is bogus.
            if m is not None and m.group(1) == cls:
                if status is None:
                    status = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
                line = line[m.end() :]
            if line:
                parts.append(line)
        if status is None:
            # What Postfix synthesizes; a code outside 2/4/5 is made transient.
            status = f"{cls}.0.0" if cls in "245" else "4.0.0"
        return status, " ".join(parts)


class ReplyReader:
    """Bytes from the server in, complete replies out (`feed`, then `next_reply`)."""

    def __init__(self, *, max_line: int = MAX_REPLY_LINE, max_lines: int = MAX_REPLY_LINES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._lines: list[str] = []
        self._code = 0
        self._max_line = max_line
        self._max_lines = max_lines

    @property
    def buffered(self) -> int:
        """Octets received and not yet part of a returned reply."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_reply(self) -> ServerReply | None:
        """The next complete reply, or None until more bytes arrive; raises ReplyError."""
        buf = self._buf
        while True:
            end = buf.find(b"\n", self._pos)
            if end < 0:
                if len(buf) - self._pos > self._max_line:
                    raise ReplyError(f"reply line longer than {self._max_line} octets")
                return None
            if end - self._pos > self._max_line:
                raise ReplyError(f"reply line longer than {self._max_line} octets")
            line = bytes(buf[self._pos : end])
            self._pos = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]  # a bare LF is accepted: many servers are sloppy here
            reply = self._line(line)
            if reply is not None:
                return reply

    def _line(self, line: bytes) -> ServerReply | None:
        if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345":
            raise ReplyError(f"malformed reply line {line[:40]!r}")
        if len(line) > 3 and line[3:4] not in b" -":
            raise ReplyError(f"malformed reply line {line[:40]!r}")
        code = int(line[:3])
        if self._lines and code != self._code:
            raise ReplyError(f"reply code changed within a reply: {self._code} then {code}")
        self._code = code
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(self._lines) > self._max_lines:
            raise ReplyError(f"reply of more than {self._max_lines} lines")
        if line[3:4] == b"-":
            return None
        reply = ServerReply(code, tuple(self._lines))
        self._lines = []
        self._code = 0
        return reply


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server offered in its EHLO reply (keywords upper-case)."""

    keywords: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_ehlo(cls, reply: ServerReply) -> Extensions:
        keywords: dict[str, str] = {}
        for line in reply.lines[1:]:  # the first line is the greeting
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                # "AUTH=LOGIN" is an old alias some servers still send.
                keyword, eq, rest = keyword.partition("=")
                value = (rest + " " + params).strip() if eq else params.strip()
                upper = keyword.upper()
                if upper in keywords and value:
                    keywords[upper] = (keywords[upper] + " " + value).strip()
                else:
                    keywords.setdefault(upper, value)
        return cls(keywords)

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def size_limit(self) -> int:
        """The SIZE limit (RFC 1870); 0 when not offered or "no fixed maximum"."""
        value = self.keywords.get("SIZE", "").strip()
        return int(value) if value.isascii() and value.isdigit() else 0

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(m.upper() for m in self.keywords.get("AUTH", "").split())


def dot_stuff(data: bytes) -> bytes:
    """A DATA body on the wire: leading dots doubled, CRLF ensured, `.` CRLF appended.

    `data` has CRLF line ends (the queue keeps messages that way); a missing
    final line end is added, since the end marker must start a line.
    """
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class DotStuffer:
    """`dot_stuff` for a body fed in pieces split anywhere (even inside a CRLF):
    `feed` each piece, then `end()` for the terminator. The concatenated output
    equals `dot_stuff` of the concatenated input."""

    def __init__(self) -> None:
        self._tail = b"\r\n"  # the start of the body counts as the start of a line
        self._empty = True

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        out = data.replace(b"\r\n.", b"\r\n..")
        # RFC 5321 §4.5.2: a line starting with "." gets another; the piece boundary
        # may fall after the CRLF or between its CR and LF.
        if self._tail.endswith(b"\r\n") and data.startswith(b"."):
            out = b"." + out
        elif self._tail.endswith(b"\r") and data.startswith(b"\n."):
            out = b"\n." + out[1:]
        self._tail = (self._tail + data)[-2:]
        self._empty = False
        return out

    def end(self) -> bytes:
        """The end of data: a CRLF if the body lacks its last one, then `.` CRLF."""
        if self._empty or self._tail == b"\r\n":
            return b".\r\n"
        return b"\r\n.\r\n"


class Step(Enum):
    """What a reply read back answers."""

    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"  # the DATA command: 354 or a refusal
    BODY = "BODY"  # the end of data, or the last BDAT chunk
    CHUNK = "CHUNK"  # a BDAT chunk before the last


class Transaction:
    """One mail transaction for one peer: the bytes to send and the replies expected.

    Usage: `first_write()` gives the bytes to send at once (MAIL, and under
    PIPELINING every RCPT and DATA or BDAT with its data too). Then, for each
    reply read, `expect()` says what it answers and `on_reply(reply)` returns
    more bytes to send now (possibly empty). `done` is true once the result is
    known; `accepted` lists the indices of recipients that got 250/251, and
    `recipient_replies[i]`/`mail_reply`/`body_reply` hold the replies.

    Without PIPELINING each command waits for the previous reply. A refused
    MAIL ends the transaction (the caller sends RSET before reusing the
    session: `needs_rset`). When no recipient is accepted, DATA is not sent,
    or under PIPELINING a DATA already sent that got 354 anyway is closed with
    an empty body (RFC 2920 §3.1); a BDAT already sent is refused by the
    server (RFC 3030 §2) and its data discarded.
    """

    def __init__(
        self,
        *,
        mail: bytes,
        rcpts: Sequence[bytes],
        data: bytes,
        pipelining: bool,
        chunking: bool,
        chunk_size: int = BDAT_CHUNK,
    ) -> None:
        if not rcpts:
            raise ValueError("a transaction needs at least one recipient")
        self._mail = mail
        self._rcpts = list(rcpts)
        self._data = data
        self._pipelining = pipelining
        self._chunking = chunking
        self._chunk_size = max(1, chunk_size)
        self._expected: list[Step] = []
        self._chunks: list[tuple[bytes, Step]] = []  # BDAT frames not yet sent (no PIPELINING)
        self._next_rcpt = 0  # next RCPT index to send (non-pipelined)
        self._rcpt_seen = 0  # RCPT replies read
        self.mail_reply: ServerReply | None = None
        self.recipient_replies: list[ServerReply | None] = [None] * len(self._rcpts)
        self.data_reply: ServerReply | None = None
        self.body_reply: ServerReply | None = None
        self.accepted: list[int] = []
        self.done = False
        self.needs_rset = False  # the session is mid-transaction: RSET before reuse
        self.body_sent = False

    # -- framing ----------------------------------------------------------------

    def _bdat(self) -> bytes:
        """BDAT chunks: all of them under PIPELINING, else the first (the rest follow replies)."""
        data = self._data
        n = self._chunk_size
        if len(data) <= n:
            self._expected.append(Step.BODY)
            return b"BDAT %d LAST\r\n" % len(data) + data
        for start in range(0, len(data), n):
            chunk = data[start : start + n]
            last = start + n >= len(data)
            command = b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"")
            self._chunks.append((command + chunk, Step.BODY if last else Step.CHUNK))
        if self._pipelining:
            # RFC 3030 §4.2: with PIPELINING, chunks may follow one another unanswered.
            out = b"".join(frame for frame, _ in self._chunks)
            self._expected.extend(step for _, step in self._chunks)
            self._chunks.clear()
            return out
        return self._next_chunk()

    def _next_chunk(self) -> bytes:
        frame, step = self._chunks.pop(0)
        self._expected.append(step)
        return frame

    def first_write(self) -> bytes:
        self._expected.append(Step.MAIL)
        if not self._pipelining:
            return self._mail
        parts = [self._mail, *self._rcpts]
        self._expected.extend([Step.RCPT] * len(self._rcpts))
        self._next_rcpt = len(self._rcpts)
        if self._chunking:
            parts.append(self._bdat())
            self.body_sent = True
        else:
            parts.append(b"DATA\r\n")
            self._expected.append(Step.DATA)
        return b"".join(parts)

    # -- replies ------------------------------------------------------------------

    def expect(self) -> Step | None:
        """What the next reply answers; None when no reply is awaited."""
        return self._expected[0] if self._expected else None

    @property
    def awaiting(self) -> int:
        """How many replies are still expected (pipelined commands in flight)."""
        return len(self._expected)

    def on_reply(self, reply: ServerReply) -> bytes:
        if not self._expected:
            raise ReplyError(f"unexpected reply {reply.code}")
        step = self._expected.pop(0)
        if step is Step.MAIL:
            return self._on_mail(reply)
        if step is Step.RCPT:
            return self._on_rcpt(reply)
        if step is Step.DATA:
            return self._on_data(reply)
        if step is Step.CHUNK:
            if reply.code != 250:
                # A refused chunk decides; RFC 3030 §2: send no more of this message.
                if self.body_reply is None:
                    self.body_reply = reply
                self.needs_rset = True
                self._chunks.clear()
                self._finish_if_idle()
                return b""
            return self._next_chunk() if self._chunks else b""
        if self.body_reply is None:
            self.body_reply = reply
        if reply.code != 250 or self.body_reply.code != 250:
            self.needs_rset = True
        self._finish_if_idle()
        return b""

    def _on_mail(self, reply: ServerReply) -> bytes:
        self.mail_reply = reply
        if reply.code == 250:
            if not self._pipelining:
                return self._send_next_rcpt()
            return b""
        self.needs_rset = True
        if not self._pipelining:
            self.done = True
        self._finish_if_idle()
        return b""

    def _send_next_rcpt(self) -> bytes:
        i = self._next_rcpt
        self._next_rcpt += 1
        self._expected.append(Step.RCPT)
        return self._rcpts[i]

    def _on_rcpt(self, reply: ServerReply) -> bytes:
        i = self._rcpt_seen
        self._rcpt_seen += 1
        self.recipient_replies[i] = reply
        if reply.code in (250, 251):
            self.accepted.append(i)
        if self._pipelining:
            self._finish_if_idle()
            return b""
        if self._next_rcpt < len(self._rcpts):
            return self._send_next_rcpt()
        if not self.accepted:
            self.needs_rset = True
            self.done = True
            return b""
        if self._chunking:
            self.body_sent = True
            return self._bdat()
        self._expected.append(Step.DATA)
        return b"DATA\r\n"

    def _on_data(self, reply: ServerReply) -> bytes:
        self.data_reply = reply
        if reply.code != 354:
            self.needs_rset = True
            if self.body_reply is None:
                self.body_reply = reply
            self._finish_if_idle()
            return b""
        self._expected.append(Step.BODY)
        if not self.accepted or (self.mail_reply is not None and self.mail_reply.code != 250):
            # 354 with nothing to deliver: end the data at once (RFC 2920 §3.1).
            self.needs_rset = True
            return b".\r\n"
        self.body_sent = True
        return dot_stuff(self._data)

    def _finish_if_idle(self) -> None:
        if not self._expected:
            self.done = True


def mail_command(sender: str, params: Sequence[str], *, utf8: bool) -> bytes:
    """`MAIL FROM:<sender> params` with its CRLF."""
    encoding = "utf-8" if utf8 else "ascii"
    line = "MAIL FROM:<" + sender + ">"
    if params:
        line += " " + " ".join(params)
    return line.encode(encoding) + b"\r\n"


def rcpt_command(recipient: str, params: Sequence[str], *, utf8: bool) -> bytes:
    """`RCPT TO:<recipient> params` with its CRLF."""
    encoding = "utf-8" if utf8 else "ascii"
    line = "RCPT TO:<" + recipient + ">"
    if params:
        line += " " + " ".join(params)
    return line.encode(encoding) + b"\r\n"
