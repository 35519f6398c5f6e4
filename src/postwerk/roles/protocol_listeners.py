"""Client access listeners that admins switch on and off while the server runs.

Exchange 2013 ships POP3 and IMAP4 disabled; an admin starts the services and
sets their bindings and limits (Set-PopSettings, Set-ImapSettings). Here
`postwerk pop enable|disable|settings` writes a `ProtocolSettings` row, and the
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
from collections.abc import Awaitable, Callable

import structlog

from postwerk.services.pop3 import Pop3Context, Pop3Listener, Pop3Settings
from postwerk.store.records import ProtocolSettings

log = structlog.get_logger("postwerk.protocols")

ReadSettings = Callable[[str], Awaitable[ProtocolSettings | None]]


class Pop3Runtime:
    """The POP3 listeners (110 with STLS, 995 with TLS) of one server."""

    def __init__(
        self,
        ctx: Pop3Context,
        read: ReadSettings,
        *,
        host: str | None,
        port_offset: int,
        ephemeral_ports: bool = False,  # tests: let the kernel pick the ports
        poll_seconds: float = 2.0,
    ) -> None:
        self.ctx = ctx
        self.read = read
        self.host = host
        self.port_offset = port_offset
        self.ephemeral_ports = ephemeral_ports
        self.poll_seconds = poll_seconds
        self.listeners: dict[int, Pop3Listener] = {}  # configured port → listener
        self._ports: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    @property
    def bound_ports(self) -> dict[int, int]:
        return {port: listener.bound_port for port, listener in self.listeners.items()}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pop3-settings")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile(await self.read("pop3"))
            except Exception:
                log.exception("pop3_reconcile_failed")
            await asyncio.sleep(self.poll_seconds)

    async def reconcile(self, stored: ProtocolSettings | None) -> None:
        """Make the listeners match `stored` (None: never configured, i.e. disabled)."""
        if stored is None or not stored.enabled:
            if self.listeners:
                await self._close()
                log.info("pop3_disabled")
            return
        try:
            settings = Pop3Settings.from_mapping(stored.settings)
        except ValueError as exc:
            self._report(f"invalid POP3 settings: {exc}")
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
            self._report(f"cannot listen for POP3 on {ports}: {exc.strerror or exc}")
            return
        self._ports = ports
        self._last_error = None
        log.info("pop3_enabled", ports=self.bound_ports, login_type=settings.login_type.value)

    async def _open(self, settings: Pop3Settings) -> None:
        plans: list[tuple[int, bool]] = [(settings.port, False)]
        if self.ctx.tls_context is not None:
            plans.append((settings.ssl_port, True))
        for port, implicit_tls in plans:
            listen = 0 if self.ephemeral_ports else port + self.port_offset
            listener = Pop3Listener(self.ctx, self.host, listen, implicit_tls=implicit_tls)
            await listener.start()
            self.listeners[port] = listener

    async def _close(self) -> None:
        listeners = list(self.listeners.values())
        self.listeners.clear()
        self._ports = None
        await asyncio.gather(*(listener.stop() for listener in listeners))

    def _report(self, error: str) -> None:
        if error != self._last_error:  # once per change, not once per poll
            log.error("pop3_not_started", error=error)
            self._last_error = error
