"""store/sqlite/change_channel.py: NOTIFY payloads and the notifier's relay."""

from __future__ import annotations

import pytest

from postwerk.mailbox.notify import MailboxNotifier
from postwerk.store.sqlite.change_channel import MAX_PAYLOAD, parse, payloads


def test_payloads_round_trip_and_stay_under_the_limit() -> None:
    ids = list(range(1, 5000))
    out = payloads("orig", ids)
    assert len(out) > 1 and all(len(p) <= MAX_PAYLOAD for p in out)
    back: list[int] = []
    for p in out:
        origin, got = parse(p)
        assert origin == "orig"
        back.extend(got)
    assert back == ids
    assert payloads("o", []) == []
    with pytest.raises(ValueError):
        parse("o 1,x")


def test_changed_wakes_locally_and_relays_wake_does_not_relay() -> None:
    notifier = MailboxNotifier()
    sent: list[list[int]] = []
    notifier.relay = lambda ids: sent.append(list(ids))
    with notifier.watch(7) as watch:
        notifier.changed([7, 8])
        assert watch.pending and sent == [[7, 8]]
        notifier.wake([9])  # another server's change: not sent back
        assert sent == [[7, 8]]
