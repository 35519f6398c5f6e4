"""Two sessions on one mailbox (RFC 9051 §7.4.1, §7.5.1, §5.2): changes made in one
reach the other as untagged FETCH / EXISTS / EXPUNGE, and EXPUNGE only where the
other session's sequence numbers may change: never while it is answered a FETCH,
STORE or SEARCH by sequence number, but at NOOP (or a UID command)."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message


def pair(imap: ImapTestServer, folder: str, n: int = 5) -> tuple[Session, Session]:
    a = imap.login()
    for i in range(n):
        append(a, folder, message(f"m{i}"))
    b = imap.login()
    a.select(folder)
    b.select(folder)
    return a, b


def expunge(a: Session, seqs: str) -> None:
    a.ok(rf"STORE {seqs} +FLAGS.SILENT (\Deleted)")
    a.ok("EXPUNGE")


def test_flag_change_seen_as_fetch(imap: ImapTestServer, folder: str) -> None:
    a, b = pair(imap, folder)
    a.ok(r"STORE 3 +FLAGS.SILENT (\Flagged)")
    reply = b.expect("NOOP", "OK")
    assert reply.untagged == [b"* 3 FETCH (UID 3 FLAGS (\\Flagged))"]
    assert b.expect("NOOP", "OK").untagged == []  # told once


def test_new_message_seen_as_exists(imap: ImapTestServer, folder: str) -> None:
    a, b = pair(imap, folder)
    append(a, folder, message("new"))
    # EXISTS may come with any command, even a FETCH by sequence number.
    reply = b.ok("FETCH 1 UID")
    assert reply.untagged == [b"* 1 FETCH (UID 1)", b"* 6 EXISTS"] or reply.untagged == [
        b"* 6 EXISTS",
        b"* 1 FETCH (UID 1)",
    ]
    assert b.ok("FETCH 6 UID").untagged == [b"* 6 FETCH (UID 6)"]


def test_expunge_held_back_during_fetch_store_search(imap: ImapTestServer, folder: str) -> None:
    a, b = pair(imap, folder)
    expunge(a, "2,4")
    # b's numbering must not move under these commands: no EXPUNGE in their answers.
    fetched = b.ok("FETCH 1:5 UID").untagged
    assert fetched == [b"* %d FETCH (UID %d)" % (n, n) for n in range(1, 6)]
    stored = b.ok(r"STORE 5 +FLAGS (\Seen)").untagged
    assert not any(line.endswith(b" EXPUNGE") for line in stored)
    assert stored == [b"* 5 FETCH (FLAGS (\\Seen))"]
    found = b.ok("SEARCH ALL").untagged
    assert not any(line.endswith(b" EXPUNGE") for line in found)
    assert found[0].startswith(b"* SEARCH")
    # ... and they come at NOOP, highest first, each valid when sent.
    assert b.ok("NOOP").untagged == [b"* 4 EXPUNGE", b"* 2 EXPUNGE"]
    assert b.ok("FETCH 1:* UID").untagged == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 3)",
        b"* 3 FETCH (UID 5)",
    ]


def test_search_by_number_skips_expunged_but_keeps_numbers(
    imap: ImapTestServer, folder: str
) -> None:
    a, b = pair(imap, folder)
    expunge(a, "1")
    # Numbers in the answer are still b's numbering (the expunge is not reported yet).
    assert b.ok("SEARCH ALL").untagged == [b"* SEARCH 2 3 4 5"]
    assert b.ok("NOOP").untagged == [b"* 1 EXPUNGE"]
    assert b.ok("SEARCH ALL").untagged == [b"* SEARCH 1 2 3 4"]


def test_expunge_reported_with_uid_command(imap: ImapTestServer, folder: str) -> None:
    # RFC 9051 §7.5.1: UID FETCH/STORE/SEARCH may carry EXPUNGE; this server sends them.
    a, b = pair(imap, folder)
    expunge(a, "5")
    reply = b.ok("UID FETCH 1 UID")
    assert reply.untagged == [b"* 1 FETCH (UID 1)", b"* 5 EXPUNGE"]


def test_fetch_of_expunged_message_content(imap: ImapTestServer, folder: str) -> None:
    a, b = pair(imap, folder)
    expunge(a, "2")
    # Its content is gone: no data, and the OK says so (RFC 5530 EXPUNGEISSUED).
    reply = b.ok("FETCH 2 BODY.PEEK[]")
    assert reply.untagged == [] and reply.code == "EXPUNGEISSUED"
    assert b.ok("NOOP").untagged == [b"* 2 EXPUNGE"]


def test_store_on_expunged_message_is_harmless(imap: ImapTestServer, folder: str) -> None:
    a, b = pair(imap, folder)
    expunge(a, "3")
    reply = b.ok(r"STORE 3 +FLAGS (\Flagged)")
    assert reply.untagged == []  # RFC 2180 §4.2: OK, nothing to report
    assert b.ok("NOOP").untagged == [b"* 3 EXPUNGE"]
    assert b.ok("SEARCH FLAGGED").untagged == [b"* SEARCH"]


def test_read_only_session_sees_changes(imap: ImapTestServer, folder: str) -> None:
    a, b = pair(imap, folder, 2)
    b.select(folder, examine=True)
    a.ok(r"STORE 1 +FLAGS.SILENT (\Seen)")
    expunge(a, "2")
    assert b.ok("NOOP").untagged == [b"* 1 FETCH (UID 1 FLAGS (\\Seen))", b"* 2 EXPUNGE"]


def test_own_store_not_echoed_again(imap: ImapTestServer, folder: str) -> None:
    a, _b = pair(imap, folder, 1)
    a.ok(r"STORE 1 +FLAGS (\Answered)")
    assert a.ok("NOOP").untagged == []
