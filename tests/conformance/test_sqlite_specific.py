"""What only the SQL backend has: group commit, migrations, durability across reopen."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from postwerk.store.records import DomainType, NewItem, RecipientKind
from postwerk.store.sqlite import Database, SchemaOutOfDate, migrate, open_sqlite
from postwerk.store.sqlite.mailstore import _PROBE_SQL
from postwerk.store.sqlite.schema import accepted_domain, metadata


def add_domain(name: str, fail: bool = False) -> Callable[[Connection], str]:
    """A write job: insert a row, then optionally fail after writing."""

    def run(conn: Connection) -> str:
        conn.execute(
            insert(accepted_domain).values(name=name, type="authoritative", is_default=False)
        )
        if fail:
            raise ValueError(f"job {name} fails after writing")
        return name

    return run


def domain_names(conn: Connection) -> list[str]:
    return sorted(conn.execute(select(accepted_domain.c.name)).scalars())


async def test_group_commit_batches_concurrent_writes(sqlite_path: Path) -> None:
    db = await Database.open(sqlite_path)
    try:
        names = [f"d{n:03}.test" for n in range(200)]
        results = await asyncio.gather(*(db.write(add_domain(n)) for n in names))
        assert results == names
        # Fewer commits than jobs: that is the point of group commit.
        assert db.jobs == 200
        assert db.batches < 200
        assert await db.read(domain_names) == names
    finally:
        await db.close()


async def test_failing_job_does_not_poison_its_batch(sqlite_path: Path) -> None:
    db = await Database.open(sqlite_path)
    try:
        jobs = [add_domain(f"ok{n}.test") for n in range(10)]
        jobs.insert(5, add_domain("bad.test", fail=True))
        jobs.insert(7, add_domain("ok1.test"))  # duplicate key: IntegrityError, also isolated
        batches_before = db.batches
        results = await asyncio.gather(*(db.write(j) for j in jobs), return_exceptions=True)
        assert isinstance(results[5], ValueError)
        assert isinstance(results[7], IntegrityError)
        assert sorted(r for r in results if isinstance(r, str)) == sorted(
            f"ok{n}.test" for n in range(10)
        )
        assert db.batches - batches_before < len(jobs)  # they really shared a batch
        assert await db.read(domain_names) == sorted(f"ok{n}.test" for n in range(10))
        # A single failing job alone in its batch raises too, and the writer lives on.
        with pytest.raises(ValueError):
            await db.write(add_domain("alone.test", fail=True))
        assert await db.write(add_domain("after.test")) == "after.test"
        assert "alone.test" not in await db.read(domain_names)
    finally:
        await db.close()


async def test_write_returns_only_after_commit(sqlite_path: Path) -> None:
    """Once write() returns, another connection (another process) sees the row."""
    db = await Database.open(sqlite_path)
    try:
        await db.write(add_domain("visible.test"))
        con = sqlite3.connect(sqlite_path)
        try:
            rows = con.execute("SELECT name FROM accepted_domain").fetchall()
        finally:
            con.close()
        assert rows == [("visible.test",)]
    finally:
        await db.close()


async def test_write_after_close_refused(sqlite_path: Path) -> None:
    db = await Database.open(sqlite_path)
    await db.close()
    with pytest.raises(RuntimeError):
        await db.write(add_domain("late.test"))


def test_migrated_schema_equals_metadata(tmp_path: Path) -> None:
    from postwerk.store.sqlite import upgrade

    path = tmp_path / "fresh.db"
    upgrade(path)
    upgrade(path)  # a second run is a no-op
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, metadata) == []
    engine.dispose()
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        con.close()


async def test_open_refuses_unmigrated_database(tmp_path: Path) -> None:
    with pytest.raises(SchemaOutOfDate):
        await open_sqlite(tmp_path / "empty.db")


def read_pragmas(conn: Connection) -> tuple[object, ...]:
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    return tuple(conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in names)


async def test_connection_pragmas(sqlite_path: Path) -> None:
    db = await Database.open(sqlite_path)
    try:
        # synchronous 2 = FULL; the writer's connection has the same settings.
        assert await db.read(read_pragmas) == ("wal", 2, 1, 5000)
        assert await db.write(read_pragmas) == ("wal", 2, 1, 5000)
    finally:
        await db.close()


async def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    await migrate(path)
    b = await open_sqlite(path)
    r = await b.directory.add_recipient(RecipientKind.MAILBOX, "keep@example.com", "Keep")
    await b.directory.add_domain("example.com", DomainType.AUTHORITATIVE, default=True)
    await b.mailstore.create_default_folders(r.id)
    (item,) = await b.mailstore.deliver(
        [NewItem(r.id, "Inbox", "IPM.Note", "blob1", b"X: y\r\n", 10, 1.0, delivery_key="k")]
    )
    await b.close()
    await migrate(path)  # an up-to-date database is left alone
    b2 = await open_sqlite(path)
    try:
        again = await b2.directory.find_recipient("KEEP@example.com")
        assert again == r
        folder = await b2.mailstore.get_folder(r.id, "inbox")
        assert folder.messages == 1 and folder.uidnext == 2
        assert await b2.mailstore.get_item(folder.id, 1) == item
        (dup,) = await b2.mailstore.deliver(
            [NewItem(r.id, "Inbox", "IPM.Note", "blob1", b"X: y\r\n", 10, 1.0, delivery_key="k")]
        )
        assert dup == item
    finally:
        await b2.close()


async def test_idempotency_probe_does_not_scan(sqlite_path: Path) -> None:
    """The delivery probe finds an earlier delivery through the unique index."""
    db = await Database.open(sqlite_path)
    try:

        def plan(conn: Connection) -> str:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {_PROBE_SQL}", ("k", 1, "inbox"))
            return " | ".join(str(r[-1]) for r in rows)

        text = await db.read(plan)
        assert "SCAN" not in text, text
        assert "mailbox_id=? AND delivery_key=?" in text, text
    finally:
        await db.close()


async def test_item_heads_of_rows_stored_before_header_size(tmp_path: Path) -> None:
    """Rows from before migration 0006 have no header_size: it comes from the summary."""
    path = tmp_path / "old.db"
    await migrate(path)
    b = await open_sqlite(path)
    try:
        r = await b.directory.add_recipient(RecipientKind.MAILBOX, "old@example.com", "Old")
        await b.mailstore.create_default_folders(r.id)
        summary = {"header_size": 42, "size": 100}
        await b.mailstore.deliver(
            [NewItem(r.id, "Inbox", "IPM.Note", "blob1", b"", 100, 1.0, summary=summary)]
        )
        folder = await b.mailstore.get_folder(r.id, "Inbox")
        [head] = await b.mailstore.item_heads(folder.id, [1])
        assert head.header_size == 42  # from the column

        def forget(conn: Connection) -> None:
            conn.exec_driver_sql("UPDATE item SET header_size = NULL")

        await b.db.write(forget)
        [head] = await b.mailstore.item_heads(folder.id, [1])
        assert head.header_size == 42  # from the summary
    finally:
        await b.close()
