"""The in-memory backend: plain dicts, same semantics as SQL, for unit tests.

It runs the same conformance suite as every other backend (`tests/conformance`).
Nothing is durable, so it never belongs in a composition root for production.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postwerk.store.memory.blobs import MemoryBlobStore
from postwerk.store.memory.directory import MemoryDirectory
from postwerk.store.memory.mailstore import MemoryMailStore
from postwerk.store.memory.queue import MemoryQueue
from postwerk.store.memory.tracking import MemoryTrackingLog
from postwerk.store.memory.transport import MemoryTransportStore

__all__ = [
    "MemoryBackend",
    "MemoryBlobStore",
    "MemoryDirectory",
    "MemoryMailStore",
    "MemoryQueue",
    "MemoryTrackingLog",
    "MemoryTransportStore",
]


@dataclass(frozen=True, slots=True)
class MemoryBackend:
    """The same shape as `store.sqlite.SqliteBackend` (db is None: there is none)."""

    directory: MemoryDirectory = field(default_factory=MemoryDirectory)
    mailstore: MemoryMailStore = field(default_factory=MemoryMailStore)
    queue: MemoryQueue = field(default_factory=MemoryQueue)
    tracking: MemoryTrackingLog = field(default_factory=MemoryTrackingLog)
    db: None = None
    transport: MemoryTransportStore = field(init=False)

    def __post_init__(self) -> None:
        # frozen: set once here, over the same stores the fields hold.
        object.__setattr__(
            self, "transport", MemoryTransportStore(self.queue, self.mailstore, self.tracking)
        )

    async def close(self) -> None:
        """Nothing to release; present so callers treat every backend alike."""
