"""Parse one POP3 command line into a command dataclass or a `Rejected`.

Purpose: `parse_command(line)` is the whole parser. It never raises: every
input yields either a `Command` or a `Rejected` whose text the service sends
after "-ERR ".

Standards: RFC 1939 §3 (keywords and arguments), RFC 2449 §4 (lengths),
RFC 5034 §4 (AUTH with initial response), RFC 2595 §4 (STLS), RFC 6856 (UTF8).

Policy:
- Keywords are case-insensitive ASCII (RFC 1939 §3). Arguments are separated
  by spaces; a run of spaces and trailing spaces are tolerated, except for
  PASS, whose argument is everything after "PASS " verbatim, so a password
  may contain or end in spaces.
- Each argument is at most 40 octets (RFC 1939 §3), except the PASS password,
  the USER name (RFC 2449 §4 raised the command to 255 octets, and user
  principal names are often longer than 40) and the AUTH initial response
  (RFC 5034 §4 only bounds it by the line). The framer bounds the line.
- Message numbers are 1*DIGIT with value 1 to 2^31; TOP's line count is
  0 to 2^31. Extra arguments are rejected, never ignored.
- Control characters (NUL, CR, LF, HTAB, ...) and invalid UTF-8 anywhere in
  the line are rejected. UTF-8 is accepted in USER and PASS whether or not
  the client sent UTF8: whether a non-ASCII name may log in is the service's
  decision (RFC 6856 §2).
- APOP is recognised and rejected: postwerk does not store the shared
  secret APOP needs (RFC 1939 §7), and MD5 challenge-response is obsolete.
- Rejection texts never echo client input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from postwerk.protocols.pop3.commands import (
    Auth,
    Capa,
    Command,
    Dele,
    List,
    Noop,
    Pass,
    Quit,
    Rejected,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
)

MAX_ARGUMENT: Final = 40  # RFC 1939 §3
MAX_USER: Final = 255  # RFC 2449 §4: a whole command may be 255 octets
MAX_MSG: Final = 2**31

UNKNOWN_COMMAND: Final = Rejected("unknown command")
APOP_UNSUPPORTED: Final = Rejected("APOP not supported")
SYNTAX_ERROR: Final = Rejected("syntax error")  # control characters, bad UTF-8
NO_ARGUMENTS: Final = Rejected("command takes no arguments")
MISSING_ARGUMENT: Final = Rejected("missing argument")
TOO_MANY_ARGUMENTS: Final = Rejected("too many arguments")
ARGUMENT_TOO_LONG: Final = Rejected("argument too long")
BAD_MESSAGE_NUMBER: Final = Rejected("invalid message number")
BAD_LINE_COUNT: Final = Rejected("invalid line count")
BAD_MECHANISM: Final = Rejected("invalid mechanism name")
BAD_BASE64: Final = Rejected("invalid base64 data")

# Every C0 control character and DEL; checked on bytes, before decoding.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]+")
_SASL_MECH = re.compile(r"[A-Za-z0-9_-]{1,20}")  # RFC 4422 §3.1
_BASE64 = re.compile(r"=|[A-Za-z0-9+/]+={0,2}")  # RFC 5034 §4: "=" is an empty response

_Handler = Callable[[str], Command | Rejected]


def parse_command(line: bytes) -> Command | Rejected:
    """Parse one command line given without its line ending."""
    if _CONTROL.search(line):
        return SYNTAX_ERROR
    keyword_bytes, _, arg_bytes = line.partition(b" ")
    # RFC 1939 §3: keywords are three or four characters ("UTF8" has a digit);
    # bytes.isalnum is ASCII-only.
    if not (3 <= len(keyword_bytes) <= 4 and keyword_bytes.isalnum()):
        return UNKNOWN_COMMAND
    keyword = keyword_bytes.decode("ascii").upper()
    if keyword == "APOP":
        return APOP_UNSUPPORTED
    handler = _HANDLERS.get(keyword)
    if handler is None:
        return UNKNOWN_COMMAND
    try:
        args = arg_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return SYNTAX_ERROR
    return handler(args)


def _split(args: str) -> list[str]:
    # Only SPACE separates (RFC 1939 §3); str.split() would also split on NBSP and friends.
    return [part for part in args.split(" ") if part]


def _no_args(make: Callable[[], Command]) -> _Handler:
    def parse(args: str) -> Command | Rejected:
        return NO_ARGUMENTS if _split(args) else make()

    return parse


def _number(text: str, minimum: int) -> int | None:
    """A decimal argument from `minimum` to 2^31, or None."""
    # The 40-octet bound keeps int() cheap; fullmatch refuses signs, "_" and non-ASCII digits.
    if len(text.encode("utf-8")) > MAX_ARGUMENT or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if minimum <= value <= MAX_MSG else None


def _one_msg(make: Callable[[int], Command]) -> _Handler:
    def parse(args: str) -> Command | Rejected:
        parts = _split(args)
        if not parts:
            return MISSING_ARGUMENT
        if len(parts) > 1:
            return TOO_MANY_ARGUMENTS
        msg = _number(parts[0], 1)
        return BAD_MESSAGE_NUMBER if msg is None else make(msg)

    return parse


def _optional_msg(make: Callable[[int | None], Command]) -> _Handler:
    def parse(args: str) -> Command | Rejected:
        parts = _split(args)
        if not parts:
            return make(None)
        if len(parts) > 1:
            return TOO_MANY_ARGUMENTS
        msg = _number(parts[0], 1)
        return BAD_MESSAGE_NUMBER if msg is None else make(msg)

    return parse


def _parse_top(args: str) -> Command | Rejected:
    parts = _split(args)
    if len(parts) < 2:
        return MISSING_ARGUMENT
    if len(parts) > 2:
        return TOO_MANY_ARGUMENTS
    msg = _number(parts[0], 1)
    if msg is None:
        return BAD_MESSAGE_NUMBER
    lines = _number(parts[1], 0)
    if lines is None:
        return BAD_LINE_COUNT
    return Top(msg, lines)


def _parse_user(args: str) -> Command | Rejected:
    parts = _split(args)
    if not parts:
        return MISSING_ARGUMENT
    if len(parts) > 1:
        return TOO_MANY_ARGUMENTS
    if len(parts[0].encode("utf-8")) > MAX_USER:
        return ARGUMENT_TOO_LONG
    return User(parts[0])


def _parse_auth(args: str) -> Command | Rejected:
    parts = _split(args)
    if not parts:
        return Auth(None)  # the list form: which mechanisms are there?
    if len(parts) > 2:
        return TOO_MANY_ARGUMENTS
    if not _SASL_MECH.fullmatch(parts[0]):
        return BAD_MECHANISM
    if len(parts) == 1:
        return Auth(parts[0].upper())
    # Shape only; the SASL layer decodes strictly (protocols/sasl/mechanisms.py).
    if not _BASE64.fullmatch(parts[1]):
        return BAD_BASE64
    return Auth(parts[0].upper(), parts[1])


def _parse_pass(args: str) -> Command | Rejected:
    # Verbatim, not split: a password may contain and end in spaces (RFC 1939 §7).
    return Pass(args) if args else MISSING_ARGUMENT


# Read-only, so nothing can change the grammar at run time (STYLE: no mutable globals).
_HANDLERS: Final[Mapping[str, _Handler]] = MappingProxyType(
    {
        "USER": _parse_user,
        "PASS": _parse_pass,
        "AUTH": _parse_auth,
        "STLS": _no_args(Stls),
        "CAPA": _no_args(Capa),
        "QUIT": _no_args(Quit),
        "STAT": _no_args(Stat),
        "LIST": _optional_msg(List),
        "RETR": _one_msg(Retr),
        "DELE": _one_msg(Dele),
        "NOOP": _no_args(Noop),
        "RSET": _no_args(Rset),
        "TOP": _parse_top,
        "UIDL": _optional_msg(Uidl),
        "UTF8": _no_args(Utf8),
    }
)
