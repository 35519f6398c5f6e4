"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and STATUS=SIZE (RFC 8438)
as raw transcripts against the real service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_imap_condstore import Raw
from tests.integration.test_imap_service import ImapServer, imap  # noqa: F401 (fixture)


@pytest.fixture
def session(request: pytest.FixtureRequest) -> Iterator[Raw]:
    server: ImapServer = request.getfixturevalue("imap")
    a = Raw(server)
    yield a
    a.close()


def test_capabilities(session: Raw) -> None:
    caps = session.ok("CAPABILITY")[0].split()
    assert {"LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE"} <= set(caps)


def test_list_subscribed_selection_and_return(session: Raw) -> None:
    a = session
    a.ok("CREATE Projects/Alpha")
    a.ok("CREATE Projects/Beta")
    a.ok("SUBSCRIBE Projects/Alpha")
    a.ok("SUBSCRIBE Gone")  # subscribed, never created
    a.ok("SUBSCRIBE INBOX")
    lines = a.ok('LIST (SUBSCRIBED) "" "*"')
    assert lines[:-1] == [
        '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        '* LIST (\\NonExistent \\Subscribed) "/" Gone',
        '* LIST (\\HasNoChildren \\Subscribed) "/" Projects/Alpha',
    ]
    # RECURSIVEMATCH: Projects is not subscribed but has a subscribed child.
    lines = a.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert '* LIST (\\HasChildren) "/" Projects ("CHILDINFO" ("SUBSCRIBED"))' in lines
    assert not any(line.endswith(" Projects/Alpha") for line in lines)
    # RETURN (SUBSCRIBED) marks without filtering.
    lines = a.ok('LIST "" "Projects/*" RETURN (SUBSCRIBED CHILDREN)')
    assert lines[:-1] == [
        '* LIST (\\HasNoChildren \\Subscribed) "/" Projects/Alpha',
        '* LIST (\\HasNoChildren) "/" Projects/Beta',
    ]
    # Several patterns at once.
    lines = a.ok('LIST "" ("Projects/Beta" "INBOX")')
    assert [line.rsplit(" ", 1)[1] for line in lines[:-1]] == ["INBOX", "Projects/Beta"]


def test_list_special_use_selection(session: Raw) -> None:
    lines = session.ok('LIST (SPECIAL-USE) "" "*"')
    uses = sorted(line.split("(")[1].split(")")[0].split()[1] for line in lines[:-1])
    assert uses == ["\\Drafts", "\\Junk", "\\Sent", "\\Trash"]


def test_list_status(session: Raw) -> None:
    a = session
    lines = a.ok('LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN SIZE UIDNEXT))')
    assert lines[0] == '* LIST (\\HasNoChildren) "/" INBOX'
    assert lines[1].startswith("* STATUS INBOX (MESSAGES 3 UNSEEN 3 SIZE ")
    assert lines[1].endswith(" UIDNEXT 4)")
    size = int(lines[1].split("SIZE ")[1].split()[0])
    assert size > 100
    status = a.ok("STATUS INBOX (SIZE)")[0]
    assert status == f"* STATUS INBOX (SIZE {size})"


def test_list_extended_errors(session: Raw) -> None:
    a = session
    assert a.cmd('LIST (RECURSIVEMATCH) "" "*"')[-1].startswith(f"t{a.n} BAD")
    assert a.cmd('LIST (BOGUS) "" "*"')[-1].startswith(f"t{a.n} BAD")
    assert a.cmd('LIST "" "*" RETURN (BOGUS)')[-1].startswith(f"t{a.n} BAD")
    assert a.ok('LIST "" ""')[0] == '* LIST (\\Noselect) "/" ""'
