"""Parser tables for postwerk.protocols.imap.parser: command pieces in, command or rejection out."""

from __future__ import annotations

import datetime
import re

import pytest

from postwerk.protocols.imap import (
    MAX_SEARCH_DEPTH,
    Append,
    Authenticate,
    BinarySection,
    BinarySize,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    CommandRejected,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    FetchItem,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    QResync,
    Rename,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSequence,
    SearchSize,
    SearchText,
    Section,
    SectionText,
    Select,
    SequenceSet,
    SetQuota,
    StartTls,
    Status,
    Store,
    StoreMode,
    Subscribe,
    UidExpunge,
    Unselect,
    Unsubscribe,
    parse_command,
    parse_tag,
)

_ANNOUNCE = re.compile(rb"~?\{([0-9]+)\+?\}\Z")


def pieces(wire: bytes) -> list[bytes]:
    """Split a command written as on the wire (CRLF after each literal announcement)."""
    out: list[bytes] = []
    rest = wire
    while True:
        line, sep, after = rest.partition(b"\r\n")
        m = _ANNOUNCE.search(line)
        if not sep or m is None:
            out.append(rest)
            return out
        size = int(m.group(1))
        out += [line, after[:size]]
        rest = after[size:]


def parse(wire: bytes) -> Command | CommandRejected:
    return parse_command(pieces(wire))


def seq(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


ONE = seq((1, 1))
ALL_SET = seq((1, None))
SAVED = SequenceSet(saved=True)

VALID: list[tuple[bytes, Command]] = [
    # any state
    (b"a1 CAPABILITY", Capability("a1")),
    (b"a1 capability", Capability("a1")),
    (b"a1 NOOP", Noop("a1")),
    (b"a1 NOOP  ", Noop("a1")),  # trailing spaces tolerated
    (b"a1 LOGOUT", Logout("a1")),
    (b"a] NOOP", Noop("a]")),  # "]" is an ASTRING-CHAR, so it may be in a tag
    (b"A.B-c_9 NOOP", Noop("A.B-c_9")),
    (b"a ID NIL", Id("a", None)),
    (b"a ID ()", Id("a", {})),
    (
        b'a ID ("name" "Thunderbird" "version" NIL)',
        Id("a", {"name": "Thunderbird", "version": None}),
    ),
    (b'a ID ({4}\r\nname "x")', Id("a", {"name": "x"})),
    # not authenticated
    (b"a STARTTLS", StartTls("a")),
    (b"a AUTHENTICATE PLAIN", Authenticate("a", "PLAIN")),
    (b"a authenticate plain dGVzdA==", Authenticate("a", "PLAIN", "dGVzdA==")),
    (b"a AUTHENTICATE EXTERNAL =", Authenticate("a", "EXTERNAL", "=")),
    (b"a AUTHENTICATE SCRAM-SHA-256", Authenticate("a", "SCRAM-SHA-256")),
    (b"a LOGIN alice secret", Login("a", "alice", "secret")),
    (b'a LOGIN "alice" "s e\\"c\\\\r]"', Login("a", "alice", 's e"c\\r]')),
    (b"a LOGIN alice pa]ss", Login("a", "alice", "pa]ss")),
    (b"a LOGIN {5}\r\nalice {6+}\r\nsecret", Login("a", "alice", "secret")),
    (b'a LOGIN "" ""', Login("a", "", "")),
    ('a LOGIN "jürgen" "pässwörd"'.encode(), Login("a", "jürgen", "pässwörd")),
    ("a LOGIN {7}\r\njürgen x".encode(), Login("a", "jürgen", "x")),
    # authenticated
    (b"a ENABLE condstore QRESYNC", Enable("a", ("CONDSTORE", "QRESYNC"))),
    (b"a ENABLE UTF8=ACCEPT", Enable("a", ("UTF8=ACCEPT",))),
    (b"a SELECT INBOX", Select("a", "INBOX")),
    (b"a SELECT inbox", Select("a", "INBOX")),
    (b'a SELECT "InBoX"', Select("a", "INBOX")),
    (b"a SELECT INBOX.Sent", Select("a", "INBOX.Sent")),
    (b"a SELECT Archive", Select("a", "Archive")),
    ('a SELECT "ınbox"'.encode(), Select("a", "ınbox")),  # not INBOX: ASCII only
    (b'a SELECT "&AMQ-pfel"', Select("a", "&AMQ-pfel")),  # mUTF-7 stays encoded
    ('a SELECT "Äpfel"'.encode(), Select("a", "Äpfel")),
    (b"a SELECT {4}\r\nWork", Select("a", "Work")),
    (b"a SELECT INBOX (CONDSTORE)", Select("a", "INBOX", condstore=True)),
    (
        b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        Select(
            "a",
            "INBOX",
            qresync=QResync(67890007, 20050715194045000, seq((41, 41), (43, 211), (214, 541))),
        ),
    ),
    (
        b"a SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211 (1:3,5 10:12,20)))",
        Select(
            "a",
            "INBOX",
            qresync=QResync(
                67890007,
                90060115194045000,
                seq((41, 211)),
                (seq((1, 3), (5, 5)), seq((10, 12), (20, 20))),
            ),
        ),
    ),
    (
        b"a SELECT INBOX (QRESYNC (1 2 (1 5)) CONDSTORE)",
        Select("a", "INBOX", True, QResync(1, 2, None, (ONE, seq((5, 5))))),
    ),
    (b"a SELECT INBOX (QRESYNC (1 2))", Select("a", "INBOX", qresync=QResync(1, 2))),
    (b"a EXAMINE Drafts", Examine("a", "Drafts")),
    (b"a EXAMINE INBOX (CONDSTORE)", Examine("a", "INBOX", condstore=True)),
    (b"a CREATE Projects/2024", Create("a", "Projects/2024")),
    (
        b"a CREATE MySpecial (USE (\\drafts \\Sent \\X-Other))",
        Create("a", "MySpecial", ("\\Drafts", "\\Sent", "\\X-Other")),
    ),
    (b"a DELETE foo", Delete("a", "foo")),
    (b"a RENAME foo bar", Rename("a", "foo", "bar")),
    (b'a RENAME "a b" inbox', Rename("a", "a b", "INBOX")),
    (b"a SUBSCRIBE foo", Subscribe("a", "foo")),
    (b"a UNSUBSCRIBE foo", Unsubscribe("a", "foo")),
    (b'a LIST "" *', List("a", "", ("*",))),
    (b'a LIST "" ""', List("a", "", ("",))),
    (b"a LIST ~/Mail/ %", List("a", "~/Mail/", ("%",))),
    (b'a LIST "" INBOX.%.*]', List("a", "", ("INBOX.%.*]",))),
    (b'a LIST "" {1}\r\n*', List("a", "", ("*",))),
    (
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" %)',
        List("a", "", ("INBOX", "%"), ("SUBSCRIBED", "RECURSIVEMATCH")),
    ),
    (b'a LIST (special-use) "" *', List("a", "", ("*",), ("SPECIAL-USE",))),
    (b'a LIST () "" *', List("a", "", ("*",))),
    (
        b'a LIST "" % RETURN (CHILDREN SUBSCRIBED SPECIAL-USE)',
        List("a", "", ("%",), (), ("CHILDREN", "SUBSCRIBED", "SPECIAL-USE")),
    ),
    (
        b'a LIST "" % RETURN (STATUS (MESSAGES UNSEEN))',
        List("a", "", ("%",), (), ("STATUS",), ("MESSAGES", "UNSEEN")),
    ),
    (b'a LIST "" % RETURN ()', List("a", "", ("%",))),
    (b'a LSUB "" *', Lsub("a", "", "*")),
    (b"a NAMESPACE", Namespace("a")),
    (b"a STATUS INBOX (MESSAGES)", Status("a", "INBOX", ("MESSAGES",))),
    (
        b"a STATUS blurdybloop (uidnext UIDVALIDITY UNSEEN DELETED SIZE RECENT"
        b" HIGHESTMODSEQ APPENDLIMIT MESSAGES)",
        Status(
            "a",
            "blurdybloop",
            (
                "UIDNEXT",
                "UIDVALIDITY",
                "UNSEEN",
                "DELETED",
                "SIZE",
                "RECENT",
                "HIGHESTMODSEQ",
                "APPENDLIMIT",
                "MESSAGES",
            ),
        ),
    ),
    (b"a APPEND INBOX {5}\r\nhello", Append("a", "INBOX", b"hello")),
    (b"a APPEND INBOX {0}\r\n", Append("a", "INBOX", b"")),
    (b"a APPEND INBOX {5+}\r\nhello", Append("a", "INBOX", b"hello")),
    (b"a APPEND INBOX ~{3}\r\na\x00b", Append("a", "INBOX", b"a\x00b", binary=True)),
    (b"a APPEND INBOX () {1}\r\nx", Append("a", "INBOX", b"x")),
    (
        b"a APPEND Sent (\\seen $MDNSent \\Draft) {1}\r\nx",
        Append("a", "Sent", b"x", ("\\Seen", "$MDNSent", "\\Draft")),
    ),
    (
        b'a APPEND saved-messages (\\Seen) "07-Feb-1994 21:52:25 -0800" {2}\r\nhi',
        Append(
            "a",
            "saved-messages",
            b"hi",
            ("\\Seen",),
            datetime.datetime(
                1994, 2, 7, 21, 52, 25, tzinfo=datetime.timezone(datetime.timedelta(hours=-8))
            ),
        ),
    ),
    (
        b'a APPEND x " 7-feb-1994 21:52:25 +0130" {1}\r\nx',
        Append(
            "a",
            "x",
            b"x",
            (),
            datetime.datetime(
                1994, 2, 7, 21, 52, 25, tzinfo=datetime.timezone(datetime.timedelta(minutes=90))
            ),
        ),
    ),
    (b"a APPEND INBOX {4}\r\n\r\n\r\n", Append("a", "INBOX", b"\r\n\r\n")),
    (b"a IDLE", Idle("a")),
    (b'a GETQUOTA ""', GetQuota("a", "")),
    (b"a GETQUOTAROOT inbox", GetQuotaRoot("a", "INBOX")),
    (
        b'a SETQUOTA "" (storage 512 MESSAGE 1000)',
        SetQuota("a", "", (("STORAGE", 512), ("MESSAGE", 1000))),
    ),
    (b"a SETQUOTA root ()", SetQuota("a", "root", ())),
    (b"a COMPRESS deflate", Compress("a", "DEFLATE")),
    # selected
    (b"a CHECK", Check("a")),
    (b"a CLOSE", Close("a")),
    (b"a UNSELECT", Unselect("a")),
    (b"a EXPUNGE", Expunge("a")),
    (b"a UID EXPUNGE 3000:3002", UidExpunge("a", seq((3000, 3002)))),
    (b"a uid expunge $", UidExpunge("a", SAVED)),
    (b"a COPY 2:4 MEETING", Copy("a", seq((2, 4)), "MEETING")),
    (b"a UID COPY 1:* inbox", Copy("a", ALL_SET, "INBOX", uid=True)),
    (b"a MOVE $ Trash", Move("a", SAVED, "Trash")),
    (b'a UID MOVE 42 "Deleted Items"', Move("a", seq((42, 42)), "Deleted Items", uid=True)),
    # STORE
    (
        b"a STORE 2:4 +FLAGS (\\Deleted)",
        Store("a", seq((2, 4)), StoreMode.ADD, ("\\Deleted",)),
    ),
    (
        b"a STORE 1 -FLAGS.SILENT (\\SEEN $Junk)",
        Store("a", ONE, StoreMode.REMOVE, ("\\Seen", "$Junk"), silent=True),
    ),
    (b"a STORE 1 FLAGS ()", Store("a", ONE, StoreMode.REPLACE, ())),
    (
        b"a STORE 1 flags \\Answered \\Flagged",
        Store("a", ONE, StoreMode.REPLACE, ("\\Answered", "\\Flagged")),
    ),
    (
        b"a UID STORE 1:* (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
        Store("a", ALL_SET, StoreMode.ADD, ("\\Deleted",), True, 320162338, True),
    ),
    (
        b"a STORE 7 (unchangedsince 0) FLAGS (\\Seen)",
        Store("a", seq((7, 7)), StoreMode.REPLACE, ("\\Seen",), unchanged_since=0),
    ),
    # FETCH
    (b"a FETCH 1 FLAGS", Fetch("a", ONE, (FetchItem.FLAGS,))),
    (
        b"a FETCH 1 ALL",
        Fetch(
            "a",
            ONE,
            (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.ENVELOPE),
        ),
    ),
    (
        b"a FETCH 1 fast",
        Fetch("a", ONE, (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE)),
    ),
    (
        b"a FETCH 1 FULL",
        Fetch(
            "a",
            ONE,
            (
                FetchItem.FLAGS,
                FetchItem.INTERNALDATE,
                FetchItem.RFC822_SIZE,
                FetchItem.ENVELOPE,
                FetchItem.BODY,
            ),
        ),
    ),
    (
        b"a UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        Fetch("a", ALL_SET, (FetchItem.UID, FetchItem.FLAGS), 12345, True, True),
    ),
    (
        b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 0)",
        Fetch("a", ALL_SET, (FetchItem.FLAGS,), changed_since=0),
    ),
]

# Every FETCH attribute form: (text, attribute).
FETCH_ATTRIBUTES: list[tuple[bytes, FetchAttribute]] = [
    (b"FLAGS", FetchItem.FLAGS),
    (b"uid", FetchItem.UID),
    (b"INTERNALDATE", FetchItem.INTERNALDATE),
    (b"RFC822.SIZE", FetchItem.RFC822_SIZE),
    (b"ENVELOPE", FetchItem.ENVELOPE),
    (b"BODY", FetchItem.BODY),
    (b"BODYSTRUCTURE", FetchItem.BODYSTRUCTURE),
    (b"RFC822", FetchItem.RFC822),
    (b"RFC822.HEADER", FetchItem.RFC822_HEADER),
    (b"rfc822.text", FetchItem.RFC822_TEXT),
    (b"MODSEQ", FetchItem.MODSEQ),
    (b"SAVEDATE", FetchItem.SAVEDATE),
    (b"BODY[]", BodySection()),
    (b"body.peek[]", BodySection(peek=True)),
    (b"BODY[]<0.2048>", BodySection(partial=(0, 2048))),
    (b"BODY.PEEK[]<100.4294967295>", BodySection(peek=True, partial=(100, 4294967295))),
    (b"BODY[HEADER]", BodySection(Section(text=SectionText.HEADER))),
    (b"BODY[text]", BodySection(Section(text=SectionText.TEXT))),
    (b"BODY[1]", BodySection(Section((1,)))),
    (b"BODY[1.2.3]", BodySection(Section((1, 2, 3)))),
    (b"BODY[1.2.TEXT]", BodySection(Section((1, 2), SectionText.TEXT))),
    (b"BODY[3.MIME]", BodySection(Section((3,), SectionText.MIME))),
    (b"BODY[4.2.HEADER]<0.10>", BodySection(Section((4, 2), SectionText.HEADER), False, (0, 10))),
    (
        b"BODY.PEEK[HEADER.FIELDS (DATE FROM Subject)]",
        BodySection(
            Section(text=SectionText.HEADER_FIELDS, fields=("DATE", "FROM", "Subject")), True
        ),
    ),
    (
        b'BODY[HEADER.FIELDS.NOT ("X-Spam" {4}\r\nX-Av)]',
        BodySection(Section(text=SectionText.HEADER_FIELDS_NOT, fields=("X-Spam", "X-Av"))),
    ),
    (
        b"BODY[2.HEADER.FIELDS (To)]",
        BodySection(Section((2,), SectionText.HEADER_FIELDS, ("To",))),
    ),
    (b"BINARY[]", BinarySection()),
    (b"BINARY[1.2]", BinarySection((1, 2))),
    (b"BINARY.PEEK[1]<0.1024>", BinarySection((1,), True, (0, 1024))),
    (b"BINARY.SIZE[]", BinarySize()),
    (b"BINARY.SIZE[3]", BinarySize((3,))),
]


@pytest.mark.parametrize(("wire", "expected"), VALID, ids=[w.decode("latin-1") for w, _ in VALID])
def test_valid_commands(wire: bytes, expected: Command) -> None:
    assert parse(wire) == expected


@pytest.mark.parametrize(("text", "attribute"), FETCH_ATTRIBUTES)
def test_fetch_attribute(text: bytes, attribute: FetchAttribute) -> None:
    assert parse(b"t FETCH 1 " + text) == Fetch("t", ONE, (attribute,))
    in_list = parse(b"t UID FETCH 1 (UID " + text + b")")
    assert in_list == Fetch("t", ONE, (FetchItem.UID, attribute), uid=True)


JAN = datetime.date(1994, 1, 1)
FEB = datetime.date(2024, 2, 29)

# Every search key: (text, key).
SEARCH_KEYS: list[tuple[bytes, SearchKey]] = [
    (b"ALL", SearchAll()),
    (b"ANSWERED", SearchFlag("\\Answered")),
    (b"DELETED", SearchFlag("\\Deleted")),
    (b"DRAFT", SearchFlag("\\Draft")),
    (b"FLAGGED", SearchFlag("\\Flagged")),
    (b"SEEN", SearchFlag("\\Seen")),
    (b"RECENT", SearchFlag("\\Recent")),
    (b"OLD", SearchFlag("\\Recent", False)),
    (b"NEW", SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))),
    (b"UNANSWERED", SearchFlag("\\Answered", False)),
    (b"UNDELETED", SearchFlag("\\Deleted", False)),
    (b"UNDRAFT", SearchFlag("\\Draft", False)),
    (b"UNFLAGGED", SearchFlag("\\Flagged", False)),
    (b"unseen", SearchFlag("\\Seen", False)),
    (b"KEYWORD $Forwarded", SearchFlag("$Forwarded")),
    (b"UNKEYWORD Junk", SearchFlag("Junk", False)),
    (b"BCC bob", SearchHeader("bcc", "bob")),
    (b'CC "Bob Smith"', SearchHeader("cc", "Bob Smith")),
    (b"FROM alice@example.com", SearchHeader("from", "alice@example.com")),
    (b"SUBJECT {5}\r\nhello", SearchHeader("subject", "hello")),
    (b'TO ""', SearchHeader("to", "")),
    (b"HEADER Message-ID <a@b>", SearchHeader("message-id", "<a@b>")),
    (b'HEADER "X-Spam" ""', SearchHeader("x-spam", "")),
    (b"BODY xyz", SearchText("xyz", True)),
    (b'TEXT "two words"', SearchText("two words", False)),
    (b"BEFORE 1-Jan-1994", SearchDate("INTERNAL", "BEFORE", JAN)),
    (b'ON "01-JAN-1994"', SearchDate("INTERNAL", "ON", JAN)),
    (b"SINCE 29-Feb-2024", SearchDate("INTERNAL", "SINCE", FEB)),
    (b"SENTBEFORE 1-jan-1994", SearchDate("SENT", "BEFORE", JAN)),
    (b"SENTON 1-Jan-1994", SearchDate("SENT", "ON", JAN)),
    (b"SENTSINCE 1-Jan-1994", SearchDate("SENT", "SINCE", JAN)),
    (b"SAVEDBEFORE 1-Jan-1994", SearchDate("SAVED", "BEFORE", JAN)),
    (b"SAVEDON 1-Jan-1994", SearchDate("SAVED", "ON", JAN)),
    (b"SAVEDSINCE 1-Jan-1994", SearchDate("SAVED", "SINCE", JAN)),
    (b"LARGER 1000", SearchSize(True, 1000)),
    (b"SMALLER 9223372036854775807", SearchSize(False, 2**63 - 1)),
    (b"NOT SEEN", SearchNot(SearchFlag("\\Seen"))),
    (b"OR SEEN FLAGGED", SearchOr(SearchFlag("\\Seen"), SearchFlag("\\Flagged"))),
    (
        b"OR (SEEN FLAGGED) NOT 1:5",
        SearchOr(
            SearchAnd((SearchFlag("\\Seen"), SearchFlag("\\Flagged"))),
            SearchNot(SearchSequence(seq((1, 5)))),
        ),
    ),
    (b"(SEEN)", SearchFlag("\\Seen")),
    (b"((ALL))", SearchAll()),
    (b"UID 1:*", SearchSequence(ALL_SET, uid=True)),
    (b"UID $", SearchSequence(SAVED, uid=True)),
    (b"1,3:5,*", SearchSequence(seq((1, 1), (3, 5), (None, None)))),
    (b"$", SearchSequence(SAVED)),
    (b"*:4", SearchSequence(seq((None, 4)))),
    (b"MODSEQ 620162338", SearchModSeq(620162338)),
    (b"MODSEQ 0", SearchModSeq(0)),
    (
        b'MODSEQ "/flags/\\\\draft" all 620162338',
        SearchModSeq(620162338, ("/flags/\\draft", "all")),
    ),
    (b'MODSEQ "/flags/$x" PRIV 5', SearchModSeq(5, ("/flags/$x", "priv"))),
]


@pytest.mark.parametrize(("text", "key"), SEARCH_KEYS)
def test_search_key(text: bytes, key: SearchKey) -> None:
    assert parse(b"s SEARCH " + text) == Search("s", key)
    assert parse(b"s UID SEARCH (" + text + b")") == Search("s", key, uid=True)


def test_search_several_keys_are_and() -> None:
    assert parse(b"s SEARCH DELETED FROM SMITH SINCE 1-Feb-1994") == Search(
        "s",
        SearchAnd(
            (
                SearchFlag("\\Deleted"),
                SearchHeader("from", "SMITH"),
                SearchDate("INTERNAL", "SINCE", datetime.date(1994, 2, 1)),
            )
        ),
    )


def test_search_return_and_charset() -> None:
    assert parse(b"s SEARCH RETURN (MIN max COUNT ALL SAVE) CHARSET utf-8 TEXT x") == Search(
        "s", SearchText("x", False), "UTF-8", ("MIN", "MAX", "COUNT", "ALL", "SAVE")
    )
    assert parse(b"s UID SEARCH RETURN () ALL") == Search("s", SearchAll(), None, (), True)
    assert parse(b"s SEARCH CHARSET US-ASCII ALL") == Search("s", SearchAll(), "US-ASCII")
    assert parse("s SEARCH CHARSET UTF-8 SUBJECT {6}\r\nÄpfel".encode()) == Search(
        "s", SearchHeader("subject", "Äpfel"), "UTF-8"
    )
    # Another charset: Latin-1 keeps the octets; the service answers NO [BADCHARSET].
    assert parse(b"s SEARCH CHARSET ISO-8859-1 SUBJECT {1}\r\n\xc4") == Search(
        "s", SearchHeader("subject", "Ä"), "ISO-8859-1"
    )


def test_search_depth_bound() -> None:
    ok = b"s SEARCH " + b"NOT " * (MAX_SEARCH_DEPTH - 1) + b"ALL"
    assert isinstance(parse(ok), Search)
    for deep in (
        b"s SEARCH " + b"NOT " * MAX_SEARCH_DEPTH + b"ALL",
        b"s SEARCH " + b"(" * 5000 + b"ALL" + b")" * 5000,
        b"s SEARCH " + b"OR ALL " * 5000 + b"ALL",
    ):
        assert parse(deep) == CommandRejected("s", "Search criteria nested too deeply")


SEQUENCE_SETS: list[tuple[bytes, SequenceSet]] = [
    (b"1", ONE),
    (b"*", seq((None, None))),
    (b"1:*", ALL_SET),
    (b"*:4", seq((None, 4))),
    (b"5:2", seq((5, 2))),
    (b"2,4:7,9,12:*", seq((2, 2), (4, 7), (9, 9), (12, None))),
    (b"4294967295", seq((4294967295, 4294967295))),
    (b"$", SAVED),
]


@pytest.mark.parametrize(("text", "expected"), SEQUENCE_SETS)
def test_sequence_sets(text: bytes, expected: SequenceSet) -> None:
    assert parse(b"f FETCH " + text + b" UID") == Fetch("f", expected, (FetchItem.UID,))
    assert str(expected) == text.decode()


def test_sequence_set_resolution() -> None:
    s = seq((5, 2), (None, None), (9, 9), (10, 11))
    assert s.resolve(20) == ((2, 5), (9, 11), (20, 20))
    assert s.contains(3, 20) and s.contains(20, 20) and not s.contains(8, 20)
    assert list(s.numbers(10)) == [2, 3, 4, 5, 9, 10]
    assert seq((None, 4)).resolve(2) == ((2, 4),)  # "*:4" with 2 messages
    assert list(ALL_SET.numbers(0)) == []  # empty mailbox
    assert SAVED.resolve(99, saved=[7, 3, 4]) == ((3, 4), (7, 7))
    assert SAVED.contains(4, 99, saved=[3, 4]) and not SAVED.contains(5, 99, saved=[3, 4])


# (wire, tag of the rejection)
REJECTED: list[tuple[bytes, str | None]] = [
    (b"", None),
    (b" NOOP", None),
    (b"+ NOOP", None),
    (b"a* NOOP", None),
    (b'"a" NOOP', None),
    (b"a(b NOOP", None),
    (b"\xff NOOP", None),
    (b"a", "a"),
    (b"a ", "a"),
    (b"a  NOOP", "a"),
    (b"a FOO", "a"),
    (b"a NOOP x", "a"),
    (b"a CAPABILITY x", "a"),
    (b"a LOGIN alice", "a"),
    (b"a LOGIN alice  secret", "a"),
    (b'a LOGIN "alice secret', "a"),
    (b'a LOGIN "a\\lice" x', "a"),  # only \" and \\ are escapes
    (b'a LOGIN "\xff" x', "a"),  # invalid UTF-8
    (b"a LOGIN {5}\r\nal\x00ce x", "a"),  # NUL needs literal8
    (b"a LOGIN ~{5}\r\nalice x", "a"),  # literal8 only in APPEND
    (b"a LOGIN alice {3} x", "a"),  # literal not at the end of a line
    (b"a LOGIN (x) y", "a"),
    (b"a AUTHENTICATE", "a"),
    (b"a AUTHENTICATE PLAIN !!!", "a"),
    (b"a AUTHENTICATE PLAIN dGVzdA== x", "a"),
    (b"a AUTHENTICATE TOO-LONG-MECHANISM-NAME-X", "a"),
    (b"a ENABLE", "a"),
    (b"a SELECT", "a"),
    (b"a SELECT INBOX ()x", "a"),
    (b"a SELECT INBOX (FOO)", "a"),
    (b"a SELECT INBOX (CONDSTORE CONDSTORE)", "a"),
    (b"a SELECT INBOX (QRESYNC (0 1))", "a"),  # uidvalidity is nz-number
    (b"a SELECT INBOX (QRESYNC (1 0))", "a"),  # mod-sequence-value >= 1
    (b"a SELECT INBOX (QRESYNC (1 1 1:*))", "a"),  # known-uids: no "*"
    (b"a SELECT INBOX (QRESYNC (1 1 $))", "a"),
    (b"a CREATE x (FOO (\\Drafts))", "a"),
    (b"a CREATE x (USE ())", "a"),
    (b"a RENAME x", "a"),
    (b'a LIST ""', "a"),
    (b'a LIST "" ()', "a"),
    (b'a LIST (RECURSIVEMATCH) "" *', "a"),
    (b'a LIST (BOGUS) "" *', "a"),
    (b'a LIST "" * RETURN (BOGUS)', "a"),
    (b'a LIST "" * RETURN (STATUS ())', "a"),
    (b'a LIST "" * FOO (CHILDREN)', "a"),
    (b"a STATUS INBOX ()", "a"),
    (b"a STATUS INBOX (MESSAGES BOGUS)", "a"),
    (b"a STATUS INBOX MESSAGES", "a"),
    (b'a APPEND INBOX "hello"', "a"),  # the message must be a literal
    (b"a APPEND INBOX (\\Recent) {1}\r\nx", "a"),
    (b"a APPEND INBOX (\\Bogus) {1}\r\nx", "a"),
    (b"a APPEND INBOX (\\*) {1}\r\nx", "a"),
    (b'a APPEND INBOX "31-Feb-2024 00:00:00 +0000" {1}\r\nx', "a"),
    (b'a APPEND INBOX "1-Foo-2024 00:00:00 +0000" {1}\r\nx', "a"),
    (b'a APPEND INBOX "01-Jan-2024 00:00:00 +2500" {1}\r\nx', "a"),
    (b'a APPEND INBOX "01-Jan-2024 00:00:00 +0060" {1}\r\nx', "a"),
    (b'a APPEND INBOX "01-Jan-2024 00:00:00" {1}\r\nx', "a"),
    (b"a APPEND INBOX {5}\r\nhel\x00o", "a"),
    (b"a APPEND INBOX {4}\r\nhello", "a"),  # pieces disagree with the announcement
    (b"a UID", "a"),
    (b"a UID NOOP", "a"),
    (b"a UID EXPUNGE", "a"),
    (b"a COPY 1", "a"),
    (b"a COPY x INBOX", "a"),
    (b"a MOVE 1:2:3 INBOX", "a"),
    (b"a FETCH 0 FLAGS", "a"),
    (b"a FETCH 01 FLAGS", "a"),
    (b"a FETCH 4294967296 FLAGS", "a"),
    (b"a FETCH 1,,2 FLAGS", "a"),
    (b"a FETCH 1: FLAGS", "a"),
    (b"a FETCH 1,$ FLAGS", "a"),
    (b"a FETCH 1", "a"),
    (b"a FETCH 1 ()", "a"),
    (b"a FETCH 1 BOGUS", "a"),
    (b"a FETCH 1 (ALL)", "a"),  # macros only alone
    (b"a FETCH 1 BODY.PEEK", "a"),
    (b"a FETCH 1 BODY[MIME]", "a"),
    (b"a FETCH 1 BODY[0]", "a"),
    (b"a FETCH 1 BODY[1.]", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS]", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "a"),
    (b"a FETCH 1 BODY[HEADER.FIELDS (a:b)]", "a"),
    (b"a FETCH 1 BODY[BOGUS]", "a"),
    (b"a FETCH 1 BODY[]<0.0>", "a"),
    (b"a FETCH 1 BODY[]<0>", "a"),
    (b"a FETCH 1 BINARY", "a"),
    (b"a FETCH 1 BINARY[TEXT]", "a"),
    (b"a FETCH 1 (FLAGS", "a"),
    (b"a FETCH 1 FLAGS (BOGUS)", "a"),
    (b"a FETCH 1 FLAGS (VANISHED)", "a"),
    (b"a UID FETCH 1 FLAGS (VANISHED)", "a"),  # needs CHANGEDSINCE
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "a"),  # needs UID FETCH
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)", "a"),
    (b"a STORE 1 FLAGS \\Recent", "a"),
    (b"a STORE 1 +FLAGS (\\Recent)", "a"),
    (b"a STORE 1 FLAGS (\\Bogus)", "a"),
    (b"a STORE 1 LABELS (x)", "a"),
    (b"a STORE 1 FLAGS", "a"),
    (b"a STORE 1 (UNCHANGEDSINCE x) FLAGS ()", "a"),
    (b"a STORE 1 (FOO 1) FLAGS ()", "a"),
    (b"a SEARCH", "a"),
    (b"a SEARCH BOGUS", "a"),
    (b"a SEARCH FROM", "a"),
    (b"a SEARCH (ALL", "a"),
    (b"a SEARCH ()", "a"),
    (b"a SEARCH OR ALL", "a"),
    (b"a SEARCH SINCE 31-Feb-2024", "a"),
    (b"a SEARCH SINCE 1-Foo-2024", "a"),
    (b"a SEARCH SINCE 2024-01-01", "a"),
    (b"a SEARCH LARGER x", "a"),
    (b"a SEARCH LARGER 99999999999999999999999", "a"),
    (b"a SEARCH KEYWORD \\Seen", "a"),
    (b"a SEARCH UNRECENT", "a"),
    (b"a SEARCH RETURN (BOGUS) ALL", "a"),
    (b"a SEARCH CHARSET", "a"),
    (b'a SEARCH SUBJECT "\xff"', "a"),
    (b'a SEARCH MODSEQ "/flags/x" other 1', "a"),
    (b"a SEARCH 0", "a"),
    (b"a ID", "a"),
    (b"a ID (name x)", "a"),
    (b'a ID ("name")', "a"),
    (b"a COMPRESS", "a"),
    (b"a SETQUOTA x (STORAGE)", "a"),
    (b"a GETQUOTA", "a"),
]


@pytest.mark.parametrize(("wire", "tag"), REJECTED, ids=[w.decode("latin-1") for w, _ in REJECTED])
def test_rejected_commands(wire: bytes, tag: str | None) -> None:
    result = parse(wire)
    assert isinstance(result, CommandRejected), result
    assert result.tag == tag
    assert result.text


def test_malformed_pieces_are_rejected() -> None:
    assert parse_command([]) == CommandRejected(None, "Incomplete command")
    assert parse_command([b"a LOGIN {1}", b"x"]) == CommandRejected(None, "Incomplete command")
    assert isinstance(parse_command([b"a LOGIN {1}", b"x", b" y", b"z", b""]), CommandRejected)
    assert parse_command([b"a APPEND INBOX {5}", b"hell", b""]) == CommandRejected(
        "a", "Literal size mismatch"
    )
    assert parse_command([b"a APPEND INBOX {1} ", b"x", b""]) == CommandRejected(
        "a", "Expected message literal"
    )


def test_parse_tag() -> None:
    assert parse_tag(b"a1 NOOP") == "a1"
    assert parse_tag(b"a1") == "a1"
    assert parse_tag(b"a1+ NOOP") is None
    assert parse_tag(b"* OK") is None
    assert parse_tag(b"") is None
