"""TrackingLog on SQL: Exchange's message tracking log as rows.

Search semantics (shared with the memory backend):
- `sender` and `recipient` match whole addresses, case-insensitively;
- `message_id` matches the internal queue id OR the Internet Message-ID
  (Get-MessageTrackingLog's -InternalMessageId and -MessageId in one);
- `since` is inclusive; results come oldest first, in append order on ties.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection, RowMapping

from postwerk.store.api import address_key
from postwerk.store.records import TrackingEvent
from postwerk.store.sqlite.database import Database, driver_cursor
from postwerk.store.sqlite.schema import tracking_event

_TEXT = (
    "event_id",
    "source",
    "message_id",
    "internet_message_id",
    "sender",
    "return_path",
    "recipient_status",
    "connector",
    "client_ip",
    "server_ip",
    "server_hostname",
    "subject",
    "related_recipient",
    "reference",
)


# Every event of a message is written on the delivery hot path: prepared SQL on
# the driver (see database.driver_cursor).
_EVENT_COLUMNS = [c.name for c in tracking_event.columns if c.name != "id"]
_INSERT_EVENT_SQL = (
    f"INSERT INTO tracking_event ({', '.join(_EVENT_COLUMNS)})"
    f" VALUES ({', '.join(':' + c for c in _EVENT_COLUMNS)})"
)


def _row(e: TrackingEvent) -> dict[str, object]:
    row: dict[str, object] = {name: getattr(e, name) for name in _TEXT}
    row["timestamp"] = e.timestamp
    row["total_bytes"] = e.total_bytes
    row["sender_key"] = address_key(e.sender)
    row["recipients"] = json.dumps(list(e.recipients), ensure_ascii=False)
    row["recipients_key"] = json.dumps([address_key(r) for r in e.recipients], ensure_ascii=False)
    return row


def _event(m: RowMapping) -> TrackingEvent:
    return TrackingEvent(
        timestamp=m["timestamp"],
        recipients=tuple(json.loads(m["recipients"])),
        total_bytes=m["total_bytes"],
        **{name: m[name] for name in _TEXT},
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqliteTrackingLog:
    """TrackingLog over a `Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, events: Sequence[TrackingEvent]) -> None:
        if events:
            await self._db.write(self.append_job(events))

    @staticmethod
    def append_job(events: Sequence[TrackingEvent]) -> Callable[[Connection], None]:
        rows = [_row(e) for e in events]

        def run(conn: Connection) -> None:
            if rows:
                driver_cursor(conn).executemany(_INSERT_EVENT_SQL, rows)

        return run

    async def search(
        self,
        sender: str | None = None,
        recipient: str | None = None,
        message_id: str | None = None,
        since: float | None = None,
        event_id: str | None = None,
        limit: int = 1000,
    ) -> list[TrackingEvent]:
        query = select(tracking_event).order_by(tracking_event.c.timestamp, tracking_event.c.id)
        if sender is not None:
            query = query.where(tracking_event.c.sender_key == address_key(sender))
        if message_id is not None:
            query = query.where(
                or_(
                    tracking_event.c.message_id == message_id,
                    tracking_event.c.internet_message_id == message_id,
                )
            )
        if since is not None:
            query = query.where(tracking_event.c.timestamp >= since)
        if event_id is not None:
            query = query.where(tracking_event.c.event_id == event_id)
        wanted = address_key(recipient) if recipient is not None else None
        if wanted is not None:
            # A coarse LIKE on the JSON array narrows the rows; the exact match
            # (whole address, not a substring) is checked below.
            pattern = "%" + _like_escape(json.dumps(wanted, ensure_ascii=False)) + "%"
            query = query.where(tracking_event.c.recipients_key.like(pattern, escape="\\"))

        def run(conn: Connection) -> list[TrackingEvent]:
            if wanted is None:
                return [_event(r) for r in conn.execute(query.limit(limit)).mappings()]
            # The LIKE may let through a longer address containing the wanted
            # one; page until `limit` exact matches or the rows run out.
            out: list[TrackingEvent] = []
            page, offset = max(limit, 100), 0
            while len(out) < limit:
                rows = conn.execute(query.limit(page).offset(offset)).mappings().all()
                for row in rows:
                    event = _event(row)
                    if wanted in {address_key(r) for r in event.recipients}:
                        out.append(event)
                        if len(out) >= limit:
                            break
                if len(rows) < page:
                    break
                offset += page
            return out

        return await self._db.read(run)
