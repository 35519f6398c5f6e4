"""Message bodies as immutable files: `root/<id[:4]>/<id[4:6]>/<blob id>`.

Invariants:
- Nothing half-written is ever visible under a blob id. A writer fills a temp
  file in `root/tmp/`; `commit` fsyncs it, renames it into place (atomic on
  POSIX) and fsyncs the directory, so once `commit` returns the blob survives
  power loss (like Postfix: a queue file is "ready" only after its fsync).
- Leftovers in `root/tmp/` are garbage from a crash; `open` removes them.
- Blobs never change after commit; they are deleted only when no queue entry or
  item refers to them (the caller decides; `delete` is idempotent).

Blob ids are `core.ids.new_id()` (time-sortable), and the directories follow
the id's time prefix: a leaf directory collects the blobs of about 17 seconds,
so concurrent commits rename into the same directory and one directory fsync
covers them all (`_DirSync`: group fsync, like a database's group commit).
File I/O runs in worker threads, in pieces of at least `FLUSH_AT` bytes: a
typical message costs one thread hop, at commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from postwerk.core.errors import NotFound
from postwerk.core.ids import new_id

# Buffer small writes in memory up to this size before a thread hop.
FLUSH_AT = 256 * 1024

_BLOB_ID = re.compile(r"[0-9a-f]{20}")
_TOP = re.compile(r"[0-9a-f]{4}")
_LEAF = re.compile(r"[0-9a-f]{2}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _read_file(path: str, limit: int) -> bytes:
    """The first `limit` octets of a file (all of it for -1), with bare os calls:
    for the many small files of an IMAP header page, Python's buffered file
    objects cost more than the reading (about 20 µs against 9 µs a file)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        want = os.fstat(fd).st_size if limit < 0 else limit
        data = os.read(fd, want)
        if len(data) < want:  # a short read: gather the rest, up to end of file
            parts = [data]
            got = len(data)
            while got < want and (chunk := os.read(fd, want - got)):
                parts.append(chunk)
                got += len(chunk)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def _fsync_dir(path: str | Path) -> None:
    # A rename or a new entry is durable only once its directory is fsynced.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirSync:
    """Group fsync of one directory across threads.

    A caller's rename is durable once an fsync that *started after* the rename
    has finished. Callers queue up; one fsyncs on behalf of everyone who asked
    before it started, the others wait for that result.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0
        self._synced = 0
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._synced < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                target = self._requested
                self._cond.release()
                try:
                    _fsync_dir(self.path)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                self._synced = max(self._synced, target)

    @property
    def idle(self) -> bool:
        return not self._running and self._synced == self._requested


class FileBlobWriter:
    """One blob being written; see the module invariants.

    Plain file descriptors and `os` calls, no file objects or `tempfile`: the
    thread that commits a blob competes with the event loop for the GIL, and
    every Python step it saves is one the loop gets.
    """

    def __init__(self, store: FileBlobStore) -> None:
        self._store = store
        self._buffer = bytearray()
        self._fd: int | None = None
        self._tmp: str | None = None
        self._done = False
        self.size = 0

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer is finished")
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= FLUSH_AT:
            chunk = bytes(self._buffer)
            self._buffer.clear()
            await asyncio.to_thread(self._write_sync, chunk)

    async def commit(self) -> str:
        """fsync, rename into place, fsync the directory; return the new blob id."""
        if self._done:
            raise RuntimeError("blob writer is finished")
        self._done = True
        chunk = bytes(self._buffer)
        self._buffer.clear()
        try:
            return await asyncio.to_thread(self._commit_sync, chunk)
        except Exception:
            await asyncio.to_thread(self._discard_sync)
            raise

    async def abort(self) -> None:
        self._done = True
        self._buffer.clear()
        if self._fd is not None or self._tmp is not None:
            await asyncio.to_thread(self._discard_sync)

    # ---------------------------------------------------------------- threads

    def _write_sync(self, chunk: bytes) -> None:
        if self._fd is None:
            # The temp name is unique by itself (time + 32 random bits; O_EXCL checks).
            self._tmp = os.path.join(self._store.tmp_dir, new_id() + ".tmp")
            self._fd = os.open(self._tmp, _CREATE, 0o640)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]

    def _commit_sync(self, chunk: bytes) -> str:
        self._write_sync(chunk)
        assert self._fd is not None and self._tmp is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        while True:
            blob_id = new_id()
            leaf = self._store.leaf(blob_id)
            final = os.path.join(leaf, blob_id)
            # Ids collide only with the same µs and the same 32 random bits;
            # never overwrite a committed blob even then.
            if not os.path.exists(final):
                break
        os.rename(self._tmp, final)
        self._tmp = None
        self._store.dir_sync(leaf).sync()
        return blob_id

    def _discard_sync(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


class BufferedBlobWriter:
    """A writer that keeps the blob in memory and hands it, whole, to `persist` at
    commit, which stores it and returns its id: the memory store, and the
    database store (store/sqlite/blob_table.py), where nothing may be written
    before the id is final."""

    def __init__(self, persist: Callable[[bytes], Awaitable[str]]) -> None:
        self._persist = persist
        self._parts: list[bytes] = []
        self._done = False
        self.size = 0

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer is finished")
        self._parts.append(bytes(data))
        self.size += len(data)

    async def commit(self) -> str:
        if self._done:
            raise RuntimeError("blob writer is finished")
        self._done = True
        data = b"".join(self._parts)
        self._parts = []
        return await self._persist(data)

    async def abort(self) -> None:
        self._done = True
        self._parts = []


class FileBlobStore:
    """BlobStore on a local directory. Use `await FileBlobStore.open(root)` at startup."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._root_str = str(self.root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._syncs: dict[str, _DirSync] = {}
        self._syncs_lock = threading.Lock()
        self._leaves: set[str] = set()  # fan-out directories known to exist

    def leaf(self, blob_id: str) -> str:
        """The directory of a blob, created (durably) if it is new; from worker threads."""
        leaf = os.path.join(self.root, blob_id[:4], blob_id[4:6])
        if leaf not in self._leaves:
            self.ensure_fanout(Path(leaf))
            if len(self._leaves) > 4096:  # leaves change every ~17 s; forget old ones
                self._leaves.clear()
            self._leaves.add(leaf)
        return leaf

    def dir_sync(self, directory: str) -> _DirSync:
        with self._syncs_lock:
            found = self._syncs.get(directory)
            if found is None:
                if len(self._syncs) > 64:  # buckets age out every ~17 s
                    self._syncs = {p: s for p, s in self._syncs.items() if not s.idle}
                found = self._syncs[directory] = _DirSync(directory)
            return found

    @classmethod
    async def open(cls, root: Path) -> FileBlobStore:
        """Construct and remove what a crash left in `tmp/`."""
        store = cls(root)
        await store.cleanup_temp()
        return store

    async def cleanup_temp(self) -> int:
        """Remove half-written temp files; return how many. Call only at startup:
        it would also remove files of writers still in progress."""

        def run() -> int:
            removed = 0
            for entry in self.tmp_dir.iterdir():
                if entry.is_file():
                    entry.unlink(missing_ok=True)
                    removed += 1
            return removed

        return await asyncio.to_thread(run)

    def path(self, blob_id: str) -> Path:
        """Where a blob lives. Raises NotFound for anything that is not a blob id,
        so a crafted id can never name a path outside the store."""
        if not _BLOB_ID.fullmatch(blob_id):
            raise NotFound(f"blob {blob_id!r} not found")
        return self.root / blob_id[:4] / blob_id[4:6] / blob_id

    def _file(self, blob_id: str) -> str:
        """`path` as a string, without pathlib's per-call cost (hot read paths)."""
        if not _BLOB_ID.fullmatch(blob_id):
            raise NotFound(f"blob {blob_id!r} not found")
        return f"{self._root_str}/{blob_id[:4]}/{blob_id[4:6]}/{blob_id}"

    def ensure_fanout(self, directory: Path) -> None:
        """Create a leaf directory (and its parent) durably; sync, from worker threads."""
        if directory.is_dir():
            return
        parent = directory.parent
        if not parent.is_dir():
            parent.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        directory.mkdir(exist_ok=True)
        _fsync_dir(parent)

    def writer(self) -> FileBlobWriter:
        return FileBlobWriter(self)

    async def read(self, blob_id: str) -> bytes:
        path = self.path(blob_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"blob {blob_id} not found") from None

    async def stream(self, blob_id: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        path = self.path(blob_id)
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {blob_id} not found") from None
        try:
            while chunk := await asyncio.to_thread(f.read, chunk_size):
                yield chunk
        finally:
            f.close()

    async def size(self, blob_id: str) -> int:
        path = self.path(blob_id)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {blob_id} not found") from None

    async def delete(self, blob_id: str) -> None:
        """Idempotent: garbage collection may run twice after a crash."""
        path = self.path(blob_id)
        await asyncio.to_thread(path.unlink, True)

    async def read_many(
        self,
        blob_ids: Sequence[str],
        *,
        inline: bool = False,
        limits: Mapping[str, int] | None = None,
    ) -> dict[str, bytes]:
        wanted = limits or {}
        paths = [(b, self._file(b), wanted.get(b, -1)) for b in blob_ids]

        def run() -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for blob_id, path, limit in paths:
                try:
                    found[blob_id] = _read_file(path, limit)
                except FileNotFoundError:
                    pass
            return found

        if inline:
            return run()
        return await asyncio.to_thread(run)

    async def delete_many(self, blob_ids: Sequence[str]) -> None:
        paths = [self.path(b) for b in blob_ids]

        def run() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        if paths:
            await asyncio.to_thread(run)

    async def ids(self) -> list[str]:
        def run() -> list[str]:
            found: list[str] = []
            for top in self.root.iterdir():
                if not (top.is_dir() and _TOP.fullmatch(top.name)):
                    continue
                for leaf in top.iterdir():
                    if leaf.is_dir() and _LEAF.fullmatch(leaf.name):
                        found.extend(p.name for p in leaf.iterdir() if _BLOB_ID.fullmatch(p.name))
            return sorted(found)

        return await asyncio.to_thread(run)
