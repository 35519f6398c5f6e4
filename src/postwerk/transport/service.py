"""The transport service of a Mailbox server: intake, categorizer, queue, local delivery.

Flow: a receive session calls `begin()` and streams the body into the
returned `MessageIntake`; `enqueue` (called by the intake) categorizes the
recipients and commits the message durably; the delivery loop (the store
driver) then puts each mailbox recipient's copy into its Inbox, idempotently,
so a restart after `kill -9` simply redoes what was not marked delivered.
Recipients without a route wait in the Unreachable queue (M2 adds send
connectors and resubmits them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from postwerk.core.replies import Reply
from postwerk.mime.summary import summarize
from postwerk.store.api import BlobStore, MailStore, QueueStore, TrackingLog
from postwerk.store.records import (
    NewItem,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    TrackingEvent,
)
from postwerk.transport.categorizer import UNREACHABLE, Categorizer
from postwerk.transport.envelope import Envelope, ReceiveInfo
from postwerk.transport.intake import MessageIntake

GLITCH_RETRY_SECONDS = 60.0  # Exchange: 4 glitch retries, 1 minute apart
GLITCH_RETRIES = 4
IDLE_POLL_SECONDS = 5.0


@dataclass
class TransportService:
    blobs: BlobStore
    queue: QueueStore
    tracking: TrackingLog
    categorizer: Categorizer
    mail: MailStore
    server_hostname: str
    server_ip: str = ""
    delivery_batch: int = 64
    delivery_workers: int = 4
    on_delivered: Callable[[Sequence[int]], None] | None = None

    def __post_init__(self) -> None:
        self.log = structlog.get_logger("postwerk.transport")
        self._wake = asyncio.Event()
        self._in_flight: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._semaphore = asyncio.Semaphore(self.delivery_workers)

    # ------------------------------------------------------------ receive side

    def begin(self, envelope: Envelope, info: ReceiveInfo) -> MessageIntake:
        return MessageIntake(self, envelope, info, self.blobs.writer())

    async def enqueue(
        self,
        queue_id: str,
        blob_id: str,
        size: int,
        envelope: Envelope,
        info: ReceiveInfo,
        internet_message_id: str,
        subject: str,
    ) -> None:
        now = time.time()
        cat = await self.categorizer.categorize(envelope.recipients)
        message = QueuedMessage(
            id=queue_id,
            blob_id=blob_id,
            sender=envelope.sender,
            size=size,
            received=now,
            source="SMTP",
            connector=info.connector,
            client_ip=info.client_ip,
            server_ip=info.server_ip,
            internet_message_id=internet_message_id,
            subject=subject,
            auth_user=info.auth_user,
            params=dict(envelope.mail_params),
        )
        rows: list[QueuedRecipient] = []
        for r in cat.recipients:
            params: dict[str, Any] = dict(envelope.rcpt_params.get(r.original, {}))
            params.setdefault("orcpt_address", r.original)
            if r.next_hop == UNREACHABLE:
                rows.append(
                    QueuedRecipient(
                        queue_id,
                        r.address,
                        RecipientStatus.UNREACHABLE,
                        UNREACHABLE,
                        params,
                        0,
                        "no send connector",
                        now,
                    )
                )
            else:
                rows.append(
                    QueuedRecipient(
                        queue_id, r.address, RecipientStatus.READY, r.next_hop, params, 0, "", now
                    )
                )
        for address, reason in cat.failed:
            rows.append(
                QueuedRecipient(queue_id, address, RecipientStatus.FAILED, "", {}, 0, reason, now)
            )
        await self.queue.enqueue(message, rows)

        def event(
            event_id: str,
            source: str,
            recipients: tuple[str, ...],
            status: str = "",
            related: str = "",
        ) -> TrackingEvent:
            return TrackingEvent(
                timestamp=now,
                event_id=event_id,
                source=source,
                message_id=queue_id,
                internet_message_id=internet_message_id,
                sender=envelope.sender,
                return_path=envelope.sender,
                recipients=recipients,
                recipient_status=status,
                connector=info.connector,
                client_ip=info.client_ip,
                server_ip=info.server_ip,
                server_hostname=self.server_hostname,
                total_bytes=size,
                subject=subject,
                related_recipient=related,
            )

        events = [event("RECEIVE", "SMTP", envelope.recipients)]
        for original, primary in cat.resolved:
            events.append(event("RESOLVE", "ROUTING", (primary,), related=original))
        for group, members in cat.expanded:
            events.append(event("EXPAND", "ROUTING", tuple(members), related=group))
        unreachable = tuple(r.address for r in rows if r.status == RecipientStatus.UNREACHABLE)
        if unreachable:
            events.append(event("DEFER", "ROUTING", unreachable, "Unreachable: no send connector"))
        failed = tuple(r.address for r in rows if r.status == RecipientStatus.FAILED)
        if failed:
            events.append(event("FAIL", "ROUTING", failed, "550 5.1.1 recipient not found"))
        await self.tracking.append(events)
        self.log.info(
            "queued", queue_id=queue_id, session_id=info.session_id, recipients=len(rows), size=size
        )
        self._wake.set()

    def log_rejection(self, intake: MessageIntake, reply: Reply) -> None:
        self.log.info(
            "rejected_at_end_of_data",
            queue_id=intake.queue_id,
            code=reply.code,
            status=reply.status,
        )

    # ------------------------------------------------------------ delivery side

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._dispatch_loop(), name="store-driver"))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()

    def wake(self) -> None:
        self._wake.set()

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                due = await self.queue.due(time.time(), limit=self.delivery_batch * 8)
            except Exception:
                self.log.exception("queue_read_failed")
                due = []
            fresh = [r for r in due if (r.message_id, r.address) not in self._in_flight]
            for start in range(0, len(fresh), self.delivery_batch):
                batch = fresh[start : start + self.delivery_batch]
                for r in batch:
                    self._in_flight.add((r.message_id, r.address))
                await self._semaphore.acquire()
                task = asyncio.create_task(self._run_batch(batch))
                task.add_done_callback(lambda _t: self._semaphore.release())
            if len(due) >= self.delivery_batch * 8:
                await asyncio.sleep(0)  # more is waiting
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)
            except TimeoutError:
                pass

    async def _run_batch(self, batch: list[QueuedRecipient]) -> None:
        try:
            await self.deliver(batch)
        except Exception:
            self.log.exception("delivery_batch_failed", recipients=len(batch))
        finally:
            for r in batch:
                self._in_flight.discard((r.message_id, r.address))
            self._wake.set()

    async def deliver(self, batch: Sequence[QueuedRecipient]) -> None:
        """Deliver READY mailbox recipients into their Inboxes (idempotent)."""
        messages: dict[str, QueuedMessage] = {}
        summaries: dict[str, dict[str, Any]] = {}
        new_items: list[NewItem] = []
        targets: list[QueuedRecipient] = []
        failures: list[QueuedRecipient] = []
        now = time.time()
        for r in batch:
            if not r.next_hop.startswith("mailbox:"):
                continue
            msg = messages.get(r.message_id)
            if msg is None:
                found = await self.queue.get_message(r.message_id)
                if found is None:
                    continue
                msg = messages[r.message_id] = found
                try:
                    data = await self.blobs.read(msg.blob_id)
                    summaries[msg.id] = summarize(data).to_json()
                except Exception as exc:
                    self.log.exception("blob_unreadable", queue_id=msg.id)
                    failures.append(self._retry(r, f"blob unreadable: {exc}", now))
                    continue
            if msg.id not in summaries:
                continue
            prefix = f"Return-Path: <{msg.sender}>\r\n".encode()
            new_items.append(
                NewItem(
                    mailbox_id=int(r.next_hop.split(":", 1)[1]),
                    folder_name="Inbox",
                    item_class="IPM.Note",
                    blob_id=msg.blob_id,
                    header_prefix=prefix,
                    size=len(prefix) + msg.size,
                    internal_date=msg.received,
                    summary=summaries[msg.id],
                    delivery_key=f"{msg.id}/{r.address.lower()}",
                )
            )
            targets.append(r)
        if new_items:
            try:
                await self.mail.deliver(new_items)
            except Exception as exc:
                self.log.exception("mailbox_delivery_failed", items=len(new_items))
                failures.extend(self._retry(r, f"store error: {exc}", now) for r in targets)
                targets = []
        delivered = [replace(r, status=RecipientStatus.DELIVERED, last_error="") for r in targets]
        if delivered or failures:
            await self.queue.update_recipients([*delivered, *failures])
        if delivered:
            events = []
            for r in delivered:
                msg = messages[r.message_id]
                events.append(
                    TrackingEvent(
                        timestamp=time.time(),
                        event_id="DELIVER",
                        source="STOREDRIVER",
                        message_id=msg.id,
                        internet_message_id=msg.internet_message_id,
                        sender=msg.sender,
                        return_path=msg.sender,
                        recipients=(r.address,),
                        recipient_status="250 2.0.0 Delivered to Inbox",
                        connector=msg.connector,
                        client_ip=msg.client_ip,
                        server_ip=self.server_ip,
                        server_hostname=self.server_hostname,
                        total_bytes=msg.size,
                        subject=msg.subject,
                    )
                )
            await self.tracking.append(events)
            for msg_id in {r.message_id for r in delivered}:
                self.log.info(
                    "delivered",
                    queue_id=msg_id,
                    recipients=sum(1 for r in delivered if r.message_id == msg_id),
                )
            if self.on_delivered is not None:
                self.on_delivered(sorted({int(r.next_hop.split(":")[1]) for r in delivered}))
            await self._forget_finished({r.message_id for r in delivered})

    async def _forget_finished(self, message_ids: set[str]) -> None:
        """Drop queue rows of messages with nothing left to do (the blob stays: items use it)."""
        for message_id in message_ids:
            rows = await self.queue.recipients(message_id)
            if all(r.status in (RecipientStatus.DELIVERED, RecipientStatus.FAILED) for r in rows):
                await self.queue.remove_message(message_id)

    @staticmethod
    def _retry(r: QueuedRecipient, error: str, now: float) -> QueuedRecipient:
        attempts = r.attempts + 1
        if attempts > GLITCH_RETRIES:
            return replace(r, attempts=attempts, last_error=error, next_attempt=now + 15 * 60)
        return replace(
            r, attempts=attempts, last_error=error, next_attempt=now + GLITCH_RETRY_SECONDS
        )
