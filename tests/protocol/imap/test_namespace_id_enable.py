"""NAMESPACE (RFC 2342), ID (RFC 2971) and ENABLE (RFC 5161) as raw transcripts."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer


def test_namespace(imap: ImapTestServer) -> None:
    s = imap.login()
    reply = s.expect("NAMESPACE", "OK")
    # One personal namespace, no other users' and no shared ones.
    assert reply.untagged == [b'* NAMESPACE (("" "/")) NIL NIL']


def test_namespace_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("NAMESPACE", "BAD")
    s.login()
    s.expect("NAMESPACE extra", "BAD")


def test_id_nil_any_state(imap: ImapTestServer) -> None:
    s = imap.connect()
    assert s.expect("ID NIL", "OK").untagged == [b'* ID ("name" "postwerk")']
    s.login()
    assert s.expect("ID NIL", "OK").untagged == [b'* ID ("name" "postwerk")']


def test_id_with_client_parameters(imap: ImapTestServer) -> None:
    s = imap.connect()
    reply = s.expect('ID ("name" "transcript" "version" "1.0" "os" NIL)', "OK")
    assert reply.untagged == [b'* ID ("name" "postwerk")']


def test_id_bad_arguments(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("ID", "BAD")
    s.expect('ID ("name")', "BAD")  # field without a value
    s.expect('ID ("name" "x"', "BAD")
    s.expect("ID NIL", "OK")


def test_enable_unknown_capability(imap: ImapTestServer) -> None:
    # RFC 5161 §3.1: unknown capabilities are ignored; ENABLED lists what was enabled.
    s = imap.login()
    assert s.expect("ENABLE X-UNKNOWN-EXTENSION", "OK").untagged == [b"* ENABLED"]


def test_enable_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("ENABLE X-UNKNOWN-EXTENSION", "BAD")
    s.login()
    s.expect("ENABLE", "BAD")  # at least one capability
