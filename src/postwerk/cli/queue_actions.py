"""Queue viewer actions: `postwerk queue show|suspend|resume|retry|remove|resubmit`.

Exchange's Get-Message, Suspend-Message, Resume-Message, Retry-Queue,
Remove-Message and Resume-Message on the Poison queue. They change the queue
rows in the database directly, while the server runs: the server only ever
picks READY recipients whose time has come, so a suspended one is left alone
from the next scan on, and a resumed or retried one is taken within the
transport's poll interval (5 s). Every action writes a tracking event (source
ADMIN). Registered on the `queue` group at the end of `cli/main.py`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from postwerk.cli.main import (
    _Ctx,
    _domain_errors,
    _emit_json,
    _run,
    _with_backend,
    data_dir_option,
    json_option,
    queue,
)
from postwerk.core.errors import InvalidName, NotFound
from postwerk.store.api import PENDING_STATUSES, queue_name
from postwerk.store.records import (
    QueuedMessage,
    QueuedRecipient,
    RecipientStatus,
    TrackingEvent,
    TransportCommit,
    message_event,
)
from postwerk.transport.agents import QUARANTINE_HOP, release_quarantined
from postwerk.transport.dsn import DsnKind, dsn_allowed
from postwerk.transport.outbound import make_dsns, wants_dsn
from postwerk.transport.routing import reroute_row

ADMIN_REMOVED = "550 4.3.2 QUEUE.Admin; message deleted by administrative action"


def message_json(m: QueuedMessage, rows: list[QueuedRecipient]) -> dict[str, Any]:
    return {
        "id": m.id,
        "sender": m.sender,
        "subject": m.subject,
        "size": m.size,
        "received": m.received,
        "internet_message_id": m.internet_message_id,
        "source": m.source,
        "recipients": [
            {
                "address": r.address,
                "status": r.status.value,
                "queue": queue_name(r),
                "next_hop": r.next_hop,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "next_attempt": r.next_attempt or None,
            }
            for r in rows
        ],
    }


async def _load(c: _Ctx, queue_id: str) -> tuple[QueuedMessage, list[QueuedRecipient]]:
    message = await c.backend.sql.queue.get_message(queue_id)
    if message is None:
        raise NotFound(f"no queued message {queue_id!r} (see `postwerk queue messages`)")
    return message, await c.backend.sql.queue.recipients(queue_id)


def _event(
    c: _Ctx, m: QueuedMessage, event_id: str, rows: list[QueuedRecipient], status: str
) -> TrackingEvent:
    return message_event(
        m,
        event_id,
        "ADMIN",
        tuple(r.address for r in rows),
        status,
        timestamp=time.time(),
        server_hostname=c.settings.server.hostname,
    )


def _echo_message(data: dict[str, Any]) -> None:
    click.echo(f"{data['id']}  {data['sender'] or '<>'}  {data['subject']}  {data['size']} bytes")
    for r in data["recipients"]:
        click.echo(
            f"    {r['address']}  {r['status']}  {r['queue']}  attempts {r['attempts']}"
            f"  {r['last_error']}"
        )


@queue.command("show")
@click.argument("queue_id")
@data_dir_option
@json_option
@_domain_errors
def queue_show(queue_id: str, data_dir: Path, as_json: bool) -> None:
    """One queued message with every recipient's state (Get-Message)."""

    async def run(c: _Ctx) -> dict[str, Any]:
        return message_json(*await _load(c, queue_id))

    data = _run(_with_backend(data_dir, run))
    _emit_json(data) if as_json else _echo_message(data)


def _change(
    data_dir: Path,
    queue_id: str,
    event_id: str,
    pick: set[RecipientStatus],
    change: Any,
    verb: str,
    as_json: bool,
) -> None:
    async def run(c: _Ctx) -> dict[str, Any]:
        message, rows = await _load(c, queue_id)
        chosen = [r for r in rows if r.status in pick]
        if not chosen:
            raise InvalidName(f"message {queue_id} has no recipient to {verb}")
        updated = [change(r) for r in chosen]
        await c.backend.sql.transport.commit(
            TransportCommit(
                update=tuple(updated),
                events=(_event(c, message, event_id, updated, verb),),
            )
        )
        return message_json(
            message, [next((u for u in updated if u.address == r.address), r) for r in rows]
        )

    data = _run(_with_backend(data_dir, run))
    if as_json:
        _emit_json(data)
    else:
        _echo_message(data)


@queue.command("suspend")
@click.argument("queue_id")
@data_dir_option
@json_option
@_domain_errors
def queue_suspend(queue_id: str, data_dir: Path, as_json: bool) -> None:
    """Hold a message: no delivery attempt until it is resumed (Suspend-Message)."""

    def change(r: QueuedRecipient) -> QueuedRecipient:
        return replace(
            r,
            status=RecipientStatus.SUSPENDED,
            params={**r.params, "suspended_from": r.status.value},
        )

    pick = {RecipientStatus.READY, RecipientStatus.UNREACHABLE}
    _change(data_dir, queue_id, "SUSPEND", pick, change, "suspend", as_json)


@queue.command("resume")
@click.argument("queue_id")
@data_dir_option
@json_option
@_domain_errors
def queue_resume(queue_id: str, data_dir: Path, as_json: bool) -> None:
    """Release a suspended message (Resume-Message); it is routed and tried again at once."""

    async def run(c: _Ctx) -> dict[str, Any]:
        message, rows = await _load(c, queue_id)
        held = [r for r in rows if r.status == RecipientStatus.SUSPENDED]
        if not held:
            raise InvalidName(f"message {queue_id} has no recipient to resume")
        # Connectors may have changed while it was held: route its external recipients now.
        connectors = await c.backend.sql.directory.list_send_connectors()
        now = time.time()
        updated = []
        for r in held:
            if r.next_hop == QUARANTINE_HOP:
                # Held by an agent: back to the next hop it had when it was quarantined.
                updated.append(release_quarantined(r, now))
                continue
            params = dict(r.params)
            params.pop("suspended_from", None)
            if r.next_hop.startswith("mailbox:"):
                updated.append(
                    replace(r, status=RecipientStatus.READY, params=params, next_attempt=now)
                )
                continue
            # Routed afresh even if its hop looks unchanged: it must become due now.
            unheld = replace(r, status=RecipientStatus.UNREACHABLE, params=params)
            updated.append(reroute_row(unheld, connectors, c.settings.server.hostname, now))
        await c.backend.sql.transport.commit(
            TransportCommit(
                update=tuple(updated), events=(_event(c, message, "RESUME", updated, "resume"),)
            )
        )
        by_address = {u.address: u for u in updated}
        return message_json(message, [by_address.get(r.address, r) for r in rows])

    data = _run(_with_backend(data_dir, run))
    _emit_json(data) if as_json else _echo_message(data)


@queue.command("resubmit")
@click.argument("queue_id")
@data_dir_option
@json_option
@_domain_errors
def queue_resubmit(queue_id: str, data_dir: Path, as_json: bool) -> None:
    """Send a message from the Poison queue through delivery again."""
    now = time.time()

    def change(r: QueuedRecipient) -> QueuedRecipient:
        params = {k: v for k, v in r.params.items() if k != "crashes"}
        return replace(r, status=RecipientStatus.READY, params=params, next_attempt=now)

    pick = {RecipientStatus.POISON}
    _change(data_dir, queue_id, "RESUBMIT", pick, change, "resubmit", as_json)


@queue.command("retry")
@click.argument("name")
@data_dir_option
@json_option
@_domain_errors
def queue_retry(name: str, data_dir: Path, as_json: bool) -> None:
    """Try a queue's waiting messages now instead of at their next retry (Retry-Queue).

    NAME as `queue list` shows it: a next hop such as `smtp:Internet:example.org`.
    """

    async def run(c: _Ctx) -> int:
        now = time.time()
        q = c.backend.sql.queue
        if name in ("Unreachable", "Poison"):
            raise InvalidName(
                f"{name} is not retried: it empties when routing changes (Unreachable) "
                "or by `queue resubmit` (Poison)"
            )
        updates: list[QueuedRecipient] = []
        events: list[TrackingEvent] = []
        for m in await q.list_messages(RecipientStatus.READY):
            rows = [
                replace(r, next_attempt=now)
                for r in await q.recipients(m.id)
                if r.status == RecipientStatus.READY and queue_name(r) == name
            ]
            if rows:
                updates.extend(rows)
                events.append(_event(c, m, "RETRY", rows, f"retry requested for {name}"))
        if not updates:
            raise NotFound(f"no waiting messages in queue {name!r} (see `postwerk queue list`)")
        await c.backend.sql.transport.commit(
            TransportCommit(update=tuple(updates), events=tuple(events))
        )
        return len({r.message_id for r in updates})

    count = _run(_with_backend(data_dir, run))
    if as_json:
        _emit_json({"queue": name, "messages": count})
    else:
        click.echo(f"{count} message(s) in {name} will be tried within a few seconds")


@queue.command("remove")
@click.argument("queue_id")
@click.option(
    "--with-ndr/--without-ndr",
    default=True,
    show_default=True,
    help="Tell the sender with a non-delivery report (Remove-Message -WithNDR).",
)
@data_dir_option
@json_option
@_domain_errors
def queue_remove(queue_id: str, with_ndr: bool, data_dir: Path, as_json: bool) -> None:
    """Delete a message from the queue for its pending recipients (Remove-Message)."""
    from postwerk.roles.all_in_one import transport_for

    async def run(c: _Ctx) -> dict[str, Any]:
        message, rows = await _load(c, queue_id)
        pending = [r for r in rows if r.status in PENDING_STATUSES]
        if not pending:
            raise InvalidName(f"message {queue_id} has nothing pending")
        failed = [
            replace(r, status=RecipientStatus.FAILED, last_error=ADMIN_REMOVED) for r in pending
        ]
        data = await c.backend.blobs.read(message.blob_id)
        await c.backend.sql.transport.commit(
            TransportCommit(
                remove=(message.id,),
                events=(_event(c, message, "FAIL", failed, ADMIN_REMOVED),),
            )
        )
        ndr = with_ndr and dsn_allowed(message.sender, data)
        reports = [(r, DsnKind.FAILED, ADMIN_REMOVED) for r in failed]
        reports = [x for x in reports if wants_dsn(x[0], DsnKind.FAILED)] if ndr else []
        if reports:
            transport = transport_for(c.backend, c.settings)
            for dsn in make_dsns(
                message,
                reports,
                data,
                reporting_mta=c.settings.server.hostname,
                expiration=c.settings.transport.message_expiration_timeout,
                remote_mta=None,
                now=time.time(),
            ):
                await transport.submit(dsn, "", [message.sender])
        if not any(r.next_hop.startswith("mailbox:") for r in rows):
            await c.backend.blobs.delete(message.blob_id)
        out = message_json(message, failed)
        out["ndr"] = bool(reports)
        return out

    data = _run(_with_backend(data_dir, run))
    if as_json:
        _emit_json(data)
    else:
        note = " (the sender gets a non-delivery report)" if data["ndr"] else ""
        click.echo(f"removed message {queue_id}{note}")
