"""`postwerk imap enable|disable|settings` against a running server: no restart.

IMAP4 is off after `init` (as in Exchange); `imap enable` makes the running server
listen on 143 (STARTTLS) and 993 (TLS) within a poll; a settings change reaches
new connections; `imap disable` closes the listeners. Driven with imapclient over
real TLS, including IDLE woken by a delivery.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
from pathlib import Path
from typing import Any

import imapclient  # type: ignore[import-untyped]
import pytest
import trustme

from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli, wait_for


def imap_ports(org: RunningServer) -> dict[int, int]:
    async def read() -> dict[int, int]:
        return {k: v for k, v in org.server.ports.items() if k in (143, 993)}

    return org.call(read())


def deliver(org: RunningServer, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail(
            "someone@remote.test",
            [f"alice@{DOMAIN}"],
            f"From: someone@remote.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode(),
        )


def test_imap_is_off_until_enabled_then_serves_and_stops(org: RunningServer) -> None:
    data_dir = org.data_dir
    shown: dict[str, Any] = json.loads(cli(data_dir, "imap", "settings", "--json"))
    assert shown["enabled"] is False and (shown["port"], shown["ssl_port"]) == (143, 993)
    assert imap_ports(org) == {}

    deliver(org, "first")
    org.wait_inbox(f"alice@{DOMAIN}", 1)
    cli(data_dir, "imap", "enable")
    wait_for(lambda: set(imap_ports(org)) == {143, 993}, timeout=10)
    ports = imap_ports(org)

    client = imapclient.IMAPClient(
        "127.0.0.1", port=ports[993], ssl=True, ssl_context=org.client_context(), timeout=10
    )
    try:
        client.login(f"alice@{DOMAIN}", PASSWORD)
        assert b"APPENDLIMIT=36700160" in client.capabilities()  # RFC 7889, 35 MB
        assert client.select_folder("INBOX")[b"EXISTS"] == 1
        client.idle()
        deliver(org, "second")
        responses = client.idle_check(timeout=10)
        client.idle_done()
        assert (2, b"EXISTS") in responses
        fetched = client.fetch([2], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert b"second" in fetched[2][b"BODY[HEADER.FIELDS (SUBJECT)]"]
    finally:
        client.logout()

    # Settings reach new connections; a refused value changes nothing.
    cli(data_dir, "imap", "settings", "--banner", "Welcome to the test IMAP")

    def banner_changed() -> bool:
        c = imapclient.IMAPClient(
            "127.0.0.1", port=ports[993], ssl=True, ssl_context=org.client_context(), timeout=10
        )
        try:
            return b"Welcome to the test IMAP" in c.welcome
        finally:
            c.shutdown()

    wait_for(banner_changed, timeout=10)
    with pytest.raises(AssertionError):
        cli(data_dir, "imap", "settings", "--auth-timeout", "60")  # RFC 9051: >= 30 min
    assert imap_ports(org) == ports

    cli(data_dir, "imap", "disable")
    wait_for(lambda: imap_ports(org) == {}, timeout=10)
    with pytest.raises(OSError):
        imapclient.IMAPClient(
            "127.0.0.1", port=ports[993], ssl=True, ssl_context=org.client_context(), timeout=3
        )


@pytest.mark.skipif(shutil.which("curl") is None, reason="apt-get install curl")
def test_curl_imaps(org: RunningServer, ca: trustme.CA, tmp_path: Path) -> None:
    """curl as an independent IMAP client: list the mailbox, fetch a message by UID."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cli(org.data_dir, "imap", "enable")
    wait_for(lambda: 993 in imap_ports(org), timeout=10)
    port = imap_ports(org)[993]
    deliver(org, "for curl")
    org.wait_inbox(f"alice@{DOMAIN}", 1)
    base = [
        "curl", "--silent", "--show-error", "--max-time", "20",
        "--cacert", str(tmp_path / "ca.pem"),
        "--resolve", f"localhost:{port}:127.0.0.1",
        "--user", f"alice@{DOMAIN}:{PASSWORD}",
    ]  # fmt: skip
    listing = subprocess.run(
        [*base, f"imaps://localhost:{port}/"], capture_output=True, text=True, timeout=30
    )
    assert listing.returncode == 0, listing.stderr
    assert "INBOX" in listing.stdout and "Sent Items" in listing.stdout
    fetched = subprocess.run(
        [*base, f"imaps://localhost:{port}/INBOX;UID=1"], capture_output=True, timeout=30
    )
    assert fetched.returncode == 0, fetched.stderr
    assert b"Subject: for curl" in fetched.stdout
