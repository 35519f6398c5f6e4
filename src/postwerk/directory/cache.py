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
from postwerk.store.records import AcceptedDomain, ReceiveConnector, Recipient, SendConnector

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

    async def list_send_connectors(self, *, fresh: bool = False) -> list[SendConnector]: ...


@dataclass
class DirectoryCache:
    store: DirectoryStore
    ttl: float = 5.0
    max_entries: int = 100_000
    stale_grace: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _domains: tuple[float, list[AcceptedDomain]] | None = None
    _send_connectors: tuple[float, list[SendConnector]] | None = None
    _receive_connectors: tuple[float, list[ReceiveConnector]] | None = None
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

    async def _read(
        self,
        key: Hashable,
        hit: tuple[float, T] | None,
        fetch: Callable[[], Awaitable[T]],
        keep: Callable[[T], None],
    ) -> T:
        """The cache policy, once: a fresh hit answers; a stale one answers and starts
        one background refresh; otherwise one shared read. `keep` stores a result."""

        async def load() -> T:
            value = await fetch()
            keep(value)
            return value

        if hit is not None:
            state = self._state(hit[0])
            if state == "fresh":
                return hit[1]
            if state == "stale":
                self._flights.refresh(key, load)
                return hit[1]
        return await self._flights.load(key, load)

    async def list_domains(self) -> list[AcceptedDomain]:
        def keep(domains: list[AcceptedDomain]) -> None:
            self._domains = (self.clock(), domains)

        return await self._read("domains", self._domains, self.store.list_domains, keep)

    async def list_send_connectors(self, *, fresh: bool = False) -> list[SendConnector]:
        """`fresh`: read through (and refill the cache): the routing pass must see an
        admin's change at once, not up to a TTL later."""

        def keep(connectors: list[SendConnector]) -> None:
            self._send_connectors = (self.clock(), connectors)

        hit = None if fresh else self._send_connectors
        return await self._read("send_connectors", hit, self.store.list_send_connectors, keep)

    async def list_receive_connectors(self) -> list[ReceiveConnector]:
        """Read for every new connection (which connector serves it)."""

        def keep(connectors: list[ReceiveConnector]) -> None:
            self._receive_connectors = (self.clock(), connectors)

        return await self._read(
            "receive_connectors",
            self._receive_connectors,
            self.store.list_receive_connectors,
            keep,
        )

    async def find_recipient(self, address: str) -> Recipient | None:
        key = address.lower()

        def keep(recipient: Recipient | None) -> None:
            self._recipients[key] = (self.clock(), recipient)
            self._recipients.move_to_end(key)
            while len(self._recipients) > self.max_entries:
                self._recipients.popitem(last=False)

        return await self._read(
            ("recipient", key),
            self._recipients.get(key),
            lambda: self.store.find_recipient(address),
            keep,
        )

    async def group_members(self, group_id: int) -> list[str]:
        def keep(members: list[str]) -> None:
            if len(self._members) >= self.max_entries:
                self._members.clear()
            self._members[group_id] = (self.clock(), members)

        return await self._read(
            ("group", group_id),
            self._members.get(group_id),
            lambda: self.store.group_members(group_id),
            keep,
        )

    def clear(self) -> None:
        self._domains = None
        self._send_connectors = None
        self._receive_connectors = None
        self._recipients.clear()
        self._members.clear()
