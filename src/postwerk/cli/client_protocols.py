"""`postwerk pop|imap enable|disable|settings`: starting the POP3 and IMAP4 services
and Set-PopSettings / Set-ImapSettings (Get-… without options).

Registered at the end of `cli/main.py`. The running server reads the stored
switch and settings every two seconds (roles/protocol_listeners.py): no restart.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from postwerk.cli.main import _Ctx, _emit_json, _run, _with_backend, data_dir_option, json_option
from postwerk.roles.registration import server_label
from postwerk.services.imap import ImapSettings
from postwerk.services.pop3 import Pop3Settings
from postwerk.services.protocol_settings import LoginType
from postwerk.store.records import ProtocolSettings

Parse = Callable[[dict[str, Any]], Any]


def _view(stored: ProtocolSettings, parse: Parse) -> dict[str, Any]:
    return {"enabled": stored.enabled, **parse(dict(stored.settings)).to_mapping()}


def _show(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(view)
        return
    width = max(len(k) for k in view)
    for key, value in view.items():
        click.echo(f"{key.ljust(width)}  {value}")


def _apply(
    data_dir: Path,
    protocol: str,
    parse: Parse,
    as_json: bool,
    *,
    enabled: bool | None = None,
    changes: dict[str, Any] | None = None,
) -> None:
    async def run(c: _Ctx) -> dict[str, Any]:
        directory = c.backend.sql.directory
        # Per server, as Set-ImapSettings -Server: this data directory's server.
        label = server_label(c.settings.server.hostname)
        stored = await directory.get_protocol_settings(protocol, label) or ProtocolSettings(
            protocol
        )
        current = parse(dict(stored.settings))  # never enable or keep broken settings
        if enabled is None and not changes:
            return _view(stored, parse)
        values = current.to_mapping() if not changes else {**current.to_mapping(), **changes}
        checked = parse(values)  # ValueError names the field
        new = ProtocolSettings(
            protocol,
            stored.enabled if enabled is None else enabled,
            checked.to_mapping(),
            server=label,
        )
        await directory.put_protocol_settings(new)
        return _view(new, parse)

    try:
        view = _run(_with_backend(data_dir, run))
    except ValueError as exc:
        click.echo(f"postwerk: {exc}", err=True)
        sys.exit(1)
    _show(view, as_json)


def _common_options(f: Any, default_port: int, default_ssl: int) -> Any:
    options = [
        click.option(
            "--login-type",
            type=click.Choice([t.value for t in LoginType]),
            default=None,
            help="SecureLogin (default): plaintext credentials only over TLS.",
        ),
        click.option("--max-connections", type=int, default=None, help="All connections (2000)."),
        click.option(
            "--max-connections-per-ip", type=int, default=None, help="From one address (64)."
        ),
        click.option(
            "--max-connections-per-user", type=int, default=None, help="Per mailbox (16)."
        ),
        click.option(
            "--preauth-timeout",
            "idle_timeout_before_login",
            type=float,
            default=None,
            help="Idle seconds before login (60).",
        ),
        click.option(
            "--auth-timeout",
            "idle_timeout_after_login",
            type=float,
            default=None,
            help="Idle seconds after login (1800).",
        ),
        click.option(
            "--max-bad-commands", type=int, default=None, help="Then the connection closes (10)."
        ),
        click.option("--banner", default=None, help="Greeting text."),
        click.option(
            "--port", type=int, default=None, help=f"Plaintext/STARTTLS port ({default_port})."
        ),
        click.option(
            "--ssl-port", type=int, default=None, help=f"Implicit TLS port ({default_ssl})."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def protocol_group(
    name: str, protocol: str, title: str, parse: Parse, ports: tuple[int, int], extra: list[Any]
) -> click.Group:
    @click.group(name, help=f"The {title} service (off by default, as in Exchange).")
    def group() -> None:
        pass

    @group.command("enable")
    @data_dir_option
    @json_option
    def enable(data_dir: Path, as_json: bool) -> None:
        """Start the service: a running server listens within two seconds."""
        _apply(data_dir, protocol, parse, as_json, enabled=True)

    @group.command("disable")
    @data_dir_option
    @json_option
    def disable(data_dir: Path, as_json: bool) -> None:
        """Stop the service: listeners close, sessions are hung up."""
        _apply(data_dir, protocol, parse, as_json, enabled=False)

    def settings(data_dir: Path, as_json: bool, **changes: Any) -> None:
        """Show the settings, or change the ones given."""
        given = {k: v for k, v in changes.items() if v is not None}
        _apply(data_dir, protocol, parse, as_json, changes=given)

    command: Any = settings
    for option in reversed(extra):
        command = option(command)
    command = _common_options(command, *ports)
    command = json_option(data_dir_option(command))
    group.command("settings")(command)
    return group


pop: click.Group = protocol_group("pop", "pop3", "POP3", Pop3Settings.from_mapping, (110, 995), [])
imap: click.Group = protocol_group(
    "imap",
    "imap4",
    "IMAP4",
    ImapSettings.from_mapping,
    (143, 993),
    [
        click.option(
            "--max-command-size",
            "max_line",
            type=int,
            default=None,
            help="Command text without literals, octets (65536).",
        ),
        click.option(
            "--append-limit",
            type=int,
            default=None,
            help="Largest message APPEND accepts, octets (35 MB).",
        ),
        click.option(
            "--max-literal-before-login",
            type=int,
            default=None,
            help="Largest literal before login, octets (8192).",
        ),
    ],
)
