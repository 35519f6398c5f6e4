"""QueueStore conformance: envelopes, recipient state, due work, queue views."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from postwerk.core.errors import AlreadyExists, NotFound
from postwerk.store.api import partition_of
from postwerk.store.records import QueuedMessage, QueuedRecipient, RecipientStatus

READY = RecipientStatus.READY


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    return backend_with_postgresql


def msg(mid: str, received: float = 1000.0, **kw: Any) -> QueuedMessage:
    fields: dict[str, Any] = {
        "id": mid,
        "blob_id": f"blob-{mid}",
        "sender": "a@example.com",
        "size": 1234,
        "received": received,
        "source": "SMTP",
        "connector": "Default Frontend",
        "client_ip": "192.0.2.1",
        "server_ip": "192.0.2.2",
        "internet_message_id": f"<{mid}@example.com>",
        "subject": "hello",
    }
    fields.update(kw)
    return QueuedMessage(**fields)


def rcpt(mid: str, address: str, **kw: Any) -> QueuedRecipient:
    return QueuedRecipient(message_id=mid, address=address, **kw)


async def test_enqueue_roundtrip_keeps_rcpt_order(backend: Any) -> None:
    q = backend.queue
    m = msg("m1", auth_user="alice", params={"RET": "HDRS", "ENVID": "x"})
    rs = [
        rcpt("m1", "zed@example.com", params={"NOTIFY": ["FAILURE"]}),
        rcpt("m1", "amy@example.com", next_hop="mailbox:3"),
    ]
    await q.enqueue(m, rs)
    assert await q.get_message("m1") == m
    assert await q.recipients("m1") == rs
    assert await q.get_message("nope") is None
    assert await q.recipients("nope") == []


async def test_enqueue_duplicate_id_and_address(backend: Any) -> None:
    q = backend.queue
    await q.enqueue(msg("m1"), [rcpt("m1", "a@example.com")])
    with pytest.raises(AlreadyExists):
        await q.enqueue(msg("m1"), [rcpt("m1", "b@example.com")])
    assert [r.address for r in await q.recipients("m1")] == ["a@example.com"]
    with pytest.raises(AlreadyExists):
        await q.enqueue(msg("m2"), [rcpt("m2", "x@example.com"), rcpt("m2", "x@example.com")])
    assert await q.get_message("m2") is None  # nothing half-enqueued
    with pytest.raises(ValueError):
        await q.enqueue(msg("m3"), [rcpt("other", "x@example.com")])


async def test_due_and_update(backend: Any) -> None:
    q = backend.queue
    await q.enqueue(msg("m1"), [rcpt("m1", "a@x.test"), rcpt("m1", "b@x.test", next_attempt=50.0)])
    await q.enqueue(msg("m2"), [rcpt("m2", "c@x.test", next_attempt=10.0)])
    due = await q.due(now=20.0)
    assert [(r.message_id, r.address) for r in due] == [
        ("m1", "a@x.test"),
        ("m2", "c@x.test"),
    ]
    assert [r.address for r in await q.due(now=100.0, limit=2)] == ["a@x.test", "c@x.test"]
    a = due[0]
    deferred = replace(a, attempts=1, last_error="451 4.4.1 try later", next_attempt=60.0)
    delivered = replace(due[1], status=RecipientStatus.DELIVERED, attempts=1)
    await q.update_recipients([deferred, delivered])
    assert [r.address for r in await q.due(now=20.0)] == []
    assert [r.address for r in await q.due(now=100.0)] == ["b@x.test", "a@x.test"]
    assert (await q.recipients("m1"))[0] == deferred
    with pytest.raises(NotFound):
        await q.update_recipients([rcpt("m1", "ghost@x.test")])
    with pytest.raises(NotFound):  # all or nothing: the valid update is not applied
        await q.update_recipients([replace(deferred, attempts=9), rcpt("m9", "ghost@x.test")])
    assert (await q.recipients("m1"))[0].attempts == 1


async def test_list_messages_by_status_and_finished(backend: Any) -> None:
    q = backend.queue
    await q.enqueue(msg("m1", received=2.0), [rcpt("m1", "a@x.test"), rcpt("m1", "b@x.test")])
    await q.enqueue(msg("m2", received=1.0), [rcpt("m2", "c@x.test")])
    await q.enqueue(msg("m3", received=3.0), [rcpt("m3", "d@x.test")])
    assert [m.id for m in await q.list_messages()] == ["m2", "m1", "m3"]
    await q.update_recipients(
        [
            rcpt("m1", "a@x.test", status=RecipientStatus.DELIVERED),
            rcpt("m2", "c@x.test", status=RecipientStatus.FAILED),
            rcpt("m3", "d@x.test", status=RecipientStatus.UNREACHABLE, next_hop="unreachable"),
        ]
    )
    assert [m.id for m in await q.list_messages(READY)] == ["m1"]
    assert [m.id for m in await q.list_messages(RecipientStatus.DELIVERED)] == ["m1"]
    assert [m.id for m in await q.list_messages(RecipientStatus.FAILED)] == ["m2"]
    # m1 still has b READY; m3 is UNREACHABLE (kept until a route appears).
    assert await q.finished_messages() == ["m2"]
    await q.update_recipients([rcpt("m1", "b@x.test", status=RecipientStatus.RELAYED)])
    assert await q.finished_messages() == ["m1", "m2"]
    await q.remove_message("m2")
    await q.remove_message("m2")  # idempotent: cleanup may be redone after a crash
    assert await q.get_message("m2") is None
    assert await q.recipients("m2") == []
    assert await q.finished_messages() == ["m1"]


async def test_summaries(backend: Any) -> None:
    q = backend.queue
    future = time.time() + 3600
    await q.enqueue(msg("m1"), [rcpt("m1", "a@x.test"), rcpt("m1", "b@x.test")])
    await q.enqueue(
        msg("m2"),
        [
            rcpt("m2", "c@x.test", next_hop="mailbox:1"),
            rcpt(
                "m2",
                "d@remote.test",
                next_hop="remote.test",
                attempts=2,
                last_error="421 busy",
                next_attempt=future,
            ),
            rcpt("m2", "e@x.test", status=RecipientStatus.UNREACHABLE, next_hop="unreachable"),
            rcpt("m2", "f@x.test", status=RecipientStatus.DELIVERED, next_hop="mailbox:1"),
        ],
    )
    got = {s.name: s for s in await q.summaries()}
    assert set(got) == {"Submission", "mailbox delivery", "remote.test", "Unreachable"}
    assert got["Submission"].count == 1  # messages, not recipients
    assert got["Submission"].status == "Ready"
    assert got["remote.test"].status == "Retry"
    assert got["remote.test"].last_error == "421 busy"
    assert got["remote.test"].next_retry == future
    assert got["Unreachable"].count == 1
    assert await q.summaries() == sorted(await q.summaries(), key=lambda s: s.name)


async def test_due_by_next_hop_prefix(backend: Any) -> None:
    q = backend.queue
    await q.enqueue(
        msg("m1"),
        [
            rcpt("m1", "a@example.com", next_hop="mailbox:1"),
            rcpt("m1", "b@remote.test", next_hop="smtp:Internet:remote.test"),
            rcpt("m1", "c_%@remote.test", next_hop="smtp:Internet:remote.test"),
        ],
    )
    mailbox = await q.due(time.time(), next_hop_prefix="mailbox:")
    smtp = await q.due(time.time(), next_hop_prefix="smtp:")
    assert [r.address for r in mailbox] == ["a@example.com"]
    assert [r.address for r in smtp] == ["b@remote.test", "c_%@remote.test"]
    assert len(await q.due(time.time())) == 3
    assert await q.due(time.time(), next_hop_prefix="smtp:Inter%") == []  # LIKE escaped


async def test_due_by_partition(backend: Any) -> None:
    q = backend.queue
    ids = [f"6178a0c1{c}" for c in "0123456789abcdefAFxz"]
    for mid in ids:
        await q.enqueue(msg(mid), [rcpt(mid, "a@example.com", next_hop="smtp:Out:x.test")])
    now = time.time()
    everything = {r.message_id for r in await q.due(now)}
    assert everything == set(ids)
    for n in (1, 2, 3, 16):
        seen: set[str] = set()
        for k in range(n):
            part = {r.message_id for r in await q.due(now, partition=(k, n))}
            assert all(partition_of(m, n) == k for m in part)
            assert not part & seen  # no message in two partitions
            seen |= part
        assert seen == everything  # and none in no partition
    assert partition_of("6178a0c1a", 2) == 0 and partition_of("6178a0c1B", 2) == 1
    assert partition_of("6178a0c1z", 4) == 3  # not hex: the last partition


async def test_in_status(backend: Any) -> None:
    q = backend.queue
    m1, m2, m3 = msg("m1", received=1.0), msg("m2", received=2.0), msg("m3", received=3.0)
    await q.enqueue(m2, [rcpt("m2", "z@example.com", status=RecipientStatus.UNREACHABLE)])
    await q.enqueue(
        m1,
        [
            rcpt("m1", "b@example.com"),
            rcpt("m1", "c@example.com", status=RecipientStatus.DELIVERED),
            rcpt("m1", "a@example.com", status=RecipientStatus.UNREACHABLE),
        ],
    )
    await q.enqueue(m3, [rcpt("m3", "d@example.com", status=RecipientStatus.FAILED)])
    got = await q.in_status([RecipientStatus.READY, RecipientStatus.UNREACHABLE])
    assert [(m.id, [r.address for r in rs]) for m, rs in got] == [
        ("m1", ["b@example.com", "a@example.com"]),  # RCPT order, only the wanted states
        ("m2", ["z@example.com"]),
    ]
    assert got[0][0] == m1
    assert await q.in_status([RecipientStatus.POISON]) == []


async def test_messages_with_recipients(backend: Any) -> None:
    q = backend.queue
    m1, m2 = msg("m1"), msg("m2")
    r1 = [rcpt("m1", "b@example.com"), rcpt("m1", "a@example.com")]
    r2 = [rcpt("m2", "c@example.com")]
    await q.enqueue(m1, r1)
    await q.enqueue(m2, r2)
    got = await q.messages_with_recipients(["m2", "nope", "m1", "m2"])
    assert got == {"m1": (m1, r1), "m2": (m2, r2)}
    assert await q.messages_with_recipients([]) == {}


async def test_one_message_with_recipients(backend: Any) -> None:
    q = backend.queue
    m = msg("m1")
    rs = [rcpt("m1", "b@example.com"), rcpt("m1", "a@example.com")]
    await q.enqueue(m, rs)
    assert await q.messages_with_recipients(["m1"]) == {"m1": (m, rs)}
    assert await q.messages_with_recipients(["nope"]) == {}


async def test_servers_sharing_a_database_each_work_their_own_queue(backend: Any) -> None:
    """Two servers on one database (PostgreSQL): each sees, schedules and cleans up only
    the messages it enqueued, as each Exchange server has its own queues."""
    if backend.db is None:
        pytest.skip("the memory store is one server's")
    from postwerk.store.sqlite.queue import SqliteQueue

    mbx1, mbx2 = SqliteQueue(backend.db, "MBX1"), SqliteQueue(backend.db, "MBX2")
    await mbx1.enqueue(msg("m1"), [rcpt("m1", "a@x.test")])
    await mbx2.enqueue(msg("m2"), [rcpt("m2", "b@x.test")])
    now = time.time() + 10
    assert [r.message_id for r in await mbx1.due(now)] == ["m1"]
    assert [r.message_id for r in await mbx2.due(now)] == ["m2"]
    assert [m.id for m in await mbx1.list_messages()] == ["m1"]
    assert [m.id for m, _ in await mbx2.in_status([RecipientStatus.READY])] == ["m2"]
    assert sum(s.count for s in await mbx1.summaries()) == 1
    # Either can read a message by id (admin tools, tracking), neither schedules the other's.
    assert (await mbx2.get_message("m1")) is not None
    done = replace((await mbx1.due(now))[0], status=RecipientStatus.DELIVERED)
    await mbx1.update_recipients([done])
    assert await mbx2.finished_messages() == []
    assert await mbx1.finished_messages() == ["m1"]
