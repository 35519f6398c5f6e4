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

import ssl

import uvicorn
from starlette.types import ASGIApp

from postwerk.services.asgi import AsgiListener

DEFAULT_GRACEFUL_STOP = 5.0  # seconds open requests get at stop() before they are cancelled
DEFAULT_KEEP_ALIVE = 30.0  # an idle client connection is closed after this
# The request line and header fields together: Kerberos/Negotiate tokens and OWA
# cookies outgrow h11's 16 KiB (Exchange deployments raise IIS's MaxRequestBytes
# to 64 KiB for the same reason).
MAX_HEADER_BYTES = 64 * 1024


class HttpProxyListener(AsgiListener):
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
        super().__init__(config, name)
