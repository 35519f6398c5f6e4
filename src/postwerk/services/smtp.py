"""The SMTP receive service: one implementation behind every receive connector.

A listener accepts TCP connections; each connection gets a `SmtpChannel`
(an asyncio Protocol that only moves bytes) and an `SmtpSession` task that
drives the sans-I/O `ServerConnection` and applies the connector's policy.
Handlers return `Reply` values; only `_flush` writes to the socket, and it
does so when the client's pipelined input is used up (RFC 2920 §3.1).

Security invariants:
- Plaintext pipelined after STARTTLS is dropped before the handshake
  (CVE-2011-0411): the channel owns the only buffer, and it is cleared.
- DATA ends only at <CRLF>.<CRLF>; bare CR/LF in a body rejects the message
  (CVE-2023-51766 class), enforced by `protocols.smtp`.
- AUTH is offered only where the connector allows it (after TLS by default);
  failures are tarpitted and throttled per IP and per account.
- Client errors produce replies; unexpected exceptions produce 451/421 and
  are logged with the session id, never a traceback on the wire.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import assert_never, cast

import structlog

from postwerk.core import replies
from postwerk.core.addresses import parse_address
from postwerk.core.errors import InvalidName
from postwerk.core.ids import new_id
from postwerk.core.replies import Reply
from postwerk.directory.cache import RecipientLookup
from postwerk.directory.connectors import BASIC_AUTH, select_connector
from postwerk.directory.passwords import LoginThrottle
from postwerk.directory.server_auth import ServerTrust
from postwerk.directory.service import Directory
from postwerk.observe import metrics
from postwerk.protocols.sasl import mechanisms as sasl
from postwerk.protocols.smtp import commands as cmd
from postwerk.protocols.smtp.connection import (
    BodyData,
    BodyEnd,
    BodyRejected,
    ChunkData,
    ChunkEnd,
    CommandReceived,
    CommandRejected,
    ConnectionClosed,
    LineReceived,
    NeedData,
    ServerConnection,
)
from postwerk.protocols.smtp.extensions import ehlo_lines
from postwerk.services.tls import describe
from postwerk.store.api import MailStore
from postwerk.store.records import DomainType, ReceiveConnector, Recipient, RecipientKind
from postwerk.transport import quota
from postwerk.transport.agents import AgentRunner, Event, MessageView, SessionView
from postwerk.transport.envelope import Envelope, ReceiveInfo
from postwerk.transport.frontend_relay import MailboxRelay, RelayedMessage, RelayFactory
from postwerk.transport.intake import MessageIntake
from postwerk.transport.outbound_proxy import NEXT_HOP_PARAM, OutboundProxyFactory
from postwerk.transport.receive_policy import (
    Rights,
    accepts_server_auth,
    offers_auth,
    offers_starttls,
    rights_for,
)
from postwerk.transport.service import TransportService

HIGH_WATER = 256 * 1024  # pause reading when this much unparsed input is buffered
# A client no connector accepts gets 554 and, as RFC 5321 §3.1 asks, 503 to everything
# until QUIT; within these bounds, since no connector's limits apply to it.
REFUSED_GRACE_SECONDS = 10.0
REFUSED_MAX_COMMANDS = 5
NO_CONNECTOR = Reply(554, "5.7.1", "No receive connector accepts your address")
NEXT_HOP_REQUIRED = Reply(501, "5.5.4", "MAIL FROM needs XPWNEXTHOP on this connector")
# RFC 3207 §4: until TLS is active, a connector that requires it answers 530 to every other
# command. BDAT passes so that its chunk is read; without MAIL it fails after the chunk.
ALLOWED_BEFORE_REQUIRED_TLS = (cmd.Ehlo, cmd.Helo, cmd.StartTls, cmd.Noop, cmd.Quit, cmd.Bdat)
SASL_MECHANISMS = ("PLAIN", "LOGIN")


@dataclass
class ReceiveContext:
    """Everything a session needs from the server; built by the composition root."""

    hostname: str
    directory: Directory
    lookup: RecipientLookup  # cached reads for RCPT checks
    transport: TransportService
    mail: MailStore  # mailbox usage, for quotas at RCPT
    throttle: LoginThrottle
    tls_context: ssl.SSLContext | None
    connectors: Callable[[], Awaitable[list[ReceiveConnector]]]
    max_hop_count: int = 100
    max_recipients_per_message: int = 5000  # organization-wide; the connector's may be lower
    tarpit_override: float | None = None  # tests shorten the AUTH tarpit
    agents: AgentRunner | None = None  # transport agents; None when none are configured
    # Client Access: relay the front end's transactions to a Mailbox server
    # (transport/frontend_relay.py); None takes mail into this server's own queue.
    relay: RelayFactory | None = None
    # Client Access: Outbound Proxy Frontend (717) sessions of Mailbox servers relayed
    # to a send connector's next hop (transport/outbound_proxy.py); None: not relayed.
    outbound_proxy: OutboundProxyFactory | None = None
    # Organization servers' credentials (directory/server_auth.py): with it, AUTH as a
    # server works on connectors with the ExchangeServer mechanism (2525, 465, 717).
    trust: ServerTrust | None = None
    log: structlog.stdlib.BoundLogger = field(
        default_factory=lambda: structlog.get_logger("postwerk.smtp")
    )


class SmtpChannel(asyncio.Protocol):
    """Moves bytes between the socket and the sans-I/O connection; nothing else."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        # Set by every arrival; lets wait_for_data return at once if input came in while the
        # session was busy (the waiter may not exist yet: asyncio.wait_for starts a new task).
        self._pending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self.conn.buffered > HIGH_WATER and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.conn.receive_eof()
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conn.receive_eof()
        self._wake()

    def _wake(self) -> None:
        self._pending = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_for_data(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        if self._pending or self.closed:
            self._pending = False
            return
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._pending = False

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        # The session must not wait for connection_lost: a TLS close waits for the peer.
        self.closed = True
        self._wake()


@dataclass
class _Transaction:
    sender: str
    params: cmd.MailParams
    recipients: list[str] = field(default_factory=list)
    accepted_rcpts: int = 0  # RCPTs answered 250, duplicates included: what the limit counts
    rcpt_params: dict[str, dict[str, object]] = field(default_factory=dict)
    intake: MessageIntake | RelayedMessage | None = None
    # RFC 4954 §5: the submitting user this server vouches for (AUTH= when relaying on).
    submitter: str | None = None
    relayed: bool = False  # a Mailbox server took MAIL FROM for this transaction
    relay_failure: Reply | None = None  # ... or could not: the reply for each RCPT
    bdat_started: bool = False
    bdat_failed: Reply | None = None


class SmtpSession:
    def __init__(
        self,
        ctx: ReceiveContext,
        channel: SmtpChannel,
        connector: ReceiveConnector,
        peer: tuple[str, int],
        local: tuple[str, int],
        implicit_tls: bool = False,
        config_port: int = 0,
    ) -> None:
        self.ctx = ctx
        self.channel = channel
        self.conn = channel.conn
        self.connector = connector
        self.peer_ip = peer[0]
        self.local_ip = local[0]
        self.session_id = new_id()
        self.log = ctx.log.bind(
            session_id=self.session_id, connector=connector.name, client_ip=self.peer_ip
        )
        self.helo: str | None = None
        self.esmtp = False
        self.tls_active = implicit_tls
        self.tls_info = ""
        self.user: Recipient | None = None
        self.user_addresses: frozenset[str] = frozenset()
        self.server_peer: str | None = None  # an organization server's label, after its AUTH
        self.relay: MailboxRelay | None = None
        # Outbound Proxy Frontend: MAIL FROM names the next hop (XPWNEXTHOP=).
        self.proxies_out = False
        if ctx.relay is not None and ctx.relay.applies(connector, config_port):
            self.relay = ctx.relay.relay(connector, self.log)
        elif ctx.outbound_proxy is not None and ctx.outbound_proxy.applies(connector, config_port):
            self.relay = ctx.outbound_proxy.relay(connector, self.log)
            self.proxies_out = True
        self.txn: _Transaction | None = None
        self.errors = 0
        self._out: list[bytes] = []
        self._quit = False
        self._started = time.monotonic()
        self._chunk_size = 0
        self.committing = False

    # ------------------------------------------------------------ the loop

    def send(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes(enhanced=self.esmtp or reply.code >= 400))

    def _flush(self) -> None:
        if self._out:
            self.channel.write(b"".join(self._out))
            self._out.clear()

    @property
    def rights(self) -> Rights:
        return rights_for(self.connector, self.user is not None, self.server_peer is not None)

    def _session_view(self) -> SessionView:
        return SessionView(
            session_id=self.session_id,
            connector=self.connector.name,
            client_ip=self.peer_ip,
            server_ip=self.local_ip,
            helo=self.helo,
            esmtp=self.esmtp,
            tls=self.tls_active,
            tls_info=self.tls_info,
            auth_user=self.user.primary_address if self.user else None,
        )

    async def run(self) -> None:
        self.log.info("connect")
        agents = self.ctx.agents
        if agents and agents.has(Event.CONNECT):
            outcome = await agents.run(Event.CONNECT, self._session_view())
            if outcome.reply is not None:
                # Refused instead of the banner, then closed (Exchange drops the session).
                self.send(outcome.reply)
                self._flush()
                self.channel.close()
                self.log.info("disconnect", refused_by=outcome.rejected_by)
                return
        banner = self.connector.banner or (
            f"{self.ctx.hostname} Microsoft ESMTP MAIL Service ready at "
            f"{time.strftime('%a, %d %b %Y %H:%M:%S %z')}"
        )
        self.send(Reply(220, None, banner))
        try:
            await self._loop()
        except Exception:
            self.log.exception("session_failed")
            self._out.clear()
            self.send(replies.LOCAL_ERROR.with_text("Local error; closing connection"))
            self._flush()
        finally:
            if self.txn is not None and self.txn.intake is not None:
                await self.txn.intake.abort()
            self._flush()
            self.channel.close()
            if self.relay is not None:
                await self.relay.close()
            self.log.info("disconnect")

    async def _loop(self) -> None:
        while not self._quit:
            event = self.conn.next_event()
            match event:
                case NeedData():
                    self._flush()
                    if not await self._wait():
                        return
                case CommandReceived(command=command):
                    reply = await self.handle(command)
                    if reply is not None:
                        self._count(reply)
                        self.send(reply)
                    if self.errors > self.connector.max_protocol_errors:
                        self.send(replies.TOO_MANY_ERRORS)
                        return
                case CommandRejected(reply=reply):
                    self._count(reply)
                    self.send(reply)
                    if self.errors > self.connector.max_protocol_errors:
                        self.send(replies.TOO_MANY_ERRORS)
                        return
                case LineReceived():
                    self.send(replies.BAD_SEQUENCE)  # a stray AUTH continuation
                case BodyData(data=data):
                    if self.txn is not None and self.txn.intake is not None:
                        await self.txn.intake.write(data)
                case BodyEnd():
                    self.send(await self._end_of_data())
                case BodyRejected(reply=reply):
                    if self.txn is not None and self.txn.intake is not None:
                        await self.txn.intake.abort()
                    self.log.info("body_rejected", code=reply.code, status=reply.status)
                    self.txn = None
                    self.send(reply)
                case ChunkData(data=data):
                    if (
                        self.txn is not None
                        and self.txn.intake is not None
                        and self.txn.bdat_failed is None
                    ):
                        await self.txn.intake.write(data)
                case ChunkEnd(last=last):
                    self.send(await self._end_of_chunk(last))
                case ConnectionClosed():
                    return
                case _:
                    assert_never(event)

    async def _wait(self) -> bool:
        """Wait for input within the inactivity and connection timeouts; False to close."""
        if self.channel.closed:
            return False
        elapsed = time.monotonic() - self._started
        remaining = self.connector.connection_timeout - elapsed
        timeout = min(self.connector.connection_inactivity_timeout, remaining)
        if timeout <= 0:
            self.send(replies.CONNECTION_TIMEOUT)
            return False
        try:
            await asyncio.wait_for(self.channel.wait_for_data(), timeout)
        except TimeoutError:
            inactivity = timeout == self.connector.connection_inactivity_timeout
            self.send(replies.INACTIVITY_TIMEOUT if inactivity else replies.CONNECTION_TIMEOUT)
            self.log.info("timeout", inactivity=inactivity)
            return False
        return True

    def _count(self, reply: Reply) -> None:
        if reply.code >= 500 and reply.status is not None and reply.status.startswith("5.5"):
            self.errors += 1

    def shutdown(self) -> None:
        """Server stopping: tell an idle client and hang up (its next read sees the close)."""
        self._quit = True
        self._out.clear()
        self.channel.write(
            replies.SERVICE_UNAVAILABLE.with_text("Service shutting down").to_bytes()
        )
        self.channel.close()

    # ------------------------------------------------------------ commands

    async def handle(self, command: cmd.Command) -> Reply | None:
        if (
            self.connector.require_tls
            and not self.tls_active
            and not isinstance(command, ALLOWED_BEFORE_REQUIRED_TLS)
        ):
            return replies.MUST_STARTTLS
        match command:
            case cmd.Ehlo(domain=domain):
                return await self.on_ehlo(domain, esmtp=True)
            case cmd.Helo(domain=domain):
                return await self.on_ehlo(domain, esmtp=False)
            case cmd.StartTls():
                return await self.on_starttls()
            case cmd.Auth():
                return await self.on_auth(command)
            case cmd.MailFrom():
                return await self.on_mail(command)
            case cmd.RcptTo():
                return await self.on_rcpt(command)
            case cmd.Data():
                return self.on_data()
            case cmd.Bdat():
                return self.on_bdat(command)
            case cmd.Rset():
                await self._reset()
                return replies.RESET_OK
            case cmd.Noop():
                return replies.NOOP_OK
            case cmd.Quit():
                self._quit = True
                return replies.SERVICE_CLOSING
            case cmd.Vrfy():
                return replies.VRFY_CANNOT  # never reveal which addresses exist
            case cmd.Expn():
                return replies.NOT_IMPLEMENTED
            case cmd.Help():
                return replies.HELP
            case _:
                assert_never(command)

    async def _reset(self) -> None:
        if self.txn is not None and self.txn.intake is not None:
            await self.txn.intake.abort()
        if self.txn is not None and self.relay is not None:
            await self.relay.reset()
        self.txn = None
        self.conn.smtputf8 = False

    async def on_ehlo(self, domain: str, esmtp: bool) -> Reply:
        # RFC 5321 §4.1.4: EHLO resets the transaction. Between BDAT chunks a partial blob
        # exists; abort it, or a client looping BDAT + EHLO fills blobs/tmp/.
        await self._reset()
        self.helo = domain
        self.esmtp = esmtp
        agents = self.ctx.agents
        if agents and agents.has(Event.HELO):
            outcome = await agents.run(Event.HELO, self._session_view())
            if outcome.reply is not None:
                self.helo = None  # as if no greeting was given
                return outcome.reply
        if not esmtp:
            return Reply(250, None, f"{self.ctx.hostname} Hello [{self.peer_ip}]")
        auth = SASL_MECHANISMS if offers_auth(self.connector, self.tls_active) else ()
        return ehlo_lines(
            self.ctx.hostname,
            self.peer_ip,
            size=self.connector.max_message_size,
            starttls=(
                not self.tls_active
                and self.ctx.tls_context is not None
                and offers_starttls(self.connector)
            ),
            auth_mechanisms=auth,
            private=(NEXT_HOP_PARAM,) if self.proxies_out else (),
        )

    async def on_starttls(self) -> Reply | None:
        if self.tls_active:
            return replies.ALREADY_TLS
        if self.ctx.tls_context is None or not offers_starttls(self.connector):
            return replies.NOT_IMPLEMENTED
        if self.txn is not None:
            return replies.BAD_SEQUENCE
        dropped = self.conn.discard_buffered()  # CVE-2011-0411
        if dropped:
            self.log.warning("starttls_injection_discarded", bytes=dropped)
        self.send(replies.READY_TO_START_TLS)
        self._flush()
        transport = self.channel.transport
        if transport is None:
            self._quit = True
            return None
        loop = asyncio.get_running_loop()
        try:
            new_transport = await loop.start_tls(
                transport,
                self.channel,
                self.ctx.tls_context,
                server_side=True,
                ssl_handshake_timeout=30,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self.log.info("tls_handshake_failed", error=str(exc))
            self._quit = True
            self.channel.closed = True
            return None
        if new_transport is None:
            self._quit = True
            return None
        # No await ran between discard_buffered() and start_tls() taking over the socket, so
        # everything buffered from here on came through TLS (and may already be the next EHLO).
        self.channel.transport = new_transport
        self.tls_active = True
        self.tls_info = describe(new_transport.get_extra_info("ssl_object"))
        # RFC 3207 §4.2: forget everything learned before TLS, an authentication included
        # (it was given in the clear, and a man in the middle may have made it).
        self.helo = None
        self.esmtp = False
        self.txn = None
        self.user = None
        self.user_addresses = frozenset()
        self.server_peer = None
        self.log.info("tls_started", tls=self.tls_info)
        return None

    async def on_auth(self, command: cmd.Auth) -> Reply:
        if not offers_auth(self.connector, self.tls_active):
            if rc_basic_auth_offered(self.connector):
                return replies.MUST_STARTTLS
            return replies.AUTH_NOT_ENABLED
        if self.helo is None or not self.esmtp:
            return replies.HELO_FIRST
        if self.user is not None or self.server_peer is not None:
            return replies.ALREADY_AUTHENTICATED
        if self.txn is not None:
            return replies.BAD_SEQUENCE
        mechanism = sasl.create(command.mechanism) if command.mechanism in SASL_MECHANISMS else None
        if mechanism is None:
            return replies.AUTH_MECH_UNSUPPORTED
        initial: bytes | None = None
        if command.initial_response is not None:
            decoded = sasl.decode_response(command.initial_response.encode("ascii", "replace"))
            if isinstance(decoded, sasl.SaslError):
                return (
                    replies.AUTH_CANCELLED
                    if decoded.reason == "cancelled"
                    else replies.PARAM_SYNTAX
                )
            initial = decoded
        outcome = mechanism.start(initial)
        while isinstance(outcome, sasl.Challenge):
            self.send(Reply(334, None, sasl.encode_challenge(outcome.data).decode("ascii")))
            line = await self._read_auth_line()
            if line is None:
                self._quit = True
                return replies.AUTH_CANCELLED
            decoded = sasl.decode_response(line)
            if isinstance(decoded, sasl.SaslError):
                return (
                    replies.AUTH_CANCELLED
                    if decoded.reason == "cancelled"
                    else replies.PARAM_SYNTAX
                )
            outcome = mechanism.step(decoded)
        if isinstance(outcome, sasl.SaslError):
            return await self._auth_failed(None, outcome.reason)
        return await self._check_credentials(outcome)

    async def _read_auth_line(self) -> bytes | None:
        self.conn.expect_line()
        while True:
            event = self.conn.next_event()
            if isinstance(event, LineReceived):
                return event.line
            if isinstance(event, NeedData):
                self._flush()
                if not await self._wait():
                    return None
                continue
            if isinstance(event, CommandRejected):
                return b"*"  # an over-long response line: treat as cancel
            return None

    async def _check_credentials(self, creds: sasl.Credentials) -> Reply:
        account = creds.authcid
        throttle = self.ctx.throttle
        if throttle.locked_out(self.peer_ip, account):
            self.log.warning("auth_locked_out", account=account)
            return await self._auth_failed(account, "locked out", count=False)
        if creds.authzid and creds.authzid.lower() != creds.authcid.lower():
            return await self._auth_failed(account, "authzid differs from authcid")
        trust = self.ctx.trust
        if (
            trust is not None
            and accepts_server_auth(self.connector, self.tls_active)
            and await trust.is_server(account, creds.password)
        ):
            # Exchange's ExchangeServer mechanism: an organization server, with the
            # rights of the ExchangeServers permission group (transport/receive_policy.py).
            throttle.record_success(self.peer_ip, account)
            self.server_peer = account.upper()
            self.log.info("auth_succeeded", server=self.server_peer)
            return replies.AUTH_SUCCESSFUL
        user = await self.ctx.directory.authenticate(account, creds.password)
        if user is None:
            return await self._auth_failed(account, "bad credentials")
        throttle.record_success(self.peer_ip, account)
        self.user = user
        self.user_addresses = frozenset(a.lower() for a in (user.primary_address, *user.aliases))
        agents = self.ctx.agents
        if agents and agents.has(Event.AUTH):
            outcome = await agents.run(Event.AUTH, self._session_view())
            if outcome.reply is not None:
                self.user = None
                self.user_addresses = frozenset()
                self.log.info("auth_refused_by_agent", account=account, agent=outcome.rejected_by)
                return outcome.reply
        self.log.info("auth_succeeded", account=account, mailbox=user.primary_address)
        return replies.AUTH_SUCCESSFUL

    async def _auth_failed(self, account: str | None, reason: str, count: bool = True) -> Reply:
        throttle = self.ctx.throttle
        if count:
            throttle.record_failure(self.peer_ip, account)
        self.log.warning("auth_failed", account=account, reason=reason)
        delay = (
            self.ctx.tarpit_override
            if self.ctx.tarpit_override is not None
            else max(self.connector.auth_tarpit_interval, throttle.delay_for(self.peer_ip, account))
        )
        if delay > 0:
            self._flush()
            await asyncio.sleep(delay)
        return replies.AUTH_FAILED

    async def on_mail(self, command: cmd.MailFrom) -> Reply:
        if self.helo is None:
            return replies.HELO_FIRST
        if self.txn is not None:
            return replies.NESTED_MAIL
        rights = self.rights
        if not rights.submit:
            return replies.AUTH_REQUIRED
        params = command.params
        if params.size is not None and params.size > self.connector.max_message_size:
            return replies.MESSAGE_TOO_BIG
        if (params.smtputf8 or params.body in ("8BITMIME", "BINARYMIME")) and not self.esmtp:
            return replies.PARAM_NOT_RECOGNIZED
        if params.body == "BINARYMIME":
            return replies.PARAM_NOT_RECOGNIZED  # not advertised
        if rights.check_sender and command.address.lower() not in self.user_addresses:
            self.log.info("send_as_denied", sender=command.address)
            return replies.SEND_AS_DENIED
        if params.next_hop is not None and not (self.proxies_out and self.server_peer):
            # Only an organization server may choose where the front end relays to.
            return replies.PARAM_NOT_RECOGNIZED
        if self.proxies_out and params.next_hop is None:
            return NEXT_HOP_REQUIRED
        # RFC 4954 §5: AUTH= is taken only from a trusted peer (an organization server);
        # a user's own login names the submitter; anyone else's AUTH= is dropped.
        submitter: str | None = None
        if self.server_peer is not None:
            submitter = params.auth if params.auth not in (None, "<>") else None
        elif self.user is not None:
            submitter = self.user.primary_address
        params = replace(params, auth=submitter)
        sender = command.address
        agents = self.ctx.agents
        if agents and agents.has(Event.MAIL_FROM):
            # After the send-as check: an agent's rewrite is the server's decision, not
            # something the client can use to pass the check.
            outcome = await agents.run(
                Event.MAIL_FROM,
                self._session_view(),
                MessageView(
                    "", sender, (), size=params.size or 0, mail_params=_mail_params(params)
                ),
            )
            if outcome.reply is not None:
                return outcome.reply
            if outcome.sender is not None:
                self.log.info("sender_rewritten", sender=sender, to=outcome.sender)
                sender = outcome.sender
        self.txn = _Transaction(sender=sender, params=params, submitter=submitter)
        self.conn.smtputf8 = params.smtputf8
        return replies.SENDER_OK

    async def on_rcpt(self, command: cmd.RcptTo) -> Reply:
        txn = self.txn
        if txn is None:
            return replies.MAIL_FIRST
        # Exchange counts envelope recipients against both the connector's and the
        # organization's limit (a group counts as one); the smaller one applies.
        limit = min(self.connector.max_recipients_per_message, self.ctx.max_recipients_per_message)
        if txn.accepted_rcpts >= limit:
            return replies.TOO_MANY_RECIPIENTS
        path = command.address
        if path.lower() == "postmaster":
            # RFC 5321 §4.5.1: "Postmaster" without a domain must be accepted; it means the
            # postmaster of the organization's default domain.
            path = f"postmaster@{await self._default_domain()}"
        try:
            address = parse_address(path, allow_utf8=txn.params.smtputf8)
        except InvalidName:
            return replies.BAD_ADDRESS_SYNTAX
        agents = self.ctx.agents
        if agents and agents.has(Event.RCPT_TO):
            # Before the directory and relay checks, so that a rewritten address is the one
            # they check (a rewrite cannot open a relay).
            outcome = await agents.run(
                Event.RCPT_TO,
                self._session_view(),
                MessageView(
                    "",
                    txn.sender,
                    tuple(txn.recipients),
                    size=txn.params.size or 0,
                    mail_params=_mail_params(txn.params),
                ),
                str(address),
            )
            if outcome.reply is not None:
                return outcome.reply
            if outcome.recipients is not None and outcome.recipients[0] != str(address):
                try:
                    rewritten = parse_address(outcome.recipients[0], allow_utf8=txn.params.smtputf8)
                except InvalidName:
                    return replies.BAD_ADDRESS_SYNTAX
                self.log.info("recipient_rewritten", recipient=str(address), to=str(rewritten))
                address = rewritten
        domain = next(
            (d for d in await self.ctx.lookup.list_domains() if d.name == address.domain), None
        )
        recipient: Recipient | None = None
        if domain is not None and domain.type == DomainType.AUTHORITATIVE:
            recipient = await self.ctx.lookup.find_recipient(str(address))
            if recipient is None:
                self.log.info("recipient_unknown", recipient=str(address))
                return replies.UNKNOWN_RECIPIENT
            if recipient.kind == RecipientKind.MAILBOX and not recipient.enabled:
                return replies.UNKNOWN_RECIPIENT
            # A full mailbox, or one SIZE= would overfill: refused here rather than
            # bounced after DATA (transport/quota.py). Groups are checked per member
            # at delivery.
            if await quota.refuses(self.ctx.mail, recipient, txn.params.size or 0):
                self.log.info("recipient_over_quota", recipient=str(address))
                return quota.rcpt_refused(str(address))
        elif domain is None and not self.rights.relay:
            self.log.info("relay_denied", recipient=str(address))
            return replies.RELAY_DENIED
        text = str(address)
        duplicate = text.lower() in (r.lower() for r in txn.recipients)
        reply = replies.RECIPIENT_OK
        if self.relay is not None and not duplicate:
            # Client Access: the Mailbox server's answer is the one the client gets.
            reply = await self._relay_rcpt(txn, text, command.params, recipient)
            if reply.code not in (250, 251):
                return reply
        txn.accepted_rcpts += 1
        if not duplicate:
            txn.recipients.append(text)
            rp: dict[str, object] = {}
            if command.params.notify is not None:
                rp["notify"] = list(command.params.notify)
            if command.params.orcpt is not None:
                rp["orcpt"] = command.params.orcpt
            txn.rcpt_params[text] = rp
        return reply

    async def _relay_rcpt(
        self, txn: _Transaction, address: str, params: cmd.RcptParams, recipient: Recipient | None
    ) -> Reply:
        relay = self.relay
        assert relay is not None
        if txn.relay_failure is not None:
            return txn.relay_failure
        if not txn.relayed:
            # The first accepted recipient picks the Mailbox server: its database's.
            failure = await relay.begin(
                txn.sender,
                txn.params,
                txn.submitter,
                recipient.database if recipient else None,
                first_rcpt=(address, params),
            )
            if failure is not None:
                self.log.info("relay_refused", code=failure.code, status=failure.status)
                txn.relay_failure = failure
                return failure
            txn.relayed = True
        return await relay.rcpt(address, params)

    async def _default_domain(self) -> str:
        domains = await self.ctx.lookup.list_domains()
        for d in domains:
            if d.default:
                return d.name
        return domains[0].name if domains else self.ctx.hostname

    def _begin_intake(self, txn: _Transaction) -> MessageIntake | RelayedMessage:
        protocol = "ESMTP" if self.esmtp else "SMTP"
        if self.tls_active:
            protocol += "S"
        if self.user is not None or self.server_peer is not None:
            protocol += "A"  # RFC 3848
        check = self.rights.check_sender
        info = ReceiveInfo(
            session_id=self.session_id,
            connector=self.connector.name,
            client_ip=self.peer_ip,
            client_helo=self.helo or "",
            server_ip=self.local_ip,
            server_hostname=self.ctx.hostname,
            protocol=protocol,
            tls=self.tls_info,
            auth_user=txn.submitter,
            submission=txn.submitter is not None,
            allowed_from=self.user_addresses if check else frozenset(),
            max_message_size=self.connector.max_message_size,
            max_header_size=self.connector.max_header_size,
            max_hop_count=self.ctx.max_hop_count,
        )
        if self.relay is not None:
            # Only reached with accepted recipients, so a Mailbox server took MAIL FROM.
            return self.relay.message(info, txn.recipients)
        envelope = Envelope(
            sender=txn.sender,
            recipients=tuple(txn.recipients),
            mail_params=_mail_params(txn.params),
            rcpt_params=txn.rcpt_params,
        )
        return self.ctx.transport.begin(envelope, info)

    def on_data(self) -> Reply | None:
        txn = self.txn
        if txn is None:
            return replies.MAIL_FIRST
        if txn.bdat_started:
            return replies.BDAT_AFTER_DATA
        if not txn.recipients:
            return Reply(554, "5.5.1", "No valid recipients")
        txn.intake = self._begin_intake(txn)
        self.send(replies.START_MAIL_INPUT)
        self.conn.start_data()
        return None

    async def _end_of_data(self) -> Reply:
        txn = self.txn
        self.txn = None
        self.conn.smtputf8 = False
        if txn is None or txn.intake is None:
            return replies.BAD_SEQUENCE
        self.committing = True
        started = time.monotonic()
        try:
            reply = await txn.intake.finish()
        finally:
            self.committing = False
        metrics.SMTP_COMMIT_SECONDS.observe(time.monotonic() - started)
        (metrics.SMTP_ACCEPTED if reply.code == 250 else metrics.SMTP_REJECTED).inc()
        self.log.info(
            "end_of_data",
            code=reply.code,
            queue_id=txn.intake.queue_id,
            relayed_to=self.relay.server if self.relay is not None else None,
        )
        return reply

    def on_bdat(self, command: cmd.Bdat) -> Reply | None:
        txn = self.txn
        # RFC 3030 §2: the chunk follows regardless; the reply comes after it.
        if txn is None:
            self.txn = _Transaction(
                sender="",
                params=cmd.MailParams(
                    size=None, body=None, smtputf8=False, ret=None, envid=None, auth=None
                ),
            )
            self.txn.bdat_failed = replies.MAIL_FIRST
            self.txn.bdat_started = True
            return None
        if not txn.bdat_started:
            txn.bdat_started = True
            if not txn.recipients:
                txn.bdat_failed = Reply(554, "5.5.1", "No valid recipients")
            else:
                txn.intake = self._begin_intake(txn)
        self._chunk_size = command.size
        return None

    async def _end_of_chunk(self, last: bool) -> Reply:
        txn = self.txn
        if txn is None:
            return replies.BAD_SEQUENCE
        if txn.bdat_failed is not None:
            failure = txn.bdat_failed
            if last or failure is replies.MAIL_FIRST:
                await self._reset()
            return failure
        if not last:
            return Reply(250, "2.0.0", f"{self._chunk_size} octets received")
        return await self._end_of_data()


def _mail_params(p: cmd.MailParams) -> dict[str, object]:
    """MAIL FROM's parameters as the queue keeps them (SIZE, BODY, SMTPUTF8, RET, ENVID)."""
    mail_params: dict[str, object] = {}
    for key, value in (
        ("body", p.body),
        ("ret", p.ret),
        ("envid", p.envid),
        ("size", p.size),
        ("auth", p.auth),
    ):
        if value is not None:
            mail_params[key] = value
    if p.smtputf8:
        mail_params["smtputf8"] = True
    return mail_params


def rc_basic_auth_offered(connector: ReceiveConnector) -> bool:
    return BASIC_AUTH in connector.auth_mechanisms


class SmtpListener:
    """One listening socket; finds each connection's receive connector."""

    def __init__(
        self,
        ctx: ReceiveContext,
        host: str | None,
        port: int,
        config_port: int,
        implicit_tls: bool = False,
    ) -> None:
        self.ctx = ctx
        self.host = host
        self.port = port
        self.config_port = config_port  # the port connector bindings name (before offset)
        self.implicit_tls = implicit_tls
        self.server: asyncio.Server | None = None
        self.sessions: set[asyncio.Task[None]] = set()
        self.live: dict[asyncio.Task[None], SmtpSession] = {}
        self.refused: set[SmtpChannel] = set()  # clients no connector accepts, until they go

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._make_channel,
            self.host,
            self.port,
            reuse_address=True,
            backlog=512,
        )

    @property
    def bound_port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def _make_channel(self) -> asyncio.Protocol:
        channel = SmtpChannel(ServerConnection())
        task = asyncio.get_running_loop().create_task(self._serve(channel))
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)
        return channel

    async def _serve(self, channel: SmtpChannel) -> None:
        await asyncio.sleep(0)  # let connection_made run
        transport = channel.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        local = transport.get_extra_info("sockname") or ("0.0.0.0", self.port)
        connectors = await self.ctx.connectors()
        connector = select_connector(connectors, local[0], self.config_port, peer[0])
        if connector is None:
            self.ctx.log.info("connection_refused_no_connector", client_ip=peer[0])
            await self._refuse(channel)
            return
        from_source = sum(1 for s in self.live.values() if s.peer_ip == peer[0])
        if (
            len(self.live) >= connector.max_inbound_connections
            or from_source >= connector.max_inbound_connections_per_source
        ):
            self.ctx.log.info(
                "connection_refused_limit",
                client_ip=peer[0],
                from_source=from_source,
                total=len(self.live),
            )
            channel.write(replies.TOO_MANY_CONNECTIONS.to_bytes())
            channel.close()
            return
        session = SmtpSession(
            self.ctx, channel, connector, peer, local, self.implicit_tls, self.config_port
        )
        task = asyncio.current_task()
        assert task is not None
        self.live[task] = session
        try:
            await session.run()
        finally:
            self.live.pop(task, None)

    async def _refuse(self, channel: SmtpChannel) -> None:
        """554 instead of the banner, then 503 to every command until QUIT (RFC 5321 §3.1)."""
        channel.write(NO_CONNECTOR.to_bytes())
        self.refused.add(channel)
        conn = channel.conn
        deadline = time.monotonic() + REFUSED_GRACE_SECONDS
        answered = 0
        try:
            while not channel.closed:
                event = conn.next_event()
                match event:
                    case NeedData():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        try:
                            await asyncio.wait_for(channel.wait_for_data(), remaining)
                        except TimeoutError:
                            return
                    case CommandReceived(command=cmd.Quit()):
                        channel.write(replies.SERVICE_CLOSING.to_bytes())
                        return
                    case CommandReceived(command=cmd.Bdat()) | ChunkData() | BodyData():
                        pass  # a BDAT chunk is read to its end and answered there
                    case CommandReceived() | CommandRejected() | LineReceived() | ChunkEnd():
                        answered += 1
                        if answered > REFUSED_MAX_COMMANDS:
                            channel.write(replies.TOO_MANY_ERRORS.to_bytes())
                            return
                        channel.write(replies.BAD_SEQUENCE.to_bytes())
                    case BodyEnd() | BodyRejected() | ConnectionClosed():
                        return  # (no DATA body is ever started here)
                    case _:
                        assert_never(event)
        finally:
            self.refused.discard(channel)
            channel.close()

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop accepting; close idle sessions now, give open transactions `drain_seconds`."""
        if self.server is not None:
            self.server.close()
        # Only a session committing a message holds something we must answer: it gets
        # `drain_seconds`. Every other one has nothing acknowledged pending; hang up now.
        for session in list(self.live.values()):
            if not session.committing:
                session.shutdown()
        for channel in list(self.refused):
            channel.close()
        if self.sessions:
            _done, pending = await asyncio.wait(list(self.sessions), timeout=drain_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
