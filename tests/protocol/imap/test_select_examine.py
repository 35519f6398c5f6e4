"""SELECT and EXAMINE (RFC 9051 §6.3.2-3, RFC 3501 §6.3.1-2) as raw transcripts."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message, quote

SYSTEM_FLAGS = b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
PERMANENT = b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "


def uidvalidity(s: Session, mailbox: str) -> int:
    line = s.ok(f"STATUS {quote(mailbox)} (UIDVALIDITY)").untagged[0]
    return int(line.rsplit(b" ", 1)[1].rstrip(b")"))


# CONDSTORE (RFC 7162) is being added: its SELECT data is not this module's subject.
CONDSTORE_CODES = (b"* OK [HIGHESTMODSEQ ", b"* OK [NOMODSEQ]")


def starts(lines: list[bytes], prefixes: list[bytes]) -> None:
    lines = [line for line in lines if not line.startswith(CONDSTORE_CODES)]
    assert len(lines) == len(prefixes), b"\n".join(lines).decode()
    for line, prefix in zip(lines, prefixes, strict=True):
        assert line.startswith(prefix), (line, prefix)


def test_select_empty_folder(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    validity = uidvalidity(s, folder)
    reply = s.select(folder)
    starts(
        reply.untagged,
        [
            SYSTEM_FLAGS,
            b"* 0 EXISTS",
            b"* 0 RECENT",  # IMAP4rev1 requires RECENT (RFC 3501 §6.3.1)
            b"* OK [UIDVALIDITY %d] " % validity,
            b"* OK [UIDNEXT 1] ",
            PERMANENT,
        ],
    )
    assert reply.untagged[0] == SYSTEM_FLAGS
    assert reply.code == "READ-WRITE"


def test_select_with_messages_reports_first_unseen(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    append(s, folder, message("one"), r"(\Seen)")
    append(s, folder, message("two"))
    append(s, folder, message("three"))
    validity = uidvalidity(s, folder)
    reply = s.select(folder)
    starts(
        reply.untagged,
        [
            SYSTEM_FLAGS,
            b"* 3 EXISTS",
            b"* 0 RECENT",
            b"* OK [UNSEEN 2] ",  # the sequence number of the first unseen message
            b"* OK [UIDVALIDITY %d] " % validity,
            b"* OK [UIDNEXT 4] ",
            PERMANENT,
        ],
    )
    assert reply.code == "READ-WRITE"


def test_examine_is_read_only(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    append(s, folder, message("one"))
    reply = s.select(folder, examine=True)
    assert reply.code == "READ-ONLY"
    assert b"* 1 EXISTS" in reply.untagged
    # No flag can be changed permanently in a read-only session (RFC 9051 §7.1).
    assert any(line.startswith(b"* OK [PERMANENTFLAGS ()] ") for line in reply.untagged)
    s.expect(r"STORE 1 +FLAGS (\Flagged)", "NO", "READ-ONLY")


def test_reselect_sends_closed_first(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select("INBOX")
    reply = s.select(folder, examine=True)
    assert reply.untagged[0].startswith(b"* OK [CLOSED] ")  # RFC 9051 §7.1, RFC 7162
    assert reply.untagged[1] == SYSTEM_FLAGS
    reply = s.select(folder)
    assert reply.untagged[0].startswith(b"* OK [CLOSED] ")
    assert reply.code == "READ-WRITE"


def test_first_select_has_no_closed(imap: ImapTestServer) -> None:
    s = imap.login()
    assert not any(b"[CLOSED]" in line for line in s.select("INBOX").untagged)


def test_select_nonexistent(imap: ImapTestServer) -> None:
    s = imap.login()
    reply = s.expect('SELECT "No Such Folder"', "NO", "NONEXISTENT")
    assert reply.untagged == []
    s.expect('EXAMINE "No Such Folder"', "NO", "NONEXISTENT")


def test_failed_select_leaves_no_mailbox_selected(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    s.expect('SELECT "No Such Folder"', "NO", "NONEXISTENT")
    # RFC 9051 §6.3.2: a failed SELECT closes the previous mailbox.
    s.expect("FETCH 1:* FLAGS", "BAD")
    s.expect("CLOSE", "BAD")


def test_non_mail_folders_are_invisible(imap: ImapTestServer) -> None:
    s = imap.login()
    listed = b"\n".join(s.ok('LIST "" "*"').untagged)
    for name in ("Calendar", "Contacts", "Tasks", "Notes", "Journal"):
        s.expect(f"SELECT {name}", "NO", "NONEXISTENT")
        s.expect(f"EXAMINE {name}", "NO", "NONEXISTENT")
        s.expect(f"STATUS {name} (MESSAGES)", "NO", "NONEXISTENT")
        assert b'"/" ' + name.encode() + b"\n" not in listed + b"\n"


def test_inbox_is_case_insensitive(imap: ImapTestServer) -> None:
    s = imap.login()
    for name in ("inbox", "InBoX", '"INBOX"'):
        reply = s.ok(f"SELECT {name}")
        assert reply.code == "READ-WRITE"


def test_uidvalidity_is_stable_across_sessions(imap: ImapTestServer, folder: str) -> None:
    a = imap.login()
    b = imap.login()
    first = [x for x in a.select(folder).untagged if b"UIDVALIDITY" in x]
    second = [x for x in b.select(folder, examine=True).untagged if b"UIDVALIDITY" in x]
    assert first == second and len(first) == 1


def test_select_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("SELECT INBOX", "BAD")
    s.expect("EXAMINE INBOX", "BAD")


def test_select_syntax_errors(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect("SELECT", "BAD")
    s.expect("SELECT INBOX extra", "BAD")
