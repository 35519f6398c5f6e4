"""An nftables ruleset for one server from its flows (`postwerk ports --format nftables`).

Purpose: admit exactly the client and Internet flows this server's roles
need — the enabled inbound rows of `deployment_flows`, at the ports it
really listens on — and nothing else from outside, while never filtering
traffic between the organization's own servers (the reference's first rule).

Shape (`nft -c -f` accepts it; `nft -f` loads it):
- its own table, `inet postwerk`, replaced as a whole on each load (the
  `table ...; delete table ...;` prelude), so re-running is idempotent and
  other tables are left alone;
- an input chain with policy drop that accepts established traffic, the
  loopback interface, ICMP/ICMPv6 (path MTU discovery and neighbour discovery
  need it), SSH (so that loading it cannot lock the admin out; a comment says
  how to drop that), the organization's servers' addresses, and one rule per
  enabled inbound flow;
- outbound traffic is not filtered (the outbound rows are comments).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from postwerk.topology.flows import Direction, Flow

TABLE = "postwerk"


def ruleset(
    server: str, fqdn: str, flows: Sequence[Flow], organization_addresses: Sequence[str] = ()
) -> str:
    """The ruleset text for one server. `organization_addresses` are the other
    servers of the organization (addresses or CIDR ranges), admitted in full."""
    v4 = sorted(a for a in organization_addresses if _version(a) == 4)
    v6 = sorted(a for a in organization_addresses if _version(a) == 6)
    lines = [
        f"# postwerk: firewall for {fqdn} ({server}), from `postwerk ports --format nftables`.",
        "# Load with `nft -f FILE`; it replaces only the table below.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        "        ct state established,related accept",
        "        ct state invalid drop",
        '        iif "lo" accept',
        "        meta l4proto { icmp, ipv6-icmp } accept",
        '        tcp dport 22 accept comment "ssh: remove if this machine is managed otherwise"',
    ]
    if v4:
        lines.append(
            f"        ip saddr {{ {', '.join(v4)} }} accept # organization servers: never filtered"
        )
    if v6:
        lines.append(
            f"        ip6 saddr {{ {', '.join(v6)} }} accept # organization servers: never filtered"
        )
    for flow in flows:
        if flow.direction is not Direction.INBOUND:
            continue
        if flow.enabled and flow.listen_port is not None:
            shifted = "" if flow.listen_port == flow.port else f" (standard port {flow.port})"
            comment = _comment(f"{flow.purpose}: {flow.service}{shifted}")
            lines.append(
                f"        {flow.transport} dport {flow.listen_port} accept comment {comment}"
            )
        else:
            lines.append(f"        # {flow.port}/{flow.transport} {flow.purpose}: {flow.state}")
    lines.append("    }")
    lines.append("    # Outbound is not filtered. This server's outbound flows:")
    for flow in flows:
        if flow.direction is Direction.OUTBOUND:
            lines.append(
                f"    #   {flow.port}/{flow.transport} to {flow.destination}: "
                f"{flow.purpose} ({flow.state})"
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _version(address: str) -> int:
    return ipaddress.ip_network(address, strict=False).version


def _comment(text: str) -> str:
    # nft comments are quoted strings of at most 128 characters, without quotes.
    cleaned = text.replace('"', "'")
    return f'"{cleaned[:127]}"'
