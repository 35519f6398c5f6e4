"""Debian's swaks as an outside SMTP client: delivery, PIPELINING, STARTTLS + AUTH, refusals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DOMAIN, PASSWORD, RunningServer

SWAKS = shutil.which("swaks")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SWAKS is None, reason="swaks is not on PATH (apt-get install swaks)"),
]


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    assert SWAKS is not None
    return subprocess.run(
        [SWAKS, "--timeout", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def ca_file(org: RunningServer, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    org.ca.cert_pem.write_to_path(str(path))
    return str(path)


def subjects(org: RunningServer, address: str, count: int) -> list[str]:
    return [i.summary.get("subject", "") for i in org.wait_inbox(address, count)]


def test_port_25_delivery(org: RunningServer) -> None:
    result = swaks(
        "--to",
        f"alice@{DOMAIN}",
        "--from",
        "sender@remote.test",
        "--server",
        f"127.0.0.1:{org.smtp_port}",
        "--header",
        "Subject: swaks plain",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 2.6.0 " in result.stdout  # the answer to the final dot
    assert subjects(org, f"alice@{DOMAIN}", 1) == ["swaks plain"]
    raw = org.read_item(org.inbox(f"alice@{DOMAIN}")[0])
    assert raw.startswith(b"Return-Path: <sender@remote.test>\r\n")


def test_pipelining_to_several_recipients(org: RunningServer) -> None:
    result = swaks(
        "--pipeline",
        "--to",
        f"alice@{DOMAIN},team@{DOMAIN}",
        "--from",
        "sender@remote.test",
        "--server",
        f"127.0.0.1:{org.smtp_port}",
        "--header",
        "Subject: swaks pipelined",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # swaks sends MAIL, RCPT, RCPT and DATA in one batch only when PIPELINING is offered.
    assert "PIPELINING" in result.stdout
    assert subjects(org, f"alice@{DOMAIN}", 1) == ["swaks pipelined"]  # once, not twice
    assert subjects(org, f"bob@{DOMAIN}", 1) == ["swaks pipelined"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_starttls_auth(org: RunningServer, tmp_path: Path, mechanism: str) -> None:
    result = swaks(
        "-tls",
        "--tls-verify",
        "--tls-ca-path",
        ca_file(org, tmp_path),
        "--tls-sni",
        "mail.example.test",
        "--auth",
        mechanism,
        "--auth-user",
        f"alice@{DOMAIN}",
        "--auth-password",
        PASSWORD,
        "--from",
        f"alice@{DOMAIN}",
        "--to",
        f"bob@{DOMAIN}",
        "--server",
        f"127.0.0.1:{org.submission_port}",
        "--header",
        f"Subject: swaks {mechanism}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 " in result.stdout
    assert subjects(org, f"bob@{DOMAIN}", 1) == [f"swaks {mechanism}"]
    raw = org.read_item(org.inbox(f"bob@{DOMAIN}")[0])
    assert b"with ESMTPSA" in raw.split(b"\r\n\r\n", 1)[0]


def test_wrong_password_is_535(org: RunningServer) -> None:
    result = swaks(
        "-tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        f"alice@{DOMAIN}",
        "--auth-password",
        "not the password",
        "--from",
        f"alice@{DOMAIN}",
        "--to",
        f"bob@{DOMAIN}",
        "--server",
        f"127.0.0.1:{org.submission_port}",
    )
    assert result.returncode != 0
    assert "535" in result.stdout + result.stderr
    assert org.inbox(f"bob@{DOMAIN}") == []


def test_auth_without_tls_is_refused_on_587(org: RunningServer) -> None:
    result = swaks(
        "--auth",
        "LOGIN",
        "--auth-user",
        f"alice@{DOMAIN}",
        "--auth-password",
        PASSWORD,
        "--from",
        f"alice@{DOMAIN}",
        "--to",
        f"bob@{DOMAIN}",
        "--server",
        f"127.0.0.1:{org.submission_port}",
    )
    assert result.returncode != 0
    out = result.stdout + result.stderr
    # AUTH is not advertised before STARTTLS, so swaks gives up before sending a password.
    ehlo = _ehlo_reply(out)
    assert "STARTTLS" in ehlo and "AUTH" not in ehlo
    assert "did not advertise authentication" in out
    assert PASSWORD not in out
    assert org.inbox(f"bob@{DOMAIN}") == []


def test_anonymous_mail_on_587_is_refused(org: RunningServer) -> None:
    result = swaks(
        "--from",
        f"alice@{DOMAIN}",
        "--to",
        f"bob@{DOMAIN}",
        "--server",
        f"127.0.0.1:{org.submission_port}",
    )
    assert result.returncode != 0
    assert "530 5.7.57" in result.stdout
    assert org.inbox(f"bob@{DOMAIN}") == []


def _ehlo_reply(transcript: str) -> str:
    """The server lines of the (first) EHLO reply in a swaks transcript."""
    lines = transcript.splitlines()
    out = []
    seen_ehlo = False
    for line in lines:
        if line.startswith(" -> EHLO"):
            seen_ehlo = True
            continue
        if seen_ehlo:
            if line.startswith("<-"):
                out.append(line)
            elif out:
                break
    return "\n".join(out)
