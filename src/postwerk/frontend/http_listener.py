"""A listener for the Client Access HTTP proxy (frontend/http_proxy.py): uvicorn
serving one ASGI app on one socket of ours, with or without TLS, inside the
server's event loop.

Purpose: what roles/admin.py does for the admin endpoints, with the settings a
public-facing proxy needs: TLS from our own `ssl.SSLContext`
(services/tls.server_context), the peer address taken from the socket only
(uvicorn's X-Forwarded-For handling off: the proxy sets that field itself), no
`Server` header, HTTP/1.1 through h11 and no WebSocket upgrades, and a bounded
graceful stop (long polls would otherwise hold `stop()` for up to an hour).
The 443 and 80 listeners are two instances over the same app.

Invariants: the socket is bound by us in `start()`, so a port in use is an
OSError there (uvicorn would log and call `sys.exit` inside the server's loop);
the listener never takes SIGTERM/SIGINT (the server process handles them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

DEFAULT_GRACEFUL_STOP = 5.0  # seconds open requests get at stop() before they are cancelled
DEFAULT_KEEP_ALIVE = 30.0  # an idle client connection is closed after this
# The request line and header fields together: Kerberos/Negotiate tokens and OWA
# cookies outgrow h11's 16 KiB (Exchange deployments raise IIS's MaxRequestBytes
# to 64 KiB for the same reason).
MAX_HEADER_BYTES = 64 * 1024


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the server process handles the signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpProxyListener:
    """`app` served on (`host`, `port`); HTTPS when `tls` is given. Port 0 picks an
    ephemeral port (`bound_port` tells which)."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        *,
        name: str = "http-proxy",
        graceful_stop: float = DEFAULT_GRACEFUL_STOP,
        keep_alive: float = DEFAULT_KEEP_ALIVE,
    ) -> None:
        self.name = name
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http="h11",
            ws="none",
            lifespan="off",
            loop="none",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=True,
            timeout_keep_alive=int(keep_alive),
            timeout_graceful_shutdown=int(graceful_stop),
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        # Our context (services/tls.server_context: TLS 1.2+, no renegotiation) in place
        # of the one uvicorn would build from file names: `serve` loads a config only
        # once, and reads `ssl` when it opens the socket.
        config.load()
        config.ssl = tls
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
