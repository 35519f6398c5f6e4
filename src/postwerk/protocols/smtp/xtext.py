"""xtext encoding for ESMTP parameter values (RFC 3461 §4).

Used by ENVID, ORCPT (RFC 3461) and AUTH= (RFC 4954 §5). Printable ASCII
except "+" and "=" stands for itself; every other octet is "+" and two
upper-case hex digits. Text is UTF-8 on both sides.
"""

from __future__ import annotations

_HEX = frozenset("0123456789ABCDEFabcdef")


def _is_plain(octet: int) -> bool:
    # RFC 3461 §4: xchar = %d33-42 / %d44-60 / %d62-126
    return 33 <= octet <= 126 and octet not in (0x2B, 0x3D)


def xtext_encode(text: str) -> str:
    """Encode text (UTF-8 octets) as xtext."""
    return "".join(
        chr(octet) if _is_plain(octet) else f"+{octet:02X}" for octet in text.encode("utf-8")
    )


def xtext_decode(text: str) -> str:
    """Decode xtext; raise ValueError on malformed input or invalid UTF-8.

    Lower-case hex digits are accepted although RFC 3461 §4 says upper case:
    being liberal here costs nothing and some clients get it wrong.
    """
    if "+" not in text:
        if not all(_is_plain(ord(ch)) for ch in text):
            raise ValueError("invalid xtext character")
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "+":
            digits = text[i + 1 : i + 3]
            if len(digits) != 2 or not all(d in _HEX for d in digits):
                raise ValueError("invalid xtext hexchar")
            out.append(int(digits, 16))
            i += 3
            continue
        if not _is_plain(ord(ch)):
            raise ValueError("invalid xtext character")
        out.append(ord(ch))
        i += 1
    return out.decode("utf-8")  # UnicodeDecodeError is a ValueError
