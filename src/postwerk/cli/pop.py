"""`postwerk pop enable|disable|settings` (Exchange's POP3 service start/stop and
Set-PopSettings / Get-PopSettings).

Registered at the end of `cli/main.py`. The running server reads the stored
switch and settings every two seconds (roles/protocol_listeners.py): no restart.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from postwerk.cli.main import _Ctx, _emit_json, _run, _with_backend, data_dir_option, json_option
from postwerk.services.pop3 import LoginType, Pop3Settings
from postwerk.store.records import ProtocolSettings

PROTOCOL = "pop3"


@click.group("pop")
def pop() -> None:
    """The POP3 service (off by default, as in Exchange): 110 with STLS, 995 with TLS."""


async def _load(c: _Ctx) -> ProtocolSettings:
    stored = await c.backend.sql.directory.get_protocol_settings(PROTOCOL)
    return stored if stored is not None else ProtocolSettings(PROTOCOL)


def _view(stored: ProtocolSettings) -> dict[str, Any]:
    settings = Pop3Settings.from_mapping(stored.settings)
    return {"enabled": stored.enabled, **settings.to_mapping()}


def _show(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(view)
        return
    width = max(len(k) for k in view)
    for key, value in view.items():
        click.echo(f"{key.ljust(width)}  {value}")


def _switch(data_dir: Path, enabled: bool, as_json: bool) -> None:
    async def run(c: _Ctx) -> dict[str, Any]:
        stored = await _load(c)
        Pop3Settings.from_mapping(stored.settings)  # never enable broken settings
        changed = ProtocolSettings(PROTOCOL, enabled, dict(stored.settings))
        await c.backend.sql.directory.put_protocol_settings(changed)
        return _view(changed)

    try:
        view = _run(_with_backend(data_dir, run))
    except ValueError as exc:
        click.echo(f"postwerk: {exc}", err=True)
        sys.exit(1)
    _show(view, as_json)


@pop.command("enable")
@data_dir_option
@json_option
def enable(data_dir: Path, as_json: bool) -> None:
    """Start POP3: a running server listens within two seconds."""
    _switch(data_dir, True, as_json)


@pop.command("disable")
@data_dir_option
@json_option
def disable(data_dir: Path, as_json: bool) -> None:
    """Stop POP3: listeners close, sessions are hung up (nothing is deleted)."""
    _switch(data_dir, False, as_json)


@pop.command("settings")
@data_dir_option
@json_option
@click.option(
    "--login-type",
    type=click.Choice([t.value for t in LoginType]),
    default=None,
    help="SecureLogin (default): plaintext credentials only over TLS.",
)
@click.option("--max-connections", type=int, default=None, help="All POP3 connections (2000).")
@click.option("--max-connections-per-ip", type=int, default=None, help="From one address (64).")
@click.option("--max-connections-per-user", type=int, default=None, help="Per mailbox (16).")
@click.option(
    "--preauth-timeout",
    "idle_timeout_before_login",
    type=float,
    default=None,
    help="Idle seconds before login (60).",
)
@click.option(
    "--auth-timeout",
    "idle_timeout_after_login",
    type=float,
    default=None,
    help="Idle seconds after login (1800; at least 600, RFC 1939).",
)
@click.option("--max-bad-commands", type=int, default=None, help="Then the connection closes (10).")
@click.option("--banner", default=None, help="Greeting text.")
@click.option("--port", type=int, default=None, help="Plaintext/STLS port (110), plus the offset.")
@click.option(
    "--ssl-port", type=int, default=None, help="Implicit TLS port (995), plus the offset."
)
def settings(data_dir: Path, as_json: bool, **changes: Any) -> None:
    """Show the POP3 settings, or change the ones given (Set-PopSettings)."""
    given = {k: v for k, v in changes.items() if v is not None}

    async def run(c: _Ctx) -> dict[str, Any]:
        stored = await _load(c)
        if given:
            merged = {**Pop3Settings.from_mapping(stored.settings).to_mapping(), **given}
            checked = Pop3Settings.from_mapping(merged)  # ValueError names the field
            stored = ProtocolSettings(PROTOCOL, stored.enabled, checked.to_mapping())
            await c.backend.sql.directory.put_protocol_settings(stored)
        return _view(stored)

    try:
        view = _run(_with_backend(data_dir, run))
    except ValueError as exc:
        click.echo(f"postwerk: {exc}", err=True)
        sys.exit(1)
    _show(view, as_json)
