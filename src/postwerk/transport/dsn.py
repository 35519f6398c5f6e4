"""Delivery status notifications: the NDRs and DSNs this server sends.

Purpose: turn "what happened to these recipients of that message" into the
bytes of one notification message, and decide whether one may be sent at
all. Pure: no I/O, no clock, no randomness; the same request gives the same
bytes (the MIME boundary is derived from the DSN's Message-ID), so a
notification rebuilt after a restart is identical.

Standards: RFC 3464 (message/delivery-status), RFC 6522 (multipart/report),
RFC 3461 (NOTIFY, RET, ENVID, ORCPT), RFC 3463 (enhanced status codes),
RFC 6533 and RFC 6532 (global DSNs and message/global for UTF-8 addresses
and headers), RFC 3834 (Auto-Submitted), RFC 2047 (encoded words), RFC 5322.

API:
- `DsnKind`: the RFC 3464 Action values (failed, delayed, delivered,
  relayed, expanded).
- `RecipientReport`, `DsnRequest`: frozen, keyword-only dataclasses; the
  input. `DsnRequest.kind` is the most severe action of its recipients
  (failed > delayed > delivered > relayed > expanded); it picks the Subject.
- `build_dsn(req, *, now, message_id, full_limit=FULL_RETURN_LIMIT) -> bytes`:
  the complete message, CRLF line endings. The caller sends it with the
  null reverse-path `MAIL FROM:<>` (RFC 5321 §4.5.5, RFC 3461 §6.2) to
  `req.original_sender`.
- `notify_wanted(notify, kind) -> bool`: RFC 3461 NOTIFY for one recipient.
- `dsn_allowed(envelope_sender, message) -> bool`: the never-bounce-a-bounce rule.
- `returns_full_message(ret, kind, size, *, limit)`: whether a DSN will carry
  the whole original, so a caller can avoid reading a large blob otherwise
  (`DsnRequest.original_message` may then hold only the header block).

Decisions:
- From is `Mail Delivery System <postmaster@REPORTING_MTA>`, or that name
  with `DsnRequest.postmaster` when given (Exchange uses the postmaster of
  the default accepted domain). postmaster rather than MAILER-DAEMON, because a
  reply to an NDR should reach a person (RFC 5321 §4.5.1 requires postmaster).
- Subject prefixes follow Exchange: "Undeliverable:", "Delivery delayed:",
  "Delivered:", "Relayed:", "Expanded:". The original subject is cut to
  MAX_SUBJECT_CHARS characters; non-ASCII (or text that looks like an encoded
  word) is sent as RFC 2047 base64 encoded words.
- Third part: the whole original (`message/rfc822`, or `message/global` when
  its header block has 8-bit octets) only when RET=FULL, the notification
  reports a failure (RFC 3461 §4.3: RET is about failed DSNs), the original
  is at most `full_limit` octets (1 MiB by default) and it can be carried
  as 7bit/8bit (no NUL, no line over 998 octets). Otherwise, RET=HDRS and
  RET absent included, the header block: `text/rfc822-headers`, or
  `message/global-headers` for 8-bit headers (RFC 6533 §6.3), or
  quoted-printable `text/rfc822-headers` when the block is not clean 8bit.
- The status part is `message/global-delivery-status` (and report-type
  global-delivery-status, RFC 6522 §3) only when a recipient address is
  non-ASCII (RFC 6533); such addresses use the "utf-8" address type. In a
  plain DSN, non-ASCII characters in the ENVID or a diagnostic are written
  as RFC 6533 `\\x{HEX}` escapes so the part stays 7-bit.
- Diagnostic-Code is "smtp; <reply>" when the text starts like an SMTP reply
  (three digits), else "X-Postwerk; <text>" (local errors, as Postfix uses
  X-Postfix). Multi-line replies become one line.
- Header injection: every value taken from the request has control
  characters (CR, LF, NUL, C1, U+2028/2029) replaced by spaces before it is
  written, and is cut to at most 900 octets so that no line can exceed 998.
- References carries the original Message-ID so mail clients thread the
  NDR with the message it is about.

Invariants of `build_dsn`'s output: CRLF line endings only (no bare CR or
LF), no NUL, no line longer than 998 octets, exactly three MIME parts in
the order human text, status, original. It raises only for a request
without recipients (rejected by `DsnRequest` itself).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import email.utils
import hashlib
import itertools
import math
import quopri
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

FULL_RETURN_LIMIT: Final = 1024 * 1024  # octets of original returned with RET=FULL
MAX_SUBJECT_CHARS: Final = 250  # of the original subject, in the DSN's Subject
SENDER_NAME: Final = "Mail Delivery System"

_MAX_VALUE: Final = 900  # octets per value; with a field name a line stays under 998
_MAX_LINE: Final = 998  # RFC 5322 §2.1.1
_FOLD_AT: Final = 78  # RFC 5322 §2.1.1 "SHOULD"
_CRLF: Final = "\r\n"


class DsnKind(StrEnum):
    """RFC 3464 §2.3.3 Action values."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


# Most severe first: picks the Subject of a mixed DSN and orders the text.
_SEVERITY: Final = (
    DsnKind.FAILED,
    DsnKind.DELAYED,
    DsnKind.DELIVERED,
    DsnKind.RELAYED,
    DsnKind.EXPANDED,
)

_SUBJECT_PREFIX: Final = {
    DsnKind.FAILED: "Undeliverable",
    DsnKind.DELAYED: "Delivery delayed",
    DsnKind.DELIVERED: "Delivered",
    DsnKind.RELAYED: "Relayed",
    DsnKind.EXPANDED: "Expanded",
}

# RFC 3461 §4.1 keyword that asks for each kind of DSN.
_NOTIFY_FOR: Final = {
    DsnKind.FAILED: "FAILURE",
    DsnKind.DELAYED: "DELAY",
    DsnKind.DELIVERED: "SUCCESS",
    DsnKind.RELAYED: "SUCCESS",
    DsnKind.EXPANDED: "SUCCESS",
}
# RFC 3461 §6.2 leaves the default to us ("FAILURE" or "FAILURE,DELAY");
# Exchange sends delay notifications unless asked not to.
DEFAULT_NOTIFY: Final = ("FAILURE", "DELAY")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientReport:
    """What happened to one recipient (one RFC 3464 per-recipient block)."""

    final_recipient: str  # the address we tried, without <>
    action: DsnKind
    status: str  # RFC 3463 "5.1.1"; malformed → 5.0.0 / 4.0.0 / 2.0.0 by action
    original_recipient: str | None = None  # ORCPT as stored: "rfc822;addr"
    diagnostic: str | None = None  # remote reply "550 5.1.1 User unknown", or local text
    remote_mta: str | None = None  # host that gave the reply, e.g. "mx.example.net"
    last_attempt: float | None = None  # epoch seconds
    will_retry_until: float | None = None  # epoch seconds; written for DELAYED only


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnRequest:
    """Everything one notification says; one DSN may cover several recipients."""

    reporting_mta: str  # our host name (FQDN)
    original_sender: str  # envelope sender of the original; the DSN goes there
    arrival_date: float  # when we received the original, epoch seconds
    recipients: tuple[RecipientReport, ...]
    original_message: bytes  # as stored (or only its header block, see module doc)
    subject: str = ""  # decoded Subject of the original
    original_message_id: str | None = None  # "<id@host>" as in the original
    original_envelope_id: str | None = None  # ENVID, xtext-decoded
    ret: str | None = None  # RET: "FULL", "HDRS" or None (= headers)
    postmaster: str | None = None  # From address; default postmaster@reporting_mta

    def __post_init__(self) -> None:
        if not self.recipients:
            # RFC 3464 §2.1: at least one per-recipient block.
            raise ValueError("a DSN needs at least one recipient")

    @property
    def kind(self) -> DsnKind:
        """The most severe action among the recipients."""
        actions = {r.action for r in self.recipients}
        return next(k for k in _SEVERITY if k in actions)


# ---------------------------------------------------------------- policy


def notify_wanted(notify: Sequence[str] | None, kind: DsnKind) -> bool:
    """Whether a recipient's NOTIFY parameter asks for a DSN of this kind (RFC 3461 §4.1).

    Absent (None or empty) means DEFAULT_NOTIFY: failures and delays, no
    success notices. NEVER wins over anything beside it. A comma-separated
    string is accepted as well as a sequence; keywords are case-insensitive.
    """
    if isinstance(notify, str):
        notify = notify.split(",")
    items = {item.strip().upper() for item in notify or ()} - {""}
    if not items:
        items = set(DEFAULT_NOTIFY)
    if "NEVER" in items:
        return False
    return _NOTIFY_FOR[kind] in items


_DSN_REPORT_TYPES: Final = frozenset({"delivery-status", "global-delivery-status"})
_DSN_TYPES: Final = frozenset({"message/delivery-status", "message/global-delivery-status"})


def dsn_allowed(envelope_sender: str, message: bytes) -> bool:
    """Whether a DSN may be sent about this message at all.

    Never to the null reverse-path (RFC 5321 §4.5.5, RFC 3461 §6.2): that is
    how DSNs themselves travel. Never about a message that is itself a
    delivery report (multipart/report with report-type delivery-status or
    global-delivery-status), even if a broken MTA gave it a sender: two
    servers bouncing reports at each other would loop. Auto-Submitted is
    not consulted: RFC 3834 governs automatic responders, not MTAs, and
    an auto-generated message with a real return path still deserves its
    NDR (a mailing list must learn that an address is dead).
    `message` is the original as stored; only its header block is read.
    """
    if envelope_sender.strip() in ("", "<>"):
        return False
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        _header_block(message)
    )
    ctype = headers.get_content_type()
    if ctype in _DSN_TYPES:
        return False
    if ctype == "multipart/report":
        report_type = headers.get_param("report-type", "", header="content-type")
        value = email.utils.collapse_rfc2231_value(report_type)
        if str(value).strip().lower() in _DSN_REPORT_TYPES:
            return False
    return True


def returns_full_message(
    ret: str | None, kind: DsnKind, size: int, *, limit: int = FULL_RETURN_LIMIT
) -> bool:
    """Whether a DSN of this kind returns the whole original (else its headers).

    RFC 3461 §4.3: RET=FULL asks for the content in *failed* DSNs; delay and
    success notices, and RET=HDRS or no RET, carry the header block only.
    Over `limit` octets the headers are returned too, so an NDR never
    doubles a large transfer. (build_dsn also falls back to headers when
    the original cannot be carried as 7bit/8bit.)
    """
    return (ret or "").strip().upper() == "FULL" and kind is DsnKind.FAILED and size <= limit


# ---------------------------------------------------------------- text helpers

# Controls (CR, LF, TAB, NUL, DEL, C1) and Unicode line/paragraph separators:
# in a header they could start a new field (injection) or break a parser.
_CONTROLS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_STATUS: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_SMTP_REPLY: Final = re.compile(r"[2-5]\d\d(?:[ -]|$)")
_ATOM_CHARS: Final = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]")


def _clean(text: str) -> str:
    """One line of text: controls become single spaces, whitespace runs collapse."""
    # Lone surrogates cannot be encoded; replace them instead of raising later.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return " ".join(_CONTROLS.sub(" ", text).split())


def _clip(text: str, limit: int = _MAX_VALUE) -> str:
    """Cut text to at most `limit` UTF-8 octets, on a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "..."


def _value(text: str | None) -> str:
    return _clip(_clean(text or ""))


def _escape_non_ascii(text: str) -> str:
    # RFC 6533 §3 EmbeddedUnicodeChar, to keep message/delivery-status 7-bit.
    return "".join(ch if ord(ch) < 128 else f"\\x{{{ord(ch):X}}}" for ch in text)


def _crlf(data: bytes) -> bytes:
    return _LINE_END.sub(b"\r\n", data)


def _field(name: str, value: str) -> str:
    """`Name: value` CRLF, folded at spaces near 78 columns (RFC 5322 §2.2.3).

    `value` is already clean (single spaces, clipped), so a fold never leaves a
    whitespace-only line and no line exceeds 998 octets.
    """
    lines: list[str] = []
    line = f"{name}:"
    has_word = False
    for word in value.split(" "):
        if has_word and len((line + " " + word).encode("utf-8")) > _FOLD_AT:
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
        has_word = True
    lines.append(line)
    return _CRLF.join(lines) + _CRLF


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 encoded words, each at most 75 characters, on character boundaries."""
    chunks: list[bytes] = []
    chunk = b""
    for ch in text:
        octets = ch.encode("utf-8")
        if len(chunk) + len(octets) > 45:  # 45 octets → 60 base64 → 72-character word
            chunks.append(chunk)
            chunk = b""
        chunk += octets
    if chunk:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


def _subject_field(prefix: str, subject: str) -> str:
    text = _clean(subject)
    if len(text) > MAX_SUBJECT_CHARS:
        text = text[: MAX_SUBJECT_CHARS - 3].rstrip() + "..."
    if not text:
        text = "(no subject)"
    # ASCII that a reader could mistake for an encoded word is encoded too.
    if text.isascii() and "=?" not in text:
        return _field("Subject", f"{prefix}: {text}")
    # The fold after the prefix is the space between it and the subject.
    return f"Subject: {prefix}:" + "".join(f"{_CRLF} {w}" for w in _encoded_words(text)) + _CRLF


_MAX_TIMESTAMP: Final = 253402300799.0  # 9999-12-31T23:59:59Z


def _date(ts: float) -> str:
    """RFC 5322 date-time in UTC; out-of-range timestamps are clamped, never raised."""
    if not math.isfinite(ts):
        ts = 0.0
    ts = min(max(ts, 0.0), _MAX_TIMESTAMP)
    return email.utils.format_datetime(datetime.fromtimestamp(ts, UTC))


def _msg_id(text: str | None) -> str | None:
    """`<id>` from a Message-ID with or without brackets; None if nothing usable is left."""
    core = "".join(ch for ch in text or "" if 33 <= ord(ch) <= 126 and ch not in "<>")
    return f"<{_clip(core)}>" if core else None


def _address(text: str) -> str:
    # An address goes inside <> or after "rfc822;": brackets would end it early.
    return _clip(_clean(text).replace("<", "").replace(">", ""))


def _host(text: str) -> str:
    """A host name for Reporting-MTA and postmaster@: ASCII, no spaces."""
    host = _clean(text).partition(" ")[0].strip(".")  # a host name ends at the first space
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = "".join(ch for ch in host if ch.isascii())
    host = "".join(ch for ch in host if 33 <= ord(ch) <= 126 and ch not in '<>()[],;:@\\"')
    return _clip(host, 255) or "localhost"


def _status(text: str, action: DsnKind) -> str:
    match = _STATUS.fullmatch(text.strip())
    if match:
        cls, subject, detail = match.groups()
        return f"{cls}.{int(subject)}.{int(detail)}"
    # RFC 3464 §2.3.4 requires a Status; invent the generic one for the action.
    if action is DsnKind.FAILED:
        return "5.0.0"
    if action is DsnKind.DELAYED:
        return "4.0.0"
    return "2.0.0"


def _split_orcpt(value: str) -> tuple[str, str]:
    """(address type, address) of an ORCPT value "type;address" (RFC 3461 §4.2)."""
    addr_type, sep, address = value.partition(";")
    if not sep:
        addr_type, address = "rfc822", value
    addr_type = _ATOM_CHARS.sub("", addr_type).lower()[:64] or "rfc822"
    address = _address(address)
    if addr_type == "rfc822" and not address.isascii():
        addr_type = "utf-8"  # RFC 6533 §3: rfc822 addresses are ASCII
    return addr_type, address


def _typed(address: str) -> str:
    return f"{'rfc822' if address.isascii() else 'utf-8'};{address}"


def _diagnostic(text: str | None, utf8: bool) -> str | None:
    value = _clean(text or "")
    if not value:
        return None
    if not utf8:
        value = _escape_non_ascii(value)
    value = _clip(value)
    # RFC 3464 §2.3.6: "smtp" only for an SMTP reply; local reasons get our own type.
    kind = "smtp" if _SMTP_REPLY.match(value) else "X-Postwerk"
    return f"{kind}; {value}"


# ---------------------------------------------------------------- the original


def _header_block(message: bytes) -> bytes:
    """The header block of a message, each line ending in CRLF, without the blank line."""
    if message.startswith((b"\r\n", b"\n")):
        return b""
    match = _HEADER_END.search(message)
    block = message[: match.start()] if match else message
    block = _crlf(block)
    if block and not block.endswith(b"\r\n"):
        block += b"\r\n"
    return block


def _is_clean(data: bytes) -> bool:
    """Whether CRLF-normalised data can travel as 7bit/8bit (RFC 2045 §2.7-2.8)."""
    return b"\x00" not in data and all(len(line) <= _MAX_LINE for line in data.split(b"\r\n"))


@dataclass(frozen=True, slots=True)
class _Part:
    headers: str
    body: bytes  # ends with CRLF (or is empty)
    eight_bit: bool


def _text_part(text: str, description: str) -> _Part:
    data = _crlf(text.encode("utf-8"))
    if data.isascii() and _is_clean(data):
        cte = "7bit"
    else:
        # Long lines (a remote reply, a long header) or UTF-8: quoted-printable
        # keeps the part 7-bit and under the line limit.
        cte = "quoted-printable"
        data = _crlf(quopri.encodestring(data))
    headers = (
        'Content-Type: text/plain; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n"
        f"Content-Description: {description}\r\n"
    )
    return _Part(headers, data, False)


def _original_part(req: DsnRequest, full_limit: int) -> tuple[_Part, bool]:
    """The third part, and whether a full return was asked for but not possible."""
    original = req.original_message
    headers = _header_block(original)
    want_full = returns_full_message(req.ret, req.kind, len(original), limit=full_limit)
    if want_full:
        whole = _crlf(original)
        if whole and not whole.endswith(b"\r\n"):
            whole += b"\r\n"
        if _is_clean(whole):
            ctype = "message/rfc822" if headers.isascii() else "message/global"  # RFC 6532 §3.7
            cte = "7bit" if whole.isascii() else "8bit"
            part_headers = (
                f"Content-Type: {ctype}\r\n"
                f"Content-Transfer-Encoding: {cte}\r\n"
                "Content-Description: Undelivered Message\r\n"
            )
            return _Part(part_headers, whole, cte == "8bit"), False
    full_refused = (req.ret or "").strip().upper() == "FULL" and req.kind is DsnKind.FAILED
    description = "Content-Description: Undelivered Message Headers\r\n"
    if _is_clean(headers) and headers.isascii():
        part_headers = "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\n"
        return _Part(part_headers + description, headers, False), full_refused
    if _is_clean(headers):
        # RFC 6533 §6.3: UTF-8 header fields (RFC 6532) travel as message/global-headers.
        part_headers = "Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n"
        return _Part(part_headers + description, headers, True), full_refused
    # NUL or over-long lines: only quoted-printable carries them intact.
    charset = ""
    if not headers.isascii():
        try:
            headers.decode("utf-8")
            charset = '; charset="utf-8"'
        except UnicodeDecodeError:
            charset = '; charset="unknown-8bit"'  # RFC 1428
    part_headers = (
        f"Content-Type: text/rfc822-headers{charset}\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
    )
    body = _crlf(quopri.encodestring(headers))
    return _Part(part_headers + description, body, False), full_refused


# ---------------------------------------------------------------- the human text

# Explanations for the user, by "subject.detail" and then "subject" of the
# RFC 3463 code. They describe the cause; the heading above them says
# whether delivery failed or is only delayed.
_EXPLAIN: Final[dict[str, str]] = {
    "1.1": (
        "The recipient's mail server has no mailbox with this address. Check the "
        "address for typing errors, or ask the recipient for their current address, "
        "then send the message again."
    ),
    "1.2": (
        "The domain of the address (the part after the @) doesn't exist or can't "
        "receive mail. Check it for typing errors."
    ),
    "1.3": "The address isn't written in a form mail servers accept. Check it for typing errors.",
    "1.6": (
        "The recipient's mailbox has moved and no longer takes mail at this address. "
        "Ask the recipient for their new address."
    ),
    "1.10": "The recipient's domain states that it doesn't accept any email (a \"null MX\").",
    "1": "Something is wrong with the recipient's address. Check it for typing errors.",
    "2.1": "The recipient's mailbox is disabled and doesn't accept messages.",
    "2.2": "The recipient's mailbox is full.",
    "2.3": (
        "The message is larger than the recipient's mailbox accepts. Try sending it "
        "without large attachments, or share them as a link instead."
    ),
    "2": "The recipient's mailbox isn't accepting messages.",
    "3.4": (
        "The message is larger than the receiving mail system accepts. Try sending "
        "it without large attachments, or share them as a link instead."
    ),
    "3": "The receiving mail system has a problem.",
    "4.1": "The recipient's mail server didn't answer.",
    "4.2": "The connection to the recipient's mail server broke off during delivery.",
    "4.3": "The recipient's mail server couldn't be looked up (a DNS or directory problem).",
    "4.4": (
        "No way to reach the recipient's domain was found: the domain may not exist, "
        "or it names no mail server."
    ),
    "4.6": (
        "The message went round in a loop between mail servers, so delivery was "
        "stopped. A mail server is probably misconfigured."
    ),
    "4.7": "The message couldn't be handed over within the time this server keeps trying.",
    "4": "A network or routing problem keeps the message from reaching the recipient's server.",
    "5": "The mail servers couldn't complete the delivery (a protocol problem).",
    "6.7": (
        "The address uses international characters, and the recipient's mail server "
        "doesn't support them."
    ),
    "6": "The recipient's mail system couldn't accept the message's content or format.",
    "7.1": (
        "The recipient's mail server refused the message because of a security or "
        "policy setting; for example, the recipient may accept mail only from certain "
        "senders."
    ),
    "7": "The message was refused because of a security or policy setting.",
}

_HEADING: Final = {
    DsnKind.FAILED: "Your message couldn't be delivered to these recipients:",
    DsnKind.DELAYED: (
        "Your message hasn't reached these recipients yet. You don't need to send it "
        "again: this server keeps trying, and tells you if it gives up."
    ),
    DsnKind.DELIVERED: "Your message was delivered to these recipients:",
    DsnKind.RELAYED: "Your message was passed on towards these recipients:",
    DsnKind.EXPANDED: "Your message was passed to the members of these distribution lists:",
}

_SUCCESS_TEXT: Final = {
    DsnKind.DELIVERED: "Delivered to the recipient's mailbox (this doesn't mean it has been read).",
    DsnKind.RELAYED: (
        "Handed to a mail system that doesn't send delivery notices, so no further "
        "notice will come about this recipient."
    ),
    DsnKind.EXPANDED: "This address is a distribution list; the message went on to its members.",
}


def _explain(action: DsnKind, status: str) -> str:
    if action in _SUCCESS_TEXT:
        return _SUCCESS_TEXT[action]
    cls, subject, detail = status.split(".")
    found = _EXPLAIN.get(f"{subject}.{detail}") or _EXPLAIN.get(subject)
    if found:
        return found
    if cls == "5":
        return "The recipient's mail system refused the message."
    return "A temporary problem keeps the message from being delivered."


@dataclass(frozen=True, slots=True)
class _Row:
    """One recipient's values, cleaned once and shared by the text and status parts."""

    report: RecipientReport
    final: str
    original: tuple[str, str] | None
    status: str
    diagnostic: str | None  # as written in Diagnostic-Code (with its type)
    reply: str  # the same text for people, without the type
    remote: str


def _wrap(text: str, indent: str = "") -> list[str]:
    # Prose only; addresses and replies stay on one line so they can be copied.
    return textwrap.wrap(
        text,
        width=76,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _human_text(
    req: DsnRequest, rows: list[_Row], reporting_mta: str, envid: str | None, full_refused: bool
) -> str:
    out: list[str] = []
    for kind in _SEVERITY:
        group = [row for row in rows if row.report.action is kind]
        if not group:
            continue
        out += [*_wrap(_HEADING[kind]), ""]
        for row in group:
            # The address as the sender wrote it (ORCPT) is the one they recognise.
            shown = row.original[1] if row.original and row.original[1] else row.final
            out.append(f"    {shown}")
            out += _wrap(_explain(kind, row.status), "    ")
            until = row.report.will_retry_until
            if kind is DsnKind.DELAYED and until is not None:
                out += _wrap(f"This server will keep trying until {_date(until)}.", "    ")
            out.append("")
    if full_refused:
        out += _wrap(
            "The original message couldn't be returned in full (it is too large, or "
            "holds data that can't be attached as it is); only its headers are attached."
        )
        out.append("")
    out += ["", "Diagnostic information for administrators:", ""]
    out.append(f"Generating server: {reporting_mta}")
    out.append(f"Message received: {_date(req.arrival_date)}")
    if envid:
        out.append(f"Envelope ID: {envid}")
    out.append("")
    for row in rows:
        r = row.report
        out.append(row.final)
        if row.original:
            out.append(f"Original recipient: {row.original[0]};{row.original[1]}")
        out.append(f"Action: {r.action.value}")
        out.append(f"Status: {row.status}")
        out.append(f"Remote server: {row.remote or '(none; found by the generating server)'}")
        if row.diagnostic:
            label = "Remote server reply" if row.diagnostic.startswith("smtp;") else "Detail"
            out.append(f"{label}: {row.reply}")
        if r.last_attempt is not None:
            out.append(f"Last attempt: {_date(r.last_attempt)}")
        if r.action is DsnKind.DELAYED and r.will_retry_until is not None:
            out.append(f"Will retry until: {_date(r.will_retry_until)}")
        out.append("")
    out += ["Original message headers:", ""]
    headers = _header_block(req.original_message).decode("utf-8", "replace").replace("\x00", "")
    return _CRLF.join(out) + _CRLF + headers


# ---------------------------------------------------------------- assembly


def _status_part(
    req: DsnRequest, rows: list[_Row], reporting_mta: str, envid: str | None, utf8: bool
) -> _Part:
    fields: list[str] = []
    if envid:
        fields.append(_field("Original-Envelope-Id", envid))  # RFC 3464 §2.2.1
    fields.append(_field("Reporting-MTA", f"dns; {reporting_mta}"))  # §2.2.2
    fields.append(_field("Arrival-Date", _date(req.arrival_date)))  # §2.2.5
    for row in rows:
        r = row.report
        fields.append(_CRLF)  # a blank line starts each per-recipient block (§2.1)
        if row.original:
            fields.append(_field("Original-Recipient", f"{row.original[0]};{row.original[1]}"))
        fields.append(_field("Final-Recipient", _typed(row.final)))  # §2.3.2
        fields.append(_field("Action", r.action.value))  # §2.3.3
        fields.append(_field("Status", row.status))  # §2.3.4
        if row.remote:
            fields.append(_field("Remote-MTA", f"dns; {row.remote}"))  # §2.3.5
        if row.diagnostic:
            fields.append(_field("Diagnostic-Code", row.diagnostic))  # §2.3.6
        if r.last_attempt is not None:
            fields.append(_field("Last-Attempt-Date", _date(r.last_attempt)))  # §2.3.7
        if r.action is DsnKind.DELAYED and r.will_retry_until is not None:
            # §2.3.9: only meaningful for a delayed recipient.
            fields.append(_field("Will-Retry-Until", _date(r.will_retry_until)))
    body = "".join(fields).encode("utf-8")
    ctype = "message/global-delivery-status" if utf8 else "message/delivery-status"
    headers = (
        f"Content-Type: {ctype}\r\n"
        f"Content-Transfer-Encoding: {'8bit' if utf8 else '7bit'}\r\n"
        "Content-Description: Delivery report\r\n"
    )
    return _Part(headers, body, utf8)


def _rows(req: DsnRequest, utf8: bool) -> list[_Row]:
    rows: list[_Row] = []
    for r in req.recipients:
        original = _split_orcpt(r.original_recipient) if r.original_recipient else None
        remote = _value(r.remote_mta)
        diagnostic = _diagnostic(r.diagnostic, utf8)
        if not utf8:
            remote = _escape_non_ascii(remote)
        reply = diagnostic.split("; ", 1)[1] if diagnostic else ""
        final = _address(r.final_recipient)
        status = _status(r.status, r.action)
        rows.append(_Row(r, final, original, status, diagnostic, reply, _clip(remote)))
    return rows


def _boundary(seed: str, parts: Sequence[_Part]) -> str:
    # Deterministic, and "=_" cannot occur in quoted-printable text; still
    # checked against every part so no content can end a part early.
    for n in itertools.count():
        digest = hashlib.sha256(f"{seed}/{n}".encode()).hexdigest()[:32]
        boundary = f"=_postwerk-dsn-{digest}"
        token = boundary.encode("ascii")
        if not any(token in p.body or token in p.headers.encode("utf-8") for p in parts):
            return boundary
    raise AssertionError("unreachable")  # pragma: no cover


def build_dsn(
    req: DsnRequest, *, now: float, message_id: str, full_limit: int = FULL_RETURN_LIMIT
) -> bytes:
    """The complete DSN message for `req`, dated `now`, with CRLF line endings.

    `message_id` may be given with or without angle brackets. See the module
    docstring for the layout and the choices made.
    """
    reporting_mta = _host(req.reporting_mta)
    addresses = [r.final_recipient for r in req.recipients]
    addresses += [
        _split_orcpt(r.original_recipient)[1] for r in req.recipients if r.original_recipient
    ]
    # RFC 6533: the global status part only when an address needs UTF-8.
    utf8 = not all(_address(a).isascii() for a in addresses)
    rows = _rows(req, utf8)
    envid = _value(req.original_envelope_id) or None
    if envid and not utf8:
        envid = _clip(_escape_non_ascii(envid))

    original, full_refused = _original_part(req, full_limit)
    text = _human_text(req, rows, reporting_mta, envid, full_refused)
    parts = [
        _text_part(text, "Notification"),
        _status_part(req, rows, reporting_mta, envid, utf8),
        original,
    ]

    own_id = _msg_id(message_id)
    if own_id is None:
        seed = hashlib.sha256(req.original_message[:4096]).hexdigest()[:24]
        own_id = f"<dsn.{seed}@{reporting_mta}>"
    boundary = _boundary(own_id, parts)
    report_type = "global-delivery-status" if utf8 else "delivery-status"
    sender = _address(req.postmaster or "") or f"postmaster@{reporting_mta}"
    head = [
        f"From: {SENDER_NAME} <{sender}>\r\n",
        f"To: <{_address(req.original_sender)}>\r\n",
        _subject_field(_SUBJECT_PREFIX[req.kind], req.subject),
        f"Date: {_date(now)}\r\n",
        f"Message-ID: {own_id}\r\n",
    ]
    original_id = _msg_id(req.original_message_id)
    if original_id:
        head.append(f"References: {original_id}\r\n")
    head += [
        "MIME-Version: 1.0\r\n",
        f"Content-Type: multipart/report; report-type={report_type};\r\n",
        f' boundary="{boundary}"\r\n',
        f"Content-Transfer-Encoding: {'8bit' if any(p.eight_bit for p in parts) else '7bit'}\r\n",
        "Auto-Submitted: auto-replied\r\n",  # RFC 3834 §5
        # Exchange and Outlook: no out-of-office or other auto-reply to this.
        "X-Auto-Response-Suppress: All\r\n",
        "\r\n",
        "This is a delivery status notification in MIME format.\r\n",
    ]
    out = [s.encode("utf-8") for s in head]
    delimiter = f"--{boundary}\r\n".encode("ascii")
    for part in parts:
        # The CRLF after each body belongs to the next delimiter (RFC 2046 §5.1.1),
        # so a body keeps its own final CRLF.
        out += [b"\r\n", delimiter, part.headers.encode("utf-8"), b"\r\n", part.body]
    out.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)
