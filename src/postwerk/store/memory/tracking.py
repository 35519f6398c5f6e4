"""TrackingLog in a list, for unit tests. Same semantics as `store.sqlite.tracking`."""

from __future__ import annotations

from collections.abc import Sequence

from postwerk.store.api import address_key
from postwerk.store.records import TrackingEvent


class MemoryTrackingLog:
    def __init__(self) -> None:
        self._events: list[TrackingEvent] = []

    async def append(self, events: Sequence[TrackingEvent]) -> None:
        self._events.extend(events)

    async def search(
        self,
        sender: str | None = None,
        recipient: str | None = None,
        message_id: str | None = None,
        since: float | None = None,
        event_id: str | None = None,
        limit: int = 1000,
    ) -> list[TrackingEvent]:
        out: list[TrackingEvent] = []
        # Stable sort: append order on equal timestamps, as the SQL id tie-break.
        for e in sorted(self._events, key=lambda e: e.timestamp):
            if sender is not None and address_key(e.sender) != address_key(sender):
                continue
            if recipient is not None and address_key(recipient) not in {
                address_key(r) for r in e.recipients
            }:
                continue
            if message_id is not None and message_id not in (e.message_id, e.internet_message_id):
                continue
            if since is not None and e.timestamp < since:
                continue
            if event_id is not None and e.event_id != event_id:
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out
