"""A server's entry in the organization's directory: registered by `init`,
re-registered by each `serve` (roles, addresses and version may have changed),
and kept alive by a heartbeat while it runs.

Purpose: Exchange keeps a server object per machine in Active Directory; the
other servers, the ports tool and `postwerk server list` read it. Here the
server is registered under its label (the first hostname label, upper case:
the name its connectors carry), and `HEARTBEAT_SECONDS` apart it writes the
time, so a reader can tell a running server from a stopped one
(`is_running`).
"""

from __future__ import annotations

import contextlib
import time
from importlib import metadata

from postwerk.config.settings import Settings
from postwerk.core.periodic import PeriodicTask
from postwerk.store.api import DirectoryStore
from postwerk.store.records import ServerRecord

HEARTBEAT_SECONDS = 30.0
# Three missed heartbeats: the server is taken for stopped.
RUNNING_WITHIN_SECONDS = 3 * HEARTBEAT_SECONDS


def server_label(hostname: str) -> str:
    return hostname.split(".")[0].upper()


def server_record(
    settings: Settings, port_offset: int, heartbeat_at: float, certificate_sha256: str = ""
) -> ServerRecord:
    server = settings.server
    try:
        version = metadata.version("postwerk")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return ServerRecord(
        name=server_label(server.hostname),
        fqdn=server.hostname,
        roles=tuple(server.roles),
        addresses=(server.bind,) if server.bind else (),
        port_offset=port_offset,
        version=version,
        registered_at=time.time(),
        heartbeat_at=heartbeat_at,
        certificate_sha256=certificate_sha256,
    )


def is_running(record: ServerRecord, now: float) -> bool:
    """Beating lately, and not stopped cleanly since the last beat."""
    recent = now - record.heartbeat_at < RUNNING_WITHIN_SECONDS
    return recent and record.stopped_at < record.heartbeat_at


class Heartbeat:
    """While `serve` runs: the server's heartbeat in the directory."""

    def __init__(self, directory: DirectoryStore, name: str) -> None:
        self.directory = directory
        self.name = name
        self._periodic = PeriodicTask("server-heartbeat", self._beat, HEARTBEAT_SECONDS)

    async def _beat(self) -> None:
        await self.directory.touch_server(self.name, time.time())

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        # A clean stop says so at once instead of after three missed beats.
        with contextlib.suppress(Exception):
            await self.directory.touch_server(self.name, time.time(), stopping=True)
