"""POP3 commands as values: one frozen dataclass per verb (RFC 1939 §4-§7).

Purpose: the vocabulary between `parser` (bytes → command) and the session
and service that act on a command. Nothing here does I/O or policy.

Invariants:
- Message numbers are already checked: 1 ≤ n ≤ 2^31 (RFC 1939 §3 "msg").
  Whether message n exists is the session's question, not the parser's.
- `Pass.password` is the text after "PASS " verbatim, spaces included
  (RFC 1939 §7 notes that a server may accept spaces in the password); its
  repr hides it so it never reaches a log or a traceback.
- `Auth.mechanism` is upper-cased (RFC 4422 §3.1: names are case-insensitive);
  `Auth.initial_response` is the base64 text as sent, "=" meaning empty
  (RFC 5034 §4). Decoding is the SASL layer's job.
- APOP has no dataclass: it is not supported, the parser rejects it.

Standards: RFC 1939 (POP3), RFC 2449 (CAPA), RFC 2595 §4 (STLS),
RFC 5034 (AUTH, SASL-IR), RFC 6856 (UTF8).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class User:
    """RFC 1939 §7."""

    name: str


@dataclass(frozen=True, slots=True)
class Pass:
    """RFC 1939 §7: everything after "PASS ", verbatim."""

    password: str

    def __repr__(self) -> str:
        # Keep passwords out of logs and tracebacks.
        return "Pass(password=***)"


@dataclass(frozen=True, slots=True)
class Auth:
    """RFC 5034 §4. `mechanism` None is the list form (bare "AUTH")."""

    mechanism: str | None = None
    initial_response: str | None = None

    def __repr__(self) -> str:
        # An initial response may hold a PLAIN password in base64.
        shown = None if self.initial_response is None else "***"
        return f"Auth(mechanism={self.mechanism!r}, initial_response={shown!r})"


@dataclass(frozen=True, slots=True)
class Stls:
    """RFC 2595 §4."""


@dataclass(frozen=True, slots=True)
class Capa:
    """RFC 2449 §5."""


@dataclass(frozen=True, slots=True)
class Quit:
    """RFC 1939 §4 (AUTHORIZATION) and §6 (UPDATE)."""


@dataclass(frozen=True, slots=True)
class Stat:
    """RFC 1939 §5."""


@dataclass(frozen=True, slots=True)
class List:
    """RFC 1939 §5. `msg` None lists every message not marked as deleted."""

    msg: int | None = None


@dataclass(frozen=True, slots=True)
class Retr:
    """RFC 1939 §5."""

    msg: int


@dataclass(frozen=True, slots=True)
class Dele:
    """RFC 1939 §5."""

    msg: int


@dataclass(frozen=True, slots=True)
class Noop:
    """RFC 1939 §5."""


@dataclass(frozen=True, slots=True)
class Rset:
    """RFC 1939 §5."""


@dataclass(frozen=True, slots=True)
class Top:
    """RFC 1939 §7: the headers, the blank line and `lines` lines of the body."""

    msg: int
    lines: int


@dataclass(frozen=True, slots=True)
class Uidl:
    """RFC 1939 §7. `msg` None lists every message not marked as deleted."""

    msg: int | None = None


@dataclass(frozen=True, slots=True)
class Utf8:
    """RFC 6856 §2: switch the session to UTF-8 (AUTHORIZATION state only)."""


Command = (
    User
    | Pass
    | Auth
    | Stls
    | Capa
    | Quit
    | Stat
    | List
    | Retr
    | Dele
    | Noop
    | Rset
    | Top
    | Uidl
    | Utf8
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not a valid command; answer `-ERR <text>`.

    `text` is generic and safe to send: it never echoes the client's input.
    """

    text: str
