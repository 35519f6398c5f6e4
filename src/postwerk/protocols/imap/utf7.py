"""Modified UTF-7 for IMAP mailbox names, and the rules a new mailbox name must meet.

Purpose: IMAP4rev1 sends mailbox names in "modified UTF-7" (RFC 3501 §5.1.3,
kept by RFC 9051 §5.1.3 for clients that have not enabled UTF8=ACCEPT).
Printable US-ASCII (0x20-0x7E) stands for itself, except "&", which is "&-";
any other run of characters is UTF-16BE in base64 with "," for "/", no "="
padding, between "&" and "-". `encode_mailbox` / `decode_mailbox` convert
between that form and the Unicode name the store keeps; `valid_mailbox_name`
says why a name may not be created (CREATE, RENAME).

Security invariants:
- `decode_mailbox` accepts only the canonical encoding, the one
  `encode_mailbox` produces, and raises ValueError (and nothing else) for
  anything else. One name therefore has one wire form: a client cannot
  reach "INBOX" or "a/b" through an alternative spelling ("&AEkATgBC...-",
  "a&AC8-b") that bypasses a check done on the encoded text, and names that
  compare equal decoded compare equal encoded.
- Decoding is linear in the input and never builds more output than the
  input implies (each base64 character yields at most 6 bits).
- `valid_mailbox_name` refuses the wildcards "*" and "%" (a name containing
  them could never be LISTed exactly, RFC 9051 §6.3.9), control characters,
  "." / ".." levels (a path-like storage backend must never see them), and
  bounds size and depth so a hostile client cannot build unbounded trees.

Standards: RFC 3501 §5.1.3, RFC 9051 §5.1.3 (mailbox international naming
convention), RFC 2152 (UTF-7, of which this is a variant), RFC 4648 §4
(base64 alphabet), RFC 9051 §5.1 (mailbox naming), RFC 5198 (control
characters in net text).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

# Mailbox-name limits for CREATE/RENAME. 1,024 octets matches what Dovecot
# and Exchange accept; 16 levels is deeper than any real client folder tree.
MAX_NAME_OCTETS: Final = 1024
MAX_LEVELS: Final = 16

# Characters outside printable US-ASCII: each run of them is one base64 run.
_NOT_PRINTABLE: Final = re.compile(r"[^\x20-\x7e]+")
# The modified base64 alphabet (RFC 3501 §5.1.3: "," replaces "/").
_B64_RUN: Final = re.compile(r"[A-Za-z0-9+,]*")
_B64_VALUE: Final = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
}
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]*")
_HAS_PRINTABLE: Final = re.compile(r"[\x20-\x7e]")
# C0 controls, DEL and C1 controls (RFC 5198 §2 forbids them in net text).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _encode_run(m: re.Match[str]) -> str:
    # A lone surrogate cannot be written as UTF-16: UnicodeEncodeError (a ValueError).
    raw = m.group(0).encode("utf-16-be")
    b64 = base64.b64encode(raw).rstrip(b"=").replace(b"/", b",")
    return "&" + b64.decode("ascii") + "-"


def encode_mailbox(name: str) -> str:
    """The modified UTF-7 form of a mailbox name (RFC 3501 §5.1.3).

    Raises ValueError (UnicodeEncodeError) if `name` holds an unpaired surrogate.
    """
    if "&" in name:
        name = name.replace("&", "&-")  # "&-" is printable, so the runs below skip it
    return _NOT_PRINTABLE.sub(_encode_run, name)


def _decode_run(b64: str) -> str:
    """The characters of one non-empty base64 run; ValueError unless canonical."""
    if not _B64_RUN.fullmatch(b64):
        raise ValueError("invalid character in modified base64")
    length = len(b64)
    octets = length * 6 // 8
    # Canonical length: the fewest characters that carry `octets` octets, so
    # there is no trailing character made only of padding bits.
    if octets == 0 or octets % 2 or length != -(-octets * 8 // 6):
        raise ValueError("modified base64 run of a bad length")
    spare_bits = length * 6 - octets * 8
    if _B64_VALUE[b64[-1]] & ((1 << spare_bits) - 1):
        raise ValueError("non-zero padding bits in modified base64")
    try:
        raw = base64.b64decode(b64.replace(",", "/") + "=" * (-length % 4), validate=True)
    except binascii.Error as exc:  # unreachable after the checks above; kept as a guard
        raise ValueError("invalid modified base64") from exc
    try:
        chars = raw.decode("utf-16-be")  # strict: rejects unpaired surrogates
    except UnicodeDecodeError as exc:
        raise ValueError("unpaired UTF-16 surrogate in modified base64") from exc
    if _HAS_PRINTABLE.search(chars):
        # RFC 3501 §5.1.3: printable US-ASCII "MUST NOT" be base64-encoded.
        raise ValueError("printable US-ASCII character encoded in modified base64")
    return chars


def decode_mailbox(text: str) -> str:
    """The Unicode mailbox name for its modified UTF-7 form (RFC 3501 §5.1.3).

    Raises ValueError for anything `encode_mailbox` would not have produced:
    characters outside printable US-ASCII, "&" without a closing "-", bad or
    non-canonical base64, non-zero padding bits, an odd number of octets,
    unpaired surrogates, encoded printable ASCII, or two encoded runs in a
    row ("&AOk-&AOk-" is "&AOkA6Q-" spelled differently).
    """
    if not _PRINTABLE_ASCII.fullmatch(text):
        raise ValueError("mailbox name outside printable US-ASCII")
    if "&" not in text:
        return text
    out: list[str] = []
    pos, n = 0, len(text)
    previous_encoded = False
    while pos < n:
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            break
        if amp > pos:
            out.append(text[pos:amp])
            previous_encoded = False
        dash = text.find("-", amp + 1)
        if dash < 0:
            raise ValueError("'&' not closed by '-'")
        run = text[amp + 1 : dash]
        if not run:
            out.append("&")
            previous_encoded = False
        else:
            if previous_encoded:
                raise ValueError("two modified base64 runs in a row")
            out.append(_decode_run(run))
            previous_encoded = True
        pos = dash + 1
    return "".join(out)


def valid_mailbox_name(name: str, delimiter: str | None = "/") -> str | None:
    """Why `name` (decoded, Unicode) may not be created, or None if it may.

    `delimiter` is the hierarchy delimiter, None for a flat namespace. The
    reason is short English text for a NO response; it never echoes the name.
    """
    if not name:
        return "empty mailbox name"
    if _CONTROL.search(name):
        return "control character in mailbox name"
    if any("\ud800" <= c <= "\udfff" for c in name):
        return "invalid character in mailbox name"
    if "*" in name or "%" in name:
        # RFC 9051 §6.3.9: wildcards in a name make it impossible to LIST exactly.
        return "wildcard character in mailbox name"
    if len(name.encode("utf-8")) > MAX_NAME_OCTETS:
        return f"mailbox name longer than {MAX_NAME_OCTETS} octets"
    if not delimiter:
        return "'.' or '..' is not a mailbox name" if name in (".", "..") else None
    if name.startswith(delimiter) or name.endswith(delimiter):
        return "mailbox name starts or ends with the hierarchy delimiter"
    levels = name.split(delimiter)
    if any(not level for level in levels):
        return "empty hierarchy level in mailbox name"
    if any(level in (".", "..") for level in levels):
        return "'.' or '..' hierarchy level in mailbox name"
    if len(levels) > MAX_LEVELS:
        return f"mailbox name deeper than {MAX_LEVELS} levels"
    return None
