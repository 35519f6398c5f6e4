"""Per-process snapshots of folders' item states, so that SELECT of a folder whose
HIGHESTMODSEQ has not moved reads one folder row instead of every item.

Purpose: an IMAP SELECT needs every UID (sequence numbers) and every item's
flags. Reading 10,000 states from SQLite costs tens of milliseconds; a client
that re-selects its Inbox in a loop (most do, on every check) pays it each
time. A `FolderSnapshot` is the state of one folder at one HIGHESTMODSEQ; a
stale one is brought up to date with `MailStore.changes_since` (changed items
and tombstones since its MODSEQ), not re-read.

Invariants:
- A published snapshot is never mutated: views share its `uids` and `states`
  and copy them on their first change (`FolderView` is copy-on-write), so one
  session's change can never leak into another's numbering.
- `modseq` is the folder's HIGHESTMODSEQ read *before* the states it covers
  (as for `FolderView`): a change racing the read is applied again later,
  which is harmless.
- The cache holds at most `max_items` states in all (LRU by folder); a folder
  larger than that is never cached.

Sans-I/O except for the one store read each call makes; no locking is needed
on one event loop (a concurrent refresh of the same folder just publishes the
newer snapshot).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postwerk.mailbox.folder_sync import changes_for
from postwerk.store.api import MailStore
from postwerk.store.records import Flag, Folder, FolderChanges, ItemState

DEFAULT_MAX_ITEMS = 400_000  # about 60 MB of states per process


@dataclass(frozen=True, slots=True)
class FolderSnapshot:
    folder_id: int
    modseq: int
    uids: Sequence[int]  # ascending; never mutated once published
    states: Mapping[int, ItemState]
    first_unseen: int | None  # sequence number (1-based), None when all are seen
    positions: Mapping[int, int]  # UID -> sequence number


def build(folder_id: int, modseq: int, states: Sequence[ItemState]) -> FolderSnapshot:
    ordered = sorted(states, key=lambda s: s.uid)
    return FolderSnapshot(
        folder_id=folder_id,
        modseq=modseq,
        uids=[s.uid for s in ordered],
        states={s.uid: s for s in ordered},
        first_unseen=next((n for n, s in enumerate(ordered, 1) if not s.flags & Flag.SEEN), None),
        positions={s.uid: n for n, s in enumerate(ordered, 1)},
    )


def advance(old: FolderSnapshot, modseq: int, changes: FolderChanges) -> FolderSnapshot:
    """A new snapshot: `old` with `changes` applied (old is left as it was)."""
    states = dict(old.states)
    for uid in changes.expunged:
        states.pop(uid, None)
    for state in changes.changed:
        states[state.uid] = state
    return build(old.folder_id, max(modseq, old.modseq), list(states.values()))


class FolderSnapshots:
    """The cache: `get(folder)` returns a snapshot at least as new as `folder`'s row."""

    def __init__(self, mail: MailStore, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self._mail = mail
        self._max_items = max_items
        self._by_folder: OrderedDict[int, FolderSnapshot] = OrderedDict()
        self._items = 0

    @property
    def cached_items(self) -> int:
        return self._items

    async def get(self, folder: Folder) -> FolderSnapshot:
        """`folder` must be freshly read: its HIGHESTMODSEQ says how new the
        snapshot must be. FolderNotFound from the store passes through."""
        old = self._by_folder.get(folder.id)
        if old is not None and old.modseq >= folder.highest_modseq:
            self._by_folder.move_to_end(folder.id)
            return old
        if old is not None:
            changes = await changes_for(self._mail, folder.id, old.modseq, old.uids)
            new = advance(old, folder.highest_modseq, changes)
        else:
            states = await self._mail.item_states(folder.id)
            new = build(folder.id, folder.highest_modseq, states)
        self._publish(new)
        return new

    def forget(self, folder_id: int) -> None:
        old = self._by_folder.pop(folder_id, None)
        if old is not None:
            self._items -= len(old.uids)

    def _publish(self, snapshot: FolderSnapshot) -> None:
        current = self._by_folder.get(snapshot.folder_id)
        if current is not None and current.modseq > snapshot.modseq:
            return  # a newer one was published while this one was read
        self.forget(snapshot.folder_id)
        size = len(snapshot.uids)
        if size > self._max_items:
            return
        self._by_folder[snapshot.folder_id] = snapshot
        self._items += size
        while self._items > self._max_items:
            _, evicted = self._by_folder.popitem(last=False)
            self._items -= len(evicted.uids)
