"""FETCH and UID FETCH (RFC 9051 §6.4.5, §6.4.9, RFC 3501 §6.4.5) as raw transcripts.

The messages are APPENDed with known bytes and dates, so sizes, sections and
structures can be compared octet for octet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.protocol.imap.conftest import ImapTestServer, Session, append

SIMPLE = (
    b"From: Anna Example <anna@one.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Cc: Bert <bert@two.test>, carol@three.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 03 Feb 2025 10:00:00 +0000\r\n"
    b"Message-ID: <q1@one.test>\r\n"
    b"\r\n"
    b"Numbers are up.\r\n"
    b"Second line.\r\n"
)
SIMPLE_HEADER, SIMPLE_TEXT = SIMPLE.split(b"\r\n\r\n", 1)
SIMPLE_HEADER += b"\r\n\r\n"

PARTS = (
    b"From: Carol <carol@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: parts\r\n"
    b"Date: Tue, 04 Feb 2025 11:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Part one.\r\n"
    b"--XX\r\n"
    b'Content-Type: application/octet-stream; name="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="a.bin"\r\n'
    b"\r\n"
    b"AQJiaW5hcnk=\r\n"
    b"--XX--\r\n"
)
PART2_MIME = (
    b'Content-Type: application/octet-stream; name="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="a.bin"\r\n'
    b"\r\n"
)
THIRD = b"Subject: third\r\n\r\nshort\r\n"


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n%s" % (len(data), data)


@pytest.fixture(scope="module")
def box(imap_server: ImapTestServer) -> Iterator[str]:
    """Folder "FetchBox": SIMPLE (\\Flagged), PARTS, THIRD; examined, never changed."""
    s = imap_server.login()
    s.ok("CREATE FetchBox")
    append(s, "FetchBox", SIMPLE, r'(\Flagged) " 3-Feb-2025 12:00:00 +0000"')
    append(s, "FetchBox", PARTS, '"14-Feb-2025 23:59:59 +0000"')
    append(s, "FetchBox", THIRD)
    s.close()
    yield "FetchBox"


@pytest.fixture
def ro(imap: ImapTestServer, box: str) -> Session:
    s = imap.login()
    s.select(box, examine=True)
    return s


def fetch1(s: Session, text: str) -> bytes:
    reply = s.ok(text)
    assert len(reply.untagged) == 1, str(reply)
    return reply.untagged[0]


def test_fetch_flags_uid_size_date(ro: Session) -> None:
    assert fetch1(ro, "FETCH 1 (FLAGS UID RFC822.SIZE INTERNALDATE)") == (
        b'* 1 FETCH (FLAGS (\\Flagged) UID 1 RFC822.SIZE %d INTERNALDATE " 3-Feb-2025 12:00:00'
        b' +0000")' % len(SIMPLE)
    )


def test_internaldate_day_is_space_padded(ro: Session) -> None:
    ro.ok("NOOP")
    line = fetch1(ro, "FETCH 1 INTERNALDATE")
    # date-day-fixed (RFC 9051 §9): " 3-Feb-2025", not "03-Feb-2025".
    assert line == b'* 1 FETCH (INTERNALDATE " 3-Feb-2025 12:00:00 +0000")'


def test_fetch_envelope(ro: Session) -> None:
    assert fetch1(ro, "FETCH 1 ENVELOPE") == (
        b'* 1 FETCH (ENVELOPE ("Mon, 03 Feb 2025 10:00:00 +0000" "Quarterly report" '
        b'(("Anna Example" NIL "anna" "one.test")) '
        b'(("Anna Example" NIL "anna" "one.test")) '
        b'(("Anna Example" NIL "anna" "one.test")) '
        b'((NIL NIL "alice" "example.test")) '
        b'(("Bert" NIL "bert" "two.test")(NIL NIL "carol" "three.test")) '
        b'NIL NIL "<q1@one.test>"))'
    )


def test_fetch_envelope_missing_fields(ro: Session) -> None:
    assert fetch1(ro, "FETCH 3 ENVELOPE") == (
        b'* 3 FETCH (ENVELOPE (NIL "third" NIL NIL NIL NIL NIL NIL NIL NIL))'
    )


def test_fetch_bodystructure_single_part(ro: Session) -> None:
    # No Content-Type: text/plain; charset us-ascii (RFC 2045 §5.2); 2 lines, 31 octets.
    assert fetch1(ro, "FETCH 1 (BODYSTRUCTURE BODY)") == (
        b'* 1 FETCH (BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 31 2'
        b' NIL NIL NIL NIL) BODY ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 31 2))'
    )


def test_fetch_bodystructure_multipart(ro: Session) -> None:
    assert fetch1(ro, "FETCH 2 (BODYSTRUCTURE BODY)") == (
        b"* 2 FETCH (BODYSTRUCTURE ("
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 9 1 NIL NIL NIL NIL)'
        b'("APPLICATION" "OCTET-STREAM" ("NAME" "a.bin") NIL NIL "BASE64" 12 NIL'
        b' ("ATTACHMENT" ("FILENAME" "a.bin")) NIL NIL)'
        b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)'
        b" BODY ("
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 9 1)'
        b'("APPLICATION" "OCTET-STREAM" ("NAME" "a.bin") NIL NIL "BASE64" 12)'
        b' "MIXED"))'
    )


def test_fetch_whole_message_and_parts(ro: Session) -> None:
    assert fetch1(ro, "FETCH 1 BODY.PEEK[]") == b"* 1 FETCH (BODY[] " + lit(SIMPLE) + b")"
    assert fetch1(ro, "FETCH 1 BODY.PEEK[HEADER]") == (
        b"* 1 FETCH (BODY[HEADER] " + lit(SIMPLE_HEADER) + b")"
    )
    assert fetch1(ro, "FETCH 1 BODY.PEEK[TEXT]") == (
        b"* 1 FETCH (BODY[TEXT] " + lit(SIMPLE_TEXT) + b")"
    )
    # BODY[1] of a single-part message is its body (RFC 9051 §6.4.5).
    assert fetch1(ro, "FETCH 1 BODY.PEEK[1]") == b"* 1 FETCH (BODY[1] " + lit(SIMPLE_TEXT) + b")"


def test_fetch_multipart_sections(ro: Session) -> None:
    assert fetch1(ro, "FETCH 2 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME])") == (
        b"* 2 FETCH (BODY[1] "
        + lit(b"Part one.")  # the CRLF before the boundary belongs to the boundary
        + b" BODY[2] "
        + lit(b"AQJiaW5hcnk=")
        + b" BODY[2.MIME] "
        + lit(PART2_MIME)
        + b")"
    )


def test_fetch_nonexistent_part_is_nil(ro: Session) -> None:
    # A choice: RFC 9051 does not say; NIL (as Cyrus does) rather than an error.
    assert fetch1(ro, "FETCH 2 BODY.PEEK[3]") == b"* 2 FETCH (BODY[3] NIL)"


def test_fetch_header_fields(ro: Session) -> None:
    # The field names are echoed as sent; the fields come in message order; then CRLF.
    assert fetch1(ro, "FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject FROM)]") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (Subject FROM)] "
        + lit(
            b"From: Anna Example <anna@one.test>\r\nSubject: Quarterly report\r\n\r\n",
        )
        + b")"
    )
    assert fetch1(ro, "FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (From To Cc Subject Date)]") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (From To Cc Subject Date)] "
        + lit(b"Message-ID: <q1@one.test>\r\n\r\n")
        + b")"
    )
    assert fetch1(ro, "FETCH 3 BODY.PEEK[HEADER.FIELDS (X-None)]") == (
        b"* 3 FETCH (BODY[HEADER.FIELDS (X-None)] " + lit(b"\r\n") + b")"
    )


def test_fetch_partial(ro: Session) -> None:
    assert fetch1(ro, "FETCH 1 BODY.PEEK[]<0.10>") == (
        b"* 1 FETCH (BODY[]<0> " + lit(SIMPLE[:10]) + b")"
    )
    assert fetch1(ro, "FETCH 1 BODY.PEEK[TEXT]<8.7>") == (
        b"* 1 FETCH (BODY[TEXT]<8> " + lit(b"are up.") + b")"
    )
    # Past the end: an empty string (RFC 9051 §6.4.5).
    assert fetch1(ro, "FETCH 1 BODY.PEEK[]<100000.10>") == b"* 1 FETCH (BODY[]<100000> {0}\r\n)"


def test_fetch_rfc822_items(ro: Session) -> None:
    assert fetch1(ro, "FETCH 1 (RFC822.HEADER RFC822.TEXT RFC822)") == (
        b"* 1 FETCH (RFC822.HEADER "
        + lit(SIMPLE_HEADER)
        + b" RFC822.TEXT "
        + lit(SIMPLE_TEXT)
        + b" RFC822 "
        + lit(SIMPLE)
        + b")"
    )


def test_fetch_macros(ro: Session) -> None:
    fast = fetch1(ro, "FETCH 3 FAST")
    assert fast.startswith(b"* 3 FETCH (FLAGS () INTERNALDATE ")
    assert fast.endswith(b" RFC822.SIZE %d)" % len(THIRD))
    assert b" ENVELOPE (" in fetch1(ro, "FETCH 3 ALL")
    full = fetch1(ro, "FETCH 3 FULL")
    assert b" ENVELOPE (" in full and b" BODY (" in full


def test_fetch_sequence_sets(ro: Session) -> None:
    def uids(text: str) -> list[bytes]:
        return ro.ok(text).untagged

    assert uids("FETCH * UID") == [b"* 3 FETCH (UID 3)"]
    assert uids("FETCH 2:* UID") == [b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)"]
    assert uids("FETCH 3:1 UID") == [
        b"* 1 FETCH (UID 1)",
        b"* 2 FETCH (UID 2)",
        b"* 3 FETCH (UID 3)",
    ]
    assert uids("FETCH 3,1 UID") == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"]
    assert uids("FETCH 1,1:2 UID") == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)"]


def test_uid_fetch_always_includes_uid(ro: Session) -> None:
    assert ro.ok("UID FETCH 2 FLAGS").untagged == [b"* 2 FETCH (UID 2 FLAGS ())"]
    assert ro.ok("UID FETCH 1:* RFC822.SIZE").untagged == [
        b"* 1 FETCH (UID 1 RFC822.SIZE %d)" % len(SIMPLE),
        b"* 2 FETCH (UID 2 RFC822.SIZE %d)" % len(PARTS),
        b"* 3 FETCH (UID 3 RFC822.SIZE %d)" % len(THIRD),
    ]


def test_uid_fetch_ranges(ro: Session) -> None:
    # "n:*" always includes the highest UID, even past it (RFC 9051 §6.4.9).
    assert ro.ok("UID FETCH 100:* UID").untagged == [b"* 3 FETCH (UID 3)"]
    assert ro.ok("UID FETCH * UID").untagged == [b"* 3 FETCH (UID 3)"]
    # UIDs that do not exist are ignored, not an error.
    assert ro.ok("UID FETCH 50:60 UID").untagged == []
    assert ro.ok("UID FETCH 2,40 UID").untagged == [b"* 2 FETCH (UID 2)"]


def test_invalid_sequence_numbers_are_bad(ro: Session) -> None:
    for seq in ("4", "2:4", "0", "1:0", "-1", "a", "1.5", "4294967296", "1,,2"):
        reply = ro.expect(f"FETCH {seq} UID", "BAD")
        assert reply.untagged == [], seq


def test_fetch_syntax_errors(ro: Session) -> None:
    for text in (
        "FETCH 1",
        "FETCH 1 ()",
        "FETCH 1 (BOGUS)",
        "FETCH 1 BODY[",
        "FETCH 1 BODY[0]",
        "FETCH 1 BODY[MIME]",  # MIME needs a part number
        "FETCH 1 BODY[HEADER.FIELDS ()]",
        "FETCH 1 BODY[]<0.0>",
        "FETCH 1 (FLAGS",
    ):
        reply = ro.expect(text, "BAD")
        assert reply.untagged == [], text


def test_fetch_needs_selected_mailbox(imap: ImapTestServer) -> None:
    s = imap.connect()
    s.expect("FETCH 1 FLAGS", "BAD")
    s.login()
    s.expect("FETCH 1 FLAGS", "BAD")
    s.expect("UID FETCH 1 FLAGS", "BAD")


def test_seen_set_by_body_not_by_peek(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    for _ in range(5):
        append(s, folder, THIRD)
    s.select(folder)
    # PEEK, RFC822.HEADER and the structure items leave \Seen alone.
    s.ok("FETCH 1:5 (BODY.PEEK[] RFC822.HEADER BODYSTRUCTURE ENVELOPE RFC822.SIZE)")
    assert s.ok("SEARCH SEEN").untagged == [b"* SEARCH"]
    # BODY[] sets \Seen and reports it with an added FLAGS item.
    assert fetch1(s, "FETCH 1 BODY[]") == b"* 1 FETCH (BODY[] " + lit(THIRD) + b" FLAGS (\\Seen))"
    # With FLAGS asked for, that item carries the new flags.
    assert fetch1(s, "FETCH 2 (FLAGS BODY[TEXT])") == (
        b"* 2 FETCH (FLAGS (\\Seen) BODY[TEXT] " + lit(b"short\r\n") + b")"
    )
    assert fetch1(s, "FETCH 3 RFC822") == b"* 3 FETCH (RFC822 " + lit(THIRD) + b" FLAGS (\\Seen))"
    assert fetch1(s, "FETCH 4 RFC822.TEXT") == (
        b"* 4 FETCH (RFC822.TEXT " + lit(b"short\r\n") + b" FLAGS (\\Seen))"
    )
    # Already seen: no extra FLAGS item.
    assert fetch1(s, "FETCH 1 BODY[]<0.7>") == b"* 1 FETCH (BODY[]<0> " + lit(THIRD[:7]) + b")"
    assert s.ok("SEARCH UNSEEN").untagged == [b"* SEARCH 5"]


def test_examine_never_sets_seen(ro: Session) -> None:
    ro.ok("FETCH 1:3 (BODY[] RFC822 RFC822.TEXT)")
    assert ro.ok("FETCH 1:3 FLAGS").untagged == [
        b"* 1 FETCH (FLAGS (\\Flagged))",
        b"* 2 FETCH (FLAGS ())",
        b"* 3 FETCH (FLAGS ())",
    ]
