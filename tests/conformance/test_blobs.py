"""BlobStore conformance (memory, files, and the database store on SQLite and
PostgreSQL), plus the file store's crash behaviour."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postwerk.core.errors import NotFound
from postwerk.store import blobs as file_blobs
from postwerk.store.blobs import FileBlobStore
from postwerk.store.memory import MemoryBlobStore
from postwerk.store.sqlite.blob_table import DatabaseBlobStore
from postwerk.store.sqlite.database import Database
from tests.pg import pg_database, unavailable


@pytest.fixture(params=["memory", "file", "database-sqlite", "database-postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_path: Path, pg_template: str | None
) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryBlobStore()
    elif request.param == "file":
        yield await FileBlobStore.open(tmp_path / "blobs")
    elif request.param == "database-sqlite":
        db = await Database.open(sqlite_path)
        try:
            yield DatabaseBlobStore(db)
        finally:
            await db.close()
    else:
        if pg_template is None:
            unavailable(RuntimeError("the server did not answer"))
        async with pg_database("postwerk_test", pg_template) as url:
            db = await Database.open(url)
            try:
                yield DatabaseBlobStore(db)
            finally:
                await db.close()


async def put(store: Any, *parts: bytes) -> str:
    w = store.writer()
    for p in parts:
        await w.write(p)
    blob_id: str = await w.commit()
    return blob_id


async def test_write_read_stream_size(store: Any) -> None:
    w = store.writer()
    await w.write(b"Subject: hi\r\n\r\n")
    await w.write(b"body\r\n")
    assert w.size == 21
    blob_id = await w.commit()
    assert await store.read(blob_id) == b"Subject: hi\r\n\r\nbody\r\n"
    assert await store.size(blob_id) == 21
    chunks = [c async for c in store.stream(blob_id, chunk_size=8)]
    assert [len(c) for c in chunks] == [8, 8, 5]
    assert b"".join(chunks) == b"Subject: hi\r\n\r\nbody\r\n"
    assert await store.ids() == [blob_id]


async def test_large_blob_crosses_flush_boundary(store: Any) -> None:
    data = os.urandom(file_blobs.FLUSH_AT + 12345)
    blob_id = await put(
        store, data[:1000], data[1000 : file_blobs.FLUSH_AT + 5], data[file_blobs.FLUSH_AT + 5 :]
    )
    assert await store.read(blob_id) == data


async def test_empty_blob(store: Any) -> None:
    blob_id = await put(store)
    assert await store.read(blob_id) == b""
    assert await store.size(blob_id) == 0


async def test_ids_unique_and_sortable(store: Any) -> None:
    ids = [await put(store, b"%d" % n) for n in range(20)]
    assert len(set(ids)) == 20
    assert ids == sorted(ids)  # time-ordered
    assert await store.ids() == ids


async def test_abort_leaves_nothing(store: Any) -> None:
    w = store.writer()
    await w.write(b"x" * (file_blobs.FLUSH_AT + 1))  # forces a temp file on disk
    await w.abort()
    assert await store.ids() == []
    with pytest.raises(RuntimeError):
        await w.write(b"more")
    if isinstance(store, FileBlobStore):
        assert list(store.tmp_dir.iterdir()) == []


async def test_commit_twice_refused(store: Any) -> None:
    w = store.writer()
    await w.write(b"x")
    await w.commit()
    with pytest.raises(RuntimeError):
        await w.commit()


async def test_missing_and_delete(store: Any) -> None:
    blob_id = await put(store, b"data")
    await store.delete(blob_id)
    await store.delete(blob_id)  # idempotent
    for bad in (blob_id, "../../etc/passwd", "zz"):
        with pytest.raises(NotFound):
            await store.read(bad)
        with pytest.raises(NotFound):
            await store.size(bad)
        with pytest.raises(NotFound):
            async for _ in store.stream(bad):
                pass


async def test_file_layout_and_crash_cleanup(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = await FileBlobStore.open(root)
    blob_id = await put(store, b"hello")
    assert (root / blob_id[:4] / blob_id[4:6] / blob_id).read_bytes() == b"hello"
    # A writer that "crashed" mid-write leaves a temp file and no blob.
    w = store.writer()
    await w.write(b"y" * (file_blobs.FLUSH_AT + 1))
    assert len(list(store.tmp_dir.iterdir())) == 1
    assert await store.ids() == [blob_id]  # the half-written blob is invisible
    reopened = await FileBlobStore.open(root)
    assert list(reopened.tmp_dir.iterdir()) == []
    assert await reopened.read(blob_id) == b"hello"


async def test_small_message_costs_one_thread_hop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await FileBlobStore.open(tmp_path / "blobs")
    hops = 0
    real = file_blobs.asyncio.to_thread

    async def counting(fn: Any, *args: Any, **kw: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real(fn, *args, **kw)

    monkeypatch.setattr(file_blobs.asyncio, "to_thread", counting)
    w = store.writer()
    for _ in range(10):
        await w.write(b"z" * 1024)
    await w.commit()
    assert hops == 1


async def test_concurrent_commits_share_directory_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await FileBlobStore.open(tmp_path / "blobs")
    calls = 0
    real = file_blobs._fsync_dir

    def counting(path: Path) -> None:
        nonlocal calls
        calls += 1
        real(path)

    monkeypatch.setattr(file_blobs, "_fsync_dir", counting)
    ids = await asyncio.gather(*(put(store, b"x%d" % i) for i in range(40)))
    assert len(set(ids)) == 40
    for blob_id in ids:
        assert await store.read(blob_id) == b"x%d" % ids.index(blob_id)
    # Each commit is durable, but the renames into one time bucket share fsyncs.
    assert calls < 40, calls


async def test_read_many_and_delete_many(store: Any) -> None:
    a = await put(store, b"first")
    b = await put(store, b"second")
    await store.delete(b)
    c = await put(store, b"third")
    assert await store.read_many([a, b, c]) == {a: b"first", c: b"third"}  # b is gone
    assert await store.read_many([]) == {}
    # Leading octets only, for the blobs named in `limits` (a message's header).
    assert await store.read_many([a, c], limits={a: 3}) == {a: b"fir", c: b"third"}
    assert await store.read_many([a], inline=True, limits={a: 0}) == {a: b""}
    await store.delete_many([a, b, c])  # b already gone: idempotent
    await store.delete_many([])
    assert await store.read_many([a, c]) == {}
    assert a not in await store.ids()


async def test_read_many_limits_across_a_megabyte(store: Any) -> None:
    # Past the database store's 1 MiB chunk: a limit within the first chunk, and
    # one beyond it, read exactly that many octets.
    big = bytes(range(256)) * 4500  # 1,152,000 octets
    blob_id = await put(store, big)
    mib = 1024 * 1024
    got = await store.read_many([blob_id], limits={blob_id: 10})
    assert got == {blob_id: big[:10]}
    got = await store.read_many([blob_id], limits={blob_id: mib + 5})
    assert got == {blob_id: big[: mib + 5]}
    assert await store.read_many([blob_id]) == {blob_id: big}
