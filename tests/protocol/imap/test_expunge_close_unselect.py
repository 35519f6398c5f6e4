"""EXPUNGE, UID EXPUNGE (RFC 4315), CLOSE (RFC 9051 §6.4.1) and UNSELECT (RFC 3691)
as raw transcripts."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message


def six(imap: ImapTestServer, folder: str, deleted: tuple[int, ...] = (2, 3, 5)) -> Session:
    s = imap.login()
    for n in range(1, 7):
        append(s, folder, message(f"m{n}"), r"(\Deleted)" if n in deleted else "")
    s.select(folder)
    return s


def count(s: Session, folder: str) -> bytes:
    return s.ok(f"STATUS {folder} (MESSAGES)").untagged[0]


def test_expunge_order(imap: ImapTestServer, folder: str) -> None:
    s = six(imap, folder)
    reply = s.cmd("EXPUNGE")
    assert reply.status == "OK"
    # Highest first: every number sent is right at the moment it is sent (RFC 9051 §7.5.1;
    # ascending with renumbering, 2 2 3, would be right too).
    assert reply.untagged == [b"* 5 EXPUNGE", b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
    assert s.ok("FETCH 1:* UID").untagged == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 4)",
        b"* 3 FETCH (UID 6)",
    ]
    assert s.cmd("EXPUNGE").untagged == []  # nothing left to remove


def test_uid_expunge_only_named_uids(imap: ImapTestServer, folder: str) -> None:
    s = six(imap, folder)
    reply = s.cmd("UID EXPUNGE 3:5")
    assert (reply.status, reply.untagged) == ("OK", [b"* 5 EXPUNGE", b"* 3 EXPUNGE"])
    # UID 2 is \Deleted but was not named: it stays.
    assert s.ok("UID SEARCH DELETED").untagged == [b"* SEARCH 2"]
    assert s.cmd("UID EXPUNGE 1").untagged == []  # not \Deleted: kept


def test_expunge_read_only(imap: ImapTestServer, folder: str) -> None:
    s = six(imap, folder)
    s.select(folder, examine=True)
    assert s.expect("EXPUNGE", "NO", "READ-ONLY").untagged == []
    assert s.expect("UID EXPUNGE 1:*", "NO", "READ-ONLY").untagged == []
    assert count(s, folder) == b"* STATUS %s (MESSAGES 6)" % folder.encode()


def test_close_expunges_silently(imap: ImapTestServer, folder: str) -> None:
    s = six(imap, folder)
    reply = s.expect("CLOSE", "OK")
    assert reply.untagged == []  # RFC 9051 §6.4.1: no EXPUNGE responses
    assert count(s, folder) == b"* STATUS %s (MESSAGES 3)" % folder.encode()
    s.expect("FETCH 1 FLAGS", "BAD")  # back in the authenticated state


def test_close_read_only_keeps_messages(imap: ImapTestServer, folder: str) -> None:
    s = six(imap, folder)
    s.select(folder, examine=True)
    assert s.expect("CLOSE", "OK").untagged == []
    assert count(s, folder) == b"* STATUS %s (MESSAGES 6)" % folder.encode()


def test_unselect_does_not_expunge(imap: ImapTestServer, folder: str) -> None:
    s = six(imap, folder)
    assert s.expect("UNSELECT", "OK").untagged == []
    assert count(s, folder) == b"* STATUS %s (MESSAGES 6)" % folder.encode()
    s.expect("FETCH 1 FLAGS", "BAD")
    s.select(folder)  # and a mailbox can be selected again


def test_commands_need_selected_mailbox(imap: ImapTestServer) -> None:
    s = imap.login()
    for text in ("EXPUNGE", "UID EXPUNGE 1", "CLOSE", "UNSELECT", "CHECK"):
        s.expect(text, "BAD")


def test_syntax_errors(imap: ImapTestServer, folder: str) -> None:
    s = six(imap, folder)
    s.expect("EXPUNGE 1", "BAD")
    s.expect("UID EXPUNGE", "BAD")
    s.expect("CLOSE now", "BAD")
    assert count(s, folder) == b"* STATUS %s (MESSAGES 6)" % folder.encode()
