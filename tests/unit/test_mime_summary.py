"""Message summaries: hand-checked ENVELOPE/BODYSTRUCTURE strings, edge cases, fuzzing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postwerk.mime.summary import (
    MAX_DEPTH,
    BodyPart,
    MessageSummary,
    _build_summary,
    decode_words,
    header_block_end,
    nstring,
    parse_address_list,
    serialize_body,
    serialize_bodystructure,
    serialize_envelope,
    summarize,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def walk(part: BodyPart) -> Iterator[BodyPart]:
    yield part
    for child in part["parts"]:
        yield from walk(child)
    if part["body"] is not None:
        yield from walk(part["body"])


def body_of(data: bytes, part: BodyPart) -> bytes:
    _, start, end = part["offsets"]
    return data[start:end]


# ---------------------------------------------------------------- hand-checked wire strings

PLAIN = crlf(
    "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\n"
    "From: Fred Foobar <foobar@Blurdybloop.example>\n"
    "Subject: afternoon meeting\n"
    "To: mooch@owatagu.siam.edu.example\n"
    "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n"
    "Hello Joe, do you think we can meet at 3:30 tomorrow?\n"
)


def test_plain_text_rfc9051_example() -> None:
    # RFC 9051 §7.5.2 / §8 example message.
    s = summarize(PLAIN)
    fred = b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
    assert serialize_envelope(s.envelope) == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" '
        + fred
        + b" "
        + fred
        + b" "
        + fred
        + b' ((NIL NIL "mooch" "owatagu.siam.edu.example")) NIL NIL NIL'
        b' "<B27397-0100000@Blurdybloop.example>")'
    )
    assert serialize_bodystructure(s.bodystructure) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1 NIL NIL NIL NIL)'
    )
    assert serialize_body(s.bodystructure) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1)'
    )
    assert s.size == len(PLAIN)
    assert s.header_size == PLAIN.index(b"Hello")
    assert s.lines == 9
    assert s.subject == "afternoon meeting"
    assert s.from_display == "Fred Foobar <foobar@Blurdybloop.example>"
    assert s.message_id == "<B27397-0100000@Blurdybloop.example>"
    assert s.date == 760686745.0
    assert not s.has_attachments


MIXED = crlf(
    'From: "Doe, John" <john@example.com>\n'
    "To: Mary Smith <mary@x.test>, jdoe@one.test\n"
    "Subject: Report\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="XX"\n'
    "\n"
    "preamble\n"
    "--XX\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Hi Mary,\n"
    "see attached.\n"
    "--XX\n"
    'Content-Type: application/pdf; name="r.pdf"\n'
    "Content-Transfer-Encoding: base64\n"
    'Content-Disposition: attachment; filename="r.pdf"\n'
    "Content-Language: en, de\n"
    "\n"
    "JVBERi0xLjQK\n"
    "--XX--\n"
    "epilogue\n"
)


def test_multipart_mixed_with_attachment() -> None:
    s = summarize(MIXED)
    john = b'(("Doe, John" NIL "john" "example.com"))'
    assert serialize_envelope(s.envelope) == (
        b'(NIL "Report" '
        + john
        + b" "
        + john
        + b" "
        + john
        + b' (("Mary Smith" NIL "mary" "x.test")(NIL NIL "jdoe" "one.test")) NIL NIL NIL NIL)'
    )
    # Part 1 body "Hi Mary,\r\nsee attached." = 23 octets, 2 lines; the CRLF
    # before "--XX" belongs to the delimiter (RFC 2046 §5.1.1).
    assert serialize_bodystructure(s.bodystructure) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 23 2 NIL NIL NIL NIL)'
        b'("APPLICATION" "PDF" ("NAME" "r.pdf") NIL NIL "BASE64" 12 NIL'
        b' ("ATTACHMENT" ("FILENAME" "r.pdf")) ("en" "de") NIL)'
        b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)'
    )
    assert serialize_body(s.bodystructure) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 23 2)'
        b'("APPLICATION" "PDF" ("NAME" "r.pdf") NIL NIL "BASE64" 12) "MIXED")'
    )
    text, pdf = s.bodystructure["parts"]
    assert body_of(MIXED, text) == b"Hi Mary,\r\nsee attached."
    assert body_of(MIXED, pdf) == b"JVBERi0xLjQK"
    # BODY[2.MIME] is the part header, streamable by offset.
    h, b, _ = pdf["offsets"]
    assert MIXED[h:b].startswith(b"Content-Type: application/pdf")
    assert MIXED[h:b].endswith(b"\r\n\r\n")
    assert s.has_attachments
    assert s.from_display == "Doe, John <john@example.com>"


NESTED = crlf(
    "From: alice@a.test\n"
    "To: undisclosed-recipients:;\n"
    'Cc: Friends: bob@b.test, "Carol Q" <carol@c.test>;, dan@d.test\n'
    "Subject: Fwd: hello\n"
    "Content-Type: multipart/mixed; boundary=outer\n"
    "\n"
    "--outer\n"
    "Content-Type: text/plain\n"
    "\n"
    "see below\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: bob@b.test\n"
    "Subject: hello\n"
    "\n"
    "hi\n"
    "--outer--\n"
)


def test_nested_message_rfc822_and_groups() -> None:
    s = summarize(NESTED)
    alice = b'((NIL NIL "alice" "a.test"))'
    assert serialize_envelope(s.envelope) == (
        b'(NIL "Fwd: hello" '
        + alice
        + b" "
        + alice
        + b" "
        + alice
        + b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'
        b' ((NIL NIL "Friends" NIL)(NIL NIL "bob" "b.test")("Carol Q" NIL "carol" "c.test")'
        b'(NIL NIL NIL NIL)(NIL NIL "dan" "d.test")) NIL NIL NIL)'
    )
    bob = b'((NIL NIL "bob" "b.test"))'
    inner_env = b'(NIL "hello" ' + bob + b" " + bob + b" " + bob + b" NIL NIL NIL NIL NIL)"
    # Encapsulated message "From: bob@b.test\r\nSubject: hello\r\n\r\nhi" = 38 octets, 4 lines.
    assert serialize_bodystructure(s.bodystructure) == (
        b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 9 1 NIL NIL NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 38 '
        + inner_env
        + b' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 2 1 NIL NIL NIL NIL)'
        b' 4 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "outer") NIL NIL NIL)'
    )
    assert serialize_body(s.bodystructure) == (
        b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 9 1)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 38 '
        + inner_env
        + b' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 2 1) 4) "MIXED")'
    )
    msg = s.bodystructure["parts"][1]
    inner = msg["body"]
    assert inner is not None
    # BODY[2.HEADER] and BODY[2.TEXT] by offset.
    h, b, e = inner["offsets"]
    assert NESTED[h:b] == b"From: bob@b.test\r\nSubject: hello\r\n\r\n"
    assert NESTED[b:e] == b"hi"
    assert s.has_attachments
    assert s.from_display == "alice@a.test"


def test_multipart_alternative() -> None:
    data = crlf(
        "Subject: alt\n"
        "Content-Type: multipart/alternative;\n"
        '\tboundary="==b=="\n'
        "\n"
        "--==b==\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "Gr=C3=BC=C3=9Fe\n"
        "--==b==\n"
        "Content-Type: text/html; charset=utf-8\n"
        "\n"
        "<p>Gr&uuml;&szlig;e</p>\n"
        "\n"
        "--==b==--\n"
    )
    s = summarize(data)
    root = s.bodystructure
    assert (root["type"], root["subtype"]) == ("MULTIPART", "ALTERNATIVE")
    assert root["params"] == [["BOUNDARY", "==b=="]]
    plain, html = root["parts"]
    assert (plain["subtype"], plain["encoding"], plain["lines"]) == ("PLAIN", "QUOTED-PRINTABLE", 1)
    assert body_of(data, plain) == b"Gr=C3=BC=C3=9Fe"
    assert body_of(data, html) == b"<p>Gr&uuml;&szlig;e</p>\r\n"
    assert html["lines"] == 1
    assert not s.has_attachments
    assert serialize_body(root).endswith(b' "ALTERNATIVE")')


def test_encoded_words_raw_in_envelope_decoded_in_listing() -> None:
    data = crlf(
        "From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>\n"
        "Subject: =?utf-8?b?R3LDvMOfZQ==?= =?utf-8?q?_aus_M=C3=BCnchen?=\n"
        "\n"
        "x\n"
    )
    s = summarize(data)
    assert s.envelope["subject"] == "=?utf-8?b?R3LDvMOfZQ==?= =?utf-8?q?_aus_M=C3=BCnchen?="
    assert s.subject == "Grüße aus München"
    assert s.envelope["from"] == [
        ["=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=", None, "keld", "dkuug.dk"]
    ]
    assert s.from_display == "Keld Jørn Simonsen <keld@dkuug.dk>"


def test_8bit_headers_become_literals() -> None:
    data = "From: Jörg <joerg@example.de>\r\nSubject: Grüße\r\n\r\nx".encode()
    s = summarize(data)
    assert s.subject == "Grüße"
    env = serialize_envelope(s.envelope)
    assert env.startswith(
        b'(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe (({5}\r\nJ\xc3\xb6rg NIL "joerg" "example.de"))'
    )


def test_latin1_header_bytes_are_kept_as_text() -> None:
    s = summarize(b"Subject: Gr\xfc\xdfe\r\n\r\n")
    assert s.subject == "Grüße"
    json.dumps(s.to_json(), ensure_ascii=False).encode("utf-8")  # valid text throughout


# ---------------------------------------------------------------- edge cases


def test_missing_headers() -> None:
    s = summarize(b"\r\njust a body\r\n")
    assert s.header_size == 2
    assert serialize_envelope(s.envelope) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert serialize_bodystructure(s.bodystructure) == (
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 13 1 NIL NIL NIL NIL)'
    )
    assert (s.subject, s.from_display, s.message_id, s.date) == ("", "", None, None)


def test_sender_and_reply_to_default_when_empty() -> None:
    s = summarize(b"From: a@b.test\r\nSender:\r\nReply-To: ,\r\n\r\n")
    assert s.envelope["sender"] == s.envelope["reply_to"] == [[None, None, "a", "b.test"]]


def test_sender_and_reply_to_kept_when_present() -> None:
    s = summarize(b"From: a@b.test\r\nSender: s@b.test\r\nReply-To: r@b.test\r\n\r\n")
    assert s.envelope["sender"] == [[None, None, "s", "b.test"]]
    assert s.envelope["reply_to"] == [[None, None, "r", "b.test"]]


def test_no_body_no_blank_line() -> None:
    data = b"Subject: only headers\r\nFrom: a@b.test"
    s = summarize(data)
    assert s.header_size == len(data)
    assert s.bodystructure["size"] == 0
    assert s.bodystructure["lines"] == 0
    assert s.subject == "only headers"
    assert s.envelope["from"] == [[None, None, "a", "b.test"]]


def test_empty_message() -> None:
    s = summarize(b"")
    assert (s.size, s.header_size, s.lines) == (0, 0, 0)
    assert serialize_body(s.bodystructure) == (
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0)'
    )


def test_lf_only_line_endings() -> None:
    data = (
        b"Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\n\none\ntwo\n--b\nContent-Type: text/html\n\n<p>\n--b--\n"
    )
    s = summarize(data)
    assert s.header_size == data.index(b"--b")
    one, html = s.bodystructure["parts"]
    assert body_of(data, one) == b"one\ntwo"
    assert one["lines"] == 2
    assert body_of(data, html) == b"<p>"
    assert html["offsets"][0] == data.index(b"Content-Type: text/html")


def test_malformed_headers() -> None:
    data = (
        b'From: <<<>>>, @@@, "unterminated\r\n'
        b"To: (comment only)\r\n"
        b"Cc: a@b.test (Old Style Name)\r\n"
        b"Bcc: <@route.one,@route.two:user@host.test>\r\n"
        b"no colon here\r\n"
        b" orphan continuation\r\n"
        b"Content-Type: garbage\r\n"
        b"Content-Transfer-Encoding:\r\n"
        b"Date: not a date\r\n"
        b"\r\nbody"
    )
    s = summarize(data)
    assert s.bodystructure["type"] == "TEXT"
    assert s.bodystructure["params"] == [["CHARSET", "us-ascii"]]  # RFC 2045 §5.2 default
    assert s.bodystructure["encoding"] == "7BIT"
    assert s.date is None
    assert s.envelope["cc"] == [["Old Style Name", None, "a", "b.test"]]
    assert s.envelope["bcc"] == [[None, "@route.one,@route.two", "user", "host.test"]]
    assert s.envelope["to"] is None
    serialize_envelope(s.envelope)


def test_multipart_without_boundary_is_text() -> None:
    s = summarize(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n")
    assert (s.bodystructure["type"], s.bodystructure["subtype"]) == ("TEXT", "PLAIN")
    assert s.bodystructure["parts"] == []


def test_multipart_without_any_delimiter_gets_empty_part() -> None:
    s = summarize(b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n")
    (only,) = s.bodystructure["parts"]
    assert (only["type"], only["size"]) == ("TEXT", 0)


def test_unclosed_multipart_runs_to_end() -> None:
    data = b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\r\nabc\r\n"
    (only,) = summarize(data).bodystructure["parts"]
    assert body_of(data, only) == b"abc\r\n"


def test_longer_boundary_is_not_ours() -> None:
    data = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--bc is content\n--b--\n")
    (only,) = summarize(data).bodystructure["parts"]
    assert body_of(data, only) == b"--bc is content"


def test_digest_default_is_message_rfc822() -> None:
    data = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody\n--d--\n"
    )
    (msg,) = summarize(data).bodystructure["parts"]
    assert (msg["type"], msg["subtype"]) == ("MESSAGE", "RFC822")  # RFC 2046 §5.1.5
    assert msg["envelope"] is not None and msg["envelope"]["subject"] == "one"


def test_encoded_message_rfc822_is_opaque() -> None:
    data = crlf(
        "Content-Type: multipart/mixed; boundary=m\n\n--m\n"
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n"
        "\nU3ViamVjdDogeA==\n--m--\n"
    )
    (part,) = summarize(data).bodystructure["parts"]
    assert (part["type"], part["subtype"]) == ("APPLICATION", "OCTET-STREAM")
    assert part["envelope"] is None


def test_deep_nesting_is_bounded() -> None:
    depth = MAX_DEPTH + 50
    head = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    data = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + head + b"leaf\r\n"
    s = summarize(data)
    levels = 0
    part = s.bodystructure
    while part["parts"]:
        part, levels = part["parts"][0], levels + 1
    assert levels == MAX_DEPTH
    serialize_bodystructure(s.bodystructure)


def test_summarize_header_plus_body() -> None:
    head, rest = MIXED[:120], MIXED[120:]
    assert summarize(head, rest) == summarize(MIXED)
    prefix = b"Return-Path: <x@y.test>\r\n"
    s = summarize(prefix, MIXED)
    assert s.size == len(prefix) + len(MIXED)
    assert s.bodystructure["parts"][0]["offsets"][1] == summarize(MIXED).bodystructure["parts"][0][
        "offsets"
    ][1] + len(prefix)


def test_json_roundtrip() -> None:
    for data in (PLAIN, MIXED, NESTED):
        s = summarize(data)
        again = MessageSummary.from_json(json.loads(json.dumps(s.to_json())))
        assert again == s
        assert serialize_bodystructure(again.bodystructure) == serialize_bodystructure(
            s.bodystructure
        )


def test_from_json_rejects_other_version() -> None:
    doc = summarize(PLAIN).to_json()
    doc["v"] = 999
    with pytest.raises(ValueError):
        MessageSummary.from_json(doc)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Content-Disposition: attachment\n", True),
        ("Content-Disposition: inline; filename=a.png\n", False),
        ('Content-Type: image/png; name="a.png"\n', True),
        ("Content-Type: image/png\n", False),
        ("Content-Disposition: attachment; filename*0*=utf-8''a.pdf\n", True),
    ],
)
def test_has_attachments(content: str, expected: bool) -> None:
    data = crlf(
        "Content-Type: multipart/mixed; boundary=a\n\n--a\n\ntext\n--a\n"
        + content
        + "\nxxx\n--a--\n"
    )
    assert summarize(data).has_attachments is expected


def test_root_attachment() -> None:
    assert summarize(b"Content-Disposition: attachment\r\n\r\nx").has_attachments


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"A: b\r\n\r\nbody", 8),
        (b"A: b\n\nbody", 6),
        (b"A: b\r\n\nbody", 7),
        (b"A: b\n\r\nbody", 7),
        (b"\r\nbody", 2),
        (b"\nbody", 1),
        (b"A: b\r\n", None),
        (b"", None),
        (b"A: b\r\nC: d\r\n\r\n", 14),
    ],
)
def test_header_block_end(data: bytes, expected: int | None) -> None:
    assert header_block_end(data) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"NIL"),
        ("", b'""'),
        ("plain", b'"plain"'),
        ('say "hi"', b'"say \\"hi\\""'),
        ("back\\slash", b'"back\\\\slash"'),
        ("two\r\nlines", b"{10}\r\ntwo\r\nlines"),
        ("grüß", b"{6}\r\ngr\xc3\xbc\xc3\x9f"),
        ("nul\x00byte", b'"nulbyte"'),
    ],
)
def test_nstring(value: str | None, expected: bytes) -> None:
    assert nstring(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2 whitespace dropped
        ("=?utf-8?q?a?= b", "a b"),
        ("=?UTF-8*en?Q?hi_there?=", "hi there"),  # RFC 2231 §5 language
        ("=?x-unknown?q?abc?=", "abc"),
        ("=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="),
        ("=?utf-8?b?w7w?=", "ü"),  # missing padding
        ("no words", "no words"),
        ("=?utf-8?q?=E2=82?=", "\ufffd"),
    ],
)
def test_decode_words(text: str, expected: str) -> None:
    assert decode_words(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("a@b", [[None, None, "a", "b"]]),
        ("John Q. Public <jqp@x.test>", [["John Q. Public", None, "jqp", "x.test"]]),
        ('"j\\"q"@x.test', [[None, None, '"j\\"q"', "x.test"]]),
        ('"john"@x.test', [[None, None, "john", "x.test"]]),
        ('"john doe"@x.test', [[None, None, '"john doe"', "x.test"]]),
        ("a@b@x.test", [[None, None, "a@b", "x.test"]]),
        ("(comment only)", None),
        ("<a@[192.0.2.1]>", [[None, None, "a", "[192.0.2.1]"]]),
        ("nobody", [[None, None, "nobody", "MISSING_DOMAIN"]]),
        ("g: ;", [[None, None, "g", None], [None, None, None, None]]),
        ("g: a@b", [[None, None, "g", None], [None, None, "a", "b"], [None, None, None, None]]),
        ("<>", None),
        (",,,", None),
    ],
)
def test_parse_address_list(text: str, expected: list[list[str | None]] | None) -> None:
    assert parse_address_list(text) == expected


# ---------------------------------------------------------------- fuzzing


def check_invariants(data: bytes, s: MessageSummary) -> None:
    assert s.size == len(data)
    assert 0 <= s.header_size <= len(data)
    for part in walk(s.bodystructure):
        h, b, e = part["offsets"]
        assert 0 <= h <= b <= e <= len(data)
        assert part["size"] == e - b
        if part["type"] == "MULTIPART":
            assert part["parts"]
    serialize_envelope(s.envelope)
    serialize_body(s.bodystructure)
    serialize_bodystructure(s.bodystructure)
    # Storable as JSON text (no lone surrogates, no NUL).
    text = json.dumps(s.to_json(), ensure_ascii=False)
    text.encode("utf-8")
    assert "\\u0000" not in text


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    # The strict builder, not the fallback: a bug must fail here, not hide.
    check_invariants(data, _build_summary(data))
    summarize(data)


_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=a",
        b"Content-Type: multipart/alternative; boundary=\"b\"",
        b"Content-Type: multipart/digest; boundary=a",
        b"Content-Type: message/rfc822",
        b"Content-Type: text/plain; charset=utf-8; name=x",
        b"Content-Disposition: attachment; filename=\"x\"",
        b"Content-Transfer-Encoding: base64",
        b"From: a <b@c>, g: d@e;",
        b"To: \"q\\\"\" (c) <@r:x@y>",
        b"Subject: =?utf-8?q?x?=\xff",
        b"--a", b"--a--", b"--b", b"--b--", b"", b"body \xe4", b" folded", b"\x00",
    ]
)  # fmt: skip


@settings(max_examples=300)
@given(st.lists(_LINES, max_size=40), st.sampled_from([b"\r\n", b"\n"]))
def test_mime_shaped_input_never_raises(lines: list[bytes], eol: bytes) -> None:
    data = eol.join(lines)
    check_invariants(data, _build_summary(data))
