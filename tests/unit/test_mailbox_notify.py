"""MailboxNotifier: watches wake on their mailbox's changes only, and unsubscribe."""

from __future__ import annotations

import asyncio

from postwerk.mailbox.notify import MailboxNotifier


async def test_watch_wakes_on_its_mailbox_only() -> None:
    hub = MailboxNotifier()
    with hub.watch(1) as one, hub.watch(2) as two:
        assert hub.watchers(1) == 1
        waiter = asyncio.ensure_future(one.wait(5))
        await asyncio.sleep(0)
        hub.changed([1, 3])
        assert await waiter is True
        assert not two.pending  # another mailbox's change does not wake it
        assert await two.wait(0.01) is False  # a timeout says False


async def test_changes_before_the_wait_are_kept_and_merged() -> None:
    hub = MailboxNotifier()
    with hub.watch(7) as w:
        hub.changed([7])
        hub.changed([7])
        assert w.pending
        assert await w.wait(0.01) is True  # both changes: one wake-up
        assert await w.wait(0.01) is False


def test_unsubscribed_after_the_block() -> None:
    hub = MailboxNotifier()
    with hub.watch(1):
        with hub.watch(1):
            assert hub.watchers(1) == 2
        assert hub.watchers(1) == 1
    assert hub.watchers(1) == 0
    hub.changed([1])  # nobody listens: nothing to do
