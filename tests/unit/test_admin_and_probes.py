"""Failure paths of the admin listener (roles/admin.py) and of the connectivity
probes (topology/connectivity.py), over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import pytest

from postwerk.roles.admin import AdminListener, AdminProbes
from postwerk.topology.connectivity import Outcome, probe_flows
from postwerk.topology.flows import Direction, Flow, State


async def _true() -> bool:
    return True


async def _broken() -> bool:
    raise RuntimeError("database gone")


def probes() -> AdminProbes:
    async def queues() -> dict[str, int]:
        return {}

    checks = {"mailbox": {"database": _broken, "transport": _true}}
    return AdminProbes(checks, lambda: {}, queues)


async def test_admin_port_in_use_is_an_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await AdminListener(probes(), "127.0.0.1", port).start()


async def test_a_check_that_raises_makes_the_role_not_ready() -> None:
    admin = AdminListener(probes(), "127.0.0.1", 0)
    await admin.start()
    try:
        url = f"http://127.0.0.1:{admin.bound_port}/healthz"

        def get() -> tuple[int, dict[str, object]]:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, body = await asyncio.to_thread(get)
        assert status == 503
        # The failing check is False (and logged), never a 500.
        checks = {"database": False, "transport": True}
        assert body["roles"] == {"mailbox": {"live": True, "ready": False, "checks": checks}}
    finally:
        await admin.stop()


def flow(port: int, listen: int) -> Flow:
    return Flow("Inbound mail", port, "tcp", "SMTP", "Internet (any)", "CAS", "connector",
                Direction.INBOUND, State.ENABLED, listen)  # fmt: skip


async def test_probe_reports_a_wrong_greeting_and_silence() -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK not an SMTP server\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    wrong_server = await asyncio.start_server(wrong, "127.0.0.1", 0)
    silent_server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        p1 = wrong_server.sockets[0].getsockname()[1]
        p2 = silent_server.sockets[0].getsockname()[1]
        first, second = await probe_flows([flow(25, p1), flow(25, p2)], "127.0.0.1", timeout=0.5)
        assert first.outcome is Outcome.FAILED and "unexpected greeting" in first.detail
        assert second.outcome is Outcome.FAILED and "no answer in 0.5 s" in second.detail
    finally:
        wrong_server.close()
        silent_server.close()


async def test_probe_reports_a_refused_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # closed again: nothing listens there
    [probe] = await probe_flows([flow(587, free)], "127.0.0.1", timeout=2)
    assert probe.outcome is Outcome.FAILED and f"127.0.0.1:{free}" in probe.detail
