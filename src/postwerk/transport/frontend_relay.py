"""Front End Transport: a client's SMTP transaction relayed, as it happens, to a
Mailbox server's transport service.

Purpose: in Exchange 2013 the Client Access server keeps no queue. Its
`Default Frontend` (25) and `Client Frontend` (587) connectors do the session's
own work (greeting, TLS, AUTH, limits, the connection, HELO, MAIL and RCPT
checks), and from the first accepted RCPT on they relay the transaction to a
Mailbox server: to its `Default <server>` connector (2525) for inbound mail, to
its `Client Proxy <server>` (465) for submissions. The client gets the Mailbox
server's replies to RCPT and to the end of data, so a 250 there still means the
message is in a queue (the Mailbox server's), as on an all-in-one server.

- `RelayPolicy`: what a relay asks of its factory: the targets to try for a
  transaction (`route`: a `RelayRoute` of `RelayTarget`s, each opening a
  `Backend`), the replies for "none could be used" and "lost", and whether the
  submitter is vouched for with `AUTH=`. Two implement it: `RelayFactory` here,
  and the Outbound Proxy Frontend's (transport/outbound_proxy.py), whose targets
  are a send connector's destination hosts; the transaction path is shared.
- `RelayFactory` (one per process): the directory's placement, this server's
  credentials, the ports; picks the Mailbox servers to try for a transaction
  (`candidates`) and opens authenticated connections to them (`connect`).
- `MailboxRelay` (one per client session): the back-end connection, kept
  across the session's transactions; `begin` (MAIL FROM at the back end, at the
  client's first accepted RCPT), `rcpt`, `message` (the body), `reset`, `close`.
- `RelayedMessage`: the body as it arrives, with the checks the front end makes
  at end of headers (hop count, the 5.7.60 From check of a submission, header
  and message size) and its Received header in front; behaves like the local
  `MessageIntake` towards the session (`write`, `finish`, `abort`).

Which server: the one hosting the database of the first recipient's mailbox
(`Recipient.database` → `MailboxDatabase.server`) when it runs, else the other
running Mailbox servers, round-robin. Connecting to one: greeting 220, EHLO,
STARTTLS (`internal_client_context`), the certificate pinned to the one the
directory registered for that server, EHLO, `AUTH PLAIN` with this server's
credentials (directory/server_auth.py), MAIL FROM with the client's parameters
and `AUTH=` naming the submitting user (RFC 4954 §5; `AUTH=<>` for anonymous
mail). A server that fails any of that, or answers MAIL with 4xx, is skipped
for the next; when none is left the client gets `451 4.4.0` at RCPT.

Invariants:
- The client's end of data is answered 250 only with a Mailbox server's 250
  to that message; every local failure and a lost back end give 4xx.
- The server password goes only inside TLS to a peer whose certificate is the
  registered one; a mismatch is a failed server, never a prompt to go on.
- Once a RCPT has been accepted by a back end, the transaction never moves to
  another server: a failure then ends it with 451 4.4.0 at end of data, and the
  client (which got no 250 for the message) sends it again.
- A body is never committed by accident: an aborted body in DATA mode closes
  the back-end connection instead of ending the data; with BDAT the last chunk
  is simply not sent and the transaction is RSET.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

import structlog

from postwerk.core import replies
from postwerk.core.ids import new_id
from postwerk.core.replies import Reply
from postwerk.directory.connectors import ANONYMOUS_USERS
from postwerk.directory.server_auth import ServerTrust, internal_client_context, pinned
from postwerk.frontend.routing import Placement, server_host
from postwerk.observe import metrics
from postwerk.protocols.smtp.client import (
    DotStuffer,
    Extensions,
    ReplyError,
    ServerReply,
    mail_command,
    rcpt_command,
)
from postwerk.protocols.smtp.commands import MailParams, RcptParams
from postwerk.protocols.smtp.xtext import xtext_encode
from postwerk.store.records import ReceiveConnector, ServerRecord
from postwerk.transport.envelope import ReceiveInfo
from postwerk.transport.intake import header_rejection, received_header
from postwerk.transport.smtp_client import ConnectionLost, Wire, quit_quietly

__all__ = [
    "RELAY_LOST",
    "RELAY_UNAVAILABLE",
    "Backend",
    "MailboxRelay",
    "RelayFactory",
    "RelayPolicy",
    "RelayRoute",
    "RelayTarget",
    "RelayedMessage",
    "Unusable",
]

FRONTEND_TRANSPORT = "FrontendTransport"
# The reference's ports (settings.ports.hub_smtp / client_proxy / outbound_proxy).
HUB_SMTP_PORT = 2525
CLIENT_PROXY_PORT = 465
OUTBOUND_PROXY_PORT = 717
# Body octets gathered into one BDAT chunk to the back end (fewer round trips).
FORWARD_CHUNK = 256 * 1024
_READ_SIZE = 1 << 16
_INTERNAL_ID = re.compile(r"InternalId=([^,\]\s]+)")

RELAY_UNAVAILABLE = Reply(
    451, "4.4.0", "No Mailbox server is available to take the message; try again later"
)
RELAY_LOST = Reply(451, "4.4.0", "Lost the connection to the Mailbox server; try again later")


class Unusable(Exception):
    """This target cannot take the transaction now: try the next one. `reply`, when
    known, is what to answer if no target is left (RelayPolicy.unavailable)."""

    def __init__(self, reason: str, reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reply = reply


@dataclass(eq=False)
class Backend:
    server: str  # its label (a Mailbox server), or the host's name (a proxied destination)
    wire: Wire
    extensions: Extensions
    route: str = ""  # what it was opened for (RelayRoute.preferred): reused only for that


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """One server a transaction may go to: `open` connects (raises Unusable)."""

    name: str  # for the log
    open: Callable[[], Awaitable[Backend]]


@dataclass(frozen=True, slots=True)
class RelayRoute:
    """The targets to try, in order; a back end opened for another `preferred` route
    than this one is closed rather than reused (None: any open back end will do)."""

    preferred: str | None
    targets: Sequence[RelayTarget]


def _client_reply(reply: ServerReply) -> Reply:
    """The back end's reply as the client gets it (its enhanced status kept)."""
    return Reply(reply.code, reply.status, reply.text)


class RelayPolicy:
    """What a `MailboxRelay` needs from its factory (one per process and purpose)."""

    command_timeout: float = 60.0
    data_timeout: float = 600.0
    vouches: bool = True  # MAIL FROM carries AUTH=<submitter> where the back end has AUTH
    lost: Reply = RELAY_LOST  # the transaction's back end went away

    def __init__(self) -> None:
        self._retiring: set[asyncio.Task[None]] = set()  # QUITs said in the background

    async def route(
        self, database: str | None, params: MailParams, port: int
    ) -> RelayRoute | Reply:
        """The targets for a transaction (its first recipient's `database`, MAIL's
        `params`, the relay's back-end `port`), or the reply for the client's RCPT."""
        raise NotImplementedError

    def unavailable(self, last: Reply | None) -> Reply:
        """The client's RCPT reply when no target could be used (`last`: the last
        target's refusal, if one was given)."""
        return RELAY_UNAVAILABLE

    def retire(self, wire: Wire) -> None:
        """QUIT in the background: the client's session does not wait for a goodbye."""
        task = asyncio.get_running_loop().create_task(quit_quietly(wire))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


class RelayFactory(RelayPolicy):
    """What every relay of this front end shares: placement, credentials, ports.

    `hub_port`, `client_proxy_port` and `outbound_proxy_port` are the configured
    (un-offset) ports (`settings.ports`); each Mailbox server's `port_offset` is
    added when connecting to it.
    """

    def __init__(
        self,
        placement: Placement,
        trust: ServerTrust,
        helo_name: str,
        *,
        hub_port: int = HUB_SMTP_PORT,
        client_proxy_port: int = CLIENT_PROXY_PORT,
        outbound_proxy_port: int = OUTBOUND_PROXY_PORT,
        connect_timeout: float = 15.0,
        command_timeout: float = 60.0,
        data_timeout: float = 600.0,
    ) -> None:
        super().__init__()
        self.placement = placement
        self.trust = trust
        self.helo_name = helo_name
        self.hub_port = hub_port
        self.client_proxy_port = client_proxy_port
        self.outbound_proxy_port = outbound_proxy_port
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout
        self._tls = internal_client_context()
        self._turn = 0  # round-robin position among the running Mailbox servers

    def applies(self, connector: ReceiveConnector, port: int) -> bool:
        """Does a session on `connector` (reached on configured port `port`) relay to
        a Mailbox server? The front end's connectors do, except Outbound Proxy Frontend
        (717), whose sessions go out to the Internet (transport/outbound_proxy.py)."""
        return connector.transport_role == FRONTEND_TRANSPORT and port != self.outbound_proxy_port

    def backend_port(self, connector: ReceiveConnector) -> int:
        """Inbound mail (a connector anonymous senders may use, Default Frontend) goes
        to Default <server> (2525); submissions (Client Frontend) to Client Proxy (465)."""
        if ANONYMOUS_USERS in connector.permission_groups:
            return self.hub_port
        return self.client_proxy_port

    def relay(
        self, connector: ReceiveConnector, log: structlog.stdlib.BoundLogger | None = None
    ) -> MailboxRelay:
        """The relay of one client session on `connector`."""
        return MailboxRelay(self, self.backend_port(connector), log)

    # -- which servers ----------------------------------------------------------

    def _running_mailbox_servers(self) -> list[ServerRecord]:
        placement = self.placement
        return sorted(
            (
                s
                for s in placement.servers.values()
                if "mailbox" in s.roles and placement.running(s.name)
            ),
            key=lambda s: s.name,
        )

    async def route(
        self, database: str | None, params: MailParams, port: int
    ) -> RelayRoute | Reply:
        hosting, servers = await self.candidates(database)
        targets = [RelayTarget(s.name, functools.partial(self.connect, s, port)) for s in servers]
        return RelayRoute(hosting, targets)

    async def candidates(self, database: str | None) -> tuple[str | None, list[ServerRecord]]:
        """(the running server hosting `database`, or None; the servers to try in order:
        that one first, then the other running Mailbox servers from the next turn on)."""
        await self.placement.refresh()
        servers = self._running_mailbox_servers()
        hosting = self.placement.server_of(database)
        if not servers or (hosting is not None and hosting not in {s.name for s in servers}):
            await self.placement.refresh(force=True)  # one came back, perhaps
            servers = self._running_mailbox_servers()
        if servers:
            turn = self._turn % len(servers)
            self._turn += 1
            servers = servers[turn:] + servers[:turn]
        first = next((s for s in servers if s.name == hosting), None)
        if first is None:
            return None, servers
        return first.name, [first, *(s for s in servers if s is not first)]

    # -- one connection ---------------------------------------------------------

    async def connect(self, record: ServerRecord, port: int) -> Backend:
        """An authenticated session with `record`'s transport at `port` (+ its offset);
        raises Unusable with the reason."""
        host = server_host(record)
        port += record.port_offset
        wire: Wire | None = None
        timeout = self.command_timeout
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=_READ_SIZE)
                wire = Wire(reader, writer)
                greeting = await wire.reply(self.connect_timeout)
            if greeting.code != 220:
                raise Unusable(f"greeting {greeting.code} {greeting.text}")
            extensions = await self._ehlo(wire)
            if "STARTTLS" not in extensions:
                raise Unusable("STARTTLS not offered")
            reply = await wire.command(b"STARTTLS\r\n", timeout)
            if reply.code != 220:
                raise Unusable(f"STARTTLS refused: {reply.code} {reply.text}")
            if wire.replies.buffered:
                # Plaintext after the 220 would be read as if it came over TLS.
                raise Unusable("data after the STARTTLS reply")
            async with asyncio.timeout(timeout):
                await wire.writer.start_tls(self._tls, server_hostname=record.fqdn or None)
            if not pinned(wire.writer.get_extra_info("ssl_object"), record.certificate_sha256):
                # Before any credential is sent: a man in the middle learns nothing.
                raise Unusable("certificate is not the one registered for the server")
            extensions = await self._ehlo(wire)  # RFC 3207 §4.2: forget the first one
            if "PLAIN" not in extensions.auth_mechanisms:
                raise Unusable("AUTH PLAIN not offered")
            user, password = self.trust.credentials()
            token = base64.b64encode(f"\0{user}\0{password}".encode())
            reply = await wire.command(b"AUTH PLAIN " + token + b"\r\n", timeout)
            if reply.code != 235:
                raise Unusable(f"server authentication refused: {reply.code} {reply.text}")
        except Unusable:
            if wire is not None:
                wire.close()
            raise
        except (OSError, TimeoutError, ConnectionLost, ReplyError) as exc:
            if wire is not None:
                wire.close()
            raise Unusable(str(exc) or type(exc).__name__) from exc
        return Backend(record.name, wire, extensions, route=record.name)

    async def _ehlo(self, wire: Wire) -> Extensions:
        reply = await wire.command(
            b"EHLO " + self.helo_name.encode("ascii", "replace") + b"\r\n", self.command_timeout
        )
        if reply.code != 250:
            raise Unusable(f"EHLO refused: {reply.code} {reply.text}")
        return Extensions.from_ehlo(reply)


class MailboxRelay:
    """One client session's relay: at most one back-end connection, reused by the
    session's transactions while it stays up."""

    def __init__(
        self,
        factory: RelayPolicy,
        port: int,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.factory = factory
        self.port = port
        self.log = log or structlog.get_logger("postwerk.smtp.relay")
        self._backend: Backend | None = None
        self.in_transaction = False  # a back end accepted MAIL FROM and no end of data yet
        self.failed: Reply | None = None  # the transaction's back end was lost
        self._utf8 = False
        self._body: _BodyState | None = None
        # The first RCPT, written behind MAIL (PIPELINING), and the reply read for it.
        self._first_rcpt: tuple[str, RcptParams] | None = None
        self._pipelined: tuple[str, ServerReply] | None = None

    @property
    def server(self) -> str | None:
        """The Mailbox server connected to (its label), if any."""
        return self._backend.server if self._backend is not None else None

    # -- the transaction --------------------------------------------------------

    async def begin(
        self,
        sender: str,
        params: MailParams,
        submitter: str | None,
        database: str | None,
        first_rcpt: tuple[str, RcptParams] | None = None,
    ) -> Reply | None:
        """MAIL FROM at a Mailbox server, for the client's first accepted RCPT. None when
        one accepted it; else the reply to give that RCPT (451 4.4.0 when no server
        could be used, or a server's permanent refusal of MAIL). `first_rcpt`, when
        the back end offers PIPELINING, goes in the same write as MAIL (RFC 2920): one
        round trip less per message; `rcpt` then answers it from the reply read here."""
        self.failed = None
        self._body = None
        self._pipelined = None
        self._first_rcpt = first_rcpt
        self._utf8 = params.smtputf8 or not sender.isascii()
        route = await self.factory.route(database, params, self.port)
        if isinstance(route, Reply):
            return route
        backend = self._backend
        if backend is not None and route.preferred is not None and backend.route != route.preferred:
            # The next transaction's mailbox lives elsewhere (or its next hop differs):
            # go where it is delivered.
            self._drop(quit_first=True)
            backend = None
        last: Reply | None = None
        if backend is not None:
            outcome = await self._mail(backend, sender, params, submitter)
            if not isinstance(outcome, _Retry):
                return outcome
            last = outcome.reply
            # Dropped while idle (the back end's inactivity timeout), or refusing on this
            # connection: a fresh one, to the same server first if it is the one to use.
        for target in route.targets:
            try:
                backend = await target.open()
            except Unusable as exc:
                self.log.warning("relay_server_failed", server=target.name, error=str(exc))
                metrics.RELAY_CONNECTIONS.labels(result="failed").inc()
                last = exc.reply or last
                continue
            self._backend = backend
            self.log.info("relay_connected", server=target.name)
            metrics.RELAY_CONNECTIONS.labels(result="connected").inc()
            outcome = await self._mail(backend, sender, params, submitter)
            if not isinstance(outcome, _Retry):
                return outcome
            last = outcome.reply or last
        self.log.warning("relay_unavailable", tried=len(route.targets))
        metrics.RELAY_CONNECTIONS.labels(result="unavailable").inc()
        return self.factory.unavailable(last)

    async def _mail(
        self, backend: Backend, sender: str, params: MailParams, submitter: str | None
    ) -> Reply | _Retry | None:
        if self._utf8 and "SMTPUTF8" not in backend.extensions:
            # RFC 6531 §3.4: no downgrade; refused before MAIL, the connection stays clean.
            return Reply(554, "5.6.7", f"SMTPUTF8 is required, but not offered by {backend.server}")
        command = mail_command(
            sender,
            self._mail_params(backend.extensions, params, submitter, self.factory.vouches),
            utf8=self._utf8,
        )
        first = self._first_rcpt if "PIPELINING" in backend.extensions else None
        timeout = self.factory.command_timeout
        try:
            if first is None:
                reply = await backend.wire.command(command, timeout)
            else:
                await backend.wire.send(command + self._rcpt_line(backend, *first))
                reply = await backend.wire.reply(timeout)
                rcpt_reply = await backend.wire.reply(timeout)  # 503 when MAIL was refused
        except (ConnectionLost, TimeoutError, ReplyError) as exc:
            self.log.info("relay_server_failed", server=backend.server, error=str(exc))
            metrics.RELAY_CONNECTIONS.labels(result="failed").inc()
            self._drop()
            return _Retry(None)
        if reply.code == 250:
            self.in_transaction = True
            if first is not None:
                self._pipelined = (first[0], rcpt_reply)
            return None
        if 400 <= reply.code < 500:
            # 421 (going away, idle timeout) or a temporary refusal: another server may.
            self.log.info("relay_mail_deferred", server=backend.server, code=reply.code)
            self._drop(quit_first=reply.code != 421)
            return _Retry(_client_reply(reply))
        return _client_reply(reply)

    @staticmethod
    def _mail_params(
        ext: Extensions, params: MailParams, submitter: str | None, vouches: bool = True
    ) -> list[str]:
        out: list[str] = []
        if params.size is not None and "SIZE" in ext:
            out.append(f"SIZE={params.size}")
        if params.body is not None and (params.body != "8BITMIME" or "8BITMIME" in ext):
            # An 8-bit body to a peer without 8BITMIME goes unchanged and unlabelled, as
            # the send connectors' client does (transport/smtp_client.py).
            out.append(f"BODY={params.body}")
        if params.smtputf8:
            out.append("SMTPUTF8")
        if "DSN" in ext:
            if params.ret is not None:
                out.append(f"RET={params.ret}")
            if params.envid is not None:
                out.append(f"ENVID={xtext_encode(params.envid)}")
        if "AUTH" in ext and vouches:
            # RFC 4954 §5: the submitter this server vouches for, or "<>" for none.
            out.append(f"AUTH={xtext_encode(submitter)}" if submitter else "AUTH=<>")
        return out

    async def rcpt(self, address: str, params: RcptParams) -> Reply:
        """The back end's reply to RCPT TO (with the client's NOTIFY and ORCPT)."""
        if self.failed is not None:
            return self.failed
        backend = self._backend
        if backend is None or not self.in_transaction:
            return self.factory.lost
        pipelined, self._pipelined = self._pipelined, None
        if pipelined is not None and pipelined[0] == address:
            reply = pipelined[1]  # sent with MAIL, read in `begin`
        else:
            line = self._rcpt_line(backend, address, params)
            try:
                reply = await backend.wire.command(line, self.factory.command_timeout)
            except (ConnectionLost, TimeoutError, ReplyError) as exc:
                return self._lost(str(exc))
        if reply.code == 421:
            return self._lost(f"{reply.code} {reply.text}")
        return _client_reply(reply)

    def _rcpt_line(self, backend: Backend, address: str, params: RcptParams) -> bytes:
        rcpt_params: list[str] = []
        if "DSN" in backend.extensions:
            if params.notify is not None:
                rcpt_params.append("NOTIFY=" + ",".join(params.notify))
            if params.orcpt is not None:
                kind, _, original = params.orcpt.partition(";")
                rcpt_params.append(f"ORCPT={kind};{xtext_encode(original)}")
        return rcpt_command(address, rcpt_params, utf8=self._utf8)

    def message(self, info: ReceiveInfo, recipients: Sequence[str]) -> RelayedMessage:
        """The body of the current transaction, to be written as the client sends it."""
        self._body = _BodyState()
        return RelayedMessage(self, info, recipients)

    async def reset(self) -> None:
        """The client's RSET (or a new EHLO): the back end's transaction goes too."""
        body, self._body = self._body, None
        self.failed = None
        self._pipelined = None
        backend = self._backend
        if backend is None:
            self.in_transaction = False
            return
        if body is not None and body.started and not body.chunked and body.refused is None:
            self._drop()  # inside DATA: only closing the connection ends it without a commit
            return
        if not self.in_transaction and (body is None or not body.started):
            return
        self.in_transaction = False
        try:
            if body is not None:
                await self._read_chunk_replies(backend, body)
            reply = await backend.wire.command(b"RSET\r\n", self.factory.command_timeout)
        except (ConnectionLost, TimeoutError, ReplyError):
            self._drop()
            return
        if reply.code != 250:
            self._drop(quit_first=True)

    async def close(self) -> None:
        """The client left: QUIT the back end (an unfinished transaction dies with it)."""
        backend, self._backend = self._backend, None
        self.in_transaction = False
        self._body = None
        if backend is None:
            return
        await quit_quietly(backend.wire)

    # -- the body ---------------------------------------------------------------

    async def forward(self, data: bytes) -> None:
        """Body octets (unstuffed, as received) to the back end."""
        body = self._body
        backend = self._backend
        if body is None or self.failed is not None or backend is None:
            return
        if body.refused is not None:
            return
        timeout = self.factory.data_timeout
        try:
            if not body.started:
                body.started = True
                body.chunked = "CHUNKING" in backend.extensions
                if not body.chunked:
                    reply = await backend.wire.command(b"DATA\r\n", timeout)
                    if reply.code != 354:
                        body.refused = _client_reply(reply)
                        return
                    body.stuffer = DotStuffer()
            if body.chunked:
                body.pending += data
                if len(body.pending) >= FORWARD_CHUNK:
                    chunk = bytes(body.pending)
                    body.pending.clear()
                    async with asyncio.timeout(timeout):
                        await backend.wire.send(b"BDAT %d\r\n" % len(chunk) + chunk)
                    body.awaiting += 1  # RFC 3030 §4.2 with PIPELINING: read at the end
            elif data:
                assert body.stuffer is not None
                async with asyncio.timeout(timeout):
                    await backend.wire.send(body.stuffer.feed(data))
        except (ConnectionLost, TimeoutError, ReplyError) as exc:
            self._lost(str(exc))

    async def end_body(self) -> Reply:
        """The end of data at the back end; its reply (or 451 4.4.0 when it is gone)."""
        body = self._body
        if body is None:
            return replies.BAD_SEQUENCE
        if not body.started:
            await self.forward(b"")  # an empty message still gets a DATA or BDAT
        if self.failed is not None:
            failed = self.failed
            self._body = None
            return failed
        backend = self._backend
        if backend is None:
            self._body = None
            return self.factory.lost
        if body.refused is not None:
            await self.reset()
            return body.refused
        timeout = self.factory.data_timeout
        try:
            if body.chunked:
                chunk = bytes(body.pending)
                body.pending.clear()
                async with asyncio.timeout(timeout):
                    await backend.wire.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
                chunk_failure = await self._read_chunk_replies(backend, body)
                reply = await backend.wire.reply(timeout)
            else:
                assert body.stuffer is not None
                async with asyncio.timeout(timeout):
                    await backend.wire.send(body.stuffer.end())
                chunk_failure = None
                reply = await backend.wire.reply(timeout)
        except (ConnectionLost, TimeoutError, ReplyError) as exc:
            return self._lost(str(exc))
        self._body = None
        self.in_transaction = False  # RFC 5321 §4.1.1.4: the end of data ends it either way
        if reply.code == 421:
            return self._lost(f"{reply.code} {reply.text}")
        if chunk_failure is not None:
            # RFC 3030 §2: a refused chunk fails the message; RSET before the next.
            await self._rset_quietly(backend)
            return chunk_failure
        return _client_reply(reply)

    async def abort_body(self) -> None:
        """The message is not to be delivered (refused here, or the client gave up)."""
        await self.reset()

    async def _read_chunk_replies(self, backend: Backend, body: _BodyState) -> Reply | None:
        """Replies owed to the chunks sent before the last; the first refusal, if any."""
        failure: Reply | None = None
        while body.awaiting:
            reply = await backend.wire.reply(self.factory.data_timeout)
            body.awaiting -= 1
            if reply.code != 250 and failure is None:
                failure = _client_reply(reply)
        return failure

    # -- the connection ---------------------------------------------------------

    def _lost(self, detail: str) -> Reply:
        self.log.warning("relay_lost", server=self.server, error=detail)
        metrics.RELAY_CONNECTIONS.labels(result="lost").inc()
        self._drop()
        self.failed = self.factory.lost
        return self.factory.lost

    def _drop(self, quit_first: bool = False) -> None:
        backend, self._backend = self._backend, None
        self.in_transaction = False
        if backend is None:
            return
        if quit_first:
            self.factory.retire(backend.wire)
        else:
            backend.wire.close()

    async def _rset_quietly(self, backend: Backend) -> None:
        try:
            reply = await backend.wire.command(b"RSET\r\n", self.factory.command_timeout)
        except (ConnectionLost, TimeoutError, ReplyError):
            self._drop()
            return
        if reply.code != 250:
            self._drop(quit_first=True)


@dataclass(frozen=True, slots=True)
class _Retry:
    """`_mail`'s answer when this server did not take MAIL: try the next one."""

    reply: Reply | None  # its 4xx, if it gave one


@dataclass(eq=False)
class _BodyState:
    started: bool = False  # DATA sent (and 354 read), or the first chunk under way
    chunked: bool = False  # BDAT to the back end (it offers CHUNKING)
    refused: Reply | None = None  # the back end refused DATA
    pending: bytearray = field(default_factory=bytearray)  # the BDAT chunk being gathered
    awaiting: int = 0  # chunk replies not read yet
    stuffer: DotStuffer | None = None  # DATA mode


_HEADER_END = b"\r\n\r\n"


class RelayedMessage:
    """One message on its way to the back end: what the local `MessageIntake` is for
    the all-in-one server. The header block is held until it is complete, so that
    a message the front end refuses at end of headers never reaches a back end."""

    def __init__(self, relay: MailboxRelay, info: ReceiveInfo, recipients: Sequence[str]) -> None:
        self._relay = relay
        self._info = info
        self._recipients = tuple(recipients)
        self._trace_id = new_id()  # the id in our Received header
        self.queue_id = ""  # the back end's InternalId, once it took the message
        self._header_buf = bytearray()
        self._headers_done = False
        self._received_bytes = 0
        self._rejection: Reply | None = None
        self._finished = False

    @property
    def rejection(self) -> Reply | None:
        return self._rejection

    async def write(self, data: bytes) -> None:
        self._received_bytes += len(data)
        if self._rejection is not None or not data:
            return
        if self._received_bytes > self._info.max_message_size:
            self._rejection = replies.MESSAGE_TOO_BIG
            self._header_buf.clear()
            return
        if self._headers_done:
            await self._relay.forward(data)
            return
        start = max(0, len(self._header_buf) - 3)
        self._header_buf += data
        end = self._header_buf.find(_HEADER_END, start)
        if end < 0:
            if self._header_buf.startswith(b"\r\n"):
                end = -2  # an empty line first: no header block
            elif len(self._header_buf) > self._info.max_header_size:
                self._rejection = replies.HEADERS_TOO_BIG
                self._header_buf.clear()
                return
            else:
                return
        split = end + 4
        if split > self._info.max_header_size + 4:
            self._rejection = replies.HEADERS_TOO_BIG
            self._header_buf.clear()
            return
        block, rest = bytes(self._header_buf[:split]), bytes(self._header_buf[split:])
        await self._end_of_headers(block, rest)

    async def _end_of_headers(self, block: bytes, rest: bytes) -> None:
        self._headers_done = True
        self._header_buf = bytearray()
        headers = BytesHeaderParser(policy=compat32).parsebytes(block)
        rejection = header_rejection(headers, self._info)
        if rejection is not None:
            self._rejection = rejection
            return
        trace = received_header(self._info, self._trace_id, self._recipients)
        await self._relay.forward(trace.encode("utf-8") + block + rest)

    async def finish(self) -> Reply:
        """The reply to the client's end of data: the back end's, or a refusal here."""
        if self._finished:
            raise RuntimeError("relayed message finished twice")
        self._finished = True
        if self._rejection is None and not self._headers_done:
            block = bytes(self._header_buf)
            if block and not block.endswith(b"\r\n"):
                block += b"\r\n"
            await self._end_of_headers(block, b"")
        if self._rejection is not None:
            await self._relay.abort_body()
            return self._rejection
        reply = await self._relay.end_body()
        if reply.code == 250:
            m = _INTERNAL_ID.search(reply.text)
            self.queue_id = m.group(1) if m else ""
        return reply

    async def abort(self) -> None:
        if not self._finished:
            self._finished = True
            await self._relay.abort_body()
