"""Where an authenticated client's mailbox is served: the seam between the
Client Access front end and the Mailbox back end.

Purpose: in Exchange 2013 the front end (CAS) authenticates an IMAP4 or POP3
client, looks up which Mailbox server holds the user's mailbox, and proxies
the session to that server's back-end service (1993/1995). The IMAP4 and
POP3 services here do the front end's half — TLS, the pre-login commands,
authentication, throttling, connection limits — and then ask a
`MailboxLocator` for a route to the mailbox:

- `LocalRoute`: the mailbox's database is served by this process; the session
  continues here on that `MailboxBackend` (the all-in-one server, and the
  back-end services themselves).
- `Unavailable`: the mailbox cannot be served now (its server is down, the
  mailbox is being moved); the client gets a temporary failure at login
  (IMAP `NO [UNAVAILABLE]`, POP3 `-ERR [SYS/TEMP]`) and may retry.

- `RemoteRoute`: the mailbox's database is mounted on another Mailbox server;
  the session is proxied to that server's back-end service (1993/1995): the
  front end connects, logs in on the user's behalf with its server
  credentials (directory/server_auth.py), and relays bytes both ways
  (frontend/mail_proxy.py).

Nothing before authentication depends on which route is taken, and nothing
after it touches a store except through the route.

`DirectoryLocator` decides from the directory: the mailbox's database
(`Recipient.database`), the server that database is mounted on, and whether
that server is running (its heartbeat).

Invariants:
- A session reads and writes mail only through the `MailboxBackend` of the
  route it was given at login, never through a store of its own.
- `locate` is called once per login, after the credentials were verified and
  before the session leaves the not-authenticated state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from postwerk.mailbox.folder_snapshots import FolderSnapshots
from postwerk.mailbox.notify import MailboxNotifier
from postwerk.roles.registration import is_running
from postwerk.store.api import BlobStore, DirectoryStore, MailStore
from postwerk.store.records import MailboxDatabase, Recipient, ServerRecord


@dataclass
class MailboxBackend:
    """One mailbox database as this process serves it: its store, its message
    files, the change notifications of its mailboxes, and the per-process
    folder snapshots over it (shared by every IMAP session on it)."""

    mail: MailStore
    blobs: BlobStore
    notifier: MailboxNotifier | None = None
    snapshots: FolderSnapshots = field(init=False)

    def __post_init__(self) -> None:
        self.snapshots = FolderSnapshots(self.mail)


@dataclass(frozen=True, slots=True)
class LocalRoute:
    """The mailbox is served in this process."""

    backend: MailboxBackend


@dataclass(frozen=True, slots=True)
class RemoteRoute:
    """The mailbox is served by another Mailbox server's back-end service."""

    server: str  # its label
    host: str
    port: int  # the back-end port of the protocol asked for, offset applied
    certificate_sha256: str  # pinned when connecting (directory/server_auth.py)


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The mailbox cannot be served now; `reason` goes to the log, not the client."""

    reason: str


MailboxRoute = LocalRoute | RemoteRoute | Unavailable


class MailboxLocator(Protocol):
    async def locate(self, mailbox: Recipient, protocol: str) -> MailboxRoute:
        """The route to `mailbox` for a client of `protocol` ("imap4", "pop3")."""
        ...


class SingleServerLocator:
    """The all-in-one server: every mailbox lives in the one database here."""

    def __init__(self, backend: MailboxBackend) -> None:
        self.backend = backend
        self._route = LocalRoute(backend)

    async def locate(self, mailbox: Recipient, protocol: str) -> MailboxRoute:
        return self._route


# Back-end service ports by client protocol (the reference's 1993/1995/444).
BACKEND_PORTS = {"imap4": 1993, "pop3": 1995, "http": 444}


def server_host(record: ServerRecord) -> str:
    """Where the other servers reach `record`: its first registered address, else its FQDN."""
    return record.addresses[0] if record.addresses else record.fqdn


class Placement:
    """The directory's mailbox databases and servers, read at most every `ttl`
    seconds (a move or a stopped server is seen within that)."""

    def __init__(
        self,
        directory: DirectoryStore,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.ttl = ttl
        self._clock = clock
        self._wall = wall
        self._read_at = -1e18
        self.databases: dict[str, MailboxDatabase] = {}
        self.servers: dict[str, ServerRecord] = {}

    async def refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._read_at < self.ttl:
            return
        self.databases = {d.name: d for d in await self.directory.list_mailbox_databases()}
        self.servers = {s.name: s for s in await self.directory.list_servers()}
        self._read_at = now

    def running(self, server: str) -> bool:
        record = self.servers.get(server)
        return record is not None and is_running(record, self._wall())

    async def running_record(self, server: str) -> ServerRecord | None:
        """`server`'s record when it runs, read again at once if it seemed stopped
        (it may have come back since the last read); None when it does not run."""
        await self.refresh()
        if not self.running(server):
            await self.refresh(force=True)
            if not self.running(server):
                return None
        return self.servers[server]

    def server_of(self, database: str | None) -> str | None:
        db = self.databases.get(database) if database else None
        return db.server if db else None


class DirectoryLocator:
    """Routes by the directory's placement: the mailbox's database, mounted on this
    server (`local`) or on another running Mailbox server (a `RemoteRoute` to its
    back end), else Unavailable. The recipient is read again at each login, so a
    `mailbox move` applies to the next login at once."""

    def __init__(
        self,
        placement: Placement,
        this_server: str,
        local: MailboxBackend | None,
        ports: dict[str, int] | None = None,
    ) -> None:
        self.placement = placement
        self.this_server = this_server
        self.local = local
        self.ports = ports or BACKEND_PORTS
        self._local_route = LocalRoute(local) if local is not None else None

    async def locate(self, mailbox: Recipient, protocol: str) -> MailboxRoute:
        current = await self.placement.directory.get_recipient(mailbox.id)
        if current is None:
            return Unavailable("mailbox removed")
        await self.placement.refresh()
        server = self.placement.server_of(current.database)
        if server is None:
            # Not placed yet (made before placement existed): a Mailbox server serves it.
            if self._local_route is not None:
                return self._local_route
            return Unavailable(f"mailbox in no known database ({current.database})")
        if server == self.this_server and self._local_route is not None:
            return self._local_route
        record = await self.placement.running_record(server)
        if record is None:
            return Unavailable(f"server {server} of database {current.database} is down")
        return RemoteRoute(
            server=server,
            host=server_host(record),
            port=self.ports[protocol] + record.port_offset,
            certificate_sha256=record.certificate_sha256,
        )
