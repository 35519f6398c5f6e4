"""The queue viewer against a running server: list, show, suspend, resume, retry,
remove (with and without NDR), and the Poison queue with resubmit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from postwerk.transport.dns import Resolver
from postwerk.transport.retry import RetryPolicy
from tests import dnsserver
from tests.conftest import DOMAIN, RunningServer, cli, wait_for
from tests.integration.test_outbound import events
from tests.integration.test_smtp_submission import message, submission
from tests.smtpsink import SmtpSink

local_dns = dnsserver.local_dns


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink("127.0.0.8") as s:
        yield s


@pytest.fixture
def relay(org: RunningServer, local_dns: dnsserver.LocalDns, sink: SmtpSink) -> RunningServer:
    """Mail for remote.test goes to the sink; retries come quickly."""
    assert org.server.outbound is not None
    org.server.outbound.resolver = Resolver(local_dns.config(timeout=1.0))
    org.server.outbound.poll_seconds = 0.1
    org.server.outbound.policy = RetryPolicy(glitch_interval=0.2)
    org.server.transport.poll_seconds = 0.1
    local_dns.add("remote.test", "MX", "10 mx.remote.test")
    local_dns.add("mx.remote.test", "A", "127.0.0.8")
    return org


def q(org: RunningServer, *args: str, input: str | None = None) -> Any:
    return json.loads(cli(org.data_dir, "queue", *args, "--json", input=input))


def send(org: RunningServer, to: str, subject: str) -> str:
    with submission(org) as s:
        s.send_message(message(f"alice@{DOMAIN}", to, subject), to_addrs=[to])
    listed = q(org, "messages")
    return str(next(m["id"] for m in listed if m["subject"] == subject))


def connector(org: RunningServer, sink: SmtpSink, *extra: str) -> None:
    cli(
        org.data_dir,
        "connector", "send", "new", "Internet",
        "--address-spaces", "*", "--port", str(sink.port), *extra,
    )  # fmt: skip


def test_suspend_holds_and_resume_releases(relay: RunningServer, sink: SmtpSink) -> None:
    org = relay
    connector(org, sink, "--disabled")  # nothing leaves while we look
    queue_id = send(org, "friend@remote.test", "held")
    shown = q(org, "show", queue_id)
    assert shown["recipients"][0]["status"] in ("ready", "unreachable")
    suspended = q(org, "suspend", queue_id)
    assert suspended["recipients"][0]["status"] == "suspended"
    assert {x["name"]: x["status"] for x in q(org, "list")}["Unreachable"] == "Suspended"
    cli(org.data_dir, "connector", "send", "set", "Internet", "--enabled")
    org.server.outbound.wake()  # type: ignore[union-attr]
    import time

    time.sleep(1.0)
    assert sink.messages == []  # suspended: routing changes do not move it either
    resumed = q(org, "resume", queue_id)
    assert resumed["recipients"][0]["status"] == "ready"
    assert resumed["recipients"][0]["queue"] == "smtp:Internet:remote.test"
    wait_for(lambda: len(sink.messages) == 1)
    # The sink has the message before the server commits the attempt's outcome
    # (and its SEND event): wait for the commit, not only for the delivery.
    wait_for(lambda: "SEND" in set(events(org, "friend@remote.test")))
    assert {"SUSPEND", "RESUME", "SEND"} <= set(events(org, "friend@remote.test"))


def test_retry_queue_sends_now(relay: RunningServer, sink: SmtpSink) -> None:
    org = relay
    assert org.server.outbound is not None
    org.server.outbound.policy = RetryPolicy(glitch_interval=3600)  # would wait an hour
    sink.handler.data_replies = ["451 4.3.0 busy"]
    connector(org, sink)
    send(org, "friend@remote.test", "retry me")
    wait_for(lambda: "DEFER" in events(org, "friend@remote.test"))
    queues = {x["name"]: x for x in q(org, "list")}
    assert queues["smtp:Internet:remote.test"]["status"] == "Retry"
    assert "451 4.3.0 busy" in queues["smtp:Internet:remote.test"]["last_error"]
    assert q(org, "retry", "smtp:Internet:remote.test") == {
        "queue": "smtp:Internet:remote.test",
        "messages": 1,
    }
    wait_for(lambda: len(sink.messages) == 1)
    assert "RETRY" in events(org, "friend@remote.test")


@pytest.mark.parametrize("with_ndr", [True, False])
def test_remove_message(relay: RunningServer, sink: SmtpSink, with_ndr: bool) -> None:
    org = relay
    queue_id = send(org, "friend@remote.test", "unwanted")  # no connector: Unreachable
    flag = "--with-ndr" if with_ndr else "--without-ndr"
    removed = q(org, "remove", queue_id, flag)
    assert removed["ndr"] is with_ndr
    assert q(org, "messages") == []
    assert "FAIL" in events(org, "friend@remote.test")
    if with_ndr:
        ndr = org.wait_inbox(f"alice@{DOMAIN}", 1)
        data = org.read_item(ndr[0])
        assert b"Subject: Undeliverable: unwanted" in data
        assert b"QUEUE.Admin" in data
    else:
        import time

        time.sleep(0.5)
        assert org.inbox(f"alice@{DOMAIN}") == []


def test_unknown_message_and_queue_are_one_line_errors(relay: RunningServer) -> None:
    import subprocess
    import sys

    for args in (["show", "nope"], ["retry", "smtp:Nope"], ["remove", "nope"]):
        result = subprocess.run(
            [sys.executable, "-m", "postwerk.cli.main", "queue", *args],
            env={"POSTWERK_DATA_DIR": str(relay.data_dir), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("postwerk: ")


def test_poison_message_waits_for_resubmit(relay: RunningServer, sink: SmtpSink) -> None:
    org = relay
    outbound = org.server.outbound
    assert outbound is not None
    real_send = outbound.client.send

    async def crash(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("a bug in the delivery path")

    outbound.client.send = crash  # type: ignore[method-assign]
    connector(org, sink)
    queue_id = send(org, "friend@remote.test", "poison")
    wait_for(lambda: {x["name"] for x in q(org, "list")} == {"Poison"})
    assert "POISONMESSAGE" in events(org, "friend@remote.test")
    outbound.client.send = real_send  # type: ignore[method-assign]
    import time

    time.sleep(0.5)
    assert sink.messages == []  # never retried by itself
    assert q(org, "resubmit", queue_id)["recipients"][0]["status"] == "ready"
    wait_for(lambda: len(sink.messages) == 1)
    wait_for(lambda: q(org, "messages") == [])


def test_resume_releases_a_quarantined_message(relay: RunningServer, sink: SmtpSink) -> None:
    """A row an agent quarantined goes back to the next hop it had, not a fresh route."""
    import dataclasses
    import time

    from postwerk.store.records import RecipientStatus, TransportCommit
    from postwerk.transport.agents import QUARANTINE_HOP

    org = relay
    connector(org, sink, "--disabled")
    queue_id = send(org, "friend@remote.test", "quarantined")

    async def quarantine() -> None:
        queue = org.server.backend.sql.queue
        rows = await queue.recipients(queue_id)
        held = [
            dataclasses.replace(
                r,
                status=RecipientStatus.SUSPENDED,
                next_hop=QUARANTINE_HOP,
                params={**r.params, "quarantine_next_hop": "smtp:Internet:remote.test"},
            )
            for r in rows
        ]
        await org.server.backend.sql.transport.commit(TransportCommit(update=tuple(held)))

    org.call(quarantine())
    assert "Quarantine" in {x["name"] for x in q(org, "list")}
    cli(org.data_dir, "connector", "send", "set", "Internet", "--enabled")
    time.sleep(0.5)
    assert sink.messages == []
    resumed = q(org, "resume", queue_id)
    assert resumed["recipients"][0]["next_hop"] == "smtp:Internet:remote.test"
    wait_for(lambda: len(sink.messages) == 1)
