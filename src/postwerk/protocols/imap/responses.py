"""IMAP4 server responses as bytes: strings, status lines, response codes, data lines.

Purpose: the response half of the sans-I/O IMAP package. Handlers describe a
reply with these builders and the connection loop writes the bytes; nothing
here reads or writes a socket, and nothing keeps state between calls (a
session's UTF8=ACCEPT state is passed in as `utf8=`).

Security invariants:
- A builder never lets a value end the line it is building. Human text
  (`tagged`, `untagged`, `untagged_status`, `continuation`) has control
  characters, CR and LF included, replaced by spaces; strings that carry
  values (mailbox names, ID values, search tags) are quoted with "\\" and
  '"' escaped, or sent as a counted literal when they contain CR, LF or NUL,
  so the client's parser skips their octets instead of reading them as a
  new response. Atoms (flags, capabilities, code arguments) are checked
  against the atom grammar; a server-supplied atom that fails raises
  ValueError (a bug to fix), while flags, which may come from user data
  written over another protocol, are dropped from lists instead, so one bad
  keyword cannot make a mailbox unreadable.
- Text without a response code never starts with "[": a value at the start
  of a message ("[ALERT] ...") would otherwise be shown as a server alert.
- Text is 7-bit (RFC 3501 §9 TEXT-CHAR): other characters become "?".
  Mailbox names inside text must be passed in their encoded form.
- Names are handed over as Unicode and encoded here (modified UTF-7, or
  UTF-8 once the client enabled UTF8=ACCEPT, RFC 6855 §3), so every path
  emits the one canonical wire form.
- Large responses are built with joins and %-formatting, never repeated
  concatenation, so a FETCH of 100,000 messages stays linear.
- `literal` frames bytes as given: a NUL in a non-binary literal is a
  protocol violation the caller must avoid (RFC 3516 BINARY, or mapping).

Standards: RFC 3501 and RFC 9051 (§4 data formats, §7 responses, §9
grammar), RFC 3516 (literal8), RFC 4315 (APPENDUID/COPYUID), RFC 4731 and
RFC 9051 §7.3.4 (ESEARCH), RFC 5162/7162 (CONDSTORE/QRESYNC, VANISHED),
RFC 5161 (ENABLED), RFC 2971 (ID), RFC 2342 (NAMESPACE), RFC 9208 (QUOTA),
RFC 5258 (LIST-EXTENDED), RFC 5465/5819 (LIST-STATUS via STATUS lines),
RFC 6855 (UTF8=ACCEPT).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal, NewType, cast

from postwerk.mime.summary import (
    BodyPart,
    Envelope,
    serialize_body,
    serialize_bodystructure,
    serialize_envelope,
)
from postwerk.protocols.imap.utf7 import encode_mailbox

ResponseCode = NewType("ResponseCode", bytes)
"""The inside of a `[...]` response code, from `code()`; the brackets are added by the line."""

Status = Literal["OK", "NO", "BAD"]
UntaggedStatus = Literal["OK", "NO", "BAD", "BYE", "PREAUTH"]

CRLF: Final = b"\r\n"

# Longest string sent quoted; longer values go as literals, which clients
# read by count instead of scanning for the closing quote.
QUOTED_MAX: Final = 1024
# RFC 2971 §3.3: field strings at most 30 octets, values at most 1024, 30 pairs.
ID_FIELD_MAX: Final = 30
ID_VALUE_MAX: Final = 1024
ID_PAIRS_MAX: Final = 30

NZ_NUMBER_MAX: Final = 0xFFFF_FFFF  # RFC 9051 §9 nz-number: sequence numbers, UIDs
NUMBER64_MAX: Final = 2**63 - 1  # RFC 9051 §9 number64: sizes, MODSEQ

# ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" '"'
# "\" "]" (RFC 9051 §9). Non-ASCII is excluded by the class as well.
_ATOM: Final = re.compile(r'[^(){ \x00-\x1f\x7f-\U0010ffff%*"\\\]]+')
# flag = "\" atom / atom (RFC 9051 §9 flag, flag-keyword, flag-extension);
# "\*" is flag-perm, only in PERMANENTFLAGS but harmless elsewhere.
_FLAG: Final = re.compile(r'\\?[^(){ \x00-\x1f\x7f-\U0010ffff%*"\\\]]+|\\\*')
# tag = 1*<any ASTRING-CHAR except "+"> (RFC 9051 §9).
_TAG: Final = re.compile(r'[^(){ \x00-\x1f\x7f-\U0010ffff%*"\\+]+')
# A response-code argument: printable ASCII without SP or "]", which would
# end the code early (RFC 9051 resp-text-code: atom [SP 1*<any TEXT-CHAR except "]">]).
_CODE_ARG: Final = re.compile(r"[\x21-\x5c\x5e-\x7e]+")
_SEQUENCE_SET: Final = re.compile(r"[0-9:,*$]+")  # RFC 9051 sequence-set, RFC 5182 "$"
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

_EMPTY_TEXT: Final = {
    "OK": "completed",
    "NO": "failed",
    "BAD": "invalid",
    "BYE": "closing",
    "PREAUTH": "authenticated",
}
_MONTHS: Final = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
                  b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")  # fmt: skip

# ---------------------------------------------------------------- strings


def atom_ok(s: str) -> bool:
    """True if `s` can be sent as an atom (RFC 9051 §9 atom)."""
    return _ATOM.fullmatch(s) is not None


def quoted(s: str) -> bytes:
    """A quoted string (RFC 9051 §4.3) with "\\" and '"' escaped.

    Raises ValueError for CR, LF or NUL, which a quoted string cannot carry;
    `string()` / `astring()` choose a literal for those instead.
    """
    if "\r" in s or "\n" in s or "\x00" in s:
        raise ValueError("CR, LF and NUL cannot be quoted")
    return _quote(s.encode("utf-8"))


def _quote(raw: bytes) -> bytes:
    if b"\\" in raw or b'"' in raw:
        raw = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + raw + b'"'


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """A synchronizing-literal header and the octets: `{n}` CRLF data, or `~{n}` (RFC 3516)."""
    return (b"~{%d}\r\n" if binary else b"{%d}\r\n") % len(data) + data


def _quotable(raw: bytes, utf8: bool) -> bool:
    """Whether `raw` may be sent quoted (RFC 9051 QUOTED-CHAR; UTF-8 only after UTF8=ACCEPT)."""
    if len(raw) > QUOTED_MAX or b"\r" in raw or b"\n" in raw or b"\x00" in raw:
        return False
    if raw.isascii():
        return True
    if not utf8:
        return False  # RFC 6855 §3: 8-bit in quoted strings only once UTF8=ACCEPT is enabled
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def string(data: bytes, *, utf8: bool = False) -> bytes:
    """An IMAP string: quoted when safe and short, else a literal (RFC 9051 §4.3).

    A literal is chosen for CR, LF, NUL, more than QUOTED_MAX octets, and
    8-bit octets unless the session enabled UTF8=ACCEPT (`utf8=True`) and
    they are valid UTF-8.
    """
    return _quote(data) if _quotable(data, utf8) else literal(data)


def astring(s: str, *, utf8: bool = False) -> bytes:
    """An astring: an atom if possible, else `string()` of the UTF-8 octets.

    "NIL" is quoted so that no parser, however careless, reads it as nil.
    """
    if _ATOM.fullmatch(s) is not None and s.upper() != "NIL":
        return s.encode("ascii")
    return string(s.encode("utf-8"), utf8=utf8)


def nstring(data: bytes | None, *, utf8: bool = False) -> bytes:
    """NIL for None, else `string(data)` (RFC 9051 §4.5)."""
    return b"NIL" if data is None else string(data, utf8=utf8)


def _mailbox(name: str, utf8: bool) -> bytes:
    """A mailbox name on the wire: modified UTF-7 (RFC 3501 §5.1.3) or UTF-8 (RFC 6855 §3)."""
    return astring(name if utf8 else encode_mailbox(name), utf8=utf8)


def _atom(s: str, what: str) -> bytes:
    if _ATOM.fullmatch(s) is None:
        raise ValueError(f"{what} is not an atom: {s!r}")
    return s.encode("ascii")


def _number(n: int, low: int = 0, high: int = NUMBER64_MAX) -> bytes:
    # bool is an int subclass; True as a count is a bug, not a 1.
    if isinstance(n, bool) or not isinstance(n, int) or not low <= n <= high:
        raise ValueError(f"number out of range [{low}, {high}]: {n!r}")
    return b"%d" % n


# ---------------------------------------------------------------- status lines


def _text(text: str, has_code: bool, default: str) -> bytes:
    """Human-readable text that cannot break or spoof a response line."""
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
    if not has_code and text.startswith("["):
        # RFC 9051 §7.1: a leading "[" opens a response code; a value placed
        # first in a message must not turn into [ALERT] or [TRYCREATE].
        text = "(" + text[1:]
    if not text.strip():
        text = default  # RFC 3501 text = 1*TEXT-CHAR: rev1 clients need some text
    return text.encode("ascii", errors="replace")


def _status_line(prefix: bytes, status: str, text: str, code: ResponseCode | None) -> bytes:
    body = _text(text, code is not None, _EMPTY_TEXT[status])
    if code is None:
        return b"%s %s %s\r\n" % (prefix, status.encode("ascii"), body)
    return b"%s %s [%s] %s\r\n" % (prefix, status.encode("ascii"), code, body)


def tagged(tag: str, status: Status, text: str, code: ResponseCode | None = None) -> bytes:
    """A tagged completion: `a1 OK [CODE] text` CRLF (RFC 9051 §7.1).

    Raises ValueError for a tag outside the tag grammar: the parser only
    hands out valid tags, and echoing anything else could inject a line.
    """
    if _TAG.fullmatch(tag) is None:
        raise ValueError(f"invalid tag {tag!r}")
    if status not in ("OK", "NO", "BAD"):
        raise ValueError(f"invalid tagged status {status!r}")
    return _status_line(tag.encode("ascii"), status, text, code)


def untagged_status(status: UntaggedStatus, text: str, code: ResponseCode | None = None) -> bytes:
    """`* OK|NO|BAD|BYE|PREAUTH [CODE] text` CRLF (RFC 9051 §7.1)."""
    if status not in _EMPTY_TEXT:
        raise ValueError(f"invalid untagged status {status!r}")
    return _status_line(b"*", status, text, code)


def untagged(text: str) -> bytes:
    """`* text` CRLF for simple untagged data; control characters become spaces.

    For data that carries strings, literals or names, use the builders below.
    """
    return b"* " + _CONTROL.sub(" ", text).encode("ascii", errors="replace") + CRLF


def continuation(text: str = "") -> bytes:
    """A continuation request `+ text` CRLF (RFC 9051 §7.6); also carries SASL base64."""
    if not text:
        return b"+ \r\n"
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
    if text.startswith("["):
        text = "(" + text[1:]
    return b"+ " + text.encode("ascii", errors="replace") + CRLF


def code(name: str, *args: int | str | Iterable[str]) -> ResponseCode:
    """A response code for `tagged` / `untagged_status` (RFC 9051 §7.1 and extensions).

    Arguments: an int is a number; a str an atom-like token (a sequence set
    from `format_uid_set`, a charset); an iterable of str a parenthesized
    list, except for CAPABILITY, whose capabilities follow bare. Flags in
    PERMANENTFLAGS are filtered like `flags_list`. Examples:
    `code("UIDNEXT", 5)`, `code("APPENDUID", 38505, 3955)`,
    `code("COPYUID", 38505, "304,319:320", "3956:3958")`,
    `code("PERMANENTFLAGS", [r"\\Seen", r"\\*"])`, `code("TOOBIG")`.
    Raises ValueError for anything that could end the code or the line.
    """
    upper = name.upper()
    parts = [_atom(name, "response code")]
    for arg in args:
        if isinstance(arg, int):
            parts.append(_number(arg))
        elif isinstance(arg, str):
            if _CODE_ARG.fullmatch(arg) is None:
                raise ValueError(f"invalid response code argument {arg!r}")
            parts.append(arg.encode("ascii"))
        elif upper == "PERMANENTFLAGS":
            parts.append(flags_list(arg))
        elif upper == "CAPABILITY":
            parts.extend(_atom(cap, "capability") for cap in arg)
        else:
            items = []
            for item in arg:
                if not isinstance(item, str) or _CODE_ARG.fullmatch(item) is None:
                    raise ValueError(f"invalid response code list item {item!r}")
                items.append(item.encode("ascii"))
            parts.append(b"(" + b" ".join(items) + b")")
    return ResponseCode(b" ".join(parts))


# ---------------------------------------------------------------- sets and fetch


def _uid_runs(nums: Iterable[int]) -> list[str]:
    out: list[str] = []
    start = prev = -1
    for n in nums:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= NZ_NUMBER_MAX:
            raise ValueError(f"not a sequence number or UID: {n!r}")
        if n == prev + 1 and prev > 0:
            prev = n
            continue
        if prev > 0:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if prev > 0:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return out


def format_uid_set(nums: Iterable[int]) -> str:
    """A sequence set for `nums` in their given order, ascending runs compressed:
    [1, 2, 3, 5, 7, 8, 9] -> "1:3,5,7:9" (RFC 9051 §9 sequence-set).

    Order is kept because COPYUID pairs source and destination sets by
    position (RFC 4315 §3). Raises ValueError if empty or out of 1..2^32-1.
    """
    runs = _uid_runs(nums)
    if not runs:
        raise ValueError("empty sequence set")
    return ",".join(runs)


def flags_list(flags: Iterable[str]) -> bytes:
    """A parenthesized flag list, e.g. `(\\Seen $Forwarded)`, order kept.

    Flags that are not valid IMAP flags (a keyword with a space, written
    through another protocol) are left out rather than breaking the line.
    """
    match = _FLAG.fullmatch
    return b"(" + b" ".join(f.encode("ascii") for f in flags if match(f)) + b")"


def internaldate(when: datetime) -> bytes:
    """INTERNALDATE as a quoted date-time: `"17-Jul-1996 02:44:25 -0700"` (RFC 9051 §9).

    The day is space-padded (date-day-fixed). Raises ValueError for a
    naive datetime: the zone is part of the value and must not be guessed.
    """
    offset = when.utcoffset()
    if offset is None:
        raise ValueError("internaldate needs an aware datetime")
    minutes = round(offset.total_seconds() / 60)
    if offset != timedelta(minutes=minutes):
        # zone offsets with seconds (historic LMT): show the instant in whole minutes.
        when = when.astimezone(timezone(timedelta(minutes=minutes)))
    sign = b"-" if minutes < 0 else b"+"
    hours, mins = divmod(abs(minutes), 60)
    return b'"%2d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        when.day, _MONTHS[when.month - 1], when.year,
        when.hour, when.minute, when.second, sign, hours, mins,
    )  # fmt: skip


def envelope(env: Envelope) -> bytes:
    """ENVELOPE value from the stored summary (mime/summary.py)."""
    return serialize_envelope(env)


def stored_envelope(summary: dict[str, Any]) -> bytes | None:
    """The ENVELOPE to keep with an item at delivery (`NewItem.imap_envelope`), or
    None when the summary has none (FETCH then renders it from the summary)."""
    env = summary.get("envelope")
    if not isinstance(env, dict):
        return None
    try:
        return serialize_envelope(cast(Envelope, env))
    except (KeyError, TypeError, ValueError):
        return None


def bodystructure(part: BodyPart) -> bytes:
    """BODYSTRUCTURE value from the stored summary (mime/summary.py)."""
    return serialize_bodystructure(part)


def body(part: BodyPart) -> bytes:
    """BODY (non-extensible) value from the stored summary (mime/summary.py)."""
    return serialize_body(part)


def fetch_response(seq: int, items: Sequence[tuple[str, bytes]]) -> bytes:
    """`* seq FETCH (name value ...)` CRLF (RFC 9051 §7.5.2).

    Each value is already encoded by this module (`flags_list`, `literal`,
    `envelope`, `b"%d" % uid`, ...) and is not re-checked; names such as
    `BODY[HEADER.FIELDS (From)]<0>` must be printable ASCII.
    """
    seq_bytes = _number(seq, 1, NZ_NUMBER_MAX)
    parts = []
    for name, value in items:
        if not name or not name.isascii() or not name.isprintable():
            raise ValueError(f"invalid FETCH item name {name!r}")
        parts.append(b"%s %s" % (name.encode("ascii"), value))
    return b"* %s FETCH (%s)\r\n" % (seq_bytes, b" ".join(parts))


# ---------------------------------------------------------------- data lines


def list_line(
    attributes: Iterable[str],
    delimiter: str | None,
    name: str,
    *,
    extended: Mapping[str, Iterable[str]] | None = None,
    utf8: bool = False,
    lsub: bool = False,
) -> bytes:
    """`* LIST (attrs) "/" name [(ext)]` CRLF (RFC 9051 §7.3.1, RFC 5258 §3).

    `name` is the Unicode name; `extended` maps a tag to its values, e.g.
    {"CHILDINFO": ["SUBSCRIBED"]} or {"OLDNAME": [old name]} (RFC 9051
    mbox-list-oldname). Attributes are server constants: ValueError if not flags.
    """
    attrs = []
    for attr in attributes:
        if _FLAG.fullmatch(attr) is None:
            raise ValueError(f"invalid mailbox attribute {attr!r}")
        attrs.append(attr.encode("ascii"))
    if delimiter is None:
        delim = b"NIL"
    elif len(delimiter) != 1 or not delimiter.isascii() or _CONTROL.match(delimiter):
        raise ValueError(f"invalid hierarchy delimiter {delimiter!r}")
    else:
        delim = quoted(delimiter)
    line = [b"* LSUB (" if lsub else b"* LIST (", b" ".join(attrs), b") ", delim, b" ",
            _mailbox(name, utf8)]  # fmt: skip
    if extended:
        items = []
        for tag, values in extended.items():
            if tag.upper() == "OLDNAME":
                encoded = [_mailbox(v, utf8) for v in values]
            else:
                encoded = [string(v.encode("utf-8"), utf8=utf8) for v in values]
            # RFC 5258 §3 examples quote the tag: ("CHILDINFO" ("SUBSCRIBED")).
            items.append(b'"%s"' % _atom(tag, "LIST extension tag"))
            items.append(b"(" + b" ".join(encoded) + b")")
        line.append(b" (" + b" ".join(items) + b")")
    line.append(CRLF)
    return b"".join(line)


def lsub_line(
    attributes: Iterable[str], delimiter: str | None, name: str, *, utf8: bool = False
) -> bytes:
    """`* LSUB (attrs) "/" name` CRLF (RFC 3501 §7.2.3; gone from IMAP4rev2)."""
    return list_line(attributes, delimiter, name, utf8=utf8, lsub=True)


def status_line(name: str, items: Mapping[str, int], *, utf8: bool = False) -> bytes:
    """`* STATUS name (MESSAGES 231 UIDNEXT 44292)` CRLF (RFC 9051 §7.3.2), order kept."""
    pairs = b" ".join(
        b"%s %s" % (_atom(key, "STATUS item"), _number(value)) for key, value in items.items()
    )
    return b"* STATUS %s (%s)\r\n" % (_mailbox(name, utf8), pairs)


def esearch_line(
    tag: str | None, uid: bool, results: Mapping[str, int | str | Iterable[int] | None]
) -> bytes:
    """`* ESEARCH (TAG "a1") UID MIN 1 COUNT 3 ALL 1:3` CRLF (RFC 4731 §3.1, RFC 9051 §7.3.4).

    A result that is None or an empty set is left out, as RFC 4731 requires
    for MIN, MAX and ALL when nothing matched; COUNT 0 is kept. A set may
    be given as ints (compressed here) or as an already formatted str.
    """
    line = [b"* ESEARCH"]
    if tag is not None:
        if _TAG.fullmatch(tag) is None:
            raise ValueError(f"invalid tag {tag!r}")
        line.append(b' (TAG "%s")' % tag.encode("ascii"))
    if uid:
        line.append(b" UID")
    for key, value in results.items():
        if value is None:
            continue
        if isinstance(value, int):
            encoded = _number(value)
        elif isinstance(value, str):
            if _SEQUENCE_SET.fullmatch(value) is None:
                raise ValueError(f"invalid sequence set {value!r}")
            encoded = value.encode("ascii")
        else:
            runs = _uid_runs(value)
            if not runs:
                continue
            encoded = ",".join(runs).encode("ascii")
        line.append(b" %s %s" % (_atom(key, "ESEARCH result"), encoded))
    line.append(CRLF)
    return b"".join(line)


def vanished_line(uids: Iterable[int], earlier: bool) -> bytes:
    """`* VANISHED [(EARLIER)] 1:3,5` CRLF (RFC 7162 §3.2.10); b"" if there are none."""
    runs = _uid_runs(uids)
    if not runs:
        return b""
    head = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    return head + ",".join(runs).encode("ascii") + CRLF


def _namespace(spaces: Sequence[tuple[str, str | None]] | None, utf8: bool) -> bytes:
    if not spaces:
        return b"NIL"
    out = []
    for prefix, delimiter in spaces:
        encoded = prefix if utf8 else encode_mailbox(prefix)
        delim = b"NIL" if delimiter is None else quoted(delimiter)
        out.append(b"(%s %s)" % (string(encoded.encode("utf-8"), utf8=utf8), delim))
    return b"(" + b"".join(out) + b")"


def namespace_line(
    personal: Sequence[tuple[str, str | None]] | None,
    other: Sequence[tuple[str, str | None]] | None,
    shared: Sequence[tuple[str, str | None]] | None,
    *,
    utf8: bool = False,
) -> bytes:
    """`* NAMESPACE (("" "/")) NIL NIL` CRLF (RFC 2342 §5, RFC 9051 §7.3.3).

    Each namespace is a list of (prefix, delimiter); None or [] is NIL.
    """
    return b"* NAMESPACE %s %s %s\r\n" % (
        _namespace(personal, utf8),
        _namespace(other, utf8),
        _namespace(shared, utf8),
    )


def _truncate_utf8(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return raw
    # Cut at a character boundary so the value stays valid UTF-8.
    return raw[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def id_line(fields: Mapping[str, str | None] | None, *, utf8: bool = False) -> bytes:
    """`* ID ("name" "postwerk" ...)` CRLF or `* ID NIL` CRLF (RFC 2971 §3.2).

    Control characters become spaces and RFC 2971 §3.3 limits are applied
    (30-octet fields, 1024-octet values, 30 pairs), so a configured value
    can neither break the line nor exceed what clients must accept.
    """
    if not fields:
        return b"* ID NIL\r\n"
    pairs = []
    for key, value in list(fields.items())[:ID_PAIRS_MAX]:
        field = _truncate_utf8(_CONTROL.sub(" ", key), ID_FIELD_MAX)
        pairs.append(string(field, utf8=utf8))
        if value is None:
            pairs.append(b"NIL")
        else:
            pairs.append(string(_truncate_utf8(_CONTROL.sub(" ", value), ID_VALUE_MAX), utf8=utf8))
    return b"* ID (" + b" ".join(pairs) + b")\r\n"


def quota_line(root: str, resources: Mapping[str, tuple[int, int]], *, utf8: bool = False) -> bytes:
    """`* QUOTA "" (STORAGE 10 512)` CRLF: resource, usage, limit (RFC 9208 §5.1)."""
    items = b" ".join(
        b"%s %s %s" % (_atom(name, "quota resource"), _number(usage), _number(limit))
        for name, (usage, limit) in resources.items()
    )
    return b"* QUOTA %s (%s)\r\n" % (astring(root, utf8=utf8), items)


def quotaroot_line(mailbox: str, roots: Iterable[str], *, utf8: bool = False) -> bytes:
    """`* QUOTAROOT INBOX ""` CRLF (RFC 9208 §5.2); `mailbox` is the Unicode name."""
    line = [b"* QUOTAROOT ", _mailbox(mailbox, utf8)]
    line.extend(b" " + astring(root, utf8=utf8) for root in roots)
    line.append(CRLF)
    return b"".join(line)


def capability_line(caps: Iterable[str]) -> bytes:
    """`* CAPABILITY IMAP4rev1 ...` CRLF (RFC 9051 §7.2.2); ValueError if one is not an atom."""
    return b"* CAPABILITY " + b" ".join(_atom(c, "capability") for c in caps) + CRLF


def enabled_line(caps: Iterable[str]) -> bytes:
    """`* ENABLED CONDSTORE` CRLF, possibly with no capability (RFC 5161 §3.2)."""
    return b"* ENABLED" + b"".join(b" " + _atom(c, "capability") for c in caps) + CRLF


def flags_line(flags: Iterable[str]) -> bytes:
    """`* FLAGS (\\Answered ...)` CRLF (RFC 9051 §7.3.5)."""
    return b"* FLAGS " + flags_list(flags) + CRLF


def search_line(nums: Iterable[int], modseq: int | None = None) -> bytes:
    """`* SEARCH 2 84 882 [(MODSEQ n)]` CRLF (RFC 3501 §7.2.5, RFC 7162 §3.1.5)."""
    line = [b"* SEARCH"]
    line.extend(b" " + _number(n, 1, NZ_NUMBER_MAX) for n in nums)
    if modseq is not None:
        line.append(b" (MODSEQ %s)" % _number(modseq, 1))
    line.append(CRLF)
    return b"".join(line)


def exists_line(count: int) -> bytes:
    """`* 23 EXISTS` CRLF (RFC 9051 §7.4.1)."""
    return b"* %s EXISTS\r\n" % _number(count, 0, NZ_NUMBER_MAX)


def recent_line(count: int) -> bytes:
    """`* 5 RECENT` CRLF (RFC 3501 §7.3.2; IMAP4rev1 only)."""
    return b"* %s RECENT\r\n" % _number(count, 0, NZ_NUMBER_MAX)


def expunge_line(seq: int) -> bytes:
    """`* 44 EXPUNGE` CRLF (RFC 9051 §7.5.1)."""
    return b"* %s EXPUNGE\r\n" % _number(seq, 1, NZ_NUMBER_MAX)
