"""FETCH body sections: the octets of BODY[section] and the decoded content of
BINARY[part] (RFC 9051 §6.4.5, RFC 3516), from a stored message and its summary.

Purpose: pure functions over bytes and the body structure `mime.summary` kept
at delivery (part offsets into the stored message), so the service never
re-parses MIME to answer a section. No I/O.

Invariants:
- Summary offsets index the blob; the stored message is the header prefix
  followed by the blob, hence `prefix_len` everywhere.
- A section that does not exist is None (the service answers NIL), never an
  exception; a transfer encoding BINARY cannot undo is `UnknownEncoding`
  (NO [UNKNOWN-CTE], RFC 3516 §4.3).
- Decoding is lenient where mail in the wild is sloppy (base64 with stray
  characters or missing padding, quoted-printable with bare line ends): a
  client gets the octets the sender meant, as other servers give them.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from typing import Final, assert_never

from postwerk.mime.summary import BodyPart
from postwerk.protocols.imap.commands import Section, SectionText
from postwerk.protocols.imap.responses import astring

# Content-Transfer-Encodings whose octets are the content (RFC 2045 §6.2).
IDENTITY_ENCODINGS: Final = frozenset({"7BIT", "8BIT", "BINARY"})
_BASE64_JUNK: Final = re.compile(rb"[^A-Za-z0-9+/]")


class UnknownEncoding(ValueError):
    """A part's Content-Transfer-Encoding is not one BINARY can decode."""


def _is_message(part: BodyPart) -> bool:
    return part["type"].upper() == "MESSAGE" and part["subtype"].upper() in ("RFC822", "GLOBAL")


def header_fields(block: bytes, names: Sequence[str], exclude: bool) -> bytes:
    """The fields of a header block named (or, with `exclude`, not named) in `names`,
    followed by the blank line (RFC 9051 §6.4.5 HEADER.FIELDS)."""
    wanted = {n.lower() for n in names}
    out: list[bytes] = []
    keep = False
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("latin-1").lower()
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    out.append(b"\r\n")
    return b"".join(out)


def section_bytes(
    message: bytes, prefix_len: int, root: BodyPart, section: Section
) -> bytes | None:
    """The octets of BODY[section]; None when the part does not exist.

    Summary offsets index the blob; the stored message is the header prefix
    followed by the blob, hence `prefix_len` (mime/summary.py invariants).
    """
    text = section.text
    if not section.part:
        end = prefix_len + root["offsets"][1]
        return _msgtext(message, 0, end, len(message), text, section.fields)
    node = _part_node(root, section.part)
    if node is None:
        return None
    start, body_start, end = (prefix_len + o for o in node["offsets"])
    if text is None:
        return message[body_start:end]
    if text is SectionText.MIME:
        return message[start:body_start]
    encapsulated = node["body"] if _is_message(node) else None
    if encapsulated is None:
        return None  # HEADER/TEXT of a part exist only for message/rfc822 (RFC 9051 §6.4.5)
    i_start, i_body, i_end = (prefix_len + o for o in encapsulated["offsets"])
    return _msgtext(message, i_start, i_body, i_end, text, section.fields)


def _msgtext(
    message: bytes,
    start: int,
    body: int,
    end: int,
    text: SectionText | None,
    fields: tuple[str, ...],
) -> bytes | None:
    match text:
        case None:
            return message[start:end]
        case SectionText.HEADER:
            return message[start:body]
        case SectionText.TEXT:
            return message[body:end]
        case SectionText.HEADER_FIELDS:
            return header_fields(message[start:body], fields, exclude=False)
        case SectionText.HEADER_FIELDS_NOT:
            return header_fields(message[start:body], fields, exclude=True)
        case SectionText.MIME:
            return None  # MIME needs a part number (the parser enforces it)
        case _:
            assert_never(text)


def section_name(section: Section) -> str:
    """The section spec echoed in the FETCH response: `1.2.MIME`, `HEADER.FIELDS (From)`."""
    parts = ".".join(str(n) for n in section.part)
    if section.text is None:
        return parts
    spec = section.text.value
    if section.text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
        names = " ".join(astring(f).decode("ascii") for f in section.fields)
        spec = f"{spec} ({names})"
    return f"{parts}.{spec}" if parts else spec


def no_nul(data: bytes) -> bytes:
    """RFC 9051 §4.3: a literal cannot carry NUL; BODY[] maps it to 0x80, as
    Dovecot does (every offset and size stays), and BINARY[] sends literal8."""
    return data.replace(b"\x00", b"\x80") if b"\x00" in data else data


def _part_node(root: BodyPart, part: Sequence[int]) -> BodyPart | None:
    """The body part a section-part names (RFC 9051 §6.4.5 numbering)."""
    node = root
    for depth, n in enumerate(part):
        if node["type"].upper() == "MULTIPART":
            if not 1 <= n <= len(node["parts"]):
                return None
            node = node["parts"][n - 1]
        elif depth > 0 and _is_message(node) and node["body"] is not None:
            # The parts of an encapsulated message continue its numbering.
            inner = node["body"]
            if inner["type"].upper() == "MULTIPART":
                if not 1 <= n <= len(inner["parts"]):
                    return None
                node = inner["parts"][n - 1]
            elif n == 1:
                node = inner
            else:
                return None
        elif n != 1 or depth > 0:
            return None  # a single-part body is part 1, and has no parts of its own
    return node


def binary_bytes(
    message: bytes, prefix_len: int, root: BodyPart, part: tuple[int, ...]
) -> bytes | None:
    """The content of BINARY[part]: the part's body with its transfer encoding
    undone (RFC 3516 §4.2); BINARY[] is the whole message as stored. None when
    the part does not exist; `UnknownEncoding` when it cannot be decoded."""
    if not part:
        return message
    node = _part_node(root, part)
    if node is None:
        return None
    _start, body_start, end = (prefix_len + o for o in node["offsets"])
    return decode_transfer(message[body_start:end], node["encoding"])


def decode_transfer(data: bytes, encoding: str) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 §6); `encoding` as the summary
    keeps it (upper case)."""
    match encoding.upper():
        case "BASE64":
            # The data ends at the first pad; line ends and stray octets are dropped.
            cleaned = _BASE64_JUNK.sub(b"", data.split(b"=", 1)[0])
            if len(cleaned) % 4 == 1:
                cleaned = cleaned[:-1]  # a lone trailing sextet carries no whole octet
            cleaned += b"=" * (-len(cleaned) % 4)
            try:
                return binascii.a2b_base64(cleaned)
            except binascii.Error as exc:
                raise UnknownEncoding(f"undecodable base64: {exc}") from None
        case "QUOTED-PRINTABLE":
            # a2b_qp keeps the line ends it finds; stored mail has CRLF.
            return binascii.a2b_qp(data)
        case enc if enc in IDENTITY_ENCODINGS:
            return data
        case other:
            raise UnknownEncoding(f"unknown transfer encoding {other}")
