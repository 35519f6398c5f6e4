"""MailStore on SQL: folders with O(1) counters, items with UIDs and MODSEQs.

Invariants (see `store.api`), and how this file keeps them:
- UIDNEXT only grows: a UID is taken by `UPDATE folder SET uidnext = uidnext + 1
  ... RETURNING` in the same transaction as the INSERT; expunge never lowers it.
- HIGHESTMODSEQ grows by one per change (a delivery, one `set_flags` call, one
  `expunge` call); changed items carry the new value (RFC 7162 §3.1).
- messages/unseen/size are adjusted in the same transaction as the item rows,
  so SELECT and STATUS read one row instead of counting.
- Idempotent delivery is a probe of the unique (mailbox_id, delivery_key) index,
  so its cost does not grow with the mailbox.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from postwerk.core.errors import FolderNotFound, ItemNotFound
from postwerk.store.api import DEFAULT_FOLDERS, folder_key
from postwerk.store.records import Flag, Folder, Item, NewItem
from postwerk.store.sqlite.database import Database, driver_cursor
from postwerk.store.sqlite.schema import folder, item, sequence

_UIDV = "uidvalidity"

# Stay far below SQLite's bound-parameter limit in "uid IN (...)".
_CHUNK = 500


def _folder(m: RowMapping) -> Folder:
    return Folder(
        id=m["id"],
        mailbox_id=m["mailbox_id"],
        name=m["name"],
        container_class=m["container_class"],
        special_use=m["special_use"],
        uidvalidity=m["uidvalidity"],
        uidnext=m["uidnext"],
        highest_modseq=m["highest_modseq"],
        messages=m["messages"],
        unseen=m["unseen"],
        size=m["size"],
    )


def _item(m: RowMapping) -> Item:
    return Item(
        id=m["id"],
        mailbox_id=m["mailbox_id"],
        folder_id=m["folder_id"],
        uid=m["uid"],
        item_class=m["item_class"],
        blob_id=m["blob_id"],
        header_prefix=bytes(m["header_prefix"]),
        size=m["size"],
        internal_date=m["internal_date"],
        flags=m["flags"],
        keywords=tuple(json.loads(m["keywords"])),
        modseq=m["modseq"],
        summary=json.loads(m["summary"]),
        delivery_key=m["delivery_key"],
    )


def _keywords(keywords: Sequence[str]) -> tuple[str, ...]:
    # A set in IMAP; sorted so that equality (and "did it change?") is simple.
    return tuple(sorted(set(keywords)))


def _unseen(flags: int) -> int:
    return 0 if flags & Flag.SEEN else 1


def _chunks(uids: Sequence[int]) -> list[list[int]]:
    unique = sorted(set(uids))
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


def _require_folder(conn: Connection, folder_id: int) -> None:
    if conn.scalar(select(folder.c.id).where(folder.c.id == folder_id)) is None:
        raise FolderNotFound(f"folder {folder_id} not found")


def _items_by_uid(conn: Connection, folder_id: int, uids: Sequence[int]) -> list[Item]:
    found: list[Item] = []
    for chunk in _chunks(uids):
        rows = conn.execute(
            select(item).where(item.c.folder_id == folder_id, item.c.uid.in_(chunk))
        )
        found.extend(_item(r) for r in rows.mappings())
    found.sort(key=lambda i: i.uid)
    return found


_update_item_flags = (
    update(item)
    .where(item.c.id == bindparam("item_id"))
    .values(
        flags=bindparam("new_flags"),
        keywords=bindparam("new_keywords"),
        modseq=bindparam("new_modseq"),
    )
)


# The folder a delivery goes to, joined with an item of the same delivery key.
# A NULL key never matches (NULL = NULL is not true), so no special case.
# The delivery hot path runs prepared SQL on the driver's cursor: through
# SQLAlchemy each statement cost more Python than SQLite spent executing it, and
# that Python competes with the event loop for the GIL.
#
# One statement finds the folder and, through the unique (mailbox_id,
# delivery_key) index, an earlier delivery with the same key.
_PROBE_SQL = (
    "SELECT folder.id, item.id FROM folder LEFT OUTER JOIN item"
    " ON item.mailbox_id = folder.mailbox_id AND item.delivery_key = ?"
    " WHERE folder.mailbox_id = ? AND folder.name = ?"
)
_BUMP_SQL = (
    "UPDATE folder SET uidnext = uidnext + 1, highest_modseq = highest_modseq + 1,"
    " messages = messages + 1, unseen = unseen + ?, size = size + ?"
    " WHERE id = ? RETURNING uidnext, highest_modseq"
)
_INSERT_ITEM_SQL = (
    "INSERT INTO item (mailbox_id, folder_id, uid, item_class, blob_id, header_prefix,"
    " size, internal_date, flags, keywords, modseq, summary, delivery_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


class SqliteMailStore:
    """MailStore over a `Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_default_folders(self, mailbox_id: int) -> list[Folder]:
        """Create Exchange's default folders; existing ones are kept (safe to rerun)."""

        def run(conn: Connection) -> list[Folder]:
            existing = {
                r.name
                for r in conn.execute(
                    select(folder.c.name).where(folder.c.mailbox_id == mailbox_id)
                )
            }
            # UIDVALIDITY from the clock, but above every value ever handed out,
            # so a folder recreated within the same second still gets a new one
            # (RFC 9051 §2.3.1.1), even after all folders were deleted.
            last = conn.scalar(select(sequence.c.value).where(sequence.c.name == _UIDV))
            uidvalidity = max(int(time.time()), (last or 0) + 1)
            for name, container_class, special_use in DEFAULT_FOLDERS:
                if name in existing:
                    continue
                conn.execute(
                    insert(folder).values(
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
                )
                uidvalidity += 1
            high = uidvalidity - 1
            if last is None:
                conn.execute(insert(sequence).values(name=_UIDV, value=high))
            elif high > last:
                conn.execute(update(sequence).where(sequence.c.name == _UIDV).values(value=high))
            return _list_folders(conn, mailbox_id)

        return await self._db.write(run)

    async def list_folders(self, mailbox_id: int) -> list[Folder]:
        def run(conn: Connection) -> list[Folder]:
            return _list_folders(conn, mailbox_id)

        return await self._db.read(run)

    async def get_folder(self, mailbox_id: int, name: str) -> Folder:
        key = folder_key(name)

        def run(conn: Connection) -> Folder:
            row = (
                (
                    conn.execute(
                        select(folder).where(
                            folder.c.mailbox_id == mailbox_id, folder.c.name == key
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise FolderNotFound(f"folder {name!r} not found in mailbox {mailbox_id}")
            return _folder(row)

        return await self._db.read(run)

    async def deliver(self, items: Sequence[NewItem]) -> list[Item]:
        """One write job for the whole batch: all items land, or none do."""
        if not items:
            return []
        return await self._db.write(self.deliver_job(items))

    def deliver_job(self, items: Sequence[NewItem]) -> Callable[[Connection], list[Item]]:
        """The write job of `deliver`, to run alone or inside a larger transaction."""
        batch = list(items)

        # Recipients of one message share one summary: encode it once (JSON was the
        # largest single cost of a delivery).
        encoded: dict[int, str] = {}
        for new in batch:
            if id(new.summary) not in encoded:
                encoded[id(new.summary)] = json.dumps(new.summary, separators=(",", ":"))

        def run(conn: Connection) -> list[Item]:
            out: list[Item] = []
            cur = driver_cursor(conn)
            for new in batch:
                # One statement finds the folder and, through the unique index,
                # an earlier delivery with the same key (rows inserted earlier in
                # this batch are visible: same transaction).
                found = cur.execute(
                    _PROBE_SQL, (new.delivery_key, new.mailbox_id, folder_key(new.folder_name))
                ).fetchone()
                if found is None:
                    raise FolderNotFound(
                        f"folder {new.folder_name!r} not found in mailbox {new.mailbox_id}"
                    )
                folder_id, existing = found
                if existing is not None:
                    row = conn.execute(select(item).where(item.c.id == existing)).mappings().one()
                    out.append(_item(row))
                    continue
                uidnext, modseq = cur.execute(
                    _BUMP_SQL, (_unseen(new.flags), new.size, folder_id)
                ).fetchone()
                keywords = _keywords(new.keywords)
                uid = uidnext - 1
                (item_id,) = cur.execute(
                    _INSERT_ITEM_SQL,
                    (
                        new.mailbox_id,
                        folder_id,
                        uid,
                        new.item_class,
                        new.blob_id,
                        new.header_prefix,
                        new.size,
                        new.internal_date,
                        new.flags,
                        json.dumps(list(keywords)),
                        modseq,
                        encoded[id(new.summary)],
                        new.delivery_key,
                    ),
                ).fetchone()
                out.append(
                    Item(
                        id=item_id,
                        mailbox_id=new.mailbox_id,
                        folder_id=folder_id,
                        uid=uid,
                        item_class=new.item_class,
                        blob_id=new.blob_id,
                        header_prefix=new.header_prefix,
                        size=new.size,
                        internal_date=new.internal_date,
                        flags=new.flags,
                        keywords=keywords,
                        modseq=modseq,
                        summary=new.summary,
                        delivery_key=new.delivery_key,
                    )
                )
            return out

        return run

    async def list_items(self, folder_id: int, limit: int | None = None) -> list[Item]:
        def run(conn: Connection) -> list[Item]:
            _require_folder(conn, folder_id)
            query = select(item).where(item.c.folder_id == folder_id).order_by(item.c.uid)
            if limit is not None:
                query = query.limit(limit)
            return [_item(r) for r in (conn.execute(query)).mappings()]

        return await self._db.read(run)

    async def get_item(self, folder_id: int, uid: int) -> Item:
        def run(conn: Connection) -> Item:
            row = (
                (conn.execute(select(item).where(item.c.folder_id == folder_id, item.c.uid == uid)))
                .mappings()
                .first()
            )
            if row is None:
                _require_folder(conn, folder_id)
                raise ItemNotFound(f"uid {uid} not found in folder {folder_id}")
            return _item(row)

        return await self._db.read(run)

    async def set_flags(
        self, folder_id: int, uids: Sequence[int], flags: int, keywords: Sequence[str] = ()
    ) -> list[Item]:
        """Replace flags and keywords of the given UIDs; absent UIDs are ignored.

        Returns every found item (changed ones with the new MODSEQ), in UID order.
        """
        new_keywords = _keywords(keywords)

        def run(conn: Connection) -> list[Item]:
            _require_folder(conn, folder_id)
            found = _items_by_uid(conn, folder_id, uids)
            changed = [i for i in found if i.flags != flags or i.keywords != new_keywords]
            if not changed:
                return found
            unseen_delta = sum(_unseen(flags) - _unseen(i.flags) for i in changed)
            modseq = (
                conn.execute(
                    update(folder)
                    .where(folder.c.id == folder_id)
                    .values(
                        highest_modseq=folder.c.highest_modseq + 1,
                        unseen=folder.c.unseen + unseen_delta,
                    )
                    .returning(folder.c.highest_modseq)
                )
            ).scalar_one()
            encoded = json.dumps(list(new_keywords))
            conn.execute(
                _update_item_flags,
                [
                    {
                        "item_id": i.id,
                        "new_flags": flags,
                        "new_keywords": encoded,
                        "new_modseq": modseq,
                    }
                    for i in changed
                ],
            )
            changed_ids = {i.id for i in changed}
            return [
                _replace_flags(i, flags, new_keywords, modseq) if i.id in changed_ids else i
                for i in found
            ]

        return await self._db.write(run)

    async def expunge(self, folder_id: int, uids: Sequence[int]) -> list[int]:
        """Remove the given UIDs; returns those that existed. UIDNEXT is untouched."""

        def run(conn: Connection) -> list[int]:
            _require_folder(conn, folder_id)
            gone: list[int] = []
            messages = unseen = size = 0
            for chunk in _chunks(uids):
                rows = conn.execute(
                    delete(item)
                    .where(item.c.folder_id == folder_id, item.c.uid.in_(chunk))
                    .returning(item.c.uid, item.c.flags, item.c.size)
                )
                for uid, item_flags, item_size in rows:
                    gone.append(uid)
                    messages += 1
                    unseen += _unseen(item_flags)
                    size += item_size
            if gone:
                conn.execute(
                    update(folder)
                    .where(folder.c.id == folder_id)
                    .values(
                        highest_modseq=folder.c.highest_modseq + 1,
                        messages=folder.c.messages - messages,
                        unseen=folder.c.unseen - unseen,
                        size=folder.c.size - size,
                    )
                )
            return sorted(gone)

        return await self._db.write(run)

    async def delete_mailbox(self, mailbox_id: int) -> list[str]:
        def run(conn: Connection) -> list[str]:
            blob_ids = set(
                (
                    conn.execute(
                        select(item.c.blob_id).where(item.c.mailbox_id == mailbox_id).distinct()
                    )
                ).scalars()
            )
            conn.execute(delete(item).where(item.c.mailbox_id == mailbox_id))
            conn.execute(delete(folder).where(folder.c.mailbox_id == mailbox_id))
            orphans = []
            for blob_id in sorted(blob_ids):
                still = conn.scalar(select(item.c.id).where(item.c.blob_id == blob_id).limit(1))
                if still is None:
                    orphans.append(blob_id)
            return orphans

        return await self._db.write(run)


def _replace_flags(i: Item, flags: int, keywords: tuple[str, ...], modseq: int) -> Item:
    return replace(i, flags=flags, keywords=keywords, modseq=modseq)


def _list_folders(conn: Connection, mailbox_id: int) -> list[Folder]:
    rows = conn.execute(
        select(folder).where(folder.c.mailbox_id == mailbox_id).order_by(folder.c.id)
    )
    return [_folder(r) for r in rows.mappings()]
