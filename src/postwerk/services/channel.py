"""The byte pipe and the listening socket under the IMAP and POP3 services.

`FramedChannel`: an asyncio Protocol that feeds a sans-I/O framer and lets one
connection task wait for input, with flow control both ways; after a proxied
login it becomes one end of a byte relay (`relay_to`, frontend/mail_proxy.py).
`ServiceListener`: the accept loop with the connection limits, shared by both
services.

Why a Protocol and not streams: the framer owns the only input buffer, so a
STARTTLS/STLS upgrade can drop pipelined plaintext (CVE-2011-0411) with nothing
left behind in a StreamReader, and reading pauses once `high_water` octets of
pipelined input wait in the framer (memory per connection stays bounded).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

from postwerk.services.tls import describe

HIGH_WATER = 64 * 1024  # pause reading when this much pipelined input is buffered
TLS_HANDSHAKE_TIMEOUT = 30.0  # implicit TLS: a client that never finishes is dropped
INFLATE_STEP = 16 * 1024  # COMPRESS=DEFLATE: octets inflated at a time
# Our deflate stream: a 4 KiB window and a small hash keep a compressed
# connection at ~40 KB instead of zlib's ~260 KB default; the client's stream
# may use the full 32 KiB window, so the inflater keeps that.
DEFLATE_WBITS = -12
DEFLATE_MEMLEVEL = 5


class Framer(Protocol):
    def receive_data(self, data: bytes) -> None: ...

    def discard_buffered(self) -> int: ...

    @property
    def buffered(self) -> int: ...


F = TypeVar("F", bound=Framer)


class RelayPeer(Protocol):
    """The other end of a byte relay: where a relaying channel's input goes, and
    whose reading it pauses while its own output cannot drain."""

    def write(self, data: bytes) -> None: ...

    def pause_input(self) -> None: ...

    def resume_input(self) -> None: ...

    def close(self) -> None: ...


class FramedChannel(asyncio.Protocol, Generic[F]):
    """Moves bytes between the socket and the framer; `wait_for_data`, `write`,
    `drain` and `close` are what the connection task uses."""

    def __init__(
        self,
        framer: F,
        on_connected: Callable[[FramedChannel[F]], None] | None = None,
        *,
        high_water: int = HIGH_WATER,
    ) -> None:
        self.framer = framer
        self._on_connected = on_connected
        self._high_water = high_water
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._pending = False  # input arrived while nobody waited
        self._paused_reading = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._inflater: Any = None  # zlib objects once COMPRESS=DEFLATE is on (RFC 4978)
        self._deflater: Any = None
        self._compressed = b""  # received, inflated only as the framer makes room
        self._peer: RelayPeer | None = None  # relaying: input goes there, not to the framer

    @property
    def compressing(self) -> bool:
        return self._deflater is not None

    def start_deflate(self, level: int = 6) -> None:
        """RFC 4978: from now on both directions are raw DEFLATE streams. Call right
        after writing the tagged OK (and dropping anything the client pipelined
        before it), with no await in between."""
        self._inflater = zlib.decompressobj(-15)
        self._deflater = zlib.compressobj(level, zlib.DEFLATED, DEFLATE_WBITS, DEFLATE_MEMLEVEL)

    def _inflate_some(self) -> None:
        """Inflate pending input until the framer holds `high_water` octets, so a
        few compressed octets that inflate to gigabytes are never inflated at once."""
        try:
            while self._compressed and self.framer.buffered <= self._high_water:
                out = self._inflater.decompress(self._compressed, INFLATE_STEP)
                self._compressed = self._inflater.unconsumed_tail
                if out:
                    self.framer.receive_data(out)
        except zlib.error:
            self._compressed = b""
            self.close()  # not a DEFLATE stream: nothing after it can be read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        if self._on_connected is not None:
            # With implicit TLS this runs after the handshake, so a failed one starts nothing.
            self._on_connected(self)
            self._on_connected = None

    def data_received(self, data: bytes) -> None:
        if self._peer is not None:
            self._peer.write(data)
            return
        if self._inflater is not None:
            self._compressed += data
            self._inflate_some()
        else:
            self.framer.receive_data(data)
        waiting = self.framer.buffered + len(self._compressed)
        if waiting > self._high_water and self.transport is not None and not self.closed:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        self._close_peer()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()
        self._wake()
        self._close_peer()

    def pause_writing(self) -> None:
        self._can_write.clear()
        if self._peer is not None:
            self._peer.pause_input()  # the client reads slowly: stop reading the back end

    def resume_writing(self) -> None:
        self._can_write.set()
        if self._peer is not None:
            self._peer.resume_input()

    # -- relaying (frontend/mail_proxy.py) -----------------------------------------

    def relay_to(self, peer: RelayPeer) -> int:
        """Become one end of a byte relay: first the octets the client pipelined
        that the framer still holds go to `peer`, then all further input as it
        arrives; reading pauses while `peer` cannot write. Returns the count of
        pipelined octets passed on. Call right after writing this service's last
        reply, with no await in between, so no octet is read by both."""
        # Relaying starts right after login, before COMPRESS could be on: input is plain.
        assert self._inflater is None and not self._compressed
        # Once a command is complete, the framer's buffer holds exactly the raw octets
        # the client sent after it (both framers keep them in `_buf`; they have no
        # public accessor yet).
        pending = bytes(getattr(self.framer, "_buf", b""))
        self.framer.discard_buffered()
        self._peer = peer
        if self.closed:
            self._close_peer()  # the client left while the back end was logged in to
            return 0
        if self._paused_reading and self.transport is not None:
            # The framer's buffer is gone: read again, unless writing `pending`
            # fills the peer's buffer (its pause_writing pauses us again).
            self._paused_reading = False
            self.transport.resume_reading()
        if pending:
            peer.write(pending)
        return len(pending)

    def pause_input(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_input(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _close_peer(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.close()

    def _wake(self) -> None:
        self._pending = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_for_data(self) -> None:
        if self._compressed:
            before = self.framer.buffered
            self._inflate_some()
            if self.framer.buffered > before or self.closed:
                return
        if self._paused_reading and self.transport is not None and not self.closed:
            self._paused_reading = False
            self.transport.resume_reading()
        if self._pending or self.closed:
            self._pending = False
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._pending = False

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            if self._deflater is not None:
                # A sync flush per write: the client can inflate every response
                # as it arrives, without waiting for more output.
                data = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._can_write.wait()

    async def start_tls(self, context: ssl.SSLContext, log: Any) -> bool:
        """Upgrade to TLS after the client's STARTTLS/STLS was answered and the framer's
        buffer dropped (the caller does both, with no await before this call). False:
        the handshake failed and the channel is closed."""
        transport = self.transport
        if transport is None:
            return False
        try:
            upgraded = await asyncio.get_running_loop().start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("tls_handshake_failed", error=str(exc))
            self.closed = True
            return False
        if upgraded is None:
            return False
        self.transport = upgraded
        log.info("tls_started", tls=describe(upgraded.get_extra_info("ssl_object")))
        return True

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        # Do not wait for connection_lost: a TLS close waits for the peer.
        self.closed = True
        self._can_write.set()
        self._wake()
        self._close_peer()


class Connection(Protocol):
    """One client's session task (IMAP or POP3)."""

    async def run(self) -> None: ...

    def shutdown(self) -> None: ...


class ListenerSettings(Protocol):
    @property
    def max_connections(self) -> int: ...

    @property
    def max_connections_per_ip(self) -> int: ...


K = TypeVar("K")


class ConnectionCounts(Generic[K]):
    """Open connections per key (client address, mailbox): what the per-address
    and per-user limits compare against. Keys at zero are dropped, so a busy
    server's table holds only the keys with connections."""

    def __init__(self) -> None:
        self._open: dict[K, int] = {}

    def __getitem__(self, key: K) -> int:
        return self._open.get(key, 0)

    def __len__(self) -> int:
        return len(self._open)

    @property
    def total(self) -> int:
        return sum(self._open.values())

    def add(self, key: K) -> None:
        self._open[key] = self._open.get(key, 0) + 1

    def remove(self, key: K) -> None:
        left = self._open.get(key, 1) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)


class ListenerContext(Protocol):
    """What a listener needs from its service's shared context."""

    tls_context: ssl.SSLContext | None
    by_ip: ConnectionCounts[str]

    @property
    def settings(self) -> ListenerSettings: ...

    @property
    def log(self) -> Any: ...


class ServiceListener(Generic[F]):
    """One listening socket of a mail access service: implicit TLS (993, 995) or
    plaintext with STARTTLS/STLS offered (143, 110).

    Subclasses say how to frame (`make_framer`), what to answer when the connection
    limits are reached (`too_many`) and which session runs a connection
    (`connection`); the accept loop, the limits per address and in all, and the
    shutdown (hang up every session, then close) are the same for both.
    """

    def __init__(
        self, ctx: ListenerContext, host: str | None, port: int, *, implicit_tls: bool = False
    ) -> None:
        if implicit_tls and ctx.tls_context is None:
            raise ValueError("implicit TLS needs a TLS context")
        self.ctx = ctx
        self.host = host
        self.port = port
        self.implicit_tls = implicit_tls
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.live: dict[asyncio.Task[None], Connection] = {}

    # -- what a service says ------------------------------------------------------

    def make_framer(self) -> F:
        raise NotImplementedError

    def too_many(self) -> bytes:
        raise NotImplementedError

    def connection(self, channel: FramedChannel[F], ip: str) -> Connection:
        raise NotImplementedError

    # -- the shared part ----------------------------------------------------------

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: FramedChannel(self.make_framer(), self._connected),
            self.host,
            self.port,
            ssl=self.ctx.tls_context if self.implicit_tls else None,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self.implicit_tls else None,
            reuse_address=True,
            backlog=512,
        )

    @property
    def bound_port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def _connected(self, channel: FramedChannel[F]) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(channel))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, channel: FramedChannel[F]) -> None:
        transport = channel.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        ip = str(peer[0])
        ctx = self.ctx
        settings = ctx.settings
        if (
            ctx.by_ip.total >= settings.max_connections
            or ctx.by_ip[ip] >= settings.max_connections_per_ip
        ):
            ctx.log.info("connection_refused_limit", client_ip=ip, total=ctx.by_ip.total)
            channel.write(self.too_many())
            channel.close()
            return
        ctx.by_ip.add(ip)
        connection = self.connection(channel, ip)
        task = asyncio.current_task()
        assert task is not None
        self.live[task] = connection
        try:
            await connection.run()
        finally:
            self.live.pop(task, None)
            ctx.by_ip.remove(ip)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting and hang up every client (each service says goodbye its way)."""
        if self.server is not None:
            self.server.close()
        for connection in list(self.live.values()):
            connection.shutdown()
        if self.tasks:
            _done, pending = await asyncio.wait(list(self.tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        if self.server is not None:
            await self.server.wait_closed()
