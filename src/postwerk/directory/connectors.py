"""Receive connectors: Exchange 2013's defaults and how a connection picks one.

A receive connector is (local binding × remote IP ranges) → permissions. For a
connection, the candidates are the enabled connectors bound to the local
address and port it arrived on; among those whose remote ranges contain the
client, the one with the most specific (longest-prefix) range wins, as in
Exchange ("receive connectors", selection rules).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from postwerk.store.records import ReceiveConnector

MB = 1024 * 1024

# Permission groups (Exchange's names; what each grants is in `policy.py`).
ANONYMOUS_USERS = "AnonymousUsers"
EXCHANGE_USERS = "ExchangeUsers"
EXCHANGE_SERVERS = "ExchangeServers"
EXCHANGE_LEGACY_SERVERS = "ExchangeLegacyServers"
PARTNERS = "Partners"

# Auth mechanisms
TLS = "TLS"
BASIC_AUTH = "BasicAuth"
BASIC_AUTH_REQUIRE_TLS = "BasicAuthRequireTLS"
EXCHANGE_SERVER = "ExchangeServer"
INTEGRATED = "Integrated"
EXTERNALLY_SECURED = "ExternalAuthoritative"

ALL_V4_V6 = ("0.0.0.0/0", "::/0")


def default_receive_connectors(
    server: str, roles: Sequence[str], ports: dict[str, int], *, shared: bool = False
) -> list[ReceiveConnector]:
    """The connectors Exchange 2013 setup creates for the roles present.

    `ports` maps smtp/submission/outbound_proxy/hub_smtp/client_proxy to the
    configured (un-offset) port numbers. `shared`: the server shares its database
    with other servers (PostgreSQL), so a Mailbox server listens for them even when
    it hosts Client Access too.
    """
    # In one process CAS hands mail to transport directly; a Mailbox server that other
    # servers reach (split roles, or a shared database) listens on 2525 and 465 (M4).
    internal = "cas" not in roles or shared
    out: list[ReceiveConnector] = []
    if "cas" in roles:
        out.append(
            ReceiveConnector(
                name=f"Default Frontend {server}",
                transport_role="FrontendTransport",
                bindings=(f"0.0.0.0:{ports['smtp']}", f"[::]:{ports['smtp']}"),
                remote_ip_ranges=ALL_V4_V6,
                permission_groups=(ANONYMOUS_USERS, EXCHANGE_LEGACY_SERVERS, EXCHANGE_SERVERS),
                auth_mechanisms=(TLS, BASIC_AUTH, BASIC_AUTH_REQUIRE_TLS, EXCHANGE_SERVER),
                max_message_size=36 * MB,
                max_recipients_per_message=200,
            )
        )
        out.append(
            ReceiveConnector(
                name=f"Client Frontend {server}",
                transport_role="FrontendTransport",
                bindings=(f"0.0.0.0:{ports['submission']}", f"[::]:{ports['submission']}"),
                remote_ip_ranges=ALL_V4_V6,
                permission_groups=(EXCHANGE_USERS,),
                auth_mechanisms=(TLS, BASIC_AUTH, BASIC_AUTH_REQUIRE_TLS),
                max_message_size=35 * MB,
                max_recipients_per_message=200,
            )
        )
        out.append(
            ReceiveConnector(
                name=f"Outbound Proxy Frontend {server}",
                transport_role="FrontendTransport",
                bindings=(
                    f"0.0.0.0:{ports['outbound_proxy']}",
                    f"[::]:{ports['outbound_proxy']}",
                ),
                remote_ip_ranges=ALL_V4_V6,
                permission_groups=(EXCHANGE_SERVERS,),
                auth_mechanisms=(TLS, BASIC_AUTH, BASIC_AUTH_REQUIRE_TLS, EXCHANGE_SERVER),
                max_message_size=36 * MB,
                max_recipients_per_message=200,
                # Mailbox servers send FrontEndProxyEnabled connectors' mail through a
                # Client Access server here (transport/outbound_proxy.py); an all-in-one
                # server sends it itself, so it does not listen.
                bound="mailbox" not in roles,
            )
        )
    if "mailbox" in roles:
        out.append(
            ReceiveConnector(
                name=f"Default {server}",
                transport_role="HubTransport",
                bindings=(f"0.0.0.0:{ports['hub_smtp']}", f"[::]:{ports['hub_smtp']}"),
                remote_ip_ranges=ALL_V4_V6,
                permission_groups=(EXCHANGE_LEGACY_SERVERS, EXCHANGE_SERVERS, EXCHANGE_USERS),
                # No AnonymousUsers: only organization servers (ExchangeServer auth) and
                # mailbox users may send here; no password is taken before STARTTLS.
                auth_mechanisms=(TLS, BASIC_AUTH, BASIC_AUTH_REQUIRE_TLS, EXCHANGE_SERVER),
                max_message_size=35 * MB,
                max_recipients_per_message=5000,
                bound=internal,
            )
        )
        out.append(
            ReceiveConnector(
                name=f"Client Proxy {server}",
                transport_role="HubTransport",
                bindings=(f"0.0.0.0:{ports['client_proxy']}", f"[::]:{ports['client_proxy']}"),
                remote_ip_ranges=ALL_V4_V6,
                permission_groups=(EXCHANGE_SERVERS, EXCHANGE_USERS),
                auth_mechanisms=(TLS, BASIC_AUTH, BASIC_AUTH_REQUIRE_TLS, EXCHANGE_SERVER),
                max_message_size=35 * MB,
                max_recipients_per_message=200,
                bound=internal,
            )
        )
    return out


def binding_port(binding: str) -> int:
    return int(binding.rsplit(":", 1)[1])


def binding_host(binding: str) -> str:
    host = binding.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def _binding_matches(binding: str, local_ip: str, local_port: int) -> bool:
    if binding_port(binding) != local_port:
        return False
    host = binding_host(binding)
    if host in ("0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host) == _unmap(ipaddress.ip_address(local_ip))
    except ValueError:
        return False


def _unmap(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _specificity(
    connector: ReceiveConnector, remote: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> int:
    """Prefix length of the narrowest range containing `remote`, or -1."""
    best = -1
    for text in connector.remote_ip_ranges:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if net.version == remote.version and remote in net:
            best = max(best, net.prefixlen)
    return best


def select_connector(
    connectors: Iterable[ReceiveConnector], local_ip: str, local_port: int, remote_ip: str
) -> ReceiveConnector | None:
    """The connector a connection belongs to: bound here, most specific remote range wins."""
    try:
        remote = _unmap(ipaddress.ip_address(remote_ip))
    except ValueError:
        return None
    best: tuple[int, int, ReceiveConnector] | None = None
    for connector in connectors:
        if not connector.enabled:
            continue
        if not any(_binding_matches(b, local_ip, local_port) for b in connector.bindings):
            continue
        score = _specificity(connector, remote)
        if score < 0:
            continue
        # A binding to a specific local address beats a wildcard binding at equal specificity.
        specific_binding = int(
            any(binding_host(b) not in ("0.0.0.0", "::") for b in connector.bindings)
        )
        if best is None or (score, specific_binding) > (best[0], best[1]):
            best = (score, specific_binding, connector)
    return best[2] if best else None
