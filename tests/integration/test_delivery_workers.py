"""Delivery worker processes (`[transport] delivery_processes`), with a real `serve`.

Three delivery processes (the server and two workers) relay to an SMTP sink:
every message arrives exactly once whichever partition it falls in (the server
itself only takes partition 0, so mail of partitions 1 and 2 arriving proves the
workers deliver); a worker killed with SIGKILL is restarted and its share keeps
flowing; SIGKILL on the server makes the workers exit (their wake pipe closes).
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import ssl
from pathlib import Path

import pytest
import trustme

from postwerk.roles.delivery_workers import parse_partition
from postwerk.store.api import partition_of
from tests.conftest import DOMAIN, cli, init_data_dir, wait_for
from tests.integration.test_durability import ServeProcess, start_serve
from tests.smtpsink import SmtpSink

pytestmark = pytest.mark.slow


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def send(server: ServeProcess, ca: trustme.CA, subjects: list[str]) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP("127.0.0.1", 587 + server.offset, timeout=10) as s:
        s.starttls(context=context)
        s.login(f"alice@{DOMAIN}", "pw")
        for n, subject in enumerate(subjects):
            s.sendmail(
                f"alice@{DOMAIN}",
                [f"r{n % 5}@remote.test"],
                f"From: alice@{DOMAIN}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode(),
            )


def subjects(sink: SmtpSink) -> list[str]:
    return sorted(m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in sink.messages)


def queue_ids(data_dir: Path) -> list[str]:
    return [m["id"] for m in json.loads(cli(data_dir, "queue", "messages", "--json"))]


def test_parse_partition() -> None:
    assert parse_partition("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "1/0", ""):
        with pytest.raises(ValueError):
            parse_partition(bad)


def test_workers_relay_their_share_and_follow_the_server(
    tmp_path: Path, ca: trustme.CA, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)
    cli(data_dir, "mailbox", "new", f"alice@{DOMAIN}", "--password-stdin", input="pw\n")
    servers: list[ServeProcess] = []
    workers: list[int] = []

    def reap() -> None:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    request.addfinalizer(reap)
    log = tmp_path / "serve.log"
    with SmtpSink("127.0.0.11") as sink:
        cli(
            data_dir,
            "connector", "send", "new", "Sink",
            "--address-spaces", "*", "--smart-hosts", f"[127.0.0.11]:{sink.port}",
            "--tls", "none",
        )  # fmt: skip
        env = {"POSTWERK_TRANSPORT__DELIVERY_PROCESSES": "3"}
        server = start_serve(data_dir, log, env=env)
        servers.append(server)
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        workers.extend(children(server.proc.pid))

        first = [f"first {n}" for n in range(30)]
        send(server, ca, first)
        wait_for(lambda: len(sink.messages) == 30, timeout=30)
        wait_for(lambda: queue_ids(data_dir) == [])
        got = sorted(
            m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in sink.messages
        )
        assert got == sorted(first)  # each exactly once

        # A worker that dies is replaced, and its share of the queue keeps flowing.
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(children(server.proc.pid)) == 2 and victim not in children(server.proc.pid),
            timeout=20,
        )
        workers.extend(children(server.proc.pid))
        second = [f"second {n}" for n in range(30)]
        send(server, ca, second)
        wait_for(lambda: len(sink.messages) == 60, timeout=30)
        wait_for(lambda: queue_ids(data_dir) == [])

        # The server dies hard: its workers notice (end of file on the pipe) and exit.
        live_workers = children(server.proc.pid)
        server.kill9()
        wait_for(lambda: not any(alive(pid) for pid in live_workers), timeout=20)

        # A restart brings the workers back, and a clean stop takes them down.
        server = start_serve(data_dir, log, offset=server.offset, env=env)
        servers.append(server)
        wait_for(lambda: len(children(server.proc.pid)) == 2)
        live_workers = children(server.proc.pid)
        workers.extend(live_workers)
        assert server.terminate() == 0, log.read_text()
        wait_for(lambda: not any(alive(pid) for pid in live_workers), timeout=20)
        assert subjects(sink) == sorted(first + second)  # nothing lost, nothing twice


def test_partition_rule_spreads_ids() -> None:
    # Message ids end in random hex (core/ids.py): 30 of them reach all 3 partitions
    # with overwhelming probability; the rule itself is deterministic.
    from postwerk.core.ids import new_id

    seen = {partition_of(new_id(), 3) for _ in range(300)}
    assert seen == {0, 1, 2}


def test_partition_lock_is_exclusive(tmp_path: Path) -> None:
    from postwerk.roles.delivery_workers import lock_partition

    first = lock_partition(tmp_path, 1, timeout=1.0)
    assert first is not None
    assert lock_partition(tmp_path, 1, timeout=0.2) is None  # a second worker waits, then gives up
    other = lock_partition(tmp_path, 2, timeout=0.2)  # other partitions are independent
    assert other is not None
    os.close(first)
    again = lock_partition(tmp_path, 1, timeout=1.0)  # free once the holder is gone
    assert again is not None
    os.close(again)
    os.close(other)
