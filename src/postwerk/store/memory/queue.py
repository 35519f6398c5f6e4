"""QueueStore in dicts, for unit tests. Same semantics as `store.sqlite.queue`."""

from __future__ import annotations

import time
from collections.abc import Sequence

from postwerk.core.errors import AlreadyExists, NotFound
from postwerk.store.api import PENDING_STATUSES, partition_of, queue_summaries
from postwerk.store.records import QueuedMessage, QueuedRecipient, QueueSummary, RecipientStatus


class MemoryQueue:
    def __init__(self) -> None:
        self._messages: dict[str, QueuedMessage] = {}
        # message id -> address -> recipient; dicts keep RCPT order
        self._recipients: dict[str, dict[str, QueuedRecipient]] = {}

    async def enqueue(self, message: QueuedMessage, recipients: Sequence[QueuedRecipient]) -> None:
        if any(r.message_id != message.id for r in recipients):
            raise ValueError("every recipient must belong to the message being enqueued")
        if message.id in self._messages:
            raise AlreadyExists(f"queue message {message.id} exists")
        if len({r.address for r in recipients}) != len(recipients):
            # The SQL primary key (message_id, address) refuses this too.
            raise AlreadyExists("duplicate recipient address in one message")
        self._messages[message.id] = message
        self._recipients[message.id] = {r.address: r for r in recipients}

    async def get_message(self, message_id: str) -> QueuedMessage | None:
        return self._messages.get(message_id)

    async def messages_with_recipients(
        self, message_ids: Sequence[str]
    ) -> dict[str, tuple[QueuedMessage, list[QueuedRecipient]]]:
        return {
            m: (self._messages[m], list(self._recipients.get(m, {}).values()))
            for m in message_ids
            if m in self._messages
        }

    async def recipients(self, message_id: str) -> list[QueuedRecipient]:
        return list(self._recipients.get(message_id, {}).values())

    async def due(
        self,
        now: float,
        limit: int = 500,
        next_hop_prefix: str | None = None,
        partition: tuple[int, int] | None = None,
    ) -> list[QueuedRecipient]:
        ordinals = {
            (r.message_id, r.address): n
            for rs in self._recipients.values()
            for n, r in enumerate(rs.values())
        }
        ready = [
            r
            for rs in self._recipients.values()
            for r in rs.values()
            if r.status == RecipientStatus.READY
            and r.next_attempt <= now
            and (not next_hop_prefix or r.next_hop.startswith(next_hop_prefix))
            and (partition is None or partition_of(r.message_id, partition[1]) == partition[0])
        ]
        ready.sort(
            key=lambda r: (r.next_attempt, r.message_id, ordinals[(r.message_id, r.address)])
        )
        return ready[:limit]

    async def update_recipients(self, updates: Sequence[QueuedRecipient]) -> None:
        for r in updates:  # validate first: all or nothing
            if r.address not in self._recipients.get(r.message_id, {}):
                raise NotFound(f"recipient {r.address} of {r.message_id} not found")
        for r in updates:
            self._recipients[r.message_id][r.address] = r

    async def list_messages(self, status: RecipientStatus | None = None) -> list[QueuedMessage]:
        messages = sorted(self._messages.values(), key=lambda m: (m.received, m.id))
        if status is None:
            return messages
        return [
            m for m in messages if any(r.status == status for r in self._recipients[m.id].values())
        ]

    async def in_status(
        self, statuses: Sequence[RecipientStatus]
    ) -> list[tuple[QueuedMessage, list[QueuedRecipient]]]:
        wanted = set(statuses)
        out = []
        for m in sorted(self._messages.values(), key=lambda m: (m.received, m.id)):
            rows = [r for r in self._recipients.get(m.id, {}).values() if r.status in wanted]
            if rows:
                out.append((m, rows))
        return out

    async def summaries(self) -> list[QueueSummary]:
        pending = [r for rs in self._recipients.values() for r in rs.values()]
        return queue_summaries(pending, time.time())

    async def remove_message(self, message_id: str) -> None:
        self._messages.pop(message_id, None)
        self._recipients.pop(message_id, None)

    async def finished_messages(self) -> list[str]:
        return sorted(
            mid
            for mid, rs in self._recipients.items()
            if not any(r.status in PENDING_STATUSES for r in rs.values())
        )
