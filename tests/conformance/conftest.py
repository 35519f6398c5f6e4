"""One suite, every backend: the `backend` fixture runs each test on memory and SQLite.

SQLite databases are migrated once per session into a template file that each
test copies: a fresh database per test without paying a migration per test.

PostgreSQL (M4) joins store by store: a test module whose store runs on it
asks for `backend_with_postgresql` instead. Its databases are copies
(`CREATE DATABASE ... TEMPLATE`) of one migrated per session on the machine's
server (127.0.0.1:5432), each dropped after its test; when no PostgreSQL
answers the PostgreSQL cases skip, unless POSTWERK_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from postwerk.store.memory import MemoryBackend
from postwerk.store.sqlite import migrate, open_sqlite, upgrade
from tests.pg import PG_SERVER, UNREACHABLE, pg_admin, pg_database, unavailable

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(path)  # sync: no event loop runs in a session fixture
    return path


@pytest.fixture
def sqlite_path(tmp_path: Path, sqlite_template: Path) -> Path:
    path = tmp_path / "postwerk.db"
    shutil.copyfile(sqlite_template, path)
    return path


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, sqlite_path: Path) -> AsyncIterator[Any]:
    """A `MemoryBackend` or a `SqliteBackend`: directory, mailstore, queue, tracking."""
    if request.param == "memory":
        mem = MemoryBackend()
        yield mem
        await mem.close()
        return
    # sqlite_path is requested even for memory: a fixture that migrates cannot
    # be created lazily from inside this (running) event loop.
    sql = await open_sqlite(sqlite_path)
    try:
        yield sql
    finally:
        await sql.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated PostgreSQL database to copy (None when there is no server)."""
    name = f"postwerk_template_{secrets.token_hex(6)}"
    try:
        asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    except UNREACHABLE as exc:
        if os.environ.get("POSTWERK_REQUIRE_POSTGRES") == "1":
            raise
        del exc
        yield None  # the PostgreSQL cases skip (backend_with_postgresql)
        return
    try:
        asyncio.run(migrate(f"{PG_SERVER}/{name}"))
        yield name
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=[*BACKENDS, "postgresql"])
async def backend_with_postgresql(
    request: pytest.FixtureRequest, sqlite_path: Path, pg_template: str | None
) -> AsyncIterator[Any]:
    """`backend`, plus the SQL stores on PostgreSQL (a fresh copy of the migrated
    template per test): for the stores that run there."""
    if request.param == "memory":
        mem = MemoryBackend()
        yield mem
        await mem.close()
        return
    if request.param == "sqlite":
        sql = await open_sqlite(sqlite_path)
        try:
            yield sql
        finally:
            await sql.close()
        return
    if pg_template is None:
        unavailable(RuntimeError("the server did not answer"))
    async with pg_database("postwerk_test", pg_template) as url:
        pg = await open_sqlite(url)
        try:
            yield pg
        finally:
            await pg.close()
