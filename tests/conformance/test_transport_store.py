"""TransportStore conformance: queue, items and tracking change together or not at all."""

from __future__ import annotations

from typing import Any

import pytest

from postwerk.core.errors import AlreadyExists, FolderNotFound, NotFound
from postwerk.store.records import RecipientStatus, TrackingEvent, TransportCommit
from tests.conformance.test_mailstore import MBX, new
from tests.conformance.test_queue import msg, rcpt


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    return backend_with_postgresql


def ev(mid: str, event_id: str) -> TrackingEvent:
    return TrackingEvent(timestamp=1000.0, event_id=event_id, source="SMTP", message_id=mid)


async def state(backend: Any, mid: str) -> tuple[Any, list[Any], list[str], int]:
    inbox = await backend.mailstore.get_folder(MBX, "Inbox")
    events = await backend.tracking.search(message_id=mid)
    return (
        await backend.queue.get_message(mid),
        await backend.queue.recipients(mid),
        [e.event_id for e in events],
        inbox.messages,
    )


async def test_accept_and_deliver_in_one_commit(backend: Any) -> None:
    await backend.mailstore.create_default_folders(MBX)
    pending = rcpt("m1", "far@remote.test", status=RecipientStatus.UNREACHABLE)
    done = rcpt("m1", "me@example.test", status=RecipientStatus.DELIVERED, next_hop="mailbox:7")
    items = await backend.transport.commit(
        TransportCommit(
            enqueue=(msg("m1"), (pending, done)),
            deliver=(new(key="m1/me@example.test"),),
            events=(ev("m1", "RECEIVE"), ev("m1", "DELIVER")),
        )
    )
    assert [(i.uid, i.delivery_key) for i in items] == [(1, "m1/me@example.test")]
    message, rows, events, count = await state(backend, "m1")
    assert message == msg("m1")
    assert [(r.address, r.status) for r in rows] == [
        ("far@remote.test", RecipientStatus.UNREACHABLE),
        ("me@example.test", RecipientStatus.DELIVERED),
    ]
    assert sorted(events) == ["DELIVER", "RECEIVE"]
    assert count == 1


async def test_deliver_update_and_remove_together(backend: Any) -> None:
    await backend.mailstore.create_default_folders(MBX)
    await backend.queue.enqueue(msg("m1"), [rcpt("m1", "a@example.test", next_hop="mailbox:7")])
    await backend.queue.enqueue(
        msg("m2"),
        [rcpt("m2", "a@example.test"), rcpt("m2", "far@remote.test")],
    )
    delivered = rcpt("m2", "a@example.test", status=RecipientStatus.DELIVERED)
    await backend.transport.commit(
        TransportCommit(
            deliver=(new(key="m1/a"), new(key="m2/a")),
            update=(delivered,),
            remove=("m1",),
            events=(ev("m1", "DELIVER"), ev("m2", "DELIVER")),
        )
    )
    assert await backend.queue.get_message("m1") is None
    rows = {r.address: r.status for r in await backend.queue.recipients("m2")}
    assert rows == {"a@example.test": RecipientStatus.DELIVERED, "far@remote.test": "ready"}
    assert (await backend.mailstore.get_folder(MBX, "Inbox")).messages == 2


@pytest.mark.parametrize("failure", ["missing folder", "duplicate queue id", "unknown update"])
async def test_a_failing_part_changes_nothing(backend: Any, failure: str) -> None:
    await backend.mailstore.create_default_folders(MBX)
    await backend.queue.enqueue(msg("old"), [rcpt("old", "x@example.test")])
    deliver = (new(key="k1"),)
    enqueue = (msg("m1"), (rcpt("m1", "far@remote.test"),))
    update = ()
    expected: type[Exception]
    if failure == "missing folder":
        deliver = (new(key="k1"), new(folder="No Such Folder", key="k2"))
        expected = FolderNotFound
    elif failure == "duplicate queue id":
        enqueue = (msg("old"), (rcpt("old", "far@remote.test"),))
        expected = AlreadyExists
    else:
        update = (rcpt("m1", "nobody@example.test", status=RecipientStatus.DELIVERED),)
        expected = NotFound
    with pytest.raises(expected):
        await backend.transport.commit(
            TransportCommit(
                enqueue=enqueue,
                deliver=deliver,
                update=update,
                remove=("old",),
                events=(ev("m1", "RECEIVE"),),
            )
        )
    # Nothing of it happened: no item, the old message still queued, no new rows or events.
    assert (await backend.mailstore.get_folder(MBX, "Inbox")).messages == 0
    assert [r.address for r in await backend.queue.recipients("old")] == ["x@example.test"]
    if failure != "duplicate queue id":
        assert await backend.queue.get_message("m1") is None
    assert await backend.tracking.search(message_id="m1") == []
