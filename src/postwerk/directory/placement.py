"""Which mailbox database a mailbox lives in, and which server serves it.

Purpose: Exchange mounts each mailbox database on one Mailbox server; a mailbox
lives in one database, and Client Access and transport route to the server the
database is mounted on. New mailboxes without an explicit database are spread
over the databases of the live Mailbox servers (Exchange's automatic mailbox
distribution: the database with the fewest mailboxes wins, ties by name).

Here every database's data sits in the organization's store (one SQLite file,
or the shared PostgreSQL database), so a database names the *server* that
serves and delivers to its mailboxes, and moving a mailbox re-homes it: the
folders, items and UIDs stay where they are and the next login and the next
delivery go to the new server.

Invariants:
- Each Mailbox server mounts at least one database (`ensure_server_database`,
  at `init` and each `serve`): `<LABEL>-DB01` unless it already has one.
- A mailbox without a database (made before placement existed) is adopted by
  the first Mailbox server that starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from postwerk.roles.registration import is_running
from postwerk.store.api import DirectoryStore
from postwerk.store.records import MailboxDatabase, ServerRecord


def default_database_name(server: str) -> str:
    return f"{server.upper()}-DB01"


def choose_database(
    databases: Iterable[MailboxDatabase],
    counts: dict[str, int],
    servers: Iterable[ServerRecord],
    now: float,
) -> str | None:
    """Automatic distribution: the least-filled database on a running Mailbox server;
    when none runs (an admin provisioning before starting the servers), the
    least-filled of all. None when the organization has no database yet."""
    candidates = list(databases)
    if not candidates:
        return None
    live = {s.name for s in servers if "mailbox" in s.roles and is_running(s, now)}
    running = [d for d in candidates if d.server in live]
    pool = running or candidates
    return min(pool, key=lambda d: (counts.get(d.name, 0), d.name)).name


async def pick_database(store: DirectoryStore) -> str | None:
    return choose_database(
        await store.list_mailbox_databases(),
        await store.mailbox_counts(),
        await store.list_servers(),
        time.time(),
    )


async def ensure_server_database(store: DirectoryStore, server: str) -> str:
    """The database this Mailbox server mounts, created when it has none; mailboxes
    with no database yet are placed in it."""
    mounted = [d for d in await store.list_mailbox_databases() if d.server == server]
    if mounted:
        name = mounted[0].name
    else:
        name = default_database_name(server)
        await store.put_mailbox_database(MailboxDatabase(name, server))
    await store.adopt_unplaced_mailboxes(name)
    return name
