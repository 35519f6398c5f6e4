"""A short-lived cache of directory lookups for the mail flow (Exchange's recipient cache).

Every RCPT and every categorization asks "is this domain accepted?" and "who
is this address?". Asking the database each time made those lookups the
largest cost of receiving a message, so the transport reads through this
cache. Entries live `ttl` seconds (default 5): an admin's change reaches the
mail flow within that time. Memory is bounded: at most `max_entries`
addresses, oldest first out.

Expiry never stalls the mail flow: an entry up to `stale_grace` seconds past
its ttl is still answered at once while one background read refreshes it, and
concurrent misses for the same key share one read (single flight). Without
that, twenty sessions arriving together after a quiet spell each read the same
rows, and those were the slowest messages of a load run.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from postwerk.store.api import DirectoryStore
from postwerk.store.records import AcceptedDomain, Recipient, SendConnector

T = TypeVar("T")
log = structlog.get_logger("postwerk.directory")


class SingleFlight:
    """At most one load per key at a time; everyone asking meanwhile shares its result."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self._background: set[asyncio.Future[Any]] = set()

    async def load(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(fetch())
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        # shield: one caller giving up (a closed session) must not cancel the others' read.
        result: T = await asyncio.shield(future)
        return result

    def refresh(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> None:
        """Start a load in the background unless one is running; errors are logged."""
        if key in self._inflight:
            return

        async def run() -> None:
            try:
                await self.load(key, fetch)
            except Exception:
                log.warning("directory_refresh_failed", key=str(key), exc_info=True)

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class RecipientLookup(Protocol):
    """The reads the transport needs from the directory."""

    async def list_domains(self) -> list[AcceptedDomain]: ...

    async def find_recipient(self, address: str) -> Recipient | None: ...

    async def group_members(self, group_id: int) -> list[str]: ...

    async def list_send_connectors(self) -> list[SendConnector]: ...


@dataclass
class DirectoryCache:
    store: DirectoryStore
    ttl: float = 5.0
    max_entries: int = 100_000
    stale_grace: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _domains: tuple[float, list[AcceptedDomain]] | None = None
    _send_connectors: tuple[float, list[SendConnector]] | None = None
    _recipients: OrderedDict[str, tuple[float, Recipient | None]] = field(
        default_factory=OrderedDict
    )
    _members: dict[int, tuple[float, list[str]]] = field(default_factory=dict)
    _flights: SingleFlight = field(default_factory=SingleFlight)

    def _state(self, stamp: float) -> str:
        age = self.clock() - stamp
        if age < self.ttl:
            return "fresh"
        # ttl 0 (tests, or an admin who wants every change at once) never serves stale.
        return "stale" if self.ttl > 0 and age < self.ttl + self.stale_grace else "expired"

    async def list_domains(self) -> list[AcceptedDomain]:
        async def fetch() -> list[AcceptedDomain]:
            domains = await self.store.list_domains()
            self._domains = (self.clock(), domains)
            return domains

        if self._domains is not None:
            state = self._state(self._domains[0])
            if state == "fresh":
                return self._domains[1]
            if state == "stale":
                self._flights.refresh("domains", fetch)
                return self._domains[1]
        return await self._flights.load("domains", fetch)

    async def list_send_connectors(self) -> list[SendConnector]:
        async def fetch() -> list[SendConnector]:
            connectors = await self.store.list_send_connectors()
            self._send_connectors = (self.clock(), connectors)
            return connectors

        if self._send_connectors is not None:
            state = self._state(self._send_connectors[0])
            if state == "fresh":
                return self._send_connectors[1]
            if state == "stale":
                self._flights.refresh("send_connectors", fetch)
                return self._send_connectors[1]
        return await self._flights.load("send_connectors", fetch)

    async def find_recipient(self, address: str) -> Recipient | None:
        key = address.lower()

        async def fetch() -> Recipient | None:
            recipient = await self.store.find_recipient(address)
            self._recipients[key] = (self.clock(), recipient)
            self._recipients.move_to_end(key)
            while len(self._recipients) > self.max_entries:
                self._recipients.popitem(last=False)
            return recipient

        hit = self._recipients.get(key)
        if hit is not None:
            state = self._state(hit[0])
            if state == "fresh":
                return hit[1]
            if state == "stale":
                self._flights.refresh(("recipient", key), fetch)
                return hit[1]
        return await self._flights.load(("recipient", key), fetch)

    async def group_members(self, group_id: int) -> list[str]:
        async def fetch() -> list[str]:
            members = await self.store.group_members(group_id)
            if len(self._members) >= self.max_entries:
                self._members.clear()
            self._members[group_id] = (self.clock(), members)
            return members

        hit = self._members.get(group_id)
        if hit is not None:
            state = self._state(hit[0])
            if state == "fresh":
                return hit[1]
            if state == "stale":
                self._flights.refresh(("group", group_id), fetch)
                return hit[1]
        return await self._flights.load(("group", group_id), fetch)

    def clear(self) -> None:
        self._domains = None
        self._send_connectors = None
        self._recipients.clear()
        self._members.clear()
