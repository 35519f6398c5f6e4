"""IDLE (RFC 2177) as raw transcripts: woken by APPEND, SMTP delivery, flag changes and
expunges in other sessions; ended by DONE."""

from __future__ import annotations

from tests.protocol.imap.conftest import BOB, ImapTestServer, Session, append, message


def start_idle(s: Session, tag: str = "i1") -> None:
    s.send(f"{tag} IDLE\r\n".encode())
    assert s.read_line().startswith(b"+ ")


def done(s: Session, tag: str = "i1") -> list[bytes]:
    s.send(b"DONE\r\n")
    reply = s.read_until_tagged(tag)
    assert reply.status == "OK", str(reply)
    return reply.untagged


def test_idle_done_without_changes(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    start_idle(s)
    assert done(s) == []
    s.expect("NOOP", "OK")


def test_idle_done_is_case_insensitive(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    start_idle(s)
    s.send(b"done\r\n")
    assert s.read_until_tagged("i1").status == "OK"


def test_idle_woken_by_append_in_other_session(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    start_idle(s)
    other = imap.login()
    append(other, folder, message("wake up"))
    assert s.read_line() == b"* 1 EXISTS"
    append(other, folder, message("again"))
    assert s.read_line() == b"* 2 EXISTS"
    assert done(s) == []


def test_idle_woken_by_smtp_delivery(imap: ImapTestServer) -> None:
    user = imap.new_user("idler")
    s = imap.login(user)
    s.select("INBOX")
    start_idle(s)
    imap.deliver(message("delivered", to=user), to=user)
    assert s.read_line() == b"* 1 EXISTS"
    assert done(s) == []
    assert s.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]").untagged == [
        b"* 1 FETCH (BODY[HEADER.FIELDS (Subject)] {22}\r\nSubject: delivered\r\n\r\n)"
    ]


def test_idle_reports_flags_and_expunges(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    for n in range(3):
        append(s, folder, message(f"m{n}"))
    s.select(folder)
    start_idle(s)
    other = imap.login()
    other.select(folder)
    other.ok(r"STORE 2 +FLAGS.SILENT (\Flagged)")
    line = s.read_line()
    assert line.startswith(b"* 2 FETCH (") and line.endswith(b"FLAGS (\\Flagged))"), line
    other.ok(r"STORE 1 +FLAGS.SILENT (\Deleted)")
    assert s.read_line() == b"* 1 FETCH (UID 1 FLAGS (\\Deleted))"
    other.ok("EXPUNGE")
    assert s.read_line() == b"* 1 EXPUNGE"  # expunges may be sent during IDLE
    assert done(s) == []
    assert s.ok("FETCH 1:* UID").untagged == [b"* 1 FETCH (UID 2)", b"* 2 FETCH (UID 3)"]


def test_idle_other_users_changes_do_not_wake(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    start_idle(s)
    imap.deliver(message("for bob", to=BOB), to=BOB)
    imap.org.wait_inbox(BOB, 1)
    assert done(s) == []


def test_idle_in_authenticated_state(imap: ImapTestServer) -> None:
    s = imap.login()
    start_idle(s)
    assert done(s) == []


def test_idle_anything_but_done_is_bad(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    start_idle(s)
    s.send(b"i2 NOOP\r\n")
    reply = s.read_until_tagged("i1")
    assert reply.status == "BAD"
    s.expect("NOOP", "OK")  # the session goes on


def test_idle_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("IDLE", "BAD")
