"""Nothing acknowledged is lost, nothing is delivered twice: `kill -9` under load.

A real `postwerk serve` process takes mail from several smtplib clients sending
as fast as they can; every message carries a unique token (Subject and
Message-ID) and the clients record exactly which messages got the final 250.
The server is killed with SIGKILL mid-flight, restarted, killed again while it
redelivers its backlog and takes new mail, and restarted once more. When
delivery has settled, every acknowledged message must be in each of its
recipients' Inboxes exactly once, and no message anywhere more than once.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import smtplib
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from postwerk.store.blobs import FileBlobStore
from tests.conftest import DOMAIN, child_env, cli, init_data_dir, postwerk_command

pytestmark = pytest.mark.slow

USERS = [f"u{i}@{DOMAIN}" for i in range(4)]
CLIENTS = 4
LOAD_SECONDS = 1.5


@dataclass
class ServeProcess:
    """`postwerk serve` as a child process; its stderr goes to a file."""

    data_dir: Path
    offset: int
    proc: subprocess.Popen[bytes]

    @property
    def smtp_port(self) -> int:
        return 25 + self.offset

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def start_serve(
    data_dir: Path, log: Path, offset: int | None = None, env: dict[str, str] | None = None
) -> ServeProcess:
    """Start `serve` and wait until it listens (its pid file names it). A port that is
    taken makes `serve` exit with a reason; then try another random offset."""
    pid_file = data_dir / "postwerk.pid"
    for _attempt in range(10):
        chosen = offset if offset is not None else random.randint(20000, 40000)
        offset = None  # a retry picks a fresh offset
        start = log.stat().st_size if log.exists() else 0
        with log.open("ab") as err:
            args = ["serve", "--data-dir", str(data_dir), "--port-offset", str(chosen)]
            proc = subprocess.Popen(
                [*postwerk_command(), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**child_env(), **(env or {})},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if pid_file.read_text().strip() == str(proc.pid):
                    return ServeProcess(data_dir, chosen, proc)
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        else:
            proc.kill()
            proc.wait()
            pytest.fail(f"serve did not start: {log.read_bytes()[start:]!r}")
        reason = log.read_bytes()[start:].decode(errors="replace")
        if "cannot listen" not in reason:
            pytest.fail(f"serve exited {proc.returncode}: {reason}")
    pytest.fail("no free port offset found")


@dataclass
class Ledger:
    """What the clients tried and what the server acknowledged, by token."""

    attempted: dict[str, tuple[str, ...]] = field(default_factory=dict)
    acked: dict[str, tuple[str, ...]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def body(token: str, rcpts: tuple[str, ...], big: bool) -> bytes:
    # Big bodies outgrow the blob writer's memory buffer, so a temp file is open mid-DATA.
    filler = ("y" * 998 + "\r\n") * (300 if big else 1)
    return (
        f"From: load@remote.test\r\nTo: {', '.join(rcpts)}\r\nSubject: {token}\r\n"
        f"Message-ID: <{token}@remote.test>\r\n\r\ntoken {token}\r\n{filler}"
    ).encode()


def client(phase: str, index: int, port: int, stop: threading.Event, ledger: Ledger) -> None:
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.ehlo("load.remote.test")
                while not stop.is_set():
                    n += 1
                    token = f"{phase}-{index}-{n}"
                    rcpts: tuple[str, ...] = (USERS[(index + n) % len(USERS)],)
                    if n % 3 == 0:  # some messages go to two mailboxes
                        rcpts += (USERS[(index + n + 1) % len(USERS)],)
                    with ledger.lock:
                        ledger.attempted[token] = rcpts
                    refused = s.sendmail(
                        "load@remote.test", list(rcpts), body(token, rcpts, big=index == 0)
                    )
                    if refused:
                        with ledger.lock:
                            ledger.errors.append(f"{token}: refused {refused}")
                        continue
                    with ledger.lock:  # sendmail returned: the final dot got a 250
                        ledger.acked[token] = rcpts
        except (OSError, smtplib.SMTPException) as exc:
            if stop.is_set():
                return
            if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500:
                with ledger.lock:
                    ledger.errors.append(f"{phase}-{index}-{n}: {exc}")
            time.sleep(0.02)


def load_then_kill(server: ServeProcess, phase: str, ledger: Ledger, seconds: float) -> None:
    """Clients send as fast as they can; SIGKILL the server while they are mid-flight."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=client, args=(phase, i, server.smtp_port, stop, ledger))
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(seconds)
        server.kill9()
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads)


def db_query(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{data_dir / 'postwerk.db'}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def pending(data_dir: Path) -> int:
    rows = db_query(data_dir, "SELECT count(*) FROM queue_recipient WHERE status = 'ready'")
    return int(rows[0][0])


def wait_settled(server: ServeProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while pending(server.data_dir):
        assert server.proc.poll() is None, "server died while delivering"
        assert time.monotonic() < deadline, f"{pending(server.data_dir)} recipient(s) pending"
        time.sleep(0.05)


def inbox_subjects(data_dir: Path, address: str) -> list[str]:
    """The Inbox through the CLI contract: `message list ADDR --json`."""
    args = ["message", "list", address, "--json", "--data-dir", str(data_dir)]
    result = subprocess.run(
        [*postwerk_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(row["folder"] == "Inbox" for row in rows)
    return [row["subject"] for row in rows]


def check_exactly_once(data_dir: Path, ledger: Ledger) -> int:
    """Every acknowledged message is in each recipient's Inbox once; nothing is there twice,
    nothing is where it was not sent. Returns how many deliveries were checked."""
    assert not ledger.errors, ledger.errors[:5]
    checked = 0
    for address in USERS:
        counts = Counter(inbox_subjects(data_dir, address))
        twice = {s: c for s, c in counts.items() if c > 1}
        assert not twice, f"{address} holds duplicates: {twice}"
        stray = [s for s in counts if address not in ledger.attempted.get(s, ())]
        assert not stray, f"{address} holds messages never sent to it: {stray[:5]}"
        expected = {t for t, rcpts in ledger.acked.items() if address in rcpts}
        lost = expected - counts.keys()
        assert not lost, f"{len(lost)} acknowledged message(s) lost for {address}: {sorted(lost)}"
        checked += len(expected)
    return checked


@pytest.mark.parametrize("at_receipt", [True, False], ids=["deliver-at-receipt", "queue-first"])
def test_kill_9_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, ca: trustme.CA, request: pytest.FixtureRequest, at_receipt: bool
) -> None:
    # Both delivery paths: in the accepting transaction, and through the queue after it.
    mode = {"POSTWERK_TRANSPORT__DELIVER_AT_RECEIPT": "true" if at_receipt else "false"}
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)  # `postwerk init ... --bind 127.0.0.1`, argon2 "cheap"
    for address in USERS:
        cli(data_dir, "mailbox", "new", address, "--password-stdin", input="pw-" + address + "\n")
    log = tmp_path / "serve.log"
    servers: list[ServeProcess] = []

    def reap() -> None:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()

    request.addfinalizer(reap)
    ledger = Ledger()

    # 1. Load, then SIGKILL mid-flight.
    servers.append(start_serve(data_dir, log, env=mode))
    load_then_kill(servers[-1], "a", ledger, LOAD_SECONDS)
    acked_a = len(ledger.acked)
    assert acked_a >= 20, f"only {acked_a} messages acknowledged before the kill"

    # 2. Restart on the same ports: it redelivers what was not marked delivered while
    #    new mail arrives; SIGKILL again in the middle of that. Whatever a writer had
    #    half-written (plus a planted leftover) must be gone once the server is up.
    (data_dir / "blobs" / "tmp" / "planted-by-test.tmp").write_bytes(b"half a message")
    servers.append(start_serve(data_dir, log, offset=servers[-1].offset, env=mode))
    assert not list((data_dir / "blobs" / "tmp").iterdir()), "half-written blobs survived"
    load_then_kill(servers[-1], "b", ledger, LOAD_SECONDS / 2)
    assert len(ledger.acked) > acked_a

    # 3. Restart once more, let delivery settle, and count.
    servers.append(start_serve(data_dir, log, offset=servers[-1].offset, env=mode))
    assert not list((data_dir / "blobs" / "tmp").iterdir()), "half-written blobs survived"
    wait_settled(servers[-1])
    delivered = check_exactly_once(data_dir, ledger)
    assert delivered >= len(ledger.acked)

    # The store agrees with itself: one item per (mailbox, queue id/recipient) ...
    dupes = db_query(
        data_dir,
        "SELECT mailbox_id, delivery_key, count(*) FROM item "
        "GROUP BY mailbox_id, delivery_key HAVING count(*) > 1",
    )
    assert dupes == []
    # ... and every item's body is a committed blob.
    blobs = {row[0] for row in db_query(data_dir, "SELECT DISTINCT blob_id FROM item")}
    store = FileBlobStore(data_dir / "blobs")
    missing = [b for b in blobs if not store.path(str(b)).is_file()]
    assert missing == []

    # A clean stop after all that still drains and exits 0.
    assert servers[-1].terminate() == 0, log.read_text()
    assert not (data_dir / "postwerk.pid").exists()


def requeue_delivered(data_dir: Path) -> int:
    """With the server down, put delivered messages back in the queue as READY: for every
    other queue id with its Inbox items left in place (the state a crash between "item
    stored" and "queue updated" leaves), for the rest with the items expunged (a crash
    before the store transaction). Returns how many recipients are now waiting."""
    from postwerk.config.settings import load_settings
    from postwerk.roles.all_in_one import open_backend
    from postwerk.store.records import QueuedMessage, QueuedRecipient

    async def run() -> int:
        backend = await open_backend(load_settings(data_dir, {}), data_dir)
        try:
            sql = backend.sql
            by_queue_id: dict[str, list[tuple[int, Any, str]]] = {}
            for address in USERS:
                r = await sql.directory.find_recipient(address)
                assert r is not None
                folder = await sql.mailstore.get_folder(r.id, "Inbox")
                for it in await sql.mailstore.list_items(folder.id):
                    queue_id, _, rcpt = str(it.delivery_key).partition("/")
                    by_queue_id.setdefault(queue_id, []).append((folder.id, it, rcpt))
            waiting = 0
            for n, (queue_id, items) in enumerate(sorted(by_queue_id.items())):
                if await sql.queue.get_message(queue_id) is not None:
                    continue  # still queued from the kill: redelivered anyway
                first = items[0][1]
                message = QueuedMessage(
                    id=queue_id,
                    blob_id=first.blob_id,
                    sender="load@remote.test",
                    size=first.size - len(first.header_prefix),
                    received=first.internal_date,
                    source="SMTP",
                    connector="Default Frontend",
                    client_ip="127.0.0.1",
                    server_ip="127.0.0.1",
                    internet_message_id=str(first.summary.get("message_id") or ""),
                    subject=str(first.summary.get("subject") or ""),
                )
                rcpts = [
                    QueuedRecipient(queue_id, rcpt, next_hop=f"mailbox:{it.mailbox_id}")
                    for _folder, it, rcpt in items
                ]
                await sql.queue.enqueue(message, rcpts)
                waiting += len(rcpts)
                if n % 2:
                    for folder_id, it, _rcpt in items:
                        await sql.mailstore.expunge(folder_id, [it.uid])
            return waiting
        finally:
            await backend.close()

    return asyncio.run(run())


def test_kill_9_during_redelivery(
    tmp_path: Path, ca: trustme.CA, request: pytest.FixtureRequest
) -> None:
    """A backlog of redeliveries, half of them already done; SIGKILL the restarted server
    twice while it works through them; the next start finishes, once per recipient."""
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)
    for address in USERS:
        cli(data_dir, "mailbox", "new", address, "--password-stdin", input="pw\n")
    log = tmp_path / "serve.log"
    servers: list[ServeProcess] = []

    def reap() -> None:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()

    request.addfinalizer(reap)
    ledger = Ledger()
    servers.append(start_serve(data_dir, log))
    load_then_kill(servers[-1], "c", ledger, LOAD_SECONDS / 2)
    assert requeue_delivered(data_dir) >= 20

    # One recipient per store transaction: the backlog takes long enough to be interrupted.
    slow = {"POSTWERK_TRANSPORT__DELIVERY_BATCH": "1", "POSTWERK_TRANSPORT__DELIVERY_WORKERS": "1"}
    interrupted = []
    for _ in range(2):
        server = start_serve(data_dir, log, offset=servers[-1].offset, env=slow)
        servers.append(server)
        start = pending(data_dir)
        deadline = time.monotonic() + 20
        while pending(data_dir) > start * 2 // 3 and time.monotonic() < deadline:
            time.sleep(0.002)
        server.kill9()
        interrupted.append((start, pending(data_dir)))
    assert all(0 < left < start for start, left in interrupted), interrupted

    servers.append(start_serve(data_dir, log, offset=servers[-1].offset))
    wait_settled(servers[-1])
    check_exactly_once(data_dir, ledger)
    assert servers[-1].terminate() == 0, log.read_text()
