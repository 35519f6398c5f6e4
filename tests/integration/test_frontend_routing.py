"""The front end's seam (frontend/routing.py): after a client authenticates over
IMAP4 or POP3, the service asks a `MailboxLocator` where the mailbox is served
and continues on that route only. Here a locator that can mark a mailbox
unavailable (its database dismounted, the mailbox being moved) stands in for
the directory's placement, which M4 brings: the services, sockets and TLS
are the real ones."""

from __future__ import annotations

import imaplib
import poplib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from postwerk.directory.passwords import LoginThrottle
from postwerk.frontend.routing import LocalRoute, MailboxBackend, MailboxRoute, Unavailable
from postwerk.services.imap import ImapContext, ImapListener, ImapSettings
from postwerk.services.pop3 import Pop3Context, Pop3Listener, Pop3Settings
from postwerk.services.tls import server_context
from postwerk.store.records import Recipient
from tests.conftest import DOMAIN, PASSWORD, RunningServer

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


@dataclass
class PlacementLocator:
    """Every mailbox on this server's database, except those marked down."""

    backend: MailboxBackend
    down: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def locate(self, mailbox: Recipient, protocol: str) -> MailboxRoute:
        self.calls.append((mailbox.primary_address, protocol))
        if mailbox.primary_address in self.down:
            return Unavailable("mailbox database dismounted")
        return LocalRoute(self.backend)


@dataclass
class Services:
    org: RunningServer
    locator: PlacementLocator
    imap_port: int
    pop_port: int

    def imap(self) -> imaplib.IMAP4_SSL:
        ctx = self.org.client_context()
        return imaplib.IMAP4_SSL("127.0.0.1", self.imap_port, ssl_context=ctx, timeout=10)

    def pop(self) -> poplib.POP3_SSL:
        ctx = self.org.client_context()
        return poplib.POP3_SSL("127.0.0.1", self.pop_port, context=ctx, timeout=10)


@pytest.fixture
def services(org: RunningServer) -> Iterator[Services]:
    tls_dir = org.data_dir / "tls"
    tls = server_context(tls_dir / "server.crt", tls_dir / "server.key")
    locator = PlacementLocator(org.server.mailbox_backend)
    # Two connections per user at most: a session leaked by a refused login shows.
    imap_ctx = ImapContext(
        directory=org.server.directory,
        locator=locator,
        throttle=LoginThrottle(time.monotonic),
        tls_context=tls,
        settings=ImapSettings(max_connections_per_user=2),
        tarpit_override=0.01,
    )
    pop_ctx = Pop3Context(
        directory=org.server.directory,
        locator=locator,
        throttle=LoginThrottle(time.monotonic),
        tls_context=tls,
        settings=Pop3Settings(max_connections_per_user=2),
        tarpit_override=0.01,
    )
    imap = ImapListener(imap_ctx, "127.0.0.1", 0, implicit_tls=True)
    pop = Pop3Listener(pop_ctx, "127.0.0.1", 0, implicit_tls=True)

    async def start() -> None:
        await imap.start()
        await pop.start()

    async def stop() -> None:
        await imap.stop()
        await pop.stop()

    org.call(start())
    try:
        yield Services(org, locator, imap.bound_port, pop.bound_port)
    finally:
        org.call(stop())


def test_imap_login_is_routed_to_the_mailbox(services: Services) -> None:
    c = services.imap()
    c.login(ALICE, PASSWORD)
    assert c.select("INBOX")[0] == "OK"
    c.logout()
    assert services.locator.calls == [(ALICE, "imap4")]


def test_imap_unavailable_mailbox_is_a_temporary_no(services: Services) -> None:
    services.locator.down.add(ALICE)
    for _ in range(3):  # more than the per-user limit: nothing is held on failure
        c = services.imap()
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            c.login(ALICE, PASSWORD)
        # Still not authenticated: a mailbox command is refused, the session lives.
        c.state = "AUTH"  # imaplib would refuse to send it otherwise
        with pytest.raises(imaplib.IMAP4.error, match="not valid in not-authenticated"):
            c.select("INBOX")
        c.logout()
    # Another user's mailbox is unaffected.
    other = services.imap()
    other.login(BOB, PASSWORD)
    other.logout()
    services.locator.down.clear()
    sessions = [services.imap(), services.imap()]
    for c in sessions:
        c.login(ALICE, PASSWORD)
    for c in sessions:
        c.logout()


def test_pop_unavailable_mailbox_is_sys_temp(services: Services) -> None:
    services.locator.down.add(ALICE)
    for _ in range(3):
        p = services.pop()
        p.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
            p.pass_(PASSWORD)
        p.quit()
    services.locator.down.clear()
    # No maildrop lock or connection count was left behind.
    p = services.pop()
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert p.stat()[0] >= 0
    p.quit()
    assert services.locator.calls[-1] == (ALICE, "pop3")
