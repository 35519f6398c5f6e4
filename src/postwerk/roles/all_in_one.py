"""Composition root for a server hosting Client Access and Mailbox in one process.

The only place (with the CLI) that reads configuration and picks concrete
backends. Nothing here is global: tests build several servers in one process.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from postwerk.config.settings import Settings
from postwerk.directory.cache import DirectoryCache
from postwerk.directory.connectors import binding_port
from postwerk.directory.passwords import LoginThrottle, PasswordHasher, ThrottlePolicy
from postwerk.directory.placement import ensure_server_database
from postwerk.directory.server_auth import (
    ServerTrust,
    certificate_sha256,
)
from postwerk.directory.service import Directory
from postwerk.frontend.http_listener import HttpProxyListener
from postwerk.frontend.http_proxy import HttpProxy, MailboxUpstreams
from postwerk.frontend.routing import (
    DirectoryLocator,
    MailboxBackend,
    Placement,
    SingleServerLocator,
)
from postwerk.mailbox.notify import MailboxNotifier
from postwerk.mailbox.tombstones import TombstonePruner
from postwerk.roles.admin import AdminListener, AdminProbes, Check
from postwerk.roles.delivery_workers import DeliveryWorkers
from postwerk.roles.protocol_listeners import ProtocolRuntime
from postwerk.roles.registration import Heartbeat, server_label, server_record
from postwerk.services.imap import ImapContext, ImapListener, ImapSettings
from postwerk.services.pop3 import Pop3Context, Pop3Listener, Pop3Settings
from postwerk.services.smtp import ReceiveContext, SmtpListener
from postwerk.services.tls import server_context
from postwerk.store.api import BlobStore
from postwerk.store.blobs import FileBlobStore
from postwerk.store.records import ProtocolSettings, Recipient
from postwerk.store.sqlite import SqliteBackend, open_sqlite
from postwerk.store.sqlite.blob_table import DatabaseBlobStore
from postwerk.transport.agents import AgentLoadError, load_agents
from postwerk.transport.categorizer import Categorizer
from postwerk.transport.dns import DnsConfig, Resolver
from postwerk.transport.frontend_relay import RelayFactory
from postwerk.transport.intra_org import MailboxServerRoute, server_trust
from postwerk.transport.outbound import OutboundDelivery
from postwerk.transport.outbound_proxy import ClientAccessRoute, OutboundProxyFactory
from postwerk.transport.retry import RetryPolicy
from postwerk.transport.service import TransportService
from postwerk.transport.smtp_client import OutboundClient

if TYPE_CHECKING:  # asyncpg is the `postgres` extra: imported where used
    from postwerk.store.sqlite.change_channel import PgChangeChannel


class PortInUse(Exception):
    """A listener could not bind; the message names the port."""


class PortOffsetOutOfRange(ValueError):
    """The port offset would move a listener outside 1-65535; the message says the range."""


MAX_PORT = 65535


def check_port_offset(offset: int, ports: list[int]) -> None:
    """Refuse an offset that moves any of `ports` out of range.

    Checked before binding: asyncio would otherwise fail with an OverflowError traceback, or,
    when binding to all addresses, getaddrinfo silently wraps 70025 to 4489.
    """
    if not ports:
        return
    highest = max(ports)
    if offset < 0 or highest + offset > MAX_PORT:
        raise PortOffsetOutOfRange(
            f"port offset {offset} is out of range: it must be 0 to {MAX_PORT - highest} "
            f"so that port {highest} stays at most {MAX_PORT}"
        )


POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")


def database_path(settings: Settings, data_dir: Path) -> Path | str:
    """The database to open: a SQLite file, or a PostgreSQL URL for the asyncpg driver
    (`postgresql://user@host:5432/db` as admins write it)."""
    url = settings.database.url
    if not url:
        return data_dir / "postwerk.db"
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    for scheme in POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return "postgresql+asyncpg://" + url[len(scheme) :]
    raise ValueError(f"unsupported database URL {url!r}: sqlite:///PATH or postgresql://…")


def make_hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher.cheap() if settings.auth.argon2_profile == "cheap" else PasswordHasher()


@dataclass
class Backend:
    """The stores one server uses, opened together and closed together."""

    sql: SqliteBackend
    blobs: BlobStore

    async def close(self) -> None:
        await self.sql.close()


async def open_backend(settings: Settings, data_dir: Path, *, clean_temp: bool = True) -> Backend:
    """`clean_temp=False` for admin tools: a running server may be writing into blobs/tmp/."""
    target = database_path(settings, data_dir)
    # Servers sharing a database each work their own queue (Exchange's queues are per
    # server); a SQLite file belongs to one server.
    shared = isinstance(target, str)
    sql = await open_sqlite(target, server_label(settings.server.hostname) if shared else "")
    blobs: BlobStore
    if settings.database.blobs == "database":
        blobs = DatabaseBlobStore(sql.db)
    else:
        root = data_dir / "blobs"
        blobs = await FileBlobStore.open(root) if clean_temp else FileBlobStore(root)
    return Backend(sql, blobs)


def directory_for(backend: Backend, settings: Settings) -> Directory:
    return Directory(backend.sql.directory, backend.sql.mailstore, make_hasher(settings))


@dataclass
class AllInOneServer:
    settings: Settings
    data_dir: Path
    port_offset: int
    backend: Backend
    directory: Directory
    transport: TransportService
    lookup: DirectoryCache
    listeners: list[SmtpListener] = field(default_factory=list)
    ephemeral_ports: bool = False  # tests: let the kernel pick every port
    tarpit_override: float | None = None  # tests: shorten the AUTH tarpit
    outbound: OutboundDelivery | None = None  # send connectors' delivery queues
    workers: DeliveryWorkers | None = None  # more delivery processes (delivery_processes)
    pruner: TombstonePruner | None = None  # expunge tombstones past `[database] tombstone_days`
    heartbeat: Heartbeat | None = None  # this server's entry in the directory, kept alive
    admin: AdminListener | None = None  # /healthz and /metrics on loopback (`[admin]`)
    # The Client Access HTTP proxy on 443/80 (`[web] proxy`) and its upstream client.
    web: list[HttpProxyListener] = field(default_factory=list)
    http_proxy: HttpProxy | None = None
    # PostgreSQL only: mailbox changes to and from the other servers (LISTEN/NOTIFY).
    change_channel: PgChangeChannel | None = None
    pop3: ProtocolRuntime | None = None  # POP3 listeners, started by `postwerk pop enable`
    imap: ProtocolRuntime | None = None  # IMAP4 listeners, started by `postwerk imap enable`
    notifier: MailboxNotifier = field(default_factory=MailboxNotifier)  # mailbox changes
    # IMAP4/POP3 back ends (1993/1995) of a Mailbox server that CAS servers proxy to.
    backend_listeners: dict[int, ImapListener | Pop3Listener] = field(default_factory=dict)
    # The directory's mailbox databases and servers (routing by placement).
    placement: Placement | None = None
    # This server's credentials for the others and the check of theirs (server_auth.py).
    trust: ServerTrust | None = None
    # The mailbox database as the IMAP4/POP3 back end serves it (frontend/routing.py).
    mailbox_backend: MailboxBackend = field(init=False)

    def __post_init__(self) -> None:
        self.web_ports: dict[int, int] = {}  # configured → listening, for `ports`
        self.mailbox_backend = MailboxBackend(
            self.backend.sql.mailstore, self.backend.blobs, self.notifier
        )

    @property
    def label(self) -> str:
        return server_label(self.settings.server.hostname)

    @property
    def has_mailbox(self) -> bool:
        return "mailbox" in self.settings.server.roles

    @property
    def shares_database(self) -> bool:
        """On PostgreSQL: other servers of the organization may route to this one."""
        return isinstance(database_path(self.settings, self.data_dir), str)

    @property
    def has_cas(self) -> bool:
        return "cas" in self.settings.server.roles

    @property
    def ports(self) -> dict[int, int]:
        """Actual listening port by configured port (25 -> 10025 with offset 10000)."""
        ports = {listener.config_port: listener.bound_port for listener in self.listeners}
        for port, backend in self.backend_listeners.items():
            ports[port] = backend.bound_port
        ports.update(self.web_ports)
        for runtime in (self.pop3, self.imap):
            if runtime is not None:
                ports.update(runtime.bound_ports)
        return ports

    async def start(self) -> None:
        log = structlog.get_logger("postwerk.server")
        settings = self.settings
        tls = settings.tls
        cert = Path(tls.certificate)
        key = Path(tls.private_key)
        cert = cert if cert.is_absolute() else self.data_dir / cert
        key = key if key.is_absolute() else self.data_dir / key
        tls_context = server_context(cert, key, tls.minimum_version)
        sql_directory = self.backend.sql.directory
        self.trust = await server_trust(sql_directory, self.label)
        self.placement = Placement(sql_directory)
        if self.outbound is not None:
            # Recipients whose database another Mailbox server mounts go there over SMTP.
            self.outbound.intra_org = MailboxServerRoute(
                self.placement, self.trust, settings.server.hostname, settings.ports.hub_smtp
            )
        if self.outbound is not None and not self.has_cas:
            # FrontEndProxyEnabled connectors leave through a Client Access server's
            # Outbound Proxy Frontend (717); an all-in-one server sends them itself.
            self.outbound.outbound_proxy = ClientAccessRoute(
                self.placement, self.trust, settings.server.hostname,
                port=settings.ports.outbound_proxy,
            )  # fmt: skip
        if self.has_mailbox:
            # Mounts this server's mailbox database (adopting mailboxes placed nowhere).
            await ensure_server_database(sql_directory, self.label)
        connectors = await self.lookup.list_receive_connectors()
        throttle = LoginThrottle(
            time.monotonic,
            ThrottlePolicy(
                window=settings.auth.lockout_window,
                tarpit=settings.auth.tarpit_seconds,
                account_limit=settings.auth.lockout_failures,
                ip_limit=settings.auth.lockout_ip_failures,
            ),
        )
        ctx = ReceiveContext(
            hostname=settings.server.hostname,
            directory=self.directory,
            lookup=self.lookup,
            transport=self.transport,
            mail=self.backend.sql.mailstore,
            throttle=throttle,
            tls_context=tls_context,
            connectors=self.lookup.list_receive_connectors,
            max_hop_count=settings.transport.max_hop_count,
            max_recipients_per_message=settings.transport.max_recipients_per_message,
            tarpit_override=self.tarpit_override,
            agents=self.transport.agents,
            # A Client Access server without the Mailbox role keeps no queue: it relays
            # each message during the session to a Mailbox server (frontend_relay.py).
            relay=self._relay() if self.has_cas and not self.has_mailbox else None,
            # ... and relays the Mailbox servers' sessions on 717 to their next hop.
            outbound_proxy=(
                self._outbound_proxy() if self.has_cas and not self.has_mailbox else None
            ),
            # Organization servers authenticate on 2525/465 (and on Default Frontend).
            trust=self.trust,
        )
        ports = sorted(
            {binding_port(b) for c in connectors if c.bound and c.enabled for b in c.bindings}
        )
        host = settings.server.bind or None
        if not self.ephemeral_ports:
            try:
                admin = [settings.admin.port] if settings.admin.enabled else []
                if self.has_cas and settings.web.proxy:
                    admin += [settings.ports.https, settings.ports.http]
                check_port_offset(self.port_offset, sorted({*ports, *admin}))
            except PortOffsetOutOfRange:
                await self.stop()
                raise
        for port in ports:
            listen_port = 0 if self.ephemeral_ports else port + self.port_offset
            listener = SmtpListener(ctx, host, listen_port, port)
            await self._open(listener, host, port)
            self.listeners.append(listener)
            log.info("listening", port=listener.bound_port, host=host or "*")
        label = self.label

        async def read(protocol: str) -> ProtocolSettings | None:
            # This server's own settings, else the organization's default.
            return await sql_directory.get_protocol_settings(protocol, label)

        # Each login goes where the directory places the mailbox: served here when its
        # database is mounted on this server, else proxied to its Mailbox server.
        locator = DirectoryLocator(
            self.placement,
            label,
            self.mailbox_backend if self.has_mailbox else None,
            {
                "imap4": settings.ports.imap_backend,
                "pop3": settings.ports.pop3_backend,
                "http": settings.ports.http_backend,
            },
        )
        self.pop3 = ProtocolRuntime(
            "pop3",
            Pop3Context(
                directory=self.directory,
                locator=locator,
                throttle=throttle,  # one failure count per address across the protocols
                tls_context=tls_context,
                tarpit_override=self.tarpit_override,
                trust=self.trust,  # credentials for proxying to other Mailbox servers
            ),
            read,
            lambda ctx, h, p, tls: Pop3Listener(ctx, h, p, implicit_tls=tls),
            Pop3Settings.from_mapping,
            host=host,
            port_offset=self.port_offset,
            ephemeral_ports=self.ephemeral_ports,
        )
        self.imap = ProtocolRuntime(
            "imap4",
            ImapContext(
                directory=self.directory,
                locator=locator,
                throttle=throttle,
                tls_context=tls_context,
                tarpit_override=self.tarpit_override,
                trust=self.trust,
            ),
            read,
            lambda ctx, h, p, tls: ImapListener(ctx, h, p, implicit_tls=tls),
            ImapSettings.from_mapping,
            host=host,
            port_offset=self.port_offset,
            ephemeral_ports=self.ephemeral_ports,
        )
        if self.has_cas:
            self.pop3.start()
            self.imap.start()
        if self.has_mailbox and (not self.has_cas or self.shares_database):
            # Other servers' front ends reach this server's mailboxes here.
            await self._start_backends(tls_context, throttle, host)
        target = database_path(settings, self.data_dir)
        if isinstance(target, str) and target.startswith("postgresql"):
            # Imported here: asyncpg is the `postgres` extra, not needed for SQLite.
            from postwerk.store.sqlite.change_channel import PgChangeChannel

            self.change_channel = PgChangeChannel(target, self.notifier)
            await self.change_channel.start()
        if self.has_mailbox:
            self.pruner = TombstonePruner(
                self.backend.sql.mailstore, self.settings.database.tombstone_days
            )
            self.pruner.start()
        # Registered once the listeners are up: `server list` then says it runs.
        directory = self.backend.sql.directory
        record = server_record(
            settings,
            self.port_offset,
            heartbeat_at=time.time(),
            certificate_sha256=certificate_sha256(cert),
        )
        await directory.put_server(record)
        self.heartbeat = Heartbeat(directory, record.name)
        self.heartbeat.start()
        if self.has_mailbox:
            self.transport.start()
        if settings.admin.enabled:
            port = 0 if self.ephemeral_ports else settings.admin.port + self.port_offset
            self.admin = AdminListener(self._probes(), settings.admin.bind, port)
            try:
                await self.admin.start()
            except OSError as exc:
                self.admin = None
                await self.stop()
                raise PortInUse(
                    f"cannot listen on {settings.admin.bind}:{port} (admin): {exc.strerror or exc}"
                ) from exc
            log.info("listening", port=self.admin.bound_port, host=settings.admin.bind, admin=True)
        if self.has_cas and settings.web.proxy:
            await self._start_web(tls_context, host, locator)
        if self.outbound is not None and self.has_mailbox:
            self.outbound.start()
        if self.workers is not None and self.has_mailbox:
            await self.workers.start()

    async def _open(
        self,
        listener: ImapListener | Pop3Listener | SmtpListener | HttpProxyListener,
        host: str | None,
        port: int,
    ) -> None:
        """Start `listener` (configured `port`); a port in use stops the server with one line."""
        try:
            await listener.start()
        except OSError as exc:
            await self.stop()
            raise PortInUse(
                f"cannot listen on {host or '*'}:{port + self.port_offset}: {exc.strerror or exc}"
            ) from exc

    async def _start_web(
        self, tls_context: ssl.SSLContext, host: str | None, locator: DirectoryLocator
    ) -> None:
        """The HTTP proxy to the back ends (frontend/http_proxy.py) on 443 and 80."""
        ports = self.settings.ports
        https = ports.https + (0 if self.ephemeral_ports else self.port_offset)
        self.http_proxy = HttpProxy(
            self.directory.authenticate,
            MailboxUpstreams(self.backend.sql.directory.find_recipient, locator),
            realm=self.settings.server.hostname,
            via=self.label,
            https_port=None if self.ephemeral_ports else https,
        )
        bind = host or "0.0.0.0"
        for name, port, tls in (("https", ports.https, tls_context), ("http", ports.http, None)):
            listen = 0 if self.ephemeral_ports else port + self.port_offset
            listener = HttpProxyListener(self.http_proxy, bind, listen, tls, name=name)
            await self._open(listener, bind, port)
            self.web.append(listener)
            self.web_ports[port] = listener.bound_port

    def _relay(self) -> RelayFactory:
        assert self.placement is not None and self.trust is not None
        ports = self.settings.ports
        return RelayFactory(
            self.placement,
            self.trust,
            self.settings.server.hostname,
            hub_port=ports.hub_smtp,
            client_proxy_port=ports.client_proxy,
            outbound_proxy_port=ports.outbound_proxy,
        )

    def _outbound_proxy(self) -> OutboundProxyFactory | None:
        """Outbound Proxy Frontend (717): each Mailbox server's transaction relayed to
        the send connector's next hop, resolved and reached as OutboundDelivery does."""
        if self.outbound is None:
            return None
        return OutboundProxyFactory(
            self.lookup.list_send_connectors,
            self.outbound.destination,
            port=self.settings.ports.outbound_proxy,
        )

    async def _start_backends(
        self, tls_context: ssl.SSLContext, throttle: LoginThrottle, host: str | None
    ) -> None:
        """A Mailbox server's IMAP4 and POP3 back ends (1993/1995, implicit TLS): the
        services Client Access servers proxy their clients' sessions to. Only
        organization servers log in there on a user's behalf (server_auth.py); the
        per-user limits hold across every CAS, and one CAS address may carry them all."""
        local = SingleServerLocator(self.mailbox_backend)
        ports = self.settings.ports

        def at(port: int) -> int:
            return 0 if self.ephemeral_ports else port + self.port_offset

        imap_settings = ImapSettings(max_connections_per_ip=ImapSettings().max_connections)
        pop_settings = Pop3Settings(max_connections_per_ip=Pop3Settings().max_connections)
        # The same context fields for both services: this server's mailboxes, and logins
        # on a user's behalf accepted from the organization's servers (and only here).
        shared: dict[str, Any] = {
            "directory": self.directory,
            "locator": local,
            "throttle": throttle,
            "tls_context": tls_context,
            "tarpit_override": self.tarpit_override,
            "trust": self.trust,
            "accepts_proxy_logins": True,
        }
        imap_at, pop_at = at(ports.imap_backend), at(ports.pop3_backend)
        listeners: list[tuple[int, ImapListener | Pop3Listener]] = [
            (
                ports.imap_backend,
                ImapListener(
                    ImapContext(settings=imap_settings, **shared), host, imap_at, implicit_tls=True
                ),
            ),
            (
                ports.pop3_backend,
                Pop3Listener(
                    Pop3Context(settings=pop_settings, **shared), host, pop_at, implicit_tls=True
                ),
            ),
        ]
        for port, listener in listeners:
            await self._open(listener, host, port)
            self.backend_listeners[port] = listener

    async def hosted_elsewhere(self, recipient: Recipient) -> str | None:
        """The Mailbox server serving `recipient` when it is not this one."""
        if self.placement is None:
            return None
        await self.placement.refresh()
        server = self.placement.server_of(recipient.database)
        return server if server is not None and server != self.label else None

    def _probes(self) -> AdminProbes:
        """What /healthz checks per role and what /metrics reads at each scrape."""

        async def smtp_listening() -> bool:
            return bool(self.listeners) and all(
                listener.server is not None and listener.server.is_serving()
                for listener in self.listeners
            )

        async def access_services() -> bool:
            return all(r is None or r.healthy for r in (self.pop3, self.imap))

        async def database() -> bool:
            await self.backend.sql.directory.get_organization()
            return True

        async def transport() -> bool:
            return self.transport.running

        async def mailbox_servers() -> bool:
            # A Client Access server alone serves nobody without a running Mailbox server.
            assert self.placement is not None
            await self.placement.refresh()
            servers = self.placement.servers.values()
            return any("mailbox" in s.roles and self.placement.running(s.name) for s in servers)

        checks: dict[str, dict[str, Check]] = {}
        if "cas" in self.settings.server.roles:
            checks["cas"] = {"smtp_listeners": smtp_listening, "imap4_pop3": access_services}
            if not self.has_mailbox:
                checks["cas"]["mailbox_servers"] = mailbox_servers
        if "mailbox" in self.settings.server.roles:
            checks["mailbox"] = {"database": database, "transport": transport}

        def connections() -> dict[str, int]:
            return {
                "smtp": sum(len(listener.live) for listener in self.listeners),
                "imap4": self.imap.open_connections if self.imap else 0,
                "pop3": self.pop3.open_connections if self.pop3 else 0,
            }

        async def queues() -> dict[str, int]:
            return {q.name: q.count for q in await self.backend.sql.queue.summaries()}

        return AdminProbes(checks, connections, queues)

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        await asyncio.gather(*(listener.stop() for listener in self.listeners))
        await asyncio.gather(*(b.stop() for b in self.backend_listeners.values()))
        await asyncio.gather(*(w.stop() for w in self.web))
        if self.http_proxy is not None:
            await self.http_proxy.aclose()
        for runtime in (self.pop3, self.imap):
            if runtime is not None:
                await runtime.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.change_channel is not None:
            await self.change_channel.stop()
        if self.pruner is not None:
            await self.pruner.stop()
        if self.workers is not None:
            await self.workers.stop()
        if self.outbound is not None:
            await self.outbound.stop()
        await self.transport.stop()
        await self.backend.close()


def transport_for(
    backend: Backend, settings: Settings, lookup: DirectoryCache | None = None
) -> TransportService:
    """The transport service over `backend`; admin tools use it (not started) to queue
    messages they write themselves, such as the NDR of a removed message."""
    lookup = lookup or DirectoryCache(backend.sql.directory)
    return TransportService(
        blobs=backend.blobs,
        queue=backend.sql.queue,
        tracking=backend.sql.tracking,
        categorizer=Categorizer(lookup, settings.server.hostname),
        mail=backend.sql.mailstore,
        store=backend.sql.transport,
        deliver_at_receipt=settings.transport.deliver_at_receipt,
        server_hostname=settings.server.hostname,
        delivery_batch=settings.transport.delivery_batch,
        delivery_workers=settings.transport.delivery_workers,
    )


async def build(
    settings: Settings, data_dir: Path, port_offset: int | None = None
) -> AllInOneServer:
    backend = await open_backend(settings, data_dir)
    directory = directory_for(backend, settings)
    lookup = DirectoryCache(backend.sql.directory)
    transport = transport_for(backend, settings, lookup)
    try:
        # Explicitly imported `module:Class` paths from [agents]; None when there are none.
        transport.agents = load_agents(settings.agents)
    except AgentLoadError:
        await backend.close()
        raise
    outbound = outbound_for(settings, backend, lookup, transport)
    offset = settings.server.port_offset if port_offset is None else port_offset
    server = AllInOneServer(settings, data_dir, offset, backend, directory, transport, lookup)
    server.outbound = outbound
    # Recipients whose database another Mailbox server mounts go there over SMTP.
    transport.categorizer.hosted_elsewhere = server.hosted_elsewhere
    # Sessions watching a mailbox (IMAP IDLE, concurrent sessions) learn of deliveries.
    transport.on_delivered = server.notifier.changed
    processes = settings.transport.delivery_processes
    if processes > 1:
        workers = DeliveryWorkers(data_dir, processes)
        server.workers = workers

        def wake_all() -> None:
            outbound.wake()
            workers.wake()

        transport.on_routed_out = wake_all
    else:
        transport.on_routed_out = outbound.wake
    return server


# Exchange's MaxPerDomainOutboundConnections: connections to one next hop per server.
MAX_CONNECTIONS_PER_NEXT_HOP = 20


def outbound_for(
    settings: Settings,
    backend: Backend,
    lookup: DirectoryCache,
    transport: TransportService,
    *,
    partition: tuple[int, int] | None = None,
) -> OutboundDelivery:
    """The send connectors' delivery queues; with delivery processes, this process's
    share of the queue and of the connections per next hop."""
    processes = settings.transport.delivery_processes
    if partition is None and processes > 1:
        partition = (0, processes)
    share = -(-MAX_CONNECTIONS_PER_NEXT_HOP // processes)  # ceil: at least 1 each
    return OutboundDelivery(
        queue=backend.sql.queue,
        store=backend.sql.transport,
        blobs=backend.blobs,
        directory=lookup,
        resolver=Resolver(
            DnsConfig(
                nameservers=tuple(settings.dns.nameservers),
                timeout=settings.dns.timeout,
                prefer_ipv6=settings.dns.prefer_ipv6,
            ),
            local_names=(settings.server.hostname,),
        ),
        # As many idle connections kept per next hop as may be open: reuse, not reconnects.
        client=OutboundClient(max_connections_per_destination=share, max_idle_per_key=share),
        policy=RetryPolicy.from_settings(settings.transport),
        server_hostname=settings.server.hostname,
        submit_dsn=lambda data, rcpt: _submit_dsn(transport, data, rcpt),
        poison_threshold=settings.transport.poison_threshold,
        per_hop_connections=share,
        partition=partition,
    )


async def _submit_dsn(transport: TransportService, data: bytes, recipient: str) -> None:
    await transport.submit(data, "", [recipient])
