"""Small pure helpers of the outbound delivery queues."""

from __future__ import annotations

from postwerk.transport.dsn import DsnKind
from postwerk.transport.outbound import _status_of, dsn_headers


def test_dsn_headers_unfold_and_decode() -> None:
    data = (
        b"From: Mail Delivery System <postmaster@mx.test>\r\n"
        b"Message-ID: <n1@mx.test>\r\n"
        b"Subject: Undeliverable:\r\n =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"\r\nSubject: not a header\r\n"
    )
    assert dsn_headers(data) == ("<n1@mx.test>", "Undeliverable: Grüße")
    assert dsn_headers(b"no headers at all") == ("", "")


def test_status_of_reply() -> None:
    assert _status_of("550 5.1.1 User unknown", DsnKind.FAILED) == "5.1.1"
    assert _status_of("550 User unknown", DsnKind.FAILED) == "5.0.0"
    assert _status_of("451 try later", DsnKind.DELAYED) == "4.0.0"
