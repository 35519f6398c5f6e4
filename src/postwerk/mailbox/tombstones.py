"""Pruning expunge tombstones: a periodic task of the server hosting a mailbox store.

Purpose: every expunged or moved-away UID leaves a tombstone (folder, UID,
MODSEQ, time) so that IMAP sessions and QRESYNC clients learn exactly what
vanished. Kept for ever they would grow with every deletion; kept for
`retention_days` (the `[database] tombstone_days` setting, 30 by default)
they cover any client that syncs at least that often. A client that comes
back later still gets a correct answer, computed by comparing UIDs
(`mailbox/folder_sync.py`), at the cost of one read of the folder's states.

Runs once shortly after start and then every `interval` seconds; a failure
is logged and retried at the next round, never fatal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from postwerk.core.periodic import PeriodicTask
from postwerk.store.api import MailStore

log = structlog.get_logger("postwerk.mailbox")

DAY = 86_400.0


class TombstonePruner:
    def __init__(
        self,
        mail: MailStore,
        retention_days: float,
        *,
        interval: float = 3600.0,
        first_delay: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mail = mail
        self.retention = retention_days * DAY
        self.clock = clock
        self._periodic = PeriodicTask(
            "tombstone-pruner", self.prune_once, interval, first_delay=first_delay
        )

    async def prune_once(self) -> int:
        """Forget the tombstones older than the retention; returns how many."""
        pruned = await self.mail.prune_expunged(self.clock() - self.retention)
        if pruned:
            log.info("tombstones_pruned", count=pruned)
        return pruned

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
