"""COPY, UID COPY (RFC 9051 §6.4.7, UIDPLUS RFC 4315 COPYUID) and MOVE, UID MOVE
(RFC 6851) as raw transcripts."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message, quote


def validity(s: Session, mailbox: str) -> int:
    line = s.ok(f"STATUS {quote(mailbox)} (UIDVALIDITY)").untagged[0]
    return int(line.rsplit(b" ", 1)[1].rstrip(b")"))


def setup(imap: ImapTestServer, src: str, n: int = 4) -> tuple[Session, str, int]:
    s = imap.login()
    dst = src + "Dst"
    s.ok(f"CREATE {dst}")
    for i in range(n):
        append(s, src, message(f"m{i}"), r"(\Flagged)" if i == 0 else "")
    s.select(src)
    return s, dst, validity(s, dst)


def test_copy_with_copyuid(imap: ImapTestServer, folder: str) -> None:
    s, dst, v = setup(imap, folder)
    reply = s.cmd(f"COPY 1:2 {dst}")
    assert reply.untagged == []
    assert (reply.status, reply.code) == ("OK", f"COPYUID {v} 1:2 1:2")
    reply = s.cmd(f"COPY 4,3 {dst}")
    assert (reply.status, reply.code) == ("OK", f"COPYUID {v} 3:4 3:4")
    # The source is unchanged; the copies keep their flags.
    assert s.ok("SEARCH ALL").untagged == [b"* SEARCH 1 2 3 4"]
    t = imap.login()
    t.select(dst, examine=True)
    assert t.ok("FETCH 1:2 FLAGS").untagged == [
        b"* 1 FETCH (FLAGS (\\Flagged))",
        b"* 2 FETCH (FLAGS ())",
    ]


def test_uid_copy(imap: ImapTestServer, folder: str) -> None:
    s, dst, v = setup(imap, folder)
    reply = s.cmd(f"UID COPY 2,4 {dst}")
    assert (reply.status, reply.code) == ("OK", f"COPYUID {v} 2,4 1:2")
    # UIDs that do not exist are ignored; nothing copied means no COPYUID.
    reply = s.cmd(f"UID COPY 50:60 {dst}")
    assert (reply.status, reply.code, reply.untagged) == ("OK", None, [])


def test_copy_to_missing_mailbox(imap: ImapTestServer, folder: str) -> None:
    s, _dst, _v = setup(imap, folder, 1)
    reply = s.expect('COPY 1 "No Such Box"', "NO", "TRYCREATE")  # RFC 9051 §6.4.7
    assert reply.untagged == []
    s.expect('MOVE 1 "No Such Box"', "NO", "TRYCREATE")
    assert s.ok("SEARCH ALL").untagged == [b"* SEARCH 1"]  # nothing moved away


def test_copy_invalid_sequence(imap: ImapTestServer, folder: str) -> None:
    s, dst, _v = setup(imap, folder, 2)
    s.expect(f"COPY 3 {dst}", "BAD")
    s.expect(f"MOVE 1:3 {dst}", "BAD")
    assert s.ok(f"STATUS {dst} (MESSAGES)").untagged == [b"* STATUS %s (MESSAGES 0)" % dst.encode()]


def test_copy_from_read_only_mailbox(imap: ImapTestServer, folder: str) -> None:
    s, dst, v = setup(imap, folder, 1)
    s.select(folder, examine=True)
    assert s.cmd(f"COPY 1 {dst}").code == f"COPYUID {v} 1 1"


def test_move(imap: ImapTestServer, folder: str) -> None:
    s, dst, v = setup(imap, folder)
    reply = s.cmd(f"MOVE 2:3 {dst}")
    assert reply.status == "OK"
    # RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs (one per message).
    assert reply.untagged[0].startswith(b"* OK [COPYUID %d 2:3 1:2] " % v)
    assert reply.untagged[1:] == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
    assert s.ok("UID SEARCH ALL").untagged == [b"* SEARCH 1 4"]
    t = imap.login()
    t.select(dst, examine=True)
    assert t.ok("FETCH 1:* UID").untagged == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)"]


def test_move_scattered_expunges_stay_consistent(imap: ImapTestServer, folder: str) -> None:
    s, dst, v = setup(imap, folder)
    reply = s.cmd(f"MOVE 1,4 {dst}")
    assert reply.untagged[0].startswith(b"* OK [COPYUID %d 1,4 1:2] " % v)
    # Each EXPUNGE number is valid when sent: highest first needs no renumbering.
    assert reply.untagged[1:] == [b"* 4 EXPUNGE", b"* 1 EXPUNGE"]
    assert s.ok("FETCH 1:* UID").untagged == [b"* 1 FETCH (UID 2)", b"* 2 FETCH (UID 3)"]


def test_uid_move(imap: ImapTestServer, folder: str) -> None:
    s, dst, v = setup(imap, folder)
    reply = s.cmd(f"UID MOVE 4 {dst}")
    assert reply.status == "OK"
    assert reply.untagged[0].startswith(b"* OK [COPYUID %d 4 1] " % v)
    assert reply.untagged[1:] == [b"* 4 EXPUNGE"]


def test_move_in_read_only_mailbox(imap: ImapTestServer, folder: str) -> None:
    s, dst, _v = setup(imap, folder, 1)
    s.select(folder, examine=True)
    reply = s.expect(f"MOVE 1 {dst}", "NO", "READ-ONLY")
    assert reply.untagged == []


def test_copy_move_need_selected_mailbox(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect("COPY 1 INBOX", "BAD")
    s.expect("MOVE 1 INBOX", "BAD")
    s.expect("UID MOVE 1 INBOX", "BAD")
