"""The reference's port tables, made executable: every network flow of a
deployment, as the directory and the configuration describe it.

Purpose: "Network ports for clients and mail flow in Exchange 2013" lists,
per topology, each flow's purpose, port, source, destination and the
connector or service behind it. `deployment_flows` produces those rows for
the servers at hand — today one all-in-one server (Client Access and Mailbox
in one process); M4 adds separate servers and their internal flows, later
issues the Edge rows — and says whether each is enabled here: IMAP4/POP3
only once `postwerk imap|pop enable` ran, SMTP rows from the receive and
send connectors, the web services when they exist. `postwerk ports` prints
them (table, JSON, nftables: `topology/nftables.py`).

Invariants:
- One row per (purpose, port, transport): 993 and 143 are two rows, as a
  firewall needs them; `port` is the reference's number, `listen_port` what
  this server opens (with the port offset), None when nothing listens here.
- Rows are in the reference's order: clients and services, then mail flow,
  then the organization-internal flows the reference says must never be
  filtered (between the organization's own servers).
- Pure: the caller reads the directory and hands in `Topology`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from postwerk.store.records import ReceiveConnector, SendConnector, ServerRecord


class Direction(StrEnum):
    INBOUND = "inbound"  # to this server, from clients or the Internet
    OUTBOUND = "outbound"  # from this server to the Internet
    INTERNAL = "internal"  # between the organization's own servers


class State(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # the admin has it off (IMAP4/POP3, connectors)
    NOT_AVAILABLE = "not-available"  # the service does not exist in this release
    IN_PROCESS = "in-process"  # both ends in one process: no network flow


@dataclass(frozen=True, slots=True)
class Flow:
    """One row of the reference's tables, for this deployment."""

    purpose: str
    port: int
    transport: str  # "tcp" or "udp"
    protocol: str
    source: str
    destination: str
    service: str  # the connector or service that handles it
    direction: Direction
    state: State
    listen_port: int | None = None  # what this server listens on, offset applied
    note: str = ""

    @property
    def enabled(self) -> bool:
        return self.state is State.ENABLED

    def to_json(self) -> dict[str, object]:
        return {
            "purpose": self.purpose,
            "port": self.port,
            "transport": self.transport,
            "protocol": self.protocol,
            "source": self.source,
            "destination": self.destination,
            "service": self.service,
            "direction": self.direction.value,
            "state": self.state.value,
            "enabled": self.enabled,
            "listen_port": self.listen_port,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class AccessService:
    """IMAP4 or POP3 as `postwerk imap|pop settings` stores it."""

    enabled: bool
    port: int
    ssl_port: int


@dataclass(frozen=True, slots=True)
class Topology:
    """What the flows depend on, for one server hosting `roles`."""

    server: str  # the server's label: first hostname label, upper case ("MAIL")
    fqdn: str
    roles: tuple[str, ...]
    port_offset: int
    ports: dict[str, int]  # PortSettings: the configured (un-offset) numbers
    receive_connectors: Sequence[ReceiveConnector] = ()
    send_connectors: Sequence[SendConnector] = ()
    imap: AccessService | None = None
    pop: AccessService | None = None
    web_services: bool = False  # 443/80: later issues
    bind: str = ""  # server.bind: the address it listens on ("" = all)
    peers: Sequence[ServerRecord] = ()  # the organization's other servers

    def peers_with(self, role: str) -> list[ServerRecord]:
        return [p for p in self.peers if role in p.roles and p.name != self.server]

    @property
    def all_in_one(self) -> bool:
        return "cas" in self.roles and "mailbox" in self.roles


def deployment_flows(t: Topology) -> list[Flow]:
    """Every flow of the reference for this server, in the reference's order."""
    cas = f"Client Access server {t.server}"
    mailbox = f"Mailbox server {t.server}"
    out: list[Flow] = []
    if "cas" in t.roles:
        out.extend(_client_flows(t, cas))
    out.extend(_mail_flows(t, cas, mailbox))
    out.extend(_internal_flows(t, cas, mailbox))
    return out


# ---------------------------------------------------------------- clients and services


def _client_flows(t: Topology, cas: str) -> list[Flow]:
    web = State.ENABLED if t.web_services else State.NOT_AVAILABLE
    rows = [
        Flow(
            "Autodiscover, Exchange ActiveSync, EWS, offline address book, Outlook "
            "Anywhere, MAPI over HTTP, Outlook Web App",
            t.ports["https"], "tcp", "HTTPS", "clients (any)", cas, "web services",
            Direction.INBOUND, web, _listen(t, "https", web),
            "" if t.web_services else "arrives with the web services",
        ),
        Flow(
            "Internet calendar publishing, Outlook Web App (redirect to 443), "
            "Autodiscover (fallback when 443 is not available)",
            t.ports["http"], "tcp", "HTTP", "clients (any)", cas, "web services",
            Direction.INBOUND, web, _listen(t, "http", web),
            "" if t.web_services else "arrives with the web services",
        ),
    ]  # fmt: skip
    rows.extend(_access_rows(t, cas, "IMAP4", t.imap, ("imap", "imaps"), "imap"))
    rows.extend(_access_rows(t, cas, "POP3", t.pop, ("pop3", "pop3s"), "pop"))
    submission = _connector(t, f"Client Frontend {t.server}")
    state = _connector_state(submission)
    rows.append(
        Flow(
            "SMTP clients (authenticated submission)",
            _connector_port(submission, t.ports["submission"]), "tcp", "SMTP",
            "clients (any)", cas, f'receive connector "Client Frontend {t.server}"',
            Direction.INBOUND, state, _listen_port(t, submission, state),
        )
    )  # fmt: skip
    return rows


def _access_rows(
    t: Topology,
    cas: str,
    name: str,
    service: AccessService | None,
    keys: tuple[str, str],
    verb: str,
) -> list[Flow]:
    state = State.ENABLED if service is not None and service.enabled else State.DISABLED
    plain = service.port if service is not None else t.ports[keys[0]]
    tls = service.ssl_port if service is not None else t.ports[keys[1]]
    note = "" if state is State.ENABLED else f"off until `postwerk {verb} enable`"
    proxy = f"{name} service (proxied to the {name} back end)"
    out = []
    for port, protocol in ((plain, f"{name} (STARTTLS)" if name == "IMAP4" else "POP3 (STLS)"),
                           (tls, f"{name} over TLS")):  # fmt: skip
        listen = port + t.port_offset if state is State.ENABLED else None
        out.append(
            Flow(
                f"{name} clients", port, "tcp", protocol, "clients (any)", cas, proxy,
                Direction.INBOUND, state, listen, note,
            )
        )  # fmt: skip
    return out


# ---------------------------------------------------------------- mail flow


def _mail_flows(t: Topology, cas: str, mailbox: str) -> list[Flow]:
    rows: list[Flow] = []
    if "cas" in t.roles:
        inbound = _connector(t, f"Default Frontend {t.server}")
        state = _connector_state(inbound)
        rows.append(
            Flow(
                "Inbound mail", _connector_port(inbound, t.ports["smtp"]), "tcp", "SMTP",
                "Internet (any)", cas, f'receive connector "Default Frontend {t.server}"',
                Direction.INBOUND, state, _listen_port(t, inbound, state),
                "relayed to the Mailbox transport by the implicit intra-organization "
                "send connector",
            )
        )  # fmt: skip
    direct = [c for c in t.send_connectors if not c.frontend_proxy]
    proxied = [c for c in t.send_connectors if c.frontend_proxy]
    if "mailbox" in t.roles:
        note = "" if direct else "no send connector: mail to other domains waits"
        if not direct and proxied and not t.all_in_one:
            note = "FrontEndProxyEnabled connectors leave through the Client Access servers"
        rows.append(
            Flow(
                "Outbound mail", 25, "tcp", "SMTP", mailbox, "Internet (any)",
                _send_names(direct), Direction.OUTBOUND,
                State.ENABLED if direct else State.DISABLED, note=note,
            )
        )  # fmt: skip
    if "cas" in t.roles and (t.all_in_one or "mailbox" not in t.roles):
        # A Client Access server relays the Mailbox servers' sessions on 717 to the
        # connector's next hop (transport/outbound_proxy.py).
        rows.append(
            Flow(
                "Outbound mail through the Client Access server", 25, "tcp", "SMTP", cas,
                "Internet (any)", _send_names(proxied), Direction.OUTBOUND,
                State.ENABLED if proxied else State.DISABLED,
                note="send connectors with FrontEndProxyEnabled (`--frontend-proxy`)",
            )
        )  # fmt: skip
    # Who resolves next hops: the server that connects to them.
    if t.all_in_one:
        resolves = bool(t.send_connectors)
    elif "mailbox" in t.roles:
        resolves = bool(direct)
    else:
        resolves = bool(proxied)
    dns = State.ENABLED if resolves else State.DISABLED
    for transport in ("udp", "tcp"):
        rows.append(
            Flow(
                "DNS for the next hop", 53, transport, "DNS",
                f"Internet-facing server {t.server}", "DNS servers", "transport (MX, A/AAAA)",
                Direction.OUTBOUND, dns,
            )
        )  # fmt: skip
    return rows


# ---------------------------------------------------------------- inside the organization


def _internal_flows(t: Topology, cas: str, mailbox: str) -> list[Flow]:
    """Between Client Access and Mailbox (never to be filtered, says the
    reference). In one process they are calls, not connections."""
    if not t.all_in_one:
        return _split_flows(t)
    here = State.IN_PROCESS
    note = "in one process: no connection"
    proxied = [c for c in t.send_connectors if c.frontend_proxy]
    rows = [
        Flow("Inbound mail, Client Access to Mailbox transport", t.ports["hub_smtp"], "tcp",
             "SMTP", cas, mailbox, f'receive connector "Default {t.server}"',
             Direction.INTERNAL, here, note=note),
        Flow("Submissions, Client Access to Mailbox transport", t.ports["client_proxy"], "tcp",
             "SMTP", cas, mailbox, f'receive connector "Client Proxy {t.server}"',
             Direction.INTERNAL, here, note=note),
        Flow("Outbound mail, Mailbox to Client Access", t.ports["outbound_proxy"], "tcp",
             "SMTP", mailbox, cas, f'receive connector "Outbound Proxy Frontend {t.server}"',
             Direction.INTERNAL, here if proxied else State.DISABLED, note=note),
        Flow("IMAP4 proxy to the back end", t.ports["imap_backend"], "tcp", "IMAP4", cas,
             mailbox, "IMAP4 back-end service", Direction.INTERNAL, here, note=note),
        Flow("POP3 proxy to the back end", t.ports["pop3_backend"], "tcp", "POP3", cas,
             mailbox, "POP3 back-end service", Direction.INTERNAL, here, note=note),
        Flow("Web services proxy to the back end", t.ports["http_backend"], "tcp", "HTTPS",
             cas, mailbox, "back-end web services", Direction.INTERNAL,
             here if t.web_services else State.NOT_AVAILABLE, note=note),
    ]  # fmt: skip
    return rows


def _split_flows(t: Topology) -> list[Flow]:
    """The same flows when Client Access and Mailbox are separate servers: a Mailbox
    server listens for the CAS servers (and the other Mailbox servers on 2525), a
    CAS server connects to the Mailbox servers."""
    rows: list[Flow] = []
    cas_peers = _names("Client Access", t.peers_with("cas"))
    mbx_peers = _names("Mailbox", t.peers_with("mailbox"))
    proxied = any(c.frontend_proxy for c in t.send_connectors)
    if "mailbox" in t.roles:
        me = f"Mailbox server {t.server}"
        senders = _names(
            "Client Access and Mailbox", [*t.peers_with("cas"), *t.peers_with("mailbox")]
        )
        for purpose, key, protocol, source, service in (
            ("Inbound mail and Mailbox to Mailbox", "hub_smtp", "SMTP", senders,
             f'receive connector "Default {t.server}"'),
            ("Submissions from Client Access", "client_proxy", "SMTP", cas_peers,
             f'receive connector "Client Proxy {t.server}"'),
            ("IMAP4 proxy from Client Access", "imap_backend", "IMAP4", cas_peers,
             "IMAP4 back-end service"),
            ("POP3 proxy from Client Access", "pop3_backend", "POP3", cas_peers,
             "POP3 back-end service"),
        ):  # fmt: skip
            rows.append(
                Flow(purpose, t.ports[key], "tcp", protocol, source, me, service,
                     Direction.INTERNAL, State.ENABLED, t.ports[key] + t.port_offset,
                     "server-authenticated (organization credentials, pinned TLS)")
            )  # fmt: skip
        rows.append(
            Flow("Web services proxy from Client Access", t.ports["http_backend"], "tcp",
                 "HTTPS", cas_peers, me, "back-end web services", Direction.INTERNAL,
                 State.NOT_AVAILABLE, note="arrives with the web services")
        )  # fmt: skip
        rows.append(
            Flow("Outbound mail, Mailbox to Client Access", t.ports["outbound_proxy"], "tcp",
                 "SMTP", me, cas_peers, "receive connector \"Outbound Proxy Frontend\"",
                 Direction.INTERNAL, State.ENABLED if proxied else State.DISABLED,
                 note="send connectors with FrontEndProxyEnabled")
        )  # fmt: skip
    if "cas" in t.roles:
        me = f"Client Access server {t.server}"
        for purpose, key, protocol, service in (
            ("Inbound mail, Client Access to Mailbox transport", "hub_smtp", "SMTP",
             'receive connector "Default <server>"'),
            ("Submissions, Client Access to Mailbox transport", "client_proxy", "SMTP",
             'receive connector "Client Proxy <server>"'),
            ("IMAP4 proxy to the back end", "imap_backend", "IMAP4", "IMAP4 back-end service"),
            ("POP3 proxy to the back end", "pop3_backend", "POP3", "POP3 back-end service"),
        ):  # fmt: skip
            rows.append(
                Flow(purpose, t.ports[key], "tcp", protocol, me, mbx_peers, service,
                     Direction.INTERNAL, State.ENABLED,
                     note="server-authenticated (organization credentials, pinned TLS)")
            )  # fmt: skip
        rows.append(
            Flow("Web services proxy to the back end", t.ports["http_backend"], "tcp", "HTTPS",
                 me, mbx_peers, "back-end web services", Direction.INTERNAL,
                 State.NOT_AVAILABLE, note="arrives with the web services")
        )  # fmt: skip
        # The connector listens whenever it is bound; the flow is on once a send
        # connector has FrontEndProxyEnabled.
        front = _connector(t, f"Outbound Proxy Frontend {t.server}")
        listening = _connector_state(front)
        state = State.ENABLED if proxied and listening is State.ENABLED else State.DISABLED
        rows.append(
            Flow("Outbound mail, Mailbox to Client Access", t.ports["outbound_proxy"], "tcp",
                 "SMTP", mbx_peers, me,
                 f'receive connector "Outbound Proxy Frontend {t.server}"',
                 Direction.INTERNAL, state, _listen_port(t, front, listening),
                 "server-authenticated; relayed to the send connector's next hop "
                 "(FrontEndProxyEnabled)")
        )  # fmt: skip
    return rows


def _names(kind: str, servers: Sequence[ServerRecord]) -> str:
    if not servers:
        return f"{kind} servers (none registered)"
    return f"{kind} servers " + ", ".join(sorted({s.name for s in servers}))


# ---------------------------------------------------------------- helpers


def _connector(t: Topology, name: str) -> ReceiveConnector | None:
    return next((c for c in t.receive_connectors if c.name == name), None)


def _connector_state(connector: ReceiveConnector | None) -> State:
    if connector is None or not connector.enabled or not connector.bound:
        return State.DISABLED
    return State.ENABLED


def _connector_port(connector: ReceiveConnector | None, default: int) -> int:
    if connector is None or not connector.bindings:
        return default
    return int(connector.bindings[0].rsplit(":", 1)[1])


def _listen_port(t: Topology, connector: ReceiveConnector | None, state: State) -> int | None:
    if state is not State.ENABLED or connector is None:
        return None
    return _connector_port(connector, 0) + t.port_offset


def _listen(t: Topology, key: str, state: State) -> int | None:
    return t.ports[key] + t.port_offset if state is State.ENABLED else None


def _send_names(connectors: Sequence[SendConnector]) -> str:
    if not connectors:
        return "send connectors (none)"
    return "send connector " + ", ".join(f'"{c.name}"' for c in connectors)
