"""LIST and LSUB (RFC 9051 §6.3.9, RFC 3501 §6.3.8-9), SPECIAL-USE (RFC 6154) attributes,
CHILDREN (RFC 3348) and modified UTF-7 names (RFC 3501 §5.1.3) as raw transcripts."""

from __future__ import annotations

import re

import pytest

from tests.protocol.imap.conftest import ImapTestServer, Session

# A fresh mailbox's folders as IMAP shows them: INBOX first, then by name (the order
# is the server's choice; RFC 9051 does not fix one). Calendar, Contacts, ... are not
# mail folders and are not shown.
DEFAULT_LIST = [
    b'* LIST (\\HasNoChildren) "/" INBOX',
    b'* LIST (\\HasNoChildren \\Trash) "/" "Deleted Items"',
    b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
    b'* LIST (\\HasNoChildren \\Junk) "/" "Junk Email"',
    b'* LIST (\\HasNoChildren) "/" Outbox',
    b'* LIST (\\HasNoChildren \\Sent) "/" "Sent Items"',
]


@pytest.fixture
def fresh(request: pytest.FixtureRequest, imap: ImapTestServer) -> Session:
    """A session of a user created for this test, with only the default folders."""
    user = imap.new_user("l-" + re.sub(r"[^a-z0-9]", "", request.node.name.lower())[-40:])
    return imap.login(user)


def test_list_all_default_folders(fresh: Session) -> None:
    assert fresh.ok('LIST "" "*"').untagged == DEFAULT_LIST


def test_list_percent_top_level(fresh: Session) -> None:
    fresh.ok("CREATE Projects/2026")
    assert fresh.ok('LIST "" "%"').untagged == [
        DEFAULT_LIST[0],
        *DEFAULT_LIST[1:4],
        DEFAULT_LIST[4],
        b'* LIST (\\HasChildren) "/" Projects',
        DEFAULT_LIST[5],
    ]
    assert fresh.ok('LIST "" "Projects/%"').untagged == [
        b'* LIST (\\HasNoChildren) "/" Projects/2026'
    ]
    assert fresh.ok('LIST "" "*/2026"').untagged == [b'* LIST (\\HasNoChildren) "/" Projects/2026']


def test_list_reference_is_prepended(fresh: Session) -> None:
    fresh.ok("CREATE Archive/2025/Q1")
    assert fresh.ok('LIST "Archive/" "%"').untagged == [b'* LIST (\\HasChildren) "/" Archive/2025']
    assert fresh.ok('LIST "Archive/" "*"').untagged == [
        b'* LIST (\\HasChildren) "/" Archive/2025',
        b'* LIST (\\HasNoChildren) "/" Archive/2025/Q1',
    ]


def test_list_empty_pattern_gives_delimiter(fresh: Session) -> None:
    reply = fresh.ok('LIST "" ""')
    assert reply.untagged == [b'* LIST (\\Noselect) "/" ""']


def test_list_inbox_any_case(fresh: Session) -> None:
    for pattern in ("inbox", "INBOX", "Inbox"):
        assert fresh.ok(f'LIST "" "{pattern}"').untagged == [DEFAULT_LIST[0]]


def test_list_inbox_children(fresh: Session) -> None:
    fresh.ok("CREATE inbox/Receipts")
    assert fresh.ok('LIST "" "INBOX*"').untagged == [
        b'* LIST (\\HasChildren) "/" INBOX',
        b'* LIST (\\HasNoChildren) "/" INBOX/Receipts',
    ]


def test_list_no_match(fresh: Session) -> None:
    assert fresh.ok('LIST "" "Nothing*"').untagged == []


def test_list_special_use_attributes(fresh: Session) -> None:
    by_name = {line.rsplit(b'"/" ', 1)[1]: line for line in fresh.ok('LIST "" "*"').untagged}
    assert b"\\Sent" in by_name[b'"Sent Items"']
    assert b"\\Trash" in by_name[b'"Deleted Items"']
    assert b"\\Junk" in by_name[b'"Junk Email"']
    assert b"\\Drafts" in by_name[b"Drafts"]
    assert b"\\Sent" not in by_name[b"INBOX"]


def test_list_modified_utf7_names(fresh: Session) -> None:
    # "Grüße" and "日本語" in modified UTF-7 (RFC 3501 §5.1.3).
    fresh.ok('CREATE "Gr&APwA3w-e"')
    fresh.ok('CREATE "&ZeVnLIqe-/Sub"')
    fresh.ok('CREATE "Tom &- Jerry"')
    assert fresh.ok('LIST "" "Gr*"').untagged == [b'* LIST (\\HasNoChildren) "/" Gr&APwA3w-e']
    assert fresh.ok('LIST "" "&ZeVnLIqe-*"').untagged == [
        b'* LIST (\\HasChildren) "/" &ZeVnLIqe-',
        b'* LIST (\\HasNoChildren) "/" &ZeVnLIqe-/Sub',
    ]
    assert fresh.ok('LIST "" "Tom*"').untagged == [b'* LIST (\\HasNoChildren) "/" "Tom &- Jerry"']


def test_list_invalid_modified_utf7_pattern(fresh: Session) -> None:
    fresh.expect('LIST "" "&bad"', "BAD")
    fresh.expect('LIST "&bad/" "%"', "BAD")


def test_list_syntax_errors(fresh: Session) -> None:
    fresh.expect("LIST", "BAD")
    fresh.expect('LIST ""', "BAD")
    fresh.expect('LIST "" "*" extra', "BAD")


def test_list_needs_authentication(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect('LIST "" "*"', "BAD")
    s.expect('LSUB "" "*"', "BAD")


def test_lsub_lists_subscriptions_only(fresh: Session) -> None:
    # Nothing is subscribed for a new mailbox (a choice: some servers subscribe defaults).
    assert fresh.ok('LSUB "" "*"').untagged == []
    fresh.ok("SUBSCRIBE Drafts")
    fresh.ok("CREATE Club/Minutes")
    fresh.ok("SUBSCRIBE Club/Minutes")
    assert fresh.ok('LSUB "" "*"').untagged == [
        b'* LSUB () "/" Club/Minutes',
        b'* LSUB () "/" Drafts',
    ]
    assert fresh.ok('LSUB "" "%"').untagged == [b'* LSUB () "/" Drafts']
    assert fresh.ok('LSUB "Club/" "%"').untagged == [b'* LSUB () "/" Club/Minutes']
