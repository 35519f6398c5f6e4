"""TransportStore in memory: the stores' own methods, run without yielding in between."""

from __future__ import annotations

from postwerk.core.errors import AlreadyExists, NotFound
from postwerk.store.memory.mailstore import MemoryMailStore
from postwerk.store.memory.queue import MemoryQueue
from postwerk.store.memory.tracking import MemoryTrackingLog
from postwerk.store.records import Item, TransportCommit


class MemoryTransportStore:
    def __init__(
        self, queue: MemoryQueue, mailstore: MemoryMailStore, tracking: MemoryTrackingLog
    ) -> None:
        self._queue = queue
        self._mailstore = mailstore
        self._tracking = tracking

    async def commit(self, change: TransportCommit) -> list[Item]:
        # Validate what can fail before changing anything: all or nothing, like SQL.
        if change.enqueue is not None:
            message = change.enqueue[0]
            if await self._queue.get_message(message.id) is not None:
                raise AlreadyExists(f"queue message {message.id} exists")
        for r in change.update:
            known = {x.address for x in await self._queue.recipients(r.message_id)}
            if r.address not in known:
                raise NotFound(f"recipient {r.address} of {r.message_id} not found")
        items = await self._mailstore.deliver(change.deliver) if change.deliver else []
        if change.enqueue is not None:
            await self._queue.enqueue(*change.enqueue)
        if change.update:
            await self._queue.update_recipients(change.update)
        for message_id in change.remove:
            await self._queue.remove_message(message_id)
        if change.events:
            await self._tracking.append(change.events)
        return items
