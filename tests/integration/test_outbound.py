"""Outbound mail end to end: a postwerk server, a local DNS server and SMTP sinks on
127.0.0.x. Submissions to external addresses leave through a send connector (MX or
smart host), failures are retried or bounced with an NDR the sender receives."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Iterator

import pytest

from postwerk.transport.dns import Resolver
from postwerk.transport.retry import RetryPolicy
from tests import dnsserver
from tests.conftest import DOMAIN, RunningServer, cli, wait_for
from tests.integration.test_smtp_submission import message, submission
from tests.smtpsink import SmtpSink

local_dns = dnsserver.local_dns


@pytest.fixture
def outbound(org: RunningServer, local_dns: dnsserver.LocalDns) -> Iterator[RunningServer]:
    """The org server, its DNS pointed at the test's own server, short retries."""
    assert org.server.outbound is not None
    org.server.outbound.resolver = Resolver(local_dns.config(timeout=1.0))
    org.server.outbound.poll_seconds = 0.1
    org.server.transport.poll_seconds = 0.1
    yield org


def mx_to_sink(
    org: RunningServer,
    local_dns: dnsserver.LocalDns,
    sink: SmtpSink,
    *extra: str,
    domain: str = "remote.test",
    name: str = "Internet",
    spaces: str = "*",
) -> None:
    """`domain`'s MX points at `sink`, and a send connector routes `spaces` by DNS to
    the sink's port."""
    local_dns.add(domain, "MX", f"10 mx.{domain}")
    local_dns.add(f"mx.{domain}", "A", sink.host)
    cli(
        org.data_dir,
        "connector", "send", "new", name, *extra,
        "--address-spaces", spaces, "--port", str(sink.port),
    )  # fmt: skip


def queue_rows(org: RunningServer) -> dict[str, tuple[str, int, str]]:
    async def rows() -> dict[str, tuple[str, int, str]]:
        q = org.server.backend.sql.queue
        out = {}
        for m in await q.list_messages():
            for r in await q.recipients(m.id):
                out[r.address] = (r.status.value, r.attempts, r.last_error)
        return out

    return org.call(rows())


def events(org: RunningServer, recipient: str) -> list[str]:
    async def search() -> list[str]:
        found = await org.server.backend.sql.tracking.search(recipient=recipient)
        return [e.event_id for e in found]

    return org.call(search())


def test_mx_delivery_through_a_send_connector(
    outbound: RunningServer, local_dns: dnsserver.LocalDns
) -> None:
    org = outbound
    with SmtpSink("127.0.0.2") as sink:
        mx_to_sink(org, local_dns, sink)
        with submission(org) as s:
            s.send_message(
                message(f"alice@{DOMAIN}", "friend@remote.test, bob@" + DOMAIN, "hello out"),
                to_addrs=["friend@remote.test", f"bob@{DOMAIN}"],
            )
        wait_for(lambda: len(sink.messages) == 1)
        got = sink.messages[0]
        assert got.mail_from == f"alice@{DOMAIN}"
        assert got.rcpt_tos == ["friend@remote.test"]
        assert b"Subject: hello out" in got.data
        wait_for(lambda: queue_rows(org) == {})  # gone from the queue once sent
        assert "SEND" in events(org, "friend@remote.test")
        assert len(org.inbox(f"bob@{DOMAIN}")) == 1  # the local copy, as before


def test_smart_host_with_auth_over_tls(outbound: RunningServer) -> None:
    org = outbound
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("relay.isp.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    assert org.server.outbound is not None
    org.server.outbound.ssl_context = client_ctx
    with SmtpSink(
        "127.0.0.3", tls_context=server_ctx, auth_users={"relay-user": "relay-pw"}
    ) as sink:
        cli(
            org.data_dir,
            "connector", "send", "new", "ISP",
            "--address-spaces", "*", "--smart-hosts", f"[127.0.0.3]:{sink.port}",
            "--tls", "required", "--auth-user", "relay-user", "--auth-password-stdin",
            input="relay-pw\n",
        )  # fmt: skip
        with submission(org) as s:
            s.send_message(
                message(f"alice@{DOMAIN}", "someone@far.test", "via relay"),
                to_addrs=["someone@far.test"],
            )
        wait_for(lambda: len(sink.messages) == 1)
        assert sink.messages[0].tls and sink.messages[0].auth_user == "relay-user"
        wait_for(lambda: queue_rows(org) == {})


def test_permanent_failure_bounces_to_the_sender(
    outbound: RunningServer, local_dns: dnsserver.LocalDns
) -> None:
    org = outbound
    with SmtpSink("127.0.0.4") as sink:
        sink.handler.rcpt_replies["nobody@remote.test"] = "550 5.1.1 No such user here"
        mx_to_sink(org, local_dns, sink)
        with submission(org) as s:
            s.send_message(
                message(f"alice@{DOMAIN}", "nobody@remote.test", "will bounce"),
                to_addrs=["nobody@remote.test"],
            )
        ndrs = org.wait_inbox(f"alice@{DOMAIN}", 1)
        assert len(ndrs) == 1
        ndr = email.message_from_bytes(org.read_item(ndrs[0]), policy=email.policy.default)
        assert ndr["Subject"] == "Undeliverable: will bounce"
        assert ndr.get_content_type() == "multipart/report"
        assert ndr.get_param("report-type") == "delivery-status"
        status = next(p for p in ndr.walk() if p.get_content_type() == "message/delivery-status")
        text = status.as_string()
        assert "Final-Recipient: rfc822;nobody@remote.test" in text
        assert "Action: failed" in text
        assert "Status: 5.1.1" in text
        assert "No such user here" in text
        assert org.read_item(ndrs[0]).startswith(b"Return-Path: <>\r\n")
        assert sink.messages == []  # DATA never sent: the only recipient was refused
        wait_for(lambda: queue_rows(org) == {})
        assert {"FAIL", "DSN"} <= set(events(org, "nobody@remote.test"))


def test_null_mx_fails_at_once(outbound: RunningServer, local_dns: dnsserver.LocalDns) -> None:
    org = outbound
    local_dns.add("nomail.test", "MX", "0 .")
    cli(org.data_dir, "connector", "send", "new", "Internet", "--address-spaces", "*")
    with submission(org) as s:
        s.send_message(
            message(f"alice@{DOMAIN}", "x@nomail.test", "null mx"), to_addrs=["x@nomail.test"]
        )
    ndrs = org.wait_inbox(f"alice@{DOMAIN}", 1)
    assert b"Status: 5.1.10" in org.read_item(ndrs[0])


def test_transient_failure_is_retried_then_delivered(
    outbound: RunningServer, local_dns: dnsserver.LocalDns
) -> None:
    org = outbound
    assert org.server.outbound is not None
    org.server.outbound.policy = RetryPolicy(glitch_interval=0.2)
    with SmtpSink("127.0.0.5") as sink:
        sink.handler.data_replies = ["451 4.3.0 try again later"]
        mx_to_sink(org, local_dns, sink)
        with submission(org) as s:
            s.send_message(
                message(f"alice@{DOMAIN}", "friend@remote.test", "second time lucky"),
                to_addrs=["friend@remote.test"],
            )
        wait_for(lambda: len(sink.messages) == 1)  # refused once (451), then accepted
        assert sink.handler.data_replies == []  # the scripted 451 was used up
        wait_for(lambda: queue_rows(org) == {})
        assert events(org, "friend@remote.test").count("DEFER") == 1
        assert "SEND" in events(org, "friend@remote.test")
        assert org.inbox(f"alice@{DOMAIN}") == []  # no NDR, no delay DSN


def test_expiry_bounces_with_4_4_7(outbound: RunningServer) -> None:
    org = outbound
    assert org.server.outbound is not None
    # Nobody listens at the smart host: connection failures until the message expires.
    org.server.outbound.policy = RetryPolicy(glitch_interval=0.1, expiration=1.0)
    cli(
        org.data_dir,
        "connector", "send", "new", "Dead",
        "--address-spaces", "*", "--smart-hosts", "[127.0.0.6]:9",
    )  # fmt: skip
    with submission(org) as s:
        s.send_message(
            message(f"alice@{DOMAIN}", "friend@gone.test", "never arrives"),
            to_addrs=["friend@gone.test"],
        )
    ndrs = org.wait_inbox(f"alice@{DOMAIN}", 1, timeout=20)
    data = org.read_item(ndrs[0])
    assert b"Status: 4.4.7" in data
    assert b"Subject: Undeliverable: never arrives" in data


def test_no_bounce_for_a_bounce(outbound: RunningServer, local_dns: dnsserver.LocalDns) -> None:
    """A message from the null sender that fails is dropped after FAIL, never bounced."""
    org = outbound
    with SmtpSink("127.0.0.7") as sink:
        sink.handler.rcpt_replies["nobody@remote.test"] = "550 5.1.1 No such user"
        mx_to_sink(org, local_dns, sink)

        async def inject() -> str:
            return await org.server.transport.submit(
                b"From: <>\r\nSubject: a bounce\r\n\r\nbody\r\n", "", ["nobody@remote.test"]
            )

        org.call(inject())
        wait_for(lambda: queue_rows(org) == {})
        assert "FAIL" in events(org, "nobody@remote.test")
        assert "DSN" not in events(org, "nobody@remote.test")


@pytest.mark.parametrize("peer_dsn", [False, True])
def test_notify_success_through_a_relay(
    outbound: RunningServer, local_dns: dnsserver.LocalDns, peer_dsn: bool
) -> None:
    """A peer without DSN cannot report success: we send "relayed" (RFC 3461 §5.2.2);
    a peer with DSN gets NOTIFY passed on and reports itself."""
    org = outbound
    with SmtpSink("127.0.0.11", dsn=peer_dsn) as sink:
        mx_to_sink(org, local_dns, sink)
        with submission(org) as s:
            s.sendmail(
                f"alice@{DOMAIN}",
                ["friend@remote.test"],
                f"From: alice@{DOMAIN}\r\nSubject: report\r\n\r\nhi\r\n".encode(),
                rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
            )
        wait_for(lambda: len(sink.messages) == 1)
        if peer_dsn:
            assert sink.messages[0].rcpt_options["friend@remote.test"] == ["NOTIFY=SUCCESS,FAILURE"]
            time.sleep(0.5)
            assert org.inbox(f"alice@{DOMAIN}") == []
        else:
            reports = org.wait_inbox(f"alice@{DOMAIN}", 1)
            data = org.read_item(reports[0])
            assert b"Subject: Relayed: report" in data
            assert b"Action: relayed" in data


def test_one_message_two_next_hops_leaves_the_queue(
    outbound: RunningServer, local_dns: dnsserver.LocalDns
) -> None:
    """Two next-hop queues deliver parts of one message at the same time; the message
    leaves the queue once both are done."""
    org = outbound
    with SmtpSink("127.0.0.12") as one, SmtpSink("127.0.0.13") as two:
        for name, sink, domain in (("One", one, "one.test"), ("Two", two, "two.test")):
            mx_to_sink(org, local_dns, sink, domain=domain, name=name, spaces=domain)
        with submission(org) as s:
            for n in range(5):
                s.send_message(
                    message(f"alice@{DOMAIN}", "a@one.test, b@two.test", f"split {n}"),
                    to_addrs=["a@one.test", "b@two.test"],
                )
        wait_for(lambda: len(one.messages) == 5 and len(two.messages) == 5)
        wait_for(lambda: queue_rows(org) == {})


def test_relay_domains_route_through_send_connectors(
    outbound: RunningServer, local_dns: dnsserver.LocalDns
) -> None:
    """Internal relay: known recipients are local, unknown ones go out; external relay:
    everyone goes out. Anonymous senders may send to both (accepted domains)."""
    org = outbound
    cli(org.data_dir, "domain", "add", "shared.test", "--type", "internal-relay")
    cli(org.data_dir, "domain", "add", "hosted.test", "--type", "external-relay")
    cli(org.data_dir, "mailbox", "new", "here@shared.test", "--password-stdin", input="pw\n")
    import smtplib

    with SmtpSink("127.0.0.14") as sink:
        for domain in ("shared.test", "hosted.test"):
            local_dns.add(domain, "MX", f"10 mx.{domain}")
            local_dns.add(f"mx.{domain}", "A", "127.0.0.14")
        cli(
            org.data_dir,
            "connector", "send", "new", "Partners",
            "--address-spaces", "shared.test,hosted.test", "--port", str(sink.port),
        )  # fmt: skip
        with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
            refused = s.sendmail(
                "someone@internet.test",
                ["here@shared.test", "elsewhere@shared.test", "anyone@hosted.test"],
                b"Subject: relay domains\r\n\r\nhi\r\n",
            )
            assert refused == {}
            s.mail("someone@internet.test")
            assert s.rcpt("x@not-accepted.test")[0] == 550  # still no open relay
        # One next hop per destination domain: two transactions.
        wait_for(lambda: len(sink.messages) == 2)
        rcpts = sorted(r for m in sink.messages for r in m.rcpt_tos)
        assert rcpts == ["anyone@hosted.test", "elsewhere@shared.test"]
        assert len(org.inbox("here@shared.test")) == 1


def test_frontend_proxy_connector_is_tracked_through_the_proxy(
    outbound: RunningServer, local_dns: dnsserver.LocalDns
) -> None:
    org = outbound
    with SmtpSink("127.0.0.15") as sink:
        mx_to_sink(org, local_dns, sink, "--frontend-proxy")
        with submission(org) as s:
            s.send_message(
                message(f"alice@{DOMAIN}", "friend@remote.test", "via cas"),
                to_addrs=["friend@remote.test"],
            )
        wait_for(lambda: len(sink.messages) == 1)

        async def send_connectors() -> list[str]:
            found = await org.server.backend.sql.tracking.search(
                recipient="friend@remote.test", event_id="SEND"
            )
            return [e.connector for e in found]

        wait_for(lambda: bool(org.call(send_connectors())))
        assert org.call(send_connectors()) == [
            "Internet via Outbound Proxy Frontend mail.example.test"
        ]
