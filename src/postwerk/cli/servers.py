"""`postwerk server list`: the organization's servers (Get-ExchangeServer).

Registered at the end of `cli/main.py`. Each server registers itself at `init`
and at every `serve`, and beats every 30 s while it runs
(`roles/registration.py`); a server that missed three beats is shown as
stopped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from postwerk.cli.main import _emit_json, _run, _with_backend, data_dir_option, json_option
from postwerk.roles.registration import is_running
from postwerk.store.records import ServerRecord


@click.group()
def server() -> None:
    """The organization's servers (Get-ExchangeServer)."""


def _when(at: float) -> str:
    if at <= 0:
        return "never"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def server_json(record: ServerRecord, now: float) -> dict[str, object]:
    return {
        "name": record.name,
        "fqdn": record.fqdn,
        "roles": list(record.roles),
        "addresses": list(record.addresses),
        "port_offset": record.port_offset,
        "version": record.version,
        "running": is_running(record, now),
        "registered_at": _when(record.registered_at),
        "heartbeat_at": _when(record.heartbeat_at),
        "stopped_at": _when(record.stopped_at),
    }


@server.command("list")
@json_option
@data_dir_option
def server_list(as_json: bool, data_dir: Path) -> None:
    """Every registered server: name, FQDN, roles, addresses, whether it runs."""
    records = _run(_with_backend(data_dir, lambda c: c.backend.sql.directory.list_servers()))
    now = time.time()
    if as_json:
        _emit_json([server_json(r, now) for r in records])
        return
    for r in records:
        state = "running" if is_running(r, now) else f"stopped (last seen {_when(r.heartbeat_at)})"
        addresses = ",".join(r.addresses) or "all addresses"
        click.echo(f"{r.name}  {r.fqdn}  roles {','.join(r.roles)}  on {addresses}  {state}")
