"""Parser tables for postwerk.protocols.smtp.parser: bytes in, command or reply out."""

from __future__ import annotations

import pytest

from postwerk.core import replies
from postwerk.core.replies import Reply
from postwerk.protocols.smtp import (
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
    parse_command,
    xtext_decode,
    xtext_encode,
)

P = MailParams()
R = RcptParams()

VALID: list[tuple[bytes, Command]] = [
    # HELO / EHLO, RFC 5321 §4.1.1.1
    (b"HELO mail.example.com", Helo("mail.example.com")),
    (b"helo mail.example.com", Helo("mail.example.com")),
    (b"EHLO mail.example.com", Ehlo("mail.example.com")),
    (b"ehlo [192.0.2.1]", Ehlo("[192.0.2.1]")),
    (b"EHLO [IPv6:2001:db8::1]", Ehlo("[IPv6:2001:db8::1]")),
    (b"EHLO MY_PC", Ehlo("MY_PC")),
    (b"EHLO localhost   ", Ehlo("localhost")),
    ("EHLO bücher.example".encode(), Ehlo("bücher.example")),
    # MAIL FROM
    (b"MAIL FROM:<a@example.com>", MailFrom("a@example.com", P)),
    (b"mail from:<a@example.com>", MailFrom("a@example.com", P)),
    (b"MAIL FROM: <a@example.com>", MailFrom("a@example.com", P)),
    (b"MAIL FROM:<>", MailFrom("", P)),
    (b"MAIL FROM:<> ", MailFrom("", P)),
    (b'MAIL FROM:<"john doe"@example.com>', MailFrom('"john doe"@example.com', P)),
    (b'MAIL FROM:<"a>b"@example.com>', MailFrom('"a>b"@example.com', P)),
    (b'MAIL FROM:<"a\\"b"@example.com>', MailFrom('"a\\"b"@example.com', P)),
    (b"MAIL FROM:<user%other@example.com>", MailFrom("user%other@example.com", P)),
    (b"MAIL FROM:<a@[192.0.2.1]>", MailFrom("a@[192.0.2.1]", P)),
    (b"MAIL FROM:<@relay.example:a@example.com>", MailFrom("a@example.com", P)),
    (b"MAIL FROM:<@r1.example,@r2.example:a@example.com>", MailFrom("a@example.com", P)),
    (b"MAIL FROM:<@[IPv6:::1]:a@example.com>", MailFrom("a@example.com", P)),
    (b"MAIL FROM:<a@example.com> SIZE=12345", MailFrom("a@example.com", MailParams(size=12345))),
    (b"MAIL FROM:<a@example.com> size=0", MailFrom("a@example.com", MailParams(size=0))),
    (
        b"MAIL FROM:<a@example.com>  SIZE=1\t BODY=8bitmime",
        MailFrom("a@example.com", MailParams(size=1, body="8BITMIME")),
    ),
    (b"MAIL FROM:<a@example.com> BODY=7BIT", MailFrom("a@example.com", MailParams(body="7BIT"))),
    (
        b"MAIL FROM:<a@example.com> BODY=BINARYMIME",
        MailFrom("a@example.com", MailParams(body="BINARYMIME")),
    ),
    (b"MAIL FROM:<a@example.com> SMTPUTF8", MailFrom("a@example.com", MailParams(smtputf8=True))),
    (
        "MAIL FROM:<jöran@bücher.example> SMTPUTF8".encode(),
        MailFrom("jöran@bücher.example", MailParams(smtputf8=True)),
    ),
    (
        b"MAIL FROM:<a@example.com> RET=hdrs ENVID=QQ314159",
        MailFrom("a@example.com", MailParams(ret="HDRS", envid="QQ314159")),
    ),
    (
        b"MAIL FROM:<a@example.com> RET=FULL ENVID=a+2Bb+3Dc",
        MailFrom("a@example.com", MailParams(ret="FULL", envid="a+b=c")),
    ),
    (b"MAIL FROM:<a@example.com> AUTH=<>", MailFrom("a@example.com", MailParams(auth="<>"))),
    (
        b"MAIL FROM:<a@example.com> AUTH=e+3Dmc2@example.com",
        MailFrom("a@example.com", MailParams(auth="e=mc2@example.com")),
    ),
    (
        b"MAIL FROM:<a@example.com> SIZE=99999999999999999999",
        MailFrom("a@example.com", MailParams(size=99999999999999999999)),
    ),
    # RCPT TO
    (b"RCPT TO:<b@example.com>", RcptTo("b@example.com", R)),
    (b"rcpt to: <b@example.com>", RcptTo("b@example.com", R)),
    (b"RCPT TO:<Postmaster>", RcptTo("Postmaster", R)),
    (b"RCPT TO:<postmaster>", RcptTo("postmaster", R)),
    (b"RCPT TO:<@hop.example:b@example.com>", RcptTo("b@example.com", R)),
    (b'RCPT TO:<"b c"@example.com>', RcptTo('"b c"@example.com', R)),
    (
        b"RCPT TO:<b@example.com> NOTIFY=NEVER",
        RcptTo("b@example.com", RcptParams(notify=("NEVER",))),
    ),
    (
        b"RCPT TO:<b@example.com> NOTIFY=delay,success",
        RcptTo("b@example.com", RcptParams(notify=("SUCCESS", "DELAY"))),
    ),
    (
        b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE,DELAY",
        RcptTo("b@example.com", RcptParams(notify=("SUCCESS", "FAILURE", "DELAY"))),
    ),
    (
        b"RCPT TO:<b@example.com> ORCPT=rfc822;b+40example.com",
        RcptTo("b@example.com", RcptParams(orcpt="rfc822;b@example.com")),
    ),
    (
        b"RCPT TO:<b@example.com> ORCPT=RFC822;b@example.com NOTIFY=FAILURE",
        RcptTo("b@example.com", RcptParams(notify=("FAILURE",), orcpt="rfc822;b@example.com")),
    ),
    # DATA, BDAT, RSET, NOOP, QUIT, VRFY, EXPN, HELP, STARTTLS, AUTH
    (b"DATA", Data()),
    (b"data  ", Data()),
    (b"BDAT 0 LAST", Bdat(0, True)),
    (b"BDAT 1000", Bdat(1000, False)),
    (b"bdat 42 last", Bdat(42, True)),
    (b"BDAT 999999999999999999 LAST", Bdat(999999999999999999, True)),
    (b"RSET", Rset()),
    (b"NOOP", Noop()),
    (b"NOOP anything at all", Noop()),
    (b"QUIT", Quit()),
    (b"VRFY alice", Vrfy("alice")),
    (b"VRFY <alice@example.com>", Vrfy("<alice@example.com>")),
    (b"EXPN staff", Expn("staff")),
    (b"HELP", Help(None)),
    (b"HELP MAIL", Help("MAIL")),
    (b"STARTTLS", StartTls()),
    (b"starttls", StartTls()),
    (b"AUTH PLAIN", Auth("PLAIN", None)),
    (b"auth login", Auth("LOGIN", None)),
    (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Auth("PLAIN", "AGFsaWNlAHNlY3JldA==")),
    (b"AUTH EXTERNAL =", Auth("EXTERNAL", "=")),
    (b"AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9", Auth("SCRAM-SHA-256", "biwsbj11c2VyLHI9")),
]


@pytest.mark.parametrize(("line", "expected"), VALID, ids=[repr(v[0]) for v in VALID])
def test_valid_commands(line: bytes, expected: Command) -> None:
    assert parse_command(line) == expected


S, P501, A501, P555 = (500, "5.5.2"), (501, "5.5.4"), (501, "5.1.7"), (555, "5.5.4")
UTF8 = (553, "5.6.7")

INVALID: list[tuple[bytes, tuple[int, str]]] = [
    # unknown or malformed verbs
    (b"", S),
    (b"   ", S),
    (b"FOO bar", S),
    (b"MAILFROM:<a@b.c>", S),
    (b" EHLO x", S),
    (b"\xff\xfe", S),
    (b"EH\xc3\xa9LO x", S),
    (b"EHLO x\ry", S),
    (b"QUIT\r", S),
    (b"NOOP \x00", S),
    # bad UTF-8 or controls in arguments
    (b"VRFY \xff", P501),
    (b"VRFY a\x01b", P501),
    (b"HELP \x7f", P501),
    # HELO / EHLO
    (b"EHLO", P501),
    (b"HELO", P501),
    (b"EHLO a b", P501),
    (b"EHLO <a>", P501),
    (b"EHLO a@b", P501),
    (b"EHLO [1.2.3.4", P501),
    # MAIL
    (b"MAIL", P501),
    (b"MAIL TO:<a@b.c>", P501),
    (b"MAIL FROM a@b.c", P501),
    (b"MAIL FROM:", A501),
    (b"MAIL FROM:a@b.c", A501),
    (b"MAIL FROM:<a@b.c", A501),
    (b"MAIL FROM:<<a@b.c>>", A501),
    (b"MAIL FROM:<a>", A501),
    (b"MAIL FROM:<a@>", A501),
    (b"MAIL FROM:<@b.c>", A501),
    (b"MAIL FROM:<a@b@>", A501),
    (b"MAIL FROM:<a..b@c.d>", A501),
    (b"MAIL FROM:<a b@c.d>", A501),
    (b"MAIL FROM:<a@ b.c>", A501),
    (b"MAIL FROM:<a@b..c>", A501),
    (b"MAIL FROM:<@relay a@b.c>", A501),
    (b"MAIL FROM:<@:a@b.c>", A501),
    (b"MAIL FROM:<@relay,a@b.c>", A501),
    (b'MAIL FROM:<"unterminated@b.c>', A501),
    (b"MAIL FROM:<" + b"a" * 65 + b"@b.c>", A501),
    (b"MAIL FROM:<a@" + b"b" * 64 + b".c>", A501),
    (b"MAIL FROM:<a@b.c>SIZE=1", P501),
    (b"MAIL FROM:<a@b.c> SIZE=1 SIZE=2", P501),
    (b"MAIL FROM:<a@b.c> SIZE=1 size=1", P501),
    # MAIL parameters
    (b"MAIL FROM:<a@b.c> FOO=bar", P555),
    (b"MAIL FROM:<a@b.c> NOTIFY=NEVER", P555),
    (b"MAIL FROM:<a@b.c> SIZE", P555),
    (b"MAIL FROM:<a@b.c> SIZE=", P555),
    (b"MAIL FROM:<a@b.c> SIZE=-1", P555),
    (b"MAIL FROM:<a@b.c> SIZE=1k", P555),
    (b"MAIL FROM:<a@b.c> SIZE=999999999999999999999", P555),
    (b"MAIL FROM:<a@b.c> BODY=9BIT", P555),
    (b"MAIL FROM:<a@b.c> BODY", P555),
    (b"MAIL FROM:<a@b.c> SMTPUTF8=yes", P555),
    (b"MAIL FROM:<a@b.c> RET=ALL", P555),
    (b"MAIL FROM:<a@b.c> ENVID=a+zz", P555),
    (b"MAIL FROM:<a@b.c> ENVID=a+4", P555),
    (b"MAIL FROM:<a@b.c> ENVID=" + b"x" * 101, P555),
    (b"MAIL FROM:<a@b.c> AUTH=+FF", P555),
    (b"MAIL FROM:<a@b.c> -SIZE=1", P555),
    (b"MAIL FROM:<a@b.c> =1", P555),
    (b"MAIL FROM:<a@b.c> SIZE=1=2", P555),
    # SMTPUTF8 (RFC 6531 §3.4)
    ("MAIL FROM:<jöran@example.com>".encode(), UTF8),
    ("MAIL FROM:<a@bücher.example>".encode(), UTF8),
    ("RCPT TO:<jöran@example.com>".encode(), UTF8),
    # RCPT
    (b"RCPT", P501),
    (b"RCPT FROM:<a@b.c>", P501),
    (b"RCPT TO:<>", A501),
    (b"RCPT TO:b@c.d", A501),
    (b"RCPT TO:<Postmaster@>", A501),
    (b"RCPT TO:<b@c.d> SIZE=1", P555),
    (b"RCPT TO:<b@c.d> NOTIFY=NEVER,SUCCESS", P555),
    (b"RCPT TO:<b@c.d> NOTIFY=SUCCESS,SUCCESS", P555),
    (b"RCPT TO:<b@c.d> NOTIFY=ALWAYS", P555),
    (b"RCPT TO:<b@c.d> NOTIFY=", P555),
    (b"RCPT TO:<b@c.d> ORCPT=b@c.d", P555),
    (b"RCPT TO:<b@c.d> ORCPT=rfc822;", P555),
    (b"RCPT TO:<b@c.d> ORCPT=rfc822;b+4", P555),
    (b"RCPT TO:<b@c.d> ORCPT=;b@c.d", P555),
    (b"RCPT TO:<b@c.d> ORCPT=rfc822;" + b"x" * 500, P555),
    (b"RCPT TO:<b@c.d> NOTIFY=NEVER NOTIFY=NEVER", P501),
    # verbs that take no arguments
    (b"DATA x", P501),
    (b"RSET x", P501),
    (b"QUIT now", P501),
    (b"STARTTLS x", P501),
    # VRFY / EXPN need an argument
    (b"VRFY", P501),
    (b"EXPN", P501),
    # BDAT, RFC 3030 §2
    (b"BDAT", P501),
    (b"BDAT LAST", P501),
    (b"BDAT -1", P501),
    (b"BDAT 1.5", P501),
    (b"BDAT 0x10", P501),
    (b"BDAT 1 FIRST", P501),
    (b"BDAT 1 LAST x", P501),
    (b"BDAT 1234567890123456789", P501),
    ("BDAT ١٢".encode(), P501),  # Arabic-Indic digits are not DIGIT
    # AUTH, RFC 4954 §4
    (b"AUTH", P501),
    (b"AUTH PL@IN", P501),
    (b"AUTH " + b"X" * 21, P501),
    (b"AUTH PLAIN a b", P501),
    (b"AUTH PLAIN not*base64", P501),
    (b"AUTH PLAIN ab===", P501),
]


@pytest.mark.parametrize(("line", "expected"), INVALID, ids=[repr(v[0][:60]) for v in INVALID])
def test_invalid_commands(line: bytes, expected: tuple[int, str]) -> None:
    result = parse_command(line)
    assert isinstance(result, Reply), result
    assert (result.code, result.status) == expected


def test_unknown_verb_is_the_named_syntax_error() -> None:
    assert parse_command(b"XYZZY") == replies.SYNTAX_ERROR


def test_rcpt_non_ascii_allowed_in_smtputf8_transaction() -> None:
    line = "RCPT TO:<jöran@bücher.example>".encode()
    assert parse_command(line) == replies.SMTPUTF8_REQUIRED
    assert parse_command(line, smtputf8=True) == RcptTo("jöran@bücher.example", R)


def test_mail_uses_its_own_smtputf8_parameter() -> None:
    # A stale transaction flag must not let a new MAIL without SMTPUTF8 carry UTF-8.
    line = "MAIL FROM:<jöran@example.com>".encode()
    assert parse_command(line, smtputf8=True) == replies.SMTPUTF8_REQUIRED


def test_quoted_local_part_with_utf8_requires_smtputf8() -> None:
    line = 'RCPT TO:<"jö ran"@example.com>'.encode()
    assert parse_command(line) == replies.SMTPUTF8_REQUIRED
    assert parse_command(line, smtputf8=True) == RcptTo('"jö ran"@example.com', R)


def test_addresses_are_returned_as_sent() -> None:
    # The domain is not normalised here: the service calls parse_address for that.
    assert parse_command(b"RCPT TO:<Bob@Example.COM>") == RcptTo("Bob@Example.COM", R)


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("plain", "plain"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("sp ace", "sp+20ace"),
        ("ü", "+C3+BC"),
        ("", ""),
    ],
)
def test_xtext_round_trip(text: str, encoded: str) -> None:
    assert xtext_encode(text) == encoded
    assert xtext_decode(encoded) == text


@pytest.mark.parametrize("bad", ["a+", "a+G0", "a b", "a=b", "+FF", "ü"])
def test_xtext_decode_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        xtext_decode(bad)


def test_xtext_decode_accepts_lower_case_hex() -> None:
    assert xtext_decode("a+2bb") == "a+b"
