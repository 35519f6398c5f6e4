"""Outbound Proxy Frontend: a send connector's mail leaving through a Client Access
server (Exchange 2013's FrontEndProxyEnabled).

Purpose: with `FrontEndProxyEnabled` on a send connector, a Mailbox server does
not connect to the connector's next hop itself. Its transport connects to a
Client Access server's `Outbound Proxy Frontend <CAS>` receive connector (717)
as an organization server, and that server's Front End Transport relays the
SMTP transaction, while it happens, to the next hop the connector names (the
recipient domain's MX hosts, or its smart hosts). The replies to RCPT and to
the end of data that the Mailbox server gets are the destination's, so its
queue finishes a recipient only when the real destination accepted it; a 5xx
there is a 5xx (an NDR by the Mailbox server), a 4xx a retry. The Client
Access server keeps nothing.

- Mailbox side, `ClientAccessRoute` (OutboundDelivery.outbound_proxy): for a
  connector's next hop, one `Destination` per running Client Access server, in
  turn: its address, 717 + its port offset, STARTTLS required, its registered
  certificate pinned, this server's organization credentials, and
  `proxy_hop` = the next hop, which the client sends as `XPWNEXTHOP=` on MAIL
  FROM (transport/smtp_client.py). None running: the mail waits in the queue.
- Client Access side, `OutboundProxyFactory` (ReceiveContext.outbound_proxy): a
  session on 717 gets a `MailboxRelay` whose targets are the next hop's hosts
  (`route`), opened with the send connector's own TLS policy, verification and
  smart-host AUTH (`OutboundDelivery.destination` builds the Destination, and
  `OutboundClient.open_session` the session: the same code as direct sending).

Why the next hop travels in `XPWNEXTHOP=` (a private MAIL parameter, RFC 5321
§4.1.5) rather than the Client Access server routing by recipient domain: the
Mailbox server's categorizer already chose the connector for these recipients
(address spaces, costs, source servers, and recipients of one message split
by next hop); routing again on another server could pick another connector
while the directory cache differs. Exchange likewise tells the front end where
to go (its XPROXYTO). Only the connector's name crosses the wire: the Client
Access server reads the connector (smart hosts, TLS policy, credentials) from
the shared directory, so no smart-host password ever travels between servers.

Invariants:
- XPWNEXTHOP is honoured only on the Outbound Proxy Frontend connector, and only
  from an organization server (SASL PLAIN as a registered server, inside TLS;
  services/smtp.py); anyone else gets 530 5.7.57 at MAIL (the connector's only
  permission group is ExchangeServers) or 555 for the parameter.
- The Mailbox server sends through a server only if it advertises XPWNEXTHOP
  and presents the registered certificate; a server that does not is skipped
  (4.7.0 / 4.7.5), so a misrouted session can never keep the message.
- A Client Access server answers a Mailbox server's RCPT with 250 only after
  the destination's 250, and its end of data with the destination's reply.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

import structlog

from postwerk.core.replies import Reply
from postwerk.directory.server_auth import ServerTrust, internal_client_context
from postwerk.frontend.routing import Placement, server_host
from postwerk.protocols.smtp.commands import MailParams
from postwerk.store.records import ReceiveConnector, SendConnector, ServerRecord
from postwerk.transport.dns import DnsFailure
from postwerk.transport.frontend_relay import (
    FRONTEND_TRANSPORT,
    OUTBOUND_PROXY_PORT,
    Backend,
    MailboxRelay,
    RelayPolicy,
    RelayRoute,
    RelayTarget,
    Unusable,
)
from postwerk.transport.routing import INTRA_ORG_HOP, SMTP_HOP, parse_smtp_hop
from postwerk.transport.smtp_client import (
    Destination,
    HostUnusable,
    OutboundClient,
    TlsPolicy,
)

__all__ = [
    "NEXT_HOP_PARAM",
    "NO_CLIENT_ACCESS",
    "ClientAccessRoute",
    "OutboundProxyFactory",
]

NEXT_HOP_PARAM = "XPWNEXTHOP"  # the EHLO keyword and MAIL parameter

NO_CLIENT_ACCESS = DnsFailure(
    False, "4.4.0", "no Client Access server is running to send through (FrontEndProxyEnabled)"
)
NEXT_HOP_LOST = Reply(451, "4.4.2", "Lost the connection to the next hop; try again later")
NEXT_HOP_UNREACHABLE = Reply(451, "4.4.1", "No host of the next hop could be reached")

# Mailbox → Client Access: the front end answers a RCPT only after it has resolved the
# next hop, connected and had MAIL and RCPT answered there, and the end of data after
# the destination's reply (600 s, RFC 5321 §4.5.3.2); so wait longer than it does.
PROXY_COMMAND_TIMEOUT = 600.0
PROXY_DATA_TIMEOUT = 900.0

SendConnectors = Callable[[], Awaitable[Sequence[SendConnector]]]
DestinationOf = Callable[[SendConnector, str | None, str], Awaitable[Destination | DnsFailure]]


# ---------------------------------------------------------------- Mailbox side


class ClientAccessRoute:
    """The Client Access servers a Mailbox server sends FrontEndProxyEnabled
    connectors' mail through: `await route(next_hop)` → one Destination per running
    server with the Client Access role only (an all-in-one server sends such mail
    itself and does not listen on 717), starting with the next one in turn, or
    NO_CLIENT_ACCESS."""

    def __init__(
        self,
        placement: Placement,
        trust: ServerTrust,
        helo_name: str,
        *,
        port: int = OUTBOUND_PROXY_PORT,
    ) -> None:
        self.placement = placement
        self.trust = trust
        self.helo_name = helo_name
        self.port = port  # the configured (un-offset) port; each server's offset is added
        self._tls = internal_client_context()
        self._turn = 0

    def _running(self) -> list[ServerRecord]:
        placement = self.placement
        return sorted(
            (
                s
                for s in placement.servers.values()
                if "cas" in s.roles
                and "mailbox" not in s.roles
                and s.name != self.trust.this_server
                and placement.running(s.name)
            ),
            key=lambda s: s.name,
        )

    async def __call__(self, next_hop: str) -> list[Destination] | DnsFailure:
        await self.placement.refresh()
        servers = self._running()
        if not servers:
            await self.placement.refresh(force=True)  # one came back, perhaps
            servers = self._running()
        if not servers:
            return NO_CLIENT_ACCESS
        turn = self._turn % len(servers)
        self._turn += 1
        servers = servers[turn:] + servers[:turn]
        return [self._destination(record, next_hop) for record in servers]

    def _destination(self, record: ServerRecord, next_hop: str) -> Destination:
        return Destination(
            hosts=[(record.fqdn or record.name, server_host(record))],
            helo_name=self.helo_name,
            port=self.port + record.port_offset,
            tls=TlsPolicy.REQUIRED,
            ssl_context=self._tls,
            auth=self.trust.credentials(),
            pin_sha256=record.certificate_sha256,
            connect_timeout=15.0,
            command_timeout=PROXY_COMMAND_TIMEOUT,
            data_timeout=PROXY_DATA_TIMEOUT,
            next_hop=next_hop,  # one concurrency limit per next hop, whichever server relays
            proxy_hop=next_hop,
        )


# ---------------------------------------------------------------- Client Access side


class OutboundProxyFactory(RelayPolicy):
    """The Outbound Proxy Frontend's relays (one factory per process): for each
    transaction, the send connector named by XPWNEXTHOP, its destination resolved as
    the Mailbox server would have (`destination`), its hosts tried in order.

    `connectors` reads the directory's send connectors; `destination` is
    `OutboundDelivery.destination` (smart hosts or MX, TLS policy, AUTH); `port` is the
    configured Outbound Proxy Frontend port (settings.ports.outbound_proxy)."""

    vouches = False  # the submitter is the organization's business, not the next hop's
    lost = NEXT_HOP_LOST

    def __init__(
        self,
        connectors: SendConnectors,
        destination: DestinationOf,
        *,
        port: int = OUTBOUND_PROXY_PORT,
        client: OutboundClient | None = None,
        command_timeout: float = 300.0,
        data_timeout: float = 600.0,
    ) -> None:
        super().__init__()
        self.connectors = connectors
        self.destination = destination
        self.port = port
        self.client = client or OutboundClient()  # only its open_session: nothing pooled
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout

    def applies(self, connector: ReceiveConnector, port: int) -> bool:
        """Is a session on `connector` (reached on configured port `port`) an Outbound
        Proxy Frontend session?"""
        return connector.transport_role == FRONTEND_TRANSPORT and port == self.port

    def relay(
        self, connector: ReceiveConnector, log: structlog.stdlib.BoundLogger | None = None
    ) -> MailboxRelay:
        """The relay of one Mailbox server's session on `connector`."""
        return MailboxRelay(self, 0, log)

    def unavailable(self, last: Reply | None) -> Reply:
        # The last host's own refusal (made transient by the client) says most.
        return last if last is not None and 400 <= last.code < 500 else NEXT_HOP_UNREACHABLE

    async def route(
        self, database: str | None, params: MailParams, port: int
    ) -> RelayRoute | Reply:
        hop = params.next_hop
        if hop is None or not hop.startswith(SMTP_HOP) or hop.startswith(INTRA_ORG_HOP):
            # The session refuses MAIL without it; transient, as anything the two
            # servers could disagree on while their directory caches differ.
            return Reply(451, "4.4.0", "No next hop to relay to")
        name, domain = parse_smtp_hop(hop)
        connector = next((c for c in await self.connectors() if c.name == name), None)
        if connector is None or not connector.enabled:
            return Reply(451, "4.4.0", f"Send connector {name} is not known here")
        if not connector.smart_hosts and not domain:
            return Reply(451, "4.4.0", f"No destination domain for send connector {name}")
        if params.size is not None and params.size > connector.max_message_size:
            return Reply(552, "5.3.4", f"Message size exceeds {name}'s limit")
        found = await self.destination(connector, domain, hop)
        if isinstance(found, DnsFailure):
            return Reply(550 if found.permanent else 451, found.status, found.reason)
        targets = [
            RelayTarget(f"{host}[{address}]", functools.partial(self._open, found, host, address))
            for host, address in found.hosts
        ]
        return RelayRoute(hop, targets)

    async def _open(self, destination: Destination, host: str, address: str) -> Backend:
        try:
            session = await self.client.open_session(destination, host, address)
        except HostUnusable as exc:
            raise Unusable(exc.detail, Reply(exc.code, exc.status, exc.text)) from None
        route = destination.next_hop or ""
        return Backend(host, session.wire, session.extensions, route=route)
