"""CREATE, RENAME and DELETE (RFC 9051 §6.3.4-6, RFC 3501 §6.3.3-5) as raw transcripts."""

from __future__ import annotations

import pytest

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message


def names(s: Session, pattern: str = "*") -> list[bytes]:
    return [line.rsplit(b'"/" ', 1)[1] for line in s.ok(f'LIST "" "{pattern}"').untagged]


def test_create_and_list(imap: ImapTestServer) -> None:
    s = imap.login()
    reply = s.expect("CREATE Plain", "OK")
    assert reply.untagged == []
    assert names(s, "Plain") == [b"Plain"]
    s.select("Plain")


def test_create_existing(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Twice")
    s.expect("CREATE Twice", "NO", "ALREADYEXISTS")
    # RFC 9051 §6.3.4: it is an error to create INBOX, in any case.
    s.expect("CREATE INBOX", "NO", "ALREADYEXISTS")
    s.expect("CREATE inbox", "NO", "ALREADYEXISTS")
    s.expect('CREATE "Sent Items"', "NO", "ALREADYEXISTS")


def test_create_nested_creates_parents(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Deep/er/est")
    assert names(s, "Deep*") == [b"Deep", b"Deep/er", b"Deep/er/est"]
    s.select("Deep/er")  # the superiors are real, selectable mailboxes


def test_create_trailing_delimiter(imap: ImapTestServer) -> None:
    # RFC 9051 §6.3.4: a trailing delimiter says children will follow; the name is without it.
    s = imap.login()
    s.ok("CREATE Parent/")
    assert names(s, "Parent*") == [b"Parent"]


@pytest.mark.parametrize(
    "name",
    ['""', '"/Leading"', '"a//b"', '"."', '".."', '"x/../y"', '"a*b"', '"a%b"', '"&bad"'],
)
def test_create_invalid_names(imap: ImapTestServer, name: str) -> None:
    s = imap.login()
    s.expect(f"CREATE {name}", "NO", "CANNOT")


def test_create_eight_bit_name_without_utf8(imap: ImapTestServer) -> None:
    # IMAP4rev1 names are modified UTF-7; raw 8-bit is refused (NO; BAD would do as well).
    s = imap.login()
    s.expect('CREATE "Gr\u00fc\u00dfe"', "NO", "CANNOT")
    s.ok('CREATE "Gr&APwA3w-e"')


def test_rename(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Before")
    append(s, "Before", message("kept"))
    reply = s.expect("RENAME Before After", "OK")
    assert reply.untagged == []
    assert names(s, "Before") == []
    assert names(s, "After") == [b"After"]
    assert s.ok("STATUS After (MESSAGES)").untagged == [b"* STATUS After (MESSAGES 1)"]
    s.expect("SELECT Before", "NO", "NONEXISTENT")


def test_rename_moves_children(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Old/Child/Leaf")
    s.ok("RENAME Old New")
    assert names(s, "Old*") == []
    assert names(s, "New*") == [b"New", b"New/Child", b"New/Child/Leaf"]


def test_rename_errors(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Src")
    s.ok("CREATE Dst")
    s.expect("RENAME Missing Other", "NO", "NONEXISTENT")
    s.expect("RENAME Src Dst", "NO", "ALREADYEXISTS")
    s.expect('RENAME Src "a*b"', "NO", "CANNOT")
    s.expect('RENAME "Sent Items" Mine', "NO", "CANNOT")  # default folders stay (Exchange)
    s.expect("RENAME Src", "BAD")


def test_rename_selected_mailbox_keeps_session(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Busy")
    append(s, "Busy", message("one"))
    s.select("Busy")
    s.ok("RENAME Busy Busier")
    assert s.ok("FETCH 1 (UID)").untagged == [b"* 1 FETCH (UID 1)"]


def test_rename_inbox_moves_messages(imap: ImapTestServer) -> None:
    s = imap.login()
    append(s, "INBOX", message("from inbox"))
    s.expect("RENAME INBOX OldMail", "OK")
    assert s.ok("STATUS OldMail (MESSAGES)").untagged == [b"* STATUS OldMail (MESSAGES 1)"]
    assert s.ok("STATUS INBOX (MESSAGES)").untagged == [b"* STATUS INBOX (MESSAGES 0)"]


def test_delete(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Doomed")
    append(s, "Doomed", message("gone"))
    reply = s.expect("DELETE Doomed", "OK")
    assert reply.untagged == []
    assert names(s, "Doomed") == []
    s.expect("SELECT Doomed", "NO", "NONEXISTENT")
    s.expect("DELETE Doomed", "NO", "NONEXISTENT")


def test_delete_protected(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect("DELETE INBOX", "NO", "CANNOT")  # RFC 9051 §6.3.5: an error
    s.expect('DELETE "Deleted Items"', "NO", "CANNOT")
    s.expect("DELETE Calendar", "NO", "CANNOT")


def test_delete_with_children_refused(imap: ImapTestServer) -> None:
    # A choice RFC 9051 §6.3.5 allows: the server may refuse to delete a mailbox that has
    # inferiors (never remove them). It says so with NO [INUSE] to IMAP4rev1 clients and
    # with RFC 9051's HASCHILDREN once IMAP4rev2 is enabled (tests/protocol/imap/test_rev2.py).
    s = imap.login()
    s.ok("CREATE Tree/Branch")
    s.expect("DELETE Tree", "NO", "INUSE")
    assert names(s, "Tree*") == [b"Tree", b"Tree/Branch"]
    s.ok("DELETE Tree/Branch")
    s.ok("DELETE Tree")
    assert names(s, "Tree*") == []


def test_delete_selected_mailbox(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE Selected")
    s.select("Selected")
    s.ok("DELETE Selected")
    s.expect("NOOP", "OK")
    s.expect("SELECT Selected", "NO", "NONEXISTENT")


def test_folder_commands_need_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("CREATE X", "BAD")
    s.expect("RENAME X Y", "BAD")
    s.expect("DELETE X", "BAD")
