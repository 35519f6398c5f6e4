"""Delivery queues for send connectors: next hop, SMTP, retries, expiry, NDRs.

Every READY recipient whose next hop is `smtp:…` belongs to the delivery queue of
that next hop. The loop below takes due recipients, works on up to `max_hops`
queues at once (one worker per queue, messages in order, over reused
connections), and for each message:

1. finds its send connector (gone: the transport's reroute pass moves its mail);
2. resolves the destination: smart hosts by name, or the domain's MX (`dns.py`);
   for a connector with FrontEndProxyEnabled on a Mailbox server without the
   Client Access role, the destination is instead a running Client Access
   server's Outbound Proxy Frontend (717; `outbound_proxy`, built by the
   composition root from transport/outbound_proxy.py), which relays the
   transaction to the connector's next hop during the session, so the replies
   recorded below are the real destination's;
3. sends it with `smtp_client.py`;
4. commits the outcome per recipient in one transaction (`TransportCommit`):
   delivered → SEND event; permanent failure → FAILED, FAIL event, NDR;
   temporary failure → next attempt by `retry.py` (DEFER event), a delay DSN once
   past the delay-notification timeout, and past expiry FAILED with 4.4.7 and an
   NDR. A message with nothing left pending leaves the queue; its file goes too
   unless a local mailbox holds it.

DSNs are new messages from the null sender, handed to `submit_dsn`, which puts
them through the transport like any other message (so an NDR to a local sender
lands in their Inbox, one to a remote sender takes a send connector).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import structlog

from postwerk.core.ids import new_id
from postwerk.directory.cache import RecipientLookup
from postwerk.store.api import BlobStore, QueueStore, TransportStore
from postwerk.store.records import (
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    SendConnector,
    TrackingEvent,
    TransportCommit,
    message_event,
)
from postwerk.transport.dns import DnsFailure, Resolver
from postwerk.transport.dsn import (
    DsnKind,
    DsnRequest,
    RecipientReport,
    build_dsn,
    dsn_allowed,
    notify_wanted,
)
from postwerk.transport.intake import decode_text
from postwerk.transport.retry import FailureKind, RetryPolicy
from postwerk.transport.routing import (
    INTRA_ORG_HOP,
    SMTP_HOP,
    parse_smart_host,
    parse_smtp_hop,
)
from postwerk.transport.smtp_client import (
    Destination,
    OutboundClient,
    OutboundMessage,
    RecipientResult,
    SendResult,
    TlsPolicy,
)

FINAL = (RecipientStatus.DELIVERED, RecipientStatus.FAILED)
SubmitDsn = Callable[[bytes, str], Awaitable[None]]  # (DSN message, recipient)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one attempt did to one recipient."""

    row: QueuedRecipient  # the updated queue row
    event: str  # SEND, DEFER, FAIL
    reply: str  # for tracking and DSNs
    dsn: DsnKind | None = None  # a DSN to send about it


PRELOAD_MESSAGES = 100  # messages (and recipients) read at once per queue
PRELOAD_BYTES = 256 * 1024  # files up to this size are read with them; larger at send time


@dataclass(slots=True)
class _Job:
    """One message of a queue, loaded and ready to send."""

    rows: list[QueuedRecipient]  # the due rows of this next hop, as scanned
    message: QueuedMessage
    current: list[QueuedRecipient]  # every recipient of the message, as loaded
    data: bytes | None = None  # the file, when small enough to preload


class _CommitBatcher:
    """Outcomes of many messages in one `TransportCommit`.

    While one commit runs, the next ones gather; each caller returns once the
    commit holding its change is durable. A batch that fails (one message
    removed by an admin meanwhile, say) is retried change by change, so one bad
    change never fails the others.
    """

    def __init__(self, store: TransportStore) -> None:
        self._store = store
        self._pending: list[tuple[TransportCommit, asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None

    async def commit(self, change: TransportCommit) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((change, future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain(), name="outbound-commits")
        await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                if len(batch) == 1:
                    await self._one(*batch[0])
                    continue
                merged = TransportCommit(
                    deliver=tuple(i for c, _ in batch for i in c.deliver),
                    update=tuple(r for c, _ in batch for r in c.update),
                    remove=tuple(m for c, _ in batch for m in c.remove),
                    events=tuple(e for c, _ in batch for e in c.events),
                )
                try:
                    await self._store.commit(merged)
                except Exception:
                    for change, future in batch:
                        await self._one(change, future)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._running = None
            for _, future in self._pending:  # cancelled while waiting: fail, do not hang
                if not future.done():
                    future.set_exception(RuntimeError("commit batcher stopped"))
            self._pending = []

    async def _one(self, change: TransportCommit, future: asyncio.Future[None]) -> None:
        try:
            await self._store.commit(change)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(None)


class _BlobReaper:
    """Deletes files of finished messages in batches, one thread hop per batch."""

    def __init__(self, blobs: BlobStore, log: Any) -> None:
        self._blobs = blobs
        self._log = log
        self._ids: list[str] = []
        self._running: asyncio.Task[None] | None = None

    def delete(self, blob_id: str) -> None:
        self._ids.append(blob_id)
        if self._running is None:
            self._running = asyncio.create_task(self._drain(), name="outbound-blob-reaper")

    async def flush(self) -> None:
        if self._running is not None:
            await asyncio.shield(self._running)
        if self._ids:
            await self._drain()

    async def _drain(self) -> None:
        try:
            while self._ids:
                batch, self._ids = self._ids, []
                try:
                    await self._blobs.delete_many(batch)
                except Exception:
                    self._log.exception("blob_delete_failed", blobs=len(batch))
        finally:
            self._running = None


@dataclass
class OutboundDelivery:
    queue: QueueStore
    store: TransportStore
    blobs: BlobStore
    directory: RecipientLookup
    resolver: Resolver
    client: OutboundClient
    policy: RetryPolicy
    server_hostname: str
    submit_dsn: SubmitDsn
    poll_seconds: float = 5.0
    max_hops: int = 10
    per_hop_connections: int = 20  # messages of one next hop in flight at once
    poison_threshold: int = 2  # crashes before a message goes to the Poison queue
    batch: int = 500
    ssl_context: ssl.SSLContext | None = None  # trust store for verified connectors
    partition: tuple[int, int] | None = None  # (k, n): this process's share of the queue
    # Where another server of the organization takes mail (Mailbox → Mailbox), or None
    # when it cannot be reached now (roles/all_in_one.py builds it from the directory).
    intra_org: Callable[[str], Awaitable[Destination | DnsFailure | None]] | None = None
    # FrontEndProxyEnabled connectors' next hop (its "smtp:…" text) → the Client Access
    # servers to send through, in the order to try, or why none can be used now; None
    # sends such connectors' mail directly (this server is a Client Access server too).
    outbound_proxy: Callable[[str], Awaitable[Sequence[Destination] | DnsFailure]] | None = None
    log: Any = field(default_factory=lambda: structlog.get_logger("postwerk.outbound"))

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._active: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(self.max_hops)
        self._stopping = False
        self._commits = _CommitBatcher(self.store)
        self._doomed = _BlobReaper(self.blobs, self.log)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="outbound-delivery")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        # A message in the middle of its SMTP transaction is not acknowledged by us
        # yet; cancelling leaves it READY, and the next start sends it again.
        for task in list(self._active.values()):
            task.cancel()
        if self._active:
            await asyncio.gather(*self._active.values(), return_exceptions=True)
        await self._doomed.flush()
        await self.client.close()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._dispatch()
            except Exception:
                self.log.exception("outbound_scan_failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except TimeoutError:
                pass

    async def _dispatch(self) -> None:
        due = await self.queue.due(
            time.time(), limit=self.batch, next_hop_prefix=SMTP_HOP, partition=self.partition
        )
        by_hop: dict[str, list[QueuedRecipient]] = {}
        for r in due:
            if r.next_hop not in self._active:
                by_hop.setdefault(r.next_hop, []).append(r)
        for hop, rows in by_hop.items():
            await self._slots.acquire()
            task = asyncio.create_task(self._work_hop(hop, rows), name=f"queue {hop}")
            self._active[hop] = task
            task.add_done_callback(functools.partial(self._hop_done, hop))

    def _hop_done(self, hop: str, _task: asyncio.Task[None]) -> None:
        self._active.pop(hop, None)
        self._slots.release()
        self._wake.set()  # its queue may hold more due mail

    # ---------------------------------------------------------------- one queue

    async def _work_hop(self, hop: str, rows: list[QueuedRecipient]) -> None:
        """One queue as a pipeline: a loader reads messages (and their small files) a
        hundred at a time, senders take them as they come (on at most
        `per_hop_connections` connections), and
        outcomes are committed in batches (`_CommitBatcher`)."""
        by_message: dict[str, list[QueuedRecipient]] = {}
        for r in rows:
            by_message.setdefault(r.message_id, []).append(r)
        ids = list(by_message)
        # Twice as many senders as connections: a sender waits for its outcome's commit
        # (an fsync) after giving its connection back, and another sender takes the
        # connection meanwhile. The client still opens at most per_hop_connections.
        senders = max(1, min(2 * self.per_hop_connections, len(ids)))
        jobs: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=2 * PRELOAD_MESSAGES)

        async def load() -> None:
            try:
                for start in range(0, len(ids), PRELOAD_MESSAGES):
                    chunk = ids[start : start + PRELOAD_MESSAGES]
                    found = await self.queue.messages_with_recipients(chunk)
                    small = [m.blob_id for m, _ in found.values() if m.size <= PRELOAD_BYTES]
                    files = await self.blobs.read_many(small) if small else {}
                    for message_id in chunk:
                        loaded = found.get(message_id)
                        if loaded is None:
                            continue  # gone since the scan (an admin, another pass)
                        message, current = loaded
                        job = _Job(by_message[message_id], message, current)
                        job.data = files.get(message.blob_id)
                        await jobs.put(job)
            except Exception:
                # The rows stay READY; the next scan tries them again.
                self.log.exception("outbound_load_failed", next_hop=hop)
            finally:
                for _ in range(senders):
                    await jobs.put(None)

        async def send() -> None:
            while (job := await jobs.get()) is not None:
                try:
                    await self._deliver_message(hop, job)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Contained: counted against the message; the next scan tries it
                    # again, until it is poison.
                    message_id = job.message.id
                    self.log.exception("outbound_message_failed", queue_id=message_id, next_hop=hop)
                    try:
                        await self._crashed(message_id, job.rows)
                    except Exception:
                        self.log.exception("poison_bookkeeping_failed", queue_id=message_id)

        await asyncio.gather(load(), *(send() for _ in range(senders)))

    async def _crashed(self, message_id: str, rows: list[QueuedRecipient]) -> None:
        """Count a crash of this message's delivery; at the threshold it becomes poison:
        it leaves delivery for the Poison queue and waits for `queue resubmit`."""
        message = await self.queue.get_message(message_id)
        if message is None:
            return
        current = {r.address: r for r in await self.queue.recipients(message_id)}
        now = time.time()
        updated: list[QueuedRecipient] = []
        for r in rows:
            row = current.get(r.address)
            if row is None or row.status != RecipientStatus.READY:
                continue  # the crash came after this one's outcome was stored
            crashes = int(row.params.get("crashes", 0)) + 1
            params = {**row.params, "crashes": crashes}
            if crashes >= self.poison_threshold:
                error = f"poison: delivery failed with an internal error {crashes} times"
                updated.append(
                    replace(row, status=RecipientStatus.POISON, params=params, last_error=error)
                )
            else:
                retry = now + self.policy.glitch_interval
                updated.append(replace(row, params=params, next_attempt=retry))
        poisoned = [r for r in updated if r.status == RecipientStatus.POISON]
        events = []
        if poisoned:
            events.append(
                message_event(
                    message,
                    "POISONMESSAGE",
                    "SMTP",
                    tuple(r.address for r in poisoned),
                    poisoned[0].last_error,
                    timestamp=now,
                    server_hostname=self.server_hostname,
                )
            )
            self.log.warning("poison_message", queue_id=message.id, recipients=len(poisoned))
        if updated:
            await self.store.commit(TransportCommit(update=tuple(updated), events=tuple(events)))

    async def _deliver_message(self, hop: str, job: _Job) -> None:
        message, current, rows = job.message, job.current, job.rows
        # Recipients whose state changed since the scan (an admin, another worker) are
        # left alone; the others are worked on with their current rows.
        fresh = {r.address: r for r in current}
        rows = [
            fresh[r.address]
            for r in rows
            if r.address in fresh and fresh[r.address].status == RecipientStatus.READY
        ]
        if not rows:
            return
        now = time.time()
        log = self.log.bind(queue_id=message.id, next_hop=hop)
        if hop.startswith(INTRA_ORG_HOP):
            # Mailbox → Mailbox: the server hosting the recipients' database, on its
            # "Default <server>" connector, as an organization server.
            server = hop[len(INTRA_ORG_HOP) :]
            found = await self.intra_org(server) if self.intra_org else None
            if found is None:
                found = DnsFailure(False, "4.4.0", f"server {server} is not reachable")
            await self._send(hop, job, rows, found, "", log)
            return
        name, domain = parse_smtp_hop(hop)
        connectors = {c.name: c for c in await self.directory.list_send_connectors()}
        connector = connectors.get(name)
        if connector is None or not connector.enabled:
            return  # routing changed; the transport's reroute pass moves these rows
        # FrontEndProxyEnabled: the message leaves through a Client Access server's
        # Outbound Proxy Frontend connector. On a server that is Client Access too that
        # server is this one, so the path is the same engine; tracking names the hop.
        proxied = connector.frontend_proxy and self.outbound_proxy is not None
        via = ""
        if connector.frontend_proxy:
            # Completed with the Client Access server's name once one took the session.
            via = "Outbound Proxy Frontend" + ("" if proxied else f" {self.server_hostname}")
        if message.size > connector.max_message_size:
            outcomes = [
                self._failed(r, "5.3.4", f"552 5.3.4 message size exceeds {name}'s limit", now)
                for r in rows
            ]
            await self._finish(message, outcomes, None, now, everyone=current, via=via)
            return
        if proxied:
            assert self.outbound_proxy is not None
            # Through a Client Access server: while none can be used, the mail waits
            # in this queue (as Exchange's does); it never goes out directly instead.
            through = await self.outbound_proxy(hop)
            await self._send(hop, job, rows, through, via, log)
            return
        destination = await self.destination(connector, domain, hop)
        await self._send(hop, job, rows, destination, via, log)

    async def _send(
        self,
        hop: str,
        job: _Job,
        rows: list[QueuedRecipient],
        destination: Destination | Sequence[Destination] | DnsFailure,
        via: str,
        log: Any,
    ) -> None:
        """Send to `destination`; several (Client Access servers) are tried in turn
        until one takes a session (`via` is then completed with its name)."""
        message, current = job.message, job.current
        now = time.time()
        if isinstance(destination, DnsFailure):
            reply = f"{'550' if destination.permanent else '451'} {destination.status} "
            reply += destination.reason
            if destination.permanent:
                outcomes = [self._failed(r, destination.status, reply, now) for r in rows]
            else:
                outcomes = [
                    self._deferred(message, r, reply, FailureKind.TRANSIENT, now) for r in rows
                ]
            log.info("next_hop_unresolved", permanent=destination.permanent, reason=reply)
            await self._finish(message, outcomes, None, now, everyone=current, via=via)
            return
        data = job.data if job.data is not None else await self.blobs.read(message.blob_id)
        outbound = OutboundMessage(
            sender=message.sender,
            recipients=tuple((r.address, _rcpt_params(r)) for r in rows),
            data=data,
            mail_params=_mail_params(message),
            needs_smtputf8=bool(message.params.get("smtputf8")),
            eight_bit=str(message.params.get("body", "")).upper() == "8BITMIME",
        )
        result = await self._send_first(destination, outbound)
        if not isinstance(destination, Destination) and result.remote_host:
            via += f" {result.remote_host}"  # the Client Access server that relayed it
        by_address = {res.address: res for res in result.recipients}
        outcomes = []
        for r in rows:
            res = by_address.get(r.address)
            if res is None:  # the client always answers for each; be safe anyway
                outcomes.append(
                    self._deferred(message, r, "451 4.4.0 no result", FailureKind.TRANSIENT, now)
                )
            elif res.delivered:
                outcomes.append(self._delivered(r, res, now, not result.dsn_supported))
            elif res.permanent:
                outcomes.append(self._failed(r, res.status, res.reply, now))
            else:
                kind = FailureKind.CONNECTION if result.connection_error else FailureKind.TRANSIENT
                outcomes.append(self._deferred(message, r, res.reply, kind, now))
        # Every delivery has its SEND event in the tracking log; the service log
        # keeps the failures at info (a line per message cost 6 % of a drain).
        log.log(
            logging.DEBUG if result.all_delivered else logging.INFO,
            "sent" if result.all_delivered else "send_attempted",
            remote_host=result.remote_host,
            remote_ip=result.remote_ip,
            tls=result.tls,
            delivered=sum(1 for o in outcomes if o.event == "SEND"),
            failed=sum(1 for o in outcomes if o.event == "FAIL"),
            deferred=sum(1 for o in outcomes if o.event == "DEFER"),
            error=result.connection_error,
        )
        await self._finish(message, outcomes, result, now, data, everyone=current, via=via)

    async def _send_first(
        self, destination: Destination | Sequence[Destination], outbound: OutboundMessage
    ) -> SendResult:
        """The result of the first destination that took a session (nothing can have
        been sent to one that did not); when none did, every one's error."""
        if isinstance(destination, Destination):
            return await self.client.send(destination, outbound)
        errors: list[str] = []
        result: SendResult | None = None
        for one in destination:
            result = await self.client.send(one, outbound)
            if result.remote_host is not None:
                return result
            errors.append(result.connection_error or "no session")
        assert result is not None, "no destination to send to"
        return replace(result, connection_error="; ".join(errors))

    async def destination(
        self, connector: SendConnector, domain: str | None, hop: str
    ) -> Destination | DnsFailure:
        """Where `connector` sends mail for `domain` (None for smart hosts): its smart
        hosts, else the domain's MX hosts, with its TLS policy and smart-host AUTH.
        Also what a Client Access server's Outbound Proxy Frontend relays to."""
        hosts: list[tuple[str, str]] = []
        port = connector.port
        if connector.smart_hosts:
            for text in connector.smart_hosts:
                host, host_port = parse_smart_host(text)
                if host_port is not None:
                    port = host_port  # one port per connector: the last one given wins
                found = await self.resolver.resolve_host(host)
                if isinstance(found, DnsFailure):
                    continue
                hosts.extend((host, address) for address in found)
            if not hosts:
                return DnsFailure(False, "4.4.3", f"no smart host of {connector.name} resolved")
        else:
            assert domain is not None
            hops = await self.resolver.resolve_mx(domain)
            if isinstance(hops, DnsFailure):
                return hops
            hosts = [(h.name, a) for h in hops.hosts for a in h.addresses]
        auth = None
        if connector.auth_user is not None and connector.auth_password is not None:
            auth = (connector.auth_user, connector.auth_password)
        return Destination(
            hosts=hosts,
            helo_name=connector.fqdn or self.server_hostname,
            port=port,
            tls=TlsPolicy(connector.tls),
            verify_certificates=connector.verify_certificates,
            ssl_context=self.ssl_context,
            auth=auth,
            next_hop=hop,
        )

    # ---------------------------------------------------------------- outcomes

    def _delivered(
        self, r: QueuedRecipient, res: RecipientResult, now: float, relayed: bool
    ) -> _Outcome:
        row = replace(r, status=RecipientStatus.DELIVERED, last_error="", next_attempt=now)
        # RFC 3461 §5.2.2: a peer without DSN cannot report success, so we say "relayed".
        return _Outcome(row, "SEND", res.reply, DsnKind.RELAYED if relayed else None)

    def _failed(self, r: QueuedRecipient, status: str, reply: str, now: float) -> _Outcome:
        row = replace(r, status=RecipientStatus.FAILED, attempts=r.attempts + 1, last_error=reply)
        return _Outcome(row, "FAIL", reply, DsnKind.FAILED)

    def _deferred(
        self,
        message: QueuedMessage,
        r: QueuedRecipient,
        reply: str,
        kind: FailureKind,
        now: float,
    ) -> _Outcome:
        attempts = r.attempts + 1
        when = self.policy.next_attempt(attempts, kind, message.received, now)
        if when is None:
            expired = f"550 4.4.7 message expired after repeated failures; last error: {reply}"
            row = replace(r, status=RecipientStatus.FAILED, attempts=attempts, last_error=expired)
            return _Outcome(row, "FAIL", expired, DsnKind.FAILED)
        params = dict(r.params)
        dsn = None
        if self.policy.delay_due(message.received, now) and not params.get("delay_notified"):
            params["delay_notified"] = True
            dsn = DsnKind.DELAYED
        row = replace(r, attempts=attempts, last_error=reply, next_attempt=when, params=params)
        return _Outcome(row, "DEFER", reply, dsn)

    async def _finish(
        self,
        message: QueuedMessage,
        outcomes: Sequence[_Outcome],
        result: SendResult | None,
        now: float,
        data: bytes | None = None,
        *,
        everyone: list[QueuedRecipient],
        via: str = "",
    ) -> None:
        done = {o.row.address: o.row for o in outcomes}
        everyone = [done.get(r.address, r) for r in everyone]
        finished = all(r.status in FINAL for r in everyone)
        events = [self._event(message, o, result, now, via) for o in outcomes]
        dsns = [o for o in outcomes if o.dsn is not None and _wants(o)]
        if dsns:
            if data is None:
                data = await self.blobs.read(message.blob_id)
            if not dsn_allowed(message.sender, data):
                dsns = []
        if dsns:
            events.append(self._dsn_event(message, dsns, now))
        change = TransportCommit(
            update=() if finished else tuple(o.row for o in outcomes),
            remove=(message.id,) if finished else (),
            events=tuple(events),
        )
        await self._commits.commit(change)
        if dsns:
            assert data is not None
            await self._send_dsns(message, dsns, data, result, now)
        if not finished and all(o.row.status in FINAL for o in outcomes):
            # Another next hop of this message may have committed its last outcome while
            # we worked, each of us seeing the other still pending: look once more now
            # that our outcome is stored (commits are serial, so the later one sees both).
            everyone = await self.queue.recipients(message.id)
            finished = bool(everyone) and all(r.status in FINAL for r in everyone)
            if finished:
                await self._commits.commit(TransportCommit(remove=(message.id,)))
        if finished and not any(
            r.next_hop.startswith("mailbox:") and r.status == RecipientStatus.DELIVERED
            for r in everyone
        ):
            # No Inbox refers to the file (a mailbox row that failed, e.g. over its
            # quota, stored nothing): it was only ever for the queue. Removed in
            # batches; a crash before that leaves an orphan file, never a lost message.
            self._doomed.delete(message.blob_id)

    async def _send_dsns(
        self,
        message: QueuedMessage,
        outcomes: Sequence[_Outcome],
        data: bytes,
        result: SendResult | None,
        now: float,
    ) -> None:
        reports = [(o.row, o.dsn, o.reply) for o in outcomes if o.dsn is not None]
        for dsn in make_dsns(
            message,
            reports,
            data,
            reporting_mta=self.server_hostname,
            expiration=self.policy.expiration,
            remote_mta=result.remote_host if result is not None else None,
            now=now,
        ):
            try:
                await self.submit_dsn(dsn, message.sender)
            except Exception:
                self.log.exception("dsn_submit_failed", queue_id=message.id)

    # ---------------------------------------------------------------- tracking

    def _event(
        self,
        message: QueuedMessage,
        o: _Outcome,
        result: SendResult | None,
        now: float,
        via: str = "",
    ) -> TrackingEvent:
        return message_event(
            message,
            o.event,
            "SMTP",
            (o.row.address,),
            o.reply,
            timestamp=now,
            # The next hop's name and address stand where Exchange logs the remote server.
            server_hostname=(result.remote_host or "") if result is not None else "",
            connector=parse_smtp_hop(o.row.next_hop)[0] + (f" via {via}" if via else ""),
            client_ip=(result.remote_ip or "") if result is not None else "",
        )

    def _dsn_event(
        self, message: QueuedMessage, outcomes: Sequence[_Outcome], now: float
    ) -> TrackingEvent:
        kinds = sorted({o.dsn.value for o in outcomes if o.dsn is not None})
        return message_event(
            message,
            "DSN",
            "DSN",
            tuple(o.row.address for o in outcomes),
            ",".join(kinds),
            timestamp=now,
            server_hostname=self.server_hostname,
        )


def make_dsns(
    message: QueuedMessage,
    reports: Sequence[tuple[QueuedRecipient, DsnKind, str]],
    data: bytes,
    *,
    reporting_mta: str,
    expiration: float,
    remote_mta: str | None,
    now: float,
) -> list[bytes]:
    """One DSN per kind (failed, delayed, ...) about `reports`: (row, kind, reply)."""
    by_kind: dict[DsnKind, list[RecipientReport]] = {}
    for row, kind, reply in reports:
        orcpt = row.params.get("orcpt")
        by_kind.setdefault(kind, []).append(
            RecipientReport(
                final_recipient=row.address,
                action=kind,
                status=_status_of(reply, kind),
                original_recipient=str(orcpt) if orcpt else None,
                diagnostic=reply,
                remote_mta=remote_mta,
                last_attempt=now,
                will_retry_until=(
                    message.received + expiration if kind == DsnKind.DELAYED else None
                ),
            )
        )
    out = []
    for rows in by_kind.values():
        request = DsnRequest(
            reporting_mta=reporting_mta,
            original_sender=message.sender,
            arrival_date=message.received,
            recipients=tuple(rows),
            original_message=data,
            subject=message.subject,
            original_message_id=message.internet_message_id or None,
            original_envelope_id=_str_or_none(message.params.get("envid")),
            ret=_str_or_none(message.params.get("ret")),
        )
        out.append(build_dsn(request, now=now, message_id=f"<{new_id()}@{reporting_mta}>"))
    return out


def wants_dsn(row: QueuedRecipient, kind: DsnKind) -> bool:
    notify = row.params.get("notify")
    return notify_wanted(list(notify) if notify else None, kind)


def _wants(o: _Outcome) -> bool:
    notify = o.row.params.get("notify")
    assert o.dsn is not None
    return notify_wanted(list(notify) if notify else None, o.dsn)


def _rcpt_params(r: QueuedRecipient) -> dict[str, str]:
    params: dict[str, str] = {}
    notify = r.params.get("notify")
    if notify:
        params["NOTIFY"] = ",".join(str(n).upper() for n in notify)
    orcpt = r.params.get("orcpt")
    if orcpt:
        params["ORCPT"] = str(orcpt)
    return params


def _mail_params(message: QueuedMessage) -> dict[str, str]:
    params: dict[str, str] = {}
    if message.params.get("ret"):
        params["RET"] = str(message.params["ret"]).upper()
    if message.params.get("envid"):
        params["ENVID"] = str(message.params["envid"])
    return params


def _status_of(reply: str, kind: DsnKind) -> str:
    parts = reply.split()
    if len(parts) > 1 and parts[1][:1].isdigit() and parts[1].count(".") == 2:
        return parts[1]
    return "4.0.0" if kind == DsnKind.DELAYED else "5.0.0"


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None


def dsn_headers(data: bytes) -> tuple[str, str]:
    """(Message-ID, decoded Subject) of a message we wrote, for the queue and tracking."""
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    headers = BytesHeaderParser(policy=compat32).parsebytes(head)
    return (headers.get("Message-ID") or "").strip(), decode_text(headers.get("Subject"))
