"""QueueStore on SQL: the transport queue's envelopes and per-recipient state.

`enqueue` is one write job (envelope plus every recipient row), and
`Database.write` returns only after the commit's fsync: the caller may answer
250 as soon as it returns (STYLE habit 8). The body blob is fsynced by the
BlobStore before the envelope that names it is committed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from sqlalchemy import bindparam, delete, exists, func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from postwerk.core.errors import AlreadyExists, NotFound
from postwerk.store.api import PENDING_STATUSES, queue_summaries
from postwerk.store.records import QueuedMessage, QueuedRecipient, QueueSummary, RecipientStatus
from postwerk.store.sqlite.database import Database
from postwerk.store.sqlite.schema import queue_message, queue_recipient

_PENDING = sorted(s.value for s in PENDING_STATUSES)


def _message(m: RowMapping) -> QueuedMessage:
    return QueuedMessage(
        id=m["id"],
        blob_id=m["blob_id"],
        sender=m["sender"],
        size=m["size"],
        received=m["received"],
        source=m["source"],
        connector=m["connector"],
        client_ip=m["client_ip"],
        server_ip=m["server_ip"],
        internet_message_id=m["internet_message_id"],
        subject=m["subject"],
        auth_user=m["auth_user"],
        params=json.loads(m["params"]),
    )


def _recipient(m: RowMapping) -> QueuedRecipient:
    return QueuedRecipient(
        message_id=m["message_id"],
        address=m["address"],
        status=RecipientStatus(m["status"]),
        next_hop=m["next_hop"],
        params=json.loads(m["params"]),
        attempts=m["attempts"],
        last_error=m["last_error"],
        next_attempt=m["next_attempt"],
    )


_update_recipient = (
    update(queue_recipient)
    .where(
        queue_recipient.c.message_id == bindparam("k_message_id"),
        queue_recipient.c.address == bindparam("k_address"),
    )
    .values(
        status=bindparam("v_status"),
        next_hop=bindparam("v_next_hop"),
        params=bindparam("v_params"),
        attempts=bindparam("v_attempts"),
        last_error=bindparam("v_last_error"),
        next_attempt=bindparam("v_next_attempt"),
    )
)


_INSERT_MESSAGE = insert(queue_message)
# Built once: constructing a statement per call cost more than running it.
_IN_CHUNK = 500  # ids per IN list: far below SQLite's 32,766 host parameters
_SELECT_MESSAGES = select(queue_message).where(
    queue_message.c.id.in_(bindparam("m_ids", expanding=True))
)
_SELECT_RECIPIENTS_OF = (
    select(queue_recipient)
    .where(queue_recipient.c.message_id.in_(bindparam("m_ids", expanding=True)))
    .order_by(queue_recipient.c.message_id, queue_recipient.c.ordinal)
)
_DELETE_MESSAGE = delete(queue_message).where(queue_message.c.id == bindparam("m_id"))
_SELECT_MESSAGE = select(queue_message).where(queue_message.c.id == bindparam("m_id"))
_SELECT_RECIPIENTS = (
    select(queue_recipient)
    .where(queue_recipient.c.message_id == bindparam("m_id"))
    .order_by(queue_recipient.c.ordinal)
)
_INSERT_RECIPIENT = insert(queue_recipient)


class SqliteQueue:
    """QueueStore over a `Database`.

    `server`: the queue of that server. Servers sharing one database (PostgreSQL)
    each see and work only the rows they enqueued, as each Exchange server has its
    own queues; "" where one server has the database to itself.
    """

    def __init__(self, db: Database, server: str = "") -> None:
        self._db = db
        self.server = server

    async def enqueue(self, message: QueuedMessage, recipients: Sequence[QueuedRecipient]) -> None:
        await self._db.write(self.enqueue_job(message, recipients))

    def enqueue_job(
        self, message: QueuedMessage, recipients: Sequence[QueuedRecipient]
    ) -> Callable[[Connection], None]:
        """The write job of `enqueue`, to run alone or inside a larger transaction."""
        rcpts = list(recipients)
        if any(r.message_id != message.id for r in rcpts):
            raise ValueError("every recipient must belong to the message being enqueued")
        if len({r.address for r in rcpts}) != len(rcpts):
            raise AlreadyExists("duplicate recipient address in one message")

        row = {
            "id": message.id,
            "blob_id": message.blob_id,
            "sender": message.sender,
            "size": message.size,
            "received": message.received,
            "source": message.source,
            "connector": message.connector,
            "client_ip": message.client_ip,
            "server_ip": message.server_ip,
            "internet_message_id": message.internet_message_id,
            "subject": message.subject,
            "auth_user": message.auth_user,
            "params": json.dumps(message.params),
        }

        def run(conn: Connection) -> None:
            # Hot path: prebuilt statements (compiled once); the primary key catches duplicates.
            try:
                conn.execute(_INSERT_MESSAGE, row)
            except IntegrityError as exc:
                raise AlreadyExists(f"queue message {message.id} exists") from exc
            if rcpts:
                conn.execute(
                    _INSERT_RECIPIENT,
                    [
                        {
                            "message_id": r.message_id,
                            "address": r.address,
                            "ordinal": n,
                            "status": r.status.value,
                            "next_hop": r.next_hop,
                            "params": json.dumps(r.params),
                            "attempts": r.attempts,
                            "last_error": r.last_error,
                            "next_attempt": r.next_attempt,
                            "server": self.server,
                        }
                        for n, r in enumerate(rcpts)
                    ],
                )

        return run

    async def get_message(self, message_id: str) -> QueuedMessage | None:
        def run(conn: Connection) -> QueuedMessage | None:
            row = conn.execute(_SELECT_MESSAGE, {"m_id": message_id}).mappings().first()
            return None if row is None else _message(row)

        return await self._db.read(run)

    async def recipients(self, message_id: str) -> list[QueuedRecipient]:
        """In RCPT TO order."""

        def run(conn: Connection) -> list[QueuedRecipient]:
            rows = conn.execute(_SELECT_RECIPIENTS, {"m_id": message_id})
            return [_recipient(r) for r in rows.mappings()]

        return await self._db.read(run)

    async def messages_with_recipients(
        self, message_ids: Sequence[str]
    ) -> dict[str, tuple[QueuedMessage, list[QueuedRecipient]]]:
        ids = list(dict.fromkeys(message_ids))

        def run(conn: Connection) -> dict[str, tuple[QueuedMessage, list[QueuedRecipient]]]:
            # Two statements for the lot: a pair per message cost 17 % of a relay's
            # CPU in SQLAlchemy's per-execute overhead.
            found: dict[str, tuple[QueuedMessage, list[QueuedRecipient]]] = {}
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                messages = {
                    m["id"]: _message(m)
                    for m in conn.execute(_SELECT_MESSAGES, {"m_ids": chunk}).mappings()
                }
                recipients: dict[str, list[QueuedRecipient]] = {m: [] for m in messages}
                for r in conn.execute(_SELECT_RECIPIENTS_OF, {"m_ids": chunk}).mappings():
                    if r["message_id"] in recipients:
                        recipients[r["message_id"]].append(_recipient(r))
                for message_id in chunk:
                    if message_id in messages:
                        found[message_id] = (messages[message_id], recipients[message_id])
            return found

        return await self._db.read(run)

    async def due(
        self,
        now: float,
        limit: int = 500,
        next_hop_prefix: str | None = None,
        partition: tuple[int, int] | None = None,
    ) -> list[QueuedRecipient]:
        def run(conn: Connection) -> list[QueuedRecipient]:
            conditions = [
                queue_recipient.c.status == RecipientStatus.READY.value,
                queue_recipient.c.next_attempt <= now,
                queue_recipient.c.server == self.server,
            ]
            if next_hop_prefix:
                conditions.append(
                    queue_recipient.c.next_hop.startswith(next_hop_prefix, autoescape=True)
                )
            if partition is not None:
                # store.api.partition_of in SQL: the position of the id's last hex
                # digit, 0 for a non-hex one (SQLite instr(); PostgreSQL strpos()).
                k, n = partition
                message_id = queue_recipient.c.message_id
                if conn.dialect.name == "sqlite":
                    digit = func.instr("0123456789abcdef", func.lower(func.substr(message_id, -1)))
                else:
                    digit = func.strpos("0123456789abcdef", func.lower(func.right(message_id, 1)))
                conditions.append((digit - 1 + n) % n == k)
            rows = conn.execute(
                select(queue_recipient)
                .where(*conditions)
                .order_by(
                    queue_recipient.c.next_attempt,
                    queue_recipient.c.message_id,
                    queue_recipient.c.ordinal,
                )
                .limit(limit)
            )
            return [_recipient(r) for r in rows.mappings()]

        return await self._db.read(run)

    async def update_recipients(self, updates: Sequence[QueuedRecipient]) -> None:
        """Store new state for existing recipients; all or nothing (NotFound if one is absent)."""
        if updates:
            await self._db.write(self.update_job(updates))

    def update_job(self, updates: Sequence[QueuedRecipient]) -> Callable[[Connection], None]:
        params = [
            {
                "k_message_id": r.message_id,
                "k_address": r.address,
                "v_status": r.status.value,
                "v_next_hop": r.next_hop,
                "v_params": json.dumps(r.params),
                "v_attempts": r.attempts,
                "v_last_error": r.last_error,
                "v_next_attempt": r.next_attempt,
            }
            for r in updates
        ]

        def run(conn: Connection) -> None:
            for p in params:
                result = conn.execute(_update_recipient, p)
                if result.rowcount == 0:
                    raise NotFound(f"recipient {p['k_address']} of {p['k_message_id']} not found")

        return run

    async def list_messages(self, status: RecipientStatus | None = None) -> list[QueuedMessage]:
        """Messages with at least one recipient in `status` (all messages for None)."""

        def run(conn: Connection) -> list[QueuedMessage]:
            query = select(queue_message).order_by(queue_message.c.received, queue_message.c.id)
            mine = [
                queue_recipient.c.message_id == queue_message.c.id,
                queue_recipient.c.server == self.server,
            ]
            if status is not None:
                mine.append(queue_recipient.c.status == status.value)
            query = query.where(exists().where(*mine))
            return [_message(r) for r in (conn.execute(query)).mappings()]

        return await self._db.read(run)

    async def in_status(
        self, statuses: Sequence[RecipientStatus]
    ) -> list[tuple[QueuedMessage, list[QueuedRecipient]]]:
        values = [s.value for s in statuses]

        def run(conn: Connection) -> list[tuple[QueuedMessage, list[QueuedRecipient]]]:
            by_message: dict[str, list[QueuedRecipient]] = {}
            rows = conn.execute(
                select(queue_recipient)
                .where(
                    queue_recipient.c.status.in_(values),
                    queue_recipient.c.server == self.server,
                )
                .order_by(queue_recipient.c.message_id, queue_recipient.c.ordinal)
            )
            for r in rows.mappings():
                by_message.setdefault(r["message_id"], []).append(_recipient(r))
            if not by_message:
                return []
            messages = conn.execute(
                select(queue_message)
                .where(
                    exists().where(
                        queue_recipient.c.message_id == queue_message.c.id,
                        queue_recipient.c.status.in_(values),
                        queue_recipient.c.server == self.server,
                    )
                )
                .order_by(queue_message.c.received, queue_message.c.id)
            )
            # One snapshot: every recipient row read above has its message here.
            return [
                (_message(m), by_message[m["id"]])
                for m in messages.mappings()
                if m["id"] in by_message
            ]

        return await self._db.read(run)

    async def summaries(self) -> list[QueueSummary]:
        def run(conn: Connection) -> list[QueuedRecipient]:
            rows = conn.execute(
                select(queue_recipient).where(
                    queue_recipient.c.status.in_(_PENDING),
                    queue_recipient.c.server == self.server,
                )
            )
            return [_recipient(r) for r in rows.mappings()]

        return queue_summaries(await self._db.read(run), time.time())

    async def remove_message(self, message_id: str) -> None:
        """Remove envelope and recipients; a no-op when absent, so cleanup can be redone."""
        await self._db.write(self.remove_job([message_id]))

    @staticmethod
    def remove_job(message_ids: Sequence[str]) -> Callable[[Connection], None]:
        ids = list(message_ids)

        def run(conn: Connection) -> None:
            if ids:
                conn.execute(_DELETE_MESSAGE, [{"m_id": i} for i in ids])

        return run

    async def finished_messages(self) -> list[str]:
        def run(conn: Connection) -> list[str]:
            pending = exists().where(
                queue_recipient.c.message_id == queue_message.c.id,
                queue_recipient.c.status.in_(_PENDING),
            )
            # A message of this server's queue (a message without recipients has none).
            mine = exists().where(
                queue_recipient.c.message_id == queue_message.c.id,
                queue_recipient.c.server == self.server,
            )
            if self.server:
                query = select(queue_message.c.id).where(~pending, mine)
            else:
                query = select(queue_message.c.id).where(~pending)
            rows = conn.execute(query.order_by(queue_message.c.id))
            return list(rows.scalars())

        return await self._db.read(run)
