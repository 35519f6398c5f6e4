"""The two ways a message reaches an Inbox: in the transaction that accepts it (the
default for messages up to 1 MB), or queued first and delivered by the store driver
(large messages, or `transport.deliver_at_receipt = false`). Both give the same
Inbox, queue and tracking log."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator

import pytest

from tests.conftest import DOMAIN, RunningServer, cli, wait_for
from tests.integration.test_smtp_submission import message, submission


@pytest.fixture
def queue_first(org: RunningServer) -> Iterator[RunningServer]:
    org.server.transport.deliver_at_receipt = False
    yield org


def unreachable(org: RunningServer) -> list[tuple[str, str]]:
    async def rows() -> list[tuple[str, str]]:
        queue = org.server.backend.sql.queue
        out = []
        for m in await queue.list_messages():
            out += [(r.address, r.status.value) for r in await queue.recipients(m.id)]
        return sorted(out)

    return org.call(rows())


def event_ids(org: RunningServer, recipient: str) -> list[str]:
    async def search() -> list[str]:
        events = await org.server.backend.sql.tracking.search(recipient=recipient)
        return sorted(e.event_id for e in events)

    return org.call(search())


def test_small_message_is_in_the_inbox_when_250_arrives(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail("someone@remote.test", [f"bob@{DOMAIN}"], b"Subject: now\r\n\r\nhi\r\n")
        # No waiting: the 250 came after the item's commit.
        items = org.inbox(f"bob@{DOMAIN}")
    assert len(items) == 1
    assert items[0].summary["subject"] == "now"
    assert org.read_item(items[0]).startswith(b"Return-Path: <someone@remote.test>\r\nReceived: ")
    assert unreachable(org) == []  # nothing left queued
    assert event_ids(org, f"bob@{DOMAIN}") == ["DELIVER", "RECEIVE"]


def test_mixed_recipients_local_delivered_external_queued(org: RunningServer) -> None:
    with submission(org) as s:
        s.send_message(
            message(f"alice@{DOMAIN}", f"bob@{DOMAIN}, far@elsewhere.test", "mixed"),
            to_addrs=[f"bob@{DOMAIN}", "far@elsewhere.test"],
        )
        assert len(org.inbox(f"bob@{DOMAIN}")) == 1
    # The message stays queued for its external recipient; the local one shows as delivered.
    assert unreachable(org) == [
        (f"bob@{DOMAIN}", "delivered"),
        ("far@elsewhere.test", "unreachable"),
    ]


def test_queue_first_path_delivers_the_same(queue_first: RunningServer) -> None:
    org = queue_first
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail(
            "someone@remote.test",
            [f"bob@{DOMAIN}", f"team@{DOMAIN}"],
            b"Subject: queued\r\n\r\nhi\r\n",
        )
    bob = org.wait_inbox(f"bob@{DOMAIN}", 1)
    alice = org.wait_inbox(f"alice@{DOMAIN}", 1)
    assert len(bob) == 1 and len(alice) == 1  # bob once, though named twice (group)
    assert bob[0].summary["subject"] == "queued"
    assert org.read_item(bob[0]).startswith(b"Return-Path: <someone@remote.test>\r\n")

    wait_for(lambda: unreachable(org) == [], timeout=10)  # nothing left in the queue
    assert "DELIVER" in event_ids(org, f"bob@{DOMAIN}")


def test_large_message_goes_through_the_queue(org: RunningServer) -> None:
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1100  # ~1.1 MB: over the hand-off
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=30) as s:
        s.sendmail("someone@remote.test", [f"bob@{DOMAIN}"], body)
    items = org.wait_inbox(f"bob@{DOMAIN}", 1)
    assert len(items) == 1
    stored = org.read_item(items[0])
    assert items[0].size == len(stored)
    assert stored.endswith(b"x" * 998 + b"\r\n")


def test_removing_a_mailbox_deletes_only_files_nobody_else_needs(org: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail("someone@remote.test", [f"bob@{DOMAIN}"], b"Subject: bob only\r\n\r\nhi\r\n")
        s.sendmail(
            "someone@remote.test",
            [f"bob@{DOMAIN}", f"alice@{DOMAIN}"],
            b"Subject: shared\r\n\r\nhi\r\n",
        )
    with submission(org) as s:
        s.send_message(
            message(f"alice@{DOMAIN}", f"bob@{DOMAIN}, far@elsewhere.test", "queued too"),
            to_addrs=[f"bob@{DOMAIN}", "far@elsewhere.test"],
        )
    files = {
        it.summary["subject"]: org.server.backend.blobs.path(it.blob_id)
        for it in org.inbox(f"bob@{DOMAIN}")
    }
    assert all(path.is_file() for path in files.values())
    out = cli(org.data_dir, "mailbox", "remove", f"bob@{DOMAIN}")
    assert "1 message file(s) deleted" in out
    assert not files["bob only"].exists()
    assert files["shared"].is_file()  # alice still has it
    assert files["queued too"].is_file()  # still queued for far@elsewhere.test


def test_unreachable_mail_is_resubmitted_when_a_send_connector_appears(
    org: RunningServer,
) -> None:
    org.server.transport.poll_seconds = 0.1
    with submission(org) as s:
        s.send_message(
            message(f"alice@{DOMAIN}", "far@elsewhere.test, near@partner.test", "out"),
            to_addrs=["far@elsewhere.test", "near@partner.test"],
        )
    assert unreachable(org) == [
        ("far@elsewhere.test", "unreachable"),
        ("near@partner.test", "unreachable"),
    ]

    def hops() -> dict[str, tuple[str, str]]:
        async def rows() -> dict[str, tuple[str, str]]:
            queue = org.server.backend.sql.queue
            out = {}
            for m in await queue.list_messages():
                for r in await queue.recipients(m.id):
                    out[r.address] = (r.status.value, r.next_hop)
            return out

        return org.call(rows())

    def settle(expected: dict[str, tuple[str, str]]) -> None:
        wait_for(lambda: hops() == expected, timeout=10)

    cli(org.data_dir, "connector", "send", "new", "Partner", "--address-spaces", "partner.test")
    settle(
        {
            "far@elsewhere.test": ("unreachable", "Unreachable"),
            "near@partner.test": ("ready", "smtp:Partner:partner.test"),
        }
    )
    cli(org.data_dir, "connector", "send", "new", "Internet", "--address-spaces", "*;5")
    settle(
        {
            "far@elsewhere.test": ("ready", "smtp:Internet:elsewhere.test"),
            "near@partner.test": ("ready", "smtp:Partner:partner.test"),
        }
    )
    cli(org.data_dir, "connector", "send", "remove", "Partner")
    settle(
        {
            "far@elsewhere.test": ("ready", "smtp:Internet:elsewhere.test"),
            "near@partner.test": ("ready", "smtp:Internet:partner.test"),
        }
    )
    assert "RESUBMIT" in event_ids(org, "near@partner.test")
    # New mail is routed at once, no Unreachable detour.
    with submission(org) as s:
        s.send_message(
            message(f"alice@{DOMAIN}", "new@other.test", "direct"), to_addrs=["new@other.test"]
        )
    assert hops()["new@other.test"] == ("ready", "smtp:Internet:other.test")


@pytest.mark.parametrize("at_receipt", [True, False])
def test_notify_success_gets_a_delivered_dsn(org: RunningServer, at_receipt: bool) -> None:
    org.server.transport.deliver_at_receipt = at_receipt
    with submission(org) as s:
        assert s.has_extn("dsn")
        s.sendmail(
            f"alice@{DOMAIN}",
            [f"bob@{DOMAIN}"],
            f"From: alice@{DOMAIN}\r\nSubject: tell me\r\n\r\nhi\r\n".encode(),
            rcpt_options=["NOTIFY=SUCCESS"],
        )
        s.sendmail(  # no NOTIFY: no success report
            f"alice@{DOMAIN}",
            [f"bob@{DOMAIN}"],
            f"From: alice@{DOMAIN}\r\nSubject: quiet\r\n\r\nhi\r\n".encode(),
        )
    reports = org.wait_inbox(f"alice@{DOMAIN}", 1)
    time.sleep(0.3)
    assert len(org.inbox(f"alice@{DOMAIN}")) == 1
    data = org.read_item(reports[0])
    assert b"Subject: Delivered: tell me" in data
    assert b"Action: delivered" in data and b"Status: 2.0.0" in data
