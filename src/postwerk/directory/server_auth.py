"""How the organization's servers recognise each other on their internal ports.

Purpose: a Client Access server relays SMTP to a Mailbox server's transport
(2525, 465), logs in to its IMAP4/POP3 back ends (1993/1995) on a user's
behalf, and a Mailbox server sends out through a Client Access server (717).
Those ports grant what no client may have (asserting another user's identity,
relaying without a user's credentials), so each side must know the other is
one of the organization's servers. Two checks, both from the directory:

- **The caller proves it is a server**: it authenticates (SASL PLAIN over TLS)
  as its server label with a password derived from the organization's secret
  (`Organization.secret`, made with the organization, kept in the shared
  database): `server_password(secret, label)`. The receiver recomputes it; a
  leaked password names one server and can be rotated with the secret.
- **The callee proves it is the server the directory names**: each server
  registers the SHA-256 of its TLS certificate (`ServerRecord.certificate_sha256`);
  the caller pins it after the handshake (`pinned`), so self-signed
  certificates work without an organization CA and a man in the middle gets
  no server password.

Invariants: a password is only ever sent inside TLS to a pinned peer; the
comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from postwerk.store.api import DirectoryStore

_CONTEXT = b"postwerk server credential v1:"


def server_password(secret: str, server: str) -> str:
    """The password server `server` (its label) presents to the others."""
    digest = hmac.new(secret.encode(), _CONTEXT + server.upper().encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def verify_server_password(secret: str, server: str, password: str) -> bool:
    if not secret or not server:
        return False
    return hmac.compare_digest(server_password(secret, server).encode(), password.encode())


def certificate_sha256(pem_path: Path) -> str:
    """SHA-256 (hex) of the first certificate of a PEM file, as registered and pinned."""
    pem = pem_path.read_text("ascii")
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    der = ssl.PEM_cert_to_DER_cert(pem[begin:end])
    return hashlib.sha256(der).hexdigest()


def peer_sha256(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    if ssl_object is None:
        return ""
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else ""


def pinned(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, expected: str) -> bool:
    """Is the peer's certificate the one the directory registered for it? An empty
    registration (a server that predates pinning) never matches."""
    return bool(expected) and hmac.compare_digest(peer_sha256(ssl_object), expected.lower())


def internal_client_context() -> ssl.SSLContext:
    """TLS for connecting to another server's internal port: the certificate is
    checked by `pinned` after the handshake instead of against a CA, since
    organization servers commonly run with self-signed certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ServerTrust:
    """This server's credentials for the others, and the check of theirs.

    `secret` is the organization's (`Organization.secret`); `registered` reads the
    server labels the directory knows (a removed server's password stops working).
    """

    def __init__(
        self,
        secret: str,
        this_server: str,
        registered: Callable[[], Awaitable[Iterable[str]]],
    ) -> None:
        self.secret = secret
        self.this_server = this_server
        self._registered = registered

    def credentials(self) -> tuple[str, str]:
        """(authentication identity, password) to present on another server's internal port."""
        return self.this_server, server_password(self.secret, self.this_server)

    async def is_server(self, name: str, password: str) -> bool:
        """Did an organization server present these credentials?"""
        label = name.upper()
        if not verify_server_password(self.secret, label, password):
            return False
        return label in set(await self._registered())

    @classmethod
    def from_directory(
        cls, directory: DirectoryStore, secret: str, this_server: str
    ) -> ServerTrust:
        async def registered() -> list[str]:
            return [s.name for s in await directory.list_servers()]

        return cls(secret, this_server, registered)
