"""The byte pipe under the IMAP and POP3 connections: an asyncio Protocol that feeds
a sans-I/O framer and lets one connection task wait for input, with flow control
both ways.

Why a Protocol and not streams: the framer owns the only input buffer, so a
STARTTLS/STLS upgrade can drop pipelined plaintext (CVE-2011-0411) with nothing
left behind in a StreamReader, and reading pauses once `high_water` octets of
pipelined input wait in the framer (memory per connection stays bounded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, cast

HIGH_WATER = 64 * 1024  # pause reading when this much pipelined input is buffered


class Framer(Protocol):
    def receive_data(self, data: bytes) -> None: ...

    @property
    def buffered(self) -> int: ...


F = TypeVar("F", bound=Framer)


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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        if self._on_connected is not None:
            # With implicit TLS this runs after the handshake, so a failed one starts nothing.
            self._on_connected(self)
            self._on_connected = None

    def data_received(self, data: bytes) -> None:
        self.framer.receive_data(data)
        if self.framer.buffered > self._high_water and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()
        self._wake()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def _wake(self) -> None:
        self._pending = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_for_data(self) -> None:
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
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._can_write.wait()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        # Do not wait for connection_lost: a TLS close waits for the peer.
        self.closed = True
        self._can_write.set()
        self._wake()
