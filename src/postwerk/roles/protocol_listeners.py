"""Client access listeners that admins switch on and off while the server runs.

Exchange 2013 ships POP3 and IMAP4 disabled; an admin starts the services and
sets their bindings and limits (Set-PopSettings, Set-ImapSettings). Here
`postwerk pop|imap enable|disable|settings` writes a `ProtocolSettings` row, and the
running server reads it every `poll_seconds` and reconciles its listeners:
enabled → listening on the configured ports (plus the port offset); disabled →
not listening, sessions hung up (nothing is deleted: POP3 deletes only at QUIT).
A settings change that keeps the ports applies to new connections at once; a
port change restarts the listeners. A setting that fails validation, or a port
that cannot be bound, is logged and retried at the next poll: it never stops
the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from postwerk.store.records import ProtocolSettings

log = structlog.get_logger("postwerk.protocols")

ReadSettings = Callable[[str], Awaitable[ProtocolSettings | None]]


class Listener(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace_seconds: float = ...) -> None: ...

    @property
    def bound_port(self) -> int: ...


class ServiceSettings(Protocol):
    @property
    def port(self) -> int: ...

    @property
    def ssl_port(self) -> int: ...


class ServiceContext(Protocol):
    settings: Any
    tls_context: ssl.SSLContext | None


# (context, host, port, implicit_tls) -> a listener of that service
MakeListener = Callable[[Any, str | None, int, bool], Listener]
ParseSettings = Callable[[Mapping[str, Any]], Any]


class ProtocolRuntime:
    """One protocol's listeners (plaintext/STARTTLS port and implicit-TLS port)."""

    def __init__(
        self,
        protocol: str,
        ctx: ServiceContext,
        read: ReadSettings,
        make_listener: MakeListener,
        parse: ParseSettings,
        *,
        host: str | None,
        port_offset: int,
        ephemeral_ports: bool = False,  # tests: let the kernel pick the ports
        poll_seconds: float = 2.0,
    ) -> None:
        self.protocol = protocol
        self.ctx = ctx
        self.read = read
        self.make_listener = make_listener
        self.parse = parse
        self.host = host
        self.port_offset = port_offset
        self.ephemeral_ports = ephemeral_ports
        self.poll_seconds = poll_seconds
        self.listeners: dict[int, Listener] = {}  # configured port → listener
        self._ports: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """No error at the last reconcile (a port that could not be bound, bad settings)."""
        return self._last_error is None

    @property
    def open_connections(self) -> int:
        counts = getattr(self.ctx, "by_ip", None)
        return int(counts.total) if counts is not None else 0

    @property
    def bound_ports(self) -> dict[int, int]:
        return {port: listener.bound_port for port, listener in self.listeners.items()}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.protocol}-settings")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile(await self.read(self.protocol))
            except Exception:
                log.exception("protocol_reconcile_failed", protocol=self.protocol)
            await asyncio.sleep(self.poll_seconds)

    async def reconcile(self, stored: ProtocolSettings | None) -> None:
        """Make the listeners match `stored` (None: never configured, i.e. disabled)."""
        if stored is None or not stored.enabled:
            if self.listeners:
                await self._close()
                log.info("protocol_disabled", protocol=self.protocol)
            return
        try:
            settings = self.parse(stored.settings)
        except ValueError as exc:
            self._report(f"invalid {self.protocol} settings: {exc}")
            return
        ports = (settings.port, settings.ssl_port)
        if self.listeners and ports == self._ports:
            self.ctx.settings = settings  # new connections see it; live ones keep theirs
            return
        await self._close()
        self.ctx.settings = settings
        try:
            await self._open(settings)
        except OSError as exc:
            await self._close()
            self._report(f"cannot listen for {self.protocol} on {ports}: {exc.strerror or exc}")
            return
        self._ports = ports
        self._last_error = None
        log.info("protocol_enabled", protocol=self.protocol, ports=self.bound_ports)

    async def _open(self, settings: ServiceSettings) -> None:
        plans: list[tuple[int, bool]] = [(settings.port, False)]
        if self.ctx.tls_context is not None:
            plans.append((settings.ssl_port, True))
        for port, implicit_tls in plans:
            listen = 0 if self.ephemeral_ports else port + self.port_offset
            listener = self.make_listener(self.ctx, self.host, listen, implicit_tls)
            await listener.start()
            self.listeners[port] = listener

    async def _close(self) -> None:
        listeners = list(self.listeners.values())
        self.listeners.clear()
        self._ports = None
        await asyncio.gather(*(listener.stop() for listener in listeners))

    def _report(self, error: str) -> None:
        if error != self._last_error:  # once per change, not once per poll
            log.error("protocol_not_started", protocol=self.protocol, error=error)
            self._last_error = error
