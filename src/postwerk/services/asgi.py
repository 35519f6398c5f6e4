"""uvicorn serving one ASGI app on a socket of ours, inside the server's event loop.

Purpose: the admin listener (roles/admin.py) and the Client Access HTTP proxy's
listeners (frontend/http_listener.py) run Starlette apps on uvicorn without
letting uvicorn own the process: the socket is bound here, so a port in use is
an OSError in `start()` (uvicorn would log it and call `sys.exit` inside our
loop), and signals stay with the server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the server process handles the signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AsgiListener:
    """`config`'s app on (`config.host`, `config.port`); port 0 picks one (`bound_port`)."""

    def __init__(self, config: uvicorn.Config, name: str) -> None:
        self.name = name
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        config = self._server.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((config.host, config.port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._task = asyncio.create_task(self._server.serve([sock]), name=self.name)
        while not self._server.started:
            if self._task.done():
                self._task = None
                where = f"{config.host}:{config.port}"
                raise OSError(f"the {self.name} listener on {where} did not start")
            await asyncio.sleep(0.01)

    @property
    def bound_port(self) -> int:
        assert self._sock is not None, f"the {self.name} listener is not started"
        return int(self._sock.getsockname()[1])

    @property
    def connections(self) -> int:
        """Client connections open now (for the metrics gauge)."""
        return len(self._server.server_state.connections)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
