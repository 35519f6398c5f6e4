"""The SQL database handle: pooled async readers and ONE group-committing writer.

Invariants:
- Every write goes through `Database.write`, which hands the job to a single
  writer task. The writer drains up to `MAX_BATCH` pending jobs, runs them in
  ONE transaction, each inside its own SAVEPOINT, and commits once. A failing
  job rolls back to its savepoint and raises to its own caller only.
- A caller's future resolves only after the COMMIT returned, i.e. after the
  fsync (synchronous=FULL): when `write` returns, the change survives a crash or
  power loss. That is what lets SMTP answer 250 right after `enqueue`.
- Reads run on pooled async connections inside a deferred BEGIN, so a
  multi-statement read sees one snapshot (WAL lets readers run beside the writer).
- The database is never migrated implicitly: see `migrations.migrate`.

Why group commit: one fsync per batch instead of per job, so hundreds of
concurrent SMTP sessions cost a handful of commits per second.

Why write jobs are synchronous functions of a `Connection`: a batch then runs
in ONE hop to the writer's thread. Through aiosqlite every statement costs
several thread hops (≈0.3 ms each on a busy host), which capped delivery at a
few hundred per second; a whole batch in one hop is an order of magnitude
faster. On SQLite the writer uses the stdlib driver on a dedicated thread; on
other databases (asyncpg, M4) the same job functions run through
`AsyncConnection.run_sync`, so backends are written once.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

T = TypeVar("T")

# Upper bound on jobs per transaction: keeps one batch's latency bounded.
MAX_BATCH = 256
# Threads (and stdlib connections) serving reads.
PG_POOL_SIZE = 20  # PostgreSQL connections kept per process (half as many more at peaks)
READERS = 4

WriteFn = Callable[[Connection], Any]


# Positional parameters for `?`, or a mapping for `:name` (as sqlite3 takes them).
Params = Sequence[Any] | Mapping[str, Any]


class Cursor(Protocol):
    """What the hot paths use of a DB-API cursor (sqlite3's, or `DialectCursor`)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, parameters: Params = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params], /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def driver_cursor(conn: Connection) -> Cursor:
    """A stdlib cursor on the connection under `conn`, inside its transaction.

    For the write hot paths only (delivery, queue, tracking): they run prepared
    SQL text here instead of SQLAlchemy statements, whose per-execution Python
    cost exceeded SQLite's own work and held the GIL against the event loop.
    On another database (PostgreSQL) the same SQL goes through `DialectCursor`.
    """
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):
        return raw.cursor()
    return DialectCursor(conn)


_QMARK = re.compile(r"\?")
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=256)
def _rewrite(sql: str, style: str) -> tuple[str, tuple[str, ...]]:
    """A statement in the dialect's placeholders, and the parameter names in order
    when it used `:name` ones. Cached: the hot paths run a few fixed statements."""
    names = tuple(_NAMED.findall(sql))
    if names:
        sql = _NAMED.sub("?", sql)
    if style == "qmark":
        return sql, names
    if style == "numeric_dollar":
        n = itertools.count(1)
        return _QMARK.sub(lambda _m: f"${next(n)}", sql), names
    if style in ("format", "pyformat"):
        return sql.replace("%", "%%").replace("?", "%s"), names
    raise TypeError(f"no placeholder rewrite for paramstyle {style!r}")


class DialectCursor:
    """The hot paths' SQL (written with `?` parameters, as sqlite3 takes them) on
    another database: placeholders rewritten to the dialect's style, statements
    run through SQLAlchemy's driver-level execution in the caller's transaction.
    The SQL must not contain a literal "?" (none of ours does)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._result: Any = None
        self.rowcount = -1

    def _sql(self, sql: str) -> tuple[str, tuple[str, ...]]:
        return _rewrite(sql, self._conn.dialect.paramstyle)

    @staticmethod
    def _values(parameters: Params, names: tuple[str, ...]) -> tuple[Any, ...]:
        if isinstance(parameters, Mapping):
            return tuple(parameters[name] for name in names)
        return tuple(parameters)

    def execute(self, sql: str, parameters: Params = (), /) -> DialectCursor:
        text, names = self._sql(sql)
        self._result = self._conn.exec_driver_sql(text, self._values(parameters, names))
        self.rowcount = self._result.rowcount
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params], /) -> DialectCursor:
        text, names = self._sql(sql)
        rows = [self._values(p, names) for p in seq_of_parameters]
        if rows:
            self._result = self._conn.exec_driver_sql(text, rows)
            self.rowcount = self._result.rowcount
        return self

    def fetchone(self) -> Any:
        return self._result.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._result.fetchall())


def to_url(url_or_path: str | Path) -> str:
    """A path (or a URL) to an async SQLAlchemy URL; bare paths mean SQLite."""
    text = str(url_or_path)
    if "://" in text:
        return text
    return f"sqlite+aiosqlite:///{Path(text).resolve()}"


def _check_url(url: str) -> None:
    if url.startswith("sqlite") and (":memory:" in url or url.rstrip("/").endswith(":")):
        # An in-memory database is private to one connection, and the writer
        # and the readers use different ones; use a file (tmp_path in tests).
        raise ValueError("in-memory SQLite is not supported; use a file path")


def make_engine(url_or_path: str | Path, *, foreign_keys: bool = True) -> AsyncEngine:
    """An async engine with postwerk's connection settings.

    `foreign_keys=False` is for migrations only: alembic batch mode copies and
    drops tables, and with foreign keys on, dropping a parent would cascade.
    """
    url = to_url(url_or_path)
    _check_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
    else:
        # PostgreSQL: enough pooled connections for the sessions that read at once; with
        # the default (5 kept, 10 more made and closed again) 20 IMAP sessions spent a
        # tenth of their time opening connections, and lost each one's statement cache.
        engine = create_async_engine(url, pool_size=PG_POOL_SIZE, max_overflow=PG_POOL_SIZE // 2)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine.sync_engine, foreign_keys=foreign_keys)
    return engine


def make_sync_reader_engine(url_or_path: str | Path, pool_size: int = READERS) -> Engine | None:
    """For SQLite, the stdlib-driver engine `Database.read` uses from its threads
    (and, with pool_size 1, the one `read_now` uses on the event loop's thread)."""
    url = make_url(to_url(url_or_path))
    if url.get_backend_name() != "sqlite":
        return None
    # One connection per reader thread; SQLAlchemy lets file connections move between
    # threads (check_same_thread=False), and each is used by one thread at a time.
    engine = create_engine(url.set(drivername="sqlite"), pool_size=pool_size, max_overflow=0)
    _configure_sqlite(engine, foreign_keys=True)
    return engine


def make_sync_writer_engine(url_or_path: str | Path) -> Engine | None:
    """For SQLite, the stdlib-driver engine the writer thread uses; else None."""
    url = make_url(to_url(url_or_path))
    if url.get_backend_name() != "sqlite":
        return None
    # One connection, only ever used from the writer's single thread.
    engine = create_engine(url.set(drivername="sqlite"), pool_size=1, max_overflow=0)
    _configure_sqlite(engine, foreign_keys=True)
    return engine


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (its legacy mode
        # skips BEGIN before SELECT and SAVEPOINT); we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers beside the writer
            # FULL: a commit is fsynced before it returns, so an acknowledged
            # message survives power loss, not only a process crash.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA busy_timeout=5000")  # other processes (CLI) may write
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # The writer takes the write lock up front: a deferred BEGIN that later
        # upgrades can fail with SQLITE_BUSY instead of waiting.
        if conn.get_execution_options().get("postwerk_writer"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


@dataclass(eq=False)
class _Job:
    fn: WriteFn
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Outcome = tuple[bool, Any]  # (succeeded, value or exception)


def run_batch(conn: Connection, fns: list[WriteFn]) -> list[Outcome]:
    """Run write jobs in one transaction and commit once; a failing job fails alone.

    Jobs run first without savepoints (a SAVEPOINT/RELEASE pair per job cost a
    sixth of the writer's time); only if one raises is the batch rolled back and
    run again with a savepoint per job, so the failure stays its caller's.
    Raises only when the transaction as a whole fails (then no job is committed).
    """
    if len(fns) > 1:
        conn.begin()
        failed = False
        try:
            values = [fn(conn) for fn in fns]
        except Exception:
            failed = True
            conn.rollback()
        except BaseException:
            conn.rollback()
            raise
        if not failed:
            try:
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            return [(True, v) for v in values]
    outcomes: list[Outcome] = []
    conn.begin()
    try:
        if len(fns) == 1:
            # Alone in the batch: the transaction itself is the savepoint.
            try:
                outcomes.append((True, fns[0](conn)))
            except Exception as exc:
                conn.rollback()
                return [(False, exc)]
        else:
            for fn in fns:
                savepoint = conn.begin_nested()
                try:
                    value = fn(conn)
                except Exception as exc:
                    savepoint.rollback()
                    outcomes.append((False, exc))
                else:
                    savepoint.commit()
                    outcomes.append((True, value))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return outcomes


class Database:
    """An open database: `read` on the async pool, `write` through the group-commit writer."""

    def __init__(
        self,
        engine: AsyncEngine,
        writer_engine: Engine | None = None,
        reader_engine: Engine | None = None,
        inline_engine: Engine | None = None,
    ) -> None:
        self.engine = engine
        # PostgreSQL (no SQLite engines): `read` in one REPEATABLE READ snapshot, as a
        # SQLite read transaction is (READ COMMITTED would give each statement its own);
        # `read_now` in autocommit: one round trip per statement, no BEGIN/ROLLBACK.
        self._snapshot_engine = engine
        self._autocommit_engine = engine
        if engine.dialect.name != "sqlite":
            self._snapshot_engine = engine.execution_options(isolation_level="REPEATABLE READ")
            self._autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer_engine = writer_engine
        # SQLite reads: stdlib connections in a small pool of threads, one hop per read.
        # Through aiosqlite every statement and fetch is a hop of its own through the
        # event loop, which made reads the larger half of an outbound delivery's time.
        self._reader_engine = reader_engine
        self._inline_engine = inline_engine
        self._inline_conn: Connection | None = None
        self._read_executor = (
            ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="postwerk-db-r")
            if reader_engine is not None
            else None
        )
        # One thread: the writer's SQLite connection never changes threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postwerk-db-w")
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # commits issued; tests and metrics read these
        self.jobs = 0

    @classmethod
    async def open(cls, url_or_path: str | Path) -> Database:
        """Connect (no migration: call `migrate` first) and start the writer task."""
        db = cls(
            make_engine(url_or_path),
            make_sync_writer_engine(url_or_path),
            make_sync_reader_engine(url_or_path),
            make_sync_reader_engine(url_or_path, pool_size=1),
        )
        try:
            # Fail early on a bad path or a locked file rather than at first write.
            async with db.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except BaseException:
            await db._dispose()
            raise
        db._writer = asyncio.create_task(db._write_loop(), name="postwerk-db-writer")
        return db

    async def close(self) -> None:
        """Finish queued writes, stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
        await self._dispose()

    async def _dispose(self) -> None:
        await self.engine.dispose()
        if self._reader_engine is not None and self._read_executor is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._read_executor, self._reader_engine.dispose
            )
            self._read_executor.shutdown(wait=True)
        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        if self._inline_engine is not None:
            self._inline_engine.dispose()
        if self._writer_engine is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._writer_engine.dispose
            )
        self._executor.shutdown(wait=True)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` on a pooled connection in one read snapshot.

        `fn` is synchronous, like write jobs, so the same helpers serve both.
        """
        if self._reader_engine is not None and self._read_executor is not None:
            engine = self._reader_engine

            def in_thread() -> T:
                with engine.connect() as conn, conn.begin():
                    return fn(conn)

            return await asyncio.get_running_loop().run_in_executor(self._read_executor, in_thread)
        async with self._snapshot_engine.connect() as conn:
            return await conn.run_sync(fn)

    async def read_now(self, fn: Callable[[Connection], T]) -> T:
        """`read`, but on the calling thread, each statement in its own snapshot:
        for point reads of a few rows (an IMAP session's folder row after each
        command, the 50 items of a FETCH), where
        a hop to a reader thread costs more than SQLite's own work and, with many
        sessions, the hand-offs of the GIL between threads became the bottleneck.
        The event loop is the only user of its one connection, so it never waits
        for another; SQLite in WAL mode never makes a reader wait for the writer.
        On PostgreSQL the statements run in autocommit on a pooled connection."""
        if self._inline_engine is None:
            async with self._autocommit_engine.connect() as aconn:
                return await aconn.run_sync(fn)
        if self._inline_conn is None or self._inline_conn.closed:
            # Kept open: a checkout per read was a third of a small read's cost.
            self._inline_conn = self._inline_engine.connect()
        conn = self._inline_conn
        # No BEGIN/COMMIT around the read: the stdlib driver runs each SELECT in
        # its own snapshot, which is all a point read needs, and the transaction
        # bookkeeping was a fifth of a small read's cost. Should `fn` go through
        # SQLAlchemy (which begins a transaction), it is ended here, so no
        # snapshot stays open to hold back WAL checkpoints.
        try:
            return fn(conn)
        except BaseException:
            if conn.invalidated:
                self._inline_conn = None
            raise
        finally:
            if self._inline_conn is not None and conn.in_transaction():
                conn.rollback()

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in the next group commit; return once it is durable.

        `fn` is synchronous and only touches the database: it shares the
        transaction with other jobs and runs on the writer's thread.
        """
        if self._closed or self._writer is None:
            raise RuntimeError("database is closed")
        job = _Job(fn)
        await self._queue.put(job)
        result: T = await job.future
        return result

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH and not self._queue.empty():
                job = self._queue.get_nowait()
                if job is None:
                    stop = True
                    break
                batch.append(job)
            # A caller that gave up before its turn does not get its job run.
            batch = [job for job in batch if not job.future.done()]
            if batch:
                await self._commit_batch(batch)
            if stop:
                return

    async def _commit_batch(self, batch: list[_Job]) -> None:
        fns = [job.fn for job in batch]
        try:
            if self._writer_engine is not None:
                engine = self._writer_engine

                def in_thread() -> list[Outcome]:
                    with engine.connect() as conn:
                        return run_batch(conn.execution_options(postwerk_writer=True), fns)

                outcomes = await asyncio.get_running_loop().run_in_executor(
                    self._executor, in_thread
                )
            else:
                async with self.engine.connect() as aconn:
                    await aconn.execution_options(postwerk_writer=True)
                    outcomes = await aconn.run_sync(run_batch, fns)
        except Exception as exc:  # never let the writer die: fail the batch
            log.exception("write batch failed")
            outcomes = [(False, exc)] * len(batch)
        self.batches += 1
        self.jobs += len(batch)
        # Only now, after COMMIT (and its fsync), does anyone hear back.
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
