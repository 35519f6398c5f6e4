"""`topology/flows.py` and `topology/nftables.py`: the reference's port tables
for a deployment, row by row, and the nftables ruleset made from them."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from postwerk.config.settings import PortSettings
from postwerk.directory.connectors import default_receive_connectors
from postwerk.store.records import AddressSpace, SendConnector
from postwerk.topology.flows import (
    AccessService,
    Direction,
    Flow,
    State,
    Topology,
    deployment_flows,
)
from postwerk.topology.nftables import ruleset

PORTS = PortSettings().model_dump()


def all_in_one(**kw: object) -> Topology:
    base: dict[str, object] = {
        "server": "MAIL",
        "fqdn": "mail.example.org",
        "roles": ("cas", "mailbox"),
        "port_offset": 0,
        "ports": PORTS,
        "receive_connectors": tuple(default_receive_connectors("MAIL", ["cas", "mailbox"], PORTS)),
    }
    base.update(kw)
    return Topology(**base)  # type: ignore[arg-type]


def rows(flows: list[Flow]) -> list[tuple[int, str, str, str, str]]:
    return [(f.port, f.transport, f.source, f.destination, f.state.value) for f in flows]


CAS = "Client Access server MAIL"
MBX = "Mailbox server MAIL"


def test_all_in_one_defaults_match_the_reference_tables() -> None:
    # "Network ports for clients and mail flow in Exchange 2013": clients and
    # services (destination: CAS), then mail flow without an Edge, then the
    # organization-internal flows (in one process here).
    assert rows(deployment_flows(all_in_one())) == [
        (443, "tcp", "clients (any)", CAS, "not-available"),
        (80, "tcp", "clients (any)", CAS, "not-available"),
        (143, "tcp", "clients (any)", CAS, "disabled"),  # IMAP4: off by default
        (993, "tcp", "clients (any)", CAS, "disabled"),
        (110, "tcp", "clients (any)", CAS, "disabled"),  # POP3: off by default
        (995, "tcp", "clients (any)", CAS, "disabled"),
        (587, "tcp", "clients (any)", CAS, "enabled"),  # Client Frontend
        (25, "tcp", "Internet (any)", CAS, "enabled"),  # Default Frontend
        (25, "tcp", MBX, "Internet (any)", "disabled"),  # no send connector by default
        (25, "tcp", CAS, "Internet (any)", "disabled"),  # FrontEndProxyEnabled
        (53, "udp", "Internet-facing server MAIL", "DNS servers", "disabled"),
        (53, "tcp", "Internet-facing server MAIL", "DNS servers", "disabled"),
        (2525, "tcp", CAS, MBX, "in-process"),
        (465, "tcp", CAS, MBX, "in-process"),
        (717, "tcp", MBX, CAS, "disabled"),
        (1993, "tcp", CAS, MBX, "in-process"),
        (1995, "tcp", CAS, MBX, "in-process"),
        (444, "tcp", CAS, MBX, "not-available"),
    ]


def test_services_and_connectors_switch_rows_on() -> None:
    internet = SendConnector("Internet", (AddressSpace("*"),))
    via_cas = SendConnector("Via CAS", (AddressSpace("partner.test"),), frontend_proxy=True)
    t = all_in_one(
        port_offset=10000,
        imap=AccessService(True, 143, 993),
        pop=AccessService(False, 110, 995),
        send_connectors=(internet, via_cas),
    )
    flows = {(f.port, f.transport, f.source): f for f in deployment_flows(t)}
    assert flows[(993, "tcp", "clients (any)")].listen_port == 10993
    assert flows[(143, "tcp", "clients (any)")].state is State.ENABLED
    assert flows[(995, "tcp", "clients (any)")].listen_port is None
    assert flows[(25, "tcp", "Internet (any)")].listen_port == 10025
    outbound = flows[(25, "tcp", MBX)]
    assert outbound.state is State.ENABLED and outbound.service == 'send connector "Internet"'
    assert flows[(25, "tcp", CAS)].service == 'send connector "Via CAS"'
    assert flows[(717, "tcp", MBX)].state is State.IN_PROCESS
    assert flows[(53, "udp", "Internet-facing server MAIL")].state is State.ENABLED


def test_disabled_connector_and_moved_port() -> None:
    connectors = [
        replace(c, enabled=False) if c.name == "Client Frontend MAIL" else c
        for c in default_receive_connectors("MAIL", ["cas", "mailbox"], {**PORTS, "smtp": 2025})
    ]
    flows = deployment_flows(all_in_one(receive_connectors=tuple(connectors)))
    inbound = next(f for f in flows if f.purpose == "Inbound mail")
    assert (inbound.port, inbound.listen_port) == (2025, 2025)
    submission = next(f for f in flows if f.port == 587)
    assert submission.state is State.DISABLED and submission.listen_port is None


def test_ruleset_admits_exactly_the_enabled_inbound_flows() -> None:
    t = all_in_one(port_offset=10000, imap=AccessService(True, 143, 993))
    flows = deployment_flows(t)
    text = ruleset(t.server, t.fqdn, flows, ["192.0.2.10", "2001:db8::/64"])
    accepted = [
        line.split()[2] for line in text.splitlines() if " dport " in line and "accept" in line
    ]
    assert accepted == ["22", "10143", "10993", "10587", "10025"]
    assert "policy drop" in text
    assert "ip saddr { 192.0.2.10 } accept" in text
    assert "ip6 saddr { 2001:db8::/64 } accept" in text
    assert all(f.direction is not Direction.INTERNAL for f in flows if f.enabled)


@pytest.mark.skipif(
    shutil.which("nft") is None, reason="nft is not installed (apt install nftables)"
)
def test_ruleset_loads_with_nft_check(tmp_path: Path) -> None:
    internet = SendConnector("Internet", (AddressSpace("*"),))
    t = all_in_one(
        imap=AccessService(True, 143, 993),
        pop=AccessService(True, 110, 995),
        send_connectors=(internet,),
    )
    path = tmp_path / "postwerk.nft"
    path.write_text(ruleset(t.server, t.fqdn, deployment_flows(t), ["10.0.0.0/8"]))
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_split_servers_list_their_internal_flows_with_each_other() -> None:
    from postwerk.store.records import ServerRecord

    peers = (
        ServerRecord("CAS1", "cas1.example.com", ("cas",), ("192.0.2.1",)),
        ServerRecord("MBX1", "mbx1.example.com", ("mailbox",), ("192.0.2.2",)),
        ServerRecord("MBX2", "mbx2.example.com", ("mailbox",), ("192.0.2.3",)),
    )
    mailbox = all_in_one(server="MBX1", roles=("mailbox",), peers=peers, port_offset=100)
    internal = [f for f in deployment_flows(mailbox) if f.direction is Direction.INTERNAL]
    assert [(f.port, f.source, f.state.value, f.listen_port) for f in internal] == [
        (2525, "Client Access and Mailbox servers CAS1, MBX2", "enabled", 2625),
        (465, "Client Access servers CAS1", "enabled", 565),
        (1993, "Client Access servers CAS1", "enabled", 2093),
        (1995, "Client Access servers CAS1", "enabled", 2095),
        (444, "Client Access servers CAS1", "not-available", None),
        (717, "Mailbox server MBX1", "disabled", None),
    ]
    # A Mailbox server alone serves no clients.
    assert not any(f.port in (993, 995, 443, 587) for f in deployment_flows(mailbox))
    cas = all_in_one(server="CAS1", roles=("cas",), peers=peers)
    internal = [f for f in deployment_flows(cas) if f.direction is Direction.INTERNAL]
    assert [(f.port, f.source, f.destination, f.listen_port) for f in internal[:4]] == [
        (2525, "Client Access server CAS1", "Mailbox servers MBX1, MBX2", None),
        (465, "Client Access server CAS1", "Mailbox servers MBX1, MBX2", None),
        (1993, "Client Access server CAS1", "Mailbox servers MBX1, MBX2", None),
        (1995, "Client Access server CAS1", "Mailbox servers MBX1, MBX2", None),
    ]
    assert internal[-1].port == 717 and internal[-1].destination == "Client Access server CAS1"
    # Without FrontEndProxyEnabled connectors a CAS sends nothing out itself.
    assert all(
        f.state is State.DISABLED
        for f in deployment_flows(cas)
        if f.direction is Direction.OUTBOUND
    )


def test_frontend_proxy_connectors_switch_on_717_between_split_servers() -> None:
    from postwerk.store.records import ServerRecord

    peers = (
        ServerRecord("CAS1", "cas1.example.com", ("cas",), ("192.0.2.1",), port_offset=100),
        ServerRecord("MBX1", "mbx1.example.com", ("mailbox",), ("192.0.2.2",)),
    )
    internet = SendConnector("Internet", (AddressSpace("*"),))
    via_cas = SendConnector("Via CAS", (AddressSpace("partner.test"),), frontend_proxy=True)
    cas = all_in_one(
        server="CAS1",
        roles=("cas",),
        peers=peers,
        port_offset=100,
        receive_connectors=tuple(default_receive_connectors("CAS1", ["cas"], PORTS)),
        send_connectors=(internet, via_cas),
    )
    flows = deployment_flows(cas)
    [proxy] = [f for f in flows if f.port == 717]
    # The CAS listens on 717 (+ its offset) for the Mailbox servers.
    assert (proxy.source, proxy.destination) == (
        "Mailbox servers MBX1",
        "Client Access server CAS1",
    )
    assert (proxy.state, proxy.listen_port) == (State.ENABLED, 817)
    # ... and connects out on 25 (and resolves the next hops) for those connectors only.
    outbound = {(f.port, f.transport): f for f in flows if f.direction is Direction.OUTBOUND}
    assert outbound[(25, "tcp")].source == "Client Access server CAS1"
    assert outbound[(25, "tcp")].service == 'send connector "Via CAS"'
    assert outbound[(25, "tcp")].enabled and outbound[(53, "udp")].enabled
    # Unused, it is listed disabled (it listens all the same: the connector is bound).
    idle = deployment_flows(replace(cas, send_connectors=(internet,)))
    [proxy] = [f for f in idle if f.port == 717]
    assert (proxy.state, proxy.listen_port) == (State.DISABLED, 817)
    # The Mailbox server's side: it connects to the CAS; it resolves only for itself.
    mailbox = all_in_one(
        server="MBX1",
        roles=("mailbox",),
        peers=peers,
        receive_connectors=tuple(default_receive_connectors("MBX1", ["mailbox"], PORTS)),
        send_connectors=(via_cas,),
    )
    flows = deployment_flows(mailbox)
    [proxy] = [f for f in flows if f.port == 717]
    assert (proxy.source, proxy.state, proxy.listen_port) == (
        "Mailbox server MBX1",
        State.ENABLED,
        None,
    )
    direct = next(f for f in flows if f.port == 25 and f.direction is Direction.OUTBOUND)
    assert direct.state is State.DISABLED and "Client Access" in direct.note
    assert not any(f.port == 53 and f.enabled for f in flows)
