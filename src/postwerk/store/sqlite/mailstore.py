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
- Folder hierarchy, copy/move and subscriptions: each call is one write job, so
  a rename of a subtree or a move (RFC 6851) is all or nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

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
from postwerk.store.sqlite.database import Cursor, Database, DialectCursor, driver_cursor
from postwerk.store.sqlite.schema import expunged_item, folder, item, sequence, subscription

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
        keywords=tuple(orjson.loads(m["keywords"])),
        modseq=m["modseq"],
        summary=orjson.loads(m["summary"]),
        delivery_key=m["delivery_key"],
        imap_envelope=m["imap_envelope"],
    )


def _states(rows: list[Any]) -> list[ItemState]:
    # The hot path of SELECT on a large folder: most items have no keywords, so
    # the JSON decoder only runs for those that do.
    return [
        ItemState(uid, flags, () if kw == "[]" else tuple(orjson.loads(kw)), modseq)
        for uid, flags, kw, modseq in rows
    ]


_ITEM_SQL = (
    "SELECT id, mailbox_id, folder_id, uid, item_class, blob_id, header_prefix, size,"
    " internal_date, flags, keywords, modseq, summary, delivery_key, imap_envelope FROM item"
)


def _item_from_row(row: Any) -> Item:
    """`_item` for a row of `_ITEM_SQL`: positional, without SQLAlchemy's row
    mapping, for reads of many items (IMAP FETCH 1:*)."""
    (iid, mbx, fid, uid, cls, blob, prefix, size, date, flags, kw, modseq, summ, key, env) = row
    return Item(
        id=iid,
        mailbox_id=mbx,
        folder_id=fid,
        uid=uid,
        item_class=cls,
        blob_id=blob,
        header_prefix=bytes(prefix),
        size=size,
        internal_date=date,
        flags=flags,
        keywords=() if kw == "[]" else tuple(orjson.loads(kw)),
        modseq=modseq,
        summary=orjson.loads(summ),
        delivery_key=key,
        imap_envelope=env,
    )


def _bury(cur: Cursor, folder_id: int, uids: Sequence[int]) -> None:
    """Tombstones for UIDs that left a folder, at the MODSEQ the folder has now."""
    now = time.time()
    cur.executemany(
        "INSERT INTO expunged_item (folder_id, uid, modseq, expunged_at)"
        " SELECT ?, ?, highest_modseq, ? FROM folder WHERE id = ?",
        [(folder_id, uid, now, folder_id) for uid in uids],
    )


# UID 0 is never a message's: its row in expunged_item marks the highest MODSEQ
# whose tombstones were pruned, so the one query of `changes_since` also tells
# whether its answer is complete (the mark comes back when asked from below it).
PRUNED_MARK = 0
_PRUNE_SQL = (
    "INSERT INTO expunged_item (folder_id, uid, modseq, expunged_at)"
    " SELECT folder_id, 0, MAX(modseq), ? FROM expunged_item"
    " WHERE expunged_at < ? AND uid != 0 GROUP BY folder_id"
    " ON CONFLICT (folder_id, uid) DO UPDATE SET modseq = CASE"
    " WHEN excluded.modseq > expunged_item.modseq THEN excluded.modseq"
    " ELSE expunged_item.modseq END"
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
    if not _raw_rows(conn, "SELECT 1 FROM folder WHERE id = ?", (folder_id,)):
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
    " size, internal_date, flags, keywords, modseq, summary, delivery_key, imap_envelope,"
    " header_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)

# COPY and MOVE (moving to Deleted Items is how most clients delete) on the
# driver's cursor too. A copy is INSERT ... SELECT: the summary JSON and the
# header prefix are copied inside SQLite and never decoded in Python.
_TRANSFER_ARRIVE_SQL = (
    "UPDATE folder SET uidnext = uidnext + ?, highest_modseq = highest_modseq + 1,"
    " messages = messages + ?, unseen = unseen + ?, size = size + ?"
    " WHERE id = ? RETURNING uidnext, highest_modseq"
)
_TRANSFER_LEAVE_SQL = (
    "UPDATE folder SET highest_modseq = highest_modseq + 1,"
    " messages = messages - ?, unseen = unseen - ?, size = size - ? WHERE id = ?"
)
# A copy gets no delivery key: the key names the delivered original and is
# unique per mailbox.
_COPY_ITEM_SQL = (
    "INSERT INTO item (mailbox_id, folder_id, uid, item_class, blob_id, header_prefix,"
    " size, internal_date, flags, keywords, modseq, summary, delivery_key, imap_envelope,"
    " header_size) SELECT mailbox_id, ?, ?, item_class, blob_id, header_prefix, size,"
    " internal_date, flags, keywords, ?, summary, NULL, imap_envelope, header_size"
    " FROM item WHERE id = ?"
)
# A move keeps the row (id, delivery key): a redone delivery still finds it.
_MOVE_ITEM_SQL = "UPDATE item SET folder_id = ?, uid = ?, modseq = ? WHERE id = ?"
# Reads at most this big run on the event loop's thread (Database.read_now): below
# it, a hop to a reader thread costs more than the read.
INLINE_ITEMS = 64
INLINE_BRIEFS = 256
_STATES_SQL = "SELECT uid, flags, keywords, modseq FROM item WHERE folder_id = ?"
# In the order of Folder's fields.
_FOLDER_SQL = (
    "SELECT id, mailbox_id, name, container_class, special_use, uidvalidity, uidnext,"
    " highest_modseq, messages, unseen, size FROM folder"
)


_BRIEF_SQL = "SELECT uid, size, internal_date, imap_envelope FROM item"
# A page of 50 headers is the commonest FETCH of all: the header block's size comes
# from its column, or for rows stored before migration 0006 from the summary (by
# SQLite, never by decoding the summary in Python).
_HEAD_SQL = (
    "SELECT uid, blob_id, header_prefix,"
    " COALESCE(header_size, json_extract(summary, '$.header_size')), size,"
    " internal_date, imap_envelope FROM item"
)
# PostgreSQL databases start at migration 0006 or later: no row predates the column.
_HEAD_SQL_OTHER = (
    "SELECT uid, blob_id, header_prefix, header_size, size, internal_date, imap_envelope FROM item"
)


def _rows_by_uid(
    conn: Connection, select_sql: str, folder_id: int, uids: Sequence[int]
) -> list[Any]:
    """`select_sql` (a SELECT ... FROM item) for these UIDs of a folder, by UID,
    in chunks that stay under SQLite's parameter limit."""
    out: list[Any] = []
    for chunk in _chunks(uids):
        marks = ",".join("?" * len(chunk))
        sql = f"{select_sql} WHERE folder_id = ? AND uid IN ({marks}) ORDER BY uid"
        out.extend(_raw_rows(conn, sql, (folder_id, *chunk)))
    return out


def _raw_rows(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Rows as tuples from the stdlib cursor when the connection has one (the
    pooled readers, the writer): SQLAlchemy's result rows cost more per row than
    SQLite's own work on the IMAP hot paths."""
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        return raw.execute(sql, params).fetchall()
    return DialectCursor(conn).execute(sql, params).fetchall()


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
            rows = _raw_rows(
                conn, _FOLDER_SQL + " WHERE mailbox_id = ? AND name = ?", (mailbox_id, key)
            )
            if not rows:
                raise FolderNotFound(f"folder {name!r} not found in mailbox {mailbox_id}")
            return Folder(*rows[0])

        return await self._db.read_now(run)

    async def folder_by_id(self, folder_id: int) -> Folder | None:
        def run(conn: Connection) -> Folder | None:
            rows = _raw_rows(conn, _FOLDER_SQL + " WHERE id = ?", (folder_id,))
            return Folder(*rows[0]) if rows else None

        return await self._db.read_now(run)

    async def mailbox_size(self, mailbox_id: int) -> int:
        """One indexed read of the folder rows (the (mailbox_id, name) unique index):
        asked at RCPT TO and before each delivery to a mailbox with a quota."""

        def run(conn: Connection) -> int:
            rows = _raw_rows(
                conn,
                "SELECT COALESCE(SUM(size), 0) FROM folder WHERE mailbox_id = ?",
                (mailbox_id,),
            )
            return int(rows[0][0])

        return await self._db.read_now(run)

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
                        new.imap_envelope,
                        new.summary.get("header_size"),
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
                        imap_envelope=new.imap_envelope,
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

    async def item_states(self, folder_id: int) -> list[ItemState]:
        def run(conn: Connection) -> list[ItemState]:
            _require_folder(conn, folder_id)
            return _states(_raw_rows(conn, _STATES_SQL + " ORDER BY uid", (folder_id,)))

        return await self._db.read(run)

    async def items_by_uid(self, folder_id: int, uids: Sequence[int]) -> list[Item]:
        def run(conn: Connection) -> list[Item]:
            _require_folder(conn, folder_id)
            return [_item_from_row(r) for r in _rows_by_uid(conn, _ITEM_SQL, folder_id, uids)]

        if len(uids) <= INLINE_ITEMS:
            return await self._db.read_now(run)
        return await self._db.read(run)

    async def item_briefs(self, folder_id: int, uids: Sequence[int]) -> list[ItemBrief]:
        def run(conn: Connection) -> list[ItemBrief]:
            _require_folder(conn, folder_id)
            return [ItemBrief(*r) for r in _rows_by_uid(conn, _BRIEF_SQL, folder_id, uids)]

        if len(uids) <= INLINE_BRIEFS:
            return await self._db.read_now(run)
        return await self._db.read(run)

    async def item_heads(self, folder_id: int, uids: Sequence[int]) -> list[ItemHead]:
        def run(conn: Connection) -> list[ItemHead]:
            _require_folder(conn, folder_id)
            return [
                ItemHead(uid, blob, bytes(prefix), int(hsize or 0), size, date, env)
                for uid, blob, prefix, hsize, size, date, env in _rows_by_uid(
                    conn,
                    _HEAD_SQL if conn.dialect.name == "sqlite" else _HEAD_SQL_OTHER,
                    folder_id,
                    uids,
                )
            ]

        if len(uids) <= INLINE_BRIEFS:
            return await self._db.read_now(run)
        return await self._db.read(run)

    async def uids_in_range(
        self, folder_id: int, column: ItemRange, low: float | None, high: float | None
    ) -> list[int]:
        if column not in ("size", "internal_date"):  # never a client's text in SQL
            raise ValueError(f"no range search on {column!r}")
        sql = "SELECT uid FROM item WHERE folder_id = ?"
        params: list[Any] = [folder_id]
        if low is not None:
            sql += f" AND {column} >= ?"
            params.append(low)
        if high is not None:
            sql += f" AND {column} < ?"
            params.append(high)

        def run(conn: Connection) -> list[int]:
            _require_folder(conn, folder_id)
            return sorted(uid for (uid,) in _raw_rows(conn, sql, tuple(params)))

        return await self._db.read(run)

    async def changes_since(self, folder_id: int, modseq: int) -> FolderChanges:
        def run(conn: Connection) -> FolderChanges:
            _require_folder(conn, folder_id)
            changed = _states(
                _raw_rows(conn, _STATES_SQL + " AND modseq > ? ORDER BY uid", (folder_id, modseq))
            )
            gone = _raw_rows(
                conn,
                "SELECT uid FROM expunged_item WHERE folder_id = ? AND modseq > ? ORDER BY uid",
                (folder_id, modseq),
            )
            uids = [uid for (uid,) in gone]
            if uids and uids[0] == PRUNED_MARK:
                return FolderChanges(changed, uids[1:], complete=False)
            return FolderChanges(changed, uids)

        return await self._db.read(run)

    async def prune_expunged(self, older_than: float) -> int:
        def run(conn: Connection) -> int:
            cur = driver_cursor(conn)
            cur.execute(_PRUNE_SQL, (time.time(), older_than))
            cur.execute(
                "DELETE FROM expunged_item WHERE expunged_at < ? AND uid != 0", (older_than,)
            )
            return int(cur.rowcount)

        return await self._db.write(run)

    async def set_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        flags: int,
        keywords: Sequence[str] = (),
        *,
        unchanged_since: int | None = None,
    ) -> list[Item]:
        new_keywords = _keywords(keywords)
        limit = unchanged_since

        def run(conn: Connection) -> list[Item]:
            _require_folder(conn, folder_id)
            found = _items_by_uid(conn, folder_id, uids)
            # Inside the one writer's transaction: no other change can come between
            # this test and the update.
            changed = [
                i
                for i in found
                if (i.flags != flags or i.keywords != new_keywords)
                and (limit is None or i.modseq <= limit)
            ]
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
                _bury(driver_cursor(conn), folder_id, gone)
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
            conn.execute(
                delete(expunged_item).where(
                    expunged_item.c.folder_id.in_(
                        select(folder.c.id).where(folder.c.mailbox_id == mailbox_id)
                    )
                )
            )
            conn.execute(delete(folder).where(folder.c.mailbox_id == mailbox_id))
            conn.execute(delete(subscription).where(subscription.c.mailbox_id == mailbox_id))
            return _orphans(conn, blob_ids)

        return await self._db.write(run)

    async def create_folder(self, mailbox_id: int, name: str) -> Folder:
        key = check_folder_name(name)

        def run(conn: Connection) -> Folder:
            existing = _folder_names(conn, mailbox_id)
            if key == "Inbox" or key in existing:
                raise AlreadyExists(f"folder {name!r} exists in mailbox {mailbox_id}")
            _create_parents(conn, mailbox_id, key, set(existing))
            return _insert_folder(conn, mailbox_id, key)

        return await self._db.write(run)

    async def rename_folder(self, mailbox_id: int, old: str, new: str) -> Folder:
        old_key = folder_key(old)
        if old_key == "Inbox":
            raise DefaultFolderProtected("renaming INBOX is not supported")
        new_key = check_folder_name(new)

        def run(conn: Connection) -> Folder:
            existing = _folder_names(conn, mailbox_id)
            source_id = existing.get(old_key)
            if source_id is None:
                raise FolderNotFound(f"folder {old!r} not found in mailbox {mailbox_id}")
            if old_key in DEFAULT_FOLDER_NAMES:
                raise DefaultFolderProtected(f"default folder {old_key!r} cannot be renamed")
            if is_below(new_key, old_key):
                raise InvalidName(f"folder {old!r} cannot move below itself")
            moving = {
                fid: new_key + name[len(old_key) :]
                for name, fid in existing.items()
                if name == old_key or is_below(name, old_key)
            }
            if new_key == "Inbox" or any(t in existing for t in moving.values()):
                raise AlreadyExists(f"folder {new!r} exists in mailbox {mailbox_id}")
            _create_parents(conn, mailbox_id, new_key, set(existing))
            conn.execute(
                update(folder)
                .where(folder.c.id == bindparam("folder_id"))
                .values(name=bindparam("new_name")),
                [{"folder_id": fid, "new_name": target} for fid, target in moving.items()],
            )
            return _get_folder(conn, source_id)

        return await self._db.write(run)

    async def delete_folder(self, mailbox_id: int, name: str) -> list[str]:
        key = folder_key(name)

        def run(conn: Connection) -> list[str]:
            existing = _folder_names(conn, mailbox_id)
            folder_id = existing.get(key)
            if folder_id is None:
                raise FolderNotFound(f"folder {name!r} not found in mailbox {mailbox_id}")
            if key in DEFAULT_FOLDER_NAMES:
                raise DefaultFolderProtected(f"default folder {key!r} cannot be deleted")
            if any(is_below(other, key) for other in existing):
                raise FolderHasChildren(f"folder {name!r} has subfolders")
            blob_ids = set(
                conn.execute(
                    select(item.c.blob_id).where(item.c.folder_id == folder_id).distinct()
                ).scalars()
            )
            conn.execute(delete(item).where(item.c.folder_id == folder_id))
            conn.execute(delete(expunged_item).where(expunged_item.c.folder_id == folder_id))
            conn.execute(delete(folder).where(folder.c.id == folder_id))
            return _orphans(conn, blob_ids)

        return await self._db.write(run)

    async def copy_items(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        def run(conn: Connection) -> list[tuple[int, int]]:
            rows = _transfer_rows(conn, folder_id, uids, dest_folder_id)
            if not rows:
                return []
            cur = driver_cursor(conn)
            first, modseq = _arrive(cur, dest_folder_id, rows)
            cur.executemany(
                _COPY_ITEM_SQL,
                [(dest_folder_id, first + n, modseq, r[0]) for n, r in enumerate(rows)],
            )
            return [(r[1], first + n) for n, r in enumerate(rows)]

        return await self._db.write(run)

    async def move_items(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        def run(conn: Connection) -> list[tuple[int, int]]:
            rows = _transfer_rows(conn, folder_id, uids, dest_folder_id)
            if not rows:
                return []
            cur = driver_cursor(conn)
            # The expunge half first, then the copy half: within one folder (a
            # move there is allowed and renumbers) both apply in turn.
            cur.execute(
                _TRANSFER_LEAVE_SQL,
                (len(rows), sum(_unseen(r[2]) for r in rows), sum(r[3] for r in rows), folder_id),
            )
            _bury(cur, folder_id, [r[1] for r in rows])
            first, modseq = _arrive(cur, dest_folder_id, rows)
            cur.executemany(
                _MOVE_ITEM_SQL,
                [(dest_folder_id, first + n, modseq, r[0]) for n, r in enumerate(rows)],
            )
            return [(r[1], first + n) for n, r in enumerate(rows)]

        return await self._db.write(run)

    async def subscribe(self, mailbox_id: int, name: str) -> None:
        key = check_folder_name(name)

        def run(conn: Connection) -> None:
            found = conn.scalar(
                select(subscription.c.name).where(
                    subscription.c.mailbox_id == mailbox_id, subscription.c.name == key
                )
            )
            if found is None:
                conn.execute(insert(subscription).values(mailbox_id=mailbox_id, name=key))

        await self._db.write(run)

    async def unsubscribe(self, mailbox_id: int, name: str) -> None:
        key = folder_key(name)

        def run(conn: Connection) -> None:
            gone = conn.execute(
                delete(subscription).where(
                    subscription.c.mailbox_id == mailbox_id, subscription.c.name == key
                )
            )
            if gone.rowcount == 0:
                raise NotFound(f"{name!r} is not subscribed in mailbox {mailbox_id}")

        await self._db.write(run)

    async def list_subscriptions(self, mailbox_id: int) -> list[str]:
        def run(conn: Connection) -> list[str]:
            return list(
                conn.execute(
                    select(subscription.c.name)
                    .where(subscription.c.mailbox_id == mailbox_id)
                    .order_by(subscription.c.name)
                ).scalars()
            )

        return await self._db.read(run)


def _arrive(
    cur: Cursor, dest_folder_id: int, rows: list[tuple[int, int, int, int]]
) -> tuple[int, int]:
    """Take UIDs for `rows` in the destination and adjust its counters; one change,
    so one new MODSEQ that every arrival takes. Returns (first new uid, modseq)."""
    uidnext, modseq = cur.execute(
        _TRANSFER_ARRIVE_SQL,
        (
            len(rows),
            len(rows),
            sum(_unseen(r[2]) for r in rows),
            sum(r[3] for r in rows),
            dest_folder_id,
        ),
    ).fetchone()
    return uidnext - len(rows), modseq


def _take_uidvalidity(conn: Connection) -> int:
    """A new UIDVALIDITY: from the clock, above every value handed out before
    (the `sequence` high-water mark, as in create_default_folders)."""
    last = conn.scalar(select(sequence.c.value).where(sequence.c.name == _UIDV))
    value = max(int(time.time()), (last or 0) + 1)
    if last is None:
        conn.execute(insert(sequence).values(name=_UIDV, value=value))
    else:
        conn.execute(update(sequence).where(sequence.c.name == _UIDV).values(value=value))
    return value


def _insert_folder(conn: Connection, mailbox_id: int, key: str) -> Folder:
    row = (
        conn.execute(
            insert(folder)
            .values(
                mailbox_id=mailbox_id,
                name=key,
                container_class="IPF.Note",
                special_use=None,
                uidvalidity=_take_uidvalidity(conn),
                uidnext=1,
                highest_modseq=1,
                messages=0,
                unseen=0,
                size=0,
            )
            .returning(*folder.c)
        )
        .mappings()
        .one()
    )
    return _folder(row)


def _create_parents(conn: Connection, mailbox_id: int, key: str, existing: set[str]) -> None:
    # RFC 9051 §6.3.4 / §6.3.6: superiors a new name needs are created too.
    for parent in folder_parents(key):
        if parent not in existing:
            _insert_folder(conn, mailbox_id, parent)


def _folder_names(conn: Connection, mailbox_id: int) -> dict[str, int]:
    # A mailbox has tens or hundreds of folders: reading every name is one
    # small index range, simpler than prefix matching in SQL.
    rows = conn.execute(select(folder.c.name, folder.c.id).where(folder.c.mailbox_id == mailbox_id))
    return {name: fid for name, fid in rows}


def _get_folder(conn: Connection, folder_id: int) -> Folder:
    row = conn.execute(select(folder).where(folder.c.id == folder_id)).mappings().first()
    if row is None:
        raise FolderNotFound(f"folder {folder_id} not found")
    return _folder(row)


def _transfer_rows(
    conn: Connection, folder_id: int, uids: Sequence[int], dest_folder_id: int
) -> list[tuple[int, int, int, int]]:
    """(id, uid, flags, size) of the items a copy or move takes, in UID order,
    after checking both folders."""
    found = conn.execute(
        select(folder.c.id, folder.c.mailbox_id).where(folder.c.id.in_({folder_id, dest_folder_id}))
    ).all()
    mailboxes = {fid: mailbox_id for fid, mailbox_id in found}
    for fid in (folder_id, dest_folder_id):
        if fid not in mailboxes:
            raise FolderNotFound(f"folder {fid} not found")
    if mailboxes[folder_id] != mailboxes[dest_folder_id]:
        raise NotPermitted("items cannot be copied or moved to another mailbox")
    rows: list[tuple[int, int, int, int]] = []
    for chunk in _chunks(uids):
        rows.extend(
            (r.id, r.uid, r.flags, r.size)
            for r in conn.execute(
                select(item.c.id, item.c.uid, item.c.flags, item.c.size).where(
                    item.c.folder_id == folder_id, item.c.uid.in_(chunk)
                )
            )
        )
    rows.sort(key=lambda r: r[1])
    return rows


def _orphans(conn: Connection, blob_ids: set[str]) -> list[str]:
    """Those of `blob_ids` that no item refers to any more (the blob_id index)."""
    orphans = []
    for blob_id in sorted(blob_ids):
        still = conn.scalar(select(item.c.id).where(item.c.blob_id == blob_id).limit(1))
        if still is None:
            orphans.append(blob_id)
    return orphans


def _replace_flags(i: Item, flags: int, keywords: tuple[str, ...], modseq: int) -> Item:
    return replace(i, flags=flags, keywords=keywords, modseq=modseq)


def _list_folders(conn: Connection, mailbox_id: int) -> list[Folder]:
    rows = conn.execute(
        select(folder).where(folder.c.mailbox_id == mailbox_id).order_by(folder.c.id)
    )
    return [_folder(r) for r in rows.mappings()]
