"""Intra-organization SMTP: the Client Access front end relays each transaction, during
the client's session, to a Mailbox server's transport (transport/frontend_relay.py).

One organization server (MAIL) plays the Mailbox servers: besides its own listeners
it gets back-end listeners for `Default MAIL` (2525) and `Client Proxy MAIL` (465)
that know the organization's servers (`ReceiveContext.trust`), and a second one
standing in for another Mailbox server (MBX2, `Hostname=mbx2.example.test` in its
replies). The front end (CAS1) is a pair of listeners for `Default Frontend` (25) and
`Client Frontend` (587) whose context relays through a `RelayFactory` over the
directory's placement. Sockets, TLS, certificate pinning and server credentials are
the real ones; the clients are smtplib and swaks."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.parser import BytesHeaderParser
from email.policy import SMTP
from pathlib import Path
from typing import Any, cast

import pytest

from postwerk.directory.server_auth import ServerTrust, certificate_sha256, server_password
from postwerk.frontend.routing import Placement
from postwerk.services.smtp import ReceiveContext, SmtpListener
from postwerk.store.api import DirectoryStore, MailStore
from postwerk.store.records import MailboxDatabase, QueuedMessage, ServerRecord
from postwerk.transport.frontend_relay import RelayFactory
from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli
from tests.integration.test_smtp_submission import message

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
DOWN = "127.0.0.2"  # loopback, where nothing listens on these ports
SWAKS = shutil.which("swaks")


class NoMailboxStore:
    """A Client Access server holds no mailboxes: every usage reads as empty, so
    quotas are the Mailbox server's to enforce."""

    async def mailbox_size(self, mailbox_id: int) -> int:
        return 0


class RecordingTrust(ServerTrust):
    """The Mailbox server's check of server credentials, noting each login it sees."""

    logins: list[str]

    async def is_server(self, name: str, password: str) -> bool:
        self.logins.append(name)
        return await super().is_server(name, password)


@dataclass
class Split:
    org: RunningServer
    store: DirectoryStore
    secret: str
    sha: str  # the certificate of every listener here (the org's)
    factory: RelayFactory
    front: SmtpListener  # CAS1's Default Frontend (25)
    client_front: SmtpListener  # CAS1's Client Frontend (587)
    hub: SmtpListener  # MAIL's Default MAIL (2525)
    proxy: SmtpListener  # MAIL's Client Proxy MAIL (465)
    hub2: SmtpListener  # MBX2's Default (2525)
    mail_logins: list[str]  # server logins MAIL's back end saw

    def call(self, coro: Any) -> Any:
        return self.org.call(coro)

    def register(
        self,
        name: str,
        address: str = "127.0.0.1",
        *,
        listener: SmtpListener | None = None,
        sha: str | None = None,
        roles: tuple[str, ...] = ("mailbox",),
    ) -> None:
        """(Re-)register Mailbox server `name` as running, reached at `address` on
        `listener`'s port (as a port offset from the factory's hub port)."""
        offset = 0 if listener is None else listener.bound_port - self.factory.hub_port

        async def put() -> None:
            current = {s.name: s for s in await self.store.list_servers()}.get(name)
            record = current or ServerRecord(name, f"{name.lower()}.example.test", roles, ())
            await self.store.put_server(
                replace(
                    record,
                    roles=roles if current is None else tuple({*record.roles, *roles}),
                    addresses=(address,),
                    port_offset=offset,
                    certificate_sha256=self.sha if sha is None else sha,
                    heartbeat_at=time.time(),
                    stopped_at=0.0,
                )
            )

        self.call(put())

    def smtp(self, listener: SmtpListener, helo: str = "client.remote.test") -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", listener.bound_port, timeout=20)
        s.ehlo(helo)
        return s

    def submission(self, listener: SmtpListener, login: str | None = ALICE) -> smtplib.SMTP:
        s = self.smtp(listener, "laptop")
        s.starttls(context=self.org.client_context())
        s.ehlo("laptop")
        if login is not None:
            s.login(login, PASSWORD)
        return s

    def queued(self, queue_id: str) -> QueuedMessage | None:
        async def get() -> QueuedMessage | None:
            found: QueuedMessage | None = await self.org.server.backend.sql.queue.get_message(
                queue_id
            )
            return found

        return cast("QueuedMessage | None", self.call(get()))

    def queue_size(self) -> int:
        async def count() -> int:
            return len(await self.org.server.backend.sql.queue.list_messages())

        return int(self.call(count()))


def internal_id(text: bytes) -> str:
    m = re.search(rb"InternalId=([^,\]\s]+)", text)
    assert m is not None, text
    return m.group(1).decode()


@pytest.fixture
def split(org: RunningServer) -> Iterator[Split]:
    server = org.server
    store: DirectoryStore = server.backend.sql.directory
    base: ReceiveContext = server.listeners[0].ctx

    async def build() -> Split:
        organization = await store.get_organization()
        assert organization is not None and organization.secret
        secret = organization.secret
        sha = certificate_sha256(org.data_dir / "tls" / "server.crt")
        trust = ServerTrust.from_directory(store, secret, "MAIL")
        recording = RecordingTrust(trust.secret, trust.this_server, trust._registered)
        recording.logins = []
        back = replace(base, trust=recording)
        hub = SmtpListener(back, "127.0.0.1", 0, 2525)
        proxy = SmtpListener(back, "127.0.0.1", 0, 465)
        hub2 = SmtpListener(
            replace(
                base,
                hostname="mbx2.example.test",
                trust=ServerTrust.from_directory(store, secret, "MBX2"),
            ),
            "127.0.0.1",
            0,
            2525,
        )
        for listener in (hub, proxy, hub2):
            await listener.start()
        factory = RelayFactory(
            Placement(store, ttl=0.0),
            ServerTrust.from_directory(store, secret, "CAS1"),
            "cas1.example.test",
            hub_port=hub.bound_port,
            client_proxy_port=proxy.bound_port,
            connect_timeout=5.0,
            command_timeout=10.0,
            data_timeout=10.0,
        )
        front_ctx = replace(
            base,
            hostname="cas1.example.test",
            relay=factory,
            mail=cast(MailStore, NoMailboxStore()),
        )
        front = SmtpListener(front_ctx, "127.0.0.1", 0, 25)
        client_front = SmtpListener(front_ctx, "127.0.0.1", 0, 587)
        await front.start()
        await client_front.start()
        await store.put_server(
            ServerRecord(
                "CAS1", "cas1.example.test", ("cas",), ("127.0.0.1",), heartbeat_at=time.time()
            )
        )
        # Every mailbox in MAIL's database: MAIL is where their mail goes first.
        await store.put_mailbox_database(MailboxDatabase("MAIL-DB01", "MAIL", time.time()))
        for address in (ALICE, BOB):
            recipient = await server.directory.get(address)
            await store.set_recipient_database(recipient.id, "MAIL-DB01")
        return Split(
            org,
            store,
            secret,
            sha,
            factory,
            front,
            client_front,
            hub,
            proxy,
            hub2,
            recording.logins,
        )

    env: Split = org.call(build())
    env.register("MAIL", roles=("mailbox",))
    try:
        yield env
    finally:

        async def stop() -> None:
            for listener in (env.front, env.client_front, env.hub, env.proxy, env.hub2):
                await listener.stop(drain_seconds=1)

        org.call(stop())


# --- inbound mail ------------------------------------------------------------------


def test_inbound_mail_lands_and_the_250_is_the_mailbox_servers(split: Split) -> None:
    with split.smtp(split.front) as s:
        code, banner = s.ehlo("client.remote.test")
        assert b"cas1.example.test" in banner
        assert s.mail("someone@remote.test")[0] == 250
        assert s.rcpt(ALICE) == (250, b"2.1.5 Recipient OK")
        code, text = s.data(b"From: someone@remote.test\r\nSubject: via CAS\r\n\r\nhello\r\n")
    assert code == 250
    assert text.startswith(b"2.6.0 ")
    assert b"Hostname=mail.example.test" in text  # the Mailbox server's queue, not CAS1's
    queue_id = internal_id(text)
    assert split.mail_logins == ["CAS1"]  # the front end logged in as a server
    items = split.org.wait_inbox(ALICE, 1)
    assert [i.summary.get("subject") for i in items] == ["via CAS"]
    raw = split.org.read_item(items[0])
    received = BytesHeaderParser().parsebytes(raw).get_all("Received") or []
    # Newest first: the Mailbox server's (from the front end), then the front end's.
    assert "from cas1.example.test" in received[0] and f"id {queue_id}" in received[0]
    assert "from client.remote.test" in received[1] and "by cas1.example.test" in received[1]


def test_the_server_hosting_the_mailbox_is_preferred_and_groups_go_round_robin(
    split: Split,
) -> None:
    split.register("MBX2", listener=split.hub2)
    hostnames = set()
    for n in range(3):
        with split.smtp(split.front) as s:
            s.mail("someone@remote.test")
            assert s.rcpt(ALICE)[0] == 250
            code, text = s.data(f"Subject: a{n}\r\n\r\nx\r\n".encode())
            assert code == 250
            m = re.search(rb"Hostname=([^\]]+)", text)
            assert m is not None
            hostnames.add(m.group(1))
    assert hostnames == {b"mail.example.test"}
    # A group has no database of its own: the running Mailbox servers take turns.
    seen = set()
    for n in range(2):
        with split.smtp(split.front) as s:
            s.mail("someone@remote.test")
            assert s.rcpt(f"team@{DOMAIN}")[0] == 250
            code, text = s.data(f"Subject: team {n}\r\n\r\nx\r\n".encode())
            assert code == 250
            m = re.search(rb"Hostname=([^\]]+)", text)
            assert m is not None
            seen.add(m.group(1))
    assert seen == {b"mail.example.test", b"mbx2.example.test"}


def test_one_backend_connection_serves_the_sessions_transactions(split: Split) -> None:
    with split.smtp(split.front) as s:
        for n in range(3):
            assert s.mail("someone@remote.test")[0] == 250
            assert s.rcpt(BOB)[0] == 250
            if n == 1:
                assert s.rset()[0] == 250  # the back end's transaction goes with it
                continue
            assert s.data(f"Subject: t{n}\r\n\r\nx\r\n".encode())[0] == 250
        assert len(split.hub.live) == 1
    assert sorted(i.summary.get("subject") for i in split.org.wait_inbox(BOB, 2)) == ["t0", "t2"]


def test_backend_rcpt_refusal_reaches_the_client_at_rcpt(split: Split) -> None:
    # Fill bob's mailbox, then set his quota to exactly what he uses: full.
    with split.smtp(split.front) as s:
        s.sendmail("someone@remote.test", [BOB], b"Subject: filler\r\n\r\nfiller\r\n")
    split.org.wait_inbox(BOB, 1)

    async def used() -> int:
        recipient = await split.org.server.directory.get(BOB)
        size: int = await split.org.server.backend.sql.mailstore.mailbox_size(recipient.id)
        return size

    cli(split.org.data_dir, "mailbox", "set-quota", BOB, str(split.call(used())))
    with split.smtp(split.front) as s:
        assert s.mail("someone@remote.test")[0] == 250
        # The front end has no mailbox store: this refusal is the Mailbox server's.
        assert s.rcpt(BOB) == (552, f"5.2.2 <{BOB}>: Mailbox full".encode())
        assert s.rcpt(f"nobody@{DOMAIN}")[0] == 550  # the front end's own check
        assert s.rcpt(ALICE)[0] == 250
        assert s.data(b"Subject: for both\r\n\r\nx\r\n")[0] == 250
    assert [i.summary.get("subject") for i in split.org.wait_inbox(ALICE, 1)] == ["for both"]
    assert len(split.org.inbox(BOB)) == 1


# --- submission --------------------------------------------------------------------


def test_submission_through_the_front_end(split: Split) -> None:
    with split.submission(split.client_front) as s:
        assert s.send_message(message(ALICE, BOB, "submitted", with_ids=False)) == {}
        # To the outside: kept in the Mailbox server's queue (no send connector here).
        s.mail(ALICE)
        assert s.rcpt("friend@elsewhere.test")[0] == 250
        code, text = s.data(message(ALICE, "friend@elsewhere.test", "out").as_bytes(policy=SMTP))
        assert code == 250
    queued = split.queued(internal_id(text))
    assert queued is not None
    assert queued.connector == "Client Proxy MAIL"  # 465, not Default MAIL
    assert queued.auth_user == ALICE  # AUTH=<alice> from the server-authenticated front end
    assert queued.params.get("auth") == ALICE
    raw = split.org.read_item(split.org.wait_inbox(BOB, 1)[0])
    # The Mailbox server completes a submission's headers, as on an all-in-one server.
    assert b"\r\nMessage-ID: <" in raw and b"\r\nDate: " in raw
    assert b"with ESMTPSA" in raw


def test_send_as_is_still_refused_at_the_front_end(split: Split) -> None:
    before = split.queue_size()
    with split.submission(split.client_front) as s:
        code, text = s.mail(BOB)
        assert (code, text[:6]) == (550, b"5.7.60")
        # The envelope is alice's, the From header bob's: refused at end of data, and
        # nothing reached the Mailbox server's queue.
        assert s.mail(ALICE)[0] == 250
        assert s.rcpt(BOB)[0] == 250
        code, text = s.data(message(BOB, BOB, "spoofed").as_bytes(policy=SMTP))
        assert (code, text[:6]) == (550, b"5.7.60")
        # The session and its back end go on.
        assert s.send_message(message(ALICE, BOB, "honest")) == {}
    assert [i.summary.get("subject") for i in split.org.wait_inbox(BOB, 1)] == ["honest"]
    time.sleep(0.3)
    assert len(split.org.inbox(BOB)) == 1
    assert split.queue_size() <= before


# --- failover ----------------------------------------------------------------------


def test_failover_to_the_next_mailbox_server(split: Split) -> None:
    split.register("MAIL", DOWN)  # the mailbox's own server: connection refused
    split.register("MBX2", listener=split.hub2)
    with split.smtp(split.front) as s:
        s.mail("someone@remote.test")
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(b"Subject: failed over\r\n\r\nx\r\n")
    assert code == 250 and b"Hostname=mbx2.example.test" in text
    assert [i.summary.get("subject") for i in split.org.wait_inbox(ALICE, 1)] == ["failed over"]


def test_all_mailbox_servers_down_is_451_and_nothing_is_queued(split: Split) -> None:
    split.register("MAIL", DOWN)
    split.register("MBX2", DOWN)
    before = split.queue_size()
    with split.smtp(split.front) as s:
        assert s.mail("someone@remote.test")[0] == 250
        code, text = s.rcpt(ALICE)
        assert (code, text[:5]) == (451, b"4.4.0")
        assert s.rcpt(BOB)[0] == 451
        s.putcmd("DATA")
        assert s.getreply()[0] == 554  # no recipient: no 354, nothing taken
    assert split.queue_size() == before
    assert split.org.inbox(ALICE) == []


def test_a_certificate_other_than_the_registered_one_is_not_used(split: Split) -> None:
    split.register("MAIL", sha="00" * 32)
    with split.smtp(split.front) as s:
        s.mail("someone@remote.test")
        assert s.rcpt(ALICE)[:1] == (451,)
        s.rset()
        split.register("MBX2", listener=split.hub2)
        s.mail("someone@remote.test")
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(b"Subject: pinned\r\n\r\nx\r\n")
    assert code == 250 and b"Hostname=mbx2.example.test" in text
    # MAIL never saw a login: the credentials go only to a pinned peer.
    assert split.mail_logins == []


def test_backend_gone_mid_data_is_4xx_at_end_of_data(split: Split) -> None:
    with split.smtp(split.front) as s:
        s.mail("someone@remote.test")
        assert s.rcpt(ALICE)[0] == 250
        s.putcmd("DATA")
        assert s.getreply()[0] == 354
        s.send(b"Subject: half\r\n\r\nthe first half\r\n")
        time.sleep(0.2)

        async def crash() -> None:
            for session in list(split.hub.live.values()):
                transport = session.channel.transport
                assert transport is not None
                transport.abort()  # no 421, no goodbye: the process died
            await asyncio.sleep(0.05)

        split.call(crash())
        s.send(b"the second half\r\n.\r\n")
        code, text = s.getreply()
        assert (code, text[:5]) == (451, b"4.4.0")
        # The same client session goes on, on a new back-end connection.
        s.mail("someone@remote.test")
        assert s.rcpt(ALICE)[0] == 250
        assert s.data(b"Subject: whole\r\n\r\nx\r\n")[0] == 250
    assert [i.summary.get("subject") for i in split.org.wait_inbox(ALICE, 1)] == ["whole"]
    time.sleep(0.3)
    assert len(split.org.inbox(ALICE)) == 1


# --- the back end's own ports --------------------------------------------------------


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_anonymous_client_on_2525_and_465_cannot_send(split: Split) -> None:
    for listener in (split.hub, split.proxy):
        with split.smtp(listener) as s:
            s.ehlo("intruder")
            code, text = s.mail("someone@remote.test")
            assert (code, text[:4]) == (530, b"5.7.")
            assert s.rcpt("victim@elsewhere.test")[0] != 250
            # No password before TLS (BasicAuthRequireTLS), a server's included.
            assert s.docmd("AUTH", "PLAIN " + plain("CAS1", "x"))[0] == 530
            s.starttls(context=split.org.client_context())
            s.ehlo("intruder")
            code, text = s.mail("someone@remote.test", ["AUTH=" + ALICE])
            assert code == 530  # AUTH= from an anonymous client grants nothing
            assert s.rcpt("victim@elsewhere.test")[0] != 250


def test_wrong_or_unregistered_server_credentials_are_535(split: Split) -> None:
    with split.submission(split.hub, login=None) as s:
        assert s.docmd("AUTH", "PLAIN " + plain("CAS1", "guessed"))[0] == 535
        # The right derivation for a name the directory does not list: refused too.
        forged = server_password(split.secret, "CAS9")
        assert s.docmd("AUTH", "PLAIN " + plain("CAS9", forged))[0] == 535
        assert s.mail("someone@remote.test")[0] == 530


def test_server_authenticated_session_submits_relays_and_names_the_submitter(
    split: Split,
) -> None:
    with split.submission(split.hub, login=None) as s:
        password = server_password(split.secret, "CAS1")
        assert s.docmd("AUTH", "PLAIN " + plain("CAS1", password))[0] == 235
        # No send-as check (the front end made it) and relay to the outside allowed.
        assert s.mail("someone@remote.test", ["AUTH=" + ALICE])[0] == 250
        assert s.rcpt("friend@elsewhere.test")[0] == 250
        code, text = s.data(b"From: someone@remote.test\r\nSubject: s\r\n\r\nx\r\n")
        assert code == 250
    queued = split.queued(internal_id(text))
    assert queued is not None and queued.auth_user == ALICE
    assert queued.params.get("auth") == ALICE


def test_auth_parameter_is_ignored_without_server_authentication(split: Split) -> None:
    # alice herself on Client Proxy (ExchangeUsers): her AUTH=<bob> is not believed.
    with split.submission(split.proxy) as s:
        assert s.mail(ALICE, ["AUTH=" + BOB])[0] == 250
        assert s.rcpt("friend@elsewhere.test")[0] == 250
        code, text = s.data(message(ALICE, "friend@elsewhere.test", "x").as_bytes(policy=SMTP))
        assert code == 250
    queued = split.queued(internal_id(text))
    assert queued is not None and queued.auth_user == ALICE
    assert queued.params.get("auth") == ALICE


# --- swaks ---------------------------------------------------------------------------


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    assert SWAKS is not None
    return subprocess.run(
        [SWAKS, "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
@pytest.mark.skipif(SWAKS is None, reason="swaks is not on PATH (apt-get install swaks)")
def test_swaks_pipelined_inbound_and_submission(split: Split, tmp_path: Path) -> None:
    result = swaks(
        "--pipeline",
        "--to",
        f"{ALICE},{BOB}",
        "--from",
        "sender@remote.test",
        "--server",
        f"127.0.0.1:{split.front.bound_port}",
        "--header",
        "Subject: swaks via CAS",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"<-  250 2\.6\.0 .*InternalId=.*Hostname=mail\.example\.test", result.stdout)
    ca = tmp_path / "ca.pem"
    split.org.ca.cert_pem.write_to_path(str(ca))
    result = swaks(
        "--to",
        BOB,
        "--from",
        ALICE,
        "--server",
        f"127.0.0.1:{split.client_front.bound_port}",
        "--tls",
        "--tls-ca-path",
        str(ca),
        "--auth",
        "PLAIN",
        "--auth-user",
        ALICE,
        "--auth-password",
        PASSWORD,
        "--header",
        "Subject: swaks submitted via CAS",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    subjects = {i.summary.get("subject") for i in split.org.wait_inbox(BOB, 2)}
    assert subjects == {"swaks via CAS", "swaks submitted via CAS"}


def test_bdat_and_a_large_message_arrive_intact(split: Split) -> None:
    lines = b"".join(b".%06d " % n + b"x" * 60 + b"\r\n" for n in range(12000))  # ~800 KB
    body = b"Subject: large\r\n\r\n" + lines
    with split.smtp(split.front) as s:
        assert s.mail("someone@remote.test")[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        # DATA from the client (dots stuffed on the wire, unstuffed at the front end).
        assert s.data(body)[0] == 250
        # BDAT from the client, in two chunks.
        assert s.mail("someone@remote.test")[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        chunked = b"Subject: chunked\r\n\r\n" + lines
        half = len(chunked) // 2
        s.send(b"BDAT %d\r\n" % half + chunked[:half])
        assert s.getreply()[0] == 250
        s.send(b"BDAT %d LAST\r\n" % (len(chunked) - half) + chunked[half:])
        code, text = s.getreply()
        assert code == 250 and b"Hostname=mail.example.test" in text
    items = {i.summary.get("subject"): i for i in split.org.wait_inbox(ALICE, 2)}
    assert split.org.read_item(items["large"]).endswith(lines)
    assert split.org.read_item(items["chunked"]).endswith(lines)


def test_a_backend_connection_dropped_while_idle_is_replaced(split: Split) -> None:
    with split.smtp(split.front) as s:
        s.sendmail("someone@remote.test", [ALICE], b"Subject: one\r\n\r\nx\r\n")

        async def drop() -> None:
            # What the back end's inactivity timeout does between two transactions.
            for session in list(split.hub.live.values()):
                session.shutdown()
            await asyncio.sleep(0.1)

        split.call(drop())
        s.sendmail("someone@remote.test", [ALICE], b"Subject: two\r\n\r\nx\r\n")
    subjects = sorted(i.summary.get("subject") for i in split.org.wait_inbox(ALICE, 2))
    assert subjects == ["one", "two"]
