"""The admin listener (roles/admin.py): /healthz and /metrics over real HTTP on
loopback, read with urllib and curl while the server carries mail."""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
import urllib.error
import urllib.request

import pytest

from postwerk.observe import metrics
from tests.conftest import DOMAIN, PASSWORD, RunningServer

ALICE = f"alice@{DOMAIN}"


def get(org: RunningServer, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{org.server.admin.bound_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


def test_healthz_reports_each_role_ready(org: RunningServer) -> None:
    status, ctype, body = get(org, "/healthz")
    assert status == 200 and ctype.startswith("application/json")
    health = json.loads(body)
    assert health["status"] == "ready"
    assert set(health["roles"]) == {"cas", "mailbox"}
    assert health["roles"]["mailbox"] == {
        "live": True,
        "ready": True,
        "checks": {"database": True, "transport": True},
    }
    status, _, body = get(org, "/healthz?role=cas")
    assert status == 200 and set(json.loads(body)["roles"]) == {"cas"}
    assert get(org, "/healthz?role=edge")[0] == 404


def test_healthz_is_503_when_a_role_is_not_ready(org: RunningServer) -> None:
    org.call(org.server.transport.stop())  # the store driver stops
    status, _, body = get(org, "/healthz")
    assert status == 503
    health = json.loads(body)
    assert health["status"] == "not ready"
    assert health["roles"]["mailbox"]["checks"]["transport"] is False
    assert health["roles"]["cas"]["ready"] is True


def test_metrics_count_mail_and_show_gauges(org: RunningServer) -> None:
    before = metrics.SMTP_MESSAGES.labels(result="accepted")._value.get()
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail("someone@remote.test", [ALICE], b"Subject: counted\r\n\r\nhello\r\n")
        status, ctype, text = get(org, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert metrics.SMTP_MESSAGES.labels(result="accepted")._value.get() == before + 1
    assert f'postwerk_smtp_messages_received_total{{result="accepted"}} {before + 1}' in text
    assert "postwerk_smtp_commit_seconds_bucket" in text
    assert "postwerk_transport_mailbox_deliveries_total" in text
    # The SMTP session was still open during the scrape.
    assert 'postwerk_connections{service="smtp"} 1.0' in text
    assert 'postwerk_connections{service="imap4"} 0.0' in text


@pytest.mark.skipif(shutil.which("curl") is None, reason="apt install curl")
def test_curl_reads_both_endpoints(org: RunningServer) -> None:
    base = f"http://127.0.0.1:{org.server.admin.bound_port}"
    health = subprocess.run(
        ["curl", "-sS", "--fail", f"{base}/healthz"], capture_output=True, text=True, timeout=30
    )
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "ready"
    scrape = subprocess.run(
        ["curl", "-sS", "--fail", f"{base}/metrics"], capture_output=True, text=True, timeout=30
    )
    assert scrape.returncode == 0 and "# TYPE postwerk_connections gauge" in scrape.stdout
    wrong = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", f"{base}/metrics"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.stdout == "405"


def test_metrics_show_queue_depths(org: RunningServer) -> None:
    # No send connector: mail for another domain waits in Unreachable.
    with smtplib.SMTP("127.0.0.1", org.submission_port, timeout=10) as s:
        s.starttls(context=org.client_context())
        s.login(ALICE, PASSWORD)
        message = f"From: {ALICE}\r\nSubject: waits\r\n\r\nhello\r\n".encode()
        s.sendmail(ALICE, ["someone@elsewhere.test"], message)
    _, _, text = get(org, "/metrics")
    assert 'postwerk_transport_queue_messages{queue="Unreachable"} 1.0' in text
