"""Bad input (RFC 9051 §7.1.3 BAD, §4.3 literals, RFC 7888, RFC 7889): what hostile or
broken clients send, answered with BAD/NO, bounded memory, and the BYE after too many.

This module's server has a small APPENDLIMIT (10000 octets), so the non-synchronizing
literal path can be exercised without sending megabytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.protocol.imap.conftest import ImapTestServer, make_imap

APPENDLIMIT = 10000


@pytest.fixture(scope="module")
def imap_server(
    tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, imap_template: Path
) -> Iterator[ImapTestServer]:
    yield from make_imap(tmp_path_factory, ca, imap_template, {"append-limit": str(APPENDLIMIT)})


def test_unknown_command(imap: ImapTestServer) -> None:
    s = imap.connect()
    assert s.expect("FROBNICATE", "BAD").untagged == []
    s.login()
    assert s.expect("FROBNICATE now", "BAD").untagged == []
    assert s.expect("UID FROBNICATE 1", "BAD").untagged == []
    s.expect("NOOP", "OK")


def test_tag_without_command(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"lonely\r\n")
    assert s.read_line().startswith(b"lonely BAD ")


@pytest.mark.parametrize("line", [b"", b"* NOOP", b"+ NOOP", b"(x) NOOP", b'"q" NOOP', b" NOOP"])
def test_missing_or_invalid_tag(imap: ImapTestServer, line: bytes) -> None:
    s = imap.connect()
    s.send(line + b"\r\n")
    assert s.read_line().startswith(b"* BAD ")  # no tag to answer with
    s.expect("NOOP", "OK")


def test_overlong_command_line(imap: ImapTestServer) -> None:
    s = imap.login()
    s.send(b"a1 NOOP " + b"x" * 70000 + b"\r\n")  # over the 64 KiB command limit
    assert s.read_line().startswith(b"a1 BAD ")
    s.expect("NOOP", "OK")


def test_overlong_tag(imap: ImapTestServer) -> None:
    # A tag cut at the line limit is not the client's tag: untagged BAD (RFC 9051 §7.1.3).
    s = imap.connect()
    tag = b"a" * 70000
    s.send(tag + b" NOOP\r\n")
    first = s.read_line().split(b" ", 1)[0]
    assert first in (b"*", tag), first[:40] + b"..."


def test_huge_synchronizing_literal_refused(imap: ImapTestServer) -> None:
    s = imap.login()
    s.send(b"a1 APPEND INBOX {999999999}\r\n")
    # Refused before the client sends a byte (no "+"), nothing allocated.
    assert s.read_line().startswith(b"a1 NO [TOOBIG] ")
    s.expect("NOOP", "OK")
    s.send(b"a2 APPEND INBOX {%d}\r\n" % (APPENDLIMIT + 1))
    assert s.read_line().startswith(b"a2 NO [TOOBIG] ")
    s.expect("NOOP", "OK")


def test_huge_literal_before_login(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"a1 LOGIN {999999999}\r\n")
    assert s.read_line().startswith(b"a1 NO [TOOBIG] ")
    s.login()  # still usable


def test_non_synchronizing_literal_over_limit_skipped(imap: ImapTestServer) -> None:
    # RFC 7888 §4: the octets are already on their way; they are read and dropped, never
    # taken for commands, and the command is refused.
    s = imap.login()
    payload = b"a9 LOGOUT\r\n" * 2000  # looks like commands: must not run
    assert len(payload) > APPENDLIMIT
    s.send(b"a1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(payload), payload))
    assert s.read_line().startswith(b"a1 BAD ")
    s.expect("NOOP", "OK")
    assert s.ok("STATUS INBOX (MESSAGES)").untagged == [b"* STATUS INBOX (MESSAGES 0)"]


def test_non_synchronizing_literal_before_login_limited(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"a1 LOGIN {5000+}\r\n" + b"x" * 5000 + b' "pw"\r\n')  # LITERAL- limit: 4096
    assert s.read_line().startswith(b"a1 BAD ")
    s.login()


def test_too_many_bad_commands(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"".join(b"x%d BOGUS\r\n" % n for n in range(12)))
    lines = [s.read_line() for _ in range(11)]
    assert lines[:10] == [line for line in lines[:10] if line.startswith(b"x") and b" BAD " in line]
    assert [line.split(b" ", 1)[0] for line in lines[:10]] == [b"x%d" % n for n in range(10)]
    assert lines[10].startswith(b"* BYE ")
    assert s.closed()


def test_bad_commands_after_login_also_counted(imap: ImapTestServer) -> None:
    s = imap.login()
    for _ in range(10):
        s.expect("FETCH 1 FLAGS", "BAD")  # not selected
    s.send(b"z FETCH 1 FLAGS\r\n")
    assert s.read_line().startswith(b"* BYE ")
    assert s.closed()


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../bob@example.test",
        "INBOX/../../bob@example.test/INBOX",
        "bob@example.test",
        "bob@example.test/INBOX",
        "/bob@example.test/INBOX",
        "~bob",
        "*",
        "%",
        "INBOX*",
        "#shared/bob",
        "#user/bob",
        "Other Users/bob",
    ],
)
def test_foreign_and_odd_mailbox_names_not_found(imap: ImapTestServer, name: str) -> None:
    s = imap.login()
    for command in ("SELECT", "EXAMINE", "STATUS"):
        args = f'"{name}" (MESSAGES)' if command == "STATUS" else f'"{name}"'
        reply = s.cmd(f"{command} {args}")
        assert reply.status == "NO" and reply.untagged == [], (command, str(reply))


@pytest.mark.parametrize("name", ["..", "a/../b", "*", "%", "a*", "a%b", "/bob", ""])
def test_create_odd_names_refused(imap: ImapTestServer, name: str) -> None:
    s = imap.login()
    s.expect(f'CREATE "{name}"', "NO", "CANNOT")


@pytest.mark.parametrize("name", ["#news", "#shared/x"])
def test_create_namespace_prefix_refused(imap: ImapTestServer, name: str) -> None:
    s = imap.login()
    s.expect(f'CREATE "{name}"', "NO", "CANNOT")


def test_other_users_mailbox_unreachable(imap: ImapTestServer) -> None:
    bob = imap.login("bob@example.test")
    bob.ok("CREATE Private")
    s = imap.login()
    for name in ("Private", "bob@example.test/Private", "../bob@example.test/Private"):
        reply = s.cmd(f'SELECT "{name}"')
        assert reply.status == "NO", name
    assert s.ok('LIST "" "*Private*"').untagged == []


@pytest.mark.parametrize(
    ("state", "command"),
    [
        ("none", "SELECT INBOX"),
        ("none", 'LIST "" "*"'),
        ("none", "FETCH 1 FLAGS"),
        ("none", "STATUS INBOX (MESSAGES)"),
        ("none", "CLOSE"),
        ("auth", "FETCH 1 FLAGS"),
        ("auth", "STORE 1 +FLAGS (\\Seen)"),
        ("auth", "SEARCH ALL"),
        ("auth", "EXPUNGE"),
        ("auth", "COPY 1 INBOX"),
        ("auth", 'LOGIN alice@example.test "x"'),
        ("auth", "AUTHENTICATE PLAIN"),
        ("selected", "STARTTLS"),
        ("selected", 'LOGIN alice@example.test "x"'),
    ],
)
def test_commands_in_wrong_state_are_bad(imap: ImapTestServer, state: str, command: str) -> None:
    s = imap.connect()
    if state != "none":
        s.login()
    if state == "selected":
        s.select("INBOX")
    reply = s.expect(command, "BAD")
    assert reply.untagged == []
    s.expect("NOOP", "OK")


@pytest.mark.parametrize(
    "text",
    [
        b'NOOP "unterminated',
        b'SELECT "a\\qb"',  # only \\ and \" are escapes
        b'SELECT "nul\x00"',
        b"SELECT (INBOX)",
        b'LIST "" ("*"',
        b"STATUS INBOX (MESSAGES",
        b"CREATE  Two-Spaces",
    ],
)
def test_syntax_errors(imap: ImapTestServer, text: bytes) -> None:
    s = imap.login()
    reply = s.cmd(text)
    assert reply.status == "BAD" and reply.untagged == [], str(reply)
    s.expect("NOOP", "OK")


def test_literal_with_nul_refused(imap: ImapTestServer) -> None:
    s = imap.login()
    reply = s.cmd(b"APPEND INBOX {5+}\r\nab\x00cd")  # NUL needs literal8 (RFC 9051 §4.3)
    assert reply.status == "BAD"
    assert s.ok("STATUS INBOX (MESSAGES)").untagged == [b"* STATUS INBOX (MESSAGES 0)"]


def test_deep_search_nesting_bounded(imap: ImapTestServer) -> None:
    s = imap.login()
    s.select("INBOX")
    s.expect(b"SEARCH " + b"NOT " * 5000 + b"ALL", "BAD")
    s.expect(b"SEARCH " + b"(" * 5000 + b"ALL" + b")" * 5000, "BAD")
    s.expect("NOOP", "OK")


def test_huge_numbers_are_bad(imap: ImapTestServer) -> None:
    s = imap.login()
    s.select("INBOX")
    s.expect("FETCH 99999999999999999999999999 FLAGS", "BAD")
    s.expect("UID FETCH 1:99999999999 FLAGS", "BAD")
    s.expect("SEARCH LARGER 999999999999999999999999999", "BAD")
    s.expect("NOOP", "OK")
