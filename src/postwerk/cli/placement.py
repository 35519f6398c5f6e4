"""`postwerk database new|list` and `postwerk mailbox move`: mailbox placement
(New-MailboxDatabase, Get-MailboxDatabase, New-MoveRequest).

Registered at the end of `cli/main.py`. What a database and a move mean here is
in `directory/placement.py` and docs/deployment.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from postwerk.cli.main import (
    _Ctx,
    _domain_errors,
    _emit_json,
    _fail,
    _run,
    _with_backend,
    data_dir_option,
    json_option,
)


@click.group()
def database() -> None:
    """Mailbox databases and the Mailbox server each is mounted on."""


@database.command("new")
@click.argument("name")
@click.option("--server", "server", required=True, help="Mailbox server to mount it on.")
@data_dir_option
@_domain_errors
def database_new(name: str, server: str, data_dir: Path) -> None:
    """Create a mailbox database on a Mailbox server (New-MailboxDatabase)."""
    db = _run(_with_backend(data_dir, lambda c: c.directory.add_mailbox_database(name, server)))
    click.echo(f"created mailbox database {db.name} on {db.server}")


@database.command("list")
@data_dir_option
@json_option
def database_list(data_dir: Path, as_json: bool) -> None:
    """Every mailbox database: its server and how many mailboxes live in it."""

    async def read(c: _Ctx) -> tuple[list[Any], dict[str, int]]:
        store = c.backend.sql.directory
        return await store.list_mailbox_databases(), await store.mailbox_counts()

    databases, counts = _run(_with_backend(data_dir, read))
    if as_json:
        _emit_json(
            [
                {"name": d.name, "server": d.server, "mailboxes": counts.get(d.name, 0)}
                for d in databases
            ]
        )
        return
    for d in databases:
        click.echo(f"{d.name}\ton {d.server}\t{counts.get(d.name, 0)} mailbox(es)")


@click.command("move")
@click.argument("address")
@click.option("--database", "target", default=None, help="Target mailbox database.")
@click.option(
    "--server", "server", default=None, help="Target Mailbox server (its first database)."
)
@data_dir_option
@_domain_errors
def mailbox_move(address: str, target: str | None, server: str | None, data_dir: Path) -> None:
    """Move a mailbox to another database or server (New-MoveRequest). Its folders,
    items and UIDs are kept; clients' next logins and new mail go to the new server."""
    if (target is None) == (server is None):
        _fail("give exactly one of --database or --server")

    async def move(c: _Ctx) -> tuple[str | None, str]:
        name = target
        if name is None:
            assert server is not None
            mounted = [
                d.name
                for d in await c.backend.sql.directory.list_mailbox_databases()
                if d.server == server.upper()
            ]
            if not mounted:
                _fail(f"server {server} mounts no mailbox database")
            name = mounted[0]
        moved: tuple[str | None, str] = await c.directory.move_mailbox(address, name)
        return moved

    old, new = _run(_with_backend(data_dir, move))
    click.echo(f"moved mailbox {address} from {old or 'no database'} to {new}")
