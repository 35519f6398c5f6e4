"""The schema on PostgreSQL (M4): the same alembic migrations that build the
SQLite database build a PostgreSQL one, with nothing different from
`schema.metadata`. Each test run creates its own database on the machine's
server (127.0.0.1:5432, trust auth) and drops it afterwards.

Skipped when no PostgreSQL answers, unless POSTWERK_REQUIRE_POSTGRES=1
(`.ci/run` sets it: the CI machine runs one).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from postwerk.store.sqlite.migrations import current_revision, head_revision, migrate
from postwerk.store.sqlite.schema import metadata

SERVER = os.environ.get("POSTWERK_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432")
ADMIN_DB = "test"  # the database this machine provides; ours are created beside it


async def _admin(statement: str) -> None:
    engine = create_async_engine(f"{SERVER}/{ADMIN_DB}", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"postwerk_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, OperationalError, DBAPIError) as exc:
        if os.environ.get("POSTWERK_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"no PostgreSQL at {SERVER}: {exc}")
    try:
        yield f"{SERVER}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _differences(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def _check(url: str) -> tuple[str | None, list[object]]:
    await migrate(url)
    await migrate(url)  # an up-to-date database is left alone
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            revision = await conn.run_sync(current_revision)
            return revision, await conn.run_sync(_differences)
    finally:
        await engine.dispose()


def test_migrations_build_the_same_schema_on_postgresql(pg_url: str) -> None:
    revision, differences = asyncio.run(_check(pg_url))
    assert revision == head_revision()
    assert differences == []
