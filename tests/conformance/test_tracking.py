"""TrackingLog conformance: append and the Get-MessageTrackingLog filters."""

from __future__ import annotations

from typing import Any

import pytest

from postwerk.store.records import TrackingEvent


@pytest.fixture
def backend(backend_with_postgresql: Any) -> Any:
    return backend_with_postgresql


def ev(ts: float, event_id: str = "RECEIVE", **kw: Any) -> TrackingEvent:
    fields: dict[str, Any] = {
        "timestamp": ts,
        "event_id": event_id,
        "source": "SMTP",
        "message_id": "q1",
        "internet_message_id": "<m1@example.com>",
        "sender": "Alice@Example.com",
        "recipients": ("bob@example.com", "Carol@Example.com"),
        "total_bytes": 2048,
        "subject": "Grüße",
    }
    fields.update(kw)
    return TrackingEvent(**fields)


async def seed(backend: Any) -> list[TrackingEvent]:
    events = [
        ev(10.0),
        ev(20.0, "DELIVER", source="STOREDRIVER", recipients=("bob@example.com",)),
        ev(20.0, "DELIVER", source="STOREDRIVER", recipients=("Carol@Example.com",)),
        ev(
            5.0,
            message_id="q2",
            internet_message_id="<m2@x>",
            sender="eve@x.test",
            recipients=("bob@example.co",),
        ),
        ev(
            30.0,
            "FAIL",
            message_id="q3",
            internet_message_id="<m3@x>",
            sender="",
            recipients=("ßtraße@example.com",),
        ),
    ]
    await backend.tracking.append(events)
    await backend.tracking.append([])
    return events


async def test_roundtrip_and_order(backend: Any) -> None:
    events = await seed(backend)
    got = await backend.tracking.search()
    assert got == [events[3], events[0], events[1], events[2], events[4]]  # time, then append


async def test_filters(backend: Any) -> None:
    events = await seed(backend)
    t = backend.tracking
    assert await t.search(sender="alice@EXAMPLE.com") == events[0:3]
    assert await t.search(sender="") == [events[4]]
    # Whole-address match: "bob@example.co" is not "bob@example.com".
    assert await t.search(recipient="BOB@example.com") == events[0:2]
    assert await t.search(recipient="bob@example.co") == [events[3]]
    assert await t.search(recipient="carol@example.com") == [events[0], events[2]]
    assert await t.search(recipient="ßTRASSE@example.com") == []
    assert await t.search(recipient="ßtraße@EXAMPLE.com") == [events[4]]
    assert await t.search(recipient="%") == []
    assert await t.search(message_id="q1") == events[0:3]
    assert await t.search(message_id="<m2@x>") == [events[3]]
    assert await t.search(since=20.0) == [events[1], events[2], events[4]]
    assert await t.search(event_id="DELIVER", recipient="carol@example.com") == [events[2]]
    assert await t.search(limit=2) == [events[3], events[0]]
    assert await t.search(recipient="bob@example.com", limit=1) == [events[0]]
