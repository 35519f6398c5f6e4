"""Routing: which send connector carries mail for a domain, and the next hop it names.

Exchange picks, among the enabled send connectors this server may use, the one
whose address space matches the recipient's domain most specifically; among
equally specific ones the lowest cost wins (then the name, so the choice is
stable). Without a match the recipient waits in the Unreachable queue.

Address spaces: `*` matches every domain; `example.com` matches exactly that
domain; `*.example.com` matches example.com and every domain below it, as
Exchange's "include subdomains" does. A longer match is more specific, and an
exact match beats a wildcard of the same length.

Next hops are strings, one delivery queue each: `smtp:<connector>:<domain>` for
DNS routing (one queue per destination domain, as Exchange names its queues)
and `smtp:<connector>` for smart-host routing (one queue per connector).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace

from postwerk.core.addresses import normalize_domain
from postwerk.core.errors import InvalidName
from postwerk.store.records import (
    TLS_POLICIES,
    AddressSpace,
    QueuedRecipient,
    RecipientStatus,
    SendConnector,
)

SMTP_HOP = "smtp:"
# The implicit intra-organization connector to another server of the organization
# (a Mailbox server hosting the recipient's database): "smtp:#MBX2".
INTRA_ORG_HOP = SMTP_HOP + "#"


def intra_org_hop(server: str) -> str:
    return f"{INTRA_ORG_HOP}{server}"


UNREACHABLE = "Unreachable"  # the next hop of recipients no send connector routes


def parse_address_space(text: str) -> AddressSpace:
    """`domain` or `domain;cost` (New-SendConnector's "SMTP:*;1" without the type)."""
    body = text.strip()
    if body.upper().startswith("SMTP:"):
        body = body[5:]
    domain, _, cost_text = body.partition(";")
    domain = domain.strip().lower()
    cost = 1
    if cost_text.strip():
        try:
            cost = int(cost_text)
        except ValueError as exc:
            raise InvalidName(f"invalid address space cost in {text!r}") from exc
        if not 1 <= cost <= 100:
            raise InvalidName(f"address space cost must be 1..100 in {text!r}")
    if domain != "*":
        wildcard = domain.startswith("*.")
        name = normalize_domain(domain[2:] if wildcard else domain)
        domain = f"*.{name}" if wildcard else name
    return AddressSpace(domain, cost)


def specificity(pattern: str, domain: str) -> int | None:
    """How specifically `pattern` matches `domain` (higher wins); None: no match."""
    if pattern == "*":
        return 0
    if pattern.startswith("*."):
        base = pattern[2:]
        if domain == base or domain.endswith("." + base):
            return 2 * (base.count(".") + 1)
        return None
    if domain == pattern:
        return 2 * (pattern.count(".") + 1) + 1
    return None


@dataclass(frozen=True, slots=True)
class Route:
    connector: SendConnector
    next_hop: str


def choose_connector(
    connectors: Iterable[SendConnector], domain: str, server: str | None = None
) -> SendConnector | None:
    """The connector for `domain`; `server` restricts to connectors it may source."""
    best: tuple[int, int, str] | None = None
    chosen: SendConnector | None = None
    for connector in connectors:
        if not connector.enabled:
            continue
        if server and connector.source_servers and server not in connector.source_servers:
            continue
        for space in connector.address_spaces:
            score = specificity(space.domain, domain)
            if score is None:
                continue
            key = (-score, space.cost, connector.name)
            if best is None or key < best:
                best, chosen = key, connector
    return chosen


def route(
    connectors: Iterable[SendConnector], domain: str, server: str | None = None
) -> Route | None:
    connector = choose_connector(connectors, domain, server)
    if connector is None:
        return None
    if connector.smart_hosts:
        return Route(connector, f"{SMTP_HOP}{connector.name}")
    return Route(connector, f"{SMTP_HOP}{connector.name}:{domain}")


def reroute_row(
    row: QueuedRecipient, connectors: Iterable[SendConnector], server: str | None, now: float
) -> QueuedRecipient:
    """A queued external recipient routed with `connectors`: READY on the chosen
    connector's next hop (due now), or UNREACHABLE; unchanged if its hop stays."""
    found = route(connectors, row.address.rpartition("@")[2].lower(), server)
    if found is None:
        if row.next_hop == UNREACHABLE and row.status == RecipientStatus.UNREACHABLE:
            return row
        return replace(
            row,
            status=RecipientStatus.UNREACHABLE,
            next_hop=UNREACHABLE,
            last_error="no send connector",
        )
    if found.next_hop == row.next_hop and row.status == RecipientStatus.READY:
        return row
    return replace(row, status=RecipientStatus.READY, next_hop=found.next_hop, next_attempt=now)


def parse_smtp_hop(next_hop: str) -> tuple[str, str | None]:
    """(connector name, destination domain or None for smart hosts) of an smtp: hop."""
    if not next_hop.startswith(SMTP_HOP):
        raise ValueError(f"not an SMTP next hop: {next_hop!r}")
    name, sep, domain = next_hop[len(SMTP_HOP) :].rpartition(":")
    if not sep:
        return next_hop[len(SMTP_HOP) :], None
    return name, domain


def parse_smart_host(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[192.0.2.1]`, `[192.0.2.1]:587`, `[2001:db8::1]:25`."""
    value = text.strip()
    port: int | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not host:
            raise InvalidName(f"invalid smart host {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise InvalidName(f"invalid smart host {text!r}")
            port = _port(rest[1:], text)
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise InvalidName(f"invalid address in smart host {text!r}") from exc
        return host, port
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host = value
    else:
        port = _port(port_text, text)
    return normalize_domain(host), port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError as exc:
        raise InvalidName(f"invalid port in smart host {whole!r}") from exc
    if not 1 <= port <= 65535:
        raise InvalidName(f"invalid port in smart host {whole!r}")
    return port


def validate_send_connector(connector: SendConnector) -> SendConnector:
    """Raise InvalidName for a connector that cannot route; return it unchanged otherwise."""
    name = connector.name.strip()
    if not name or ":" in name or name != connector.name:
        raise InvalidName("a send connector name must be non-empty, without ':' or edge spaces")
    if not connector.address_spaces:
        raise InvalidName("a send connector needs at least one address space")
    if connector.tls not in TLS_POLICIES:
        raise InvalidName(f"TLS policy must be one of {', '.join(TLS_POLICIES)}")
    for host in connector.smart_hosts:
        parse_smart_host(host)
    if not 1 <= connector.port <= 65535:
        raise InvalidName("port must be 1..65535")
    if (connector.auth_user is None) != (connector.auth_password is None):
        raise InvalidName("smart-host authentication needs both a user and a password")
    if connector.auth_user is not None:
        if not connector.smart_hosts:
            raise InvalidName("authentication is for smart hosts; add --smart-hosts")
        if connector.tls == "none":
            raise InvalidName("smart-host authentication needs TLS (opportunistic or required)")
    if connector.max_message_size < 1:
        raise InvalidName("max message size must be positive")
    return connector
