"""`postwerk ports`: this deployment's network flows, from its own topology.

Registered at the end of `cli/main.py`. Reads the configuration and the
directory (receive and send connectors, the IMAP4/POP3 switches) and prints
the reference's tables for them (`topology/flows.py`): as a table, as JSON,
or as an nftables ruleset for this server (`topology/nftables.py`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from postwerk.cli.main import _Ctx, _emit_json, _run, _with_backend, data_dir_option
from postwerk.roles.registration import server_label
from postwerk.services.imap import ImapSettings
from postwerk.services.pop3 import Pop3Settings
from postwerk.store.records import ProtocolSettings
from postwerk.topology.connectivity import Outcome, probe_flows
from postwerk.topology.flows import AccessService, Flow, Topology, deployment_flows
from postwerk.topology.nftables import ruleset


async def read_topology(ctx: _Ctx) -> Topology:
    settings = ctx.settings
    directory = ctx.backend.sql.directory
    label = server_label(settings.server.hostname)
    imap = await directory.get_protocol_settings("imap4", label)
    pop = await directory.get_protocol_settings("pop3", label)
    return Topology(
        server=label,
        fqdn=settings.server.hostname,
        roles=tuple(settings.server.roles),
        port_offset=settings.server.port_offset,
        bind=settings.server.bind,
        ports=settings.ports.model_dump(),
        receive_connectors=tuple(await directory.list_receive_connectors()),
        send_connectors=tuple(await directory.list_send_connectors()),
        imap=_access(imap, ImapSettings),
        pop=_access(pop, Pop3Settings),
        web_services=settings.web.proxy,
    )


async def _read(ctx: _Ctx) -> tuple[Topology, list[str]]:
    """This server's topology, and the addresses of the organization's other
    servers (registered with `server list`), which its firewall never filters."""
    topology = await read_topology(ctx)
    servers = await ctx.backend.sql.directory.list_servers()
    topology = replace(topology, peers=tuple(s for s in servers if s.name != topology.server))
    peers = [a for s in servers if s.name != topology.server for a in s.addresses]
    return topology, peers


def _access(stored: ProtocolSettings | None, kind: Any) -> AccessService | None:
    if stored is None:
        return None
    parsed = kind.from_mapping(dict(stored.settings))
    return AccessService(stored.enabled, parsed.port, parsed.ssl_port)


def render_table(flows: list[Flow]) -> str:
    header = ("port", "purpose", "from", "to", "connector or service", "state", "listens")
    rows = [
        (
            f"{f.port}/{f.transport}",
            f.purpose,
            f.source,
            f.destination,
            f.service,
            f.state.value,
            "" if f.listen_port is None else str(f.listen_port),
        )
        for f in flows
    ]
    widths = [min(40, max(len(r[i]) for r in [header, *rows])) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        out = [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(cells, widths, strict=True)]
        return "  ".join(c.ljust(w) for c, w in zip(out, widths, strict=True)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "nftables"]),
    default="table",
    show_default=True,
    help="A table, JSON (an array of flows), or an nftables ruleset for this server.",
)
@data_dir_option
def ports(fmt: str, data_dir: Path) -> None:
    """This deployment's ports: every flow of the reference's tables (purpose, port,
    source, destination, connector or service) and whether it is enabled here."""
    topology, peers = _run(_with_backend(data_dir, _read))
    flows = deployment_flows(topology)
    if fmt == "json":
        _emit_json([f.to_json() for f in flows])
    elif fmt == "nftables":
        click.echo(ruleset(topology.server, topology.fqdn, flows, peers), nl=False)
    else:
        click.echo(render_table(flows))


@click.group("test")
def test_group() -> None:
    """Checks of a running deployment (Test-*Connectivity)."""


@test_group.command("connectivity")
@click.option(
    "--host",
    default=None,
    help="Where to connect. Default: server.bind, else 127.0.0.1.",
)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per probe.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_dir_option
def connectivity(host: str | None, timeout: float, as_json: bool, data_dir: Path) -> None:
    """Probe every flow of `postwerk ports` that should be open: connect to its port
    and check the service's greeting (TLS first on 993/995). Exit 1 if one fails."""
    topology, _ = _run(_with_backend(data_dir, _read))
    target = host or topology.bind or "127.0.0.1"
    probes = _run(probe_flows(deployment_flows(topology), target, timeout))
    if as_json:
        _emit_json([p.to_json() for p in probes])
    else:
        for p in probes:
            where = f"{p.flow.port}/{p.flow.transport}"
            click.echo(f"{p.outcome.value:8} {where:9} {p.flow.purpose[:40]:40} {p.detail}")
    if any(p.outcome is Outcome.FAILED for p in probes):
        raise SystemExit(1)
