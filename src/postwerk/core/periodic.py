"""A job run every so often in the background of a running server.

Purpose: the housekeeping loops (tombstone pruning, the server's heartbeat)
share one shape — wait, run, log a failure and carry on, until stopped — and
one way to stop: cancel and wait, so that nothing runs after `stop` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("postwerk.server")


class PeriodicTask:
    def __init__(
        self,
        name: str,
        job: Callable[[], Awaitable[object]],
        interval: float,
        *,
        first_delay: float | None = None,  # None: one interval
    ) -> None:
        self.name = name
        self.job = job
        self.interval = interval
        self.first_delay = interval if first_delay is None else first_delay
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                await self.job()
            except Exception:
                # A failure is retried at the next round; it never stops the server.
                log.exception("periodic_task_failed", task=self.name)
            await asyncio.sleep(self.interval)
