"""Mailbox quotas on the mail flow: 552 5.2.2 at RCPT TO for a full mailbox (or one
that MAIL FROM SIZE= would overfill), an NDR with 5.2.2 for a message that turns
out too big at delivery; other recipients are unaffected (transport/quota.py)."""

from __future__ import annotations

import smtplib
import time

import pytest

from tests import dnsserver
from tests.conftest import DOMAIN, RunningServer, cli, wait_for
from tests.integration.test_outbound import mx_to_sink, outbound  # noqa: F401 (fixture)
from tests.integration.test_smtp_submission import submission
from tests.smtpsink import SmtpSink

local_dns = dnsserver.local_dns


@pytest.fixture
def relaying(request: pytest.FixtureRequest) -> RunningServer:
    """`outbound` (test_outbound.py): the org server relaying by the test's own DNS."""
    server: RunningServer = request.getfixturevalue("outbound")
    return server


ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


def usage(org: RunningServer, address: str) -> int:
    async def read() -> int:
        recipient = await org.server.directory.get(address)
        size: int = await org.server.backend.sql.mailstore.mailbox_size(recipient.id)
        return size

    return org.call(read())


def set_quota(org: RunningServer, address: str, value: str) -> None:
    cli(org.data_dir, "mailbox", "set-quota", address, value)


def body(subject: str, size: int = 0) -> bytes:
    filler = b"".join(b"x" * 70 + b"\r\n" for _ in range(size // 72 + 1)) if size else b"hi\r\n"
    return f"From: {ALICE}\r\nSubject: {subject}\r\n\r\n".encode() + filler


def subjects(org: RunningServer, address: str) -> list[str]:
    return sorted(str(i.summary.get("subject", "")) for i in org.inbox(address))


def queued(org: RunningServer) -> list[str]:
    async def ids() -> list[str]:
        return [m.id for m in await org.server.backend.sql.queue.list_messages()]

    return org.call(ids())


def fill(org: RunningServer, address: str) -> int:
    """Put one message into the mailbox; its usage afterwards."""
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail("someone@remote.test", [address], body("filler"))
    org.wait_inbox(address, 1)
    return usage(org, address)


def test_full_mailbox_is_552_5_2_2_at_rcpt_and_the_others_still_get_it(
    org: RunningServer,
) -> None:
    used = fill(org, BOB)
    set_quota(org, BOB, str(used))  # exactly at the limit: full
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.ehlo("client.remote.test")
        assert s.mail("someone@remote.test")[0] == 250
        code, text = s.rcpt(BOB)
        assert (code, text) == (552, f"5.2.2 <{BOB}>: Mailbox full".encode())
        assert s.rcpt(ALICE)[0] == 250
        assert s.data(body("for both"))[0] == 250
    assert subjects(org, ALICE) == ["for both"]
    assert subjects(org, BOB) == ["filler"]
    assert usage(org, BOB) == used
    # The alias reaches the same mailbox, and the same limit.
    cli(org.data_dir, "alias", "add", BOB, f"robert@{DOMAIN}")
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.ehlo("client.remote.test")
        s.mail("someone@remote.test")
        assert s.rcpt(f"robert@{DOMAIN}")[0] == 552


def test_size_parameter_that_would_pass_the_quota_is_refused_at_rcpt(
    org: RunningServer,
) -> None:
    used = fill(org, BOB)
    set_quota(org, BOB, str(used + 1000))
    with submission(org) as s:  # the submission port checks the same way
        assert s.mail(ALICE, ["SIZE=1001"])[0] == 250
        code, text = s.rcpt(BOB)
        assert (code, text[:6]) == (552, b"5.2.2 ")
        assert s.rcpt(ALICE)[0] == 250  # no quota: not affected
        s.rset()
        assert s.mail(ALICE, ["SIZE=1000"])[0] == 250  # fills it exactly: fits
        assert s.rcpt(BOB)[0] == 250


@pytest.mark.parametrize("at_receipt", [True, False])
def test_message_bigger_than_the_space_left_bounces_with_a_5_2_2_ndr(
    org: RunningServer, at_receipt: bool
) -> None:
    org.server.transport.deliver_at_receipt = at_receipt
    used = fill(org, BOB)
    set_quota(org, BOB, str(used + 2000))
    with submission(org) as s:
        # No SIZE=: RCPT sees a mailbox with room left and accepts.
        assert s.mail(ALICE)[0] == 250
        assert s.rcpt(BOB)[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        assert s.data(body("too big for bob", 5000))[0] == 250
    reports = org.wait_inbox(ALICE, 2)
    assert subjects(org, ALICE) == ["Undeliverable: too big for bob", "too big for bob"]
    ndr = org.read_item(next(i for i in reports if i.summary["subject"].startswith("Undel")))
    assert b"Action: failed" in ndr and b"Status: 5.2.2" in ndr
    assert f"Final-Recipient: rfc822;{BOB}".encode() in ndr
    assert b"mailbox full" in ndr
    assert subjects(org, BOB) == ["filler"]
    assert usage(org, BOB) == used
    wait_for(lambda: queued(org) == [])  # the queue item completed

    async def fail_events() -> list[str]:
        events = await org.server.backend.sql.tracking.search(recipient=BOB)
        return [e.recipient_status for e in events if e.event_id == "FAIL"]

    assert org.call(fail_events()) == ["552 5.2.2 STOREDRV.Deliver; mailbox full"]


@pytest.mark.parametrize("at_receipt", [True, False])
def test_a_message_every_mailbox_refused_leaves_no_file_behind(
    org: RunningServer, at_receipt: bool
) -> None:
    org.server.transport.deliver_at_receipt = at_receipt
    used = fill(org, BOB)
    set_quota(org, BOB, str(used + 100))
    before = set(org.call(org.server.backend.blobs.ids()))
    with submission(org) as s:
        s.mail(ALICE)
        s.rcpt(BOB)
        assert s.data(body("nobody takes this", 3000))[0] == 250
    (ndr,) = org.wait_inbox(ALICE, 1)
    assert ndr.summary["subject"] == "Undeliverable: nobody takes this"
    wait_for(lambda: set(org.call(org.server.backend.blobs.ids())) - before == {ndr.blob_id})
    wait_for(lambda: queued(org) == [])


def test_group_members_are_checked_at_delivery(org: RunningServer) -> None:
    used = fill(org, BOB)
    set_quota(org, BOB, str(used + 100))
    with submission(org) as s:
        # A group is not a mailbox: RCPT accepts it even with SIZE=; each member
        # is checked when the message is delivered.
        assert s.mail(ALICE, ["SIZE=3000"])[0] == 250
        assert s.rcpt(f"team@{DOMAIN}")[0] == 250
        assert s.data(body("to the team", 3000))[0] == 250
    org.wait_inbox(ALICE, 2)
    assert subjects(org, ALICE) == ["Undeliverable: to the team", "to the team"]
    assert subjects(org, BOB) == ["filler"]


def test_unlimited_is_never_refused_and_raising_the_quota_lets_mail_in(
    org: RunningServer,
) -> None:
    used = fill(org, BOB)
    set_quota(org, BOB, str(used))
    with submission(org) as s:
        s.mail(ALICE)
        assert s.rcpt(BOB)[0] == 552
    set_quota(org, BOB, str(used + 10_000))  # raised: mail flows again
    with submission(org) as s:
        assert s.sendmail(ALICE, [BOB], body("after the raise")) == {}
    org.wait_inbox(BOB, 2)
    set_quota(org, BOB, "unlimited")
    with submission(org) as s:
        big = 200_000
        assert s.mail(ALICE, [f"SIZE={big}"])[0] == 250
        assert s.rcpt(BOB)[0] == 250
        assert s.data(body("big, unlimited", big))[0] == 250
    org.wait_inbox(BOB, 3)
    assert subjects(org, BOB) == ["after the raise", "big, unlimited", "filler"]
    time.sleep(0.2)
    assert subjects(org, ALICE) == []  # no NDR


def test_refused_mailbox_copy_beside_an_external_recipient(
    relaying: RunningServer, local_dns: dnsserver.LocalDns
) -> None:
    """The external copy leaves, the local one bounces; once both are done the queue
    is empty and the file is gone (no Inbox refers to it)."""
    org = relaying
    org.server.transport.deliver_at_receipt = False
    used = fill(org, BOB)
    set_quota(org, BOB, str(used + 100))
    before = set(org.call(org.server.backend.blobs.ids()))
    with SmtpSink("127.0.0.2") as sink:
        mx_to_sink(org, local_dns, sink)
        with submission(org) as s:
            s.mail(ALICE)
            assert s.rcpt("friend@remote.test")[0] == 250
            assert s.rcpt(BOB)[0] == 250
            assert s.data(body("out and bounced", 3000))[0] == 250
        wait_for(lambda: len(sink.messages) == 1)
        assert sink.messages[0].rcpt_tos == ["friend@remote.test"]
    (ndr,) = org.wait_inbox(ALICE, 1)
    assert ndr.summary["subject"] == "Undeliverable: out and bounced"
    assert subjects(org, BOB) == ["filler"]
    wait_for(lambda: queued(org) == [])
    wait_for(lambda: set(org.call(org.server.backend.blobs.ids())) - before == {ndr.blob_id})
