"""TransportStore on SQLite: the queue, mailbox and tracking jobs in one write."""

from __future__ import annotations

from sqlalchemy import Connection

from postwerk.store.records import Item, TransportCommit
from postwerk.store.sqlite.database import Database
from postwerk.store.sqlite.mailstore import SqliteMailStore
from postwerk.store.sqlite.queue import SqliteQueue
from postwerk.store.sqlite.tracking import SqliteTrackingLog


class SqliteTransportStore:
    def __init__(
        self,
        db: Database,
        queue: SqliteQueue,
        mailstore: SqliteMailStore,
        tracking: SqliteTrackingLog,
    ) -> None:
        self._db = db
        self._queue = queue
        self._mailstore = mailstore
        self._tracking = tracking

    async def commit(self, change: TransportCommit) -> list[Item]:
        # Items first: a missing folder fails the whole change before anything else runs.
        deliver = self._mailstore.deliver_job(change.deliver) if change.deliver else None
        others = []
        if change.enqueue is not None:
            others.append(self._queue.enqueue_job(*change.enqueue))
        if change.update:
            others.append(self._queue.update_job(change.update))
        if change.remove:
            others.append(self._queue.remove_job(change.remove))
        if change.events:
            others.append(self._tracking.append_job(change.events))

        def run(conn: Connection) -> list[Item]:
            items = deliver(conn) if deliver is not None else []
            for job in others:
                job(conn)
            return items

        return await self._db.write(run)
