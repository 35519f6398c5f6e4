"""Mail addresses as the transport sees them (RFC 5321 §4.1.2, RFC 6531 for UTF-8).

An `Address` keeps the local part as sent and the domain lower-cased (IDNA
U-labels are normalised to A-labels). Comparison for directory lookups uses
`Address.key`, which lower-cases the local part too: Exchange treats proxy
addresses case-insensitively.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwerk.core.errors import InvalidName

_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        """Case-insensitive lookup key."""
        return f"{self.local.lower()}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        return str(self).isascii()


def _is_dot_atom(text: str, allow_utf8: bool) -> bool:
    if not text or text.startswith(".") or text.endswith(".") or ".." in text:
        return False
    for ch in text:
        if ch in _ATEXT or ch == ".":
            continue
        if allow_utf8 and ord(ch) > 127:
            continue
        return False
    return True


def normalize_domain(domain: str) -> str:
    """Lower-case a domain and convert U-labels to A-labels; raise InvalidName if unusable."""
    domain = domain.strip().rstrip(".").lower()
    if not domain or len(domain) > MAX_DOMAIN:
        raise InvalidName(f"invalid domain {domain!r}")
    if domain.startswith("[") and domain.endswith("]"):
        return domain  # address literal, RFC 5321 §4.1.3
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidName(f"invalid domain {domain!r}") from exc
    labels = domain.split(".")
    for label in labels:
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise InvalidName(f"invalid domain {domain!r}")
        if not all(c.isalnum() or c in "-_" for c in label):
            raise InvalidName(f"invalid domain {domain!r}")
    return domain


def parse_address(text: str, allow_utf8: bool = True) -> Address:
    """Parse `local@domain` as it appears inside `<...>` (without the brackets).

    Quoted local parts are accepted and kept quoted; source routes must be
    stripped by the caller (RFC 5321 §4.1.2 says to ignore them).
    """
    if len(text) > MAX_PATH:
        raise InvalidName("address too long")
    at = text.rfind("@")
    if at <= 0 or at == len(text) - 1:
        raise InvalidName(f"invalid address {text!r}")
    local, domain = text[:at], text[at + 1 :]
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise InvalidName("local part too long")
    if local.startswith('"'):
        if not _is_quoted_string(local, allow_utf8):
            raise InvalidName(f"invalid local part {local!r}")
    elif not _is_dot_atom(local, allow_utf8):
        raise InvalidName(f"invalid local part {local!r}")
    if not allow_utf8 and not domain.isascii():
        raise InvalidName("non-ASCII domain")
    return Address(local, normalize_domain(domain))


def _is_quoted_string(text: str, allow_utf8: bool) -> bool:
    if len(text) < 2 or not text.endswith('"'):
        return False
    inner = text[1:-1]
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\":
            if i + 1 >= len(inner) or not (32 <= ord(inner[i + 1]) <= 126):
                return False
            i += 2
            continue
        if ch == '"' or (ord(ch) < 32) or ord(ch) == 127:
            return False
        if ord(ch) > 127 and not allow_utf8:
            return False
        i += 1
    return True


def unquote_local(local: str) -> str:
    """The local part's value: `"a b"` → `a b`."""
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        out = []
        inner = local[1:-1]
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
            else:
                out.append(inner[i])
                i += 1
        return "".join(out)
    return local
