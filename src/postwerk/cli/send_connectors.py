"""`postwerk connector send new|set|list|remove` (New/Set/Get/Remove-SendConnector).

Registered on the `connector` group at the end of `cli/main.py`, whose helpers it uses.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from postwerk.cli.main import (
    _Ctx,
    _domain_errors,
    _emit_json,
    _run,
    _split,
    _with_backend,
    data_dir_option,
    json_option,
)
from postwerk.core.errors import InvalidName, NotFound
from postwerk.store.records import TLS_POLICIES, SendConnector
from postwerk.transport.routing import parse_address_space, validate_send_connector


@click.group("send")
def connector_send() -> None:
    """Send connectors: how mail leaves the organization (Exchange's New-SendConnector)."""


def connector_json(c: SendConnector) -> dict[str, Any]:
    data = asdict(c)
    data["address_spaces"] = [{"domain": a.domain, "cost": a.cost} for a in c.address_spaces]
    data["smart_hosts"] = list(c.smart_hosts)
    data["source_servers"] = list(c.source_servers)
    # The smart-host password stays in the database; listings only say whether one is set.
    data["auth_password"] = "********" if c.auth_password else None
    return data


def _options(f: Any) -> Any:
    for option in reversed(
        [
            # The singular forms are the design brief's contract (DESIGN.md §3).
            click.option(
                "--address-spaces",
                "--address-space",
                "address_spaces",
                default=None,
                help="Comma-separated DOMAIN[;COST]: '*', 'example.com', '*.example.com'.",
            ),
            click.option(
                "--smart-hosts",
                "--smart-host",
                "smart_hosts",
                default=None,
                help="Comma-separated HOST[:PORT] or [IP][:PORT]; '' for DNS (MX) routing.",
            ),
            click.option("--port", type=int, default=None, help="Port of the next hop (25)."),
            click.option("--auth-user", default=None, help="Smart-host AUTH user name."),
            click.option(
                "--auth-password-stdin",
                is_flag=True,
                help="Read the smart-host password from one line of stdin.",
            ),
            click.option("--no-auth", is_flag=True, help="Remove smart-host authentication."),
            click.option("--tls", type=click.Choice(TLS_POLICIES), default=None),
            click.option("--verify-certificates/--no-verify-certificates", default=None),
            click.option(
                "--source-servers", default=None, help="Comma-separated server names; '' for all."
            ),
            click.option("--max-message-size", type=int, default=None, help="Bytes."),
            click.option(
                "--frontend-proxy/--no-frontend-proxy",
                default=None,
                help="FrontEndProxyEnabled: relay through a Client Access server.",
            ),
            click.option("--fqdn", default=None, help="Name to say in EHLO."),
            click.option("--enabled/--disabled", default=None),
        ]
    ):
        f = option(f)
    return f


def _apply(base: SendConnector, opts: dict[str, Any]) -> SendConnector:
    changes: dict[str, Any] = {}
    if opts["address_spaces"] is not None:
        changes["address_spaces"] = tuple(
            parse_address_space(s) for s in _split(opts["address_spaces"]) or ()
        )
    if opts["smart_hosts"] is not None:
        changes["smart_hosts"] = _split(opts["smart_hosts"])
    if opts["source_servers"] is not None:
        changes["source_servers"] = _split(opts["source_servers"])
    for key in ("port", "tls", "verify_certificates", "max_message_size", "frontend_proxy"):
        if opts[key] is not None:
            changes[key] = opts[key]
    for key in ("fqdn",):
        if opts[key] is not None:
            changes[key] = opts[key] or None
    if opts["enabled"] is not None:
        changes["enabled"] = opts["enabled"]
    if opts["no_auth"]:
        changes["auth_user"] = changes["auth_password"] = None
    elif opts["auth_user"] is not None or opts["auth_password_stdin"]:
        if not opts["auth_password_stdin"]:
            raise InvalidName("give the password with --auth-password-stdin")
        password = sys.stdin.readline().rstrip("\r\n")
        changes["auth_user"] = opts["auth_user"] or base.auth_user
        changes["auth_password"] = password
    return validate_send_connector(replace(base, **changes))


def _report(c: SendConnector, verb: str, as_json: bool) -> None:
    if as_json:
        _emit_json(connector_json(c))
    else:
        click.echo(f"{verb} send connector {c.name}")


@connector_send.command("new")
@click.argument("name")
@_options
@data_dir_option
@json_option
@_domain_errors
def connector_send_new(name: str, data_dir: Path, as_json: bool, **opts: Any) -> None:
    """Create a send connector. Until one exists, external mail waits in Unreachable."""
    if not opts["address_spaces"]:
        raise InvalidName("--address-spaces is required (e.g. '*' for the Internet)")
    created = _apply(SendConnector(name, ()), opts)

    async def run(c: _Ctx) -> None:
        existing = {x.name for x in await c.backend.sql.directory.list_send_connectors()}
        if name in existing:
            raise InvalidName(f"send connector {name!r} exists")
        await c.backend.sql.directory.put_send_connector(created)

    _run(_with_backend(data_dir, run))
    _report(created, "created", as_json)


@connector_send.command("set")
@click.argument("name")
@_options
@data_dir_option
@json_option
@_domain_errors
def connector_send_set(name: str, data_dir: Path, as_json: bool, **opts: Any) -> None:
    """Change a send connector (Set-SendConnector)."""

    async def run(c: _Ctx) -> SendConnector:
        existing = {x.name: x for x in await c.backend.sql.directory.list_send_connectors()}
        if name not in existing:
            raise NotFound(f"no send connector named {name!r}")
        updated = _apply(existing[name], opts)
        await c.backend.sql.directory.put_send_connector(updated)
        return updated

    _report(_run(_with_backend(data_dir, run)), "updated", as_json)


@connector_send.command("list")
@data_dir_option
@json_option
def connector_send_list(data_dir: Path, as_json: bool) -> None:
    """List send connectors."""
    result: list[SendConnector] = _run(
        _with_backend(data_dir, lambda c: c.backend.sql.directory.list_send_connectors())
    )
    if as_json:
        _emit_json([connector_json(c) for c in result])
        return
    if not result:
        click.echo("no send connectors: mail for other domains waits in the Unreachable queue")
    for c in result:
        spaces = ",".join(f"{a.domain};{a.cost}" for a in c.address_spaces)
        via = ("smart hosts " + ",".join(c.smart_hosts)) if c.smart_hosts else "DNS (MX)"
        state = "enabled" if c.enabled else "disabled"
        click.echo(f"{c.name}\t{spaces}\t{via}\tport {c.port}\t{state}")
        click.echo(
            f"    tls: {c.tls}  verify: {'yes' if c.verify_certificates else 'no'}  "
            f"auth: {c.auth_user or '-'}  max message size: {c.max_message_size}"
            + ("  frontend proxy" if c.frontend_proxy else "")
        )


@connector_send.command("remove")
@click.argument("name")
@data_dir_option
@_domain_errors
def connector_send_remove(name: str, data_dir: Path) -> None:
    """Remove a send connector; its queued mail is routed again (or waits in Unreachable)."""
    _run(_with_backend(data_dir, lambda c: c.backend.sql.directory.remove_send_connector(name)))
    click.echo(f"removed send connector {name}")
