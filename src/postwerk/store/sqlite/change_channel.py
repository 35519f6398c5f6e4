"""Mailbox change notifications between servers sharing PostgreSQL (LISTEN/NOTIFY).

Purpose: `mailbox.notify.MailboxNotifier` wakes the IMAP sessions of one
process when a mailbox changes. When several servers share an organization's
database, a delivery made by one must wake an IDLE session on another (issue
M4). This channel publishes every local change as a NOTIFY on
`postwerk_mailbox` and turns the notifications of the other servers into local
wake-ups; sessions then re-read the store as for a local change.

Contract (as the notifier's): a notification says "look again", nothing more;
one may be lost (a dropped connection) — a session still sees the change at
its next command, or at the IDLE re-check. Payloads are "<origin> <id>,<id>…",
at most 7,000 octets each (PostgreSQL's limit is 8,000); a server ignores its
own. One connection both listens and sends; sends go through one task, as an
asyncpg connection runs one operation at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import structlog

from postwerk.core.ids import new_id
from postwerk.mailbox.notify import MailboxNotifier

log = structlog.get_logger("postwerk.mailbox")

CHANNEL: Final = "postwerk_mailbox"
MAX_PAYLOAD: Final = 7000


def payloads(origin: str, mailbox_ids: Sequence[int]) -> list[str]:
    """The NOTIFY payloads for a change of these mailboxes, each under MAX_PAYLOAD."""
    out: list[str] = []
    current: list[str] = []
    size = len(origin) + 1
    for mailbox_id in mailbox_ids:
        text = str(mailbox_id)
        if current and size + len(text) + 1 > MAX_PAYLOAD:
            out.append(f"{origin} {','.join(current)}")
            current, size = [], len(origin) + 1
        current.append(text)
        size += len(text) + 1
    if current:
        out.append(f"{origin} {','.join(current)}")
    return out


def parse(payload: str) -> tuple[str, list[int]]:
    """(origin, mailbox ids) of a payload; ValueError for anything else."""
    origin, _, ids = payload.partition(" ")
    return origin, [int(x) for x in ids.split(",") if x]


class PgChangeChannel:
    def __init__(self, dsn: str, notifier: MailboxNotifier) -> None:
        self.dsn = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.notifier = notifier
        self.origin = new_id()  # this process: its own notifications come back too
        self._conn: Any = None
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.add_listener(CHANNEL, self._received)
        self._sender = asyncio.create_task(self._send_loop(), name="mailbox-change-channel")
        self.notifier.relay = self.publish

    def publish(self, mailbox_ids: Sequence[int]) -> None:
        for payload in payloads(self.origin, mailbox_ids):
            self._outbox.put_nowait(payload)

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, mailbox_ids = parse(payload)
        except ValueError:
            log.warning("change_notification_unreadable", payload=payload[:80])
            return
        if origin != self.origin:
            self.notifier.wake(mailbox_ids)

    async def _send_loop(self) -> None:
        while (payload := await self._outbox.get()) is not None:
            try:
                await self._conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            except Exception:
                # Lost: the other servers' sessions see the change at their next command.
                log.exception("change_notification_failed")

    async def stop(self) -> None:
        if self.notifier.relay == self.publish:
            self.notifier.relay = None
        if self._sender is not None:
            self._outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await self._sender
            self._sender = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
