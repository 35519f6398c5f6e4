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
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from postwerk.core.ids import new_id
from postwerk.core.replies import Reply
from postwerk.mime.summary import summarize
from postwerk.observe import metrics
from postwerk.protocols.imap.responses import stored_envelope as imap_envelope
from postwerk.store.api import (
    PENDING_STATUSES,
    BlobStore,
    MailStore,
    QueueStore,
    TrackingLog,
    TransportStore,
)
from postwerk.store.records import (
    NewItem,
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    SendConnector,
    TrackingEvent,
    TransportCommit,
    message_event,
)
from postwerk.transport.agents import (
    AGENT_SOURCE,
    AgentRunner,
    Headers,
    MessageView,
    Quarantine,
    SessionView,
    insert_headers,
    quarantine_rows,
    read_headers,
)
from postwerk.transport.categorizer import MAILBOX_HOP, Categorizer
from postwerk.transport.dsn import DsnKind, dsn_allowed
from postwerk.transport.envelope import Envelope, ReceiveInfo
from postwerk.transport.intake import MessageIntake
from postwerk.transport.outbound import dsn_headers, make_dsns, wants_dsn
from postwerk.transport.quota import DELIVERY_REFUSED, QuotaLedger
from postwerk.transport.routing import INTRA_ORG_HOP, SMTP_HOP, UNREACHABLE, reroute_row

GLITCH_RETRY_SECONDS = 60.0  # Exchange: 4 glitch retries, 1 minute apart
GLITCH_RETRIES = 4
IDLE_POLL_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class _Handoff:
    """A message this process just queued, handed to the store driver in memory."""

    message: QueuedMessage
    ready: list[QueuedRecipient]  # to deliver now
    pending: list[QueuedRecipient]  # every row that keeps the message queued
    data: bytes | None  # the blob's bytes when small, so delivery need not read them back


HANDOFF_MAX_BYTES = 1024 * 1024
PENDING = tuple(PENDING_STATUSES)
MOVABLE = (RecipientStatus.READY, RecipientStatus.UNREACHABLE)  # routing may change these


@dataclass
class TransportService:
    blobs: BlobStore
    queue: QueueStore
    tracking: TrackingLog
    categorizer: Categorizer
    mail: MailStore
    store: TransportStore
    server_hostname: str
    server_ip: str = ""
    # Local recipients of a small message are delivered in the transaction that
    # accepts it (see `_accept_and_deliver`); off, everything goes through the queue.
    deliver_at_receipt: bool = True
    # How often the queue is scanned for retries, recovery and routing changes.
    poll_seconds: float = IDLE_POLL_SECONDS
    # Called when recipients were queued for a send connector (wakes its delivery queues).
    on_routed_out: Callable[[], None] | None = None
    delivery_batch: int = 64
    delivery_workers: int = 4
    on_delivered: Callable[[Sequence[int]], None] | None = None
    # Transport agents (transport/agents.py); None when none are configured.
    agents: AgentRunner | None = None

    def __post_init__(self) -> None:
        self.log = structlog.get_logger("postwerk.transport")
        self._wake = asyncio.Event()
        self._in_flight: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._semaphore = asyncio.Semaphore(self.delivery_workers)
        self._handoff: deque[_Handoff] = deque()
        self._batches: set[asyncio.Task[None]] = set()
        self._routing_basis: tuple[SendConnector, ...] | None = None

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
        data: bytes | None = None,
        source: str = "SMTP",
        *,
        headers: Headers | None = None,
        quarantine: Quarantine | None = None,
    ) -> None:
        """Categorize and commit; `data` (the blob's bytes, when small) spares a read-back.

        With routing agents, their events run around categorization; `headers` (the
        intake's parse) spares re-reading them, and `quarantine` comes from receive agents.
        """
        now = time.time()
        received_recipients = envelope.recipients
        notes: list[str] = []
        if self.agents and self.agents.routing:
            routed = await self.agents.route(
                SessionView.from_info(info),
                MessageView(
                    queue_id=queue_id,
                    sender=envelope.sender,
                    recipients=envelope.recipients,
                    headers=headers or await read_headers(self.blobs, blob_id, data),
                    size=size,
                    source=source,
                    mail_params=dict(envelope.mail_params),
                    reader=functools.partial(self._content, blob_id, data),
                ),
                self.categorizer.categorize,
            )
            cat = routed.categorization
            envelope = replace(envelope, sender=routed.sender, recipients=routed.recipients)
            quarantine = quarantine or routed.quarantine
            notes = routed.notes
            if routed.headers:
                blob_id, size, data = await insert_headers(
                    self.blobs, blob_id, routed.headers, data
                )
        else:
            cat = await self.categorizer.categorize(envelope.recipients)
        message = QueuedMessage(
            id=queue_id,
            blob_id=blob_id,
            sender=envelope.sender,
            size=size,
            received=now,
            source=source,
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
        if quarantine is not None:
            rows = quarantine_rows(rows, quarantine)
        ready = [r for r in rows if r.status == RecipientStatus.READY]
        pending = [r for r in rows if r.status in PENDING]

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

        events = [event("RECEIVE", source, received_recipients)]
        for note in notes:
            events.append(event("AGENTINFO", AGENT_SOURCE, envelope.recipients, note))
        if quarantine is not None:
            events.append(event("AGENTINFO", AGENT_SOURCE, envelope.recipients, quarantine.text()))
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

        if not rows:
            # Agents removed every recipient: accepted and dropped (Exchange does the same);
            # the tracking log says who did it.
            await self.tracking.append(events)
            await self.blobs.delete(blob_id)
            self.log.info("dropped_by_agents", queue_id=queue_id, session_id=info.session_id)
            return
        local = [r for r in ready if r.next_hop.startswith(MAILBOX_HOP)]
        if (
            local
            and data is not None
            and self.deliver_at_receipt
            and await self._accept_and_deliver(message, rows, local, events, data)
        ):
            return
        # The queue write alone decides the reply; tracking shares its group commit.
        queued, tracked = await asyncio.gather(
            self.queue.enqueue(message, rows),
            self.tracking.append(events),
            return_exceptions=True,
        )
        if isinstance(queued, BaseException):
            raise queued
        if isinstance(tracked, BaseException):
            self.log.error("tracking_write_failed", queue_id=queue_id, error=str(tracked))
        if ready:
            for row in ready:
                self._in_flight.add((row.message_id, row.address))
            self._handoff.append(_Handoff(message, ready, pending, data))
        self.log.info(
            "queued", queue_id=queue_id, session_id=info.session_id, recipients=len(rows), size=size
        )
        self._wake.set()
        self._routed_out(rows)

    async def _content(self, blob_id: str, data: bytes | None) -> bytes:
        return data if data is not None else await self.blobs.read(blob_id)

    def _routed_out(self, rows: Sequence[QueuedRecipient]) -> None:
        if self.on_routed_out is not None and any(
            r.status == RecipientStatus.READY and r.next_hop.startswith(SMTP_HOP) for r in rows
        ):
            self.on_routed_out()

    async def _accept_and_deliver(
        self,
        message: QueuedMessage,
        rows: list[QueuedRecipient],
        local: list[QueuedRecipient],
        events: list[TrackingEvent],
        data: bytes,
    ) -> bool:
        """Deliver to local mailboxes in the same transaction that accepts the message.

        The store driver's work done before the 250 instead of after it: one commit
        instead of three (queue, items, queue cleanup), and the message is in the
        Inbox when the client hears 250. Recipients routed elsewhere stay queued in
        that same transaction. False (nothing written) sends the message down the
        ordinary queue path instead, e.g. when a mailbox vanished meanwhile.
        """
        try:
            summary = summarize(data).to_json()
        except Exception:
            self.log.exception("summary_failed", queue_id=message.id)
            return False
        envelope = imap_envelope(summary)
        items = tuple(self._new_item(message, r, summary, envelope) for r in local)
        ledger = QuotaLedger(self.mail, self.categorizer.directory)
        for r, item in zip(local, items, strict=True):
            if not await ledger.admit(r.address, item.mailbox_id, item.size):
                # Over its quota: the queue path fails that recipient, sends the NDR
                # and delivers to the others. Rare enough not to duplicate it here.
                self.log.info("over_quota_at_receipt", queue_id=message.id, recipient=r.address)
                return False
        delivered = [replace(r, status=RecipientStatus.DELIVERED) for r in local]
        done = {r.address for r in local}
        still_queued = any(r.status in PENDING for r in rows if r.address not in done)
        enqueue = None
        if still_queued:
            rest = tuple(r for r in rows if r.address not in done)
            enqueue = (message, (*rest, *delivered))
        change = TransportCommit(
            enqueue=enqueue,
            deliver=items,
            events=(*events, *self._deliver_events(delivered, {message.id: message})),
        )
        try:
            await self.store.commit(change)
        except Exception:
            self.log.warning("deliver_at_receipt_failed", queue_id=message.id, exc_info=True)
            return False
        self._routed_out(rows)
        self.log.info(
            "delivered_at_receipt",
            queue_id=message.id,
            recipients=len(local),
            queued=len(rows) - len(local) if still_queued else 0,
            size=message.size,
        )
        self._notify(delivered)
        await self._report_success(delivered, {message.id: message}, {message.id: data})
        return True

    @staticmethod
    def _new_item(
        msg: QueuedMessage, r: QueuedRecipient, summary: dict[str, Any], envelope: bytes | None
    ) -> NewItem:
        prefix = f"Return-Path: <{msg.sender}>\r\n".encode()
        return NewItem(
            mailbox_id=int(r.next_hop[len(MAILBOX_HOP) :]),
            folder_name="Inbox",
            item_class="IPM.Note",
            blob_id=msg.blob_id,
            header_prefix=prefix,
            size=len(prefix) + msg.size,
            internal_date=msg.received,
            summary=summary,
            delivery_key=f"{msg.id}/{r.address.lower()}",
            imap_envelope=envelope,
        )

    async def _report_success(
        self,
        delivered: Sequence[QueuedRecipient],
        messages: dict[str, QueuedMessage],
        data: dict[str, bytes] | None = None,
    ) -> None:
        """Success DSNs for recipients that asked (NOTIFY=SUCCESS, RFC 3461)."""
        await self._report(
            [(r, DsnKind.DELIVERED, "250 2.0.0 Delivered to Inbox") for r in delivered],
            messages,
            data,
        )

    async def _report(
        self,
        outcomes: Sequence[tuple[QueuedRecipient, DsnKind, str]],
        messages: dict[str, QueuedMessage],
        data: dict[str, bytes] | None = None,
    ) -> None:
        """DSNs about (row, kind, reply) outcomes to the senders, for the recipients
        whose NOTIFY asks for that kind (RFC 3461: failures by default)."""
        wanted = [o for o in outcomes if wants_dsn(o[0], o[1])]
        for message_id in sorted({o[0].message_id for o in wanted}):
            message = messages[message_id]
            try:
                body = (data or {}).get(message_id) or await self.blobs.read(message.blob_id)
                if not dsn_allowed(message.sender, body):
                    continue
                reports = [o for o in wanted if o[0].message_id == message_id]
                for dsn in make_dsns(
                    message,
                    reports,
                    body,
                    reporting_mta=self.server_hostname,
                    expiration=0.0,
                    remote_mta=None,
                    now=time.time(),
                ):
                    await self.submit(dsn, "", [message.sender])
            except Exception:
                self.log.exception("dsn_failed", queue_id=message_id)

    def _notify(self, delivered: Sequence[QueuedRecipient]) -> None:
        if delivered:
            metrics.MAILBOX_DELIVERIES.inc(len(delivered))
        if delivered and self.on_delivered is not None:
            self.on_delivered(sorted({int(r.next_hop[len(MAILBOX_HOP) :]) for r in delivered}))

    async def submit(
        self, data: bytes, sender: str, recipients: Sequence[str], source: str = "DSN"
    ) -> str:
        """Queue a message this server wrote itself (a DSN): categorized, routed and
        delivered like received mail. Returns its queue id."""
        writer = self.blobs.writer()
        try:
            await writer.write(data)
            blob_id = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        queue_id = new_id()
        info = ReceiveInfo(
            session_id="",
            connector=source,
            client_ip="",
            client_helo=self.server_hostname,
            server_ip=self.server_ip,
            server_hostname=self.server_hostname,
            protocol="local",
        )
        message_id, subject = dsn_headers(data)
        await self.enqueue(
            queue_id,
            blob_id,
            len(data),
            Envelope(sender, tuple(recipients)),
            info,
            message_id,
            subject,
            data if len(data) <= HANDOFF_MAX_BYTES else None,
            source=source,
        )
        return queue_id

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

    @property
    def running(self) -> bool:
        """The store driver is working (for the admin listener's readiness)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

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
        # Batches already writing finish before the stores close: a half-applied batch
        # would be redone on restart (delivery is idempotent), but its errors would be noise.
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _dispatch_loop(self) -> None:
        last_scan = float("-inf")
        while not self._stopping:
            self._wake.clear()
            # Messages received by this process are handed over in memory: no read-back.
            while self._handoff:
                jobs: list[_Handoff] = []
                while self._handoff and len(jobs) < self.delivery_batch:
                    jobs.append(self._handoff.popleft())
                batch = [r for job in jobs for r in job.ready]
                await self._start_batch(batch, {job.message.id: job for job in jobs})
            # The queue itself is scanned at start (recovery after a crash) and periodically
            # (retries), not on every wake-up.
            if time.monotonic() - last_scan >= self.poll_seconds:
                last_scan = time.monotonic()
                try:
                    await self._reroute_if_connectors_changed()
                except Exception:
                    self.log.exception("reroute_failed")
                try:
                    due = await self.queue.due(
                        time.time(), limit=self.delivery_batch * 8, next_hop_prefix=MAILBOX_HOP
                    )
                except Exception:
                    self.log.exception("queue_read_failed")
                    due = []
                fresh = [r for r in due if (r.message_id, r.address) not in self._in_flight]
                for start in range(0, len(fresh), self.delivery_batch):
                    batch = fresh[start : start + self.delivery_batch]
                    for r in batch:
                        self._in_flight.add((r.message_id, r.address))
                    await self._start_batch(batch, {})
                if len(due) >= self.delivery_batch * 8:
                    last_scan = float("-inf")  # more is waiting
                    continue
            if self._handoff:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except TimeoutError:
                pass

    async def _reroute_if_connectors_changed(self) -> None:
        connectors = tuple(await self.categorizer.directory.list_send_connectors(fresh=True))
        if connectors == self._routing_basis:
            return
        self._routing_basis = connectors
        moved = await self.reroute(connectors)
        if moved:
            self.log.info("rerouted", recipients=moved, connectors=len(connectors))

    async def reroute(self, connectors: Sequence[SendConnector]) -> int:
        """Route pending external recipients again (Exchange resubmits the Unreachable
        queue when routing changes): a new connector takes mail out of Unreachable, a
        removed one sends its mail to another connector or into Unreachable."""
        now = time.time()
        updates: list[QueuedRecipient] = []
        events: list[TrackingEvent] = []
        # One read for the whole queue: a pass per message cost a read per message.
        for message, rows in await self.queue.in_status(MOVABLE):
            moved: list[QueuedRecipient] = []
            for r in rows:
                if r.next_hop.startswith((MAILBOX_HOP, INTRA_ORG_HOP)):
                    continue  # not routed by send connectors
                if (r.message_id, r.address) in self._in_flight:
                    continue  # being delivered right now; the next pass sees its outcome
                routed = reroute_row(r, connectors, self.categorizer.server_name, now)
                if routed is not r:
                    moved.append(routed)
            if moved:
                updates.extend(moved)
                events.append(
                    message_event(
                        message,
                        "RESUBMIT",
                        "ROUTING",
                        tuple(r.address for r in moved),
                        "; ".join(sorted({r.next_hop for r in moved})),
                        timestamp=now,
                        server_hostname=self.server_hostname,
                        connector=message.connector,
                        client_ip=message.client_ip,
                        server_ip=message.server_ip,
                    )
                )
        if updates:
            await self.store.commit(TransportCommit(update=tuple(updates), events=tuple(events)))
            self._routed_out(updates)
        return len(updates)

    async def _start_batch(self, batch: list[QueuedRecipient], known: dict[str, _Handoff]) -> None:
        if not batch:
            return
        await self._semaphore.acquire()
        task = asyncio.create_task(self._run_batch(batch, known))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._semaphore.release()

    async def _run_batch(self, batch: list[QueuedRecipient], known: dict[str, _Handoff]) -> None:
        try:
            await self.deliver(batch, known)
        except Exception:
            self.log.exception(
                "delivery_batch_failed",
                recipients=len(batch),
                queue_ids=sorted({r.message_id for r in batch}),
            )
        finally:
            for r in batch:
                self._in_flight.discard((r.message_id, r.address))

    async def deliver(
        self, batch: Sequence[QueuedRecipient], known: dict[str, _Handoff] | None = None
    ) -> None:
        """Deliver READY mailbox recipients into their Inboxes (idempotent).

        Items, the queue rows they finish and the DELIVER events commit together.
        """
        known = known or {}
        messages: dict[str, QueuedMessage] = {}
        summaries: dict[str, dict[str, Any]] = {}
        envelopes: dict[str, bytes | None] = {}
        new_items: list[NewItem] = []
        targets: list[QueuedRecipient] = []
        failures: list[QueuedRecipient] = []
        now = time.time()
        for r in batch:
            if not r.next_hop.startswith(MAILBOX_HOP):
                continue
            msg = messages.get(r.message_id)
            if msg is None:
                job = known.get(r.message_id)
                found = job.message if job else await self.queue.get_message(r.message_id)
                if found is None:
                    continue
                msg = messages[r.message_id] = found
                try:
                    data = (
                        job.data
                        if job and job.data is not None
                        else (await self.blobs.read(msg.blob_id))
                    )
                    summaries[msg.id] = summarize(data).to_json()
                    envelopes[msg.id] = imap_envelope(summaries[msg.id])
                except Exception as exc:
                    self.log.exception("blob_unreadable", queue_id=msg.id)
                    failures.append(self._retry(r, f"blob unreadable: {exc}", now))
                    continue
            if msg.id not in summaries:
                continue
            new_items.append(self._new_item(msg, r, summaries[msg.id], envelopes[msg.id]))
            targets.append(r)
        # Quota (transport/quota.py): an item that would take its mailbox past the
        # limit is not stored; its recipient fails for good and the sender gets an NDR.
        ledger = QuotaLedger(self.mail, self.categorizer.directory)
        admitted = [
            await ledger.admit(r.address, item.mailbox_id, item.size)
            for r, item in zip(targets, new_items, strict=True)
        ]
        over = [r for r, ok in zip(targets, admitted, strict=True) if not ok]
        new_items = [item for item, ok in zip(new_items, admitted, strict=True) if ok]
        targets = [r for r, ok in zip(targets, admitted, strict=True) if ok]
        delivered = [replace(r, status=RecipientStatus.DELIVERED, last_error="") for r in targets]
        bounced = [
            replace(
                r,
                status=RecipientStatus.FAILED,
                attempts=r.attempts + 1,
                last_error=DELIVERY_REFUSED,
                next_attempt=now,
            )
            for r in over
        ]
        final = delivered + bounced
        done = {r.message_id for r in final}
        finished: list[str] = []
        updates: list[QueuedRecipient] = []
        for message_id in done:
            job = known.get(message_id)
            if job is not None and {r.address for r in job.pending} <= {
                r.address for r in final if r.message_id == message_id
            }:
                finished.append(message_id)  # nothing left: drop the rows in one go
            else:
                updates.extend(r for r in final if r.message_id == message_id)
        if final:
            change = TransportCommit(
                deliver=tuple(new_items),
                update=tuple(updates),
                remove=tuple(finished),
                events=(
                    *self._deliver_events(delivered, messages),
                    *self._fail_events(bounced, messages),
                ),
            )
            try:
                await self.store.commit(change)
            except Exception as exc:
                self.log.exception(
                    "mailbox_delivery_failed",
                    items=len(new_items),
                    queue_ids=sorted({r.message_id for r in targets + over}),
                )
                failures.extend(self._retry(r, f"store error: {exc}", now) for r in targets + over)
                delivered, bounced, done = [], [], set()
        if failures:
            await self.queue.update_recipients(failures)
        stored = {r.message_id for r in delivered}
        for msg_id in stored:
            self.log.info(
                "delivered",
                queue_id=msg_id,
                recipients=sum(1 for r in delivered if r.message_id == msg_id),
            )
        for r in bounced:
            self.log.info("over_quota", queue_id=r.message_id, recipient=r.address)
        self._notify(delivered)
        await self._report_success(delivered, messages)
        if bounced:
            # The NDRs first: they may need the message's file, which may go next.
            bodies = {m: job.data for m, job in known.items() if job.data is not None}
            failed = [(r, DsnKind.FAILED, DELIVERY_REFUSED) for r in bounced]
            await self._report(failed, messages, bodies)
            for message_id in finished:
                if message_id not in stored:  # no Inbox refers to its file
                    await self._delete_blob(messages[message_id])
        # Every message this batch touched but did not finish may have nothing left
        # to do: its other next hops (a send connector's queue, another batch) may
        # have committed their last outcome while this one worked, each seeing the
        # other still pending. Commits are serial, so looking again after ours
        # finds it (the outbound side does the same).
        unsure = done - set(finished)
        if unsure:
            await self._forget_finished(unsure, messages)

    def _deliver_events(
        self, delivered: list[QueuedRecipient], messages: dict[str, QueuedMessage]
    ) -> list[TrackingEvent]:
        now = time.time()
        return [
            message_event(
                messages[r.message_id],
                "DELIVER",
                "STOREDRIVER",
                (r.address,),
                "250 2.0.0 Delivered to Inbox",
                timestamp=now,
                server_hostname=self.server_hostname,
                connector=messages[r.message_id].connector,
                client_ip=messages[r.message_id].client_ip,
                server_ip=messages[r.message_id].server_ip or self.server_ip,
            )
            for r in delivered
        ]

    def _fail_events(
        self, failed: list[QueuedRecipient], messages: dict[str, QueuedMessage]
    ) -> list[TrackingEvent]:
        now = time.time()
        return [
            message_event(
                messages[r.message_id],
                "FAIL",
                "STOREDRIVER",
                (r.address,),
                r.last_error,
                timestamp=now,
                server_hostname=self.server_hostname,
                connector=messages[r.message_id].connector,
                client_ip=messages[r.message_id].client_ip,
                server_ip=messages[r.message_id].server_ip or self.server_ip,
            )
            for r in failed
        ]

    async def _forget_finished(
        self, message_ids: set[str], messages: dict[str, QueuedMessage]
    ) -> None:
        """Drop queue rows of messages with nothing left to do. The blob stays while an
        Inbox refers to it (a row delivered to a mailbox); otherwise it goes too."""
        for message_id in message_ids:
            rows = await self.queue.recipients(message_id)
            if all(r.status in (RecipientStatus.DELIVERED, RecipientStatus.FAILED) for r in rows):
                await self.queue.remove_message(message_id)
                if rows and not any(
                    r.status == RecipientStatus.DELIVERED and r.next_hop.startswith(MAILBOX_HOP)
                    for r in rows
                ):
                    await self._delete_blob(messages[message_id])

    async def _delete_blob(self, message: QueuedMessage) -> None:
        try:
            await self.blobs.delete(message.blob_id)
        except Exception:
            # An orphan file, not a lost message.
            self.log.exception("blob_delete_failed", queue_id=message.id)

    @staticmethod
    def _retry(r: QueuedRecipient, error: str, now: float) -> QueuedRecipient:
        attempts = r.attempts + 1
        if attempts > GLITCH_RETRIES:
            return replace(r, attempts=attempts, last_error=error, next_attempt=now + 15 * 60)
        return replace(
            r, attempts=attempts, last_error=error, next_attempt=now + GLITCH_RETRY_SECONDS
        )
