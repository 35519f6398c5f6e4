"""SEARCH and UID SEARCH (RFC 9051 §6.4.4, RFC 3501 §6.4.4) as raw transcripts.

Four messages with known headers, dates, sizes and flags; a fifth was expunged
first, so UIDs (2..5) differ from sequence numbers (1..4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.protocol.imap.conftest import ImapTestServer, Session, append


def msg(headers: str, body: str) -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


M1 = msg(
    """
From: Anna Example <anna@one.test>
To: alice@example.test
Subject: Quarterly report
Date: Mon, 03 Feb 2025 10:00:00 +0000
""",
    "Numbers are up.\r\n",
)
M2 = msg(
    """
From: Bert <bert@two.test>
To: alice@example.test, dave@four.test
Subject: Lunch?
Date: Sat, 15 Mar 2025 09:00:00 +0100
X-Priority: 1
""",
    "Meet at the zebra crossing.\r\n",
)
M3 = msg(
    """
From: news@lists.test
To: list@lists.test
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus Berlin
Date: Tue, 01 Apr 2025 08:00:00 +0000
""",
    "x" * 2000 + "\r\n",
)
M4 = msg(
    """
From: Anna Example <anna@one.test>
To: alice@example.test
Cc: carol@three.test
Subject: Re: Quarterly report
Date: Wed, 02 Apr 2025 18:00:00 +0000
""",
    "Thanks, Anna.\r\n",
)


@pytest.fixture(scope="module")
def box(imap_server: ImapTestServer) -> Iterator[str]:
    s = imap_server.login()
    s.ok("CREATE SearchBox")
    append(s, "SearchBox", b"Subject: placeholder\r\n\r\nx\r\n", r"(\Deleted)")
    append(s, "SearchBox", M1, r'(\Seen) " 3-Feb-2025 12:00:00 +0000"')
    append(s, "SearchBox", M2, r'(\Flagged $Work) "15-Mar-2025 12:00:00 +0000"')
    append(s, "SearchBox", M3, '" 1-Apr-2025 12:00:00 +0000"')
    append(s, "SearchBox", M4, r'(\Answered \Deleted \Seen) " 2-Apr-2025 12:00:00 +0000"')
    s.select("SearchBox")
    s.ok("UID EXPUNGE 1")
    s.close()
    yield "SearchBox"


@pytest.fixture
def ro(imap: ImapTestServer, box: str) -> Session:
    s = imap.login()
    s.select(box, examine=True)
    return s


def search(s: Session, criteria: str | bytes) -> list[int]:
    if isinstance(criteria, str):
        criteria = criteria.encode()
    reply = s.ok(b"SEARCH " + criteria)
    assert len(reply.untagged) == 1 and reply.untagged[0].startswith(b"* SEARCH"), str(reply)
    return [int(n) for n in reply.untagged[0].split()[2:]]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", [1, 2, 3, 4]),
        ("SEEN", [1, 4]),
        ("UNSEEN", [2, 3]),
        ("FLAGGED", [2]),
        ("UNFLAGGED", [1, 3, 4]),
        ("ANSWERED", [4]),
        ("UNANSWERED", [1, 2, 3]),
        ("DELETED", [4]),
        ("UNDELETED", [1, 2, 3]),
        ("DRAFT", []),
        ("UNDRAFT", [1, 2, 3, 4]),
        ("KEYWORD $Work", [2]),
        ("KEYWORD $work", [2]),
        ("UNKEYWORD $Work", [1, 3, 4]),
        ("RECENT", []),  # this server never reports \Recent (RFC 3501 allows it)
        ("NEW", []),
        ("OLD", [1, 2, 3, 4]),
        ("LARGER 1000", [3]),
        ("SMALLER 1000", [1, 2, 4]),
        (f"LARGER {len(M1)}", [2, 3, 4]),  # strictly larger
        (f"SMALLER {len(M1)}", []),
        ("SINCE 15-Mar-2025", [2, 3, 4]),
        ("BEFORE 15-Mar-2025", [1]),
        ("ON 15-Mar-2025", [2]),
        ('ON "1-Apr-2025"', [3]),
        ("SENTSINCE 1-Apr-2025", [3, 4]),
        ("SENTBEFORE 15-Mar-2025", [1]),
        ("SENTON 15-Mar-2025", [2]),  # the Date: header's own day (+0100)
        ("FROM anna", [1, 4]),
        ("FROM ANNA", [1, 4]),
        ('FROM "Anna Example"', [1, 4]),
        ("FROM two.test", [2]),
        ("TO dave@four.test", [2]),
        ("TO alice", [1, 2, 4]),
        ("CC carol", [4]),
        ("BCC anyone", []),
        ("SUBJECT quarterly", [1, 4]),
        ('SUBJECT "Re: Quarterly"', [4]),
        ("SUBJECT berlin", [3]),
        ("HEADER X-Priority 1", [2]),
        ('HEADER X-Priority ""', [2]),  # an empty string: messages that have the field
        ('HEADER Date "Apr 2025"', [3, 4]),
        ("BODY zebra", [2]),
        ("BODY Lunch", []),  # BODY is the body only
        ("TEXT Lunch", [2]),  # TEXT is header and body
        ("TEXT zebra", [2]),
        ("2:3", [2, 3]),
        ("*", [4]),
        ("2,4", [2, 4]),
        ("UID 3:*", [2, 3, 4]),
        ("UID 1", []),  # the expunged one
        ("UID 100:*", [4]),  # "*" is the highest UID
        ("OR FLAGGED ANSWERED", [2, 4]),
        ("NOT SEEN", [2, 3]),
        ("NOT NOT SEEN", [1, 4]),
        ("FROM anna UNSEEN", []),
        ("FROM anna SEEN NOT DELETED", [1]),
        ("OR (FROM anna DELETED) (LARGER 1000)", [3, 4]),
        ("NOT (OR FLAGGED (OR ANSWERED LARGER 1000))", [1]),
        ("OR OR FLAGGED ANSWERED OR SEEN DELETED", [1, 2, 4]),
        ("(SINCE 1-Apr-2025) (NOT 4)", [3]),
    ],
)
def test_search_keys(ro: Session, criteria: str, expected: list[int]) -> None:
    assert search(ro, criteria) == expected


def test_uid_search_returns_uids(ro: Session) -> None:
    assert ro.ok("UID SEARCH ALL").untagged == [b"* SEARCH 2 3 4 5"]
    assert ro.ok("UID SEARCH FLAGGED").untagged == [b"* SEARCH 3"]
    assert ro.ok("UID SEARCH 1:2").untagged == [b"* SEARCH 2 3"]  # sequence numbers 1:2
    assert ro.ok("UID SEARCH UID 4:5").untagged == [b"* SEARCH 4 5"]


def test_search_no_match_is_empty_search(ro: Session) -> None:
    assert ro.ok("SEARCH SUBJECT nothing-like-this").untagged == [b"* SEARCH"]


def test_search_charset_utf8(ro: Session) -> None:
    # "Grüße" as a LITERAL+ literal: the =?UTF-8?Q?...?= subject is decoded for the match.
    word = "Grüße".encode()
    assert search(ro, b"CHARSET UTF-8 SUBJECT {%d+}\r\n%s" % (len(word), word)) == [3]
    assert search(ro, b'CHARSET utf-8 SUBJECT "aus"') == [3]
    assert search(ro, b"CHARSET US-ASCII FROM bert") == [2]


def test_search_unknown_charset(ro: Session) -> None:
    reply = ro.expect("SEARCH CHARSET KOI8-R SUBJECT x", "NO", "BADCHARSET")
    assert reply.untagged == []
    # RFC 9051 §7.1: BADCHARSET may list the supported charsets.
    assert reply.code is not None and "UTF-8" in reply.code


def test_search_bad_syntax(imap: ImapTestServer, box: str) -> None:
    s = imap.login()
    s.select(box, examine=True)
    for n, criteria in enumerate(
        (
            "",
            "BOGUS",
            "FROM",
            "SINCE yesterday",
            "SINCE 31-Feb-2025",
            "LARGER x",
            "OR SEEN",
            "(SEEN",
            "SEEN)",
            "0",
            "UID 0",
            "CHARSET",
            "(" * 40 + "ALL" + ")" * 40,  # nesting is bounded
        )
    ):
        if n % 8 == 7:  # a new session before the bad-command limit closes this one
            s = imap.login()
            s.select(box, examine=True)
        reply = s.expect(f"SEARCH {criteria}".rstrip(), "BAD")
        assert reply.untagged == [], criteria


def test_search_needs_selected_mailbox(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect("SEARCH ALL", "BAD")
    s.expect("UID SEARCH ALL", "BAD")
