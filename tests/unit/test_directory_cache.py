"""DirectoryCache: fresh hits, single-flight misses, stale answers while refreshing."""

from __future__ import annotations

import asyncio
from typing import Any

from postwerk.directory.cache import DirectoryCache
from postwerk.store.memory import MemoryDirectory
from postwerk.store.records import AcceptedDomain, DomainType, Recipient


class CountingStore:
    """A directory whose reads are slow and counted."""

    def __init__(self) -> None:
        self.inner = MemoryDirectory()
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def list_domains(self) -> list[AcceptedDomain]:
        self.reads += 1
        await self.gate.wait()
        return await self.inner.list_domains()

    async def find_recipient(self, address: str) -> Recipient | None:
        self.reads += 1
        await self.gate.wait()
        return await self.inner.find_recipient(address)

    async def group_members(self, group_id: int) -> list[str]:
        self.reads += 1
        await self.gate.wait()
        return await self.inner.group_members(group_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(store: Any, clock: Clock, ttl: float = 5.0) -> DirectoryCache:
    return DirectoryCache(store, ttl=ttl, stale_grace=60.0, clock=clock)


async def test_concurrent_misses_share_one_read() -> None:
    store, clock = CountingStore(), Clock()
    await store.inner.add_domain("example.test", DomainType.AUTHORITATIVE)
    c = cache(store, clock)
    store.gate.clear()
    waiting = [asyncio.ensure_future(c.list_domains()) for _ in range(20)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiting)
    assert store.reads == 1
    assert all([d.name for d in r] == ["example.test"] for r in results)


async def test_stale_entry_answers_at_once_and_refreshes_in_the_background() -> None:
    store, clock = CountingStore(), Clock()
    await store.inner.add_domain("example.test", DomainType.AUTHORITATIVE)
    c = cache(store, clock)
    assert [d.name for d in await c.list_domains()] == ["example.test"]
    await store.inner.add_domain("second.test", DomainType.AUTHORITATIVE)
    clock.now += 6  # past the ttl, within the grace
    store.gate.clear()  # the refresh read blocks, but the caller must not
    answer = await asyncio.wait_for(c.list_domains(), 1)
    assert [d.name for d in answer] == ["example.test"]
    assert store.reads == 2
    store.gate.set()
    await asyncio.sleep(0.01)
    assert sorted(d.name for d in await c.list_domains()) == ["example.test", "second.test"]
    assert store.reads == 2  # the refreshed entry is fresh again


async def test_long_expired_entry_and_ttl_zero_read_through() -> None:
    store, clock = CountingStore(), Clock()
    await store.inner.add_domain("example.test", DomainType.AUTHORITATIVE)
    c = cache(store, clock)
    await c.find_recipient("nobody@example.test")
    clock.now += 5 + 61  # beyond the grace: wait for a fresh read
    await store.inner.add_domain("second.test", DomainType.AUTHORITATIVE)
    assert sorted(d.name for d in await c.list_domains()) == ["example.test", "second.test"]
    zero = cache(store, clock, ttl=0.0)
    before = store.reads
    await zero.list_domains()
    await zero.list_domains()
    assert store.reads == before + 2


async def test_a_failed_read_reaches_every_waiter_and_is_not_cached() -> None:
    store, clock = CountingStore(), Clock()
    c = cache(store, clock)
    calls = 0

    async def broken() -> list[AcceptedDomain]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise RuntimeError("database is locked")

    store.list_domains = broken  # type: ignore[method-assign]
    results = await asyncio.gather(*(c.list_domains() for _ in range(5)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    await asyncio.gather(c.list_domains(), return_exceptions=True)
    assert calls == 2


async def test_fresh_send_connectors_read_through_and_refill() -> None:
    from postwerk.store.records import AddressSpace, SendConnector

    store, clock = MemoryDirectory(), Clock()
    c = cache(store, clock)
    assert await c.list_send_connectors() == []
    internet = SendConnector("Internet", (AddressSpace("*", 1),))
    await store.put_send_connector(internet)
    assert await c.list_send_connectors() == []  # cached within the TTL
    assert await c.list_send_connectors(fresh=True) == [internet]  # the routing pass
    assert await c.list_send_connectors() == [internet]  # and the cache holds it now
