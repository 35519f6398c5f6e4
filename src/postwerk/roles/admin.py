"""The admin listener: `/healthz` (live and ready, per role) and `/metrics`
(Prometheus), on loopback by default (`[admin]`, port 9025 + offset).

Purpose: what an orchestrator's probes and a Prometheus scraper ask of a
running server. A Starlette app served by uvicorn inside the server's own
event loop (library-evaluation.md: the stack the web services will use too).

- `GET /healthz`: 200 when every role this process hosts is ready, else 503;
  the body says, per role, `live` (the process answers: always true when
  you get a body) and `ready` with the checks behind it: for `cas`, its SMTP
  listeners are open; for `mailbox`, the database answers a read and the
  transport service runs. `?role=cas` narrows it to one role.
- `GET /metrics`: the process's registry (observe/metrics.py), with the
  connection and queue gauges refreshed first.

Invariants: nothing here writes; the listener never takes SIGTERM/SIGINT
from the server (uvicorn's own signal handling is switched off); a failing
check makes that role not ready, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from postwerk.observe import metrics

log = structlog.get_logger("postwerk.admin")

Check = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class AdminProbes:
    """What the endpoints ask the server: named readiness checks per role, and
    the scrape-time numbers (connections per service, messages per queue)."""

    checks: Mapping[str, Mapping[str, Check]]  # role -> check name -> check
    connections: Callable[[], Mapping[str, int]]
    queues: Callable[[], Awaitable[Mapping[str, int]]]


def admin_app(probes: AdminProbes) -> Starlette:
    async def healthz(request: Request) -> Response:
        wanted = request.query_params.get("role")
        roles = {r: c for r, c in probes.checks.items() if wanted in (None, r)}
        if not roles:
            return JSONResponse({"error": f"no role {wanted!r} on this server"}, status_code=404)
        body: dict[str, object] = {}
        ready_all = True
        for role, checks in roles.items():
            results = {name: await _run_check(role, name, check) for name, check in checks.items()}
            ready = all(results.values())
            ready_all &= ready
            body[role] = {"live": True, "ready": ready, "checks": results}
        status = "ready" if ready_all else "not ready"
        return JSONResponse(
            {"status": status, "roles": body}, status_code=200 if ready_all else 503
        )

    async def metrics_endpoint(request: Request) -> Response:
        try:
            queues = await probes.queues()
        except Exception:
            log.exception("metrics_queue_read_failed")
            queues = {}
        metrics.refresh(probes.connections(), queues)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ]
    )


async def _run_check(role: str, name: str, check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), timeout=5.0)
    except Exception:
        log.warning("health_check_failed", role=role, check=name, exc_info=True)
        return False


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the server process handles the signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AdminListener:
    def __init__(self, probes: AdminProbes, host: str, port: int) -> None:
        config = uvicorn.Config(
            admin_app(probes),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="none",
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        # The socket is ours: a port in use is an OSError here, where uvicorn would
        # log it and raise SystemExit inside the server's event loop.
        config = self._server.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.host, config.port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._task = asyncio.create_task(self._server.serve([sock]), name="admin-listener")
        while not self._server.started:
            if self._task.done():
                self._task = None
                raise OSError(f"the admin listener on {config.host}:{config.port} did not start")
            await asyncio.sleep(0.01)

    @property
    def bound_port(self) -> int:
        assert self._sock is not None, "the admin listener is not started"
        return int(self._sock.getsockname()[1])

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
