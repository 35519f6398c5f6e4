"""MailStore conformance: UIDs, MODSEQs, counters, idempotent delivery."""

from __future__ import annotations

import random
from typing import Any

import pytest

from postwerk.core.errors import FolderNotFound, ItemNotFound
from postwerk.store.api import DEFAULT_FOLDERS
from postwerk.store.records import Flag, Folder, NewItem

MBX = 7


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    """This store runs on PostgreSQL too (M4): memory, SQLite and PostgreSQL."""
    return backend_with_postgresql


def new(
    folder: str = "Inbox",
    *,
    key: str | None = None,
    size: int = 100,
    flags: int = 0,
    blob: str = "b0",
    mailbox: int = MBX,
    **kw: Any,
) -> NewItem:
    return NewItem(
        mailbox_id=mailbox,
        folder_name=folder,
        item_class="IPM.Note",
        blob_id=blob,
        header_prefix=b"Return-Path: <a@example.com>\r\n",
        size=size,
        internal_date=1_700_000_000.5,
        flags=flags,
        delivery_key=key,
        **kw,
    )


async def inbox(backend: Any, mailbox: int = MBX) -> Folder:
    folder: Folder = await backend.mailstore.get_folder(mailbox, "Inbox")
    return folder


async def check_counters(backend: Any, folder_id: int, mailbox: int = MBX) -> Folder:
    """The invariant: counters equal what the items say."""
    folders: list[Folder] = await backend.mailstore.list_folders(mailbox)
    folder = next(f for f in folders if f.id == folder_id)
    items = await backend.mailstore.list_items(folder_id)
    assert folder.messages == len(items)
    assert folder.unseen == sum(1 for i in items if not i.flags & Flag.SEEN)
    assert folder.size == sum(i.size for i in items)
    assert all(i.uid < folder.uidnext for i in items)
    assert all(i.modseq <= folder.highest_modseq for i in items)
    assert await backend.mailstore.mailbox_size(mailbox) == sum(f.size for f in folders)
    return folder


async def test_default_folders_created_once(backend: Any) -> None:
    ms = backend.mailstore
    folders = await ms.create_default_folders(MBX)
    assert [(f.name, f.container_class, f.special_use) for f in folders] == list(DEFAULT_FOLDERS)
    assert all((f.uidnext, f.messages, f.unseen, f.size) == (1, 0, 0, 0) for f in folders)
    assert len({f.uidvalidity for f in folders}) == len(folders)
    assert all(0 < f.uidvalidity < 2**32 for f in folders)  # RFC 9051: nz-number
    again = await ms.create_default_folders(MBX)
    assert again == folders
    assert await ms.list_folders(MBX + 1) == []
    assert folders[1].is_mail and not folders[6].is_mail  # Drafts vs Calendar


async def test_get_folder_inbox_case_insensitive_only(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    for spelling in ("INBOX", "inbox", "InBoX", "Inbox"):
        assert (await ms.get_folder(MBX, spelling)).name == "Inbox"
    assert (await ms.get_folder(MBX, "Sent Items")).special_use == "\\Sent"
    with pytest.raises(FolderNotFound):
        await ms.get_folder(MBX, "sent items")
    with pytest.raises(FolderNotFound):
        await ms.get_folder(MBX + 1, "Inbox")


async def test_deliver_assigns_uids_modseq_and_counters(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    before = await inbox(backend)
    items = await ms.deliver(
        [new(size=10), new("INBOX", size=20, flags=Flag.SEEN), new(size=30, keywords=("b", "a"))]
    )
    assert [i.uid for i in items] == [1, 2, 3]
    assert all(i.folder_id == before.id for i in items)
    modseqs = [i.modseq for i in items]
    assert modseqs == sorted(modseqs) and len(set(modseqs)) == 3
    assert modseqs[0] > before.highest_modseq
    assert items[2].keywords == ("a", "b")
    after = await check_counters(backend, before.id)
    assert (after.messages, after.unseen, after.size, after.uidnext) == (3, 2, 60, 4)
    assert after.highest_modseq == modseqs[-1]
    assert after.uidvalidity == before.uidvalidity
    listed = await ms.list_items(before.id)
    assert listed == items  # what deliver returned is what a reader sees
    assert await ms.list_items(before.id, limit=2) == items[:2]
    got = await ms.get_item(before.id, 2)
    assert got.header_prefix == b"Return-Path: <a@example.com>\r\n"
    assert got.internal_date == 1_700_000_000.5


async def test_deliver_roundtrips_summary(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    summary = {"subject": "Grüße", "from": [["A", "a@example.com"]], "parts": {"n": 2}}
    (item,) = await ms.deliver([new(summary=summary)])
    assert item.summary == summary
    assert (await ms.get_item(item.folder_id, item.uid)).summary == summary


async def test_deliver_idempotent_per_mailbox_key(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_default_folders(MBX + 1)
    (first,) = await ms.deliver([new(key="msg1:rcpt1")])
    (again,) = await ms.deliver([new(key="msg1:rcpt1", size=999)])
    assert again == first
    # The same key in another mailbox is another delivery.
    (other,) = await ms.deliver([new(key="msg1:rcpt1", mailbox=MBX + 1)])
    assert other.mailbox_id == MBX + 1 and other.id != first.id
    # A repeat inside one batch also yields the first item.
    batch = await ms.deliver([new(key="k2"), new(key="k2"), new()])
    assert batch[0] == batch[1]
    assert [i.uid for i in batch] == [2, 2, 3]
    folder = await check_counters(backend, first.folder_id)
    assert folder.messages == 3


async def test_deliver_batch_all_or_nothing(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    with pytest.raises(FolderNotFound):
        await ms.deliver([new(key="x"), new("No Such Folder")])
    folder = await inbox(backend)
    assert (folder.messages, folder.uidnext) == (0, 1)
    assert await ms.list_items(folder.id) == []
    assert await ms.deliver([]) == []


async def test_uid_monotonic_after_expunge(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    items = await ms.deliver([new(size=5) for _ in range(3)])
    fid = items[0].folder_id
    modseq_before = (await inbox(backend)).highest_modseq
    assert await ms.expunge(fid, [3, 2, 99]) == [2, 3]
    after = await check_counters(backend, fid)
    assert (after.messages, after.size, after.uidnext) == (1, 5, 4)
    assert after.highest_modseq > modseq_before  # RFC 7162: expunge is a change
    (next_item,) = await ms.deliver([new()])
    assert next_item.uid == 4  # never reuses 2 or 3
    assert await ms.expunge(fid, [2]) == []
    with pytest.raises(ItemNotFound):
        await ms.get_item(fid, 2)


async def test_expunge_keeps_delivery_key_idempotent_only_while_present(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    (first,) = await ms.deliver([new(key="k")])
    await ms.expunge(first.folder_id, [first.uid])
    # Once the user deleted it, redoing the delivery is a new item (the key is free).
    (again,) = await ms.deliver([new(key="k")])
    assert again.uid == first.uid + 1


async def test_set_flags_counters_and_modseq(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    items = await ms.deliver([new() for _ in range(4)])
    fid = items[0].folder_id
    start = (await inbox(backend)).highest_modseq
    changed = await ms.set_flags(fid, [1, 3, 42], Flag.SEEN | Flag.FLAGGED, ["$Forwarded"])
    assert [i.uid for i in changed] == [1, 3]
    assert all(i.flags == Flag.SEEN | Flag.FLAGGED for i in changed)
    assert all(i.keywords == ("$Forwarded",) for i in changed)
    assert all(i.modseq > start for i in changed)
    folder = await check_counters(backend, fid)
    assert folder.unseen == 2
    assert folder.highest_modseq == changed[0].modseq
    assert await ms.get_item(fid, 1) == changed[0]
    untouched = await ms.get_item(fid, 2)
    assert untouched.modseq == items[1].modseq
    # Setting the same flags again changes nothing: no new MODSEQ.
    same = await ms.set_flags(fid, [1], Flag.SEEN | Flag.FLAGGED, ["$Forwarded"])
    assert same == [changed[0]]
    assert (await inbox(backend)).highest_modseq == folder.highest_modseq
    # Clearing \Seen counts as unseen again.
    cleared = await ms.set_flags(fid, [1, 2], Flag.DELETED)
    assert cleared[0].modseq > folder.highest_modseq
    folder = await check_counters(backend, fid)
    assert folder.unseen == 3
    assert (await ms.expunge(fid, [1, 2])) == [1, 2]
    folder = await check_counters(backend, fid)
    assert (folder.messages, folder.unseen) == (2, 1)


async def test_unknown_folder_and_item(backend: Any) -> None:
    ms = backend.mailstore
    with pytest.raises(FolderNotFound):
        await ms.list_items(12345)
    with pytest.raises(FolderNotFound):
        await ms.set_flags(12345, [1], Flag.SEEN)
    with pytest.raises(FolderNotFound):
        await ms.expunge(12345, [1])
    await ms.create_default_folders(MBX)
    folder = await inbox(backend)
    with pytest.raises(ItemNotFound):
        await ms.get_item(folder.id, 1)


async def test_folders_are_independent(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    a = await ms.deliver([new("Inbox"), new("Sent Items"), new("Inbox")])
    assert [i.uid for i in a] == [1, 1, 2]
    sent = await ms.get_folder(MBX, "Sent Items")
    assert (sent.messages, sent.uidnext) == (1, 2)


async def test_delete_mailbox_returns_unreferenced_blobs(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_default_folders(MBX + 1)
    await ms.deliver([new(blob="shared"), new(blob="own"), new("Drafts", blob="own2")])
    await ms.deliver([new(blob="shared", mailbox=MBX + 1)])
    orphans = await ms.delete_mailbox(MBX)
    assert sorted(orphans) == ["own", "own2"]
    assert await ms.list_folders(MBX) == []
    with pytest.raises(FolderNotFound):
        await ms.get_folder(MBX, "Inbox")
    other = await ms.get_folder(MBX + 1, "Inbox")
    assert other.messages == 1
    assert await ms.delete_mailbox(MBX + 1) == ["shared"]
    assert await ms.delete_mailbox(MBX + 1) == []
    # Recreated folders get a fresh UIDVALIDITY... and their UIDs start over.
    folders = await ms.create_default_folders(MBX)
    assert folders[0].uidnext == 1


async def test_mailbox_size_sums_every_folder_of_that_mailbox(backend: Any) -> None:
    # What quotas count (SMTP RCPT and delivery, IMAP QUOTA): every folder, one mailbox.
    ms = backend.mailstore
    assert await ms.mailbox_size(MBX) == 0  # no folders yet
    await ms.create_default_folders(MBX)
    await ms.create_default_folders(MBX + 1)
    assert await ms.mailbox_size(MBX) == 0
    items = await ms.deliver([new(size=10), new(size=20), new("Drafts", size=300)])
    await ms.deliver([new(size=4000, mailbox=MBX + 1)])
    assert await ms.mailbox_size(MBX) == 330
    await ms.create_folder(MBX, "Archive/2024")
    archive = await ms.get_folder(MBX, "Archive/2024")
    await ms.copy_items(items[0].folder_id, [items[1].uid], archive.id)
    assert await ms.mailbox_size(MBX) == 350  # a copy counts again (it is another item)
    await ms.move_items(items[0].folder_id, [items[0].uid], archive.id)
    assert await ms.mailbox_size(MBX) == 350  # a move does not
    await ms.expunge(items[0].folder_id, [items[1].uid])
    assert await ms.mailbox_size(MBX) == 330
    await ms.delete_folder(MBX, "Archive/2024")
    assert await ms.mailbox_size(MBX) == 300
    assert await ms.mailbox_size(MBX + 1) == 4000
    await ms.delete_mailbox(MBX)
    assert await ms.mailbox_size(MBX) == 0


async def test_recreated_mailbox_never_reuses_uidvalidity(backend: Any) -> None:
    ms = backend.mailstore
    first = await ms.create_default_folders(MBX)
    await ms.delete_mailbox(MBX)
    second = await ms.create_default_folders(MBX)
    # Same second, same names: UIDVALIDITY must still differ (RFC 9051 §2.3.1.1).
    assert not {f.uidvalidity for f in first} & {f.uidvalidity for f in second}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_operations_keep_invariants(backend: Any, seed: int) -> None:
    rng = random.Random(seed)
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    fid = (await inbox(backend)).id
    last_uidnext = 1
    last_modseq = (await inbox(backend)).highest_modseq
    for step in range(60):
        op = rng.choice(["deliver", "deliver", "flags", "expunge"])
        present = [i.uid for i in await ms.list_items(fid)]
        if op == "deliver" or not present:
            n = rng.randint(1, 4)
            await ms.deliver(
                [new(size=rng.randint(1, 500), flags=rng.choice([0, Flag.SEEN])) for _ in range(n)]
            )
        elif op == "flags":
            uids = rng.sample(present, rng.randint(1, len(present)))
            await ms.set_flags(fid, uids, rng.choice([0, Flag.SEEN, Flag.SEEN | Flag.DELETED]))
        else:
            uids = rng.sample(present, rng.randint(1, len(present)))
            assert await ms.expunge(fid, uids) == sorted(uids)
        folder = await check_counters(backend, fid)
        assert folder.uidnext >= last_uidnext, step
        assert folder.highest_modseq >= last_modseq, step
        last_uidnext, last_modseq = folder.uidnext, folder.highest_modseq
        uids_now = [i.uid for i in await ms.list_items(fid)]
        assert uids_now == sorted(uids_now)
