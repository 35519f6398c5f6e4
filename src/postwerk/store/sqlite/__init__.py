"""The SQLite backend (SQLAlchemy Core, async, `sqlite+aiosqlite`).

Open it in two explicit steps, so that nothing migrates behind an operator's back::

    await migrate(path)              # postwerk init / serve do this
    backend = await open_sqlite(path)
    ...
    await backend.close()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from postwerk.store.sqlite.database import Database
from postwerk.store.sqlite.directory import SqliteDirectory
from postwerk.store.sqlite.mailstore import SqliteMailStore
from postwerk.store.sqlite.migrations import current_revision, head_revision, migrate, upgrade
from postwerk.store.sqlite.queue import SqliteQueue
from postwerk.store.sqlite.tracking import SqliteTrackingLog
from postwerk.store.sqlite.transport import SqliteTransportStore

__all__ = [
    "Database",
    "SchemaOutOfDate",
    "SqliteBackend",
    "SqliteDirectory",
    "SqliteMailStore",
    "SqliteQueue",
    "SqliteTrackingLog",
    "SqliteTransportStore",
    "migrate",
    "open_sqlite",
    "upgrade",
]


class SchemaOutOfDate(RuntimeError):
    """The database is not at the schema revision this code expects: run `migrate`."""


@dataclass(frozen=True, slots=True)
class SqliteBackend:
    db: Database
    directory: SqliteDirectory
    mailstore: SqliteMailStore
    queue: SqliteQueue
    tracking: SqliteTrackingLog
    transport: SqliteTransportStore

    async def close(self) -> None:
        await self.db.close()


async def open_sqlite(path: Path | str, server: str = "") -> SqliteBackend:
    """Open a migrated database; raise SchemaOutOfDate instead of migrating it.
    `server`: whose queue to work, where several servers share the database."""
    db = await Database.open(path)
    try:
        current = await db.read(current_revision)
        expected = head_revision()
        if current != expected:
            raise SchemaOutOfDate(
                f"database {path} is at schema revision {current}, code expects {expected}; "
                "run `postwerk init` (or store.sqlite.migrate) first"
            )
    except BaseException:
        await db.close()
        raise
    mailstore, queue, tracking = SqliteMailStore(db), SqliteQueue(db, server), SqliteTrackingLog(db)
    return SqliteBackend(
        db=db,
        directory=SqliteDirectory(db),
        mailstore=mailstore,
        queue=queue,
        tracking=tracking,
        transport=SqliteTransportStore(db, queue, mailstore, tracking),
    )
