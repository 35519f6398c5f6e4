"""SUBSCRIBE, UNSUBSCRIBE and LSUB (RFC 3501 §6.3.6-7, §6.3.9) as raw transcripts.

Each test uses its own folder names; LSUB patterns are restricted to them."""

from __future__ import annotations

from tests.protocol.imap.conftest import ImapTestServer


def test_subscribe_and_unsubscribe(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE SubA")
    assert s.expect("SUBSCRIBE SubA", "OK").untagged == []
    assert s.ok('LSUB "" "SubA"').untagged == [b'* LSUB () "/" SubA']
    assert s.expect("UNSUBSCRIBE SubA", "OK").untagged == []
    assert s.ok('LSUB "" "SubA"').untagged == []


def test_subscribe_twice_is_harmless(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE SubB")
    s.ok("SUBSCRIBE SubB")
    s.ok("SUBSCRIBE SubB")
    assert s.ok('LSUB "" "SubB"').untagged == [b'* LSUB () "/" SubB']


def test_subscribe_inbox_any_case(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("SUBSCRIBE inbox")
    assert s.ok('LSUB "" "INBOX"').untagged == [b'* LSUB () "/" INBOX']
    s.ok("UNSUBSCRIBE Inbox")
    assert s.ok('LSUB "" "INBOX"').untagged == []


def test_subscribe_nonexistent_allowed(imap: ImapTestServer) -> None:
    # RFC 3501 §6.3.6: the server MAY check that the mailbox exists; this one does not,
    # and LSUB marks such a name \Noselect.
    s = imap.login()
    s.ok("SUBSCRIBE SubGhost")
    assert s.ok('LSUB "" "SubGhost"').untagged == [b'* LSUB (\\Noselect) "/" SubGhost']
    s.ok("UNSUBSCRIBE SubGhost")


def test_delete_keeps_subscription(imap: ImapTestServer) -> None:
    # RFC 3501 §6.3.6: the server MUST NOT remove a name from the subscriptions by itself.
    s = imap.login()
    s.ok("CREATE SubC")
    s.ok("SUBSCRIBE SubC")
    s.ok("DELETE SubC")
    assert s.ok('LSUB "" "SubC"').untagged == [b'* LSUB (\\Noselect) "/" SubC']
    s.ok("CREATE SubC")
    assert s.ok('LSUB "" "SubC"').untagged == [b'* LSUB () "/" SubC']


def test_unsubscribe_not_subscribed(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect("UNSUBSCRIBE SubNever", "NO", "NONEXISTENT")


def test_lsub_wildcards(imap: ImapTestServer) -> None:
    s = imap.login()
    s.ok("CREATE SubTree/One/Two")
    for name in ("SubTree", "SubTree/One", "SubTree/One/Two"):
        s.ok(f"SUBSCRIBE {name}")
    assert s.ok('LSUB "" "SubTree/%"').untagged == [b'* LSUB () "/" SubTree/One']
    assert s.ok('LSUB "SubTree/" "*"').untagged == [
        b'* LSUB () "/" SubTree/One',
        b'* LSUB () "/" SubTree/One/Two',
    ]


def test_subscribe_invalid_name(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect('SUBSCRIBE "&bad"', "NO", "CANNOT")
    s.expect("SUBSCRIBE", "BAD")


def test_subscribe_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("SUBSCRIBE INBOX", "BAD")
    s.expect("UNSUBSCRIBE INBOX", "BAD")
