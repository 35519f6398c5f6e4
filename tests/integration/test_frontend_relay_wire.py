"""The front end's relay (transport/frontend_relay.py) against scripted Mailbox servers:
what goes over the wire. Real sockets and real STARTTLS with a pinned certificate; the
back ends are small fakes that answer from a script and record what they were sent,
so that the cases our own server never produces are covered: no CHUNKING (a DATA body,
dot-stuffed as it streams), 4xx greetings and MAIL refusals (failover), and an abort
inside DATA (the connection is closed: a body is never ended by accident)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import trustme

from postwerk.core.replies import Reply
from postwerk.directory.server_auth import ServerTrust, server_password
from postwerk.frontend.routing import Placement
from postwerk.protocols.smtp.commands import MailParams, RcptParams
from postwerk.store.api import DirectoryStore
from postwerk.store.records import MailboxDatabase, ServerRecord
from postwerk.transport.envelope import ReceiveInfo
from postwerk.transport.frontend_relay import RELAY_UNAVAILABLE, RelayFactory

SECRET = "organization secret"


@dataclass
class FakeBackend:
    """One scripted Mailbox server: `replies` overrides the answer to a verb."""

    tls: ssl.SSLContext
    ehlo: tuple[str, ...] = ("PIPELINING", "DSN", "SIZE 1000000", "8BITMIME", "SMTPUTF8")
    replies: dict[str, bytes] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    unfinished: list[bytes] = field(default_factory=list)  # DATA bodies cut off
    # Commands read while the next one had already arrived (written together).
    followed: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.replies.get("GREETING", b"220 fake ESMTP\r\n"))
        tls = False
        try:
            while line := await reader.readline():
                text = line.decode().rstrip("\r\n")
                verb = text.split(" ", 1)[0].upper()
                self.commands.append(text)
                if reader._buffer:  # type: ignore[attr-defined]
                    self.followed.append(verb)
                if verb in self.replies:
                    writer.write(self.replies[verb])
                    if self.replies[verb].startswith(b"421"):
                        break
                elif verb == "EHLO":
                    offered = [*self.ehlo, "AUTH PLAIN" if tls else "STARTTLS"]
                    lines = ["fake", *offered]
                    out = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
                    writer.write(out.encode())
                elif verb == "STARTTLS":
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.tls)
                    tls = True
                elif verb == "AUTH":
                    writer.write(b"235 2.7.0 ok\r\n")
                elif verb == "DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    body = b""
                    while not body.endswith(b"\r\n.\r\n") and body != b".\r\n":
                        chunk = await reader.readline()
                        if not chunk:
                            self.unfinished.append(body)
                            return
                        body += chunk
                    self.bodies.append(body)
                    n = len(self.bodies)
                    writer.write(
                        b"250 2.6.0 <m@fake> [InternalId=FAKE%d, Hostname=fake] ok\r\n" % n
                    )
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


class Directory:
    """The two reads `Placement` makes."""

    def __init__(self) -> None:
        self.servers: list[ServerRecord] = []
        self.databases = [MailboxDatabase("DB1", "MBX1")]

    async def list_servers(self) -> list[ServerRecord]:
        return self.servers

    async def list_mailbox_databases(self) -> list[MailboxDatabase]:
        return self.databases


@dataclass
class Env:
    ca: trustme.CA
    sha: str
    tls: ssl.SSLContext
    directory: Directory
    backends: list[FakeBackend] = field(default_factory=list)

    async def backend(self, **kwargs: Any) -> FakeBackend:
        fake = FakeBackend(self.tls, **kwargs)
        await fake.start()
        self.backends.append(fake)
        return fake

    def register(self, name: str, fake: FakeBackend, factory_port: int = 2525) -> None:
        self.directory.servers.append(
            ServerRecord(
                name,
                f"{name.lower()}.example.test",
                ("mailbox",),
                ("127.0.0.1",),
                port_offset=fake.port - factory_port,
                heartbeat_at=time.time(),
                certificate_sha256=self.sha,
            )
        )

    def factory(self) -> RelayFactory:
        directory = cast(DirectoryStore, self.directory)

        async def registered() -> list[str]:
            return ["CAS1", *(s.name for s in self.directory.servers)]

        return RelayFactory(
            Placement(directory, ttl=0.0),
            ServerTrust(SECRET, "CAS1", registered),
            "cas1.example.test",
            hub_port=2525,
            connect_timeout=5.0,
            command_timeout=5.0,
            data_timeout=5.0,
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    ca = trustme.CA()
    cert = ca.issue_cert("mbx.example.test")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    environment = Env(ca, hashlib.sha256(der).hexdigest(), tls, Directory())
    yield environment
    for fake in environment.backends:
        await fake.stop()


def info(**overrides: Any) -> ReceiveInfo:
    values: dict[str, Any] = dict(
        session_id="s1",
        connector="Default Frontend CAS1",
        client_ip="192.0.2.7",
        client_helo="client.remote.test",
        server_ip="127.0.0.1",
        server_hostname="cas1.example.test",
        protocol="ESMTPS",
    )
    values.update(overrides)
    return ReceiveInfo(**values)


async def relay_once(
    factory: RelayFactory,
    pieces: list[bytes],
    *,
    params: MailParams | None = None,
    submitter: str | None = None,
) -> tuple[Reply | None, Reply, Reply]:
    relay = factory.relay(_connector())
    opened = await relay.begin("a@remote.test", params or MailParams(), submitter, "DB1")
    rcpt = await relay.rcpt("u@example.test", RcptParams(notify=("FAILURE",), orcpt="rfc822;u@x"))
    message = relay.message(info(), ["u@example.test"])
    for piece in pieces:
        await message.write(piece)
    end = await message.finish()
    await relay.close()
    return opened, rcpt, end


def _connector() -> Any:
    from postwerk.directory.connectors import default_receive_connectors

    ports = {"smtp": 25, "submission": 587, "outbound_proxy": 717}
    ports |= {"hub_smtp": 2525, "client_proxy": 465}
    return default_receive_connectors("CAS1", ["cas"], ports)[0]  # Default Frontend


async def test_without_chunking_the_body_goes_as_data_dot_stuffed_as_it_streams(env: Env) -> None:
    fake = await env.backend()
    env.register("MBX1", fake)
    body = b"Subject: dots\r\n\r\n.leading dot\r\nmiddle\r\n..two\r\n.\r\nlast"
    # Split anywhere, inside CRLFs too.
    pieces = [body[i : i + 3] for i in range(0, len(body), 3)]
    opened, rcpt, end = await relay_once(env.factory(), pieces)
    assert opened is None and rcpt.code == 250
    assert end == Reply(250, "2.6.0", "<m@fake> [InternalId=FAKE1, Hostname=fake] ok")
    [sent] = fake.bodies
    assert sent.startswith(b"Received: from client.remote.test ([192.0.2.7])\r\n")
    assert sent.endswith(
        b"Subject: dots\r\n\r\n..leading dot\r\nmiddle\r\n...two\r\n..\r\nlast\r\n.\r\n"
    )


async def test_parameters_credentials_and_pinning_on_the_wire(env: Env) -> None:
    fake = await env.backend()
    env.register("MBX1", fake)
    params = MailParams(size=123, body="8BITMIME", ret="HDRS", envid="id+1 x")
    await relay_once(env.factory(), [b"Subject: p\r\n\r\nx\r\n"], params=params, submitter="u@x")
    mail = next(c for c in fake.commands if c.startswith("MAIL"))
    assert mail == (
        "MAIL FROM:<a@remote.test> SIZE=123 BODY=8BITMIME RET=HDRS ENVID=id+2B1+20x AUTH=u@x"
    )
    rcpt = next(c for c in fake.commands if c.startswith("RCPT"))
    assert rcpt == "RCPT TO:<u@example.test> NOTIFY=FAILURE ORCPT=rfc822;u@x"
    # No AUTH in the fake's EHLO before TLS; after it the server password, once.
    verbs = [c.split(" ")[0] for c in fake.commands]
    assert verbs[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    token = fake.commands[3].split(" ")[2]
    assert base64.b64decode(token) == f"\0CAS1\0{server_password(SECRET, 'CAS1')}".encode()


async def test_auth_parameter_when_the_back_end_offers_auth(env: Env) -> None:
    fake = await env.backend()
    env.register("MBX1", fake)
    await relay_once(env.factory(), [b"x\r\n"], submitter="u+1@example.test")
    await relay_once(env.factory(), [b"x\r\n"])
    mails = [c for c in fake.commands if c.startswith("MAIL")]
    assert mails == [
        "MAIL FROM:<a@remote.test> AUTH=u+2B1@example.test",
        "MAIL FROM:<a@remote.test> AUTH=<>",
    ]


@pytest.mark.parametrize(
    "refusal",
    [
        {"GREETING": b"421 4.3.2 busy\r\n"},
        {"MAIL": b"452 4.3.1 queue full\r\n"},
        {"AUTH": b"535 5.7.8 no\r\n"},
        {"STARTTLS": b"454 4.7.0 no TLS now\r\n"},
    ],
)
async def test_a_server_that_cannot_take_the_transaction_is_skipped(
    env: Env, refusal: dict[str, bytes]
) -> None:
    first = await env.backend(replies=refusal)
    second = await env.backend()
    env.register("MBX1", first)  # hosts DB1: tried first
    env.register("MBX2", second)
    opened, rcpt, end = await relay_once(env.factory(), [b"Subject: s\r\n\r\nx\r\n"])
    assert opened is None and rcpt.code == 250 and end.code == 250
    assert first.bodies == [] and len(second.bodies) == 1


async def test_a_permanent_mail_refusal_is_the_clients_rcpt_reply(env: Env) -> None:
    fake = await env.backend(replies={"MAIL": b"550 5.7.1 sender refused\r\n"})
    env.register("MBX1", fake)
    relay = env.factory().relay(_connector())
    refused = await relay.begin("a@remote.test", MailParams(), None, "DB1")
    assert refused == Reply(550, "5.7.1", "sender refused")
    await relay.close()


async def test_no_usable_server_is_451_4_4_0(env: Env) -> None:
    fake = await env.backend(replies={"GREETING": b"554 5.7.1 go away\r\n"})
    env.register("MBX1", fake)
    relay = env.factory().relay(_connector())
    assert await relay.begin("a@remote.test", MailParams(), None, "DB1") == RELAY_UNAVAILABLE
    assert RELAY_UNAVAILABLE.code == 451 and RELAY_UNAVAILABLE.status == "4.4.0"


async def test_aborting_inside_data_closes_instead_of_ending_the_body(env: Env) -> None:
    fake = await env.backend()
    env.register("MBX1", fake)
    factory = env.factory()
    relay = factory.relay(_connector())
    assert await relay.begin("a@remote.test", MailParams(), None, "DB1") is None
    assert (await relay.rcpt("u@example.test", RcptParams())).code == 250
    message = relay.message(info(), ["u@example.test"])
    await message.write(b"Subject: half\r\n\r\nonly half of it\r\n")
    await message.abort()
    await wait_until(lambda: len(fake.unfinished) == 1)
    assert fake.bodies == []
    # The next transaction of the session opens a new connection.
    assert await relay.begin("a@remote.test", MailParams(), None, "DB1") is None
    assert (await relay.rcpt("u@example.test", RcptParams())).code == 250
    message = relay.message(info(), ["u@example.test"])
    await message.write(b"Subject: whole\r\n\r\nx\r\n")
    assert (await message.finish()).code == 250
    await relay.close()
    assert len(fake.bodies) == 1 and b"Subject: whole" in fake.bodies[0]


async def test_a_message_refused_at_end_of_headers_never_reaches_the_back_end(env: Env) -> None:
    fake = await env.backend()
    env.register("MBX1", fake)
    relay = env.factory().relay(_connector())
    assert await relay.begin("me@example.test", MailParams(), "me@example.test", "DB1") is None
    assert (await relay.rcpt("u@example.test", RcptParams())).code == 250
    message = relay.message(info(allowed_from=frozenset({"me@example.test"})), ["u@example.test"])
    await message.write(b"From: boss@example.test\r\nSubject: s\r\n\r\nx\r\n")
    end = await message.finish()
    assert (end.code, end.status) == (550, "5.7.60")
    await relay.close()
    assert "DATA" not in fake.commands and "RSET" in fake.commands


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("pipelining", [True, False])
async def test_mail_and_the_first_rcpt_go_in_one_write_when_pipelining(
    env: Env, pipelining: bool
) -> None:
    """RFC 2920: one round trip less per message; `rcpt` answers from the reply read with
    MAIL's. Without PIPELINING, one command at a time."""
    fake = await env.backend()
    if not pipelining:
        fake.ehlo = ("DSN", "8BITMIME")
    env.register("MBX1", fake)
    relay = env.factory().relay(_connector())
    first = ("u@example.test", RcptParams())
    assert await relay.begin("a@remote.test", MailParams(), None, "DB1", first) is None
    assert (await relay.rcpt("u@example.test", RcptParams())).code == 250
    assert (await relay.rcpt("v@example.test", RcptParams())).code == 250
    message = relay.message(info(), ["u@example.test", "v@example.test"])
    await message.write(b"Subject: p\r\n\r\nx\r\n")
    assert (await message.finish()).code == 250
    await relay.close()
    rcpts = [c for c in fake.commands if c.startswith("RCPT")]
    assert rcpts == ["RCPT TO:<u@example.test>", "RCPT TO:<v@example.test>"]  # once each
    assert ("MAIL" in fake.followed) is pipelining


async def test_a_pipelined_rcpt_refused_is_the_clients_reply(env: Env) -> None:
    fake = await env.backend()
    fake.replies["RCPT"] = b"552 5.2.2 mailbox full\r\n"
    env.register("MBX1", fake)
    relay = env.factory().relay(_connector())
    first = ("u@example.test", RcptParams())
    assert await relay.begin("a@remote.test", MailParams(), None, "DB1", first) is None
    reply = await relay.rcpt("u@example.test", RcptParams())
    assert (reply.code, reply.status) == (552, "5.2.2")
    await relay.close()


async def test_a_silent_server_times_out_and_the_next_one_takes_the_transaction(
    env: Env,
) -> None:
    """A Mailbox server that accepts the connection and never greets is given up after
    the factory's connect timeout (5 s here, 15 s by default), not waited for forever."""
    silent = await env.backend(replies={"GREETING": b""})
    env.register("MBX1", silent)
    working = await env.backend()
    env.register("MBX2", working)
    relay = env.factory().relay(_connector())
    started = time.monotonic()
    assert await relay.begin("a@remote.test", MailParams(), None, "DB1") is None
    assert time.monotonic() - started < 10
    assert (await relay.rcpt("u@example.test", RcptParams())).code == 250
    assert any(c.startswith("MAIL") for c in working.commands)
    assert not silent.commands
    await relay.close()
