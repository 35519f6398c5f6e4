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

from postwerk.core.errors import FolderNotFound, ItemNotFound
from postwerk.store.api import DEFAULT_FOLDERS, folder_key
from postwerk.store.records import Flag, Folder, Item, NewItem


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

    async def set_flags(
        self, folder_id: int, uids: Sequence[int], flags: int, keywords: Sequence[str] = ()
    ) -> list[Item]:
        items = self._folder_items(folder_id)
        new_keywords = _keywords(keywords)
        found = [items[u] for u in sorted(set(uids)) if u in items]
        changed = [i for i in found if i.flags != flags or i.keywords != new_keywords]
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
            for i in gone:
                if i.delivery_key is not None:
                    self._keys.pop((i.mailbox_id, i.delivery_key), None)
        return [i.uid for i in gone]

    async def delete_mailbox(self, mailbox_id: int) -> list[str]:
        blobs: set[str] = set()
        for fid in [f.id for f in self._folders.values() if f.mailbox_id == mailbox_id]:
            blobs.update(i.blob_id for i in self._items.pop(fid).values())
            del self._folders[fid]
        self._keys = {k: v for k, v in self._keys.items() if k[0] != mailbox_id}
        still = {i.blob_id for items in self._items.values() for i in items.values()}
        return sorted(blobs - still)

    def _folder_items(self, folder_id: int) -> dict[int, Item]:
        items = self._items.get(folder_id)
        if items is None:
            raise FolderNotFound(f"folder {folder_id} not found")
        return items
