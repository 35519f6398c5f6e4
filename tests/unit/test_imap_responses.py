"""Exact bytes of the IMAP response builders (postwerk.protocols.imap.responses)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postwerk.mime.summary import (
    serialize_body,
    serialize_bodystructure,
    serialize_envelope,
    summarize,
)
from postwerk.protocols.imap.responses import (
    QUOTED_MAX,
    astring,
    atom_ok,
    body,
    bodystructure,
    capability_line,
    code,
    continuation,
    enabled_line,
    envelope,
    esearch_line,
    exists_line,
    expunge_line,
    fetch_response,
    flags_line,
    flags_list,
    format_uid_set,
    id_line,
    internaldate,
    list_line,
    literal,
    lsub_line,
    namespace_line,
    nstring,
    quota_line,
    quotaroot_line,
    quoted,
    recent_line,
    search_line,
    status_line,
    string,
    tagged,
    untagged,
    untagged_status,
    vanished_line,
)

# ---------------------------------------------------------------- strings


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("INBOX", True),
        ("\\Seen", False),
        ("$Forwarded", True),
        ("a&b,c-d", True),
        ("", False),
        ("a b", False),
        ("a(b", False),
        ("a)b", False),
        ("a{b", False),
        ("a%b", False),
        ("a*b", False),
        ('a"b', False),
        ("a]b", False),
        ("a\x01b", False),
        ("a\x7fb", False),
        ("é", False),
    ],
)
def test_atom_ok(value: str, ok: bool) -> None:
    assert atom_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("", b'""'),
        ("hello world", b'"hello world"'),
        ('say "hi"', b'"say \\"hi\\""'),
        ("back\\slash", b'"back\\\\slash"'),
        ("tab\there", b'"tab\there"'),
        ("é", b'"\xc3\xa9"'),
    ],
)
def test_quoted(value: str, wire: bytes) -> None:
    assert quoted(value) == wire


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b"])
def test_quoted_refuses_line_breaks_and_nul(value: str) -> None:
    with pytest.raises(ValueError):
        quoted(value)


@pytest.mark.parametrize(
    ("data", "binary", "wire"),
    [
        (b"", False, b"{0}\r\n"),
        (b"abc", False, b"{3}\r\nabc"),
        (b"a\r\nb", False, b"{4}\r\na\r\nb"),
        (b"\x00\x01", True, b"~{2}\r\n\x00\x01"),
    ],
)
def test_literal(data: bytes, binary: bool, wire: bytes) -> None:
    assert literal(data, binary=binary) == wire


STRING_CASES: list[tuple[bytes, bool, bytes]] = [
    (b"", False, b'""'),
    (b"plain", False, b'"plain"'),
    (b'q"uo\\te', False, b'"q\\"uo\\\\te"'),
    (b"a\rb", False, b"{3}\r\na\rb"),
    (b"a\nb", False, b"{3}\r\na\nb"),
    (b"a\x00b", False, b"{3}\r\na\x00b"),
    (b"\xc3\xa9", False, b"{2}\r\n\xc3\xa9"),  # 8-bit without UTF8=ACCEPT
    (b"\xc3\xa9", True, b'"\xc3\xa9"'),  # UTF-8 quoted once enabled (RFC 6855 §3)
    (b"\xff", True, b"{1}\r\n\xff"),  # not UTF-8: literal even then
    (b"x" * QUOTED_MAX, False, b'"' + b"x" * QUOTED_MAX + b'"'),
    (b"x" * (QUOTED_MAX + 1), False, b"{1025}\r\n" + b"x" * (QUOTED_MAX + 1)),
]


@pytest.mark.parametrize(("data", "utf8", "wire"), STRING_CASES)
def test_string_choice(data: bytes, utf8: bool, wire: bytes) -> None:
    assert string(data, utf8=utf8) == wire


@pytest.mark.parametrize(
    ("value", "utf8", "wire"),
    [
        ("INBOX", False, b"INBOX"),
        ("a&b", False, b"a&b"),
        ("", False, b'""'),
        ("NIL", False, b'"NIL"'),
        ("nil", False, b'"nil"'),
        ("Sent Items", False, b'"Sent Items"'),
        ("a]b", False, b'"a]b"'),
        ("a*", False, b'"a*"'),
        ("a\r\nb", False, b"{4}\r\na\r\nb"),
        ("é", False, b"{2}\r\n\xc3\xa9"),
        ("é", True, b'"\xc3\xa9"'),
    ],
)
def test_astring(value: str, utf8: bool, wire: bytes) -> None:
    assert astring(value, utf8=utf8) == wire


def test_nstring() -> None:
    assert nstring(None) == b"NIL"
    assert nstring(b"NIL") == b'"NIL"'
    assert nstring(b"a\nb") == b"{3}\r\na\nb"


# ---------------------------------------------------------------- status lines

STATUS_CASES: list[tuple[bytes, bytes]] = [
    (tagged("a1", "OK", "LOGIN completed"), b"a1 OK LOGIN completed\r\n"),
    (tagged("a1", "NO", "no such mailbox", code("TRYCREATE")),
     b"a1 NO [TRYCREATE] no such mailbox\r\n"),
    (tagged("A0]x", "BAD", "bad"), b"A0]x BAD bad\r\n"),
    (tagged("a2", "OK", ""), b"a2 OK completed\r\n"),
    (tagged("a2", "NO", "  "), b"a2 NO failed\r\n"),
    (tagged("a3", "OK", "[ALERT] spoof"), b"a3 OK (ALERT] spoof\r\n"),
    (tagged("a3", "OK", "[x] fine after a code", code("READ-WRITE")),
     b"a3 OK [READ-WRITE] [x] fine after a code\r\n"),
    (tagged("a4", "NO", "Entwürfe"), b"a4 NO Entw?rfe\r\n"),
    (untagged_status("OK", "ready", code("CAPABILITY", ["IMAP4rev1", "AUTH=PLAIN"])),
     b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"),
    (untagged_status("BYE", "logging out"), b"* BYE logging out\r\n"),
    (untagged_status("PREAUTH", ""), b"* PREAUTH authenticated\r\n"),
    (untagged_status("NO", "x"), b"* NO x\r\n"),
    (untagged_status("BAD", "x"), b"* BAD x\r\n"),
    (untagged("SEARCH 1 2 3"), b"* SEARCH 1 2 3\r\n"),
    (continuation(), b"+ \r\n"),
    (continuation("Ready for literal data"), b"+ Ready for literal data\r\n"),
    (continuation("dGVzdA=="), b"+ dGVzdA==\r\n"),
]  # fmt: skip


@pytest.mark.parametrize(("got", "wire"), STATUS_CASES)
def test_status_lines(got: bytes, wire: bytes) -> None:
    assert got == wire


CODE_CASES: list[tuple[bytes, bytes]] = [
    (code("UIDNEXT", 5), b"UIDNEXT 5"),
    (code("UIDVALIDITY", 3857529045), b"UIDVALIDITY 3857529045"),
    (code("UNSEEN", 12), b"UNSEEN 12"),
    (code("HIGHESTMODSEQ", 2**63 - 1), b"HIGHESTMODSEQ 9223372036854775807"),
    (code("NOMODSEQ"), b"NOMODSEQ"),
    (code("TOOBIG"), b"TOOBIG"),
    (code("ALREADYEXISTS"), b"ALREADYEXISTS"),
    (code("APPENDUID", 38505, 3955), b"APPENDUID 38505 3955"),
    (code("COPYUID", 38505, "304,319:320", "3956:3958"), b"COPYUID 38505 304,319:320 3956:3958"),
    (code("COPYUID", 1, format_uid_set([1, 2, 4]), format_uid_set([7, 8, 9])),
     b"COPYUID 1 1:2,4 7:9"),
    (code("PERMANENTFLAGS", ["\\Deleted", "\\Seen", "\\*"]),
     b"PERMANENTFLAGS (\\Deleted \\Seen \\*)"),
    (code("PERMANENTFLAGS", []), b"PERMANENTFLAGS ()"),
    (code("BADCHARSET", ["UTF-8", "US-ASCII"]), b"BADCHARSET (UTF-8 US-ASCII)"),
    (code("CAPABILITY", ["IMAP4rev1", "IDLE"]), b"CAPABILITY IMAP4rev1 IDLE"),
    (code("MODIFIED", "7,9"), b"MODIFIED 7,9"),
]  # fmt: skip


@pytest.mark.parametrize(("got", "wire"), CODE_CASES)
def test_codes(got: bytes, wire: bytes) -> None:
    assert got == wire


def test_code_in_line() -> None:
    line = tagged("a5", "OK", "APPEND completed", code("APPENDUID", 38505, 3955))
    assert line == b"a5 OK [APPENDUID 38505 3955] APPEND completed\r\n"


@pytest.mark.parametrize(
    "build",
    [
        lambda: code("UIDNEXT", -1),
        lambda: code("UIDNEXT", 2**63),
        lambda: code("UIDNEXT", True),
        lambda: code("BAD NAME"),
        lambda: code("X]"),
        lambda: code("COPYUID", 1, "1]", "2"),
        lambda: code("COPYUID", 1, "1 2", "2"),
        lambda: code("COPYUID", 1, "1\r\n", "2"),
        lambda: code("BADCHARSET", ["UTF-8]"]),
        lambda: code("CAPABILITY", ["IMAP4rev1\r\n* BYE"]),
    ],
)
def test_code_refuses_what_could_end_it(build: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    ("tag", "status"),
    [
        ("a1\r\n* BYE", "OK"),
        ("a 1", "OK"),
        ("", "OK"),
        ("a+", "OK"),
        ("*", "OK"),
        ("a1", "BYE"),
    ],
)
def test_tagged_refuses_bad_tag_or_status(tag: str, status: str) -> None:
    with pytest.raises(ValueError):
        tagged(tag, status, "x")  # type: ignore[arg-type]


def test_untagged_status_refuses_unknown_status() -> None:
    with pytest.raises(ValueError):
        untagged_status("MAYBE", "x")  # type: ignore[arg-type]


INJECTIONS = [
    "oops\r\n* OK [ALERT] owned",
    "oops\n* BYE",
    "oops\r* BYE",
    "nul\x00here",
    "\r\na1 OK [ALERT] fake completion",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_text_cannot_inject_a_line(text: str) -> None:
    for line in (
        tagged("a1", "NO", text),
        tagged("a1", "NO", text, code("TRYCREATE")),
        untagged_status("OK", text),
        untagged(text),
        continuation(text),
    ):
        assert line.endswith(b"\r\n")
        assert line.count(b"\r") == 1 and line.count(b"\n") == 1
        assert b"\x00" not in line
        # the only response code is the one the server chose
        assert not line.startswith((b"a1 NO [", b"* OK [", b"+ [")) or line.startswith(
            b"a1 NO [TRYCREATE] "
        )


@given(st.text())
def test_any_text_is_one_line(text: str) -> None:
    for line in (tagged("t", "OK", text), untagged_status("BYE", text), continuation(text)):
        assert line.endswith(b"\r\n")
        assert b"\r" not in line[:-2] and b"\n" not in line[:-2]
        assert line.isascii()


# ---------------------------------------------------------------- sets


@pytest.mark.parametrize(
    ("nums", "wire"),
    [
        ([1], "1"),
        ([1, 2, 3, 5, 7, 8, 9], "1:3,5,7:9"),
        ([1, 3, 5], "1,3,5"),
        ([5, 4, 3], "5,4,3"),  # order kept: only ascending runs compress
        ([3, 4, 1, 2], "3:4,1:2"),
        ([2, 2], "2,2"),
        (range(1, 100_001), "1:100000"),
        ([4294967294, 4294967295], "4294967294:4294967295"),
    ],
)
def test_format_uid_set(nums: list[int], wire: str) -> None:
    assert format_uid_set(nums) == wire


@pytest.mark.parametrize("nums", [[], [0], [-1], [2**32], [True]])
def test_format_uid_set_refuses(nums: list[int]) -> None:
    with pytest.raises(ValueError):
        format_uid_set(nums)


@given(st.lists(st.integers(1, 2**32 - 1), min_size=1))
def test_format_uid_set_expands_back(nums: list[int]) -> None:
    expanded: list[int] = []
    for part in format_uid_set(nums).split(","):
        low, _, high = part.partition(":")
        expanded.extend(range(int(low), int(high or low) + 1))
    assert expanded == nums


# ---------------------------------------------------------------- fetch

NY = timezone(timedelta(hours=-7))


@pytest.mark.parametrize(
    ("when", "wire"),
    [
        (datetime(1996, 7, 17, 2, 44, 25, tzinfo=NY), b'"17-Jul-1996 02:44:25 -0700"'),
        (datetime(2024, 1, 5, 23, 0, 0, tzinfo=UTC), b'" 5-Jan-2024 23:00:00 +0000"'),
        (datetime(2024, 12, 31, 9, 8, 7, tzinfo=timezone(timedelta(hours=5, minutes=30))),
         b'"31-Dec-2024 09:08:07 +0530"'),
        (datetime(2024, 3, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
         b'" 1-Mar-2024 00:00:00 -0930"'),
        # an offset with seconds is rounded to minutes, the instant kept
        (datetime(1900, 1, 1, 12, 0, 0, tzinfo=timezone(timedelta(minutes=53, seconds=28))),
         b'" 1-Jan-1900 11:59:32 +0053"'),
    ],
)  # fmt: skip
def test_internaldate(when: datetime, wire: bytes) -> None:
    assert internaldate(when) == wire


def test_internaldate_refuses_naive() -> None:
    with pytest.raises(ValueError):
        internaldate(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("flags", "wire"),
    [
        ([], b"()"),
        (["\\Seen"], b"(\\Seen)"),
        (
            ["\\Seen", "\\Answered", "$Forwarded", "NonJunk"],
            b"(\\Seen \\Answered $Forwarded NonJunk)",
        ),
        # not a flag: dropped so the line stays parseable
        (["\\Seen", "Red Category", "a)b", "x\r\ny", "é", ""], b"(\\Seen)"),
    ],
)
def test_flags_list(flags: list[str], wire: bytes) -> None:
    assert flags_list(flags) == wire


def test_fetch_response() -> None:
    items = [
        ("UID", b"5"),
        ("FLAGS", flags_list(["\\Seen"])),
        ("RFC822.SIZE", b"1234"),
        ("INTERNALDATE", internaldate(datetime(1996, 7, 17, 2, 44, 25, tzinfo=NY))),
        ("BODY[1]<0>", literal(b"hi\r\n")),
        ("BODY[HEADER.FIELDS (From)]", literal(b"From: a\r\n\r\n")),
        ("BINARY[1]", literal(b"\x00", binary=True)),
    ]
    assert fetch_response(12, items) == (
        b'* 12 FETCH (UID 5 FLAGS (\\Seen) RFC822.SIZE 1234 INTERNALDATE "17-Jul-1996 '
        b'02:44:25 -0700" BODY[1]<0> {4}\r\nhi\r\n BODY[HEADER.FIELDS (From)] '
        b"{11}\r\nFrom: a\r\n\r\n BINARY[1] ~{1}\r\n\x00)\r\n"
    )


def test_fetch_response_empty_and_bad() -> None:
    assert fetch_response(1, []) == b"* 1 FETCH ()\r\n"
    for seq, name in ((0, "UID"), (2**32, "UID"), (1, ""), (1, "UID\r\n"), (1, "BODY[é]")):
        with pytest.raises(ValueError):
            fetch_response(seq, [(name, b"1")])


MESSAGE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello\r\n"
)


def test_summary_wrappers_reuse_mime_summary() -> None:
    summary = summarize(MESSAGE)
    assert envelope(summary.envelope) == serialize_envelope(summary.envelope)
    assert bodystructure(summary.bodystructure) == serialize_bodystructure(summary.bodystructure)
    assert body(summary.bodystructure) == serialize_body(summary.bodystructure)
    assert (
        body(summary.bodystructure) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1)'
    )
    line = fetch_response(1, [("ENVELOPE", envelope(summary.envelope))])
    assert line.startswith(b'* 1 FETCH (ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" ')
    assert line.endswith(b' NIL NIL NIL "<B27397-0100000@cac.washington.edu>"))\r\n')


# ---------------------------------------------------------------- data lines

LINE_CASES: list[tuple[bytes, bytes]] = [
    (list_line(["\\HasNoChildren"], "/", "INBOX"), b'* LIST (\\HasNoChildren) "/" INBOX\r\n'),
    (list_line([], "/", "Sent Items"), b'* LIST () "/" "Sent Items"\r\n'),
    (list_line(["\\Noselect"], None, ""), b'* LIST (\\Noselect) NIL ""\r\n'),
    (list_line([], ".", "a\\b"), b'* LIST () "." "a\\\\b"\r\n'),
    (list_line([], "\\", "x"), b'* LIST () "\\\\" x\r\n'),
    (list_line(["\\Sent"], "/", "~peter/mail/台北/日本語"),
     b'* LIST (\\Sent) "/" ~peter/mail/&U,BTFw-/&ZeVnLIqe-\r\n'),
    (list_line([], "/", "Entwürfe", utf8=True), b'* LIST () "/" "Entw\xc3\xbcrfe"\r\n'),
    (list_line(["\\Subscribed"], "/", "Foo",
               extended={"CHILDINFO": ["SUBSCRIBED"]}),
     b'* LIST (\\Subscribed) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))\r\n'),
    (list_line([], "/", "NewName", extended={"OLDNAME": ["Entwürfe"]}),
     b'* LIST () "/" NewName ("OLDNAME" (Entw&APw-rfe))\r\n'),
    (lsub_line(["\\Noselect"], "/", "#news.comp.mail.misc"),
     b'* LSUB (\\Noselect) "/" #news.comp.mail.misc\r\n'),
    (status_line("blurdybloop", {"MESSAGES": 231, "UIDNEXT": 44292}),
     b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"),
    (status_line("Gelöschte Elemente", {"HIGHESTMODSEQ": 7011231777}),
     b'* STATUS "Gel&APY-schte Elemente" (HIGHESTMODSEQ 7011231777)\r\n'),
    (status_line("x", {}), b"* STATUS x ()\r\n"),
    (esearch_line("A282", False, {"MIN": 2, "COUNT": 3}),
     b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'),
    (esearch_line("A283", True, {"ALL": [2, 10, 11]}),
     b'* ESEARCH (TAG "A283") UID ALL 2,10:11\r\n'),
    (esearch_line("A284", False, {"MIN": None, "MAX": None, "ALL": [], "COUNT": 0}),
     b'* ESEARCH (TAG "A284") COUNT 0\r\n'),
    (esearch_line("A285", True, {"ALL": "1:3,5"}), b'* ESEARCH (TAG "A285") UID ALL 1:3,5\r\n'),
    (esearch_line(None, False, {}), b"* ESEARCH\r\n"),
    (esearch_line("a", True, {"MODSEQ": 917162500}),
     b'* ESEARCH (TAG "a") UID MODSEQ 917162500\r\n'),
    (vanished_line([41, 43, 44, 45, 46], earlier=True), b"* VANISHED (EARLIER) 41,43:46\r\n"),
    (vanished_line([405, 407, 410], earlier=False), b"* VANISHED 405,407,410\r\n"),
    (vanished_line([], earlier=False), b""),
    (namespace_line([("", "/")], None, None), b'* NAMESPACE (("" "/")) NIL NIL\r\n'),
    (namespace_line([("", "/")], [("~", "/")], [("#shared/", "/"), ("#public/", "/")]),
     b'* NAMESPACE (("" "/")) (("~" "/")) (("#shared/" "/")("#public/" "/"))\r\n'),
    (namespace_line([], [("Öffentlich/", None)], None),
     b'* NAMESPACE NIL (("&ANY-ffentlich/" NIL)) NIL\r\n'),
    (namespace_line(None, None, [("Öffentlich/", "/")], utf8=True),
     b'* NAMESPACE NIL NIL (("\xc3\x96ffentlich/" "/"))\r\n'),
    (id_line(None), b"* ID NIL\r\n"),
    (id_line({}), b"* ID NIL\r\n"),
    (id_line({"name": "postwerk", "version": "0.1.0", "vendor": None}),
     b'* ID ("name" "postwerk" "version" "0.1.0" "vendor" NIL)\r\n'),
    (quota_line("", {"STORAGE": (10, 512)}), b'* QUOTA "" (STORAGE 10 512)\r\n'),
    (quota_line("user", {"STORAGE": (10, 512), "MESSAGE": (3, 1000)}),
     b"* QUOTA user (STORAGE 10 512 MESSAGE 3 1000)\r\n"),
    (quotaroot_line("INBOX", [""]), b'* QUOTAROOT INBOX ""\r\n'),
    (quotaroot_line("Entwürfe", []), b"* QUOTAROOT Entw&APw-rfe\r\n"),
    (quotaroot_line("a b", ["r1", "r 2"]), b'* QUOTAROOT "a b" r1 "r 2"\r\n'),
    (capability_line(["IMAP4rev1", "STARTTLS", "AUTH=PLAIN", "LOGINDISABLED"]),
     b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED\r\n"),
    (enabled_line(["CONDSTORE", "UTF8=ACCEPT"]), b"* ENABLED CONDSTORE UTF8=ACCEPT\r\n"),
    (enabled_line([]), b"* ENABLED\r\n"),
    (flags_line(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]),
     b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"),
    (search_line([2, 84, 882]), b"* SEARCH 2 84 882\r\n"),
    (search_line([]), b"* SEARCH\r\n"),
    (search_line([2, 5], modseq=917162500), b"* SEARCH 2 5 (MODSEQ 917162500)\r\n"),
    (exists_line(23), b"* 23 EXISTS\r\n"),
    (exists_line(0), b"* 0 EXISTS\r\n"),
    (recent_line(5), b"* 5 RECENT\r\n"),
    (expunge_line(44), b"* 44 EXPUNGE\r\n"),
]  # fmt: skip


@pytest.mark.parametrize(("got", "wire"), LINE_CASES)
def test_data_lines(got: bytes, wire: bytes) -> None:
    assert got == wire


@pytest.mark.parametrize(
    "build",
    [
        lambda: list_line(["\\Has Children"], "/", "x"),
        lambda: list_line([], "//", "x"),
        lambda: list_line([], "\n", "x"),
        lambda: list_line([], "/", "x", extended={"CHILD INFO": ["x"]}),
        lambda: status_line("x", {"MESSAGES": -1}),
        lambda: status_line("x", {"MESS AGES": 1}),
        lambda: esearch_line("a\r\n", False, {}),
        lambda: esearch_line("a", False, {"ALL": "1\r\n"}),
        lambda: esearch_line("a", False, {"ALL": [0]}),
        lambda: quota_line("", {"STORAGE": (-1, 0)}),
        lambda: capability_line(["IMAP4rev1", "X Y"]),
        lambda: enabled_line(["A\r\n"]),
        lambda: search_line([0]),
        lambda: search_line([1], modseq=0),
        lambda: exists_line(-1),
        lambda: expunge_line(0),
    ],
)
def test_data_lines_refuse_bad_server_values(build: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        build()


NASTY_NAMES = [
    "a\r\n* BYE",
    'x" "y',
    "INBOX\r\na1 OK [ALERT] hi",
    "tab\there",
    "\x00",
]


def _one_line_apart_from_literals(line: bytes) -> bool:
    """True if `line` is one response line once counted literals are skipped."""
    out = bytearray()
    i = 0
    while i < len(line):
        if line.startswith(b'"', i):
            # a quoted string: skip to the closing quote, stepping over escapes
            i += 1
            while line[i : i + 1] != b'"':
                if line[i : i + 1] in (b"\r", b"\n", b""):
                    return False
                i += 2 if line[i : i + 1] == b"\\" else 1
            out += b"QUOTED"
            i += 1
            continue
        if line.startswith(b"{", i):
            close = line.index(b"}\r\n", i)
            size = int(line[i + 1 : close])
            out += b"LITERAL"
            i = close + 3 + size
            continue
        out.append(line[i])
        i += 1
    return out.endswith(b"\r\n") and b"\r" not in out[:-2] and b"\n" not in out[:-2]


@pytest.mark.parametrize("name", NASTY_NAMES)
@pytest.mark.parametrize("utf8", [False, True])
def test_names_cannot_inject(name: str, utf8: bool) -> None:
    for line in (
        list_line([], "/", name, utf8=utf8),
        list_line([], "/", "x", extended={"OLDNAME": [name], "CHILDINFO": [name]}, utf8=utf8),
        status_line(name, {"MESSAGES": 1}, utf8=utf8),
        quotaroot_line(name, [name], utf8=utf8),
        quota_line(name, {"STORAGE": (1, 2)}, utf8=utf8),
        namespace_line([(name, "/")], None, None, utf8=utf8),
    ):
        assert _one_line_apart_from_literals(line), line


def test_list_name_with_crlf_is_encoded_not_literal() -> None:
    assert list_line([], "/", "a\r\nb") == b'* LIST () "/" a&AA0ACg-b\r\n'
    assert list_line([], "/", "a\r\nb", utf8=True) == b'* LIST () "/" {4}\r\na\r\nb\r\n'


@pytest.mark.parametrize(
    ("fields", "wire"),
    [
        ({"name": "post\r\nwerk"}, b'* ID ("name" "post  werk")\r\n'),
        ({"na\nme": "x\x00y"}, b'* ID ("na me" "x y")\r\n'),
        ({"name": '"quoted" \\'}, b'* ID ("name" "\\"quoted\\" \\\\")\r\n'),
        ({"x" * 40: "v"}, b'* ID ("' + b"x" * 30 + b'" "v")\r\n'),
        ({"k": "v" * 2000}, b'* ID ("k" "' + b"v" * 1024 + b'")\r\n'),
        ({"k": "é" * 600}, b'* ID ("k" {1024}\r\n' + "é".encode() * 512 + b")\r\n"),
    ],
)
def test_id_values_neutralized_and_bounded(fields: dict[str, str | None], wire: bytes) -> None:
    assert id_line(fields) == wire


def test_id_at_most_30_pairs() -> None:
    line = id_line({f"k{i}": "v" for i in range(40)})
    assert line.count(b'"v"') == 30


@given(st.dictionaries(st.text(), st.none() | st.text(), max_size=5))
def test_id_line_is_one_line(fields: dict[str, str | None]) -> None:
    assert _one_line_apart_from_literals(id_line(fields))


def test_large_fetch_is_linear() -> None:
    # 100,000 FETCH responses build without quadratic concatenation.
    flags = flags_list(["\\Seen"])
    out = b"".join(
        fetch_response(i, [("UID", b"%d" % i), ("FLAGS", flags)]) for i in range(1, 100_001)
    )
    assert out.count(b"\r\n") == 100_000
    assert out.endswith(b"* 100000 FETCH (UID 100000 FLAGS (\\Seen))\r\n")
