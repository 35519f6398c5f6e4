"""Parse one SMTP command line into a command dataclass or a syntax-error reply.

Purpose: `parse_command(line)` is the whole parser. It never raises: every
input yields either a `Command` or a `Reply` the service can send as is.

Standards: RFC 5321 §4.1.1-§4.1.4 (commands, paths), RFC 1870 (SIZE),
RFC 6152 / RFC 3030 (BODY, BDAT), RFC 3461 (DSN parameters), RFC 4954 (AUTH),
RFC 6531 (SMTPUTF8); XPWNEXTHOP, postwerk's own MAIL parameter between its servers
(transport/outbound_proxy.py).

Policy (what the parser decides and what it leaves to the service):
- Syntax only. Whether an extension is enabled, whether a sender may use an
  address, whether `user%host@domain` is a relay attempt: the service decides.
- Liberal where real clients are sloppy and it is harmless: verbs and keywords
  are case-insensitive, `MAIL FROM: <a@b>` (space after the colon) is accepted,
  runs of spaces or tabs separate parameters, trailing white space is ignored.
- Strict where sloppiness is a risk: angle brackets are required, CR and NUL
  in a line are a syntax error, duplicate parameters are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from postwerk.core import replies
from postwerk.core.addresses import parse_address
from postwerk.core.errors import InvalidName
from postwerk.core.replies import Reply
from postwerk.protocols.smtp.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    MailFrom,
    MailParams,
    Noop,
    Quit,
    RcptParams,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from postwerk.protocols.smtp.xtext import xtext_decode

# Variants of the named replies with a more helpful text; code and status stay.
_MISSING_BRACKETS = replies.BAD_ADDRESS_SYNTAX.with_text("Address must be enclosed in <>")
_NULL_RECIPIENT = replies.BAD_ADDRESS_SYNTAX.with_text("Null recipient not allowed")
_BAD_DOMAIN = replies.PARAM_SYNTAX.with_text("Invalid domain name")
_NO_ARGUMENTS = replies.PARAM_SYNTAX.with_text("This command takes no arguments")
_DUPLICATE_PARAM = replies.PARAM_SYNTAX.with_text("Duplicate parameter")
_BAD_PARAM_VALUE = replies.PARAM_NOT_RECOGNIZED.with_text("Invalid parameter value")
_BAD_BASE64 = replies.PARAM_SYNTAX.with_text("Invalid base64 data")

_WS = re.compile(r"[ \t]+")
# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_DIGITS_20 = re.compile(r"[0-9]{1,20}")  # RFC 1870 §3: size-value = 1*20DIGIT
_DIGITS_18 = re.compile(r"[0-9]{1,18}")  # our bound for BDAT: fits in int64 with room
_SASL_MECH = re.compile(r"[A-Za-z0-9_-]{1,20}")  # RFC 4422 §3.1
_BASE64 = re.compile(r"=|[A-Za-z0-9+/]+={0,2}")  # RFC 4954 §4: "=" is an empty response
# RFC 5321 §4.1.3 address-literal, loosely: any printable ASCII except brackets and "\".
_ADDRESS_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # RFC 3461 §4.2 addr-type is an atom
_NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")
_BODY_TYPES = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})  # RFC 6152, RFC 3030 §3
_MAX_ENVID = 100  # RFC 3461 §4.4
_MAX_ORCPT = 500  # RFC 3461 §4.2
# Control characters other than HTAB (a regex: a per-character loop was most of a command's cost).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_command(line: bytes, smtputf8: bool = False) -> Command | Reply:
    """Parse one command line given without its line ending.

    `smtputf8` says whether the current transaction was opened with
    `MAIL FROM:<...> SMTPUTF8`; it decides whether a RCPT address may contain
    non-ASCII (RFC 6531 §3.4). MAIL looks at its own SMTPUTF8 parameter.
    """
    # RFC 5321 §2.3.8: CR only as part of CRLF; NUL has no business in a command.
    if b"\r" in line or b"\x00" in line:
        return replies.SYNTAX_ERROR
    line = line.rstrip(b" \t")
    verb_bytes, _, arg_bytes = line.partition(b" ")
    if not verb_bytes.isalpha():  # bytes.isalpha is ASCII-only
        return replies.SYNTAX_ERROR
    handler = _HANDLERS.get(verb_bytes.decode("ascii").upper())
    if handler is None:
        return replies.SYNTAX_ERROR
    try:
        args = arg_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return replies.PARAM_SYNTAX
    if _CONTROL.search(args):
        return replies.PARAM_SYNTAX
    return handler(args.strip(" \t"), smtputf8)


# --- verbs without arguments ---------------------------------------------------


def _no_args(make: Callable[[], Command]) -> Callable[[str, bool], Command | Reply]:
    def parse(args: str, _smtputf8: bool) -> Command | Reply:
        return _NO_ARGUMENTS if args else make()

    return parse


def _parse_noop(_args: str, _smtputf8: bool) -> Command | Reply:
    return Noop()  # RFC 5321 §4.1.1.9: the string argument is ignored


def _parse_help(args: str, _smtputf8: bool) -> Command | Reply:
    return Help(args or None)  # RFC 5321 §4.1.1.8


def _parse_vrfy(args: str, _smtputf8: bool) -> Command | Reply:
    return Vrfy(args) if args else replies.PARAM_SYNTAX  # RFC 5321 §4.1.1.6


def _parse_expn(args: str, _smtputf8: bool) -> Command | Reply:
    return Expn(args) if args else replies.PARAM_SYNTAX  # RFC 5321 §4.1.1.7


# --- HELO / EHLO ---------------------------------------------------------------


def _is_helo_domain(text: str) -> bool:
    """RFC 5321 §4.1.1.1: Domain / address-literal; U-labels tolerated (RFC 6531 §3.3)."""
    if _ADDRESS_LITERAL.fullmatch(text):
        return True
    return (
        all(
            (ch.isascii() and (ch.isalnum() or ch in "-._"))
            or (not ch.isascii() and ch.isprintable())
            for ch in text
        )
        and len(text) <= 255
    )


def _parse_helo(args: str, _smtputf8: bool) -> Command | Reply:
    if not args or _WS.search(args) or not _is_helo_domain(args):
        return _BAD_DOMAIN
    return Helo(args)


def _parse_ehlo(args: str, _smtputf8: bool) -> Command | Reply:
    if not args or _WS.search(args) or not _is_helo_domain(args):
        return _BAD_DOMAIN
    return Ehlo(args)


# --- paths ---------------------------------------------------------------------


def _split_path(text: str) -> tuple[str, str] | Reply:
    """Split `<path> rest` into the path content and the rest (RFC 5321 §4.1.2)."""
    if not text.startswith("<"):
        return _MISSING_BRACKETS
    in_quote = False
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 2  # quoted-pair: the next character is literal, even ">" or '"'
                continue
            if ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == ">":
            return text[1:i], text[i + 1 :]
        elif ch == "<":
            return replies.BAD_ADDRESS_SYNTAX
        i += 1
    return _MISSING_BRACKETS


def _strip_source_route(path: str) -> str | None:
    """Drop `@a,@b:` before the mailbox; None if the route is malformed.

    RFC 5321 §4.1.2 and Appendix C: servers must accept source routes and
    should ignore them, so they are not validated beyond their shape.
    """
    if not path.startswith("@"):
        return path
    i = 0
    n = len(path)
    while i < n and path[i] == "@":
        i += 1
        start = i
        if i < n and path[i] == "[":  # address literal may itself contain ":" (IPv6)
            close = path.find("]", i)
            if close < 0:
                return None
            i = close + 1
        else:
            while i < n and path[i] not in ",:":
                i += 1
        if i == start or i >= n or any(ch.isspace() for ch in path[start:i]):
            return None
        if path[i] == ":":
            return path[i + 1 :]
        if path[i] != ",":
            return None
        i += 1
    return None


def _check_mailbox(path: str, smtputf8: bool) -> Reply | None:
    """Validate the mailbox syntax; None when it is acceptable."""
    if not path.isascii() and not smtputf8:
        return replies.SMTPUTF8_REQUIRED  # RFC 6531 §3.4
    at = path.rfind("@")
    # parse_address strips white space around the domain; the wire must not carry any.
    if at >= 0 and any(ch.isspace() for ch in path[at:]):
        return replies.BAD_ADDRESS_SYNTAX
    if not path.startswith('"') and any(ch.isspace() for ch in path):
        return replies.BAD_ADDRESS_SYNTAX
    try:
        parse_address(path, allow_utf8=smtputf8)
    except (InvalidName, ValueError):  # ValueError covers IDNA codec failures
        return replies.BAD_ADDRESS_SYNTAX
    return None


# --- ESMTP parameters ----------------------------------------------------------


def _split_params(rest: str) -> dict[str, str | None] | Reply:
    """Parse `SP KEY[=VALUE] ...` after a path into an upper-cased keyword map."""
    if not rest:
        return {}
    if rest[0] not in " \t":
        return replies.PARAM_SYNTAX  # e.g. "<a@b>SIZE=1": no separator after the path
    params: dict[str, str | None] = {}
    for token in _WS.split(rest.strip(" \t")):
        keyword, sep, value = token.partition("=")
        if not _KEYWORD.fullmatch(keyword):
            return replies.PARAM_NOT_RECOGNIZED
        # RFC 5321 §4.1.2: esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 §3.3 adds UTF-8.
        if sep and (not value or "=" in value or not value.isprintable()):
            return _BAD_PARAM_VALUE
        key = keyword.upper()
        if key in params:
            return _DUPLICATE_PARAM
        params[key] = value if sep else None
    return params


def _mail_params(raw: dict[str, str | None]) -> MailParams | Reply:
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    next_hop: str | None = None
    for key, value in raw.items():
        if key == "SMTPUTF8":
            if value is not None:
                return _BAD_PARAM_VALUE
            smtputf8 = True
            continue
        if key not in ("SIZE", "BODY", "RET", "ENVID", "AUTH", "XPWNEXTHOP"):
            return replies.PARAM_NOT_RECOGNIZED
        if value is None:
            return _BAD_PARAM_VALUE
        if key == "SIZE":
            if not _DIGITS_20.fullmatch(value):
                return _BAD_PARAM_VALUE
            size = int(value)
        elif key == "BODY":
            body = value.upper()
            if body not in _BODY_TYPES:
                return _BAD_PARAM_VALUE
        elif key == "RET":
            ret = value.upper()
            if ret not in ("FULL", "HDRS"):
                return _BAD_PARAM_VALUE
        elif key == "ENVID":
            if len(value) > _MAX_ENVID:
                return _BAD_PARAM_VALUE
            try:
                envid = xtext_decode(value)
            except ValueError:
                return _BAD_PARAM_VALUE
        elif key == "XPWNEXTHOP":  # private (RFC 5321 §4.1.5); the session decides
            try:
                next_hop = xtext_decode(value)
            except ValueError:
                return _BAD_PARAM_VALUE
            if not next_hop or not next_hop.isprintable():
                return _BAD_PARAM_VALUE
        else:  # AUTH, RFC 4954 §5
            try:
                auth = xtext_decode(value)
            except ValueError:
                return _BAD_PARAM_VALUE
    return MailParams(
        size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth, next_hop=next_hop
    )


def _rcpt_params(raw: dict[str, str | None]) -> RcptParams | Reply:
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for key, value in raw.items():
        if key not in ("NOTIFY", "ORCPT"):
            return replies.PARAM_NOT_RECOGNIZED
        if value is None:
            return _BAD_PARAM_VALUE
        if key == "NOTIFY":
            items = value.upper().split(",")
            if items == ["NEVER"]:
                notify = ("NEVER",)
                continue
            # RFC 3461 §4.1: NEVER stands alone; the others form a set.
            if len(set(items)) != len(items) or not set(items) <= set(_NOTIFY_ORDER):
                return _BAD_PARAM_VALUE
            notify = tuple(item for item in _NOTIFY_ORDER if item in items)
        else:
            addr_type, sep, encoded = value.partition(";")
            if not sep or not _ATOM.fullmatch(addr_type) or not encoded:
                return _BAD_PARAM_VALUE
            if len(value) > _MAX_ORCPT:
                return _BAD_PARAM_VALUE
            try:
                orcpt = f"{addr_type.lower()};{xtext_decode(encoded)}"
            except ValueError:
                return _BAD_PARAM_VALUE
    return RcptParams(notify=notify, orcpt=orcpt)


# --- MAIL / RCPT ---------------------------------------------------------------


def _after_prefix(args: str, prefix: str) -> str | None:
    """The text after `FROM:` / `TO:` (case-insensitive), leading spaces dropped."""
    if args[: len(prefix)].upper() != prefix:
        return None
    # Tolerate "MAIL FROM: <a@b>": common in the wild and unambiguous.
    return args[len(prefix) :].lstrip(" \t")


def _parse_mail(args: str, _smtputf8: bool) -> Command | Reply:
    text = _after_prefix(args, "FROM:")
    if text is None:
        return replies.PARAM_SYNTAX
    split = _split_path(text)
    if isinstance(split, Reply):
        return split
    raw_path, rest = split
    raw_params = _split_params(rest)
    if isinstance(raw_params, Reply):
        return raw_params
    params = _mail_params(raw_params)
    if isinstance(params, Reply):
        return params
    path = _strip_source_route(raw_path)
    if path is None:
        return replies.BAD_ADDRESS_SYNTAX
    if path == "":
        return MailFrom("", params)  # RFC 5321 §4.5.5: the null reverse-path
    # RFC 6531 §3.4: MAIL may carry non-ASCII only together with its own SMTPUTF8.
    bad = _check_mailbox(path, params.smtputf8)
    return bad if bad is not None else MailFrom(path, params)


def _parse_rcpt(args: str, smtputf8: bool) -> Command | Reply:
    text = _after_prefix(args, "TO:")
    if text is None:
        return replies.PARAM_SYNTAX
    split = _split_path(text)
    if isinstance(split, Reply):
        return split
    raw_path, rest = split
    raw_params = _split_params(rest)
    if isinstance(raw_params, Reply):
        return raw_params
    params = _rcpt_params(raw_params)
    if isinstance(params, Reply):
        return params
    path = _strip_source_route(raw_path)
    if path is None:
        return replies.BAD_ADDRESS_SYNTAX
    if path == "":
        return _NULL_RECIPIENT
    if path.lower() == "postmaster":
        # RFC 5321 §4.1.1.3: "<Postmaster>" without a domain must be accepted.
        return RcptTo(path, params)
    bad = _check_mailbox(path, smtputf8)
    return bad if bad is not None else RcptTo(path, params)


# --- BDAT / AUTH ---------------------------------------------------------------


def _parse_bdat(args: str, _smtputf8: bool) -> Command | Reply:
    # RFC 3030 §2: "BDAT" SP chunk-size [ SP end-marker ]
    parts = _WS.split(args) if args else []
    if not 1 <= len(parts) <= 2 or not _DIGITS_18.fullmatch(parts[0]):
        return replies.PARAM_SYNTAX
    if len(parts) == 2 and parts[1].upper() != "LAST":
        return replies.PARAM_SYNTAX
    return Bdat(int(parts[0]), len(parts) == 2)


def _parse_auth(args: str, _smtputf8: bool) -> Command | Reply:
    # RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response]
    parts = _WS.split(args) if args else []
    if not 1 <= len(parts) <= 2 or not _SASL_MECH.fullmatch(parts[0]):
        return replies.PARAM_SYNTAX
    if len(parts) == 2:
        if not _BASE64.fullmatch(parts[1]):
            return _BAD_BASE64
        return Auth(parts[0].upper(), parts[1])
    return Auth(parts[0].upper(), None)


_HANDLERS: dict[str, Callable[[str, bool], Command | Reply]] = {
    "HELO": _parse_helo,
    "EHLO": _parse_ehlo,
    "MAIL": _parse_mail,
    "RCPT": _parse_rcpt,
    "DATA": _no_args(Data),
    "BDAT": _parse_bdat,
    "RSET": _no_args(Rset),
    "NOOP": _parse_noop,
    "QUIT": _no_args(Quit),
    "VRFY": _parse_vrfy,
    "EXPN": _parse_expn,
    "HELP": _parse_help,
    "STARTTLS": _no_args(StartTls),
    "AUTH": _parse_auth,
}
