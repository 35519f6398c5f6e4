"""DSN/NDR messages from postwerk.transport.dsn, parsed back with the stdlib `email` package."""

from __future__ import annotations

import email
import email.parser
import email.policy
import email.utils
import re
from email.message import EmailMessage
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwerk.transport.dsn import (
    DEFAULT_NOTIFY,
    FULL_RETURN_LIMIT,
    MAX_SUBJECT_CHARS,
    DsnKind,
    DsnRequest,
    RecipientReport,
    build_dsn,
    dsn_allowed,
    notify_wanted,
    returns_full_message,
)

NOW = 1_700_000_200.0
ARRIVAL = 1_700_000_000.0
ORIGINAL = (
    b"Received: from client.example.com ([192.0.2.10]) by mail.example.com\r\n"
    b" with ESMTPSA; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Quarterly figures\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:19 +0000\r\n"
    b"Message-ID: <orig-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"the figures are attached.\r\n"
)
ORIGINAL_HEADERS = ORIGINAL.split(b"\r\n\r\n", 1)[0] + b"\r\n"

TOP_FIELDS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
]


def failed(
    address: str = "bob@example.net",
    status: str = "5.1.1",
    diagnostic: str | None = "550 5.1.1 User unknown",
    **kw: Any,
) -> RecipientReport:
    values: dict[str, Any] = {
        "final_recipient": address,
        "action": DsnKind.FAILED,
        "status": status,
        "original_recipient": f"rfc822;{address}",
        "diagnostic": diagnostic,
        "remote_mta": "mx1.example.net",
        "last_attempt": NOW - 60,
    }
    values.update(kw)
    return RecipientReport(**values)


def request(*recipients: RecipientReport, **kw: Any) -> DsnRequest:
    values: dict[str, Any] = {
        "reporting_mta": "mail.example.com",
        "original_sender": "alice@example.com",
        "arrival_date": ARRIVAL,
        "recipients": recipients or (failed(),),
        "original_message": ORIGINAL,
        "subject": "Quarterly figures",
        "original_message_id": "<orig-1@example.com>",
        "original_envelope_id": "QQ314159",
    }
    values.update(kw)
    return DsnRequest(**values)


def build(req: DsnRequest, **kw: Any) -> bytes:
    data = build_dsn(req, now=NOW, message_id="<dsn-1@mail.example.com>", **kw)
    assert_wire_clean(data)
    return data


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def assert_wire_clean(data: bytes) -> None:
    """CRLF only, no bare CR or LF, no NUL, every line at most 998 octets (RFC 5322 §2.1.1)."""
    assert data.endswith(b"\r\n")
    assert b"\x00" not in data
    for line in data.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line
        assert len(line) <= 998


def raw_parts(data: bytes, msg: EmailMessage) -> list[tuple[bytes, bytes]]:
    """(header block, body) of each top-level part, cut from the wire bytes."""
    boundary = msg.get_boundary()
    assert boundary
    delimiter = b"\r\n--" + boundary.encode()
    chunks = data.split(delimiter)
    assert chunks[-1] == b"--\r\n"  # the close delimiter ends the message
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n")
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        parts.append((head + b"\r\n", body))
    return parts


def status_blocks(data: bytes) -> list[list[tuple[str, str]]]:
    """Per-message fields, then each per-recipient block, of the status part (either type)."""
    msg = parse(data)
    _, body = raw_parts(data, msg)[1]
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    blocks = body.removesuffix(b"\r\n").split(b"\r\n\r\n")
    return [[(k, str(v)) for k, v in parser.parsebytes(b + b"\r\n").items()] for b in blocks]


def fields(block: list[tuple[str, str]]) -> dict[str, str]:
    return dict(block)


def text_of(msg: EmailMessage, index: int = 0) -> str:
    """A text part's decoded content, with "\n" line ends."""
    part = cast(EmailMessage, msg.get_payload()[index])  # type: ignore[index]
    return cast(str, part.get_content()).replace("\r\n", "\n")


def flat(text: str) -> str:
    """Text with line wrapping undone, to look for a phrase."""
    return " ".join(text.split())


def parts_of(msg: EmailMessage) -> list[EmailMessage]:
    return cast(list[EmailMessage], msg.get_payload())


# ---------------------------------------------------------------- the NDR, field by field


def test_ndr_top_level_headers() -> None:
    data = build(request())
    msg = parse(data)
    assert list(msg.keys()) == TOP_FIELDS
    assert msg["From"].addresses[0].display_name == "Mail Delivery System"
    assert msg["From"].addresses[0].addr_spec == "postmaster@mail.example.com"
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"
    assert b"\r\nTo: <alice@example.com>\r\n" in data
    assert msg["Subject"] == "Undeliverable: Quarterly figures"
    date = email.utils.parsedate_to_datetime(str(msg["Date"]))
    assert date.timestamp() == NOW
    assert str(date.utcoffset()) == "0:00:00"
    assert msg["Message-ID"] == "<dsn-1@mail.example.com>"
    assert msg["References"] == "<orig-1@example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert not msg.defects


def test_ndr_part_order_and_types() -> None:
    msg = parse(build(request()))
    parts = parts_of(msg)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert parts[0].get_content_charset() == "utf-8"
    assert all(not p.defects for p in parts)


def test_ndr_status_part_fields() -> None:
    data = build(request())
    per_message, recipient = status_blocks(data)
    assert per_message == [
        ("Original-Envelope-Id", "QQ314159"),
        ("Reporting-MTA", "dns; mail.example.com"),
        ("Arrival-Date", "Tue, 14 Nov 2023 22:13:20 +0000"),
    ]
    assert recipient == [
        ("Original-Recipient", "rfc822;bob@example.net"),
        ("Final-Recipient", "rfc822;bob@example.net"),
        ("Action", "failed"),
        ("Status", "5.1.1"),
        ("Remote-MTA", "dns; mx1.example.net"),
        ("Diagnostic-Code", "smtp; 550 5.1.1 User unknown"),
        ("Last-Attempt-Date", "Tue, 14 Nov 2023 22:15:40 +0000"),
    ]


def test_stdlib_reads_the_status_part_as_delivery_status() -> None:
    # email's own message/delivery-status handling: one sub-message per block.
    msg = parse(build(request(failed(), failed("carol@example.net"))))
    blocks = cast(list[EmailMessage], parts_of(msg)[1].get_payload())
    assert len(blocks) == 3
    assert blocks[0]["Reporting-MTA"] == "dns; mail.example.com"
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822;bob@example.net",
        "rfc822;carol@example.net",
    ]


def test_ndr_returns_headers_by_default() -> None:
    data = build(request())
    msg = parse(data)
    headers_part = parts_of(msg)[2]
    assert headers_part["Content-Transfer-Encoding"] == "7bit"
    _, raw = raw_parts(data, msg)[2]
    assert raw == ORIGINAL_HEADERS
    assert b"the figures are attached" not in data


def test_human_part_has_user_and_admin_sections() -> None:
    text = text_of(parse(build(request())))
    user, admin = text.split("Diagnostic information for administrators:")
    assert "Your message couldn't be delivered to these recipients:" in user
    assert "    bob@example.net" in user
    assert "no mailbox with this address" in user
    assert "Generating server: mail.example.com" in admin
    assert "Envelope ID: QQ314159" in admin
    recipient = admin.split("bob@example.net\n", 1)[1]
    assert "Action: failed\n" in recipient
    assert "Status: 5.1.1\n" in recipient
    assert "Remote server: mx1.example.net\n" in recipient
    assert "Remote server reply: 550 5.1.1 User unknown\n" in recipient
    assert "Last attempt: Tue, 14 Nov 2023 22:15:40 +0000\n" in recipient
    # The original header block follows, inline, as Exchange shows it.
    headers = admin.split("Original message headers:\n\n", 1)[1]
    assert headers == ORIGINAL_HEADERS.decode().replace("\r\n", "\n")


def test_human_part_shows_the_address_as_the_sender_wrote_it() -> None:
    report = failed(original_recipient="rfc822;Bob.Smith@Example.NET")
    text = text_of(parse(build(request(report))))
    user, admin = text.split("Diagnostic information for administrators:")
    assert "    Bob.Smith@Example.NET\n" in user
    assert "bob@example.net\nOriginal recipient: rfc822;Bob.Smith@Example.NET\n" in admin


def test_original_envelope_id_and_references_are_optional() -> None:
    data = build(request(original_envelope_id=None, original_message_id=None))
    msg = parse(data)
    assert "References" not in msg
    per_message = fields(status_blocks(data)[0])
    assert "Original-Envelope-Id" not in per_message
    assert "Envelope ID" not in text_of(msg)


def test_message_ids_are_bracketed_once() -> None:
    req = request(original_message_id="orig-2@example.com")
    msg = parse(build_dsn(req, now=NOW, message_id="dsn-2@mail.example.com"))
    assert msg["Message-ID"] == "<dsn-2@mail.example.com>"
    assert msg["References"] == "<orig-2@example.com>"


def test_unusable_message_id_gets_a_derived_one() -> None:
    msg = parse(build_dsn(request(), now=NOW, message_id=" <> "))
    assert re.fullmatch(r"<dsn\.[0-9a-f]{24}@mail\.example\.com>", str(msg["Message-ID"]))


def test_postmaster_address_can_be_given() -> None:
    msg = parse(build(request(postmaster="postmaster@example.com")))
    assert msg["From"].addresses[0].addr_spec == "postmaster@example.com"
    assert msg["From"].addresses[0].display_name == "Mail Delivery System"


def test_output_is_deterministic() -> None:
    assert build(request()) == build(request())
    other = build_dsn(request(), now=NOW, message_id="<dsn-other@mail.example.com>")
    assert parse(other).get_boundary() != parse(build(request())).get_boundary()


def test_boundary_never_occurs_in_the_content() -> None:
    first = parse(build(request())).get_boundary()
    assert first
    # An original that contains the boundary we would pick forces another one.
    trap = ORIGINAL + b"--" + first.encode() + b"--\r\n"
    data = build(request(original_message=trap, ret="FULL"))
    msg = parse(data)
    assert msg.get_boundary() != first
    assert len(parts_of(msg)) == 3
    assert raw_parts(data, msg)[2][1] == trap


# ---------------------------------------------------------------- RET


def test_ret_full_returns_the_whole_message() -> None:
    data = build(request(ret="FULL"))
    msg = parse(data)
    part = parts_of(msg)[2]
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "7bit"
    assert part["Content-Description"] == "Undelivered Message"
    _, raw = raw_parts(data, msg)[2]
    assert raw == ORIGINAL
    inner = cast(EmailMessage, part.get_payload()[0])  # type: ignore[index]
    assert inner["Subject"] == "Quarterly figures"
    assert "the figures are attached" in cast(str, inner.get_content())
    assert "couldn't be returned in full" not in flat(text_of(msg))


@pytest.mark.parametrize("ret", [None, "HDRS", "hdrs", "bogus"])
def test_anything_but_ret_full_returns_headers(ret: str | None) -> None:
    msg = parse(build(request(ret=ret)))
    assert parts_of(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "couldn't be returned in full" not in flat(text_of(msg))


def test_ret_full_is_case_insensitive() -> None:
    msg = parse(build(request(ret="full")))
    assert parts_of(msg)[2].get_content_type() == "message/rfc822"


def test_ret_full_over_the_size_cap_returns_headers_and_says_so() -> None:
    big = ORIGINAL + b"x" * 200 + b"\r\n"
    msg = parse(build(request(original_message=big, ret="FULL"), full_limit=len(big) - 1))
    assert parts_of(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "couldn't be returned in full" in flat(text_of(msg))
    at_cap = parse(build(request(original_message=big, ret="FULL"), full_limit=len(big)))
    assert parts_of(at_cap)[2].get_content_type() == "message/rfc822"


def test_ret_full_default_cap_is_one_mebibyte() -> None:
    assert FULL_RETURN_LIMIT == 1024 * 1024
    body = (b"y" * 998 + b"\r\n") * (FULL_RETURN_LIMIT // 1000 + 1)
    msg = parse(build(request(original_message=ORIGINAL + body, ret="FULL")))
    assert parts_of(msg)[2].get_content_type() == "text/rfc822-headers"


@pytest.mark.parametrize(
    "body",
    [b"binary\x00data\r\n", b"z" * 999 + b"\r\n"],
    ids=["nul", "line-over-998"],
)
def test_ret_full_of_an_unsendable_body_falls_back_to_headers(body: bytes) -> None:
    msg = parse(build(request(original_message=ORIGINAL + body, ret="FULL")))
    assert parts_of(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "couldn't be returned in full" in flat(text_of(msg))


def test_ret_full_with_an_8bit_body_is_sent_8bit() -> None:
    original = ORIGINAL + "Grüße\r\n".encode()
    data = build(request(original_message=original, ret="FULL"))
    msg = parse(data)
    assert msg["Content-Transfer-Encoding"] == "8bit"
    part = parts_of(msg)[2]
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "8bit"
    assert raw_parts(data, msg)[2][1] == original


def test_ret_full_applies_to_failures_only() -> None:
    delayed = RecipientReport(
        final_recipient="bob@example.net",
        action=DsnKind.DELAYED,
        status="4.4.1",
        will_retry_until=ARRIVAL + 2 * 86400,
    )
    msg = parse(build(request(delayed, ret="FULL")))
    assert parts_of(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "couldn't be returned in full" not in flat(text_of(msg))


@pytest.mark.parametrize(
    ("ret", "kind", "size", "expected"),
    [
        ("FULL", DsnKind.FAILED, 100, True),
        ("full", DsnKind.FAILED, FULL_RETURN_LIMIT, True),
        ("FULL", DsnKind.FAILED, FULL_RETURN_LIMIT + 1, False),
        ("HDRS", DsnKind.FAILED, 100, False),
        (None, DsnKind.FAILED, 100, False),
        ("FULL", DsnKind.DELAYED, 100, False),
        ("FULL", DsnKind.DELIVERED, 100, False),
        ("FULL", DsnKind.RELAYED, 100, False),
        ("FULL", DsnKind.EXPANDED, 100, False),
    ],
)
def test_returns_full_message(ret: str | None, kind: DsnKind, size: int, expected: bool) -> None:
    assert returns_full_message(ret, kind, size) is expected


def test_original_with_bare_lf_is_normalised() -> None:
    original = ORIGINAL.replace(b"\r\n", b"\n")
    data = build(request(original_message=original, ret="FULL"))
    msg = parse(data)
    assert raw_parts(data, msg)[2][1] == ORIGINAL
    headers = parse(build(request(original_message=original)))
    assert text_of(headers, 2) == ORIGINAL_HEADERS.decode().replace("\r\n", "\n")


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        (b"Subject: no body, no blank line", b"Subject: no body, no blank line\r\n"),
        (b"\r\nbody only\r\n", b""),
        (b"", b""),
    ],
)
def test_odd_originals_still_give_a_header_part(original: bytes, expected: bytes) -> None:
    data = build(request(original_message=original))
    msg = parse(data)
    assert parts_of(msg)[2].get_content_type() == "text/rfc822-headers"
    assert raw_parts(data, msg)[2][1] == expected


def test_8bit_original_headers_travel_as_global_headers() -> None:
    original = "From: Jörg <joerg@example.com>\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    data = build(request(original_message=original))
    msg = parse(data)
    part = parts_of(msg)[2]
    assert part.get_content_type() == "message/global-headers"  # RFC 6533 §6.3
    assert part["Content-Transfer-Encoding"] == "8bit"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert raw_parts(data, msg)[2][1] == original.split(b"\r\n\r\n")[0] + b"\r\n"
    full = parse(build(request(original_message=original, ret="FULL")))
    assert parts_of(full)[2].get_content_type() == "message/global"  # RFC 6532 §3.7


def test_unclean_original_headers_are_quoted_printable() -> None:
    original = b"Subject: " + b"w" * 1200 + b"\r\nX-Nul: a\x00b\r\n\r\nbody\r\n"
    msg = parse(build(request(original_message=original)))
    part = parts_of(msg)[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    content = cast(str, part.get_content())
    assert "w" * 1200 in content.replace("\n", "")
    assert "a\x00b" in content


# ---------------------------------------------------------------- kinds and recipients


def test_multiple_recipients_keep_their_order() -> None:
    reports = (
        failed("bob@example.net"),
        failed("carol@example.net", status="5.2.2", diagnostic="552 5.2.2 Mailbox full"),
        failed("dave@example.net", status="5.7.1", diagnostic="550 5.7.1 Relaying denied"),
    )
    data = build(request(*reports))
    blocks = status_blocks(data)
    assert len(blocks) == 4
    assert [fields(b)["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822;bob@example.net",
        "rfc822;carol@example.net",
        "rfc822;dave@example.net",
    ]
    assert [fields(b)["Status"] for b in blocks[1:]] == ["5.1.1", "5.2.2", "5.7.1"]
    text = flat(text_of(parse(data)))
    assert text.index("bob@example.net") < text.index("carol@example.net")
    assert "mailbox is full" in text
    assert "security or policy setting" in text


def test_delay_notice_with_will_retry_until() -> None:
    until = ARRIVAL + 2 * 86400
    delayed = RecipientReport(
        final_recipient="bob@example.net",
        action=DsnKind.DELAYED,
        status="4.4.1",
        remote_mta="mx1.example.net",
        diagnostic=None,
        last_attempt=NOW - 60,
        will_retry_until=until,
    )
    data = build(request(delayed))
    msg = parse(data)
    assert msg["Subject"] == "Delivery delayed: Quarterly figures"
    recipient = fields(status_blocks(data)[1])
    assert recipient["Action"] == "delayed"
    assert recipient["Status"] == "4.4.1"
    assert "Diagnostic-Code" not in recipient
    assert email.utils.parsedate_to_datetime(recipient["Will-Retry-Until"]).timestamp() == until
    text = text_of(msg)
    assert "hasn't reached these recipients yet" in flat(text)
    assert "keep trying until Thu, 16 Nov 2023 22:13:20 +0000" in flat(text)
    assert "Will retry until: Thu, 16 Nov 2023 22:13:20 +0000" in text


def test_will_retry_until_is_written_for_delays_only() -> None:
    data = build(request(failed(will_retry_until=NOW + 3600)))
    assert "Will-Retry-Until" not in fields(status_blocks(data)[1])
    assert "Will retry until" not in text_of(parse(data))


@pytest.mark.parametrize(
    ("kind", "prefix", "heading"),
    [
        (DsnKind.DELIVERED, "Delivered", "was delivered to these recipients"),
        (DsnKind.RELAYED, "Relayed", "passed on towards these recipients"),
        (DsnKind.EXPANDED, "Expanded", "members of these distribution lists"),
    ],
)
def test_success_notices(kind: DsnKind, prefix: str, heading: str) -> None:
    report = RecipientReport(
        final_recipient="bob@example.net", action=kind, status="2.0.0", remote_mta="mx1"
    )
    data = build(request(report, ret="FULL"))
    msg = parse(data)
    assert msg["Subject"] == f"{prefix}: Quarterly figures"
    assert fields(status_blocks(data)[1])["Action"] == kind.value
    assert heading in flat(text_of(msg))
    assert parts_of(msg)[2].get_content_type() == "text/rfc822-headers"


def test_mixed_notice_is_titled_by_its_most_severe_action() -> None:
    delivered = RecipientReport(
        final_recipient="carol@example.net", action=DsnKind.DELIVERED, status="2.0.0"
    )
    delayed = RecipientReport(
        final_recipient="dave@example.net", action=DsnKind.DELAYED, status="4.4.2"
    )
    req = request(delivered, delayed, failed())
    assert req.kind is DsnKind.FAILED
    msg = parse(build(req))
    assert msg["Subject"] == "Undeliverable: Quarterly figures"
    text = text_of(msg).split("Diagnostic information")[0]
    # Sections by severity: failed, then delayed, then delivered.
    assert text.index("bob@") < text.index("dave@") < text.index("carol@")
    assert request(delivered, delayed).kind is DsnKind.DELAYED


def test_request_needs_a_recipient() -> None:
    with pytest.raises(ValueError, match="at least one recipient"):
        DsnRequest(
            reporting_mta="mx",
            original_sender="a@b",
            arrival_date=0,
            recipients=(),
            original_message=b"",
        )


@pytest.mark.parametrize(
    ("action", "given", "written"),
    [
        (DsnKind.FAILED, "5.1.1", "5.1.1"),
        (DsnKind.FAILED, " 5.01.001 ", "5.1.1"),
        (DsnKind.FAILED, "550", "5.0.0"),
        (DsnKind.FAILED, "", "5.0.0"),
        (DsnKind.DELAYED, "x", "4.0.0"),
        (DsnKind.DELIVERED, "2.0", "2.0.0"),
        (DsnKind.FAILED, "4.4.7", "4.4.7"),  # an expired message fails with its last 4.x.x
        (DsnKind.FAILED, "3.1.1", "5.0.0"),  # RFC 3463: classes are 2, 4 and 5
    ],
)
def test_status_code_is_checked(action: DsnKind, given: str, written: str) -> None:
    report = RecipientReport(final_recipient="bob@example.net", action=action, status=given)
    assert fields(status_blocks(build(request(report)))[1])["Status"] == written


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        ("5.1.1", "no mailbox with this address"),
        ("5.1.10", "null MX"),
        ("5.2.2", "mailbox is full"),
        ("5.3.4", "larger than the receiving mail system accepts"),
        ("5.4.4", "No way to reach the recipient's domain"),
        ("5.4.6", "loop"),
        ("4.4.7", "within the time this server keeps trying"),
        ("5.4.9", "network or routing problem"),
        ("5.6.7", "international characters"),
        ("5.7.1", "security or policy setting"),
        ("5.7.26", "security or policy setting"),
        ("5.9.9", "The recipient's mail system refused the message."),
        ("4.9.9", "A temporary problem"),
    ],
)
def test_user_explanation_by_status(status: str, phrase: str) -> None:
    text = text_of(parse(build(request(failed(status=status)))))
    user = text.split("Diagnostic information")[0]
    assert phrase in flat(user)


# ---------------------------------------------------------------- diagnostics


def test_multiline_reply_becomes_one_line() -> None:
    reply = (
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Try again"
    )
    data = build(request(failed(diagnostic=reply)))
    code = fields(status_blocks(data)[1])["Diagnostic-Code"]
    assert code == (
        "smtp; 550-5.1.1 The email account that you tried to reach does not exist."
        " 550 5.1.1 Try again"
    )


def test_local_diagnostic_is_not_called_smtp() -> None:
    report = failed(
        status="5.4.4", diagnostic="DNS: example.invalid does not exist", remote_mta=None
    )
    data = build(request(report))
    recipient = fields(status_blocks(data)[1])
    assert recipient["Diagnostic-Code"] == "X-Postwerk; DNS: example.invalid does not exist"
    assert "Remote-MTA" not in recipient
    text = text_of(parse(data))
    assert "Detail: DNS: example.invalid does not exist" in text
    assert "Remote server: (none; found by the generating server)" in text


def test_long_diagnostic_is_folded_and_capped() -> None:
    words = " ".join(f"word{i}" for i in range(400))
    data = build(request(failed(diagnostic="550 5.7.1 " + words)))
    _, body = raw_parts(data, parse(data))[1]
    code_lines = body.split(b"Diagnostic-Code:")[1].split(b"\r\nLast-Attempt-Date")[0]
    assert all(len(line) <= 78 for line in code_lines.split(b"\r\n"))
    code = fields(status_blocks(data)[1])["Diagnostic-Code"]
    assert code.startswith("smtp; 550 5.7.1 word0 word1")
    assert code.endswith("...")
    assert len(code.encode()) <= 910


def test_non_ascii_diagnostic_in_an_ascii_dsn_is_escaped() -> None:
    data = build(request(failed(diagnostic="550 5.1.1 Empfänger unbekannt")))
    msg = parse(data)
    assert parts_of(msg)[1].get_content_type() == "message/delivery-status"
    code = fields(status_blocks(data)[1])["Diagnostic-Code"]
    assert code == "smtp; 550 5.1.1 Empf\\x{E4}nger unbekannt"  # RFC 6533 EmbeddedUnicodeChar
    assert raw_parts(data, msg)[1][1].isascii()


def test_header_injection_attempts_stay_inside_their_values() -> None:
    evil = "\r\nBcc: victim@example.org\r\n\r\nX-Injected: 1"
    report = failed(
        diagnostic="550 5.1.1 nope" + evil,
        remote_mta="mx1.example.net" + evil,
        original_recipient="rfc822;bob@example.net" + evil,
        final_recipient="bob@example.net" + evil,
    )
    req = request(
        report,
        subject="Hello" + evil,
        original_sender="alice@example.com>" + evil,
        original_envelope_id="ENV" + evil,
        original_message_id="<orig@example.com>" + evil,
        reporting_mta="mail.example.com" + evil,
        postmaster="postmaster@example.com" + evil,
    )
    data = build(req)
    msg = parse(data)
    assert list(msg.keys()) == TOP_FIELDS
    assert "Bcc" not in msg and "X-Injected" not in msg
    assert "\n" not in str(msg["Subject"])
    blocks = status_blocks(data)
    assert len(blocks) == 2
    assert [k for k, _ in blocks[0]] == ["Original-Envelope-Id", "Reporting-MTA", "Arrival-Date"]
    assert [k for k, _ in blocks[1]] == [
        "Original-Recipient",
        "Final-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
        "Last-Attempt-Date",
    ]
    recipient = fields(blocks[1])
    assert recipient["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 nope Bcc: victim@example.org X-Injected: 1"
    )
    assert recipient["Remote-MTA"] == "dns; mx1.example.net Bcc: victim@example.org X-Injected: 1"
    assert fields(blocks[0])["Reporting-MTA"] == "dns; mail.example.com"
    # The sender's brackets cannot close the To address early.
    to_line = data.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0]
    assert to_line.count(b"<") == 1 and to_line.endswith(b">")


def test_other_control_characters_are_removed_from_values() -> None:
    nasty = "550 5.1.1 a\x00b\x0bc\x1bd\x85e\u2028f\tg"
    code = fields(status_blocks(build(request(failed(diagnostic=nasty))))[1])["Diagnostic-Code"]
    assert code == "smtp; 550 5.1.1 a b c d e f g"


# ---------------------------------------------------------------- subjects


def test_non_ascii_subject_is_rfc2047_encoded() -> None:
    data = build(request(subject="Grüße aus Köln — 価格表"))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"=?utf-8?b?" in head
    assert parse(data)["Subject"] == "Undeliverable: Grüße aus Köln — 価格表"


def test_long_non_ascii_subject_is_folded_and_cut() -> None:
    subject = "Ärger " * 100
    data = build(request(subject=subject))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    decoded = str(parse(data)["Subject"])
    assert decoded.startswith("Undeliverable: Ärger Ärger")
    assert decoded.endswith("...")
    assert len(decoded) <= len("Undeliverable: ") + MAX_SUBJECT_CHARS


def test_long_ascii_subject_is_folded_at_spaces() -> None:
    subject = "quarterly " * 20
    data = build(request(subject=subject))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert parse(data)["Subject"] == "Undeliverable: " + subject.strip()


def test_ascii_subject_that_looks_encoded_is_encoded() -> None:
    # Else a mail client would decode the literal text as an encoded word.
    subject = "=?utf-8?b?SGk=?="
    data = build(request(subject=subject))
    assert b"Subject: Undeliverable: =?utf-8?b?SGk=?=" not in data
    assert parse(data)["Subject"] == f"Undeliverable: {subject}"


def test_empty_subject() -> None:
    assert parse(build(request(subject="  ")))["Subject"] == "Undeliverable: (no subject)"


# ---------------------------------------------------------------- UTF-8 addresses (RFC 6533)


def test_utf8_recipient_makes_a_global_dsn() -> None:
    report = failed("jörg@exämple.de", diagnostic="550 5.1.1 Empfänger unbekannt")
    data = build(request(report, original_sender="アリス@example.jp"))
    msg = parse(data)
    assert msg.get_param("report-type") == "global-delivery-status"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert "\r\nTo: <アリス@example.jp>\r\n".encode() in data  # RFC 6532 UTF-8 header
    status = parts_of(msg)[1]
    assert status.get_content_type() == "message/global-delivery-status"
    assert status["Content-Transfer-Encoding"] == "8bit"
    recipient = fields(status_blocks(data)[1])
    assert recipient["Original-Recipient"] == "utf-8;jörg@exämple.de"
    assert recipient["Final-Recipient"] == "utf-8;jörg@exämple.de"
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 Empfänger unbekannt"
    assert "    jörg@exämple.de" in text_of(msg)


def test_ascii_recipients_keep_rfc822_in_a_global_dsn() -> None:
    data = build(request(failed("bob@example.net"), failed("jörg@example.de")))
    blocks = status_blocks(data)
    assert fields(blocks[1])["Final-Recipient"] == "rfc822;bob@example.net"
    assert fields(blocks[2])["Final-Recipient"] == "utf-8;jörg@example.de"


def test_utf8_original_recipient_alone_makes_a_global_dsn() -> None:
    report = failed("joerg@example.de", original_recipient="rfc822;jörg@example.de")
    data = build(request(report))
    assert parts_of(parse(data))[1].get_content_type() == "message/global-delivery-status"
    assert fields(status_blocks(data)[1])["Original-Recipient"] == "utf-8;jörg@example.de"


def test_ascii_addresses_never_make_a_global_dsn() -> None:
    # Non-ASCII elsewhere (subject, diagnostic, ENVID, original headers) is not enough.
    original = "Subject: Grüße\r\n\r\n".encode()
    req = request(
        failed(diagnostic="550 nö"),
        subject="Grüße",
        original_envelope_id="ümlaut",
        original_message=original,
    )
    data = build(req)
    msg = parse(data)
    assert msg.get_param("report-type") == "delivery-status"
    assert parts_of(msg)[1].get_content_type() == "message/delivery-status"
    assert fields(status_blocks(data)[0])["Original-Envelope-Id"] == "\\x{FC}mlaut"


@pytest.mark.parametrize(
    ("orcpt", "written"),
    [
        ("rfc822;Bob@example.net", "rfc822;Bob@example.net"),
        ("RFC822;bob@example.net", "rfc822;bob@example.net"),
        ("bob@example.net", "rfc822;bob@example.net"),  # no type given
        ("x400;c=de;a=x;p=y;s=bob", "x400;c=de;a=x;p=y;s=bob"),  # foreign types pass through
        ("utf-8;j\\x{F6}rg@example.de", "utf-8;j\\x{F6}rg@example.de"),
    ],
)
def test_original_recipient_forms(orcpt: str, written: str) -> None:
    data = build(request(failed(original_recipient=orcpt)))
    assert fields(status_blocks(data)[1])["Original-Recipient"] == written


# ---------------------------------------------------------------- NOTIFY (RFC 3461 §4.1)

_ALL_KINDS = list(DsnKind)


@pytest.mark.parametrize(
    ("notify", "wanted"),
    [
        (None, {DsnKind.FAILED, DsnKind.DELAYED}),
        ((), {DsnKind.FAILED, DsnKind.DELAYED}),
        (("NEVER",), set()),
        (("SUCCESS",), {DsnKind.DELIVERED, DsnKind.RELAYED, DsnKind.EXPANDED}),
        (("FAILURE",), {DsnKind.FAILED}),
        (("DELAY",), {DsnKind.DELAYED}),
        (("SUCCESS", "FAILURE"), set(DsnKind) - {DsnKind.DELAYED}),
        (("FAILURE", "DELAY"), {DsnKind.FAILED, DsnKind.DELAYED}),
        (("SUCCESS", "FAILURE", "DELAY"), set(DsnKind)),
        (("success", " failure "), set(DsnKind) - {DsnKind.DELAYED}),
        (("NEVER", "FAILURE"), set()),  # invalid on the wire; NEVER wins
        ("SUCCESS,DELAY", set(DsnKind) - {DsnKind.FAILED}),  # a string is split
        ("NEVER", set()),
    ],
)
def test_notify_wanted(notify: Any, wanted: set[DsnKind]) -> None:
    for kind in _ALL_KINDS:
        assert notify_wanted(notify, kind) is (kind in wanted), kind


def test_default_notify_is_failure_and_delay() -> None:
    assert DEFAULT_NOTIFY == ("FAILURE", "DELAY")


# ---------------------------------------------------------------- never bounce a bounce


def _dsn_headers(content_type: str) -> bytes:
    return f"From: MAILER-DAEMON@x\r\nContent-Type: {content_type}\r\n\r\nbody\r\n".encode()


@pytest.mark.parametrize(
    ("sender", "message", "allowed"),
    [
        ("alice@example.com", ORIGINAL, True),
        ("", ORIGINAL, False),
        ("<>", ORIGINAL, False),
        ("  ", ORIGINAL, False),
        (
            "alice@example.com",
            _dsn_headers('multipart/report; report-type=delivery-status; boundary="b"'),
            False,
        ),
        (
            "alice@example.com",
            _dsn_headers('Multipart/Report; boundary="b"; Report-Type="Delivery-Status"'),
            False,
        ),
        (
            "alice@example.com",
            _dsn_headers('multipart/report;\r\n report-type=global-delivery-status; boundary="b"'),
            False,
        ),
        ("alice@example.com", _dsn_headers("message/delivery-status"), False),
        # An MDN or other report is not a DSN: its failure is still reported.
        (
            "alice@example.com",
            _dsn_headers('multipart/report; report-type=disposition-notification; boundary="b"'),
            True,
        ),
        ("alice@example.com", _dsn_headers('multipart/report; boundary="b"'), True),
        ("alice@example.com", _dsn_headers('multipart/mixed; boundary="b"'), True),
        # RFC 3834 rules auto-responders, not MTAs: auto-submitted mail still gets NDRs.
        ("list-bounces@example.com", b"Auto-Submitted: auto-generated\r\n\r\nx\r\n", True),
        ("alice@example.com", b"Auto-Submitted: auto-replied\r\n\r\nout of office\r\n", True),
        # Only the header block counts: a DSN quoted in a body is not a DSN.
        (
            "alice@example.com",
            b"Subject: fwd\r\n\r\n" + _dsn_headers("message/delivery-status"),
            True,
        ),
        ("alice@example.com", b"", True),
        ("alice@example.com", b"\x00\xff garbage", True),
    ],
)
def test_dsn_allowed(sender: str, message: bytes, allowed: bool) -> None:
    assert dsn_allowed(sender, message) is allowed


def test_our_own_dsn_is_never_bounced() -> None:
    assert not dsn_allowed("postmaster@example.com", build(request()))
    utf8 = build(request(failed("jörg@example.de")))
    assert not dsn_allowed("postmaster@example.com", utf8)


# ---------------------------------------------------------------- property: never raises, parses

# Hypothesis's default alphabet: every code point but surrogates, controls and CR/LF included.
_text = st.text(max_size=120)
_long_text = st.text(max_size=1500)
_times = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
_reports = st.builds(
    RecipientReport,
    final_recipient=_text,
    action=st.sampled_from(list(DsnKind)),
    status=st.one_of(st.sampled_from(["5.1.1", "4.4.7", "2.0.0", "5.7.26"]), _text),
    original_recipient=st.one_of(st.none(), _text),
    diagnostic=st.one_of(st.none(), _long_text),
    remote_mta=st.one_of(st.none(), _text),
    last_attempt=_times,
    will_retry_until=_times,
)
_originals = st.one_of(
    st.binary(max_size=3000),
    st.just(ORIGINAL),
    st.builds(lambda head, body: head + b"\r\n\r\n" + body, st.binary(), st.binary()),
)
_requests = st.builds(
    DsnRequest,
    reporting_mta=_text,
    original_sender=_text,
    arrival_date=st.floats(allow_nan=True, allow_infinity=True),
    recipients=st.lists(_reports, min_size=1, max_size=4).map(tuple),
    original_message=_originals,
    subject=_long_text,
    original_message_id=st.one_of(st.none(), _text),
    original_envelope_id=st.one_of(st.none(), _text),
    ret=st.sampled_from([None, "FULL", "HDRS", "full", "junk"]),
    postmaster=st.one_of(st.none(), _text),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=_requests, now=st.floats(allow_nan=True, allow_infinity=True), message_id=_text)
def test_build_dsn_never_raises_and_always_parses(
    req: DsnRequest, now: float, message_id: str
) -> None:
    data = build_dsn(req, now=now, message_id=message_id)
    assert_wire_clean(data)
    msg = parse(data)
    expected = [f for f in TOP_FIELDS if f != "References" or "References" in msg]
    assert list(msg.keys()) == expected
    assert msg.get_content_type() == "multipart/report"
    parts = parts_of(msg)
    assert len(parts) == 3
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() in {
        "message/delivery-status",
        "message/global-delivery-status",
    }
    assert msg.get_param("report-type") == parts[1].get_content_subtype()
    assert parts[2].get_content_type() in {
        "text/rfc822-headers",
        "message/global-headers",
        "message/rfc822",
        "message/global",
    }
    blocks = status_blocks(data)
    assert len(blocks) == 1 + len(req.recipients)
    assert [fields(b)["Action"] for b in blocks[1:]] == [r.action.value for r in req.recipients]
    assert all(re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", fields(b)["Status"]) for b in blocks[1:])
    assert str(msg["Subject"]).startswith(
        ("Undeliverable: ", "Delivery delayed: ", "Delivered: ", "Relayed: ", "Expanded: ")
    )
    assert not dsn_allowed("postmaster@example.com", data)
