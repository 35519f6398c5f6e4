"""FrontEndProxyEnabled send connectors: a Mailbox server's mail goes out through a
Client Access server's Outbound Proxy Frontend (717), which relays the transaction to
the connector's next hop during the session (transport/outbound_proxy.py).

One organization server (MAIL) plays the Mailbox server: its outbound delivery is
given the route through the running Client Access servers (`ClientAccessRoute`, as a
Mailbox server without the CAS role gets it). The Client Access server (CAS1) is a
listener on the configured port 717 whose context relays through an
`OutboundProxyFactory` over the same directory (send connectors, DNS). Sockets,
STARTTLS, certificate pinning and server credentials are the real ones; the next hop
is an SMTP sink (smart host or the MX of a test DNS server). The last test runs the
real thing: a CAS and two Mailbox servers as `postwerk serve` processes on PostgreSQL
(tests/integration/test_split_roles.py's organization)."""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest

from postwerk.directory.server_auth import ServerTrust, certificate_sha256, server_password
from postwerk.frontend.routing import Placement
from postwerk.services.smtp import ReceiveContext, SmtpListener
from postwerk.store.api import DirectoryStore, MailStore
from postwerk.store.records import ServerRecord
from postwerk.transport.dns import Resolver
from postwerk.transport.outbound_proxy import ClientAccessRoute, OutboundProxyFactory
from tests import dnsserver
from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli, wait_for
from tests.integration.test_smtp_submission import message, submission
from tests.integration.test_split_roles import Organization, organization
from tests.smtpsink import SmtpSink

local_dns = dnsserver.local_dns
__all__ = ["organization"]  # the three-machine fixture, used below

ALICE = f"alice@{DOMAIN}"
PROXY_PORT = 717  # the configured port the listener stands for


class NoMailboxStore:
    """A Client Access server holds no mailboxes."""

    async def mailbox_size(self, mailbox_id: int) -> int:
        return 0


@dataclass
class Proxy:
    org: RunningServer
    store: DirectoryStore
    secret: str
    sha: str  # the certificate of every listener here (the org's)
    front: SmtpListener  # CAS1's Outbound Proxy Frontend (717)

    def register_cas(
        self,
        name: str = "CAS1",
        *,
        sha: str | None = None,
        running: bool = True,
        port: int | None = None,
    ) -> None:
        """(Re-)register a Client Access server reached at the listener (or `port`)."""
        record = ServerRecord(
            name,
            f"{name.lower()}.example.test",
            ("cas",),
            ("127.0.0.1",),
            port_offset=(self.front.bound_port if port is None else port) - PROXY_PORT,
            heartbeat_at=time.time() if running else 0.0,
            certificate_sha256=self.sha if sha is None else sha,
        )
        self.org.call(self.store.put_server(record))

    def rows(self) -> dict[str, tuple[str, int, str]]:
        async def rows() -> dict[str, tuple[str, int, str]]:
            q = self.org.server.backend.sql.queue
            out = {}
            for m in await q.list_messages():
                for r in await q.recipients(m.id):
                    out[r.address] = (r.status.value, r.attempts, r.last_error)
            return out

        return cast("dict[str, tuple[str, int, str]]", self.org.call(rows()))

    def events(self, recipient: str) -> list[tuple[str, str, str]]:
        """(event, connector, recipient status) of `recipient`'s tracking events."""

        async def search() -> list[tuple[str, str, str]]:
            found = await self.org.server.backend.sql.tracking.search(recipient=recipient)
            return [(e.event_id, e.connector, e.recipient_status) for e in found]

        return cast("list[tuple[str, str, str]]", self.org.call(search()))

    def send(self, to: str, subject: str) -> None:
        with submission(self.org) as s:
            s.send_message(message(ALICE, to, subject), to_addrs=[to])

    def smtp(self) -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", self.front.bound_port, timeout=20)
        s.ehlo("mbx1.example.test")
        return s


@pytest.fixture
def proxy(org: RunningServer, local_dns: dnsserver.LocalDns) -> Iterator[Proxy]:
    server = org.server
    assert server.outbound is not None
    store: DirectoryStore = server.backend.sql.directory
    base: ReceiveContext = server.listeners[0].ctx
    # The next hop's DNS is the test's own; retries are quick to come but never due
    # within a test unless it shortens them.
    server.outbound.resolver = Resolver(local_dns.config(timeout=1.0))
    server.outbound.poll_seconds = 0.1
    server.transport.poll_seconds = 0.1

    async def build() -> Proxy:
        organization = await store.get_organization()
        assert organization is not None and organization.secret
        secret = organization.secret
        sha = certificate_sha256(org.data_dir / "tls" / "server.crt")
        factory = OutboundProxyFactory(
            server.lookup.list_send_connectors,
            server.outbound.destination,
            port=PROXY_PORT,
            command_timeout=10.0,
            data_timeout=10.0,
        )
        front_ctx = replace(
            base,
            hostname="cas1.example.test",
            relay=None,
            outbound_proxy=factory,
            mail=cast(MailStore, NoMailboxStore()),
            trust=ServerTrust.from_directory(store, secret, "CAS1"),
        )
        front = SmtpListener(front_ctx, "127.0.0.1", 0, PROXY_PORT)
        await front.start()
        # MAIL itself is the Mailbox server: without the CAS role it would get this route.
        server.outbound.outbound_proxy = ClientAccessRoute(
            Placement(store, ttl=0.0),
            ServerTrust.from_directory(store, secret, "MAIL"),
            "mail.example.test",
            port=PROXY_PORT,
        )
        return Proxy(org, store, secret, sha, front)

    env: Proxy = org.call(build())
    env.register_cas()
    try:
        yield env
    finally:
        org.call(env.front.stop(drain_seconds=1))


def smart_host_to(org: RunningServer, sink: SmtpSink, name: str = "Via CAS") -> None:
    cli(
        org.data_dir,
        "connector", "send", "new", name, "--frontend-proxy",
        "--address-spaces", "*", "--smart-hosts", f"[{sink.host}]:{sink.port}",
    )  # fmt: skip


# --- through the Client Access server ------------------------------------------------


def test_mail_goes_out_through_the_cas_and_is_done_only_when_the_sink_took_it(
    proxy: Proxy,
) -> None:
    with SmtpSink("127.0.0.2") as sink:
        sink.handler.data_delay = 1.0  # the destination takes its time over the end of data
        smart_host_to(proxy.org, sink)
        proxy.send("friend@remote.test", "via cas")
        wait_for(lambda: sink.handler.in_data == 1)
        # The destination has the body but has not answered: the Mailbox server's queue
        # still holds the recipient (the CAS has not answered its end of data either).
        assert proxy.rows()["friend@remote.test"][0] == "ready"
        wait_for(lambda: len(sink.messages) == 1)
        got = sink.messages[0]
        assert (got.mail_from, got.rcpt_tos) == (ALICE, ["friend@remote.test"])
        assert b"Subject: via cas" in got.data
        # The CAS put its Received header on top of the Mailbox server's.
        received = email.message_from_bytes(got.data).get_all("Received") or []
        assert "by cas1.example.test" in received[0]
        assert "by mail.example.test" in received[1]
        # The server-only parameter never reaches the destination.
        assert "XPWNEXTHOP" not in got.mail_args and "AUTH=" not in got.mail_args
        wait_for(lambda: proxy.rows() == {})
    [send] = [e for e in proxy.events("friend@remote.test") if e[0] == "SEND"]
    assert send[1] == "Via CAS via Outbound Proxy Frontend cas1.example.test"
    assert send[2].startswith("250 2.0.0 Queued as sink")  # the destination's reply


def test_by_mx_the_cas_resolves_the_next_hop(proxy: Proxy, local_dns: dnsserver.LocalDns) -> None:
    with SmtpSink("127.0.0.3") as sink:
        local_dns.add("remote.test", "MX", "10 mx.remote.test")
        local_dns.add("mx.remote.test", "A", sink.host)
        cli(
            proxy.org.data_dir,
            "connector", "send", "new", "Internet", "--frontend-proxy",
            "--address-spaces", "*", "--port", str(sink.port),
        )  # fmt: skip
        proxy.send("friend@remote.test", "by mx")
        wait_for(lambda: len(sink.messages) == 1)
        assert sink.messages[0].rcpt_tos == ["friend@remote.test"]
        wait_for(lambda: proxy.rows() == {})


def test_a_5xx_at_the_destination_is_an_ndr_from_the_mailbox_server(proxy: Proxy) -> None:
    with SmtpSink("127.0.0.4") as sink:
        sink.handler.rcpt_replies["nobody@remote.test"] = "550 5.1.1 No such user here"
        smart_host_to(proxy.org, sink)
        proxy.send("nobody@remote.test", "will bounce")
        ndrs = proxy.org.wait_inbox(ALICE, 1)
        assert len(ndrs) == 1
        ndr = email.message_from_bytes(proxy.org.read_item(ndrs[0]), policy=email.policy.default)
        assert ndr["Subject"] == "Undeliverable: will bounce"
        text = proxy.org.read_item(ndrs[0])
        assert b"Status: 5.1.1" in text and b"No such user here" in text
        assert sink.messages == []
        wait_for(lambda: proxy.rows() == {})
    assert {"FAIL", "DSN"} <= {e[0] for e in proxy.events("nobody@remote.test")}


def test_a_refused_body_is_a_failure_too(proxy: Proxy) -> None:
    with SmtpSink("127.0.0.5") as sink:
        sink.handler.data_replies = ["554 5.7.1 Message content rejected"]
        smart_host_to(proxy.org, sink)
        proxy.send("friend@remote.test", "rejected")
        ndrs = proxy.org.wait_inbox(ALICE, 1)
        assert b"Message content rejected" in proxy.org.read_item(ndrs[0])
        wait_for(lambda: proxy.rows() == {})


def test_a_4xx_at_the_destination_is_retried_and_then_delivered(proxy: Proxy) -> None:
    with SmtpSink("127.0.0.6") as sink:
        sink.handler.rcpt_replies["friend@remote.test"] = "451 4.3.0 try again later"
        smart_host_to(proxy.org, sink)
        proxy.send("friend@remote.test", "later")
        wait_for(lambda: proxy.rows().get("friend@remote.test", ("", 0, ""))[1] == 1)
        status, attempts, error = proxy.rows()["friend@remote.test"]
        assert (status, attempts) == ("ready", 1)
        assert error.startswith("451 4.3.0 try again later")
        assert sink.messages == []
        assert proxy.org.inbox(ALICE) == []  # no NDR
        # The destination recovers; the queue tries again and the CAS relays it.
        del sink.handler.rcpt_replies["friend@remote.test"]
        cli(proxy.org.data_dir, "queue", "retry", "smtp:Via CAS")
        wait_for(lambda: len(sink.messages) == 1)
        wait_for(lambda: proxy.rows() == {})
    kinds = [e[0] for e in proxy.events("friend@remote.test")]
    assert "DEFER" in kinds and "SEND" in kinds


# --- when no Client Access server can be used ---------------------------------------


def test_a_wrong_certificate_on_the_cas_makes_the_mail_wait(proxy: Proxy) -> None:
    proxy.register_cas(sha="00" * 32)
    with SmtpSink("127.0.0.7") as sink:
        smart_host_to(proxy.org, sink)
        proxy.send("friend@remote.test", "pinned")
        wait_for(lambda: proxy.rows().get("friend@remote.test", ("", 0, ""))[1] == 1)
        status, _attempts, error = proxy.rows()["friend@remote.test"]
        assert status == "ready"
        assert "4.7.5" in error and "certificate registered" in error
        assert sink.messages == []


def test_without_a_running_cas_the_mail_waits_and_never_goes_direct(proxy: Proxy) -> None:
    proxy.register_cas(running=False)
    with SmtpSink("127.0.0.8") as sink:
        smart_host_to(proxy.org, sink)
        proxy.send("friend@remote.test", "waiting")
        wait_for(lambda: proxy.rows().get("friend@remote.test", ("", 0, ""))[1] == 1)
        status, _attempts, error = proxy.rows()["friend@remote.test"]
        assert status == "ready" and "no Client Access server is running" in error
        assert sink.messages == [] and sink.handler.connections == 0


def test_a_cas_that_cannot_be_used_is_skipped_for_the_next(proxy: Proxy) -> None:
    # CAS0 is registered and beating, but nothing listens where it says.
    import socket

    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed = placeholder.getsockname()[1]
    proxy.register_cas("CAS0", port=closed)
    with SmtpSink("127.0.0.10") as sink:
        smart_host_to(proxy.org, sink)
        for n in range(2):  # whichever one's turn it is first
            proxy.send(f"friend{n}@remote.test", f"failover {n}")
        wait_for(lambda: len(sink.messages) == 2)
        wait_for(lambda: proxy.rows() == {})


def test_a_server_without_the_outbound_proxy_is_never_handed_the_message(proxy: Proxy) -> None:
    # CAS1 registered at the org's own port 25 (Default Frontend: right certificate,
    # but no XPWNEXTHOP): it would take the message for itself, so it is not used.
    proxy.register_cas(port=proxy.org.smtp_port)
    with SmtpSink("127.0.0.11") as sink:
        smart_host_to(proxy.org, sink)
        proxy.send("friend@remote.test", "not there")
        wait_for(lambda: proxy.rows().get("friend@remote.test", ("", 0, ""))[1] == 1)
        status, _attempts, error = proxy.rows()["friend@remote.test"]
        assert status == "ready" and "4.7.0" in error and "XPWNEXTHOP" in error
        assert sink.messages == []


# --- who may use 717 -----------------------------------------------------------------


def test_anonymous_clients_and_users_cannot_relay_through_717(proxy: Proxy) -> None:
    with SmtpSink("127.0.0.9") as sink:
        smart_host_to(proxy.org, sink)
        with proxy.smtp() as s:
            code, _ = s.mail("someone@remote.test")
            assert code == 530  # 5.7.57: the connector admits organization servers only
            s.rset()
            code, _ = s.mail("someone@remote.test", ["XPWNEXTHOP=smtp:Via+20CAS"])
            assert code == 530
        with proxy.smtp() as s:
            s.starttls(context=proxy.org.client_context())
            s.ehlo("laptop")
            s.login(ALICE, PASSWORD)  # a mailbox user is no organization server
            code, text = s.mail(ALICE)
            assert (code, text[:6]) == (530, b"5.7.57")
            assert s.rcpt("friend@remote.test")[0] == 503
        assert sink.messages == [] and sink.handler.connections == 0


def test_a_server_session_must_name_its_next_hop(proxy: Proxy) -> None:
    with proxy.smtp() as s:
        s.starttls(context=proxy.org.client_context())
        code, ehlo = s.ehlo("mbx1.example.test")
        assert b"XPWNEXTHOP" in ehlo
        token = base64.b64encode(f"\0MAIL\0{server_password(proxy.secret, 'MAIL')}".encode())
        assert s.docmd("AUTH", "PLAIN " + token.decode())[0] == 235
        assert s.mail(ALICE)[0] == 501  # no XPWNEXTHOP
        # A next hop the CAS does not know is a temporary refusal, never a bounce.
        assert s.mail(ALICE, ["XPWNEXTHOP=smtp:Nowhere"])[0] == 250
        code, text = s.rcpt("friend@remote.test")
        assert (code, text) == (451, b"4.4.0 Send connector Nowhere is not known here")


def test_xpwnexthop_is_refused_on_other_connectors(proxy: Proxy) -> None:
    server: Any = proxy.org.server
    with smtplib.SMTP("127.0.0.1", server.ports[25], timeout=10) as s:
        s.ehlo("client.remote.test")
        code, _ = s.mail("someone@remote.test", ["XPWNEXTHOP=smtp:Internet"])
        assert code == 555


# --- three machines ------------------------------------------------------------------


@pytest.mark.slow
def test_split_servers_send_frontend_proxy_connectors_through_the_cas(
    organization: Organization,
) -> None:
    """`serve` wires it: the CAS listens on 717, the Mailbox servers send through it."""
    org = organization
    org.cas.wait_listening(717)
    with SmtpSink("127.0.0.4") as sink:
        cli(
            org.cas.data_dir,
            "connector", "send", "new", "Via CAS", "--frontend-proxy",
            "--address-spaces", "*", "--smart-hosts", f"[{sink.host}]:{sink.port}",
        )  # fmt: skip
        with org.submission() as s:
            body = f"From: {ALICE}\r\nSubject: out via cas\r\n\r\nhi\r\n"
            s.sendmail(ALICE, ["friend@remote.test"], body)
        wait_for(lambda: len(sink.messages) == 1, timeout=60)
        received = email.message_from_bytes(sink.messages[0].data).get_all("Received") or []
        # Submitted at CAS1, queued by a Mailbox server, relayed out by CAS1 on 717.
        assert "by cas1.example.test" in received[0], received
        assert "by mbx" in received[1], received
        assert "by cas1.example.test" in received[2], received
