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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from postwerk.observe import metrics
from postwerk.services.asgi import AsgiListener

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


class AdminListener(AsgiListener):
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
        super().__init__(config, "admin")
