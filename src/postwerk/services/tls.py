"""TLS contexts for listeners (RFC 8314 recommendations: TLS 1.2 or newer)."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(
    certificate: Path, private_key: Path, minimum_version: str = "TLSv1.2"
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if minimum_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.load_cert_chain(certificate, private_key)
    # Compression off (CRIME); no renegotiation from clients.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """`version=TLS1_3 cipher=... bits=256` for Received headers (RFC 8314 §4.4)."""
    if ssl_object is None:
        return ""
    version = ssl_object.version() or "TLS"
    cipher = ssl_object.cipher()
    if cipher is None:
        return version
    name, _proto, bits = cipher
    return f"version={version.replace('v', '').replace('.', '_')} cipher={name} bits={bits}"
