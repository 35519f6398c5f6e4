"""Parser tables for postwerk.protocols.pop3.parser: bytes in, command or Rejected out."""

from __future__ import annotations

import pytest

from postwerk.protocols.pop3 import (
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
    parse_command,
)
from postwerk.protocols.pop3 import parser as p

VALID: list[tuple[bytes, Command]] = [
    # RFC 1939 §7 USER / PASS
    (b"USER alice", User("alice")),
    (b"user alice", User("alice")),
    (b"UsEr alice@example.com", User("alice@example.com")),
    (b"USER alice   ", User("alice")),
    (b"USER  alice", User("alice")),
    (b"USER CONTOSO\\alice", User("CONTOSO\\alice")),
    (b"USER " + b"a" * 41, User("a" * 41)),  # longer than 40: UPNs are
    (b"USER " + b"a" * 255, User("a" * 255)),
    ("USER jöran@bücher.example".encode(), User("jöran@bücher.example")),
    (b"PASS secret", Pass("secret")),
    (b"pass secret", Pass("secret")),
    (b"PASS with spaces inside", Pass("with spaces inside")),
    (b"PASS trailing ", Pass("trailing ")),
    (b"PASS  leading", Pass(" leading")),
    (b"PASS " + b"x" * 300, Pass("x" * 300)),
    ("PASS pässwörd".encode(), Pass("pässwörd")),
    # RFC 5034 §4 AUTH
    (b"AUTH", Auth(None)),
    (b"auth ", Auth(None)),
    (b"AUTH PLAIN", Auth("PLAIN")),
    (b"auth plain", Auth("PLAIN")),
    (b"AUTH LOGIN", Auth("LOGIN")),
    (b"AUTH XOAUTH2", Auth("XOAUTH2")),
    (b"AUTH DIGEST-MD5", Auth("DIGEST-MD5")),
    (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Auth("PLAIN", "AGFsaWNlAHNlY3JldA==")),
    (b"AUTH PLAIN =", Auth("PLAIN", "=")),
    (b"AUTH LOGIN YWxpY2U=", Auth("LOGIN", "YWxpY2U=")),
    (b"AUTH PLAIN " + b"A" * 400, Auth("PLAIN", "A" * 400)),
    # no-argument commands
    (b"STLS", Stls()),
    (b"stls", Stls()),
    (b"CAPA", Capa()),
    (b"QUIT", Quit()),
    (b"quit ", Quit()),
    (b"STAT", Stat()),
    (b"NOOP", Noop()),
    (b"RSET", Rset()),
    (b"UTF8", Utf8()),
    (b"utf8", Utf8()),
    # message numbers
    (b"LIST", List(None)),
    (b"LIST 1", List(1)),
    (b"list 42", List(42)),
    (b"LIST 007", List(7)),
    (b"LIST 2147483648", List(2**31)),
    (b"UIDL", Uidl(None)),
    (b"UIDL 3", Uidl(3)),
    (b"RETR 1", Retr(1)),
    (b"retr 2147483648", Retr(2**31)),
    (b"DELE 5", Dele(5)),
    (b"DELE  5 ", Dele(5)),
    (b"TOP 1 0", Top(1, 0)),
    (b"top 3 10", Top(3, 10)),
    (b"TOP 1 2147483648", Top(1, 2**31)),
]


@pytest.mark.parametrize(("line", "expected"), VALID, ids=[repr(v[0][:30]) for v in VALID])
def test_valid(line: bytes, expected: Command) -> None:
    assert parse_command(line) == expected


INVALID: list[tuple[bytes, Rejected]] = [
    # keywords
    (b"", p.UNKNOWN_COMMAND),
    (b" ", p.UNKNOWN_COMMAND),
    (b" USER alice", p.UNKNOWN_COMMAND),
    (b"XYZZY", p.UNKNOWN_COMMAND),
    (b"HELO", p.UNKNOWN_COMMAND),
    (b"LAST", p.UNKNOWN_COMMAND),  # RFC 1725 LAST was removed by RFC 1939
    (b"US", p.UNKNOWN_COMMAND),
    (b"USERS alice", p.UNKNOWN_COMMAND),
    ("ÜSER alice".encode(), p.UNKNOWN_COMMAND),
    (b"\xffUSR", p.UNKNOWN_COMMAND),
    (b"USER\talice", p.SYNTAX_ERROR),
    # APOP is refused (RFC 1939 §7 optional; we hold no shared secret)
    (b"APOP alice c4c9334bac560ecc979e58001b3e22fb", p.APOP_UNSUPPORTED),
    (b"apop", p.APOP_UNSUPPORTED),
    # control characters and encoding
    (b"USER al\x00ice", p.SYNTAX_ERROR),
    (b"PASS se\x00cret", p.SYNTAX_ERROR),
    (b"PASS se\tcret", p.SYNTAX_ERROR),
    (b"USER alice\r", p.SYNTAX_ERROR),
    (b"QUIT\r", p.SYNTAX_ERROR),
    (b"USER a\rb", p.SYNTAX_ERROR),
    (b"USER a\nb", p.SYNTAX_ERROR),
    (b"NOOP\x7f", p.SYNTAX_ERROR),
    (b"\x00", p.SYNTAX_ERROR),
    (b"USER \xff\xfe", p.SYNTAX_ERROR),
    (b"PASS \xc3", p.SYNTAX_ERROR),
    (b"LIST \xed\xa0\x80", p.SYNTAX_ERROR),  # an encoded surrogate is not UTF-8
    # USER / PASS arguments
    (b"USER", p.MISSING_ARGUMENT),
    (b"USER ", p.MISSING_ARGUMENT),
    (b"USER alice bob", p.TOO_MANY_ARGUMENTS),
    (b"USER " + b"a" * 256, p.ARGUMENT_TOO_LONG),
    (b"PASS", p.MISSING_ARGUMENT),
    (b"PASS ", p.MISSING_ARGUMENT),
    # AUTH
    (b"AUTH PL@IN", p.BAD_MECHANISM),
    (b"AUTH " + b"A" * 21, p.BAD_MECHANISM),
    ("AUTH PLÄIN".encode(), p.BAD_MECHANISM),
    (b"AUTH PLAIN abc!", p.BAD_BASE64),
    (b"AUTH PLAIN a===", p.BAD_BASE64),
    (b"AUTH PLAIN AAAA extra", p.TOO_MANY_ARGUMENTS),
    # commands without arguments
    (b"STLS now", p.NO_ARGUMENTS),
    (b"CAPA x", p.NO_ARGUMENTS),
    (b"QUIT now", p.NO_ARGUMENTS),
    (b"STAT 1", p.NO_ARGUMENTS),
    (b"NOOP x", p.NO_ARGUMENTS),
    (b"RSET 1", p.NO_ARGUMENTS),
    (b"UTF8 on", p.NO_ARGUMENTS),
    # message numbers: RFC 1939 §3, positive, at most 2^31
    (b"RETR", p.MISSING_ARGUMENT),
    (b"DELE", p.MISSING_ARGUMENT),
    (b"RETR 0", p.BAD_MESSAGE_NUMBER),
    (b"RETR -1", p.BAD_MESSAGE_NUMBER),
    (b"RETR +1", p.BAD_MESSAGE_NUMBER),
    (b"RETR 1.0", p.BAD_MESSAGE_NUMBER),
    (b"RETR 1_0", p.BAD_MESSAGE_NUMBER),
    (b"RETR 0x10", p.BAD_MESSAGE_NUMBER),
    (b"RETR one", p.BAD_MESSAGE_NUMBER),
    ("RETR ١".encode(), p.BAD_MESSAGE_NUMBER),  # Arabic-Indic digit: int() would take it
    (b"RETR 2147483649", p.BAD_MESSAGE_NUMBER),
    (b"RETR " + b"9" * 41, p.BAD_MESSAGE_NUMBER),
    (b"RETR " + b"0" * 40 + b"1", p.BAD_MESSAGE_NUMBER),  # 41 octets, though small
    (b"RETR 1 2", p.TOO_MANY_ARGUMENTS),
    (b"DELE 0", p.BAD_MESSAGE_NUMBER),
    (b"DELE 1 1", p.TOO_MANY_ARGUMENTS),
    (b"LIST 0", p.BAD_MESSAGE_NUMBER),
    (b"LIST x", p.BAD_MESSAGE_NUMBER),
    (b"LIST 1 2", p.TOO_MANY_ARGUMENTS),
    (b"UIDL 0", p.BAD_MESSAGE_NUMBER),
    (b"UIDL 1 2", p.TOO_MANY_ARGUMENTS),
    # TOP
    (b"TOP", p.MISSING_ARGUMENT),
    (b"TOP 1", p.MISSING_ARGUMENT),
    (b"TOP 0 1", p.BAD_MESSAGE_NUMBER),
    (b"TOP 1 -1", p.BAD_LINE_COUNT),
    (b"TOP 1 x", p.BAD_LINE_COUNT),
    (b"TOP 1 2147483649", p.BAD_LINE_COUNT),
    (b"TOP 1 2 3", p.TOO_MANY_ARGUMENTS),
]


@pytest.mark.parametrize(("line", "expected"), INVALID, ids=[repr(v[0][:30]) for v in INVALID])
def test_invalid(line: bytes, expected: Rejected) -> None:
    assert parse_command(line) == expected


def test_every_command_has_a_valid_row() -> None:
    kinds = {type(cmd) for _, cmd in VALID}
    assert kinds == {
        User,
        Pass,
        Auth,
        Stls,
        Capa,
        Quit,
        Stat,
        List,
        Retr,
        Dele,
        Noop,
        Rset,
        Top,
        Uidl,
        Utf8,
    }


def test_rejections_never_echo_input() -> None:
    for line, _ in INVALID:
        result = parse_command(line)
        assert isinstance(result, Rejected)
        assert result.text.isascii() and result.text.isprintable()
        assert "alice" not in result.text


def test_secrets_are_not_in_repr() -> None:
    assert "secret" not in repr(parse_command(b"PASS secret"))
    assert "AGFsaWNl" not in repr(parse_command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA=="))
    assert "PLAIN" in repr(parse_command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA=="))
