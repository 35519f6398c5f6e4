"""BlobStore in the database (`[database] blobs = "database"`): message files in
a table, so that servers sharing a PostgreSQL database share their messages too
and no shared file system is needed (issue M4).

Purpose: the same contract as `store.blobs.FileBlobStore` — immutable blobs,
an id known only once the blob is durable — over the `blob_chunk` table
(migration 0008). A blob is stored as chunks of `CHUNK` octets, so a large
message streams chunk by chunk and a header read fetches the first chunk only.

Invariants:
- `commit` writes every chunk in one transaction through the database's writer
  (group commit): when it returns the blob is durable, and a crash before
  leaves no chunk behind. Until then the writer holds the message in memory
  (bounded by the message size limits), as nothing may reach the table before
  the id is final.
- Ids are `core.ids.new_id()`, as for files: sortable, never reused.
- Works on any database the stores run on (SQLite and PostgreSQL); on SQLite
  the file store is the better choice (it keeps the database small).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from postwerk.core.errors import NotFound
from postwerk.core.ids import new_id
from postwerk.store.blobs import BufferedBlobWriter
from postwerk.store.sqlite.database import Database
from postwerk.store.sqlite.schema import blob_chunk

CHUNK: Final = 1024 * 1024


class DatabaseBlobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def writer(self) -> BufferedBlobWriter:
        return BufferedBlobWriter(self._put)

    async def _put(self, data: bytes) -> str:
        """All chunks in one transaction of the group commit: durable on return."""
        blob_id = new_id()
        rows = [
            {"blob_id": blob_id, "seq": n, "data": data[start : start + CHUNK]}
            for n, start in enumerate(range(0, max(len(data), 1), CHUNK))
        ]

        def run(conn: Connection) -> None:
            conn.execute(insert(blob_chunk), rows)

        await self.db.write(run)
        return blob_id

    async def read(self, blob_id: str) -> bytes:
        def run(conn: Connection) -> list[bytes]:
            rows = conn.execute(
                select(blob_chunk.c.data)
                .where(blob_chunk.c.blob_id == blob_id)
                .order_by(blob_chunk.c.seq)
            )
            return [bytes(r[0]) for r in rows]

        chunks = await self.db.read(run)
        if not chunks:
            raise NotFound(f"blob {blob_id} not found")
        return b"".join(chunks)

    async def stream(self, blob_id: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        seq = 0
        while True:
            chunk = await self._chunk(blob_id, seq)
            if chunk is None:
                if seq == 0:
                    raise NotFound(f"blob {blob_id} not found")
                return
            for start in range(0, len(chunk), chunk_size):
                yield chunk[start : start + chunk_size]
            seq += 1

    async def _chunk(self, blob_id: str, seq: int) -> bytes | None:
        def run(conn: Connection) -> bytes | None:
            row = conn.execute(
                select(blob_chunk.c.data).where(
                    blob_chunk.c.blob_id == blob_id, blob_chunk.c.seq == seq
                )
            ).first()
            return None if row is None else bytes(row[0])

        return await self.db.read(run)

    async def size(self, blob_id: str) -> int:
        def run(conn: Connection) -> int | None:
            total: int | None = conn.execute(
                select(func.sum(func.length(blob_chunk.c.data))).where(
                    blob_chunk.c.blob_id == blob_id
                )
            ).scalar()
            return total

        total = await self.db.read(run)
        if total is None:
            raise NotFound(f"blob {blob_id} not found")
        return int(total)

    async def delete(self, blob_id: str) -> None:
        await self.delete_many([blob_id])

    async def read_many(
        self,
        blob_ids: Sequence[str],
        *,
        inline: bool = False,
        limits: Mapping[str, int] | None = None,
    ) -> dict[str, bytes]:
        wanted = limits or {}
        if not blob_ids:
            return {}

        # A header read (a limit within the first chunk) fetches that chunk only.
        heads = [b for b in blob_ids if 0 <= wanted.get(b, -1) <= CHUNK]
        whole = [b for b in blob_ids if not 0 <= wanted.get(b, -1) <= CHUNK]

        def run(conn: Connection) -> dict[str, list[bytes]]:
            found: dict[str, list[bytes]] = {}
            query = select(blob_chunk.c.blob_id, blob_chunk.c.data).order_by(
                blob_chunk.c.blob_id, blob_chunk.c.seq
            )
            for ids, first_only in ((heads, True), (whole, False)):
                if not ids:
                    continue
                chosen = query.where(blob_chunk.c.blob_id.in_(ids))
                if first_only:
                    chosen = chosen.where(blob_chunk.c.seq == 0)
                for blob_id, data in conn.execute(chosen):
                    found.setdefault(blob_id, []).append(bytes(data))
            return found

        chunks = await self.db.read(run)
        out: dict[str, bytes] = {}
        for blob_id, parts in chunks.items():
            data = b"".join(parts)
            limit = wanted.get(blob_id, -1)
            out[blob_id] = data if limit < 0 else data[:limit]
        return out

    async def delete_many(self, blob_ids: Sequence[str]) -> None:
        """Idempotent, like the file store's."""
        ids = list(blob_ids)
        if not ids:
            return

        def run(conn: Connection) -> None:
            conn.execute(delete(blob_chunk).where(blob_chunk.c.blob_id.in_(ids)))

        await self.db.write(run)

    async def ids(self) -> list[str]:
        def run(conn: Connection) -> list[str]:
            rows = conn.execute(select(blob_chunk.c.blob_id).distinct())
            return sorted(r[0] for r in rows)

        return await self.db.read(run)
