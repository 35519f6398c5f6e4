"""MailStore conformance: item states, items by UID, changes since a MODSEQ
(RFC 7162's CHANGEDSINCE and QRESYNC tombstones)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from postwerk.core.errors import FolderNotFound
from postwerk.mailbox.folder_sync import changes_for
from postwerk.mime.summary import summarize
from postwerk.store.records import Flag, FolderChanges, ItemBrief, ItemHead, ItemState
from tests.conformance.test_mailstore import MBX, inbox, new


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    """This store runs on PostgreSQL too (M4): memory, SQLite and PostgreSQL."""
    return backend_with_postgresql


async def _five(backend: Any) -> int:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.deliver([new(key=f"k{n}", flags=Flag.SEEN if n == 2 else 0) for n in range(1, 6)])
    return (await inbox(backend)).id


async def test_item_states_match_items(backend: Any) -> None:
    ms = backend.mailstore
    fid = await _five(backend)
    await ms.set_flags(fid, [3], Flag.FLAGGED, ["$Label1", "Work"])
    states = await ms.item_states(fid)
    items = await ms.list_items(fid)
    assert states == [ItemState(i.uid, i.flags, i.keywords, i.modseq) for i in items]
    assert [s.uid for s in states] == [1, 2, 3, 4, 5]
    assert states[2].keywords == ("$Label1", "Work")
    assert states[1].flags == Flag.SEEN
    with pytest.raises(FolderNotFound):
        await ms.item_states(12345)


async def test_items_by_uid(backend: Any) -> None:
    ms = backend.mailstore
    fid = await _five(backend)
    everything = await ms.list_items(fid)
    assert await ms.items_by_uid(fid, [4, 2, 99, 2]) == [everything[1], everything[3]]
    assert await ms.items_by_uid(fid, []) == []
    assert await ms.items_by_uid(fid, range(1, 2000)) == everything  # more than one chunk
    with pytest.raises(FolderNotFound):
        await ms.items_by_uid(12345, [1])


async def test_item_briefs_and_heads(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    message = b"Subject: hi\r\nFrom: a@example.com\r\n\r\nbody\r\n"
    summary = summarize(message).to_json()
    await ms.deliver(
        [
            new(key="with", blob="b1", summary=summary, imap_envelope=b"(NIL)"),
            new(key="without"),  # no MIME summary, no stored ENVELOPE
        ]
    )
    fid = (await inbox(backend)).id
    prefix = b"Return-Path: <a@example.com>\r\n"
    date = 1_700_000_000.5
    assert await ms.item_briefs(fid, [2, 1, 7]) == [
        ItemBrief(1, 100, date, b"(NIL)"),
        ItemBrief(2, 100, date, None),
    ]
    assert await ms.item_heads(fid, [2, 1, 7]) == [
        ItemHead(1, "b1", prefix, len(b"Subject: hi\r\nFrom: a@example.com\r\n\r\n"), 100,
                 date, b"(NIL)"),
        ItemHead(2, "b0", prefix, 0, 100, date, None),
    ]  # fmt: skip
    assert await ms.item_heads(fid, []) == []
    with pytest.raises(FolderNotFound):
        await ms.item_heads(12345, [1])


async def test_changes_since(backend: Any) -> None:
    ms = backend.mailstore
    fid = await _five(backend)
    start = (await inbox(backend)).highest_modseq
    assert await ms.changes_since(fid, start) == FolderChanges([], [])
    everything = await ms.changes_since(fid, 0)
    assert [s.uid for s in everything.changed] == [1, 2, 3, 4, 5]
    assert everything.expunged == []

    await ms.set_flags(fid, [4], Flag.ANSWERED)
    after_flags = (await inbox(backend)).highest_modseq
    changes = await ms.changes_since(fid, start)
    assert [(s.uid, s.flags, s.modseq) for s in changes.changed] == [
        (4, Flag.ANSWERED, after_flags)
    ]

    assert await ms.expunge(fid, [2, 5]) == [2, 5]
    after_expunge = (await inbox(backend)).highest_modseq
    assert after_expunge > after_flags
    changes = await ms.changes_since(fid, start)
    assert [s.uid for s in changes.changed] == [4]
    assert changes.expunged == [2, 5]
    assert (await ms.changes_since(fid, after_flags)).expunged == [2, 5]
    assert await ms.changes_since(fid, after_expunge) == FolderChanges([], [])

    (added,) = await ms.deliver([new(key="k6")])
    changes = await ms.changes_since(fid, after_expunge)
    assert [s.uid for s in changes.changed] == [added.uid] and changes.expunged == []
    with pytest.raises(FolderNotFound):
        await ms.changes_since(12345, 0)


async def test_moves_leave_tombstones_in_the_source(backend: Any) -> None:
    ms = backend.mailstore
    fid = await _five(backend)
    archive = await ms.create_folder(MBX, "Archive")
    start = (await inbox(backend)).highest_modseq
    assert await ms.move_items(fid, [1, 3], archive.id) == [(1, 1), (3, 2)]
    changes = await ms.changes_since(fid, start)
    assert changes == FolderChanges([], [1, 3])
    moved = await ms.changes_since(archive.id, 0)
    assert [s.uid for s in moved.changed] == [1, 2] and moved.expunged == []
    # Within one folder: the old UIDs vanish, the new ones arrive.
    assert await ms.move_items(fid, [2], fid) == [(2, 6)]
    changes = await ms.changes_since(fid, start)
    assert [s.uid for s in changes.changed] == [6]
    assert changes.expunged == [1, 2, 3]


async def test_deleting_a_folder_drops_its_tombstones(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    made = await ms.create_folder(MBX, "Scratch")
    await ms.deliver([new("Scratch", key="s1"), new("Scratch", key="s2")])
    await ms.expunge(made.id, [1])
    assert (await ms.changes_since(made.id, 0)).expunged == [1]
    await ms.delete_folder(MBX, "Scratch")
    again = await ms.create_folder(MBX, "Scratch")
    assert await ms.changes_since(again.id, 0) == FolderChanges([], [])
    await ms.delete_mailbox(MBX)


async def test_folder_by_id(backend: Any) -> None:
    ms = backend.mailstore
    fid = await _five(backend)
    assert await ms.folder_by_id(fid) == await inbox(backend)
    assert await ms.folder_by_id(12345) is None
    await ms.create_default_folders(MBX + 1)
    other = await ms.get_folder(MBX + 1, "Inbox")
    assert (await ms.folder_by_id(other.id)) == other


async def test_uids_in_range(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.deliver(
        [
            replace(new(key=f"k{n}", size=100 * n), internal_date=1_700_000_000.0 + 3600 * n)
            for n in range(1, 6)
        ]
    )
    fid = (await inbox(backend)).id
    assert await ms.uids_in_range(fid, "size", 200, None) == [2, 3, 4, 5]
    assert await ms.uids_in_range(fid, "size", None, 300) == [1, 2]
    assert await ms.uids_in_range(fid, "size", 200, 400) == [2, 3]
    assert await ms.uids_in_range(fid, "size", None, None) == [1, 2, 3, 4, 5]
    t = 1_700_000_000.0
    assert await ms.uids_in_range(fid, "internal_date", t + 7200, t + 3 * 3600 + 1) == [2, 3]
    assert await ms.uids_in_range(fid, "internal_date", t + 10 * 3600, None) == []
    with pytest.raises(FolderNotFound):
        await ms.uids_in_range(12345, "size", None, None)


async def test_set_flags_unchanged_since(backend: Any) -> None:
    """RFC 7162 STORE UNCHANGEDSINCE, decided inside the store's write."""
    ms = backend.mailstore
    fid = await _five(backend)
    before = (await inbox(backend)).highest_modseq
    await ms.set_flags(fid, [2], Flag.FLAGGED)  # another session's change
    found = await ms.set_flags(fid, [1, 2, 3], Flag.ANSWERED, unchanged_since=before)
    assert [(i.uid, i.flags) for i in found] == [
        (1, Flag.ANSWERED),
        (2, Flag.FLAGGED),  # changed after `before`: left alone
        (3, Flag.ANSWERED),
    ]
    assert found[0].modseq == found[2].modseq > found[1].modseq > before
    # Without the condition (or with a recent enough one) it changes.
    now = (await inbox(backend)).highest_modseq
    [two] = await ms.set_flags(fid, [2], Flag.ANSWERED, unchanged_since=now)
    assert two.flags == Flag.ANSWERED


async def test_prune_expunged_marks_changes_incomplete(backend: Any) -> None:
    ms = backend.mailstore
    fid = await _five(backend)
    start = (await inbox(backend)).highest_modseq
    await ms.expunge(fid, [2])
    middle = (await inbox(backend)).highest_modseq
    assert await ms.prune_expunged(time.time() - 3600) == 0  # nothing that old
    assert (await ms.changes_since(fid, start)) == FolderChanges([], [2])
    assert await ms.prune_expunged(time.time() + 1) == 1
    await ms.expunge(fid, [4])  # after the pruning: kept
    # From before the pruned tombstone: incomplete, the newer tombstone still listed.
    changes = await ms.changes_since(fid, start)
    assert (changes.expunged, changes.complete) == ([4], False)
    # From after it: complete.
    assert await ms.changes_since(fid, middle) == FolderChanges([], [4])
    # Pruning again keeps the mark at the highest pruned MODSEQ.
    assert await ms.prune_expunged(time.time() + 1) == 1
    assert (await ms.changes_since(fid, middle)).complete is False
    now = (await inbox(backend)).highest_modseq
    assert await ms.changes_since(fid, now) == FolderChanges([], [])


async def test_changes_for_after_pruning(backend: Any) -> None:
    ms = backend.mailstore
    fid = await _five(backend)
    start = (await inbox(backend)).highest_modseq
    await ms.expunge(fid, [1, 3])
    await ms.set_flags(fid, [5], Flag.FLAGGED)
    await ms.prune_expunged(time.time() + 1)
    changes = await changes_for(ms, fid, start, [1, 2, 3, 4, 5, 6])
    assert changes.complete
    assert changes.expunged == [1, 3, 6]  # every known UID not in the folder
    assert [s.uid for s in changes.changed] == [5]
