"""APPEND (RFC 9051 §6.3.12) with UIDPLUS APPENDUID (RFC 4315), LITERAL+ (RFC 7888)
and APPENDLIMIT / TOOBIG (RFC 7889) as raw transcripts."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message, quote

APPENDLIMIT = 36700160  # advertised after login (see test_capability_noop_logout)


def validity(s: Session, mailbox: str) -> int:
    line = s.ok(f"STATUS {quote(mailbox)} (UIDVALIDITY)").untagged[0]
    return int(line.rsplit(b" ", 1)[1].rstrip(b")"))


def test_append_appenduid(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    v = validity(s, folder)
    data = message("one")
    reply = s.cmd(b"APPEND %s {%d+}\r\n%s" % (folder.encode(), len(data), data))
    assert reply.untagged == []
    assert (reply.status, reply.code) == ("OK", f"APPENDUID {v} 1")
    assert s.cmd(b"APPEND %s {%d+}\r\n%s" % (folder.encode(), len(data), data)).code == (
        f"APPENDUID {v} 2"
    )
    s.select(folder, examine=True)
    assert s.ok("FETCH 1 BODY.PEEK[]").untagged == [
        b"* 1 FETCH (BODY[] {%d}\r\n%s)" % (len(data), data)
    ]


def test_append_flags_and_date(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    uid = append(s, folder, message("dated"), r'(\Seen \Draft $Label) "14-Jul-2020 12:34:56 +0000"')
    s.select(folder, examine=True)
    line = s.ok(f"UID FETCH {uid} (FLAGS INTERNALDATE)").untagged[0]
    assert line.startswith(b"* 1 FETCH (UID %d FLAGS (" % uid)
    flags = line.split(b"FLAGS (", 1)[1].split(b")", 1)[0].split()
    assert set(flags) == {b"\\Seen", b"\\Draft", b"$Label"}
    assert line.endswith(b'INTERNALDATE "14-Jul-2020 12:34:56 +0000")')


def test_append_date_other_zone_same_instant(imap: ImapTestServer, folder: str) -> None:
    # The instant is kept; showing it in UTC rather than the zone sent is the server's
    # choice (RFC 9051 §2.3.3 does not require the original zone to be kept).
    s = imap.login()
    append(s, folder, message("zoned"), '"14-Jul-2020 02:44:25 -0700"')
    s.select(folder, examine=True)
    assert s.ok("FETCH 1 INTERNALDATE").untagged == [
        b'* 1 FETCH (INTERNALDATE "14-Jul-2020 09:44:25 +0000")'
    ]


def test_append_synchronizing_literal(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    data = message("sync")
    s.send(b"a1 APPEND %s {%d}\r\n" % (folder.encode(), len(data)))
    assert s.read_line().startswith(b"+ ")  # the continuation before any octet
    s.send(data + b"\r\n")
    reply = s.read_until_tagged("a1")
    assert (reply.status, reply.code_name) == ("OK", "APPENDUID")


def test_append_non_synchronizing_no_continuation(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    data = message("plus") + b"x" * 20000 + b"\r\n"  # far above LITERAL-'s 4096
    s.send(b"a1 APPEND %s {%d+}\r\n%s\r\na2 NOOP\r\n" % (folder.encode(), len(data), data))
    reply = s.read_until_tagged("a1")
    assert reply.untagged == [] and reply.code_name == "APPENDUID"
    assert s.read_until_tagged("a2").status == "OK"


def test_append_too_big_refused_before_any_octet(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.send(b"a1 APPEND %s {%d}\r\n" % (folder.encode(), APPENDLIMIT + 1))
    line = s.read_line()
    assert line.startswith(b"a1 NO [TOOBIG] ")  # RFC 7889: no "+", so nothing was sent
    s.expect("NOOP", "OK")  # the next line is a new command
    s.send(b"a2 APPEND %s {999999999}\r\n" % folder.encode())
    assert s.read_line().startswith(b"a2 NO [TOOBIG] ")
    assert s.ok(f"STATUS {folder} (MESSAGES)").untagged == [
        b"* STATUS %s (MESSAGES 0)" % folder.encode()
    ]


def test_append_at_the_limit_is_announced_ok(imap: ImapTestServer, folder: str) -> None:
    # Exactly APPENDLIMIT octets may be sent: "+" comes; the client then gives up (the
    # connection is closed rather than sending 35 MB).
    s = imap.login()
    s.send(b"a1 APPEND %s {%d}\r\n" % (folder.encode(), APPENDLIMIT))
    assert s.read_line().startswith(b"+ ")


def test_append_to_missing_mailbox(imap: ImapTestServer) -> None:
    s = imap.login()
    data = message("lost")
    reply = s.cmd(b'APPEND "No Such Box" {%d+}\r\n%s' % (len(data), data))
    assert (reply.status, reply.code) == ("NO", "TRYCREATE")  # RFC 9051 §6.3.12
    s.send(b'a1 APPEND "No Such Box" {%d}\r\n' % len(data))
    assert s.read_line().startswith(b"+ ")
    s.send(data + b"\r\n")
    reply = s.read_until_tagged("a1")
    assert (reply.status, reply.code) == ("NO", "TRYCREATE")


def test_append_to_selected_mailbox_announces_exists(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    data = message("live")
    reply = s.cmd(b"APPEND %s {%d+}\r\n%s" % (folder.encode(), len(data), data))
    # RFC 3501 §6.3.11: the usual new-message updates for the selected mailbox.
    assert reply.untagged == [b"* 1 EXISTS"]
    assert reply.code_name == "APPENDUID"


def test_append_bare_lf_becomes_crlf(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    append(s, folder, b"Subject: lf\n\nline one\nline two\n")
    s.select(folder, examine=True)
    expected = b"Subject: lf\r\n\r\nline one\r\nline two\r\n"
    assert s.ok("FETCH 1 (RFC822.SIZE BODY.PEEK[])").untagged == [
        b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n%s)" % (len(expected), len(expected), expected)
    ]


def test_append_bad_arguments(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    for head in (
        rb"(\Recent) ",  # only the server sets \Recent
        rb"(\Bogus) ",
        b'"not a date" ',
        b'"31-Feb-2020 00:00:00 +0000" ',
        b'"14-Jul-2020 12:34:56" ',  # the zone is required
        b"(\\Seen ",
    ):
        reply = s.cmd(b"APPEND %s %s{5+}\r\nhello" % (folder.encode(), head))
        assert reply.status == "BAD", head
    s.expect(f"APPEND {folder}", "BAD")
    assert s.ok(f"STATUS {folder} (MESSAGES)").untagged == [
        b"* STATUS %s (MESSAGES 0)" % folder.encode()
    ]


def test_append_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    assert s.cmd(b"APPEND INBOX {5+}\r\nhello").status == "BAD"
    s.expect("NOOP", "OK")
