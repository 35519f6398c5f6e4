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

Issue M4 adds a third route, to a back-end service on another Mailbox
server: connect, log in on the user's behalf with server credentials, relay
bytes both ways. Nothing before authentication depends on which route is
taken, and nothing after it touches a store except through the route, so that
addition does not change the services' command handling.

Invariants:
- A session reads and writes mail only through the `MailboxBackend` of the
  route it was given at login, never through a store of its own.
- `locate` is called once per login, after the credentials were verified and
  before the session leaves the not-authenticated state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from postwerk.mailbox.folder_snapshots import FolderSnapshots
from postwerk.mailbox.notify import MailboxNotifier
from postwerk.store.api import BlobStore, MailStore
from postwerk.store.records import Recipient


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
class Unavailable:
    """The mailbox cannot be served now; `reason` goes to the log, not the client."""

    reason: str


MailboxRoute = LocalRoute | Unavailable


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
