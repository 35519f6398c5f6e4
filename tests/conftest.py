"""Shared fixtures: a real all-in-one server on loopback with ephemeral ports, and its TLS trust."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

T = TypeVar("T")

DOMAIN = "example.test"
PASSWORD = "correct horse battery staple"


@dataclass
class RunningServer:
    """A server running in its own thread and event loop; tests talk to it over sockets."""

    data_dir: Path
    loop: asyncio.AbstractEventLoop
    server: Any
    ca: trustme.CA

    @property
    def smtp_port(self) -> int:
        return int(self.server.ports[25])

    @property
    def submission_port(self) -> int:
        return int(self.server.ports[587])

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def inbox(self, address: str) -> list[Any]:
        async def items() -> list[Any]:
            r = await self.server.directory.get(address)
            folder = await self.server.backend.sql.mailstore.get_folder(r.id, "Inbox")
            return list(await self.server.backend.sql.mailstore.list_items(folder.id))

        return self.call(items())

    def wait_inbox(self, address: str, count: int, timeout: float = 10) -> list[Any]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            items = self.inbox(address)
            if len(items) >= count or time.monotonic() > deadline:
                return items
            time.sleep(0.05)

    def read_item(self, item: Any) -> bytes:
        async def read() -> bytes:
            data: bytes = await self.server.backend.blobs.read(item.blob_id)
            return bytes(item.header_prefix) + data

        return self.call(read())


def postwerk_command() -> list[str]:
    """The `postwerk` command of this environment, for tests that run it as a process."""
    script = Path(sys.executable).with_name("postwerk")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "postwerk.cli.main"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["POSTWERK_LOGGING__LEVEL"] = "warning"
    env.pop("POSTWERK_DATA_DIR", None)
    return env


def wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll until `predicate()` is true; fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


def init_data_dir(
    data_dir: Path, ca: trustme.CA, domain: str = DOMAIN, extra: tuple[str, ...] = ()
) -> None:
    """`postwerk init` in-process (with `extra` options), a certificate from the test
    CA and cheap hashing."""
    from click.testing import CliRunner

    from postwerk.cli.main import main

    result = CliRunner().invoke(
        main,
        [
            "init",
            "--domain",
            domain,
            "--data-dir",
            str(data_dir),
            "--hostname",
            "mail.example.test",
            "--bind",
            "127.0.0.1",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    config = data_dir / "postwerk.toml"
    text = config.read_text().replace('argon2_profile = "default"', 'argon2_profile = "cheap"')
    config.write_text(text)
    # A subject CN as well: fetchmail still wants one beside the subjectAltNames.
    cert = ca.issue_cert("mail.example.test", "localhost", "127.0.0.1", common_name="localhost")
    cert.private_key_pem.write_to_path(str(data_dir / "tls" / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(data_dir / "tls" / "server.crt"))
    for pem in cert.cert_chain_pems[1:]:
        with open(data_dir / "tls" / "server.crt", "ab") as f:
            f.write(pem.bytes())


def cli(data_dir: Path, *args: str, input: str | None = None) -> str:
    from click.testing import CliRunner

    from postwerk.cli.main import main

    result = CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], input=input)
    assert result.exit_code == 0, result.output
    return result.output


def start_server(
    data_dir: Path,
    ca: trustme.CA,
    environ: dict[str, str] | None = None,
    tarpit_override: float | None = 0.05,
    port_offset: int | None = None,
) -> RunningServer:
    """Serve `data_dir`; `environ` holds `POSTWERK_<SECTION>__<FIELD>` settings overrides.
    Every port is the kernel's pick, unless `port_offset` is given: then the configured
    ports plus it, as `serve` does (for servers that find each other's ports through
    the directory)."""
    from postwerk.config.settings import load_settings
    from postwerk.roles.all_in_one import build

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            settings = load_settings(data_dir, environ or {})
            server = await build(settings, data_dir, port_offset or 0)
            server.ephemeral_ports = port_offset is None
            server.tarpit_override = tarpit_override
            server.lookup.ttl = 0.0  # see CLI changes (connectors, mailboxes, ...) at once
            if server.outbound is not None:
                # Never the machine's DNS: a port where nobody answers, so outbound mail
                # waits (transient 4.4.3) unless a test brings its own DNS (tests/dnsserver.py).
                from postwerk.transport.dns import DnsConfig, Resolver

                server.outbound.resolver = Resolver(
                    DnsConfig(nameservers=("127.0.0.1:9",), timeout=0.3)
                )
            await server.start()
            holder["server"] = server
            ready.set()

        loop.run_until_complete(boot())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "server did not start"
    return RunningServer(data_dir, loop, holder["server"], ca)


def stop_server(running: RunningServer) -> None:
    running.call(running.server.stop())
    running.loop.call_soon_threadsafe(running.loop.stop)


def populate(data_dir: Path) -> None:
    """Mailboxes alice and bob (password PASSWORD), alias al@ -> alice, group team@ of both."""
    for user in ("alice", "bob"):
        cli(
            data_dir,
            "mailbox",
            "new",
            f"{user}@{DOMAIN}",
            "--password-stdin",
            input=PASSWORD + "\n",
        )
    cli(data_dir, "alias", "add", f"alice@{DOMAIN}", f"al@{DOMAIN}")
    cli(data_dir, "group", "new", f"team@{DOMAIN}")
    cli(data_dir, "group", "add-member", f"team@{DOMAIN}", f"alice@{DOMAIN}")
    cli(data_dir, "group", "add-member", f"team@{DOMAIN}", f"bob@{DOMAIN}")


@pytest.fixture
def org(tmp_path: Path, ca: trustme.CA) -> Iterator[RunningServer]:
    """An initialized organization with mailboxes alice, bob, a group and an alias, serving."""
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)
    populate(data_dir)
    running = start_server(data_dir, ca)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def make_org(tmp_path: Path, ca: trustme.CA) -> Iterator[Callable[..., RunningServer]]:
    """Like `org`, for tests that need settings overrides or the real (untuned) AUTH tarpit:
    `make_org(environ={"POSTWERK_AUTH__TARPIT_SECONDS": "0.2"}, tarpit_override=None)`."""
    started: list[RunningServer] = []

    def make(
        environ: dict[str, str] | None = None, tarpit_override: float | None = 0.05
    ) -> RunningServer:
        data_dir = tmp_path / f"data{len(started)}"
        init_data_dir(data_dir, ca)
        populate(data_dir)
        running = start_server(data_dir, ca, environ, tarpit_override)
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            stop_server(running)


def python_exe() -> str:
    return sys.executable


os.environ.setdefault("POSTWERK_LOGGING__LEVEL", "warning")


def _quiet_logs() -> None:
    from postwerk.observe.logging import configure

    configure("warning", "console")


_quiet_logs()
