"""Rough baseline, not issue 4's benchmark: SELECT, NOOP and a metadata FETCH on an
Inbox of N messages, postwerk alone (no Dovecot yet), with imaplib over TLS.

    .venv/bin/python bench/imap_baseline.py 10000

Uses the test suite's in-thread server (tests/conftest.py: cheap password hashing,
the test CA), fills the Inbox through the store with copies of one 10 KB message,
and prints the best of three timings per command, wall and CPU (server and
client together: on a busy machine the CPU figure still compares two versions).
The side-by-side comparison with Dovecot is bench/imap.sh.
"""

from __future__ import annotations

import imaplib
import smtplib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trustme
from tests.conftest import (
    DOMAIN,
    PASSWORD,
    RunningServer,
    cli,
    init_data_dir,
    populate,
    start_server,
    stop_server,
    wait_for,
)

from postwerk.store.records import NewItem

FETCH = "(UID FLAGS RFC822.SIZE ENVELOPE)"


def fill(org: RunningServer, alice: str, n: int) -> None:
    body = b"From: x@remote.test\r\nSubject: seed\r\n\r\n" + b"y" * 10000 + b"\r\n"
    with smtplib.SMTP("127.0.0.1", org.smtp_port) as s:
        s.sendmail("x@remote.test", [alice], body)
    seed = org.wait_inbox(alice, 1)[0]

    async def copies() -> None:
        store = org.server.backend.sql.mailstore
        for start in range(1, n, 1000):
            await store.deliver(
                [
                    NewItem(
                        mailbox_id=seed.mailbox_id,
                        folder_name="Inbox",
                        item_class="IPM.Note",
                        blob_id=seed.blob_id,
                        header_prefix=seed.header_prefix,
                        size=seed.size,
                        internal_date=seed.internal_date,
                        summary=seed.summary,
                        imap_envelope=seed.imap_envelope,
                    )
                    for _ in range(start, min(start + 1000, n))
                ]
            )

    org.call(copies(), timeout=600)


def best_of_three(fn: Callable[[], Any]) -> tuple[float, float]:
    """Best wall time and best CPU time (this process: server and client) of three."""
    times, cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(times), min(cpu)


def main(n: int) -> None:
    ca = trustme.CA()
    data_dir = Path(tempfile.mkdtemp()) / "data"
    init_data_dir(data_dir, ca)
    populate(data_dir)
    org = start_server(data_dir, ca)
    try:
        alice = f"alice@{DOMAIN}"
        fill(org, alice, n)
        cli(data_dir, "imap", "enable")

        async def ports() -> dict[int, int]:
            return dict(org.server.ports)

        wait_for(lambda: 993 in org.call(ports()), timeout=10)
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", org.call(ports())[993], ssl_context=org.client_context()
        )
        client.login(alice, PASSWORD)
        for label, fn in [
            ("SELECT INBOX", lambda: client.select("INBOX")),
            ("NOOP", lambda: client.noop()),
            (f"UID FETCH 1:* {FETCH}", lambda: client.uid("FETCH", "1:*", FETCH)),
        ]:
            wall, cpu = best_of_three(fn)
            print(f"{n} messages  {label}: best {wall * 1000:.0f} ms (CPU {cpu * 1000:.0f} ms)")
        client.logout()
    finally:
        stop_server(org)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
