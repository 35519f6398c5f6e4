"""Mailbox → Mailbox: where mail for a mailbox another Mailbox server mounts goes.

Purpose: the categorizer gives such a recipient the next hop `smtp:#<SERVER>`
(the implicit intra-organization send connector, transport/routing.py);
outbound delivery asks a `MailboxServerRoute` for that server's destination:
its "Default <server>" receive connector (2525 + its port offset), STARTTLS
required, the certificate pinned to the one the directory registered for it,
and this server's credentials (directory/server_auth.py). The server process
and each delivery worker process build one (roles/).

Invariant: a server that is not registered or not running gets no destination
(None): its mail waits in the queue with the usual retries, never goes elsewhere.
"""

from __future__ import annotations

from postwerk.directory.server_auth import ServerTrust, internal_client_context
from postwerk.frontend.routing import Placement, server_host
from postwerk.store.api import DirectoryStore
from postwerk.transport.routing import INTRA_ORG_HOP
from postwerk.transport.smtp_client import Destination, TlsPolicy

HUB_SMTP_PORT = 2525


class MailboxServerRoute:
    def __init__(
        self, placement: Placement, trust: ServerTrust, helo_name: str, port: int = HUB_SMTP_PORT
    ) -> None:
        self.placement = placement
        self.trust = trust
        self.helo_name = helo_name
        self.port = port  # the configured (un-offset) port; each server's offset is added
        self._tls = internal_client_context()

    async def __call__(self, server: str) -> Destination | None:
        record = await self.placement.running_record(server)
        if record is None:
            return None
        return Destination(
            hosts=[(record.fqdn, server_host(record))],
            helo_name=self.helo_name,
            port=self.port + record.port_offset,
            tls=TlsPolicy.REQUIRED,
            ssl_context=self._tls,
            auth=self.trust.credentials(),
            pin_sha256=record.certificate_sha256,
            next_hop=f"{INTRA_ORG_HOP}{server}",
        )


async def server_trust(directory: DirectoryStore, this_server: str) -> ServerTrust:
    """This server's trust, from the organization's secret in the directory."""
    organization = await directory.get_organization()
    return ServerTrust.from_directory(
        directory, organization.secret if organization else "", this_server
    )
