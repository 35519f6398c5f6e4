"""MailStore conformance for IMAP's folder operations: CREATE/RENAME/DELETE,
COPY/MOVE and subscriptions, with counters and MODSEQ checked after each."""

from __future__ import annotations

import random
from typing import Any

import pytest

from postwerk.core.errors import (
    AlreadyExists,
    DefaultFolderProtected,
    FolderHasChildren,
    FolderNotFound,
    InvalidName,
    ItemNotFound,
    NotFound,
    NotPermitted,
)
from postwerk.store.api import DEFAULT_FOLDERS
from postwerk.store.records import Flag, Folder, Item
from tests.conformance.test_mailstore import MBX, check_counters, new


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    """This store runs on PostgreSQL too (M4): memory, SQLite and PostgreSQL."""
    return backend_with_postgresql


async def folder(backend: Any, name: str, mailbox: int = MBX) -> Folder:
    found: Folder = await backend.mailstore.get_folder(mailbox, name)
    return found


async def names(backend: Any, mailbox: int = MBX) -> list[str]:
    return sorted(f.name for f in await backend.mailstore.list_folders(mailbox))


async def items(backend: Any, folder_id: int) -> list[Item]:
    found: list[Item] = await backend.mailstore.list_items(folder_id)
    return found


DEFAULT_NAMES = sorted(name for name, _, _ in DEFAULT_FOLDERS)

# ---------------------------------------------------------------- create


async def test_create_folder_with_parents(backend: Any) -> None:
    ms = backend.mailstore
    defaults = await ms.create_default_folders(MBX)
    created = await ms.create_folder(MBX, "Projects/2026/Q1")
    assert created.name == "Projects/2026/Q1"
    assert (created.container_class, created.special_use) == ("IPF.Note", None)
    assert created.is_mail
    assert (created.uidnext, created.highest_modseq) == (1, 1)
    assert (created.messages, created.unseen, created.size) == (0, 0, 0)
    # RFC 9051 §6.3.4: the superiors are created too.
    assert await names(backend) == sorted(
        [*DEFAULT_NAMES, "Projects", "Projects/2026", "Projects/2026/Q1"]
    )
    assert await folder(backend, "Projects/2026/Q1") == created
    # Every folder has its own UIDVALIDITY, never one handed out before.
    everything = await ms.list_folders(MBX)
    assert len({f.uidvalidity for f in everything}) == len(everything)
    assert min(f.uidvalidity for f in everything if f.name.startswith("Projects")) > max(
        f.uidvalidity for f in defaults
    )
    assert all(0 < f.uidvalidity < 2**32 for f in everything)
    # A sibling below existing parents creates only itself.
    await ms.create_folder(MBX, "Projects/2027")
    assert len(await ms.list_folders(MBX)) == len(everything) + 1
    # Other mailboxes are unaffected.
    assert await ms.list_folders(MBX + 1) == []


async def test_create_folder_below_inbox_any_spelling(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    created = await ms.create_folder(MBX, "inbox/Lists")
    assert created.name == "Inbox/Lists"
    assert (await folder(backend, "INBOX/Lists")).id == created.id
    with pytest.raises(AlreadyExists):
        await ms.create_folder(MBX, "InBoX/Lists")
    # Only the INBOX level is case-insensitive.
    lower = await ms.create_folder(MBX, "Inbox/lists")
    assert lower.id != created.id


async def test_create_folder_exists(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_folder(MBX, "Work")
    before = await ms.list_folders(MBX)
    for name in ("Work", "INBOX", "inbox", "Inbox", "Sent Items"):
        with pytest.raises(AlreadyExists):
            await ms.create_folder(MBX, name)
    # Names are case-sensitive except INBOX.
    await ms.create_folder(MBX, "work")
    await ms.create_folder(MBX, "sent items")
    assert len(await ms.list_folders(MBX)) == len(before) + 2
    # INBOX always exists, even in a mailbox without default folders.
    with pytest.raises(AlreadyExists):
        await ms.create_folder(MBX + 1, "INBOX")
    assert await ms.list_folders(MBX + 1) == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "/Work",
        "Work/",
        "a//b",
        ".",
        "..",
        "a/./b",
        "a/..",
        "tab\there",
        "nul\x00",
        "del\x7f",
        "c1\x85",
        "star*",
        "per%cent",
    ],
)
async def test_create_folder_invalid_names(backend: Any, name: str) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    before = await ms.list_folders(MBX)
    with pytest.raises(InvalidName):
        await ms.create_folder(MBX, name)
    assert await ms.list_folders(MBX) == before


async def test_create_folder_accepts_unicode_and_dots_inside(backend: Any) -> None:
    ms = backend.mailstore
    for name in ("Grüße", "a.b", "...x", "Rechnungen 2026/März", "日本語"):
        assert (await ms.create_folder(MBX, name)).name == name


# ---------------------------------------------------------------- rename


async def test_rename_folder_moves_subtree_keeping_identity(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_folder(MBX, "foo/bar/baz")
    await ms.create_folder(MBX, "foobar")  # shares the prefix, not a child
    await ms.deliver([new("foo/bar", size=10), new("foo/bar", size=20, flags=Flag.SEEN)])
    before = {f.name: f for f in await ms.list_folders(MBX)}
    items_before = await items(backend, before["foo/bar"].id)

    renamed = await ms.rename_folder(MBX, "foo", "zap/rag")
    # RFC 9051 §6.3.6: inferiors are renamed too; superiors of the new name created.
    assert await names(backend) == sorted(
        [*DEFAULT_NAMES, "foobar", "zap", "zap/rag", "zap/rag/bar", "zap/rag/bar/baz"]
    )
    assert renamed.name == "zap/rag"
    after = {f.name: f for f in await ms.list_folders(MBX)}
    for old, new_name in (("foo", "zap/rag"), ("foo/bar", "zap/rag/bar")):
        # Same folder: id, UIDVALIDITY, UIDNEXT, MODSEQ, counters; only the name differs.
        assert after[new_name] == Folder(**{**_fields(before[old]), "name": new_name})
    assert after["foobar"] == before["foobar"]
    assert after["zap"].uidvalidity not in {f.uidvalidity for f in before.values()}
    assert await items(backend, after["zap/rag/bar"].id) == items_before
    moved = await check_counters(backend, after["zap/rag/bar"].id)
    assert (moved.messages, moved.unseen, moved.size) == (2, 1, 30)
    with pytest.raises(FolderNotFound):
        await ms.get_folder(MBX, "foo/bar")
    # Delivery by the new name lands in the same folder, continuing its UIDs.
    (next_item,) = await ms.deliver([new("zap/rag/bar")])
    assert next_item.uid == 3


def _fields(f: Folder) -> dict[str, Any]:
    return {name: getattr(f, name) for name in Folder.__dataclass_fields__}


async def test_rename_folder_recreated_old_name_gets_new_uidvalidity(backend: Any) -> None:
    ms = backend.mailstore
    first = await ms.create_folder(MBX, "Old")
    await ms.deliver([new("Old")])
    await ms.rename_folder(MBX, "Old", "New")
    again = await ms.create_folder(MBX, "Old")
    # RFC 9051 §6.3.6: the new incarnation must not reuse UIDs under the old UIDVALIDITY.
    assert again.uidvalidity != first.uidvalidity
    assert again.id != first.id
    assert again.uidnext == 1


async def test_rename_folder_errors(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_folder(MBX, "a/b")
    await ms.create_folder(MBX, "c")
    before = await ms.list_folders(MBX)
    with pytest.raises(FolderNotFound):
        await ms.rename_folder(MBX, "nope", "x")
    with pytest.raises(FolderNotFound):
        await ms.rename_folder(MBX + 1, "a", "x")
    with pytest.raises(AlreadyExists):
        await ms.rename_folder(MBX, "a", "c")
    with pytest.raises(AlreadyExists):
        await ms.rename_folder(MBX, "a", "a")
    with pytest.raises(AlreadyExists):
        await ms.rename_folder(MBX, "c", "Sent Items")
    with pytest.raises(AlreadyExists):
        await ms.rename_folder(MBX, "c", "inbox")
    with pytest.raises(AlreadyExists):
        await ms.rename_folder(MBX, "a/b", "a")  # a superior always exists
    with pytest.raises(InvalidName):
        await ms.rename_folder(MBX, "a", "a/b/c")  # below itself
    for bad in ("", "x/", "x*", "../x"):
        with pytest.raises(InvalidName):
            await ms.rename_folder(MBX, "c", bad)
    assert await ms.list_folders(MBX) == before  # nothing half-done


async def test_rename_default_folders_refused(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_folder(MBX, "Inbox/Sub")
    before = await ms.list_folders(MBX)
    # Exchange lets nobody rename its default folders; RFC 9051's INBOX rename
    # (move the messages out) is not supported either.
    for name in [*DEFAULT_NAMES, "INBOX", "inbox"]:
        with pytest.raises(DefaultFolderProtected):
            await ms.rename_folder(MBX, name, "Renamed")
    assert issubclass(DefaultFolderProtected, NotPermitted)
    assert await ms.list_folders(MBX) == before
    # A folder below a default folder is an ordinary folder.
    assert (await ms.rename_folder(MBX, "INBOX/Sub", "Inbox/Other")).name == "Inbox/Other"
    assert (await ms.rename_folder(MBX, "Inbox/Other", "Top")).name == "Top"


# ---------------------------------------------------------------- delete


async def test_delete_folder_returns_unreferenced_blobs(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_default_folders(MBX + 1)
    await ms.create_folder(MBX, "Old")
    await ms.deliver(
        [
            new("Old", blob="own", key="k1"),
            new("Old", blob="own"),
            new("Old", blob="shared-inbox"),
            new("Old", blob="shared-other"),
            new("Inbox", blob="shared-inbox"),
        ]
    )
    await ms.deliver([new(blob="shared-other", mailbox=MBX + 1)])
    inbox_before = await folder(backend, "Inbox")
    assert sorted(await ms.delete_folder(MBX, "Old")) == ["own"]
    with pytest.raises(FolderNotFound):
        await ms.get_folder(MBX, "Old")
    assert await names(backend) == DEFAULT_NAMES
    assert await folder(backend, "Inbox") == inbox_before
    # The delivery key of a deleted item is free again.
    (again,) = await ms.deliver([new(key="k1")])
    assert again.folder_id == inbox_before.id
    with pytest.raises(FolderNotFound):
        await ms.delete_folder(MBX, "Old")
    # Recreated: new UIDVALIDITY, UIDs start over.
    recreated = await ms.create_folder(MBX, "Old")
    assert recreated.uidnext == 1


async def test_delete_folder_refusals(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_folder(MBX, "a/b")
    await ms.create_folder(MBX, "Inbox/Sub")
    await ms.deliver([new("a", blob="x")])
    before = await ms.list_folders(MBX)
    for name in [*DEFAULT_NAMES, "INBOX"]:
        with pytest.raises(DefaultFolderProtected):
            await ms.delete_folder(MBX, name)
    # RFC 9051 §6.3.5 would allow a \Noselect remnant; we refuse instead.
    with pytest.raises(FolderHasChildren):
        await ms.delete_folder(MBX, "a")
    assert issubclass(FolderHasChildren, NotPermitted)
    with pytest.raises(FolderNotFound):
        await ms.delete_folder(MBX + 1, "a")
    assert await ms.list_folders(MBX) == before
    # Leaves first, then the parent.
    assert await ms.delete_folder(MBX, "a/b") == []
    assert await ms.delete_folder(MBX, "a") == ["x"]
    assert await ms.delete_folder(MBX, "inbox/Sub") == []
    assert await names(backend) == DEFAULT_NAMES


# ---------------------------------------------------------------- copy and move


async def _two_folders(backend: Any) -> tuple[Folder, Folder, list[Item]]:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    dest = await ms.create_folder(MBX, "Archive")
    await ms.deliver([new("Archive", size=1)])  # dest's UIDNEXT is 2, not 1
    delivered = await ms.deliver(
        [
            new(size=10, key="k1", summary={"subject": "one"}),
            new(size=20, flags=Flag.SEEN | Flag.FLAGGED, keywords=("$Label1",)),
            new(size=30, blob="b3"),
            new(size=40, flags=Flag.SEEN),
        ]
    )
    return await folder(backend, "Inbox"), await folder(backend, dest.name), delivered


async def test_copy_items(backend: Any) -> None:
    ms = backend.mailstore
    source, dest, delivered = await _two_folders(backend)
    pairs = await ms.copy_items(source.id, [4, 99, 2, 1, 2], dest.id)
    assert pairs == [(1, 2), (2, 3), (4, 4)]  # source UID order; absent UIDs skipped
    # The source is untouched: same items, same counters, same MODSEQ.
    assert await folder(backend, "Inbox") == source
    assert await items(backend, source.id) == delivered
    after = await check_counters(backend, dest.id)
    assert after.uidnext == 5
    assert after.highest_modseq == dest.highest_modseq + 1  # one change
    assert (after.messages, after.unseen, after.size) == (4, 2, 1 + 10 + 20 + 40)
    assert after.uidvalidity == dest.uidvalidity
    copies = {i.uid: i for i in await items(backend, dest.id)}
    originals = {i.uid: i for i in delivered}
    for src_uid, new_uid in pairs:
        c, o = copies[new_uid], originals[src_uid]
        assert c.folder_id == dest.id and c.id != o.id
        assert c.modseq == after.highest_modseq
        assert c.delivery_key is None
        for field in (
            "mailbox_id",
            "item_class",
            "blob_id",
            "header_prefix",
            "size",
            "internal_date",
            "flags",
            "keywords",
            "summary",
        ):
            assert getattr(c, field) == getattr(o, field), field
    # The original keeps its delivery key: a redone delivery still finds it.
    (redone,) = await ms.deliver([new(key="k1")])
    assert redone == delivered[0]
    # Nothing found: nothing changes.
    assert await ms.copy_items(source.id, [99], dest.id) == []
    assert await ms.copy_items(source.id, [], dest.id) == []
    assert await folder(backend, "Archive") == after


async def test_copy_items_into_same_folder(backend: Any) -> None:
    ms = backend.mailstore
    source, _, _ = await _two_folders(backend)
    assert await ms.copy_items(source.id, [1, 3], source.id) == [(1, 5), (3, 6)]
    after = await check_counters(backend, source.id)
    assert (after.messages, after.uidnext) == (6, 7)
    assert after.highest_modseq == source.highest_modseq + 1


async def test_copied_items_are_independent(backend: Any) -> None:
    ms = backend.mailstore
    source, dest, _ = await _two_folders(backend)
    [(_, copy_uid)] = await ms.copy_items(source.id, [3], dest.id)
    await ms.set_flags(dest.id, [copy_uid], Flag.SEEN)
    assert (await ms.get_item(source.id, 3)).flags == 0
    assert await ms.expunge(source.id, [3]) == [3]
    assert (await ms.get_item(dest.id, copy_uid)).blob_id == "b3"
    await check_counters(backend, source.id)
    await check_counters(backend, dest.id)
    # The blob is still referenced by the copy, so deleting Inbox's items keeps it;
    # deleting the folder holding the copy releases it.
    assert await ms.delete_folder(MBX, "Archive") == ["b3"]


async def test_move_items(backend: Any) -> None:
    ms = backend.mailstore
    source, dest, delivered = await _two_folders(backend)
    pairs = await ms.move_items(source.id, [2, 1, 77], dest.id)
    assert pairs == [(1, 2), (2, 3)]
    src_after = await check_counters(backend, source.id)
    assert (src_after.messages, src_after.unseen, src_after.size) == (2, 1, 70)
    assert src_after.uidnext == source.uidnext  # expunge never lowers UIDNEXT
    assert src_after.highest_modseq == source.highest_modseq + 1  # RFC 7162: a change
    assert [i.uid for i in await items(backend, source.id)] == [3, 4]
    dest_after = await check_counters(backend, dest.id)
    assert (dest_after.messages, dest_after.unseen, dest_after.size) == (3, 2, 31)
    assert (dest_after.uidnext, dest_after.highest_modseq) == (4, dest.highest_modseq + 1)
    moved = {i.uid: i for i in await items(backend, dest.id)}
    for src_uid, new_uid in pairs:
        m, o = moved[new_uid], delivered[src_uid - 1]
        assert m.modseq == dest_after.highest_modseq
        assert (m.blob_id, m.flags, m.keywords, m.summary, m.size) == (
            o.blob_id,
            o.flags,
            o.keywords,
            o.summary,
            o.size,
        )
        assert (m.header_prefix, m.internal_date) == (o.header_prefix, o.internal_date)
    # The moved item keeps its delivery key: redoing that delivery finds it in Archive.
    (redone,) = await ms.deliver([new(key="k1")])
    assert (redone.folder_id, redone.uid) == (dest.id, 2)
    assert await check_counters(backend, source.id) == src_after
    for uid in (1, 2):
        with pytest.raises(ItemNotFound):
            await ms.get_item(source.id, uid)
    assert await ms.move_items(source.id, [1, 2], dest.id) == []
    assert await folder(backend, "Inbox") == src_after


async def test_move_items_within_one_folder(backend: Any) -> None:
    ms = backend.mailstore
    source, _, _ = await _two_folders(backend)
    assert await ms.move_items(source.id, [2, 4], source.id) == [(2, 5), (4, 6)]
    after = await check_counters(backend, source.id)
    assert [i.uid for i in await items(backend, source.id)] == [1, 3, 5, 6]
    assert (after.messages, after.unseen, after.size, after.uidnext) == (4, 2, 100, 7)
    assert after.highest_modseq == source.highest_modseq + 2


async def test_copy_and_move_folder_checks(backend: Any) -> None:
    ms = backend.mailstore
    source, dest, delivered = await _two_folders(backend)
    await ms.create_default_folders(MBX + 1)
    other = await folder(backend, "Inbox", MBX + 1)
    for op in (ms.copy_items, ms.move_items):
        with pytest.raises(FolderNotFound):
            await op(12345, [1], dest.id)
        with pytest.raises(FolderNotFound):
            await op(source.id, [1], 12345)
        with pytest.raises(NotPermitted):
            await op(source.id, [1], other.id)
    assert await items(backend, source.id) == delivered
    assert await folder(backend, "Inbox") == source
    assert await folder(backend, "Archive") == dest
    assert await folder(backend, "Inbox", MBX + 1) == other


@pytest.mark.parametrize("seed", [4, 5])
async def test_random_copy_move_keep_invariants(backend: Any, seed: int) -> None:
    rng = random.Random(seed)
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_folder(MBX, "A")
    await ms.create_folder(MBX, "A/B")
    fids = [(await folder(backend, n)).id for n in ("Inbox", "A", "A/B")]
    high = {f.id: (f.uidnext, f.highest_modseq) for f in await ms.list_folders(MBX)}
    for step in range(40):
        op = rng.choice(["deliver", "copy", "move", "flags", "expunge"])
        src, dst = rng.choice(fids), rng.choice(fids)
        present = [i.uid for i in await items(backend, src)]
        if op == "deliver" or not present:
            names_by_id = {f.id: f.name for f in await ms.list_folders(MBX)}
            await ms.deliver(
                [
                    new(names_by_id[src], size=rng.randint(1, 99), flags=rng.choice([0, 1]))
                    for _ in range(rng.randint(1, 3))
                ]
            )
        elif op in ("copy", "move"):
            uids = rng.sample(present, rng.randint(1, len(present)))
            pairs = await (ms.copy_items if op == "copy" else ms.move_items)(src, uids, dst)
            assert [p[0] for p in pairs] == sorted(uids), step
            assert [p[1] for p in pairs] == sorted(p[1] for p in pairs), step
        elif op == "flags":
            uids = rng.sample(present, rng.randint(1, len(present)))
            await ms.set_flags(src, uids, rng.choice([0, Flag.SEEN]))
        else:
            await ms.expunge(src, rng.sample(present, 1))
        for fid in fids:
            f = await check_counters(backend, fid)
            uidnext, modseq = high[fid]
            assert f.uidnext >= uidnext and f.highest_modseq >= modseq, step
            high[fid] = (f.uidnext, f.highest_modseq)
            uids_now = [i.uid for i in await items(backend, fid)]
            assert len(uids_now) == len(set(uids_now)), step


# ---------------------------------------------------------------- subscriptions


async def test_subscriptions(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    # create_default_folders subscribes nothing.
    assert await ms.list_subscriptions(MBX) == []
    await ms.subscribe(MBX, "Sent Items")
    await ms.subscribe(MBX, "INBOX")
    await ms.subscribe(MBX, "inbox/Later")
    await ms.subscribe(MBX, "Never/Created")  # RFC 9051 §6.3.7: need not exist
    await ms.subscribe(MBX, "Sent Items")  # idempotent
    assert await ms.list_subscriptions(MBX) == [
        "Inbox",
        "Inbox/Later",
        "Never/Created",
        "Sent Items",
    ]
    assert await ms.list_subscriptions(MBX + 1) == []
    await ms.unsubscribe(MBX, "inbox")
    with pytest.raises(NotFound):
        await ms.unsubscribe(MBX, "Inbox")
    with pytest.raises(NotFound):
        await ms.unsubscribe(MBX, "sent items")  # case-sensitive except INBOX
    with pytest.raises(NotFound):
        await ms.unsubscribe(MBX + 1, "Sent Items")
    for bad in ("", "a//b", "x%"):
        with pytest.raises(InvalidName):
            await ms.subscribe(MBX, bad)
    assert await ms.list_subscriptions(MBX) == ["Inbox/Later", "Never/Created", "Sent Items"]


async def test_subscriptions_outlive_folders_but_not_the_mailbox(backend: Any) -> None:
    ms = backend.mailstore
    await ms.create_default_folders(MBX)
    await ms.create_folder(MBX, "Old")
    await ms.subscribe(MBX, "Old")
    await ms.subscribe(MBX + 1, "Other")
    # RFC 9051 §6.3.7: the server must not remove a subscription on its own.
    await ms.rename_folder(MBX, "Old", "New")
    assert await ms.list_subscriptions(MBX) == ["Old"]
    await ms.delete_folder(MBX, "New")
    assert await ms.list_subscriptions(MBX) == ["Old"]
    # A deleted mailbox takes its subscriptions along (a new one starts clean).
    await ms.delete_mailbox(MBX)
    assert await ms.list_subscriptions(MBX) == []
    assert await ms.list_subscriptions(MBX + 1) == ["Other"]
