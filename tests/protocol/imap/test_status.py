"""STATUS (RFC 9051 §6.3.11, RFC 3501 §6.3.10) as raw transcripts."""

from __future__ import annotations

import re

import pytest

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message, quote


def status(s: Session, mailbox: str, items: str) -> dict[str, int]:
    reply = s.ok(f"STATUS {quote(mailbox)} ({items})")
    assert len(reply.untagged) == 1, str(reply)
    m = re.fullmatch(rb"\* STATUS (\S+|\"[^\"]*\") \((.*)\)", reply.untagged[0])
    assert m is not None, reply.untagged[0]
    words = m.group(2).decode().split()
    return {k: int(v) for k, v in zip(words[::2], words[1::2], strict=True)}


def test_status_of_empty_folder(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    reply = s.ok(f"STATUS {folder} (MESSAGES RECENT UIDNEXT UNSEEN DELETED)")
    assert reply.untagged == [
        b"* STATUS %s (MESSAGES 0 RECENT 0 UIDNEXT 1 UNSEEN 0 DELETED 0)" % folder.encode()
    ]


def test_status_items_in_order_asked(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    reply = s.ok(f"STATUS {folder} (UIDNEXT MESSAGES)")
    assert reply.untagged == [b"* STATUS %s (UIDNEXT 1 MESSAGES 0)" % folder.encode()]


def test_status_counts(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    append(s, folder, message("a"), r"(\Seen)")
    append(s, folder, message("b"), r"(\Deleted)")
    append(s, folder, message("c"), r"(\Seen \Deleted)")
    append(s, folder, message("d"))
    values = status(s, folder, "MESSAGES UNSEEN DELETED UIDNEXT")
    assert values == {"MESSAGES": 4, "UNSEEN": 2, "DELETED": 2, "UIDNEXT": 5}


def test_status_follows_changes(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    append(s, folder, message("a"))
    append(s, folder, message("b"))
    validity = status(s, folder, "UIDVALIDITY")["UIDVALIDITY"]
    assert validity > 0
    s.select(folder)
    s.ok(r"STORE 1 +FLAGS.SILENT (\Seen \Deleted)")
    # STATUS on the selected mailbox is allowed (RFC 9051 §6.3.11 discourages, not forbids).
    assert status(s, folder, "MESSAGES UNSEEN DELETED") == {
        "MESSAGES": 2,
        "UNSEEN": 1,
        "DELETED": 1,
    }
    s.ok("EXPUNGE")
    append(s, folder, message("c"))
    assert status(s, folder, "MESSAGES UIDNEXT UIDVALIDITY UNSEEN") == {
        "MESSAGES": 2,
        "UIDNEXT": 4,  # UIDs are never reused
        "UIDVALIDITY": validity,
        "UNSEEN": 2,
    }


def test_status_inbox_and_quoted_names(imap: ImapTestServer) -> None:
    s = imap.login()
    assert s.ok("STATUS inbox (MESSAGES)").untagged[0].startswith(b"* STATUS INBOX (MESSAGES ")
    reply = s.ok('STATUS "Sent Items" (MESSAGES)')
    assert reply.untagged == [b'* STATUS "Sent Items" (MESSAGES 0)']


def test_status_nonexistent(imap: ImapTestServer) -> None:
    s = imap.login()
    reply = s.expect('STATUS "No Such" (MESSAGES)', "NO", "NONEXISTENT")
    assert reply.untagged == []


def test_status_syntax_errors(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.expect(f"STATUS {folder} ()", "BAD")
    s.expect(f"STATUS {folder} (BOGUS)", "BAD")
    s.expect(f"STATUS {folder} MESSAGES", "BAD")
    s.expect(f"STATUS {folder}", "BAD")


def test_status_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("STATUS INBOX (MESSAGES)", "BAD")


def test_status_highestmodseq_if_advertised(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    caps = s.ok("CAPABILITY").untagged[0].split()
    if b"CONDSTORE" not in caps:
        pytest.skip("CONDSTORE not advertised")
    append(s, folder, message("a"))
    before = status(s, folder, "HIGHESTMODSEQ")["HIGHESTMODSEQ"]
    s.select(folder)
    s.ok(r"STORE 1 +FLAGS.SILENT (\Flagged)")
    assert status(s, folder, "HIGHESTMODSEQ")["HIGHESTMODSEQ"] > before  # RFC 7162 §3.1.1
