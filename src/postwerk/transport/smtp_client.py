"""The outbound SMTP client of send connectors: one transaction to one next hop.

The protocol lives in the sans-I/O module protocols/smtp/client.py (reply
parsing, EHLO extensions, the transaction with PIPELINING and BDAT); this module
drives it over asyncio streams and adds hosts, TLS, AUTH, reuse and limits.
Operator documentation: docs/smtp-client.md.

API
---
- `TlsPolicy`: OPPORTUNISTIC (the default, Postfix's `may`), REQUIRED, NONE.
- `Destination`: where to deliver. `hosts` are (name, address) pairs tried in
  order; the caller has resolved DNS (transport/dns.py). Certificates are
  verified against the host *name* when `verify_certificates` is on, with
  `ssl_context` as the trust store (default: the system CAs).
- `OutboundMessage`: envelope and data. Parameter values are *decoded* (as the
  receive side stores them); this module xtext-encodes ENVID and ORCPT.
- `OutboundClient.send(dest, msg) -> SendResult`: never raises for anything the
  network or the peer does; every recipient gets a `RecipientResult`.
  `OutboundClient.close()` says QUIT on the idle connections.
- `Wire`: one connection as whole replies (`command`, `reply`, `send`), raising
  `ConnectionLost`; also driven by the front end's relay to the Mailbox servers
  (transport/frontend_relay.py), which needs a session held open across commands.
- `OutboundClient.open_session(dest, name, address) -> OpenSession`: one host's
  session set up exactly as `send` would (greeting, EHLO, STARTTLS by the policy,
  AUTH), handed to a caller that drives the transaction itself (the Client Access
  server's Outbound Proxy Frontend, transport/outbound_proxy.py); not pooled.
  Raises `HostUnusable` with the reply `send` would have recorded.
- `Destination.proxy_hop`: the peer is a Client Access server's Outbound Proxy
  Frontend (717); MAIL FROM carries `XPWNEXTHOP=<next hop>` and a peer that does
  not advertise XPWNEXTHOP is an unusable host (4.7.0), never a place to leave
  the message.

Behaviour, and the choices made where the RFCs leave room
----------------------------------------------------------
- Hosts: the next host is tried when a host cannot be used at all: connection
  refused or timed out, a greeting other than 220 (4xx or 5xx, like Postfix's
  `smtp_skip_5xx_greeting`), EHLO and HELO refused, a TLS or AUTH failure, or a
  421/lost connection in reply to MAIL (RFC 5321 §5.1). Once a RCPT has been
  sent, the outcome is final for this attempt: replies to RCPT or DATA (4xx or
  5xx) and a connection lost later are not retried on another host, so one
  attempt never sends a message twice; retries belong to the queue.
- EHLO, and HELO when EHLO is refused with anything but 421.
- TLS: OPPORTUNISTIC sends STARTTLS when offered; if the peer refuses STARTTLS
  the session goes on in plaintext, and if the handshake fails (certificate
  verification included, when on) the host is retried once in plaintext, as
  Postfix's `may` does. REQUIRED: STARTTLS not offered → 4.7.4 ("security
  features not supported", RFC 3463); refused, handshake or verification
  failure → 4.7.5 ("cryptographic failure"); both transient, next host tried,
  nothing sent. NONE never sends STARTTLS.
- AUTH (smart hosts): PLAIN, else LOGIN; only over TLS unless
  `allow_plaintext_auth` (→ 4.7.10 "encryption needed" otherwise). AUTH not
  offered → 4.7.0; rejected → the peer's reply made transient (Postfix's
  `smtp_sasl_auth_soft_bounce`): wrong credentials should not bounce mail.
- SIZE: a message larger than the peer's advertised SIZE fails permanently
  with 552 5.3.4 before MAIL; SIZE=<n> is sent when SIZE is offered.
- SMTPUTF8: needed (flag, or a non-ASCII address) and not offered → 554 5.6.7
  for every recipient, nothing sent (no downgrade).
- 8BITMIME: BODY=8BITMIME when the message is 8-bit and the peer offers it.
  An 8-bit message to a peer without 8BITMIME is still sent unchanged, as
  Postfix and Exchange do, rather than converted or bounced. BODY from
  `mail_params` is ignored: `eight_bit` decides.
- DSN: NOTIFY and ORCPT per recipient, RET and ENVID on MAIL, only when the
  peer advertises DSN (RFC 3461 §5.1: otherwise the relaying MTA itself is
  responsible for the notifications). Other parameters are not relayed.
- PIPELINING (RFC 2920): when offered, MAIL, every RCPT and DATA go out in one
  write and the replies are matched in order; a DATA answered 354 although no
  recipient was accepted gets an empty body (the lone dot), then RSET.
- CHUNKING (RFC 3030): when offered, the body goes as BDAT chunks of at most
  1 MiB (one `BDAT n LAST` for most messages), not dot-stuffed; pipelined
  together with MAIL and RCPT when PIPELINING is offered too. A refused chunk
  fails the message for every accepted recipient.
- Results: RCPT replies per recipient; no accepted recipient → no DATA; the
  reply to the end of data applies to every accepted recipient. 2xx delivered,
  5xx permanent, everything else transient. A reply without an enhanced status
  code gets "<class>.0.0" (what Postfix synthesizes). A 421 at any point, a
  timeout, or a lost connection makes the recipients still open transient
  (4.4.2 when there is no reply) and sets `connection_error`.
- Reuse: after a transaction, a connection that is still up returns to an idle
  list per (name, address, port, TLS policy, verification, AUTH user, HELO
  name), at most `max_idle_per_key` of them, each closed with QUIT after
  `idle_timeout` seconds or after `max_messages_per_connection` messages
  (Exchange's send connector SmtpMaxMessagesPerConnection, 20). RSET is sent
  only after an aborted transaction: after the reply to the end of data, the
  session is already in its initial state (RFC 5321 §4.1.1.4). A reused
  connection that turns out dead at MAIL is replaced by a fresh one.
- Concurrency: at most `max_connections_per_destination` sends run at a time
  per destination (`Destination.next_hop`, or its hosts and port); Exchange's
  MaxPerDomainOutboundConnections is 20.
- Timeouts: `connect_timeout` covers the TCP connect and the 220 greeting,
  `command_timeout` every command, `data_timeout` the DATA command and the
  reply to the end of data (RFC 5321 §4.5.3.2 suggests 10 minutes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from postwerk.directory.server_auth import pinned
from postwerk.protocols.smtp.client import (
    Extensions,
    ReplyError,
    ReplyReader,
    ServerReply,
    Step,
    Transaction,
    mail_command,
    rcpt_command,
)
from postwerk.protocols.smtp.xtext import xtext_encode

__all__ = [
    "ConnectionLost",
    "Destination",
    "HostUnusable",
    "OpenSession",
    "OutboundClient",
    "OutboundMessage",
    "RecipientResult",
    "SendResult",
    "TlsPolicy",
    "Wire",
]

log = structlog.get_logger("postwerk.transport.smtp_client")

_ATOM = re.compile(r"^[A-Za-z0-9,._-]+$")  # NOTIFY and RET values: keywords and commas
_ADDR_TYPE = re.compile(r"^[A-Za-z0-9-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a CR or LF would inject commands
_READ_SIZE = 1 << 16
_QUIT_TIMEOUT = 5.0  # a polite QUIT on an idle connection must not hold close() for long


class TlsPolicy(StrEnum):
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered; plaintext when it fails
    REQUIRED = "required"  # no plaintext: transient failure instead
    NONE = "none"  # never STARTTLS


@dataclass(frozen=True, kw_only=True)
class Destination:
    """One next hop: the hosts to try in order and how to talk to them."""

    hosts: Sequence[tuple[str, str]]  # (name for TLS verification and logs, IP address)
    helo_name: str  # our FQDN, sent in EHLO/HELO
    port: int = 25
    tls: TlsPolicy = TlsPolicy.OPPORTUNISTIC
    verify_certificates: bool = False  # Exchange's default for send connectors
    ssl_context: ssl.SSLContext | None = None  # trust store when verifying; None: system CAs
    auth: tuple[str, str] | None = None  # smart-host (user, password)
    allow_plaintext_auth: bool = False
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    next_hop: str | None = None  # key of the concurrency limit; default: hosts and port
    # Another server of the organization: the SHA-256 of the certificate the directory
    # registered for it, checked after the handshake (directory/server_auth.py).
    pin_sha256: str = ""
    # A Client Access server's Outbound Proxy Frontend relays the transaction to this
    # next hop ("smtp:<connector>[:<domain>]"), named in MAIL FROM's XPWNEXTHOP=.
    proxy_hop: str | None = None

    def __post_init__(self) -> None:
        hosts = tuple((str(name), str(address)) for name, address in self.hosts)
        if not hosts:
            raise ValueError("a destination needs at least one host")
        if not self.helo_name or _CONTROL.search(self.helo_name) or " " in self.helo_name:
            raise ValueError(f"invalid helo_name {self.helo_name!r}")
        # A tuple keeps the frozen dataclass hashable and immune to the caller's list.
        object.__setattr__(self, "hosts", hosts)

    @property
    def limit_key(self) -> Hashable:
        if self.next_hop is not None:
            return self.next_hop
        return (tuple(self.hosts), self.port)


@dataclass(frozen=True, kw_only=True)
class OutboundMessage:
    """The envelope and the data of one message for one next hop.

    `recipients`: (address, params) with NOTIFY ("SUCCESS,DELAY" or "NEVER") and
    ORCPT ("rfc822;x@y", decoded). `mail_params`: RET ("FULL"/"HDRS"), ENVID
    (decoded); BODY and SMTPUTF8 there are ignored in favour of the flags.
    `data`: CRLF line ends, not dot-stuffed.
    """

    sender: str  # "" is the null reverse-path
    recipients: tuple[tuple[str, Mapping[str, str]], ...]
    data: bytes
    mail_params: Mapping[str, str] = field(default_factory=dict)
    needs_smtputf8: bool = False
    eight_bit: bool = False

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("a message needs at least one recipient")
        for address in (self.sender, *(a for a, _ in self.recipients)):
            if _CONTROL.search(address) or "<" in address or ">" in address:
                raise ValueError(f"invalid address {address!r}")
        # Catch a caller's mistake here, not as a malformed command on the wire.
        for name, value in self.mail_params.items():
            if name.upper() == "RET" and not _ATOM.match(value):
                raise ValueError(f"invalid RET value {value!r}")
        for _address, params in self.recipients:
            for name, value in params.items():
                upper = name.upper()
                if upper == "NOTIFY" and not _ATOM.match(value):
                    raise ValueError(f"invalid NOTIFY value {value!r}")
                if upper == "ORCPT" and not _ADDR_TYPE.match(value.partition(";")[0]):
                    raise ValueError(f"invalid ORCPT value {value!r}")


@dataclass(frozen=True)
class RecipientResult:
    address: str
    code: int
    status: str  # enhanced status code, RFC 3463
    text: str  # the reply text without the enhanced status, lines joined by spaces
    permanent: bool
    delivered: bool
    remote: bool = True  # False: synthesized here, not a reply of the remote server

    @property
    def reply(self) -> str:
        """`550 5.1.1 text`, e.g. for a DSN's Diagnostic-Code (`smtp; ...`)."""
        return f"{self.code} {self.status} {self.text}".rstrip()


@dataclass(frozen=True)
class SendResult:
    recipients: tuple[RecipientResult, ...]
    remote_host: str | None  # the host name used (None when no host accepted a session)
    remote_ip: str | None
    tls: str | None  # "version=TLS1_3 cipher=... bits=256", None for plaintext
    tls_verified: bool = False
    connection_error: str | None = None
    connection_reused: bool = False
    dsn_supported: bool = False  # the peer advertised DSN: it reports success itself

    @property
    def all_delivered(self) -> bool:
        return all(r.delivered for r in self.recipients)


# --- internals ---------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    code: int
    status: str
    text: str
    remote: bool

    @property
    def line(self) -> str:
        return f"{self.code} {self.status} {self.text}".rstrip()


def _remote(reply: ServerReply) -> _Reply:
    return _Reply(reply.code, reply.status, reply.text, remote=True)


def _local(code: int, status: str, text: str) -> _Reply:
    return _Reply(code, status, text, remote=False)


def _soften(reply: _Reply) -> _Reply:
    """A session-level rejection as a transient failure (another host or a later try may do)."""
    if 400 <= reply.code < 500:
        return reply
    return _Reply(451, "4" + reply.status[1:], reply.text, reply.remote)


class _HostFailure(Exception):
    """This host cannot take the message now; try the next one."""

    def __init__(self, reply: _Reply, detail: str) -> None:
        super().__init__(detail)
        self.reply = reply
        self.detail = detail


class _TlsFallback(Exception):
    """The STARTTLS handshake failed under OPPORTUNISTIC: retry the host in plaintext."""


class ConnectionLost(Exception):
    """The connection closed (or failed) before the reply we waited for."""


class HostUnusable(Exception):
    """`open_session`: no session with this host; `code`, `status` and `text` are the
    reply (transient: a 4xx) that `send` would have given its recipients."""

    def __init__(self, code: int, status: str, text: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status
        self.text = text
        self.detail = detail


@dataclass(frozen=True, eq=False)
class OpenSession:
    """A session `open_session` set up: greeted, TLS and AUTH done as asked."""

    wire: Wire
    extensions: Extensions  # from the last EHLO (after STARTTLS when TLS is up)
    tls: str | None  # "version=... cipher=... bits=...", None for plaintext


class Wire:
    """One TCP connection, plaintext or TLS: write bytes, read whole replies."""

    __slots__ = ("reader", "replies", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.replies = ReplyReader()

    @property
    def connected(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def reply(self, timeout: float) -> ServerReply:
        """The next reply; raises ConnectionLost, TimeoutError or ReplyError."""
        reply = self.replies.next_reply()
        if reply is not None:
            return reply
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(_READ_SIZE)
                except OSError as exc:  # reset, or a TLS alert after the handshake
                    raise ConnectionLost(str(exc)) from exc
                if not data:
                    raise ConnectionLost("connection closed")
                self.replies.feed(data)
                reply = self.replies.next_reply()
                if reply is not None:
                    return reply

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await self.writer.drain()  # returns at once below the transport's high-water mark
        except OSError as exc:
            raise ConnectionLost(str(exc)) from exc

    async def command(self, line: bytes, timeout: float) -> ServerReply:
        async with asyncio.timeout(timeout):
            await self.send(line)
        return await self.reply(timeout)

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class _PoolKey:
    name: str
    address: str
    port: int
    tls: TlsPolicy
    verify: bool
    context: ssl.SSLContext | None  # the caller's trust store (compared by identity)
    auth_user: str | None
    auth_hash: int  # a changed password must not reuse a session authenticated with the old one
    helo_name: str
    proxy: bool = False  # to an Outbound Proxy Frontend (XPWNEXTHOP checked at EHLO)


@dataclass(eq=False)
class _Session:
    wire: Wire
    key: _PoolKey
    extensions: Extensions
    tls: str | None
    tls_verified: bool
    messages: int = 0
    reused: bool = False
    idle_handle: asyncio.TimerHandle | None = None

    @property
    def label(self) -> str:
        return f"{self.key.name}[{self.key.address}]"


@dataclass(frozen=True)
class _Stale:
    """The session died before the transaction began: nothing was sent."""

    reply: _Reply
    detail: str


class _Limit:
    def __init__(self, size: int) -> None:
        self.semaphore = asyncio.Semaphore(size)
        self.users = 0


def _describe_tls(writer: asyncio.StreamWriter) -> str | None:
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return None
    version = (obj.version() or "TLS").replace("v", "").replace(".", "_")
    cipher = obj.cipher()
    if cipher is None:
        return f"version={version}"
    return f"version={version} cipher={cipher[0]} bits={cipher[2]}"


def _xtext_orcpt(value: str) -> str:
    addr_type, _, address = value.partition(";")
    return f"{addr_type};{xtext_encode(address)}"


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8"))


_STAGE = {
    Step.MAIL: "sending MAIL FROM",
    Step.RCPT: "sending RCPT TO",
    Step.DATA: "sending message data",
    Step.BODY: "sending message data",
    Step.CHUNK: "sending message data",
}


class OutboundClient:
    """Sends messages to next hops, keeping connections for reuse; one per process."""

    def __init__(
        self,
        *,
        max_connections_per_destination: int = 20,
        max_idle_per_key: int = 4,
        idle_timeout: float = 30.0,
        max_messages_per_connection: int = 20,
        pipelining: bool = True,
        chunking: bool = True,
    ) -> None:
        if max_connections_per_destination < 1:
            raise ValueError("max_connections_per_destination must be at least 1")
        self.max_connections_per_destination = max_connections_per_destination
        self.max_idle_per_key = max_idle_per_key
        self.idle_timeout = idle_timeout
        self.max_messages_per_connection = max_messages_per_connection
        self.pipelining = pipelining  # use PIPELINING when offered (RFC 2920)
        self.chunking = chunking  # use BDAT when CHUNKING is offered (RFC 3030)
        self._idle: dict[_PoolKey, list[_Session]] = {}
        self._limits: dict[Hashable, _Limit] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._system_context: ssl.SSLContext | None = None
        self._unverified_context: ssl.SSLContext | None = None

    # -- public ---------------------------------------------------------------

    async def send(self, dest: Destination, msg: OutboundMessage) -> SendResult:
        if self._closed:
            raise RuntimeError("OutboundClient is closed")
        async with self._limited(dest.limit_key):
            return await self._send(dest, msg)

    async def close(self) -> None:
        """QUIT idle connections; sessions in use are closed when their send ends."""
        self._closed = True
        for sessions in self._idle.values():
            for session in sessions:
                if session.idle_handle is not None:
                    session.idle_handle.cancel()
                self._retire(session)
        self._idle.clear()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def open_session(self, dest: Destination, name: str, address: str) -> OpenSession:
        """A session with one host of `dest`, set up as `send` would, for a caller that
        drives the transaction itself; never pooled. Raises HostUnusable."""
        if self._closed:
            raise RuntimeError("OutboundClient is closed")
        try:
            session = await self._open(dest, self._key(dest, name, address))
        except _HostFailure as failure:
            reply = failure.reply
            raise HostUnusable(reply.code, reply.status, reply.text, failure.detail) from None
        return OpenSession(session.wire, session.extensions, session.tls)

    def idle_connections(self) -> int:
        """How many connections wait for reuse (tests and the queue viewer)."""
        return sum(len(s) for s in self._idle.values())

    # -- hosts ----------------------------------------------------------------

    async def _send(self, dest: Destination, msg: OutboundMessage) -> SendResult:
        failures: list[str] = []
        last: _Reply = _local(451, "4.4.1", "no answer from host")
        for name, address in dest.hosts:
            key = self._key(dest, name, address)
            while (session := self._take_idle(key)) is not None:
                outcome = await self._attempt(session, dest, msg)
                if isinstance(outcome, SendResult):
                    return outcome
                # The idle connection had died meanwhile: harmless, open another.
                log.debug("stale_connection", host=session.label, detail=outcome.detail)
            try:
                session = await self._open(dest, key)
            except _HostFailure as failure:
                failures.append(failure.detail)
                last = failure.reply
                log.info("host_failed", host=f"{name}[{address}]", detail=failure.detail)
                continue
            outcome = await self._attempt(session, dest, msg)
            if isinstance(outcome, SendResult):
                return outcome
            failures.append(outcome.detail)
            last = outcome.reply
        error = "; ".join(failures)
        return SendResult(
            recipients=tuple(self._result(addr, last) for addr, _ in msg.recipients),
            remote_host=None,
            remote_ip=None,
            tls=None,
            connection_error=error,
        )

    def _key(self, dest: Destination, name: str, address: str) -> _PoolKey:
        return _PoolKey(
            name=name.lower(),
            address=address,
            port=dest.port,
            tls=dest.tls,
            verify=dest.verify_certificates,
            context=dest.ssl_context if dest.verify_certificates else None,
            auth_user=dest.auth[0] if dest.auth else None,
            auth_hash=hash(dest.auth) if dest.auth else 0,
            helo_name=dest.helo_name,
            proxy=dest.proxy_hop is not None,
        )

    # -- opening a session ----------------------------------------------------

    async def _open(self, dest: Destination, key: _PoolKey) -> _Session:
        try:
            return await self._connect(dest, key, dest.tls)
        except _TlsFallback as fallback:
            log.info(
                "tls_fallback_plaintext", host=f"{key.name}[{key.address}]", error=str(fallback)
            )
            return await self._connect(dest, key, TlsPolicy.NONE)

    async def _connect(self, dest: Destination, key: _PoolKey, policy: TlsPolicy) -> _Session:
        label = f"{key.name}[{key.address}]"
        wire: Wire | None = None
        try:
            async with asyncio.timeout(dest.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    key.address, dest.port, limit=_READ_SIZE
                )
                wire = Wire(reader, writer)
                greeting = await wire.reply(dest.connect_timeout)
        except TimeoutError as exc:
            if wire is not None:
                wire.close()
            raise _HostFailure(
                _local(451, "4.4.1", f"connection to {label} timed out"),
                f"connect to {label}:{dest.port}: timed out",
            ) from exc
        except (OSError, ConnectionLost) as exc:
            if wire is not None:
                wire.close()
            raise _HostFailure(
                _local(451, "4.4.1", f"no answer from host {label}"),
                f"connect to {label}:{dest.port}: {exc}",
            ) from exc
        except ReplyError as exc:
            assert wire is not None
            wire.close()
            text = f"protocol error with {label} while receiving the greeting: {exc}"
            raise _HostFailure(_local(451, "4.5.0", text), text) from exc
        if greeting.code != 220:
            wire.close()
            reply = _remote(greeting)
            raise _HostFailure(_soften(reply), f"host {label} refused to talk to me: {reply.line}")
        try:
            return await self._handshake(dest, key, policy, wire, label)
        except BaseException:
            wire.close()
            raise

    async def _handshake(
        self, dest: Destination, key: _PoolKey, policy: TlsPolicy, wire: Wire, label: str
    ) -> _Session:
        stage = "performing the EHLO handshake"
        try:
            extensions = await self._hello(wire, dest, label)
            tls: str | None = None
            verified = False
            if policy is not TlsPolicy.NONE:
                stage = "performing STARTTLS"
                if "STARTTLS" in extensions:
                    context, verified = self._tls_context(dest)
                    if await self._starttls(wire, dest, context, key.name, policy, label):
                        stage = "performing the EHLO handshake after STARTTLS"
                        # RFC 3207 §4.2: forget everything learnt before TLS.
                        extensions = await self._hello(wire, dest, label)
                        tls = _describe_tls(wire.writer)
                    else:
                        verified = False
                elif policy is TlsPolicy.REQUIRED:
                    await self._quit_quietly(wire)
                    text = f"TLS is required, but was not offered by host {label}"
                    raise _HostFailure(_local(451, "4.7.4", text), text)
            if dest.proxy_hop is not None and "XPWNEXTHOP" not in extensions:
                # Not an Outbound Proxy Frontend: it would take the message for itself.
                await self._quit_quietly(wire)
                text = f"host {label} does not offer the outbound proxy (XPWNEXTHOP)"
                raise _HostFailure(_local(451, "4.7.0", text), text)
            if dest.auth is not None:
                stage = "authenticating"
                await self._authenticate(wire, dest, extensions, tls is not None, label)
        except ConnectionLost as exc:
            text = f"lost connection with {label} while {stage}"
            raise _HostFailure(_local(451, "4.4.2", text), text) from exc
        except TimeoutError as exc:
            text = f"conversation with {label} timed out while {stage}"
            raise _HostFailure(_local(451, "4.4.2", text), text) from exc
        except ReplyError as exc:
            text = f"protocol error with {label} while {stage}: {exc}"
            raise _HostFailure(_local(451, "4.5.0", text), text) from exc
        return _Session(
            wire=wire,
            key=key,
            extensions=extensions,
            tls=tls,
            tls_verified=verified and tls is not None,
        )

    async def _hello(self, wire: Wire, dest: Destination, label: str) -> Extensions:
        helo = dest.helo_name.encode("ascii", "replace")
        reply = await wire.command(b"EHLO " + helo + b"\r\n", dest.command_timeout)
        if reply.code == 250:
            return Extensions.from_ehlo(reply)
        if reply.code == 421:
            ehlo = _remote(reply)
            raise _HostFailure(_soften(ehlo), f"host {label} refused to talk to me: {ehlo.line}")
        # An RFC 821 server: no extensions.
        reply = await wire.command(b"HELO " + helo + b"\r\n", dest.command_timeout)
        if reply.code != 250:
            refused = _remote(reply)
            raise _HostFailure(_soften(refused), f"host {label} refused HELO: {refused.line}")
        return Extensions()

    def _tls_context(self, dest: Destination) -> tuple[ssl.SSLContext, bool]:
        """The context for STARTTLS and whether it verifies the peer's name."""
        if dest.verify_certificates:
            context = dest.ssl_context
            if context is None:
                if self._system_context is None:
                    self._system_context = ssl.create_default_context()
                    self._system_context.minimum_version = ssl.TLSVersion.TLSv1_2
                context = self._system_context
            verifies = context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
            return context, verifies
        if self._unverified_context is None:
            # Opportunistic encryption without authentication (RFC 7435): any certificate.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._unverified_context = context
        return self._unverified_context, False

    async def _starttls(
        self,
        wire: Wire,
        dest: Destination,
        context: ssl.SSLContext,
        name: str,
        policy: TlsPolicy,
        label: str,
    ) -> bool:
        """True when TLS is up; False to go on in plaintext (OPPORTUNISTIC, refused)."""
        reply = await wire.command(b"STARTTLS\r\n", dest.command_timeout)
        if reply.code != 220:
            refused = _remote(reply)
            text = f"host {label} refused STARTTLS: {refused.line}"
            if policy is TlsPolicy.REQUIRED:
                await self._quit_quietly(wire)
                raise _HostFailure(_local(451, "4.7.5", text), text)
            if reply.code == 421:  # the host is going away, TLS or not
                raise _HostFailure(_soften(refused), text)
            log.info("starttls_refused_plaintext", host=label, reply=refused.line)
            return False
        if wire.replies.buffered:
            # Plaintext sent after the 220 would be read as if it came over TLS
            # (CVE-2011-0411 in reverse): the peer is broken or an attacker is in the path.
            wire.close()
            text = f"host {label} sent data after its STARTTLS reply"
            if policy is TlsPolicy.REQUIRED:
                raise _HostFailure(_local(451, "4.7.5", text), text)
            raise _TlsFallback(text)
        try:
            async with asyncio.timeout(dest.command_timeout):
                await wire.writer.start_tls(context, server_hostname=name)
        except (OSError, TimeoutError) as exc:
            # ssl.SSLError (verification included) is an OSError; the connection is unusable.
            wire.close()
            detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            if policy is TlsPolicy.REQUIRED:
                text = f"TLS handshake with {label} failed: {detail}"
                raise _HostFailure(_local(451, "4.7.5", text), text) from exc
            raise _TlsFallback(f"TLS handshake failed: {detail}") from exc
        if dest.pin_sha256 and not pinned(
            wire.writer.get_extra_info("ssl_object"), dest.pin_sha256
        ):
            wire.close()
            text = f"host {label} did not present the certificate registered for it"
            raise _HostFailure(_local(451, "4.7.5", text), text)
        return True

    async def _authenticate(
        self, wire: Wire, dest: Destination, extensions: Extensions, over_tls: bool, label: str
    ) -> None:
        assert dest.auth is not None
        user, password = dest.auth
        if not over_tls and not dest.allow_plaintext_auth:
            await self._quit_quietly(wire)
            text = f"refusing to send credentials to {label} without TLS"
            raise _HostFailure(_local(451, "4.7.10", text), text)
        methods = extensions.auth_mechanisms
        timeout = dest.command_timeout
        if "PLAIN" in methods:
            token = base64.b64encode(f"\0{user}\0{password}".encode())
            reply = await wire.command(b"AUTH PLAIN " + token + b"\r\n", timeout)
        elif "LOGIN" in methods:
            reply = await wire.command(b"AUTH LOGIN\r\n", timeout)
            if reply.code == 334:
                reply = await wire.command(_b64(user) + b"\r\n", timeout)
            if reply.code == 334:
                reply = await wire.command(_b64(password) + b"\r\n", timeout)
        else:
            await self._quit_quietly(wire)
            text = f"host {label} offers no AUTH PLAIN or LOGIN"
            raise _HostFailure(_local(451, "4.7.0", text), text)
        if reply.code != 235:
            if reply.code == 334:
                await wire.send(b"*\r\n")  # cancel an exchange we cannot complete (RFC 4954 §4)
            refused = _remote(reply)
            await self._quit_quietly(wire)
            raise _HostFailure(
                _soften(refused), f"authentication with {label} failed: {refused.line}"
            )

    # -- one transaction ------------------------------------------------------

    async def _attempt(
        self, session: _Session, dest: Destination, msg: OutboundMessage
    ) -> SendResult | _Stale:
        try:
            outcome = await self._transact(session, dest, msg)
        except BaseException:
            # Cancelled, or a bug: the session state is unknown, so it must not be reused.
            session.wire.close()
            raise
        if isinstance(outcome, _Stale):
            session.wire.close()
        return outcome

    async def _transact(
        self, session: _Session, dest: Destination, msg: OutboundMessage
    ) -> SendResult | _Stale:
        wire = session.wire
        ext = session.extensions
        label = session.label
        n = len(msg.recipients)
        results: list[RecipientResult | None] = [None] * n

        def finish(error: str | None = None) -> SendResult:
            return SendResult(
                recipients=tuple(r for r in results if r is not None),
                remote_host=session.key.name,
                remote_ip=session.key.address,
                tls=session.tls,
                tls_verified=session.tls_verified,
                connection_error=error,
                connection_reused=session.reused,
                dsn_supported="DSN" in ext,
            )

        def fill(reply: _Reply, only: Sequence[int] | None = None) -> None:
            for i in range(n) if only is None else only:
                if results[i] is None:
                    results[i] = self._result(msg.recipients[i][0], reply)

        def settle(tx: Transaction) -> None:
            """Every recipient whose outcome the replies read so far decide."""
            if tx.mail_reply is not None and tx.mail_reply.code != 250:
                fill(_remote(tx.mail_reply))
            for i, rcpt_reply in enumerate(tx.recipient_replies):
                if rcpt_reply is not None and rcpt_reply.code not in (250, 251):
                    fill(_remote(rcpt_reply), [i])
            if tx.body_reply is not None:
                fill(_remote(tx.body_reply), tx.accepted)

        # Checks before MAIL: failures here leave the session clean for the next message.
        utf8 = msg.needs_smtputf8 or not msg.sender.isascii()
        utf8 = utf8 or any(not addr.isascii() for addr, _ in msg.recipients)
        if utf8 and "SMTPUTF8" not in ext:
            text = f"SMTPUTF8 is required, but was not offered by host {label}"
            fill(_local(554, "5.6.7", text))
            await self._release(session, clean=True)
            return finish()
        size_limit = ext.size_limit
        if size_limit and len(msg.data) > size_limit:
            text = f"message size {len(msg.data)} exceeds size limit {size_limit} of {label}"
            fill(_local(552, "5.3.4", text))
            await self._release(session, clean=True)
            return finish()

        dsn = "DSN" in ext
        session.messages += 1
        tx = Transaction(
            mail=mail_command(
                msg.sender, self._mail_params(ext, msg, utf8, dsn, dest.proxy_hop), utf8=utf8
            ),
            rcpts=[
                rcpt_command(address, self._rcpt_params(params, dsn), utf8=utf8)
                for address, params in msg.recipients
            ],
            data=msg.data,
            pipelining=self.pipelining and "PIPELINING" in ext,
            chunking=self.chunking and "CHUNKING" in ext,
        )
        out = tx.first_write()
        step = Step.MAIL
        try:
            while True:
                if out:
                    async with asyncio.timeout(dest.data_timeout):
                        await wire.send(out)
                if tx.done:
                    break
                next_step = tx.expect()
                if next_step is None:
                    break
                step = next_step
                timeout = dest.command_timeout
                if step is Step.BODY or step is Step.CHUNK:
                    timeout = dest.data_timeout
                reply = await wire.reply(timeout)
                if reply.code == 421:
                    # The server closes the channel: what was not answered is lost with it.
                    said = _remote(reply)
                    if step is Step.MAIL:
                        return _Stale(
                            said, f"host {label} said: {said.line} (in reply to MAIL FROM)"
                        )
                    wire.close()
                    settle(tx)
                    fill(said)
                    what = "RCPT TO" if step is Step.RCPT else "DATA"
                    return finish(f"host {label} said: {said.line} (in reply to {what})")
                out = tx.on_reply(reply)
        except (ConnectionLost, TimeoutError, ReplyError) as exc:
            lost = self._lost(exc, label, _STAGE[step])
            if step is Step.MAIL:
                # Nothing can have been accepted before the reply to MAIL.
                return _Stale(lost, lost.text)
            wire.close()
            settle(tx)
            fill(lost)
            return finish(lost.text)

        settle(tx)
        # Whatever is left had no reply (cannot happen with a well-behaved peer).
        fill(_local(451, "4.5.0", f"protocol error with {label}: missing reply"))
        await self._release(session, clean=not tx.needs_rset)
        return finish()

    @staticmethod
    def _lost(exc: BaseException, label: str, stage: str) -> _Reply:
        """The synthesized reply for a session that broke: no reply, or no usable one."""
        if isinstance(exc, TimeoutError):
            return _local(451, "4.4.2", f"conversation with {label} timed out while {stage}")
        if isinstance(exc, ConnectionLost):
            return _local(451, "4.4.2", f"lost connection with {label} while {stage}")
        return _local(451, "4.5.0", f"protocol error with {label} while {stage}: {exc}")

    @staticmethod
    def _mail_params(
        ext: Extensions, msg: OutboundMessage, utf8: bool, dsn: bool, proxy_hop: str | None = None
    ) -> list[str]:
        params: list[str] = []
        if "SIZE" in ext:
            params.append(f"SIZE={len(msg.data)}")
        if msg.eight_bit and "8BITMIME" in ext:
            params.append("BODY=8BITMIME")
        if utf8:
            params.append("SMTPUTF8")
        if dsn:
            for name, value in msg.mail_params.items():
                upper = name.upper()
                if upper == "RET":
                    params.append(f"RET={value.upper()}")
                elif upper == "ENVID":
                    params.append(f"ENVID={xtext_encode(value)}")
        if proxy_hop is not None:
            params.append(f"XPWNEXTHOP={xtext_encode(proxy_hop)}")
        return params

    @staticmethod
    def _rcpt_params(params: Mapping[str, str], dsn: bool) -> list[str]:
        if not dsn:
            return []
        out: list[str] = []
        for name, value in params.items():
            upper = name.upper()
            if upper == "NOTIFY":
                out.append(f"NOTIFY={value.upper()}")
            elif upper == "ORCPT":
                out.append(f"ORCPT={_xtext_orcpt(value)}")
        return out

    @staticmethod
    def _result(address: str, reply: _Reply) -> RecipientResult:
        delivered = 200 <= reply.code < 300
        return RecipientResult(
            address=address,
            code=reply.code,
            status=reply.status,
            text=reply.text,
            permanent=500 <= reply.code < 600,
            delivered=delivered,
            remote=reply.remote,
        )

    # -- the pool -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _limited(self, key: Hashable) -> AsyncIterator[None]:
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = _Limit(self.max_connections_per_destination)
        limit.users += 1
        try:
            async with limit.semaphore:
                yield
        finally:
            limit.users -= 1
            if limit.users == 0:
                # No waiter and no holder: forget the destination (no growth per domain).
                del self._limits[key]

    def _take_idle(self, key: _PoolKey) -> _Session | None:
        sessions = self._idle.get(key)
        while sessions:
            session = sessions.pop()  # most recently used: the others age out
            if session.idle_handle is not None:
                session.idle_handle.cancel()
                session.idle_handle = None
            if session.wire.connected:
                if not sessions:
                    del self._idle[key]
                session.reused = True
                return session
            session.wire.close()
        self._idle.pop(key, None)
        return None

    async def _release(self, session: _Session, *, clean: bool) -> None:
        """Back to the idle list if reusable; RSET first after an aborted transaction."""
        wire = session.wire
        if not wire.connected:
            wire.close()
            return
        if self._closed or session.messages >= self.max_messages_per_connection:
            self._retire(session)
            return
        if not clean:
            try:
                reply = await wire.command(b"RSET\r\n", _QUIT_TIMEOUT)
            except (ConnectionLost, TimeoutError, ReplyError):
                wire.close()
                return
            if reply.code != 250:
                self._retire(session)
                return
        sessions = self._idle.setdefault(session.key, [])
        sessions.append(session)
        session.idle_handle = asyncio.get_running_loop().call_later(
            self.idle_timeout, self._expire, session
        )
        while len(sessions) > self.max_idle_per_key:
            oldest = sessions.pop(0)
            if oldest.idle_handle is not None:
                oldest.idle_handle.cancel()
            self._retire(oldest)

    def _expire(self, session: _Session) -> None:
        sessions = self._idle.get(session.key)
        if sessions is not None and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self._idle[session.key]
        session.idle_handle = None
        self._retire(session)

    def _retire(self, session: _Session) -> None:
        """QUIT in the background: the caller never waits for a polite goodbye."""
        task = asyncio.get_running_loop().create_task(self._quit_quietly(session.wire))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _quit_quietly(wire: Wire) -> None:
        await quit_quietly(wire)


async def quit_quietly(wire: Wire) -> None:
    """QUIT if the connection is still up, then close it; never raises for the peer."""
    try:
        if wire.connected:
            await wire.command(b"QUIT\r\n", _QUIT_TIMEOUT)
    except (ConnectionLost, TimeoutError, ReplyError, OSError):
        pass
    finally:
        wire.close()
