"""CAPABILITY, NOOP and LOGOUT (RFC 9051 §6.1, RFC 3501 §6.1) as raw transcripts."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer, Session

# What the server offers before login over TLS, and what it must never offer there.
PRE_LOGIN = {"IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "AUTH=PLAIN"}
# After login; extensions being added (CONDSTORE, ...) may join, so a subset check.
POST_LOGIN = {
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "IDLE",
    "UIDPLUS",
    "MOVE",
    "NAMESPACE",
    "ID",
    "ENABLE",
    "UNSELECT",
    "SPECIAL-USE",
    "CHILDREN",
}


def caps_of(line: bytes) -> set[str]:
    """The capabilities of `* CAPABILITY ...` or of a `[CAPABILITY ...]` response code."""
    text = line.decode()
    if "[CAPABILITY " in text:
        text = text.split("[CAPABILITY ", 1)[1].split("]", 1)[0]
    else:
        assert text.startswith("* CAPABILITY "), text
        text = text.removeprefix("* CAPABILITY ")
    return set(text.split())


def test_greeting_is_ok_with_capability_code(imap: ImapTestServer) -> None:
    s = imap.connect()
    assert s.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    caps = caps_of(s.greeting)
    assert caps == PRE_LOGIN
    # Implicit TLS: no STARTTLS and no LOGINDISABLED (RFC 8314, RFC 9051 §6.2.1).
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps


def test_capability_matches_greeting(imap: ImapTestServer) -> None:
    s = imap.connect()
    reply = s.expect("CAPABILITY", "OK")
    assert len(reply.untagged) == 1
    assert caps_of(reply.untagged[0]) == caps_of(s.greeting)


def test_capability_after_login(imap: ImapTestServer) -> None:
    s = imap.connect()
    login = s.login()
    # RFC 9051 §6.2.3: the OK of LOGIN may carry the new list; it must equal CAPABILITY's.
    assert login.code_name == "CAPABILITY"
    reply = s.expect("CAPABILITY", "OK")
    caps = caps_of(reply.untagged[0])
    assert caps == caps_of(login.tagged)
    assert caps >= POST_LOGIN
    assert "IMAP4rev1" in caps
    assert not {c for c in caps if c.startswith("AUTH=")}  # RFC 9051 §6.2.3
    assert "LOGINDISABLED" not in caps and "STARTTLS" not in caps
    limits = [c for c in caps if c.startswith("APPENDLIMIT=")]
    assert limits == ["APPENDLIMIT=36700160"]  # RFC 7889: Exchange's 35 MB


def test_capability_on_plain_port_before_starttls(imap: ImapTestServer) -> None:
    p = imap.connect_plain()
    caps = caps_of(p.greeting)
    assert {"STARTTLS", "LOGINDISABLED"} <= caps
    assert not {c for c in caps if c.startswith("AUTH=")}  # RFC 9051 §6.2.3
    assert caps_of(p.expect("CAPABILITY", "OK").untagged[0]) == caps


def test_capability_takes_no_arguments(imap: ImapTestServer) -> None:
    s = imap.connect()
    reply = s.expect("CAPABILITY IMAP4rev1", "BAD")
    assert reply.untagged == []


def test_noop_in_every_state(imap: ImapTestServer, folder: str) -> None:
    s = imap.connect()
    assert s.expect("NOOP", "OK").untagged == []
    s.login()
    assert s.expect("NOOP", "OK").untagged == []
    s.select(folder)
    assert s.expect("NOOP", "OK").untagged == []
    assert s.expect("CHECK", "OK").untagged == []  # RFC 3501 §6.4.1


def test_noop_with_arguments_is_bad(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("NOOP now", "BAD")
    s.expect("NOOP", "OK")


def test_command_names_are_case_insensitive_and_tags_echoed(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"A.b-1 noop\r\nx9 NoOp\r\n")
    first = s.read_until_tagged("A.b-1")
    assert first.untagged == [] and first.status == "OK"
    assert s.read_until_tagged("x9").status == "OK"


def test_pipelined_commands_answered_in_order(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"p1 NOOP\r\np2 CAPABILITY\r\np3 NOOP\r\n")
    lines = [s.read_line() for _ in range(4)]
    assert lines[0].startswith(b"p1 OK ")
    assert lines[1].startswith(b"* CAPABILITY ")
    assert lines[2].startswith(b"p2 OK ")
    assert lines[3].startswith(b"p3 OK ")


def logout_closes(s: Session) -> None:
    reply = s.cmd("LOGOUT")
    assert len(reply.untagged) == 1 and reply.untagged[0].startswith(b"* BYE ")
    assert reply.status == "OK"
    assert s.closed()


def test_logout_not_authenticated(imap: ImapTestServer) -> None:
    logout_closes(imap.connect())


def test_logout_authenticated(imap: ImapTestServer) -> None:
    logout_closes(imap.login())


def test_logout_selected(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    s.select(folder)
    logout_closes(s)


def test_nothing_runs_after_logout(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"l1 LOGOUT\r\nl2 NOOP\r\n")
    assert s.read_line().startswith(b"* BYE ")
    assert s.read_line().startswith(b"l1 OK ")
    assert s.closed()
    assert b"l2" not in s.buf
