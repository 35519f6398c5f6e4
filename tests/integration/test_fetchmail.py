"""fetchmail pulls a mailbox over POP3S from a running server, then over STLS.

Debian's fetchmail is a real, strict POP3 client (UIDL, TOP/RETR, DELE, QUIT;
certificate checking against the test CA). The messages it hands to its MDA must
be byte for byte what was delivered (after the Received/Return-Path lines the
server and fetchmail add), and with `nokeep` the Inbox is empty afterwards.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("fetchmail") is None, reason="apt-get install fetchmail"),
]


def pop_ports(org: RunningServer) -> dict[int, int]:
    async def read() -> dict[int, int]:
        return {k: v for k, v in org.server.ports.items() if k in (110, 995)}

    return org.call(read())


def deliver(org: RunningServer, subject: str, body: str) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail(
            "someone@remote.test",
            [f"alice@{DOMAIN}"],
            f"From: someone@remote.test\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode(),
        )


def run_fetchmail(tmp_path: Path, port: int, options: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 with proto POP3 port {port} uidl\n"
        f'  user "alice@{DOMAIN}" there with password "{PASSWORD}" is "nobody" here\n'
        f"  options {options} sslcertck sslcommonname localhost"
        f' sslcertfile "{tmp_path / "ca.pem"}" fetchall nokeep\n'
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    return subprocess.run(
        ["fetchmail", "--nodetach", "-f", str(rc), "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_fetchmail_pop3s_then_stls(org: RunningServer, ca: trustme.CA, tmp_path: Path) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cli(org.data_dir, "pop", "enable")
    wait_for(lambda: set(pop_ports(org)) == {110, 995}, timeout=10)
    ports = pop_ports(org)

    deliver(org, "one", ".a dotted line\r\nplain")
    deliver(org, "two", "second body")
    org.wait_inbox(f"alice@{DOMAIN}", 2)

    done = run_fetchmail(tmp_path, ports[995], "ssl")
    assert done.returncode == 0, done.stdout + done.stderr
    got = sorted((tmp_path / "out").iterdir())
    assert len(got) == 2
    texts = [p.read_bytes() for p in got]
    assert any(
        b"Subject: one" in t and b"\n.a dotted line\n" in t.replace(b"\r\n", b"\n") for t in texts
    )
    assert any(b"Subject: two" in t and b"second body" in t for t in texts)
    wait_for(lambda: org.inbox(f"alice@{DOMAIN}") == [], timeout=10)  # nokeep: deleted at QUIT

    # Plain POP3 with STLS on 110 (fetchmail's sslproto TLS1+ with sslcertck).
    for p in got:
        p.unlink()
    deliver(org, "three", "over stls")
    org.wait_inbox(f"alice@{DOMAIN}", 1)
    done = run_fetchmail(tmp_path, ports[110], "sslproto 'TLS1.2+'")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "STLS" in done.stdout + done.stderr
    [only] = list((tmp_path / "out").iterdir())
    assert b"over stls" in only.read_bytes()
