"""LOGIN, AUTHENTICATE PLAIN (RFC 4616) with and without SASL-IR (RFC 4959), STARTTLS
and LOGINDISABLED (RFC 9051 §6.2, RFC 3501 §6.2) as raw transcripts."""

from __future__ import annotations

import base64

from tests.conftest import PASSWORD
from tests.protocol.imap.conftest import ALICE, BOB, ImapTestServer, Session


def plain(authcid: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def assert_authenticated(s: Session) -> None:
    """Selected-state commands are reachable only after a successful login."""
    assert s.cmd("SELECT INBOX").status == "OK"


def assert_not_authenticated(s: Session) -> None:
    s.expect("SELECT INBOX", "BAD")


def test_login_quoted(imap: ImapTestServer) -> None:
    s = imap.connect()
    reply = s.cmd(f'LOGIN "{ALICE}" "{PASSWORD}"')
    assert reply.untagged == []
    assert (reply.status, reply.code_name) == ("OK", "CAPABILITY")
    assert_authenticated(s)


def test_login_synchronizing_literals(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(f"a1 LOGIN {{{len(ALICE)}}}\r\n")
    assert s.read_line().startswith(b"+ ")
    s.send(f"{ALICE} {{{len(PASSWORD)}}}\r\n")
    assert s.read_line().startswith(b"+ ")
    s.send(f"{PASSWORD}\r\n")
    assert s.read_until_tagged("a1").status == "OK"


def test_login_non_synchronizing_literal(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(f"a1 LOGIN {ALICE} {{{len(PASSWORD)}+}}\r\n{PASSWORD}\r\n")
    reply = s.read_until_tagged("a1")
    assert reply.untagged == [] and reply.status == "OK"  # no "+" for {n+}


def test_login_wrong_password_and_unknown_user_look_alike(imap: ImapTestServer) -> None:
    s = imap.connect()
    wrong = s.expect(f'LOGIN {ALICE} "not the password"', "NO", "AUTHENTICATIONFAILED")
    unknown = s.expect(f'LOGIN nobody@example.test "{PASSWORD}"', "NO", "AUTHENTICATIONFAILED")
    # No account enumeration: the same answer for both (RFC 5530 AUTHENTICATIONFAILED).
    assert wrong.tagged.split(b" ", 1)[1] == unknown.tagged.split(b" ", 1)[1]
    assert wrong.untagged == unknown.untagged == []
    assert_not_authenticated(s)
    s.login()  # the session is still usable
    assert_authenticated(s)


def test_login_twice_is_bad(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect(f'LOGIN {ALICE} "{PASSWORD}"', "BAD")
    s.expect(f"AUTHENTICATE PLAIN {plain(ALICE, PASSWORD)}", "BAD")


def test_login_missing_password_is_bad(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect(f"LOGIN {ALICE}", "BAD")
    s.expect("LOGIN", "BAD")


def test_authenticate_plain_with_continuation(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"a1 AUTHENTICATE PLAIN\r\n")
    # RFC 4616: PLAIN has no server challenge; the continuation carries empty base64.
    assert s.read_line() == b"+ "
    s.send(plain(ALICE, PASSWORD) + "\r\n")
    reply = s.read_until_tagged("a1")
    assert (reply.status, reply.code_name) == ("OK", "CAPABILITY")
    assert_authenticated(s)


def test_authenticate_plain_sasl_ir(imap: ImapTestServer) -> None:
    s = imap.connect()
    reply = s.cmd(f"AUTHENTICATE PLAIN {plain(ALICE, PASSWORD)}")
    assert reply.untagged == []  # no continuation with an initial response (RFC 4959)
    assert (reply.status, reply.code_name) == ("OK", "CAPABILITY")
    assert_authenticated(s)


def test_authenticate_mechanism_name_case_insensitive(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect(f"authenticate plain {plain(ALICE, PASSWORD)}", "OK", "CAPABILITY")


def test_authenticate_plain_authzid_same_user(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect(f"AUTHENTICATE PLAIN {plain(ALICE, PASSWORD, ALICE)}", "OK", "CAPABILITY")


def test_authenticate_plain_authzid_other_user_refused(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect(f"AUTHENTICATE PLAIN {plain(ALICE, PASSWORD, BOB)}", "NO", "AUTHENTICATIONFAILED")
    assert_not_authenticated(s)


def test_authenticate_wrong_password(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect(f"AUTHENTICATE PLAIN {plain(ALICE, 'wrong')}", "NO", "AUTHENTICATIONFAILED")
    s.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert s.read_line() == b"+ "
    s.send(plain(ALICE, "wrong") + "\r\n")
    reply = s.read_until_tagged("a1")
    assert (reply.status, reply.code_name) == ("NO", "AUTHENTICATIONFAILED")
    assert_not_authenticated(s)


def test_authenticate_cancelled_with_star(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert s.read_line() == b"+ "
    s.send(b"*\r\n")
    reply = s.read_until_tagged("a1")
    assert reply.status == "BAD"  # RFC 9051 §6.2.2: a cancelled exchange is BAD
    assert_not_authenticated(s)
    s.login()
    assert_authenticated(s)


def test_authenticate_bad_base64_in_continuation(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert s.read_line() == b"+ "
    s.send(b"!!not base64!!\r\n")
    reply = s.read_until_tagged("a1")
    assert reply.status == "BAD" and reply.untagged == []
    s.expect("NOOP", "OK")


def test_authenticate_bad_base64_initial_response(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("AUTHENTICATE PLAIN !!!", "BAD")
    s.expect("NOOP", "OK")


def test_authenticate_empty_initial_response(imap: ImapTestServer) -> None:
    # RFC 4959 §3: "=" is an empty initial response; for PLAIN that is a failed login.
    s = imap.connect()
    s.expect("AUTHENTICATE PLAIN =", "NO", "AUTHENTICATIONFAILED")


def test_authenticate_unknown_mechanism(imap: ImapTestServer) -> None:
    s = imap.connect()
    reply = s.expect("AUTHENTICATE CRAM-MD5", "NO", "CANNOT")
    assert reply.untagged == []  # refused without a continuation


def test_plain_port_refuses_cleartext_login(imap: ImapTestServer) -> None:
    p = imap.connect_plain()
    assert b"LOGINDISABLED" in p.greeting
    reply = p.expect(f'LOGIN {ALICE} "{PASSWORD}"', "NO", "PRIVACYREQUIRED")
    assert reply.untagged == []
    # Refused before any continuation: the password never crosses the wire in the clear.
    reply = p.expect("AUTHENTICATE PLAIN", "NO", "PRIVACYREQUIRED")
    assert reply.untagged == []
    p.expect("SELECT INBOX", "BAD")


def test_starttls_then_login(imap: ImapTestServer) -> None:
    p = imap.connect_plain()
    reply = p.expect("STARTTLS", "OK")
    assert reply.untagged == []
    p.sock = imap.org.client_context().wrap_socket(p.sock, server_hostname="localhost")
    caps = p.expect("CAPABILITY", "OK").untagged[0].split()
    assert b"AUTH=PLAIN" in caps
    assert b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps
    p.expect("STARTTLS", "BAD")  # once only
    p.login()
    assert_authenticated(p)


def test_starttls_drops_pipelined_plaintext(imap: ImapTestServer) -> None:
    """RFC 9051 §11.1 / CVE-2011-0411: bytes sent behind STARTTLS are not run in TLS."""
    p = imap.connect_plain()
    p.send(b"a1 STARTTLS\r\na2 NOOP\r\n")
    assert p.read_line().startswith(b"a1 OK ")
    p.buf = b""
    p.sock = imap.org.client_context().wrap_socket(p.sock, server_hostname="localhost")
    reply = p.cmd("NOOP")
    assert reply.untagged == [] and reply.status == "OK"


def test_starttls_on_implicit_tls_port_is_bad(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("STARTTLS", "BAD")
    s.expect("NOOP", "OK")
