"""A whole server on PostgreSQL (M4): `init --database postgresql://…`, then mail
in over SMTP and out over IMAP and POP3, and a second server joining the same
organization. Each test gets a database of its own (tests/pg.py)."""

from __future__ import annotations

import asyncio
import imaplib
import json
import poplib
import random
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from imapclient import IMAPClient  # type: ignore[import-untyped]

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
from tests.pg import PG_SERVER, create_database, drop_database

ALICE = f"alice@{DOMAIN}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """`postgresql://…/postwerk_server_<random>`, empty, as an admin would write it."""
    name = asyncio.run(create_database("postwerk_server"))
    try:
        yield PG_SERVER.replace("postgresql+asyncpg://", "postgresql://") + f"/{name}"
    finally:
        asyncio.run(drop_database(name))


def test_a_server_on_postgresql_carries_mail(tmp_path: Path, ca: trustme.CA, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca, extra=("--database", pg_url))
    assert f'url = "{pg_url}"' in (data_dir / "postwerk.toml").read_text()
    assert not (data_dir / "postwerk.db").exists()  # nothing in SQLite
    populate(data_dir)
    cli(data_dir, "imap", "enable")
    cli(data_dir, "pop", "enable")
    org = start_server(data_dir, ca)
    try:
        with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
            s.sendmail("someone@remote.test", [ALICE], b"Subject: on postgres\r\n\r\nhello\r\n")
        assert len(org.wait_inbox(ALICE, 1)) == 1
        wait_for(lambda: {143, 993, 110, 995} <= set(org.server.ports), timeout=20)
        imap = imaplib.IMAP4_SSL(
            "127.0.0.1", org.server.ports[993], ssl_context=org.client_context(), timeout=10
        )
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: on postgres" in data[0][1]  # type: ignore[index,operator]
        imap.store("1", "+FLAGS", "\\Flagged")
        typ, found = imap.search(None, "FLAGGED")
        assert found == [b"1"]
        imap.logout()
        pop = poplib.POP3_SSL(
            "127.0.0.1", org.server.ports[995], context=org.client_context(), timeout=10
        )
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
        assert b"hello" in b"\r\n".join(pop.retr(1)[1])
        pop.quit()
    finally:
        stop_server(org)
    listed = json.loads(cli(data_dir, "message", "list", ALICE, "--json"))
    assert [m["subject"] for m in listed] == ["on postgres"]


def start_pair(first: Path, second: Path, ca: trustme.CA) -> tuple[RunningServer, RunningServer]:
    """Both servers on their configured ports plus distinct offsets."""
    offset = random.randrange(20000, 40000, 100)
    a = start_server(first, ca, port_offset=offset)
    try:
        return a, start_server(second, ca, port_offset=offset + 50)
    except BaseException:
        stop_server(a)
        raise


def test_a_second_server_joins_and_reads_what_the_first_received(
    tmp_path: Path, ca: trustme.CA, pg_url: str
) -> None:
    first = tmp_path / "first"
    init_data_dir(first, ca, extra=("--database", pg_url))
    assert 'blobs = "database"' in (first / "postwerk.toml").read_text()
    populate(first)
    second = tmp_path / "second"
    init_data_dir(second, ca, extra=("--database", pg_url, "--hostname", "mbx2.example.test"))
    servers = json.loads(cli(first, "server", "list", "--json"))
    assert [s["name"] for s in servers] == ["MAIL", "MBX2"]
    # One organization: the accepted domain was created once, the mailboxes are shared.
    assert cli(second, "domain", "list").count(DOMAIN) == 1
    cli(second, "imap", "enable")
    # alice's database is the first server's: the second proxies her session to its
    # IMAP4 back end, found through the directory (so the ports are real ones).
    a, b = start_pair(first, second, ca)
    try:
        wait_for(lambda: 993 in b.server.ports, timeout=20)
        imap = imaplib.IMAP4_SSL(
            "127.0.0.1", b.server.ports[993], ssl_context=b.client_context(), timeout=10
        )
        imap.login(ALICE, PASSWORD)
        imap.select("INBOX")
        # Mail arrives through the first server; the second one's session sees it,
        # body included (the message files are in the shared database).
        with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=10) as s:
            s.sendmail("x@remote.test", [ALICE], b"Subject: via A\r\n\r\nshared body\r\n")
        a.wait_inbox(ALICE, 1)
        # IMAP was enabled on the second server only (settings are per server).
        assert 993 not in a.server.ports
        imap.noop()
        # SELECT said 0 EXISTS, the NOOP 1 (imaplib keeps both)
        assert imap.response("EXISTS")[1][-1] == b"1"
        _, fetched = imap.fetch("1", "(BODY.PEEK[TEXT])")
        assert b"shared body" in fetched[0][1]  # type: ignore[index,operator]
        imap.logout()
    finally:
        stop_server(b)
        stop_server(a)


def test_idle_on_one_server_wakes_for_a_delivery_on_another(
    tmp_path: Path, ca: trustme.CA, pg_url: str
) -> None:
    """LISTEN/NOTIFY (store/sqlite/change_channel.py): the delivery on server A
    wakes an IDLE session on server B."""
    first = tmp_path / "first"
    init_data_dir(first, ca, extra=("--database", pg_url))
    populate(first)
    second = tmp_path / "second"
    init_data_dir(second, ca, extra=("--database", pg_url, "--hostname", "mbx2.example.test"))
    cli(second, "imap", "enable")
    a, b = start_pair(first, second, ca)
    try:
        wait_for(lambda: 993 in b.server.ports, timeout=20)
        client = IMAPClient(
            "127.0.0.1", port=b.server.ports[993], ssl_context=b.client_context(), timeout=10
        )
        client.login(ALICE, PASSWORD)
        client.select_folder("INBOX")
        client.idle()
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=10) as s:
            s.sendmail("x@remote.test", [ALICE], b"Subject: wake\r\n\r\nup\r\n")
        responses = client.idle_check(timeout=10)
        waited = time.monotonic() - started
        client.idle_done()
        assert (1, b"EXISTS") in responses, responses
        # Well within the IDLE re-check interval: the notification, not polling.
        assert waited < 5, waited
        client.logout()
    finally:
        stop_server(b)
        stop_server(a)
