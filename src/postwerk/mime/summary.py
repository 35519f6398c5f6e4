"""Per-message summary kept by the store, so readers never re-parse a message.

Purpose: parse a message once, at delivery or APPEND, into a JSON-ready
`MessageSummary`: the IMAP ENVELOPE (RFC 9051 §7.5.2), a BODYSTRUCTURE tree
with byte offsets of every part, sizes, and a few decoded values for
listings. `serialize_envelope` / `serialize_body` / `serialize_bodystructure`
print the IMAP wire form from the stored JSON later, without the blob.

Standards: RFC 5322 (header fields, address syntax incl. groups and obsolete
routes), RFC 2045/2046 (MIME headers, multipart boundaries), RFC 2047
(encoded words, decoded only in the convenience fields), RFC 2183
(Content-Disposition), RFC 3282 (Content-Language), RFC 2557
(Content-Location), RFC 9051 §7.5.2 and §9 (ENVELOPE/BODYSTRUCTURE grammar).

Invariants:
- `summarize` never raises: malformed input yields a best-effort summary
  (last resort: the whole message as one text/plain part).
- Offsets index the exact bytes given (`message`, or `message + body`); no
  line-ending normalisation happens here, so the store must summarise the
  bytes it keeps (canonical CRLF is the store's job).
- ENVELOPE and BODYSTRUCTURE strings are raw header text, not RFC 2047
  decoded (IMAP clients decode). Header bytes that are not UTF-8 are read as
  Latin-1 so the JSON stays valid text; NUL characters are dropped because
  IMAP strings cannot carry them (RFC 9051 §4.3).
- Nesting is cut at MAX_DEPTH levels and MAX_PARTS parts: a deeper multipart
  becomes a leaf, which bounds recursion and work on hostile input.

Why not `email.parser`: it does not report byte offsets (needed to stream
BODY[1.2] from the blob) and it is ~10x slower than scanning with
`bytes.find`; the stdlib is still used for dates (`email.utils`).
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import math
import re
from dataclasses import dataclass
from typing import Any, Final, TypedDict, cast

MAX_DEPTH: Final = 32
MAX_PARTS: Final = 2000
SUMMARY_VERSION: Final = 1

# Placeholders for an address without a mailbox or domain, as Dovecot sends:
# a NIL host would make clients read the address as a group marker
# (RFC 9051 §7.5.2).
MISSING_MAILBOX: Final = "MISSING_MAILBOX"
MISSING_DOMAIN: Final = "MISSING_DOMAIN"

# ---------------------------------------------------------------- JSON shapes

# [name, adl, mailbox, host]; group start [None, None, name, None], group end all None.
Address = list[str | None]

Envelope = TypedDict(
    "Envelope",
    {
        "date": str | None,
        "subject": str | None,
        "from": list[Address] | None,
        "sender": list[Address] | None,
        "reply_to": list[Address] | None,
        "to": list[Address] | None,
        "cc": list[Address] | None,
        "bcc": list[Address] | None,
        "in_reply_to": str | None,
        "message_id": str | None,
    },
)


class BodyPart(TypedDict):
    """One MIME part. `offsets` = [header start, body start, body end] in the message.

    `parts` is non-empty only for multipart/*; `envelope` and `body` are set
    only for message/rfc822 (`body` is the encapsulated message's root part).
    `lines` is set for text/* and message/rfc822 (RFC 9051 body-fld-lines).
    """

    type: str
    subtype: str
    params: list[list[str]]
    id: str | None
    description: str | None
    encoding: str
    size: int
    lines: int | None
    md5: str | None
    disposition: str | None
    disposition_params: list[list[str]]
    language: list[str] | None
    location: str | None
    offsets: list[int]
    parts: list[BodyPart]
    envelope: Envelope | None
    body: BodyPart | None


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """What the store keeps per message; `to_json()` is what it writes."""

    envelope: Envelope
    bodystructure: BodyPart
    header_size: int  # octets of the header block, including the blank line
    size: int  # octets of the whole message
    lines: int
    subject: str  # RFC 2047 decoded, "" if absent
    from_display: str  # decoded "Name <addr>" or "addr", "" if absent
    message_id: str | None  # raw, angle brackets kept
    date: float | None  # epoch seconds from the Date header
    has_attachments: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "v": SUMMARY_VERSION,
            "envelope": self.envelope,
            "bodystructure": self.bodystructure,
            "header_size": self.header_size,
            "size": self.size,
            "lines": self.lines,
            "subject": self.subject,
            "from_display": self.from_display,
            "message_id": self.message_id,
            "date": self.date,
            "has_attachments": self.has_attachments,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MessageSummary:
        """Inverse of `to_json`. Raises ValueError for another format version (re-summarise)."""
        if data.get("v") != SUMMARY_VERSION:
            raise ValueError(f"summary version {data.get('v')!r}, expected {SUMMARY_VERSION}")
        return cls(
            envelope=cast(Envelope, data["envelope"]),
            bodystructure=cast(BodyPart, data["bodystructure"]),
            header_size=int(data["header_size"]),
            size=int(data["size"]),
            lines=int(data["lines"]),
            subject=str(data["subject"]),
            from_display=str(data["from_display"]),
            message_id=data["message_id"],
            date=None if data["date"] is None else float(data["date"]),
            has_attachments=bool(data["has_attachments"]),
        )


# ---------------------------------------------------------------- header block


def header_block_end(data: bytes, start: int = 0, end: int | None = None) -> int | None:
    """Offset just after the blank line ending the header block, or None if there is none.

    Accepts CRLF and bare LF line ends (RFC 5322 §2.1 wants CRLF; LF-only
    files are common). A block that starts with a blank line is empty.
    """
    if end is None:
        end = len(data)
    if data.startswith(b"\r\n", start, end):
        return start + 2
    if data.startswith(b"\n", start, end):
        return start + 1
    crlf = data.find(b"\n\r\n", start, end)
    # Look for LF LF only before the first CRLF separator, so a CRLF message
    # is not scanned to its end for a bare-LF separator it does not have.
    lf = data.find(b"\n\n", start, end if crlf < 0 else crlf + 1)
    if lf >= 0:
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return None


def _text(raw: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532) if valid, else Latin-1; NULs dropped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\x00", "") if "\x00" in text else text


_WANTED: Final = frozenset(
    {
        "date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
        "in-reply-to", "message-id", "content-type", "content-transfer-encoding",
        "content-id", "content-description", "content-disposition",
        "content-language", "content-location", "content-md5",
    }
)  # fmt: skip


# A field starts a line with a name of printable ASCII except ":" (RFC 5322
# §2.2), optional WSP before the colon (§4.5.3 obsolete syntax), and runs on
# over folded lines starting with WSP (§2.2.3). Other lines (mbox "From "
# lines, garbage, orphan continuations) never match and are skipped.
_FIELD: Final = re.compile(rb"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M)
_WANTED_BYTES: Final = {name.encode(): name for name in _WANTED}


def _parse_fields(block: bytes) -> dict[str, str]:
    """The first occurrence of each header field we use, unfolded (RFC 5322 §2.2.3).

    Unfolding removes the line breaks and keeps the whitespace after them.
    """
    fields: dict[str, str] = {}
    for m in _FIELD.finditer(block):
        name = _WANTED_BYTES.get(m.group(1).lower())
        if name is not None and name not in fields:
            value = m.group(2)
            if b"\n" in value or b"\r" in value:
                value = value.replace(b"\r", b"").replace(b"\n", b"")
            fields[name] = _text(value).strip()
    return fields


# ---------------------------------------------------------------- tokenizer

# One lexical token of a structured header: kind is one of
#   "atom"  (a run of non-special characters; '.' included, for dot-atoms
#            and obs-phrase), "quoted" (text of a quoted-string, unescaped),
#   "comment" (text of a comment), "literal" (a domain literal with its
#   brackets), or a special character itself (< > @ , ; : = / etc.).
_Token = tuple[str, str]


def _token_pattern(specials: str) -> re.Pattern[str]:
    cls = re.escape(specials)
    return re.compile(
        r"[ \t\r\n]+"
        rf"|(?P<atom>[^{cls} \t\r\n]+)"
        r'|"(?P<quoted>(?:[^"\\]|\\.)*)"?'  # RFC 5322 §3.2.4; unterminated: to the end
        r"|(?P<literal>\[[^\]]*\]?)"  # RFC 5322 §3.4.1 domain literal
        r"|(?P<special>.)",
        re.S,
    )


_ADDR_TOKENS: Final = _token_pattern('()<>@,;:"[]')  # RFC 5322 §3.2.3 specials, "." in atoms
_MIME_TOKENS: Final = _token_pattern('()<>@,;:"[]/?=\\')  # RFC 2045 §5.1 tspecials
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.S)


def _tokenize(text: str, pattern: re.Pattern[str]) -> list[_Token]:
    tokens: list[_Token] = []
    pos, n = 0, len(text)
    match = pattern.match
    while pos < n:
        if text[pos] == "(":
            # Comments nest (RFC 5322 §3.2.2), which a regex cannot follow.
            pos, value = _scan_comment(text, pos + 1)
            tokens.append(("comment", value))
            continue
        m = match(text, pos)
        if m is None:  # cannot happen: "special" matches any character
            break
        pos = m.end()
        kind = m.lastgroup
        if kind is None:
            continue  # whitespace
        value = m.group(kind)
        if kind == "quoted":
            if "\\" in value:
                value = _QUOTED_PAIR.sub(r"\1", value)
        elif kind == "special":
            kind = value
        tokens.append((kind, value))
    return tokens


def _scan_comment(text: str, i: int) -> tuple[int, str]:
    """Scan a (possibly nested) comment after its "(" (RFC 5322 §3.2.2)."""
    out: list[str] = []
    depth, n = 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1, "".join(out)
        out.append(c)
        i += 1
    return n, "".join(out)


# ---------------------------------------------------------------- addresses


def parse_address_list(text: str | None) -> list[Address] | None:
    """An RFC 5322 address-list as IMAP address structures; None if empty.

    Groups become [NIL NIL name NIL] ... [NIL NIL NIL NIL] (RFC 9051 §7.5.2).
    """
    if not text:
        return None
    result: list[Address] = []
    outside: list[_Token] = []  # tokens of the current address outside "<...>"
    angle: list[_Token] | None = None  # tokens inside "<...>", if seen
    in_group = False
    tokens = _tokenize(text, _ADDR_TOKENS)
    i, n = 0, len(tokens)
    while i < n:
        kind = tokens[i][0]
        if kind == "<":
            # An angle-addr is one unit: its "," and ":" (obs-route) separate nothing.
            j = i + 1
            while j < n and tokens[j][0] != ">":
                j += 1
            if angle is None:
                angle = tokens[i + 1 : j]
            i = j + 1
            continue
        if kind == ":" and not in_group and angle is None and all(k != "@" for k, _ in outside):
            result.append([None, None, _phrase(outside) or "", None])
            in_group, outside = True, []
        elif kind == ";" and in_group:
            _flush(outside, angle, result)
            result.append([None, None, None, None])
            in_group, outside, angle = False, [], None
        elif kind == ",":
            _flush(outside, angle, result)
            outside, angle = [], None
        else:
            outside.append(tokens[i])
        i += 1
    _flush(outside, angle, result)
    if in_group:
        result.append([None, None, None, None])  # unterminated group: close it for the client
    return result or None


def _phrase(tokens: list[_Token]) -> str | None:
    words = [v for k, v in tokens if k in ("atom", "quoted")]
    return " ".join(words) if words else None


def _comment_name(tokens: list[_Token]) -> str | None:
    return next((v.strip() for k, v in tokens if k == "comment" and v.strip()), None)


def _flush(outside: list[_Token], angle: list[_Token] | None, result: list[Address]) -> None:
    if angle is not None:
        # name-addr: display name before "<", obs-route and addr-spec inside.
        name = _phrase(outside) or _comment_name(outside)
        adl, mailbox, host = _addr_spec(angle)
    elif outside:
        # bare addr-spec; an old-style trailing "(Real Name)" comment is the name.
        adl, mailbox, host = _addr_spec(outside)
        if mailbox is None and host is None:
            return  # only a comment or stray specials: no address
        name = _comment_name(outside)
    else:
        return
    if mailbox is None and host is None and name is None and adl is None:
        return
    result.append([name, adl, mailbox or MISSING_MAILBOX, host or MISSING_DOMAIN])


def _addr_spec(tokens: list[_Token]) -> tuple[str | None, str | None, str | None]:
    """(adl, local part, domain) from the tokens of an addr-spec, maybe with an obs-route."""
    tokens = [t for t in tokens if t[0] != "comment"]
    adl: str | None = None
    if tokens and tokens[0][0] == "@":
        # RFC 5322 §4.4 obs-route "@a,@b:" before the addr-spec; IMAP keeps it as adl.
        colon = next((i for i, t in enumerate(tokens) if t[0] == ":"), None)
        if colon is not None:
            adl = "".join(v for _, v in tokens[:colon]) or None
            tokens = tokens[colon + 1 :]
    at = max((i for i, t in enumerate(tokens) if t[0] == "@"), default=-1)
    local_tokens = tokens if at < 0 else tokens[:at]
    local = _local_part(local_tokens)
    host = None
    if at >= 0:
        host = "".join(v for k, v in tokens[at + 1 :] if k in ("atom", "literal")) or None
    return adl, local, host


_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+"  # RFC 5322 §3.2.3, RFC 6532
_DOT_ATOM: Final = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")


def _local_part(tokens: list[_Token]) -> str | None:
    """The local part in RFC 5322 form: quoted again if it is not a dot-atom, so a
    client joining mailbox "@" host gets a usable address (RFC 5322 §3.4.1)."""
    text = "".join(v for k, v in tokens if k in ("atom", "quoted", "@"))
    if not text:
        return None
    if any(k == "quoted" for k, _ in tokens) and not _DOT_ATOM.fullmatch(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


# ---------------------------------------------------------------- MIME fields


def _parse_params(tokens: list[_Token], start: int) -> list[list[str]]:
    """`; attr=value` pairs (RFC 2045 §5.1). Names upper-cased, values unquoted, raw.

    RFC 2231 continuations (`name*0*=`) are kept as separate raw parameters,
    which is what IMAP servers pass through to clients.
    """
    params: list[list[str]] = []
    i, n = start, len(tokens)
    while i < n:
        if tokens[i][0] != ";":
            i += 1
            continue
        i += 1
        if i >= n or tokens[i][0] != "atom":
            continue
        attr = tokens[i][1]
        i += 1
        if i >= n or tokens[i][0] != "=":
            continue
        i += 1
        value_parts: list[str] = []
        # A value is a token or quoted string; tolerate unquoted values with
        # tspecials (e.g. `name=a/b.pdf`) by taking everything up to the next ";".
        while i < n and tokens[i][0] not in (";", "comment"):
            value_parts.append(tokens[i][1])
            i += 1
        params.append([attr.upper(), "".join(value_parts)])
    return params


def _content_type(value: str | None, default: tuple[str, str]) -> tuple[str, str, list[list[str]]]:
    """(TYPE, SUBTYPE, params); the default (and charset us-ascii for text/plain) if absent
    or unparsable (RFC 2045 §5.2)."""
    if value:
        tokens = _tokenize(value, _MIME_TOKENS)
        tokens = [t for t in tokens if t[0] != "comment"]
        if (
            len(tokens) >= 3
            and tokens[0][0] == "atom"
            and tokens[1][0] == "/"
            and tokens[2][0] == "atom"
        ):
            return tokens[0][1].upper(), tokens[2][1].upper(), _parse_params(tokens, 3)
    if default == ("TEXT", "PLAIN"):
        return "TEXT", "PLAIN", [["CHARSET", "us-ascii"]]
    return default[0], default[1], []


def _disposition(value: str | None) -> tuple[str | None, list[list[str]]]:
    """RFC 2183 disposition type (upper-cased) and its parameters."""
    if not value:
        return None, []
    tokens = [t for t in _tokenize(value, _MIME_TOKENS) if t[0] != "comment"]
    if not tokens or tokens[0][0] != "atom":
        return None, []
    return tokens[0][1].upper(), _parse_params(tokens, 1)


def _language(value: str | None) -> list[str] | None:
    """RFC 3282 Content-Language: comma-separated tags, comments ignored."""
    if not value:
        return None
    tags = [v for k, v in _tokenize(value, _MIME_TOKENS) if k == "atom"]
    return tags or None


def _encoding(value: str | None) -> str:
    if not value:
        return "7BIT"  # RFC 2045 §6.1 default
    tokens = [v for k, v in _tokenize(value, _MIME_TOKENS) if k == "atom"]
    return tokens[0].upper() if tokens else "7BIT"


def _nonempty(value: str | None) -> str | None:
    return value if value else None


# ---------------------------------------------------------------- body parts


def _count_lines(data: bytes, start: int, end: int) -> int:
    if end <= start:
        return 0
    lines = data.count(b"\n", start, end)
    return lines if data[end - 1] == 0x0A else lines + 1


class _Parser:
    """Walks one message; holds the part budget so hostile nesting stays bounded."""

    __slots__ = ("data", "parts_left")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.parts_left = MAX_PARTS

    def part(
        self, start: int, end: int, default: tuple[str, str], depth: int
    ) -> tuple[BodyPart, dict[str, str]]:
        """Parse the entity in data[start:end]; also return its header fields."""
        data = self.data
        self.parts_left -= 1
        hend = header_block_end(data, start, end)
        body_start = end if hend is None else hend  # no blank line: all header (RFC 2046 §5.1.1)
        fields = _parse_fields(data[start:body_start])
        ctype, subtype, params = _content_type(fields.get("content-type"), default)
        encoding = _encoding(fields.get("content-transfer-encoding"))
        disp, disp_params = _disposition(fields.get("content-disposition"))
        node: BodyPart = {
            "type": ctype,
            "subtype": subtype,
            "params": params,
            "id": _nonempty(fields.get("content-id")),
            "description": _nonempty(fields.get("content-description")),
            "encoding": encoding,
            "size": end - body_start,
            "lines": None,
            "md5": _nonempty(fields.get("content-md5")),
            "disposition": disp,
            "disposition_params": disp_params,
            "language": _language(fields.get("content-language")),
            "location": _nonempty(fields.get("content-location")),
            "offsets": [start, body_start, end],
            "parts": [],
            "envelope": None,
            "body": None,
        }
        may_nest = depth < MAX_DEPTH and self.parts_left > 0
        if ctype == "MULTIPART":
            boundary = next((v for k, v in params if k == "BOUNDARY"), "")
            if boundary and may_nest:
                child_default = ("MESSAGE", "RFC822") if subtype == "DIGEST" else ("TEXT", "PLAIN")
                node["parts"] = self.multipart(
                    boundary.encode("utf-8"), body_start, end, child_default, depth
                )
                return node, fields
            # RFC 2045 §5.2: unusable Content-Type => treat as text/plain.
            node["type"], node["subtype"], node["params"] = (
                "TEXT",
                "PLAIN",
                [["CHARSET", "us-ascii"]],
            )
            ctype = "TEXT"
        elif ctype == "MESSAGE" and subtype in ("RFC822", "GLOBAL"):
            if encoding in ("7BIT", "8BIT", "BINARY") and may_nest:
                inner, inner_fields = self.part(body_start, end, ("TEXT", "PLAIN"), depth + 1)
                node["envelope"] = _envelope(inner_fields)
                node["body"] = inner
                node["lines"] = _count_lines(data, body_start, end)
                return node, fields
            # RFC 2046 §5.2.1 forbids encoding message/rfc822; clients expect an
            # envelope after "MESSAGE" "RFC822", so present it as opaque data.
            node["type"], node["subtype"] = "APPLICATION", "OCTET-STREAM"
        if ctype == "TEXT":
            node["lines"] = _count_lines(data, body_start, end)
        return node, fields

    def multipart(
        self, boundary: bytes, start: int, end: int, default: tuple[str, str], depth: int
    ) -> list[BodyPart]:
        """Split data[start:end] at `--boundary` lines (RFC 2046 §5.1.1) and parse each part."""
        data = self.data
        delim = b"--" + boundary
        dlen = len(delim)
        parts: list[BodyPart] = []
        part_start: int | None = None
        pos = start
        while pos < end:
            hit = data.find(delim, pos, end)
            if hit < 0:
                break
            after = hit + dlen
            if hit != start and data[hit - 1] != 0x0A:  # must begin a line
                pos = after
                continue
            closing = data.startswith(b"--", after, end)
            eol = data.find(b"\n", after, end)
            line_end = end if eol < 0 else eol + 1
            if not closing and data[after:line_end].strip(b" \t\r\n"):
                pos = after  # "--boundaryXYZ": a longer boundary, not ours
                continue
            # The line break before the delimiter belongs to the delimiter.
            body_end = hit
            if body_end > start and data[body_end - 1] == 0x0A:
                body_end -= 1
                if body_end > start and data[body_end - 1] == 0x0D:
                    body_end -= 1
            if part_start is not None:
                body_end = max(body_end, part_start)
                parts.append(self.part(part_start, body_end, default, depth + 1)[0])
            if closing:
                part_start = None
                break
            part_start = line_end
            pos = line_end
            if self.parts_left <= 0:
                break
        if part_start is not None:  # no close delimiter: the last part runs to the end
            parts.append(self.part(part_start, end, default, depth + 1)[0])
        if not parts:
            # IMAP needs at least one part in a multipart (RFC 9051 body-type-mpart).
            parts.append(_empty_text_part(end))
        return parts


def _empty_text_part(at: int) -> BodyPart:
    return {
        "type": "TEXT", "subtype": "PLAIN", "params": [["CHARSET", "us-ascii"]],
        "id": None, "description": None, "encoding": "7BIT", "size": 0, "lines": 0,
        "md5": None, "disposition": None, "disposition_params": [], "language": None,
        "location": None, "offsets": [at, at, at], "parts": [], "envelope": None, "body": None,
    }  # fmt: skip


def _envelope(fields: dict[str, str]) -> Envelope:
    get = fields.get
    from_ = parse_address_list(get("from"))
    # RFC 9051 §7.5.2: absent or empty Sender / Reply-To default to From.
    sender = parse_address_list(get("sender")) or from_
    reply_to = parse_address_list(get("reply-to")) or from_
    return {
        "date": get("date"),
        "subject": get("subject"),
        "from": from_,
        "sender": sender,
        "reply_to": reply_to,
        "to": parse_address_list(get("to")),
        "cc": parse_address_list(get("cc")),
        "bcc": parse_address_list(get("bcc")),
        "in_reply_to": get("in-reply-to"),
        "message_id": get("message-id"),
    }


# ---------------------------------------------------------------- decoded values

_ENCODED_WORD: Final = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS: Final = re.compile(r"(\?=)[ \t\r\n]+(=\?)")


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words; anything undecodable is left as it was.

    Whitespace between adjacent encoded words is dropped (RFC 2047 §6.2).
    Also accepts words not separated from text, as common clients do.
    """
    if "=?" not in text:
        return text
    text = _BETWEEN_WORDS.sub(r"\1\2", text)
    return _ENCODED_WORD.sub(_decode_word, text)


def _decode_word(m: re.Match[str]) -> str:
    charset = m.group(1).split("*", 1)[0]  # RFC 2231 §5 language suffix
    payload = m.group(3)
    try:
        raw = _q_decode(payload) if m.group(2) in "qQ" else _b64_lenient(payload)
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        return raw.decode(charset, errors="replace")
    except Exception:  # any bad word stays as it was
        return m.group(0)


def _q_decode(payload: str) -> bytes:
    out = bytearray()
    raw = payload.replace("_", " ").encode("latin-1", errors="replace")
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x3D and i + 2 < n and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


_B64_WORD: Final = re.compile(r"[A-Za-z0-9+/]*=*")


def _b64_lenient(payload: str) -> bytes:
    """Base64 of an encoded word; missing padding tolerated, junk characters not."""
    if not _B64_WORD.fullmatch(payload):
        raise ValueError("not base64")
    data = payload.encode("ascii").rstrip(b"=")
    data += b"=" * (-len(data) % 4)
    return binascii.a2b_base64(data)


def _parse_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        stamp = float(email.utils.mktime_tz(parsed))
    except Exception:  # the stdlib raises several types on odd dates
        return None
    return stamp if math.isfinite(stamp) else None


def _from_display(addresses: list[Address] | None) -> str:
    for name, _adl, mailbox, host in addresses or ():
        if host is None:
            continue  # group marker
        addr = f"{mailbox}@{host}"
        if name:
            return f"{decode_words(name)} <{addr}>"
        return addr
    return ""


def _has_attachments(part: BodyPart, is_root: bool = True) -> bool:
    """Attachments as a mail list shows a paper clip: parts disposed as attachment,
    encapsulated messages, or named parts not explicitly inline (RFC 2183)."""
    if part["parts"]:
        return any(_has_attachments(p, False) for p in part["parts"])
    if is_root:
        return part["disposition"] == "ATTACHMENT"
    if part["disposition"] == "ATTACHMENT" or part["body"] is not None:
        return True
    if part["disposition"] == "INLINE":
        return False
    named = any(
        k in ("NAME", "FILENAME") or k.startswith(("NAME*", "FILENAME*"))
        for k, _ in part["params"] + part["disposition_params"]
    )
    return named


# ---------------------------------------------------------------- entry point


def summarize(message: bytes, body: bytes | None = None) -> MessageSummary:
    """Summarise a message. Never raises.

    With `body`, `message` is a header block (or header prefix, e.g. a
    stamped Return-Path) and the summary describes `message + body`; all
    offsets index that concatenation.
    """
    data = message if body is None else message + body
    try:
        return _build_summary(data)
    except Exception:  # delivery must not fail on a bad message
        return _fallback_summary(data)


def _build_summary(data: bytes) -> MessageSummary:
    root, fields = _Parser(data).part(0, len(data), ("TEXT", "PLAIN"), 0)
    envelope = _envelope(fields)
    subject = envelope["subject"]
    return MessageSummary(
        envelope=envelope,
        bodystructure=root,
        header_size=root["offsets"][1],
        size=len(data),
        lines=_count_lines(data, 0, len(data)),
        subject=decode_words(subject) if subject else "",
        from_display=_from_display(envelope["from"]),
        message_id=envelope["message_id"],
        date=_parse_date(envelope["date"]),
        has_attachments=_has_attachments(root),
    )


def _fallback_summary(data: bytes) -> MessageSummary:
    part = _empty_text_part(0)
    part["size"] = len(data)
    part["lines"] = _count_lines(data, 0, len(data))
    part["offsets"] = [0, 0, len(data)]
    envelope: Envelope = {
        "date": None, "subject": None, "from": None, "sender": None, "reply_to": None,
        "to": None, "cc": None, "bcc": None, "in_reply_to": None, "message_id": None,
    }  # fmt: skip
    return MessageSummary(
        envelope=envelope, bodystructure=part, header_size=0, size=len(data),
        lines=part["lines"] or 0, subject="", from_display="", message_id=None,
        date=None, has_attachments=False,
    )  # fmt: skip


# ---------------------------------------------------------------- IMAP wire form


def nstring(value: str | None) -> bytes:
    """An IMAP nstring (RFC 9051 §4.3, §4.5): NIL, a quoted string, or a literal.

    Quoted when the value is 7-bit without CR/LF; otherwise a synchronising
    literal `{n}\\r\\n` + UTF-8 octets. NUL cannot be sent at all and is dropped.
    """
    if value is None:
        return b"NIL"
    if "\x00" in value:
        value = value.replace("\x00", "")
    if value.isascii() and "\r" not in value and "\n" not in value:
        if '"' in value or "\\" in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return b'"' + value.encode("ascii") + b'"'
    raw = value.encode("utf-8", errors="replace")
    return b"{%d}\r\n" % len(raw) + raw


def _addresses(addrs: list[Address] | None) -> bytes:
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(
        b"(" + b" ".join(nstring(f) for f in a[:4]) + b")" for a in addrs
    ) + b")"  # fmt: skip


def serialize_envelope(env: Envelope) -> bytes:
    """The ENVELOPE value (RFC 9051 §7.5.2) from its JSON form."""
    return b"(" + b" ".join(
        (
            nstring(env["date"]),
            nstring(env["subject"]),
            _addresses(env["from"]),
            _addresses(env["sender"]),
            _addresses(env["reply_to"]),
            _addresses(env["to"]),
            _addresses(env["cc"]),
            _addresses(env["bcc"]),
            nstring(env["in_reply_to"]),
            nstring(env["message_id"]),
        )
    ) + b")"  # fmt: skip


def _params(params: list[list[str]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(nstring(k) + b" " + nstring(v) for k, v in params) + b")"


def _disposition_wire(part: BodyPart) -> bytes:
    if part["disposition"] is None:
        return b"NIL"
    return b"(" + nstring(part["disposition"]) + b" " + _params(part["disposition_params"]) + b")"


def _language_wire(lang: list[str] | None) -> bytes:
    if not lang:
        return b"NIL"
    if len(lang) == 1:
        return nstring(lang[0])
    return b"(" + b" ".join(nstring(t) for t in lang) + b")"


def _serialize(part: BodyPart, extended: bool) -> bytes:
    out: list[bytes] = []
    if part["parts"]:
        # body-type-mpart: parts, subtype, then body-ext-mpart (RFC 9051 §9).
        out.append(b"".join(_serialize(p, extended) for p in part["parts"]))
        out.append(b" " + nstring(part["subtype"]))
        if extended:
            out.append(b" " + _params(part["params"]))
            out.append(b" " + _disposition_wire(part))
            out.append(b" " + _language_wire(part["language"]))
            out.append(b" " + nstring(part["location"]))
        return b"(" + b"".join(out) + b")"
    fields = [
        nstring(part["type"]),
        nstring(part["subtype"]),
        _params(part["params"]),
        nstring(part["id"]),
        nstring(part["description"]),
        nstring(part["encoding"]),
        b"%d" % part["size"],
    ]
    envelope, inner = part["envelope"], part["body"]
    if envelope is not None and inner is not None:
        # body-type-msg: envelope, body, lines.
        fields += [serialize_envelope(envelope), _serialize(inner, extended),
                   b"%d" % (part["lines"] or 0)]  # fmt: skip
    elif part["lines"] is not None and part["type"] == "TEXT":
        fields.append(b"%d" % part["lines"])  # body-type-text
    if extended:
        # body-ext-1part: md5, disposition, language, location.
        fields += [nstring(part["md5"]), _disposition_wire(part),
                   _language_wire(part["language"]), nstring(part["location"])]  # fmt: skip
    return b"(" + b" ".join(fields) + b")"


def serialize_bodystructure(part: BodyPart) -> bytes:
    """BODYSTRUCTURE (extensible form, RFC 9051 §7.5.2) from the JSON form."""
    return _serialize(part, extended=True)


def serialize_body(part: BodyPart) -> bytes:
    """BODY (non-extensible form, RFC 9051 §7.5.2) from the JSON form."""
    return _serialize(part, extended=False)
