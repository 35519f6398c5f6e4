"""`[web] proxy = true`: a Client Access server serves the HTTP proxy
(frontend/http_proxy.py) on its https and http ports; the proxy itself is
tested against back-end apps in test_http_proxy.py. Here: the server starts
and stops it, and it answers as the proxy does while no back end exists."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import DOMAIN, RunningServer, init_data_dir, populate, start_server, stop_server


@pytest.fixture
def web(tmp_path: Path, ca: trustme.CA) -> Iterator[RunningServer]:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)
    populate(data_dir)
    running = start_server(data_dir, ca, environ={"POSTWERK_WEB__PROXY": "true"})
    try:
        yield running
    finally:
        stop_server(running)


def get(server: RunningServer, path: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.server.ports[443]}{path}", headers=headers
    )
    context: ssl.SSLContext = server.client_context()
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_proxy_listens_and_routes_while_no_back_end_exists(web: RunningServer) -> None:
    assert {443, 80} <= set(web.server.ports)
    # A placed mailbox, but no back-end web service yet: 503, the client may retry.
    status, _ = get(web, "/EWS/Exchange.asmx", {"X-AnchorMailbox": f"alice@{DOMAIN}"})
    assert status == 503
    assert get(web, "/owa/", {})[0] == 401  # no identity
    assert get(web, "/nothing-here", {})[0] == 404


def test_off_by_default(org: RunningServer) -> None:
    assert 443 not in org.server.ports and 80 not in org.server.ports
