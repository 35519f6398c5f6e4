"""Delivery worker processes: relaying through send connectors on more than one core.

Why: one Python process runs Python code on one core at a time. Relaying a
message costs the event loop about 0.6 ms (docs/performance.md, "Outbound relay
(M2)"), so one process tops out near 1,500 messages/s while the other cores idle.
With `[transport] delivery_processes = N` the server keeps partition 0 of the
queue for itself and starts N-1 workers (`postwerk delivery-worker`), each
running the send-connector delivery queues (transport/outbound.py) for its own
partition: the messages whose id maps to it (`store.api.partition_of`). They
share the database and the blob store; SQLite serializes their commits (WAL,
`BEGIN IMMEDIATE`, busy timeout), each process still committing in groups.

Wake-ups: the server writes a byte into each worker's pipe whenever mail is
routed to a send connector, as it wakes its own queues; workers also scan every
poll interval. DSNs a worker writes go through its own (not started) transport
service, like the server's.

Lifetime (the invariants that keep mail safe):
- A worker stops when its pipe reaches end of file — the server stopped, or died
  (kill -9 included: the kernel closes the pipe) — or on SIGTERM. Stopping
  cancels sends in flight; their rows stay READY and are sent again later
  (RFC 5321 §6.1 accepts a rare duplicate, never a loss).
- The server restarts a worker that exits on its own, a second later.
- A worker holds `DATA_DIR/delivery-<k>.lock` while it delivers: a new worker for
  the same partition (the server restarted at once after a kill -9) waits until
  the old one has stopped, so two processes never send the same partition.
- Only the server listens, reroutes and delivers to mailboxes; workers only relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from postwerk.config.settings import Settings

WAKE = b"w"
RESTART_DELAY = 1.0
PARTITION_LOCK_TIMEOUT = 120.0  # the old worker's stop cancels its sends: seconds at most

log = structlog.get_logger("postwerk.delivery_workers")


def parse_partition(text: str) -> tuple[int, int]:
    """`"k/n"` → (k, n) with 0 <= k < n; ValueError otherwise."""
    k_text, sep, n_text = text.partition("/")
    if not sep or not k_text.isdigit() or not n_text.isdigit():
        raise ValueError(f"partition must look like k/n, not {text!r}")
    k, n = int(k_text), int(n_text)
    if not 0 <= k < n:
        raise ValueError(f"partition {text!r}: need 0 <= k < n")
    return k, n


def lock_partition(data_dir: Path, k: int, timeout: float) -> int | None:
    """An exclusive lock on `delivery-<k>.lock` (blocking up to `timeout`); its fd or None."""
    import fcntl
    import time

    fd = os.open(data_dir / f"delivery-{k}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


class DeliveryWorkers:
    """The server's side: start, wake, supervise and stop the worker processes."""

    def __init__(self, data_dir: Path, count: int, *, command: Sequence[str] | None = None) -> None:
        self.data_dir = data_dir
        self.count = count  # delivery processes in all, this server included
        # How to run `postwerk`; the module keeps it independent of PATH and venvs.
        self.command = list(command or (sys.executable, "-m", "postwerk.cli.main"))
        self._wake_fds: dict[int, int] = {}  # partition → write end of its pipe
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._supervisors: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        for k in range(1, self.count):
            await self._spawn(k)
            self._supervisors.append(
                asyncio.create_task(self._supervise(k), name=f"delivery-worker-{k}")
            )

    def wake(self) -> None:
        for fd in list(self._wake_fds.values()):
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(fd, WAKE)  # a full pipe already holds a wake-up

    async def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        for task in self._supervisors:
            task.cancel()
        for fd in self._wake_fds.values():
            os.close(fd)  # end of file: each worker drains and exits
        self._wake_fds.clear()
        for k, process in self._processes.items():
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                log.warning("delivery_worker_killed", partition=k, pid=process.pid)
                process.kill()
                await process.wait()
        self._processes.clear()

    async def _spawn(self, k: int) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                "delivery-worker",
                "--data-dir",
                str(self.data_dir),
                "--partition",
                f"{k}/{self.count}",
                "--wake-fd",
                str(read_fd),
                pass_fds=(read_fd,),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)  # the child has its copy
        self._wake_fds[k] = write_fd
        self._processes[k] = process
        log.info("delivery_worker_started", partition=f"{k}/{self.count}", pid=process.pid)

    async def _supervise(self, k: int) -> None:
        while not self._stopping:
            process = self._processes[k]
            code = await process.wait()
            if self._stopping:
                return
            log.error("delivery_worker_exited", partition=k, pid=process.pid, code=code)
            old = self._wake_fds.pop(k, None)
            if old is not None:
                os.close(old)
            while not self._stopping:
                await asyncio.sleep(RESTART_DELAY)
                try:
                    await self._spawn(k)
                    break
                except OSError:
                    log.exception("delivery_worker_spawn_failed", partition=k)


async def run_worker(
    settings: Settings, data_dir: Path, partition: tuple[int, int], wake_fd: int
) -> int:
    """The worker's side: deliver one partition until the pipe closes or SIGTERM."""
    lock = await asyncio.to_thread(lock_partition, data_dir, partition[0], PARTITION_LOCK_TIMEOUT)
    if lock is None:
        log.error("delivery_partition_busy", partition=f"{partition[0]}/{partition[1]}")
        return 1  # the server restarts this worker a second later
    try:
        return await _deliver(settings, data_dir, partition, wake_fd)
    finally:
        os.close(lock)


async def _deliver(
    settings: Settings, data_dir: Path, partition: tuple[int, int], wake_fd: int
) -> int:
    from postwerk.directory.cache import DirectoryCache
    from postwerk.roles.all_in_one import open_backend, outbound_for, transport_for

    backend = await open_backend(settings, data_dir, clean_temp=False)
    lookup = DirectoryCache(backend.sql.directory)
    transport = transport_for(backend, settings, lookup)  # for DSNs; never started
    outbound = outbound_for(settings, backend, lookup, transport, partition=partition)
    transport.on_routed_out = outbound.wake
    # As the server's own delivery does: Mailbox → Mailbox mail to the server mounting
    # the recipient's database, FrontEndProxyEnabled connectors' mail through a Client
    # Access server (never directly) on a server without the Client Access role.
    from postwerk.frontend.routing import Placement
    from postwerk.roles.registration import server_label
    from postwerk.transport.intra_org import MailboxServerRoute, server_trust
    from postwerk.transport.outbound_proxy import ClientAccessRoute

    directory = backend.sql.directory
    trust = await server_trust(directory, server_label(settings.server.hostname))
    placement = Placement(directory)
    outbound.intra_org = MailboxServerRoute(
        placement, trust, settings.server.hostname, settings.ports.hub_smtp
    )
    if "cas" not in settings.server.roles:
        outbound.outbound_proxy = ClientAccessRoute(
            placement, trust, settings.server.hostname, port=settings.ports.outbound_proxy
        )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    os.set_blocking(wake_fd, False)

    def readable() -> None:
        try:
            data = os.read(wake_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the server is gone or stopping
            loop.remove_reader(wake_fd)
            stop.set()
            return
        outbound.wake()

    loop.add_reader(wake_fd, readable)
    outbound.start()
    log.info("delivery_worker_running", partition=f"{partition[0]}/{partition[1]}")
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(wake_fd)
        await outbound.stop()
        await backend.close()
        os.close(wake_fd)
    return 0
