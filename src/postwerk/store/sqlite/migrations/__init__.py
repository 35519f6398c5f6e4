"""Schema migrations (alembic, batch mode), run explicitly, never on open.

`postwerk init` and `postwerk serve` call `migrate(url)` before opening the
`Database`; tests call it on a scratch file. No alembic.ini exists: the config
is built here, with `script_location` pointing into this package.

A new revision (developers only)::

    python -c "from postwerk.store.sqlite.migrations import revision; \\
               revision('/tmp/scratch.db', 'add x to y')"

then read and fix the generated file by hand.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from postwerk.store.sqlite.database import make_engine, to_url

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config pointing at this package (no alembic.ini)."""
    cfg = Config()
    # ConfigParser interpolates "%": escape it in paths and URLs.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade_on(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(url_or_path: str | Path) -> None:
    """Bring a database to head. Safe to call on an up-to-date database."""
    # Foreign keys off: batch mode drops and recreates tables (see make_engine).
    engine = make_engine(url_or_path, foreign_keys=False)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade_on)
            await conn.commit()
    finally:
        await engine.dispose()


def upgrade(url_or_path: str | Path) -> None:
    """Synchronous `migrate`, for the CLI; must not be called inside an event loop."""
    asyncio.run(migrate(url_or_path))


def revision(scratch_db: str | Path, message: str, rev_id: str | None = None) -> None:
    """Autogenerate a revision by comparing `schema.metadata` with a scratch DB at head."""
    upgrade(scratch_db)
    command.revision(
        alembic_config(to_url(scratch_db)), message=message, autogenerate=True, rev_id=rev_id
    )
