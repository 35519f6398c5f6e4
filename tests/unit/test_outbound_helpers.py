"""Small pure helpers of the outbound delivery queues."""

from __future__ import annotations

import asyncio
from typing import Any

from postwerk.core.errors import NotFound
from postwerk.store.records import TransportCommit
from postwerk.transport.dsn import DsnKind
from postwerk.transport.outbound import _CommitBatcher, _status_of, dsn_headers


def test_dsn_headers_unfold_and_decode() -> None:
    data = (
        b"From: Mail Delivery System <postmaster@mx.test>\r\n"
        b"Message-ID: <n1@mx.test>\r\n"
        b"Subject: Undeliverable:\r\n =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"\r\nSubject: not a header\r\n"
    )
    assert dsn_headers(data) == ("<n1@mx.test>", "Undeliverable: Grüße")
    assert dsn_headers(b"no headers at all") == ("", "")


def test_status_of_reply() -> None:
    assert _status_of("550 5.1.1 User unknown", DsnKind.FAILED) == "5.1.1"
    assert _status_of("550 User unknown", DsnKind.FAILED) == "5.0.0"
    assert _status_of("451 try later", DsnKind.DELAYED) == "4.0.0"


class _RecordingStore:
    """A TransportStore that refuses any commit removing "bad"."""

    def __init__(self) -> None:
        self.commits: list[TransportCommit] = []
        self.gate = asyncio.Event()

    async def commit(self, change: TransportCommit) -> list[Any]:
        await self.gate.wait()
        if "bad" in change.remove:
            raise NotFound("queue message bad")
        self.commits.append(change)
        return []


async def test_commit_batcher_merges_and_isolates_failures() -> None:
    store = _RecordingStore()
    batcher = _CommitBatcher(store)
    first = asyncio.ensure_future(batcher.commit(TransportCommit(remove=("m0",))))
    await asyncio.sleep(0)  # m0's commit is running (held by the gate)
    rest = [
        asyncio.ensure_future(batcher.commit(TransportCommit(remove=(m,))))
        for m in ("m1", "bad", "m2")
    ]
    await asyncio.sleep(0)
    store.gate.set()
    await first
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], NotFound)  # only the bad change fails
    # m0 alone, then the merged batch (refused), then its good changes one by one.
    assert [c.remove for c in store.commits] == [("m0",), ("m1",), ("m2",)]


async def test_commit_batcher_merges_changes_that_arrive_together() -> None:
    store = _RecordingStore()
    batcher = _CommitBatcher(store)
    waiting = [
        asyncio.ensure_future(batcher.commit(TransportCommit(remove=(f"m{i}",)))) for i in range(5)
    ]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(*waiting)
    # All five were waiting when the batcher ran: one commit, one fsync.
    assert [c.remove for c in store.commits] == [("m0", "m1", "m2", "m3", "m4")]
