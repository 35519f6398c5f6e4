"""The periodic tombstone pruning (mailbox/tombstones.py) over the memory store."""

from __future__ import annotations

import asyncio
import time

from postwerk.mailbox.tombstones import DAY, TombstonePruner
from postwerk.store.memory.mailstore import MemoryMailStore
from tests.conformance.test_mailstore import MBX, new


async def _store_with_tombstones() -> tuple[MemoryMailStore, int]:
    ms = MemoryMailStore()
    await ms.create_default_folders(MBX)
    await ms.deliver([new(key=f"k{n}") for n in range(3)])
    folder = await ms.get_folder(MBX, "Inbox")
    await ms.expunge(folder.id, [1, 2])
    return ms, folder.id


async def test_prunes_only_what_is_older_than_the_retention() -> None:
    ms, fid = await _store_with_tombstones()
    now = [time.time()]
    pruner = TombstonePruner(ms, retention_days=30, clock=lambda: now[0])
    assert await pruner.prune_once() == 0  # written just now
    now[0] += 31 * DAY
    assert await pruner.prune_once() == 2
    assert (await ms.changes_since(fid, 0)).complete is False


async def test_runs_in_the_background_and_stops() -> None:
    ms, fid = await _store_with_tombstones()
    pruner = TombstonePruner(ms, retention_days=-1, interval=0.01, first_delay=0)
    pruner.start()
    for _ in range(100):
        if not (await ms.changes_since(fid, 0)).complete:
            break
        await asyncio.sleep(0.01)
    await pruner.stop()
    assert (await ms.changes_since(fid, 0)).complete is False
    await pruner.stop()  # idempotent
