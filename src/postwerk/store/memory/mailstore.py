"""MailStore in dicts, for unit tests. Same semantics as `store.sqlite.mailstore`.

Every method runs without awaiting in between, so each is atomic on the loop,
which is what one SQL transaction gives the SQLite backend.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

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
from postwerk.store.api import (
    DEFAULT_FOLDER_NAMES,
    DEFAULT_FOLDERS,
    check_folder_name,
    folder_key,
    folder_parents,
    is_below,
)
from postwerk.store.records import (
    Flag,
    Folder,
    FolderChanges,
    Item,
    ItemBrief,
    ItemHead,
    ItemRange,
    ItemState,
    NewItem,
)


def _keywords(keywords: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(keywords)))


def _unseen(flags: int) -> int:
    return 0 if flags & Flag.SEEN else 1


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    # The SQL backends store summaries as JSON; do the same so a value that
    # would not survive there fails here too.
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


class MemoryMailStore:
    def __init__(self) -> None:
        self._folders: dict[int, Folder] = {}
        self._items: dict[int, dict[int, Item]] = {}  # folder id -> uid -> item
        self._keys: dict[tuple[int, str], Item] = {}  # (mailbox, delivery_key) -> item
        self._next_folder = 1
        self._next_item = 1
        self._last_uidvalidity = 0
        self._subscriptions: dict[int, set[str]] = {}  # mailbox -> names
        self._expunged: dict[int, dict[int, int]] = {}  # folder id -> uid -> modseq
        self._expunged_at: dict[tuple[int, int], float] = {}  # (folder id, uid) -> time
        self._pruned: dict[int, int] = {}  # folder id -> highest MODSEQ pruned

    async def create_default_folders(self, mailbox_id: int) -> list[Folder]:
        existing = {f.name for f in self._folders.values() if f.mailbox_id == mailbox_id}
        uidvalidity = max(int(time.time()), self._last_uidvalidity + 1)
        for name, container_class, special_use in DEFAULT_FOLDERS:
            if name in existing:
                continue
            fid = self._next_folder
            self._next_folder += 1
            self._folders[fid] = Folder(
                id=fid,
                mailbox_id=mailbox_id,
                name=name,
                container_class=container_class,
                special_use=special_use,
                uidvalidity=uidvalidity,
                uidnext=1,
                highest_modseq=1,
                messages=0,
                unseen=0,
                size=0,
            )
            self._items[fid] = {}
            self._last_uidvalidity = uidvalidity
            uidvalidity += 1
        return await self.list_folders(mailbox_id)

    async def list_folders(self, mailbox_id: int) -> list[Folder]:
        return [
            self._folders[i]
            for i in sorted(self._folders)
            if self._folders[i].mailbox_id == mailbox_id
        ]

    async def get_folder(self, mailbox_id: int, name: str) -> Folder:
        found = self._find(mailbox_id, name)
        if found is None:
            raise FolderNotFound(f"folder {name!r} not found in mailbox {mailbox_id}")
        return found

    def _find(self, mailbox_id: int, name: str) -> Folder | None:
        key = folder_key(name)
        for f in self._folders.values():
            if f.mailbox_id == mailbox_id and f.name == key:
                return f
        return None

    async def folder_by_id(self, folder_id: int) -> Folder | None:
        return self._folders.get(folder_id)

    async def mailbox_size(self, mailbox_id: int) -> int:
        return sum(f.size for f in self._folders.values() if f.mailbox_id == mailbox_id)

    async def deliver(self, items: Sequence[NewItem]) -> list[Item]:
        # Check every folder first: a batch lands whole or not at all.
        targets: list[int] = []
        for new in items:
            f = self._find(new.mailbox_id, new.folder_name)
            if f is None:
                raise FolderNotFound(
                    f"folder {new.folder_name!r} not found in mailbox {new.mailbox_id}"
                )
            targets.append(f.id)
        out: list[Item] = []
        for new, fid in zip(items, targets, strict=True):
            if new.delivery_key is not None:
                existing = self._keys.get((new.mailbox_id, new.delivery_key))
                if existing is not None:
                    out.append(existing)
                    continue
            f = self._folders[fid]
            f = replace(
                f,
                uidnext=f.uidnext + 1,
                highest_modseq=f.highest_modseq + 1,
                messages=f.messages + 1,
                unseen=f.unseen + _unseen(new.flags),
                size=f.size + new.size,
            )
            self._folders[fid] = f
            stored = Item(
                id=self._next_item,
                mailbox_id=new.mailbox_id,
                folder_id=fid,
                uid=f.uidnext - 1,
                item_class=new.item_class,
                blob_id=new.blob_id,
                header_prefix=new.header_prefix,
                size=new.size,
                internal_date=new.internal_date,
                flags=new.flags,
                keywords=_keywords(new.keywords),
                modseq=f.highest_modseq,
                summary=_json_copy(new.summary),
                delivery_key=new.delivery_key,
                imap_envelope=new.imap_envelope,
            )
            self._next_item += 1
            self._items[fid][stored.uid] = stored
            if new.delivery_key is not None:
                self._keys[(new.mailbox_id, new.delivery_key)] = stored
            out.append(stored)
        return out

    async def list_items(self, folder_id: int, limit: int | None = None) -> list[Item]:
        items = list(self._folder_items(folder_id).values())  # uid order: uids only grow
        return items if limit is None else items[:limit]

    async def get_item(self, folder_id: int, uid: int) -> Item:
        found = self._folder_items(folder_id).get(uid)
        if found is None:
            raise ItemNotFound(f"uid {uid} not found in folder {folder_id}")
        return found

    async def item_states(self, folder_id: int) -> list[ItemState]:
        return [i.state for i in self._folder_items(folder_id).values()]

    async def items_by_uid(self, folder_id: int, uids: Sequence[int]) -> list[Item]:
        items = self._folder_items(folder_id)
        return [items[u] for u in sorted(set(uids)) if u in items]

    async def item_briefs(self, folder_id: int, uids: Sequence[int]) -> list[ItemBrief]:
        return [
            ItemBrief(i.uid, i.size, i.internal_date, i.imap_envelope)
            for i in await self.items_by_uid(folder_id, uids)
        ]

    async def item_heads(self, folder_id: int, uids: Sequence[int]) -> list[ItemHead]:
        return [
            ItemHead(
                i.uid,
                i.blob_id,
                i.header_prefix,
                int(i.summary.get("header_size", 0)),
                i.size,
                i.internal_date,
                i.imap_envelope,
            )
            for i in await self.items_by_uid(folder_id, uids)
        ]

    async def uids_in_range(
        self, folder_id: int, column: ItemRange, low: float | None, high: float | None
    ) -> list[int]:
        def inside(item: Item) -> bool:
            value = item.size if column == "size" else item.internal_date
            return (low is None or value >= low) and (high is None or value < high)

        return sorted(i.uid for i in self._folder_items(folder_id).values() if inside(i))

    async def changes_since(self, folder_id: int, modseq: int) -> FolderChanges:
        items = self._folder_items(folder_id)
        tombstones = self._expunged.get(folder_id, {})
        return FolderChanges(
            changed=[i.state for i in items.values() if i.modseq > modseq],
            expunged=sorted(u for u, m in tombstones.items() if m > modseq),
            complete=modseq >= self._pruned.get(folder_id, 0),
        )

    async def prune_expunged(self, older_than: float) -> int:
        pruned = 0
        for folder_id, tombstones in self._expunged.items():
            old = [u for u in tombstones if self._expunged_at[(folder_id, u)] < older_than]
            for uid in old:
                mark = max(self._pruned.get(folder_id, 0), tombstones.pop(uid))
                self._pruned[folder_id] = mark
                del self._expunged_at[(folder_id, uid)]
            pruned += len(old)
        return pruned

    def _forget_tombstones(self, folder_id: int) -> None:
        for uid in self._expunged.pop(folder_id, {}):
            del self._expunged_at[(folder_id, uid)]
        self._pruned.pop(folder_id, None)

    def _bury(self, folder_id: int, uids: Sequence[int], modseq: int) -> None:
        tombstones = self._expunged.setdefault(folder_id, {})
        now = time.time()
        for uid in uids:
            tombstones[uid] = modseq
            self._expunged_at[(folder_id, uid)] = now

    async def set_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        flags: int,
        keywords: Sequence[str] = (),
        *,
        unchanged_since: int | None = None,
    ) -> list[Item]:
        items = self._folder_items(folder_id)
        new_keywords = _keywords(keywords)
        found = [items[u] for u in sorted(set(uids)) if u in items]
        changed = [
            i
            for i in found
            if (i.flags != flags or i.keywords != new_keywords)
            and (unchanged_since is None or i.modseq <= unchanged_since)
        ]
        if not changed:
            return found
        f = self._folders[folder_id]
        delta = sum(_unseen(flags) - _unseen(i.flags) for i in changed)
        f = replace(f, highest_modseq=f.highest_modseq + 1, unseen=f.unseen + delta)
        self._folders[folder_id] = f
        changed_ids = {i.id for i in changed}
        out: list[Item] = []
        for i in found:
            if i.id in changed_ids:
                i = replace(i, flags=flags, keywords=new_keywords, modseq=f.highest_modseq)
                items[i.uid] = i
                if i.delivery_key is not None:
                    self._keys[(i.mailbox_id, i.delivery_key)] = i
            out.append(i)
        return out

    async def expunge(self, folder_id: int, uids: Sequence[int]) -> list[int]:
        items = self._folder_items(folder_id)
        gone = [items.pop(u) for u in sorted(set(uids)) if u in items]
        if gone:
            f = self._folders[folder_id]
            self._folders[folder_id] = replace(
                f,
                highest_modseq=f.highest_modseq + 1,
                messages=f.messages - len(gone),
                unseen=f.unseen - sum(_unseen(i.flags) for i in gone),
                size=f.size - sum(i.size for i in gone),
            )
            self._bury(folder_id, [i.uid for i in gone], f.highest_modseq + 1)
            for i in gone:
                if i.delivery_key is not None:
                    self._keys.pop((i.mailbox_id, i.delivery_key), None)
        return [i.uid for i in gone]

    async def delete_mailbox(self, mailbox_id: int) -> list[str]:
        blobs: set[str] = set()
        for fid in [f.id for f in self._folders.values() if f.mailbox_id == mailbox_id]:
            blobs.update(i.blob_id for i in self._items.pop(fid).values())
            del self._folders[fid]
            self._forget_tombstones(fid)
        self._keys = {k: v for k, v in self._keys.items() if k[0] != mailbox_id}
        self._subscriptions.pop(mailbox_id, None)
        return self._unreferenced(blobs)

    async def create_folder(self, mailbox_id: int, name: str) -> Folder:
        key = check_folder_name(name)
        if key == "Inbox" or self._find(mailbox_id, key) is not None:
            raise AlreadyExists(f"folder {name!r} exists in mailbox {mailbox_id}")
        self._create_parents(mailbox_id, key)
        return self._new_folder(mailbox_id, key)

    async def rename_folder(self, mailbox_id: int, old: str, new: str) -> Folder:
        old_key = folder_key(old)
        if old_key == "Inbox":
            raise DefaultFolderProtected("renaming INBOX is not supported")
        new_key = check_folder_name(new)
        source = self._find(mailbox_id, old_key)
        if source is None:
            raise FolderNotFound(f"folder {old!r} not found in mailbox {mailbox_id}")
        if source.name in DEFAULT_FOLDER_NAMES:
            raise DefaultFolderProtected(f"default folder {source.name!r} cannot be renamed")
        if is_below(new_key, old_key):
            raise InvalidName(f"folder {old!r} cannot move below itself")
        moving = [
            f
            for f in await self.list_folders(mailbox_id)
            if f.name == old_key or is_below(f.name, old_key)
        ]
        targets = [new_key + f.name[len(old_key) :] for f in moving]
        if new_key == "Inbox" or any(self._find(mailbox_id, t) is not None for t in targets):
            raise AlreadyExists(f"folder {new!r} exists in mailbox {mailbox_id}")
        # Everything is checked: from here on nothing raises (atomic on the loop).
        self._create_parents(mailbox_id, new_key)
        for f, target in zip(moving, targets, strict=True):
            self._folders[f.id] = replace(f, name=target)
        return self._folders[source.id]

    async def delete_folder(self, mailbox_id: int, name: str) -> list[str]:
        found = await self.get_folder(mailbox_id, name)
        if found.name in DEFAULT_FOLDER_NAMES:
            raise DefaultFolderProtected(f"default folder {found.name!r} cannot be deleted")
        if any(is_below(f.name, found.name) for f in await self.list_folders(mailbox_id)):
            raise FolderHasChildren(f"folder {name!r} has subfolders")
        gone = self._items.pop(found.id)
        del self._folders[found.id]
        self._forget_tombstones(found.id)
        for i in gone.values():
            if i.delivery_key is not None:
                self._keys.pop((i.mailbox_id, i.delivery_key), None)
        return self._unreferenced({i.blob_id for i in gone.values()})

    async def copy_items(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        found = self._transfer(folder_id, uids, dest_folder_id)
        if not found:
            return []
        dest = self._bump_dest(dest_folder_id, found)
        dest_items = self._items[dest_folder_id]
        first = dest.uidnext - len(found)
        pairs: list[tuple[int, int]] = []
        for n, i in enumerate(found):
            # A copy is a new message: new id, no delivery key (the key names
            # the delivered original, and is unique per mailbox).
            copied = replace(
                i,
                id=self._next_item,
                folder_id=dest_folder_id,
                uid=first + n,
                modseq=dest.highest_modseq,
                summary=_json_copy(i.summary),
                delivery_key=None,
            )
            self._next_item += 1
            dest_items[copied.uid] = copied
            pairs.append((i.uid, copied.uid))
        return pairs

    async def move_items(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        found = self._transfer(folder_id, uids, dest_folder_id)
        if not found:
            return []
        # The expunge half first, then the copy half, so a move within one folder
        # (allowed: new UIDs) sees the counters the first half left.
        source_items = self._items[folder_id]
        for i in found:
            del source_items[i.uid]
        f = self._folders[folder_id]
        self._folders[folder_id] = replace(
            f,
            highest_modseq=f.highest_modseq + 1,
            messages=f.messages - len(found),
            unseen=f.unseen - sum(_unseen(i.flags) for i in found),
            size=f.size - sum(i.size for i in found),
        )
        self._bury(folder_id, [i.uid for i in found], f.highest_modseq + 1)
        dest = self._bump_dest(dest_folder_id, found)
        dest_items = self._items[dest_folder_id]
        first = dest.uidnext - len(found)
        pairs: list[tuple[int, int]] = []
        for n, i in enumerate(found):
            moved = replace(i, folder_id=dest_folder_id, uid=first + n, modseq=dest.highest_modseq)
            dest_items[moved.uid] = moved
            if moved.delivery_key is not None:
                self._keys[(moved.mailbox_id, moved.delivery_key)] = moved
            pairs.append((i.uid, moved.uid))
        return pairs

    async def subscribe(self, mailbox_id: int, name: str) -> None:
        self._subscriptions.setdefault(mailbox_id, set()).add(check_folder_name(name))

    async def unsubscribe(self, mailbox_id: int, name: str) -> None:
        names = self._subscriptions.get(mailbox_id, set())
        key = folder_key(name)
        if key not in names:
            raise NotFound(f"{name!r} is not subscribed in mailbox {mailbox_id}")
        names.discard(key)

    async def list_subscriptions(self, mailbox_id: int) -> list[str]:
        return sorted(self._subscriptions.get(mailbox_id, ()))

    def _new_folder(self, mailbox_id: int, key: str) -> Folder:
        # The same clock-based, never-reused UIDVALIDITY as the default folders.
        uidvalidity = max(int(time.time()), self._last_uidvalidity + 1)
        self._last_uidvalidity = uidvalidity
        fid = self._next_folder
        self._next_folder += 1
        created = Folder(
            id=fid,
            mailbox_id=mailbox_id,
            name=key,
            container_class="IPF.Note",
            special_use=None,
            uidvalidity=uidvalidity,
            uidnext=1,
            highest_modseq=1,
            messages=0,
            unseen=0,
            size=0,
        )
        self._folders[fid] = created
        self._items[fid] = {}
        return created

    def _create_parents(self, mailbox_id: int, key: str) -> None:
        # RFC 9051 §6.3.4 / §6.3.6: superiors a new name needs are created too.
        for parent in folder_parents(key):
            if self._find(mailbox_id, parent) is None:
                self._new_folder(mailbox_id, parent)

    def _transfer(self, folder_id: int, uids: Sequence[int], dest_folder_id: int) -> list[Item]:
        """The items a copy or move takes, in UID order, after checking both folders."""
        source_items = self._folder_items(folder_id)
        self._folder_items(dest_folder_id)
        if self._folders[folder_id].mailbox_id != self._folders[dest_folder_id].mailbox_id:
            raise NotPermitted("items cannot be copied or moved to another mailbox")
        return [source_items[u] for u in sorted(set(uids)) if u in source_items]

    def _bump_dest(self, dest_folder_id: int, arriving: list[Item]) -> Folder:
        # One change for the whole batch: one new MODSEQ that every arrival takes.
        d = self._folders[dest_folder_id]
        d = replace(
            d,
            uidnext=d.uidnext + len(arriving),
            highest_modseq=d.highest_modseq + 1,
            messages=d.messages + len(arriving),
            unseen=d.unseen + sum(_unseen(i.flags) for i in arriving),
            size=d.size + sum(i.size for i in arriving),
        )
        self._folders[dest_folder_id] = d
        return d

    def _unreferenced(self, blobs: set[str]) -> list[str]:
        still = {i.blob_id for items in self._items.values() for i in items.values()}
        return sorted(blobs - still)

    def _folder_items(self, folder_id: int) -> dict[int, Item]:
        items = self._items.get(folder_id)
        if items is None:
            raise FolderNotFound(f"folder {folder_id} not found")
        return items
