"""Folder snapshots (mailbox/folder_snapshots.py) and copy-on-write views."""

from __future__ import annotations

from collections.abc import Sequence

from postwerk.mailbox.folder_snapshots import FolderSnapshots, build
from postwerk.mailbox.imap_view import FolderView
from postwerk.store.memory.mailstore import MemoryMailStore
from postwerk.store.records import Flag, Folder, FolderChanges, ItemState
from tests.conformance.test_mailstore import MBX, new


class CountingStore(MemoryMailStore):
    """The memory store, counting the whole-folder reads a snapshot should avoid."""

    def __init__(self) -> None:
        super().__init__()
        self.full_reads = 0
        self.change_reads = 0

    async def item_states(self, folder_id: int) -> list[ItemState]:
        self.full_reads += 1
        return await super().item_states(folder_id)

    async def changes_since(self, folder_id: int, modseq: int) -> FolderChanges:
        self.change_reads += 1
        return await super().changes_since(folder_id, modseq)


async def _inbox(ms: MemoryMailStore) -> Folder:
    return await ms.get_folder(MBX, "Inbox")


async def _filled(n: int) -> tuple[CountingStore, Folder]:
    ms = CountingStore()
    await ms.create_default_folders(MBX)
    await ms.deliver([new(key=f"k{i}", flags=Flag.SEEN if i < 3 else 0) for i in range(n)])
    return ms, await _inbox(ms)


async def test_unchanged_folder_is_not_read_again() -> None:
    ms, inbox = await _filled(5)
    cache = FolderSnapshots(ms)
    first = await cache.get(inbox)
    again = await cache.get(await _inbox(ms))
    assert again is first and ms.full_reads == 1 and ms.change_reads == 0
    assert list(first.uids) == [1, 2, 3, 4, 5] and first.first_unseen == 4
    assert first.positions[4] == 4


async def test_stale_snapshot_is_advanced_by_changes_not_reread() -> None:
    ms, inbox = await _filled(5)
    cache = FolderSnapshots(ms)
    old = await cache.get(inbox)
    await ms.expunge(inbox.id, [2])
    await ms.set_flags(inbox.id, [4], Flag.SEEN)
    await ms.deliver([new(key="late")])
    fresh = await cache.get(await _inbox(ms))
    assert ms.full_reads == 1 and ms.change_reads == 1
    expected = build(inbox.id, fresh.modseq, await ms.item_states(inbox.id))
    assert fresh == expected
    assert list(fresh.uids) == [1, 3, 4, 5, 6] and fresh.first_unseen == 4
    assert list(old.uids) == [1, 2, 3, 4, 5]  # the published one is untouched


async def test_views_share_until_they_change() -> None:
    ms, inbox = await _filled(4)
    cache = FolderSnapshots(ms)
    snap = await cache.get(inbox)
    a = FolderView(inbox, snap, read_only=False)
    b = FolderView(inbox, snap, read_only=False)
    assert a.uids is b.uids is snap.uids
    changed = await ms.set_flags(inbox.id, [1], Flag.FLAGGED)
    a.update_states(i.state for i in changed)
    assert a.states[1].flags == Flag.FLAGGED
    assert b.states[1].flags == Flag.SEEN and snap.states[1].flags == Flag.SEEN
    await ms.expunge(inbox.id, [2])
    row = await _inbox(ms)
    b.apply(await ms.changes_since(inbox.id, b.modseq), row)
    assert b.flush_expunges() == [b"* 2 EXPUNGE\r\n"]
    assert list(b.uids) == [1, 3, 4] and list(snap.uids) == [1, 2, 3, 4]
    assert a.seq_of(4) == 4 and b.seq_of(4) == 3


async def test_cache_is_bounded() -> None:
    ms = CountingStore()
    await ms.create_default_folders(MBX)
    await ms.deliver([new(key=f"i{i}") for i in range(6)])
    await ms.deliver([new("Drafts", key=f"d{i}") for i in range(5)])
    cache = FolderSnapshots(ms, max_items=8)
    inbox, drafts = await _inbox(ms), await ms.get_folder(MBX, "Drafts")
    await cache.get(inbox)
    assert cache.cached_items == 6
    await cache.get(drafts)  # 6 + 5 > 8: the least recently used goes
    assert cache.cached_items == 5
    await cache.get(inbox)
    assert ms.full_reads == 3 and cache.cached_items == 6
    big = CountingStore()
    await big.create_default_folders(MBX)
    await big.deliver([new(key=f"b{i}") for i in range(9)])
    huge = FolderSnapshots(big, max_items=8)
    await huge.get(await _inbox(big))
    assert huge.cached_items == 0  # larger than the whole cache: never kept


def _states(uids: Sequence[int]) -> list[ItemState]:
    return [ItemState(u, 0, (), u) for u in uids]


def test_build_orders_by_uid() -> None:
    snap = build(1, 9, _states([5, 1, 3]))
    assert list(snap.uids) == [1, 3, 5] and snap.first_unseen == 1
    assert dict(snap.positions) == {1: 1, 3: 2, 5: 3}
