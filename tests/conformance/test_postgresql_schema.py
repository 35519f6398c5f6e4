"""The schema on PostgreSQL (M4): the same alembic migrations that build the
SQLite database build a PostgreSQL one, with nothing different from
`schema.metadata`. The test creates its own empty database
(tests/pg.py) and drops it afterwards.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from postwerk.store.sqlite.migrations import current_revision, head_revision, migrate
from postwerk.store.sqlite.schema import metadata
from tests.pg import pg_database


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


async def test_migrations_build_the_same_schema_on_postgresql() -> None:
    async with pg_database("postwerk_test") as url:
        revision, differences = await _check(url)
    assert revision == head_revision()
    assert differences == []
