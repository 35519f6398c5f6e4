"""A restart in the middle of a retry schedule loses nothing and sends nothing twice.

A real `postwerk serve` process, a local DNS server and an SMTP sink: the sink
refuses the first attempt with 451, the server is killed with SIGKILL while the
message waits for its retry, restarted, and the message must reach the sink
exactly once, with the attempt count carried over the restart.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from pathlib import Path

import pytest
import trustme

from tests import dnsserver
from tests.conftest import DOMAIN, cli, init_data_dir, wait_for
from tests.integration.test_durability import ServeProcess, start_serve
from tests.smtpsink import SmtpSink

pytestmark = pytest.mark.slow
local_dns = dnsserver.local_dns


def queued(data_dir: Path) -> list[dict[str, object]]:
    return list(json.loads(cli(data_dir, "queue", "messages", "--json")))


def test_kill_9_during_retry_schedule(
    tmp_path: Path,
    ca: trustme.CA,
    local_dns: dnsserver.LocalDns,
    request: pytest.FixtureRequest,
) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)
    cli(data_dir, "mailbox", "new", f"alice@{DOMAIN}", "--password-stdin", input="pw\n")
    servers: list[ServeProcess] = []

    def reap() -> None:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()

    request.addfinalizer(reap)
    env = {
        "POSTWERK_DNS__NAMESERVERS": local_dns.nameserver,
        "POSTWERK_DNS__TIMEOUT": "2",
        # The first retry comes 3 s after the failure: time enough to kill the server.
        "POSTWERK_TRANSPORT__GLITCH_RETRY_INTERVAL": "3",
    }
    log = tmp_path / "serve.log"
    with SmtpSink("127.0.0.10") as sink:
        sink.handler.data_replies = ["451 4.3.0 not now"]
        local_dns.add("remote.test", "MX", "10 mx.remote.test")
        local_dns.add("mx.remote.test", "A", "127.0.0.10")
        cli(
            data_dir,
            "connector", "send", "new", "Internet",
            "--address-spaces", "*", "--port", str(sink.port),
        )  # fmt: skip
        servers.append(start_serve(data_dir, log, env=env))
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with smtplib.SMTP("127.0.0.1", 587 + servers[-1].offset, timeout=10) as s:
            s.starttls(context=context)
            s.login(f"alice@{DOMAIN}", "pw")
            s.sendmail(
                f"alice@{DOMAIN}",
                ["friend@remote.test"],
                f"From: alice@{DOMAIN}\r\nSubject: survives\r\n\r\nhello\r\n".encode(),
            )

        def deferred() -> bool:
            rows = queued(data_dir)
            return bool(rows) and rows[0]["recipients"][0]["attempts"] == 1  # type: ignore[index]

        wait_for(deferred)  # the 451 is stored as the first failed attempt
        assert sink.messages == []
        servers[-1].kill9()
        assert queued(data_dir)[0]["recipients"][0]["attempts"] == 1  # type: ignore[index]

        servers.append(start_serve(data_dir, log, offset=servers[-1].offset, env=env))
        wait_for(lambda: len(sink.messages) == 1)
        wait_for(lambda: queued(data_dir) == [])
        time.sleep(1.0)  # nothing else turns up
        assert len(sink.messages) == 1
        assert b"Subject: survives" in sink.messages[0].data
        assert servers[-1].terminate() == 0, log.read_text()
