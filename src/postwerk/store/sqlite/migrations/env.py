"""Alembic environment for postwerk: programmatic, batch mode, async-aware.

Two ways in:
- `postwerk.store.sqlite.migrations.migrate(url)` passes an open synchronous
  connection in `config.attributes["connection"]` (the normal path);
- developer commands (autogenerate a revision) pass only `sqlalchemy.url`, and
  this file opens its own engine.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from postwerk.store.sqlite.database import make_engine
from postwerk.store.sqlite.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # Batch mode: SQLite cannot ALTER most things, so alembic rebuilds the
        # table; on PostgreSQL the same migration issues plain ALTERs.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_own_engine(url: str) -> None:
    engine = make_engine(url, foreign_keys=False)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url given to alembic")
    asyncio.run(_run_own_engine(url))


if context.is_offline_mode():
    raise RuntimeError("postwerk migrations run online only")
_main()
