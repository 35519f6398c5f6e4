"""The `postwerk` command: the admin's whole interface (Exchange Management Shell's role).

Every listing verb takes `--json`, whose shape is stable and documented in
docs/cli.md; the human output may change.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import click

from postwerk.config.settings import CONFIG_FILE, ConfigError, Settings, load_settings

T = TypeVar("T")

DEFAULT_DATA_DIR = "./postwerk-data"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # uvloop when installed: its sockets and callbacks leave more of the GIL to the
    # transport's threads (measured: about 7 % more messages per second).
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"postwerk: {message}", err=True)
    sys.exit(code)


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def data_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: os.environ.get("POSTWERK_DATA_DIR", DEFAULT_DATA_DIR),
        show_default="$POSTWERK_DATA_DIR or ./postwerk-data",
        help="The server's data directory.",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


def _settings(data_dir: Path) -> Settings:
    try:
        return load_settings(data_dir, dict(os.environ))
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


async def _with_backend(data_dir: Path, fn: Callable[[Any], Awaitable[T]]) -> T:
    from postwerk.roles.all_in_one import directory_for, open_backend

    settings = _settings(data_dir)
    # Never clean blobs/tmp/ here: a running server may be receiving into it.
    backend = await open_backend(settings, data_dir, clean_temp=False)
    try:
        ctx = _Ctx(settings, backend, directory_for(backend, settings))
        return await fn(ctx)
    finally:
        await backend.close()


class _Ctx:
    def __init__(self, settings: Settings, backend: Any, directory: Any) -> None:
        self.settings = settings
        self.backend = backend
        self.directory = directory


def _domain_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn domain errors into one-line messages and exit code 1."""
    import functools

    from postwerk.core.errors import PostwerkError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except PostwerkError as exc:
            _fail(str(exc))
            raise  # unreachable

    return wrapper


@click.group()
@click.version_option(package_name="postwerk")
def main() -> None:
    """postwerk: an Exchange Server 2013 organization, on the network, in Python."""


# ---------------------------------------------------------------- init


def dns_snippet(domain: str, hostname: str) -> str:
    return "\n".join(
        [
            f"; DNS records to publish for {domain} (zone-file syntax).",
            f"; Replace the addresses of {hostname} with this server's public ones.",
            f"{domain}.\t\t3600 IN MX 10 {hostname}.",
            f'{domain}.\t\t3600 IN TXT "v=spf1 mx -all"',
            f"; {hostname}.\t3600 IN A    <IPv4 of this server>",
            f"; {hostname}.\t3600 IN AAAA <IPv6 of this server>",
            "; Client configuration names (Autodiscover for Outlook, autoconfig for Thunderbird):",
            f"autodiscover.{domain}.\t3600 IN CNAME {hostname}.",
            f"autoconfig.{domain}.\t3600 IN CNAME {hostname}.",
            f"_autodiscover._tcp.{domain}.\t3600 IN SRV 0 0 443 {hostname}.",
            f"_submission._tcp.{domain}.\t3600 IN SRV 0 1 587 {hostname}.",
            f"; PTR: ask your provider to point this server's address back to {hostname}.",
        ]
    )


async def initialize(data_dir: Path, settings: Settings, domain: str) -> None:
    """Create database, certificate, organization, accepted domain and receive connectors."""
    from postwerk.config.certificates import self_signed, write_pair
    from postwerk.directory.connectors import default_receive_connectors
    from postwerk.roles.all_in_one import database_path, directory_for, open_backend
    from postwerk.store.records import DomainType
    from postwerk.store.sqlite.migrations import migrate

    await migrate(database_path(settings, data_dir))
    cert_pem, key_pem = self_signed(
        settings.server.hostname,
        [f"autodiscover.{domain}", f"autoconfig.{domain}", "localhost", "127.0.0.1", "::1"],
    )
    write_pair(
        data_dir / settings.tls.certificate, data_dir / settings.tls.private_key, cert_pem, key_pem
    )
    backend = await open_backend(settings, data_dir)
    try:
        directory = directory_for(backend, settings)
        if await backend.sql.directory.get_organization() is None:
            await backend.sql.directory.set_organization(settings.server.organization)
            await directory.add_domain(domain, DomainType.AUTHORITATIVE, default=True)
        # else: a shared database (PostgreSQL) whose organization exists: this server
        # joins it with its own connectors and registration.
        ports = settings.ports.model_dump()
        shared = isinstance(database_path(settings, data_dir), str)  # PostgreSQL
        for connector in default_receive_connectors(
            settings.server.hostname.split(".")[0].upper(),
            settings.server.roles,
            ports,
            shared=shared,
        ):
            await backend.sql.directory.put_receive_connector(connector)
        # In the directory from the start; `serve` re-registers it and beats.
        from postwerk.directory.placement import ensure_server_database
        from postwerk.directory.server_auth import certificate_sha256
        from postwerk.roles.registration import server_record

        record = server_record(
            settings,
            settings.server.port_offset,
            heartbeat_at=0.0,
            certificate_sha256=certificate_sha256(data_dir / settings.tls.certificate),
        )
        await backend.sql.directory.put_server(record)
        if "mailbox" in settings.server.roles:
            # Its mailbox database, so `mailbox new` can place mailboxes before `serve`.
            await ensure_server_database(backend.sql.directory, record.name)
    finally:
        await backend.close()


@main.command()
@click.option("--domain", required=True, help="The organization's first accepted domain.")
@data_dir_option
@click.option(
    "--roles",
    default="cas,mailbox",
    show_default=True,
    help="Roles of this server: cas,mailbox (all-in-one) or edge.",
)
@click.option("--hostname", default=None, help="This server's FQDN. Default: mail.<domain>.")
@click.option("--organization", default=None, help="Organization name. Default: the domain.")
@click.option("--bind", default="", help="Address every listener binds to (default: all).")
@click.option("--database", default="", help="Database URL (default: SQLite in the data dir).")
@click.option("--port-offset", type=int, default=0, help="Added to every listener port.")
@_domain_errors
def init(
    domain: str,
    data_dir: Path,
    roles: str,
    hostname: str | None,
    organization: str | None,
    bind: str,
    database: str,
    port_offset: int,
) -> None:
    """Create a server: configuration, database, certificate, organization, connectors."""
    from pydantic import ValidationError

    from postwerk.config.settings import render_toml
    from postwerk.core.addresses import normalize_domain

    domain = normalize_domain(domain)
    if (data_dir / CONFIG_FILE).exists():
        _fail(f"{data_dir / CONFIG_FILE} exists already; this server is initialized")
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    if database and not database.startswith(("sqlite:///", "postgresql://", "postgres://")):
        _fail("--database takes sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    if set(role_list) in ({"cas"}, {"mailbox"}) and not database.startswith("postgres"):
        # A lone front end or back end would have nobody to relay to or be reached by.
        _fail(
            f"--roles {roles}: Client Access and Mailbox on separate servers share the "
            "organization's database: add --database postgresql://USER@HOST:PORT/DB"
        )
    try:
        settings = Settings.model_validate(
            {
                "server": {
                    "hostname": hostname or f"mail.{domain}",
                    "organization": organization or domain,
                    "roles": role_list,
                    "bind": bind,
                    "port_offset": port_offset,
                },
                # Servers sharing PostgreSQL share the message files there too: no
                # shared file system (docs/storage.md).
                "database": {
                    "url": database,
                    "blobs": "database" if database.startswith("postgres") else "files",
                },
            }
        )
    except ValidationError as exc:  # e.g. --port-offset 70000: one line, not a traceback
        first = exc.errors()[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        raise  # unreachable
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / CONFIG_FILE).write_text(render_toml(settings), "utf-8")
    try:
        _run(initialize(data_dir, settings, domain))
    except Exception:
        (data_dir / CONFIG_FILE).unlink(missing_ok=True)
        raise
    click.echo(f"Initialized {settings.server.hostname} for {domain} in {data_dir}")
    click.echo("")
    click.echo(dns_snippet(domain, settings.server.hostname))


# ---------------------------------------------------------------- serve


@main.command()
@data_dir_option
@click.option("--port-offset", type=int, default=None, help="Added to every listener port.")
def serve(data_dir: Path, port_offset: int | None) -> None:
    """Run the configured roles in the foreground. SIGTERM drains and exits 0."""
    from postwerk.observe.logging import configure

    settings = _settings(data_dir)
    configure(settings.logging.level, settings.logging.format)
    code = _run(_serve(data_dir, settings, port_offset))
    sys.exit(code)


@main.command("delivery-worker", hidden=True)
@data_dir_option
@click.option("--partition", required=True, help="k/n: this worker's share of the queue.")
@click.option("--wake-fd", type=int, required=True, help="Pipe from the server (wake-ups).")
def delivery_worker(data_dir: Path, partition: str, wake_fd: int) -> None:
    """Started by `serve` when [transport] delivery_processes > 1 (not for admins)."""
    from postwerk.observe.logging import configure
    from postwerk.roles.delivery_workers import parse_partition, run_worker

    settings = _settings(data_dir)
    configure(settings.logging.level, settings.logging.format)
    try:
        share = parse_partition(partition)
    except ValueError as exc:
        _fail(str(exc))
        return
    tune_gc()
    sys.exit(_run(run_worker(settings, data_dir, share, wake_fd)))


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in a long-running server.

    What startup built (modules, SQLAlchemy's compiled statements, settings) is
    frozen out of every later collection, and young collections run every
    100,000 allocations instead of 700: a full collection stalls every session
    at once, and it showed in the p99 latency (bench/smtpload.py, 20 sessions:
    p99 about 41 → 35 ms, fewer outliers). Reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


async def _serve(
    data_dir: Path,
    settings: Settings,
    port_offset: int | None,
    ready: Callable[[Any], None] | None = None,
) -> int:
    from postwerk.roles.all_in_one import PortInUse, build, database_path
    from postwerk.store.sqlite.migrations import migrate

    # One server per data directory: a second one would, among other things, clear
    # blobs/tmp/ under the first one's feet at start-up.
    lock = _lock_data_dir(data_dir)
    if lock is None:
        running = (
            (data_dir / "postwerk.pid").read_text().strip()
            if (data_dir / "postwerk.pid").exists()
            else "?"
        )
        click.echo(f"postwerk: a server already runs on {data_dir} (pid {running})", err=True)
        return 1
    try:
        await migrate(database_path(settings, data_dir))
        server = await build(settings, data_dir, port_offset)
        await server.start()
    except PortInUse as exc:
        click.echo(f"postwerk: {exc}", err=True)
        return 1
    except (ConfigError, OSError, ValueError) as exc:
        click.echo(f"postwerk: {exc}", err=True)
        return 1
    tune_gc()
    pid_file = data_dir / "postwerk.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        await server.stop()
        pid_file.unlink(missing_ok=True)
        os.close(lock)
    return 0


def _lock_data_dir(data_dir: Path) -> int | None:
    """An exclusive lock on `<data dir>/postwerk.lock`, held while serving; None if taken."""
    import fcntl

    fd = os.open(data_dir / "postwerk.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@main.command()
@data_dir_option
@click.option("--domain", default="demo.postwerk.test", show_default=True)
@click.option("--port-offset", type=int, default=10000, show_default=True)
def demo(data_dir: Path, domain: str, port_offset: int) -> None:
    """Serve a demo organization (what `make run` does): init if needed, a demo user, serve."""
    from postwerk.observe.logging import configure

    fresh = not (data_dir / CONFIG_FILE).exists()
    if fresh:
        ctx = click.get_current_context()
        ctx.invoke(
            init,
            domain=domain,
            data_dir=data_dir,
            roles="cas,mailbox",
            hostname="localhost",
            organization="Demo",
            bind="127.0.0.1",
            database="",
            port_offset=port_offset,
        )
    settings = _settings(data_dir)
    address = f"demo@{domain}"
    password_file = data_dir / "demo-password.txt"
    if fresh or not password_file.exists():
        password = secrets.token_urlsafe(12)

        async def create(c: _Ctx) -> None:
            from postwerk.core.errors import AlreadyExists

            try:
                await c.directory.add_mailbox(address, password, "Demo User")
            except AlreadyExists:
                await c.directory.set_password(address, password)

        _run(_with_backend(data_dir, create))
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
    password = password_file.read_text().strip()
    click.echo("")
    click.echo("postwerk demo organization")
    click.echo(f"  data directory : {data_dir}")
    click.echo(f"  SMTP inbound   : 127.0.0.1:{25 + port_offset}   (Default Frontend, anonymous)")
    click.echo(
        f"  SMTP submission: 127.0.0.1:{587 + port_offset}  (Client Frontend, STARTTLS+AUTH)"
    )
    click.echo(
        f"  IMAP4 / POP3   : off; `postwerk imap enable` then 127.0.0.1:{993 + port_offset}"
        f" (TLS), `pop enable` then {995 + port_offset}"
    )
    admin = settings.admin.port + port_offset
    click.echo(f"  health, metrics: http://127.0.0.1:{admin}/healthz and /metrics")
    click.echo(f"  demo mailbox   : {address}")
    click.echo(f"  password       : {password}")
    click.echo("")
    click.echo(f"  try: swaks --to {address} --server 127.0.0.1:{25 + port_offset}")
    click.echo(f"       POSTWERK_DATA_DIR={data_dir} postwerk message list {address}")
    click.echo("")
    configure(settings.logging.level, "console")
    sys.exit(_run(_serve(data_dir, settings, port_offset)))


# ---------------------------------------------------------------- domains


@main.group()
def domain() -> None:
    """Accepted domains (Get/New/Remove-AcceptedDomain)."""


@domain.command("add")
@click.argument("name")
@click.option(
    "--type",
    "dtype",
    type=click.Choice(["authoritative", "internal-relay", "external-relay"]),
    default="authoritative",
    show_default=True,
)
@data_dir_option
@json_option
@_domain_errors
def domain_add(name: str, dtype: str, data_dir: Path, as_json: bool) -> None:
    """Add an accepted domain."""
    from postwerk.store.records import DomainType

    result = _run(
        _with_backend(data_dir, lambda c: c.directory.add_domain(name, DomainType(dtype)))
    )
    if as_json:
        _emit_json(asdict(result))
    else:
        click.echo(f"added {result.name} ({result.type.value})")


@domain.command("list")
@data_dir_option
@json_option
def domain_list(data_dir: Path, as_json: bool) -> None:
    """List accepted domains."""
    result = _run(_with_backend(data_dir, lambda c: c.backend.sql.directory.list_domains()))
    if as_json:
        _emit_json([{"name": d.name, "type": d.type.value, "default": d.default} for d in result])
        return
    for d in result:
        marker = "\tdefault" if d.default else ""
        click.echo(f"{d.name}\t{d.type.value}{marker}")


@domain.command("remove")
@click.argument("name")
@data_dir_option
@_domain_errors
def domain_remove(name: str, data_dir: Path) -> None:
    """Remove an accepted domain that no recipient uses."""
    _run(_with_backend(data_dir, lambda c: c.directory.remove_domain(name)))
    click.echo(f"removed {name}")


# ---------------------------------------------------------------- recipients


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _recipient_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind.value,
        "address": r.primary_address,
        "display_name": r.display_name,
        "aliases": list(r.aliases),
        "enabled": r.enabled,
        "quota_bytes": r.quota_bytes,
        "database": r.database,
    }


@main.group()
def mailbox() -> None:
    """Mailboxes (New/Get/Remove-Mailbox)."""


@mailbox.command("new")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@click.option("--display-name", default="", help="Display name (default: the local part).")
@click.option("--quota", "quota_bytes", type=int, default=None, help="Quota in bytes.")
@click.option(
    "--database",
    default=None,
    help="Mailbox database to create it in (default: the least-filled database of a "
    "running Mailbox server).",
)
@data_dir_option
@json_option
@_domain_errors
def mailbox_new(
    address: str,
    password_stdin: bool,
    display_name: str,
    quota_bytes: int | None,
    database: str | None,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Create a mailbox with Exchange's default folders."""
    password = _read_password(password_stdin)
    r = _run(
        _with_backend(
            data_dir,
            lambda c: c.directory.add_mailbox(
                address, password, display_name, quota_bytes, database=database
            ),
        )
    )
    if as_json:
        _emit_json(_recipient_json(r))
    else:
        click.echo(f"created mailbox {r.primary_address}")


@mailbox.command("list")
@data_dir_option
@json_option
def mailbox_list(data_dir: Path, as_json: bool) -> None:
    """List mailboxes, with the database each lives in and the server serving it."""
    from postwerk.store.records import RecipientKind

    async def read(c: _Ctx) -> tuple[list[Any], dict[str, str]]:
        store = c.backend.sql.directory
        servers = {d.name: d.server for d in await store.list_mailbox_databases()}
        return await store.list_recipients(RecipientKind.MAILBOX), servers

    result, servers = _run(_with_backend(data_dir, read))
    if as_json:
        _emit_json(
            [{**_recipient_json(r), "server": servers.get(r.database or "")} for r in result]
        )
        return
    for r in result:
        aliases = f"\t(aliases: {', '.join(r.aliases)})" if r.aliases else ""
        where = f"{r.database} on {servers.get(r.database, '?')}" if r.database else "unplaced"
        click.echo(f"{r.primary_address}\t{r.display_name}\t{where}{aliases}")


@mailbox.command("remove")
@click.argument("address")
@data_dir_option
@_domain_errors
def mailbox_remove(address: str, data_dir: Path) -> None:
    """Remove a mailbox, its folders and items, and the message files only it used."""
    from postwerk.store.records import RecipientKind

    async def remove(c: _Ctx) -> int:
        orphans = set(await c.directory.remove(address, RecipientKind.MAILBOX))
        # A message still queued for someone else keeps its file.
        for message in await c.backend.sql.queue.list_messages():
            orphans.discard(message.blob_id)
        for blob_id in sorted(orphans):
            await c.backend.blobs.delete(blob_id)
        return len(orphans)

    freed = _run(_with_backend(data_dir, remove))
    click.echo(f"removed mailbox {address} ({freed} message file(s) deleted)")


@mailbox.command("set-password")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@data_dir_option
@_domain_errors
def mailbox_set_password(address: str, password_stdin: bool, data_dir: Path) -> None:
    """Set a mailbox's password."""
    password = _read_password(password_stdin)
    _run(_with_backend(data_dir, lambda c: c.directory.set_password(address, password)))
    click.echo(f"password set for {address}")


@mailbox.command("set-quota")
@click.argument("address")
@click.argument("quota", metavar="BYTES|unlimited")
@data_dir_option
@_domain_errors
def mailbox_set_quota(address: str, quota: str, data_dir: Path) -> None:
    """Set a mailbox's storage quota (Set-Mailbox -ProhibitSendReceiveQuota): a
    number of bytes, with an optional K/M/G suffix (1024-based), or 'unlimited'.
    IMAP clients see it through QUOTA (RFC 9208); APPEND and COPY past it are refused,
    and so is mail to a full mailbox (552 5.2.2 at RCPT TO, or an NDR at delivery)."""
    limit = _parse_quota(quota)
    _run(_with_backend(data_dir, lambda c: c.directory.set_quota(address, limit)))
    shown = "unlimited" if limit is None else f"{limit} bytes"
    click.echo(f"quota of {address}: {shown}")


def _parse_quota(text: str) -> int | None:
    value = text.strip().upper()
    if value in ("UNLIMITED", "NONE"):
        return None
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(value[-1:], 1)
    digits = value[:-1] if factor > 1 else value
    if not digits.isdigit():
        raise click.BadParameter(f"{text!r} is not a number of bytes or 'unlimited'")
    return int(digits) * factor


@main.group()
def alias() -> None:
    """Extra proxy addresses of a mailbox or group."""


@alias.command("add")
@click.argument("owner")
@click.argument("address")
@data_dir_option
@_domain_errors
def alias_add(owner: str, address: str, data_dir: Path) -> None:
    """Give OWNER the extra address ADDRESS."""
    _run(_with_backend(data_dir, lambda c: c.directory.add_alias(owner, address)))
    click.echo(f"{address} now delivers to {owner}")


@alias.command("remove")
@click.argument("address")
@data_dir_option
@_domain_errors
def alias_remove(address: str, data_dir: Path) -> None:
    """Remove an alias."""
    _run(_with_backend(data_dir, lambda c: c.directory.remove_alias(address)))
    click.echo(f"removed alias {address}")


@alias.command("list")
@data_dir_option
@json_option
def alias_list(data_dir: Path, as_json: bool) -> None:
    """List aliases and their owners."""
    result = _run(_with_backend(data_dir, lambda c: c.backend.sql.directory.list_recipients()))
    rows = [{"alias": a, "owner": r.primary_address} for r in result for a in r.aliases]
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['alias']}\t-> {row['owner']}")


@main.group()
def group() -> None:
    """Distribution groups (expanded by the categorizer)."""


@group.command("new")
@click.argument("address")
@click.option("--display-name", default="")
@data_dir_option
@json_option
@_domain_errors
def group_new(address: str, display_name: str, data_dir: Path, as_json: bool) -> None:
    """Create a distribution group."""
    r = _run(_with_backend(data_dir, lambda c: c.directory.add_group(address, display_name)))
    if as_json:
        _emit_json(_recipient_json(r))
    else:
        click.echo(f"created group {r.primary_address}")


@group.command("add-member")
@click.argument("group_address")
@click.argument("member")
@data_dir_option
@_domain_errors
def group_add_member(group_address: str, member: str, data_dir: Path) -> None:
    """Add MEMBER (any address) to a group."""
    _run(_with_backend(data_dir, lambda c: c.directory.add_member(group_address, member)))
    click.echo(f"added {member} to {group_address}")


@group.command("remove-member")
@click.argument("group_address")
@click.argument("member")
@data_dir_option
@_domain_errors
def group_remove_member(group_address: str, member: str, data_dir: Path) -> None:
    """Remove MEMBER from a group."""
    _run(_with_backend(data_dir, lambda c: c.directory.remove_member(group_address, member)))
    click.echo(f"removed {member} from {group_address}")


@group.command("list")
@data_dir_option
@json_option
def group_list(data_dir: Path, as_json: bool) -> None:
    """List groups with their members."""
    from postwerk.store.records import RecipientKind

    async def collect(c: _Ctx) -> list[dict[str, Any]]:
        out = []
        for r in await c.backend.sql.directory.list_recipients(RecipientKind.GROUP):
            data = _recipient_json(r)
            data["members"] = await c.backend.sql.directory.group_members(r.id)
            out.append(data)
        return out

    rows = _run(_with_backend(data_dir, collect))
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['address']}\t{len(row['members'])} member(s): " + ", ".join(row["members"])
        )


@group.command("remove")
@click.argument("address")
@data_dir_option
@_domain_errors
def group_remove(address: str, data_dir: Path) -> None:
    """Remove a group."""
    from postwerk.store.records import RecipientKind

    _run(_with_backend(data_dir, lambda c: c.directory.remove(address, RecipientKind.GROUP)))
    click.echo(f"removed group {address}")


# ---------------------------------------------------------------- messages


@main.group()
def message() -> None:
    """What mailboxes hold."""


@message.command("list")
@click.argument("address")
@click.option("--folder", default="Inbox", show_default=True)
@click.option("--limit", type=int, default=None)
@data_dir_option
@json_option
@_domain_errors
def message_list(
    address: str, folder: str, limit: int | None, data_dir: Path, as_json: bool
) -> None:
    """List the items of a mailbox folder."""
    from postwerk.store.records import RecipientKind

    async def collect(c: _Ctx) -> list[dict[str, Any]]:
        r = await c.directory.get(address, RecipientKind.MAILBOX)
        f = await c.backend.sql.mailstore.get_folder(r.id, folder)
        items = await c.backend.sql.mailstore.list_items(f.id, limit=limit)
        return [
            {
                "folder": f.name,
                "uid": i.uid,
                "subject": i.summary.get("subject", ""),
                "from": i.summary.get("from_display", ""),
                "size": i.size,
                "date": i.internal_date,
                "message_id": i.summary.get("message_id") or "",
                "flags": [n for bit, n in _FLAG_NAMES if i.flags & bit],
            }
            for i in items
        ]

    rows = _run(_with_backend(data_dir, collect))
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["date"]))
        click.echo(
            f"{row['uid']:>6}  {when}  {row['size']:>8}  {row['from'][:30]:30}  {row['subject']}"
        )
    click.echo(f"{len(rows)} message(s) in {folder}")


def _flag_names() -> list[tuple[int, str]]:
    from postwerk.store.records import Flag

    return list(Flag.NAMES.items())


_FLAG_NAMES = _flag_names()


# ---------------------------------------------------------------- connectors


@main.group()
def connector() -> None:
    """Receive and send connectors."""


@connector.group("receive")
def connector_receive() -> None:
    """Receive connectors (Get/Set-ReceiveConnector)."""


def _connector_json(c: Any) -> dict[str, Any]:
    data = asdict(c)
    for key, value in data.items():
        if isinstance(value, tuple):
            data[key] = list(value)
    return data


@connector_receive.command("list")
@data_dir_option
@json_option
def connector_receive_list(data_dir: Path, as_json: bool) -> None:
    """List receive connectors."""
    result = _run(
        _with_backend(data_dir, lambda c: c.backend.sql.directory.list_receive_connectors())
    )
    if as_json:
        _emit_json([_connector_json(c) for c in result])
        return
    for c in result:
        state = "enabled" if c.enabled else "disabled"
        bound = "" if c.bound else " (not bound on this role set)"
        click.echo(f"{c.name}\t{','.join(c.bindings)}\t{state}{bound}")
        click.echo(
            f"    remote: {','.join(c.remote_ip_ranges)}  permissions: "
            f"{','.join(c.permission_groups)}  auth: {','.join(c.auth_mechanisms)}"
        )
        click.echo(
            f"    max message size: {c.max_message_size}  max recipients: "
            f"{c.max_recipients_per_message}"
        )


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


@connector_receive.command("set")
@click.argument("name")
@click.option("--bindings", default=None, help="Comma-separated ADDR:PORT list.")
@click.option("--remote-ip-ranges", default=None, help="Comma-separated CIDR list.")
@click.option(
    "--permission-groups",
    default=None,
    help="AnonymousUsers, ExchangeUsers, ExchangeServers, ... (comma-separated).",
)
@click.option(
    "--auth-mechanisms",
    default=None,
    help="TLS, BasicAuth, BasicAuthRequireTLS, ExternalAuthoritative, ...",
)
@click.option("--max-message-size", type=int, default=None, help="Bytes.")
@click.option("--max-recipients", type=int, default=None, help="Recipients per message.")
@click.option("--max-header-size", type=int, default=None, help="Bytes.")
@click.option("--banner", default=None, help="SMTP greeting text.")
@click.option("--require-tls/--no-require-tls", default=None)
@click.option("--enabled/--disabled", default=None)
@click.option("--connection-timeout", type=float, default=None, help="Seconds.")
@click.option("--inactivity-timeout", type=float, default=None, help="Seconds.")
@click.option("--tarpit", type=float, default=None, help="AuthTarpitInterval, seconds.")
@click.option("--max-protocol-errors", type=int, default=None)
@click.option("--max-connections", type=int, default=None, help="MaxInboundConnection.")
@click.option(
    "--max-connections-per-source", type=int, default=None, help="MaxInboundConnectionPerSource."
)
@click.option("--new", "create", is_flag=True, help="Create the connector (New-ReceiveConnector).")
@data_dir_option
@json_option
@_domain_errors
def connector_receive_set(
    name: str,
    bindings: str | None,
    remote_ip_ranges: str | None,
    permission_groups: str | None,
    auth_mechanisms: str | None,
    max_message_size: int | None,
    max_recipients: int | None,
    max_header_size: int | None,
    banner: str | None,
    require_tls: bool | None,
    enabled: bool | None,
    connection_timeout: float | None,
    inactivity_timeout: float | None,
    tarpit: float | None,
    max_protocol_errors: int | None,
    max_connections: int | None,
    max_connections_per_source: int | None,
    create: bool,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Change a receive connector (Set-ReceiveConnector); `--new` creates one."""
    import ipaddress

    from postwerk.core.errors import InvalidName, NotFound
    from postwerk.store.records import ReceiveConnector

    for text in _split(remote_ip_ranges) or ():
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise InvalidName(f"invalid remote IP range {text!r}") from exc

    async def apply(c: _Ctx) -> ReceiveConnector:
        existing = {x.name: x for x in await c.backend.sql.directory.list_receive_connectors()}
        if create:
            if name in existing:
                raise InvalidName(f"receive connector {name!r} exists")
            if not bindings:
                raise InvalidName("--bindings is required with --new")
            base = ReceiveConnector(
                name=name,
                transport_role="FrontendTransport",
                bindings=(),
                remote_ip_ranges=("0.0.0.0/0", "::/0"),
                permission_groups=(),
                auth_mechanisms=("TLS",),
                max_message_size=36 * 1024 * 1024,
                max_recipients_per_message=200,
            )
        else:
            if name not in existing:
                raise NotFound(f"no receive connector named {name!r}")
            base = existing[name]
        changes: dict[str, Any] = {}
        for key, value in (
            ("bindings", _split(bindings)),
            ("remote_ip_ranges", _split(remote_ip_ranges)),
            ("permission_groups", _split(permission_groups)),
            ("auth_mechanisms", _split(auth_mechanisms)),
            ("max_message_size", max_message_size),
            ("max_recipients_per_message", max_recipients),
            ("max_header_size", max_header_size),
            ("banner", banner),
            ("require_tls", require_tls),
            ("enabled", enabled),
            ("connection_timeout", connection_timeout),
            ("connection_inactivity_timeout", inactivity_timeout),
            ("auth_tarpit_interval", tarpit),
            ("max_protocol_errors", max_protocol_errors),
            ("max_inbound_connections", max_connections),
            ("max_inbound_connections_per_source", max_connections_per_source),
        ):
            if value is not None:
                changes[key] = value
        updated = replace(base, **changes)
        await c.backend.sql.directory.put_receive_connector(updated)
        return updated

    result = _run(_with_backend(data_dir, apply))
    if as_json:
        _emit_json(_connector_json(result))
    else:
        click.echo(f"{'created' if create else 'updated'} receive connector {result.name}")


# ---------------------------------------------------------------- queues


@main.group()
def queue() -> None:
    """The queue viewer (Get-Queue, Get-Message, Suspend/Resume/Remove-Message, Retry-Queue)."""


@queue.command("list")
@data_dir_option
@json_option
def queue_list(data_dir: Path, as_json: bool) -> None:
    """List queues with their message counts."""
    result = _run(_with_backend(data_dir, lambda c: c.backend.sql.queue.summaries()))
    if as_json:
        _emit_json(
            [
                {
                    "name": q.name,
                    "status": q.status,
                    "count": q.count,
                    "last_error": q.last_error,
                    "next_retry": q.next_retry,
                }
                for q in result
            ]
        )
        return
    if not result:
        click.echo("all queues are empty")
    for q in result:
        click.echo(f"{q.name:30} {q.status:10} {q.count:>6}  {q.last_error}")


@queue.command("messages")
@data_dir_option
@json_option
def queue_messages(data_dir: Path, as_json: bool) -> None:
    """List queued messages with per-recipient status."""

    from postwerk.cli.queue_actions import message_json

    async def collect(c: _Ctx) -> list[dict[str, Any]]:
        return [
            message_json(m, await c.backend.sql.queue.recipients(m.id))
            for m in await c.backend.sql.queue.list_messages()
        ]

    rows = _run(_with_backend(data_dir, collect))
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']}  {row['sender'] or '<>'}  {row['subject']}")
        for r in row["recipients"]:
            click.echo(f"    {r['address']}  {r['status']}  {r['next_hop']}  {r['last_error']}")


# ---------------------------------------------------------------- tracking


def _parse_since(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return time.time() - int(text[:-1]) * units[text[-1]]
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise click.BadParameter("use an ISO date/time or a duration like 30m, 2h, 1d") from exc


@main.command()
@click.option("--sender", default=None)
@click.option("--recipient", default=None)
@click.option("--message-id", default=None, help="Internet Message-ID or internal queue id.")
@click.option("--event-id", default=None, help="RECEIVE, DELIVER, FAIL, ...")
@click.option("--since", default=None, help="ISO date/time, or a duration such as 2h.")
@click.option("--limit", type=int, default=1000, show_default=True)
@data_dir_option
@json_option
def track(
    sender: str | None,
    recipient: str | None,
    message_id: str | None,
    event_id: str | None,
    since: str | None,
    limit: int,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Search the message tracking log (Get-MessageTrackingLog)."""
    since_ts = _parse_since(since)
    result = _run(
        _with_backend(
            data_dir,
            lambda c: c.backend.sql.tracking.search(
                sender=sender,
                recipient=recipient,
                message_id=message_id,
                since=since_ts,
                event_id=event_id,
                limit=limit,
            ),
        )
    )
    if as_json:
        _emit_json(
            [
                {
                    "timestamp": e.timestamp,
                    "event_id": e.event_id,
                    "source": e.source,
                    "message_id": e.internet_message_id,
                    "internal_message_id": e.message_id,
                    "sender": e.sender,
                    "return_path": e.return_path,
                    "recipients": list(e.recipients),
                    "recipient_status": e.recipient_status,
                    "connector": e.connector,
                    "client_ip": e.client_ip,
                    "server_ip": e.server_ip,
                    "server_hostname": e.server_hostname,
                    "total_bytes": e.total_bytes,
                    "subject": e.subject,
                    "related_recipient": e.related_recipient,
                }
                for e in result
            ]
        )
        return
    for e in result:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.timestamp))
        click.echo(
            f"{when}  {e.event_id:8} {e.source:11} {e.sender or '<>'} -> "
            f"{', '.join(e.recipients)}  {e.subject[:40]}  {e.recipient_status}"
        )


# ---------------------------------------------------------------- config


@main.group()
def config() -> None:
    """The configuration file."""


@config.command("reference")
def config_reference() -> None:
    """Print the configuration reference (docs/configuration.md) generated from the model."""
    from postwerk.config.settings import render_reference

    click.echo(render_reference(), nl=False)


@config.command("show")
@data_dir_option
def config_show(data_dir: Path) -> None:
    """Print the effective configuration (file plus environment overrides)."""
    from postwerk.config.settings import render_toml

    click.echo(render_toml(_settings(data_dir)))


# Verb groups kept in their own modules; they use this module's helpers, so they are
# imported and attached last.
from postwerk.cli import queue_actions  # noqa: E402, F401  (registers on `queue`)
from postwerk.cli.send_connectors import connector_send  # noqa: E402

connector.add_command(connector_send)

from postwerk.cli.client_protocols import imap, pop  # noqa: E402

main.add_command(pop)
main.add_command(imap)

from postwerk.cli.placement import database, mailbox_move  # noqa: E402
from postwerk.cli.ports import ports, test_group  # noqa: E402
from postwerk.cli.servers import server  # noqa: E402

main.add_command(ports)
main.add_command(test_group)
main.add_command(server)
main.add_command(database)
mailbox.add_command(mailbox_move)

if __name__ == "__main__":
    # Run the imported module's group, which the verb modules above registered on
    # (under `python -m`, this file is a second module named __main__).
    from postwerk.cli.main import main as registered_main

    registered_main()
