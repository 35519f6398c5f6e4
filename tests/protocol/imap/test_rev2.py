"""IMAP4rev2 (RFC 9051) once a client enables it, UTF8=ACCEPT (RFC 6855) and
SEARCHRES (RFC 5182), as raw transcripts. The server speaks IMAP4rev1 until
told otherwise (RFC 9051 Appendix E: a server offering both behaves as rev1
until ENABLE IMAP4rev2)."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message


def rev2(imap: ImapTestServer) -> Session:
    s = imap.login()
    assert s.ok("ENABLE IMAP4rev2").untagged == [b"* ENABLED IMAP4rev2"]
    return s


def test_capabilities_offer_both_revisions(imap: ImapTestServer) -> None:
    s = imap.connect()
    caps = s.greeting.split(b"[CAPABILITY ", 1)[1].split(b"]")[0].split()
    assert b"IMAP4rev1" in caps and b"IMAP4rev2" in caps
    s.login()
    [line] = s.ok("CAPABILITY").untagged
    for cap in (b"IMAP4rev2", b"BINARY", b"UTF8=ACCEPT", b"SEARCHRES", b"ESEARCH", b"NAMESPACE"):
        assert cap in line.split(), cap


def test_enable_twice_reports_nothing_new(imap: ImapTestServer) -> None:
    s = rev2(imap)
    assert s.ok("ENABLE IMAP4rev2 UTF8=ACCEPT").untagged == [b"* ENABLED UTF8=ACCEPT"]


def test_select_without_recent_with_list(imap: ImapTestServer, folder: str) -> None:
    s = rev2(imap)
    append(s, folder, message("one"))
    reply = s.select(folder)
    lines = reply.untagged
    assert not any(b"RECENT" in line for line in lines), lines
    assert not any(b"[UNSEEN " in line for line in lines), lines
    assert f'* LIST () "/" {folder}'.encode() in lines
    assert b"* 1 EXISTS" in lines
    codes = {x.split(b"[", 1)[1].split(b" ", 1)[0].rstrip(b"]") for x in lines if b"[" in x}
    assert {b"UIDVALIDITY", b"UIDNEXT", b"PERMANENTFLAGS"} <= codes


def test_rev1_select_keeps_recent(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    assert b"* 0 RECENT" in s.select(folder).untagged


def test_search_answers_with_esearch(imap: ImapTestServer, folder: str) -> None:
    s = rev2(imap)
    append(s, folder, message("one"))
    append(s, folder, message("two"), r"(\Flagged)")
    s.select(folder)
    reply = s.ok("SEARCH ALL")
    assert reply.untagged == [f'* ESEARCH (TAG "{reply.tag}") ALL 1:2'.encode()]
    reply = s.ok("UID SEARCH FLAGGED")
    assert reply.untagged == [f'* ESEARCH (TAG "{reply.tag}") UID ALL 2'.encode()]
    reply = s.ok("SEARCH DELETED")
    assert reply.untagged == [f'* ESEARCH (TAG "{reply.tag}")'.encode()]


def test_utf8_mailbox_names(imap: ImapTestServer) -> None:
    s = rev2(imap)
    s.ok('CREATE "Résumé/Über"')
    assert s.ok('LIST "" "Résumé*"').untagged == [
        '* LIST (\\HasChildren) "/" "Résumé"'.encode(),
        '* LIST (\\HasNoChildren) "/" "Résumé/Über"'.encode(),
    ]
    reply = s.ok('STATUS "Résumé/Über" (MESSAGES)')
    assert reply.untagged == ['* STATUS "Résumé/Über" (MESSAGES 0)'.encode()]
    # "&" is an ordinary character in UTF-8 names.
    s.ok('CREATE "R&D"')
    # The same folders, seen by an IMAP4rev1 session: modified UTF-7.
    old = imap.login()
    lines = old.ok('LIST "" "R*"').data
    assert b'* LIST (\\HasChildren) "/" R&AOk-sum&AOk-' in lines
    assert b'* LIST (\\HasNoChildren) "/" R&-D' in lines
    # Deleting a parent with children: HASCHILDREN in rev2, INUSE in rev1.
    s.expect('DELETE "Résumé"', "NO", "HASCHILDREN")
    old.expect("DELETE R&AOk-sum&AOk-", "NO", "INUSE")
    s.ok('DELETE "Résumé/Über"')
    s.ok('DELETE "Résumé"')
    s.ok('DELETE "R&D"')


def test_utf8_accept_alone_switches_names(imap: ImapTestServer) -> None:
    s = imap.login()
    assert s.ok("ENABLE UTF8=ACCEPT").untagged == [b"* ENABLED UTF8=ACCEPT"]
    s.ok('CREATE "Ångström"')
    assert s.ok('LIST "" "Å*"').untagged == ['* LIST (\\HasNoChildren) "/" "Ångström"'.encode()]
    # Still IMAP4rev1 otherwise: a plain SEARCH response.
    s.select("Ångström")
    assert s.ok("SEARCH ALL").untagged == [b"* SEARCH"]
    s.ok("UNSELECT")
    s.ok('DELETE "Ångström"')


def test_append_utf8_needs_utf8_accept(imap: ImapTestServer, folder: str) -> None:
    data = "Subject: Grüße\r\nFrom: jörg@bücher.test\r\n\r\nHallo\r\n".encode()
    s = imap.login()
    reply = s.cmd(f"APPEND {folder} UTF8 (~{{{len(data)}+}}\r\n".encode() + data + b")")
    assert reply.status == "BAD"
    s.ok("ENABLE UTF8=ACCEPT")
    reply = s.ok(f"APPEND {folder} UTF8 (~{{{len(data)}+}}\r\n".encode() + data + b")")
    assert reply.code_name == "APPENDUID"
    s.select(folder)
    [line] = s.ok("FETCH 1 BODY.PEEK[]").untagged
    assert line.endswith(data + b")")


def test_searchres_save_and_reuse(imap: ImapTestServer, folder: str) -> None:
    s = rev2(imap)
    for n in range(1, 6):
        append(s, folder, message(f"m{n}"), r"(\Flagged)" if n % 2 else "")
    s.select(folder)
    # SAVE alone: no ESEARCH response, the result is kept as "$".
    assert s.ok("SEARCH RETURN (SAVE) FLAGGED").untagged == []
    reply = s.ok("FETCH $ (UID)")
    assert reply.untagged == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)", b"* 5 FETCH (UID 5)"]
    reply = s.ok("UID SEARCH UID $ NOT UID 3")
    assert reply.untagged == [f'* ESEARCH (TAG "{reply.tag}") UID ALL 1,5'.encode()]
    # SAVE with MIN: only the minimum is saved; "$" in its own criteria is the old one.
    reply = s.ok("SEARCH RETURN (SAVE MIN) $ UID 3:5")
    assert reply.untagged == [f'* ESEARCH (TAG "{reply.tag}") MIN 3'.encode()]
    s.ok(r"STORE $ +FLAGS.SILENT (\Seen)")
    reply = s.ok("SEARCH SEEN")
    assert reply.untagged == [f'* ESEARCH (TAG "{reply.tag}") ALL 3'.encode()]
    # An expunged message drops out of "$".
    s.ok(r"STORE 3 +FLAGS.SILENT (\Deleted)")
    s.ok("EXPUNGE")
    assert s.ok("FETCH $ UID").untagged == []
    # A failed SEARCH with SAVE empties "$".
    s.ok("SEARCH RETURN (SAVE) ALL")
    assert len(s.ok("FETCH $ UID").untagged) == 4
    s.expect("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL", "NO", "BADCHARSET")
    assert s.ok("FETCH $ UID").untagged == []
    # A new selection starts with "$" empty.
    s.ok("SEARCH RETURN (SAVE) ALL")
    s.select(folder)
    assert s.ok("UID FETCH $ UID").untagged == []


def test_status_deleted(imap: ImapTestServer, folder: str) -> None:
    s = rev2(imap)
    append(s, folder, message("a"), r"(\Deleted)")
    append(s, folder, message("b"))
    reply = s.ok(f"STATUS {folder} (MESSAGES DELETED SIZE)")
    [line] = reply.untagged
    assert line.startswith(f"* STATUS {folder} (MESSAGES 2 DELETED 1 SIZE ".encode())
