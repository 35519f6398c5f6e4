"""Probing a deployment's flows (`postwerk test connectivity`), Test-*Connectivity style.

Purpose: for each flow `postwerk ports` says is enabled and inbound, connect
from where the command runs to the port the server listens on and check that
the service behind it answers as it should: an SMTP 220 greeting, an IMAP4
`* OK`, a POP3 `+OK`, after a TLS handshake on the implicit-TLS ports. Rows
that cannot be probed from here (in-process flows, services not in this
release, outbound flows that need the Internet) are reported as skipped with
the reason, never as passed.

The certificate is not verified: the probe asks whether the service answers
(a self-signed certificate is the default); the result names the TLS version.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from postwerk.topology.flows import Direction, Flow, State


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Probe:
    flow: Flow
    outcome: Outcome
    detail: str

    def to_json(self) -> dict[str, object]:
        return {**self.flow.to_json(), "outcome": self.outcome.value, "detail": self.detail}


# The first bytes each service sends, by the reference port it answers on.
GREETINGS: dict[int, bytes] = {25: b"220", 587: b"220", 143: b"* OK", 993: b"* OK",
                               110: b"+OK", 995: b"+OK", 2525: b"220", 465: b"220",
                               1993: b"* OK", 1995: b"+OK", 717: b"220"}  # fmt: skip
IMPLICIT_TLS = frozenset({993, 995, 1993, 1995})


async def probe_flows(flows: Sequence[Flow], host: str, timeout: float = 5.0) -> list[Probe]:
    return [await _probe(flow, host, timeout) for flow in flows]


async def _probe(flow: Flow, host: str, timeout: float) -> Probe:
    if flow.direction is Direction.OUTBOUND:
        return Probe(flow, Outcome.SKIPPED, "outbound: needs the Internet, not probed from here")
    if flow.state is State.IN_PROCESS:
        return Probe(flow, Outcome.SKIPPED, "in one process: no connection to probe")
    if not flow.enabled or flow.listen_port is None:
        return Probe(flow, Outcome.SKIPPED, f"{flow.state.value}: nothing should listen")
    expected = GREETINGS.get(flow.port)
    if expected is None:
        return Probe(flow, Outcome.SKIPPED, "no probe for this service yet")
    try:
        detail = await asyncio.wait_for(_greeting(flow, host, expected), timeout)
    except TimeoutError:
        return Probe(flow, Outcome.FAILED, f"{host}:{flow.listen_port}: no answer in {timeout} s")
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Probe(flow, Outcome.FAILED, f"{host}:{flow.listen_port}: {exc}")
    return Probe(flow, Outcome.PASSED, detail)


async def _greeting(flow: Flow, host: str, expected: bytes) -> str:
    port = flow.listen_port
    assert port is not None
    context: ssl.SSLContext | None = None
    if flow.port in IMPLICIT_TLS:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # does it answer, not whom we trust
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        line = await reader.readline()
        if not line.startswith(expected):
            raise ValueError(f"unexpected greeting {line[:60]!r}")
        detail = f"{host}:{port} answered {line[:40].decode('latin-1').strip()!r}"
        if context is not None:
            tls = writer.get_extra_info("ssl_object")
            if tls is not None:
                detail += f" over {tls.version()}"
        return detail
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
