"""Change notifications per mailbox, inside one process.

Why: an IMAP session in IDLE must learn within a second that the transport
delivered into its mailbox (issue 4), and concurrent sessions on one folder must
see each other's flag changes and expunges. Polling the store per idle session
would cost a read per session per second; instead whoever changes a mailbox
(delivery, an IMAP or POP3 session) calls `changed(mailbox_ids)`, and each
session waiting on that mailbox wakes and reads what changed (by MODSEQ).

Contract: a notification says only "look again"; it carries no data and may be
spurious or merged with others, so a waiter always re-reads the store. `changed`
is synchronous and cheap (no I/O), safe to call from the event loop after a
commit. Across servers sharing PostgreSQL (M4), `relay` publishes each change
and the other servers' changes come in through `wake`
(store/sqlite/change_channel.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager


class MailboxWatch:
    """One subscriber's view: `wait()` returns when its mailbox changed since the last
    wait (or since the watch began), or after `timeout` seconds (then False)."""

    __slots__ = ("_event", "mailbox_id")

    def __init__(self, mailbox_id: int) -> None:
        self.mailbox_id = mailbox_id
        self._event = asyncio.Event()

    def _signal(self) -> None:
        self._event.set()

    @property
    def pending(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        try:
            if timeout is None:
                await self._event.wait()
            else:
                await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class MailboxNotifier:
    """Subscribers by mailbox id; `changed` wakes every watch of those mailboxes."""

    def __init__(self) -> None:
        self._watches: dict[int, set[MailboxWatch]] = {}
        # Where this process's changes go besides its own sessions (other servers).
        self.relay: Callable[[Sequence[int]], None] | None = None

    def changed(self, mailbox_ids: Iterable[int]) -> None:
        """A change made here: wake this process's sessions, and tell the others."""
        ids = list(mailbox_ids)
        self.wake(ids)
        if self.relay is not None and ids:
            self.relay(ids)

    def wake(self, mailbox_ids: Iterable[int]) -> None:
        """Wake the sessions of these mailboxes (a change made here or elsewhere)."""
        for mailbox_id in mailbox_ids:
            for watch in self._watches.get(mailbox_id, ()):
                watch._signal()

    @contextmanager
    def watch(self, mailbox_id: int) -> Iterator[MailboxWatch]:
        """Subscribe for the duration of the block (a selected folder, an IDLE)."""
        w = MailboxWatch(mailbox_id)
        watches = self._watches.setdefault(mailbox_id, set())
        watches.add(w)
        try:
            yield w
        finally:
            watches.discard(w)
            if not watches:
                del self._watches[mailbox_id]

    def watchers(self, mailbox_id: int) -> int:
        return len(self._watches.get(mailbox_id, ()))
