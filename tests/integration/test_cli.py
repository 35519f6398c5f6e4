"""The CLI contract (DESIGN.md §3, docs/cli.md) through real `postwerk` processes."""

from __future__ import annotations

import json
import random
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import child_env, postwerk_command

pytestmark = pytest.mark.slow

DOMAIN = "example.test"
PASSWORD = "cli password with spaces "  # one line; a trailing space is part of it
REPO = Path(__file__).resolve().parents[2]


def run(
    *args: str, data_dir: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [*postwerk_command(), *args, *extra],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def ok(*args: str, data_dir: Path | None = None, input: str | None = None) -> str:
    result = run(*args, data_dir=data_dir, input=input)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def ok_json(*args: str, data_dir: Path) -> Any:
    return json.loads(ok(*args, "--json", data_dir=data_dir))


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("postwerk: "), lines[0]
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


@dataclass
class Initialized:
    data_dir: Path
    stdout: str


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Initialized:
    """`postwerk init` once for the module, with cheap hashing and one mailbox."""
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    args = ["init", "--domain", DOMAIN, "--hostname", "mail.example.test", "--bind", "127.0.0.1"]
    stdout = ok(*args, data_dir=data_dir)
    config = data_dir / "postwerk.toml"
    text = config.read_text()
    assert 'argon2_profile = "default"' in text
    config.write_text(text.replace('argon2_profile = "default"', 'argon2_profile = "cheap"'))
    ok("mailbox", "new", f"alice@{DOMAIN}", "--password-stdin", data_dir=data_dir, input=PASSWORD)
    return Initialized(data_dir, stdout)


# ---------------------------------------------------------------- init


def test_init_prints_dns_and_creates_the_server(org: Initialized) -> None:
    out = org.stdout
    assert re.search(r"^example\.test\.\s+\d+\s+IN\s+MX\s+10\s+mail\.example\.test\.$", out, re.M)
    assert re.search(r'^example\.test\.\s+\d+\s+IN\s+TXT\s+"v=spf1 [^"]*"$', out, re.M)
    d = org.data_dir
    assert (d / "postwerk.db").is_file()
    assert (d / "tls").is_dir()
    assert (d / "tls" / "server.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert (d / "tls" / "server.key").stat().st_mode & 0o077 == 0  # the key is private
    config = tomllib.loads((d / "postwerk.toml").read_text())
    assert config["server"]["hostname"] == "mail.example.test"
    assert config["server"]["bind"] == "127.0.0.1"


def test_init_twice_fails_and_changes_nothing(org: Initialized) -> None:
    before = (org.data_dir / "postwerk.toml").read_bytes()
    result = run("init", "--domain", "other.test", data_dir=org.data_dir)
    assert_one_line_error(result, "postwerk.toml")
    assert (org.data_dir / "postwerk.toml").read_bytes() == before


# ---------------------------------------------------------------- recipients


def test_domain_add_and_list(org: Initialized) -> None:
    ok("domain", "add", "relay.test", "--type", "internal-relay", data_dir=org.data_dir)
    domains = {d["name"]: d for d in ok_json("domain", "list", data_dir=org.data_dir)}
    assert domains[DOMAIN] == {"name": DOMAIN, "type": "authoritative", "default": True}
    assert domains["relay.test"] == {
        "name": "relay.test",
        "type": "internal-relay",
        "default": False,
    }


def test_mailbox_new_list_remove(org: Initialized) -> None:
    d = org.data_dir
    created = json.loads(
        ok(
            "mailbox",
            "new",
            f"carol@{DOMAIN}",
            "--password-stdin",
            "--json",
            data_dir=d,
            input="pw\n",
        )
    )
    assert created["address"] == f"carol@{DOMAIN}"
    listed = [m["address"] for m in ok_json("mailbox", "list", data_dir=d)]
    assert f"carol@{DOMAIN}" in listed and f"alice@{DOMAIN}" in listed
    ok("mailbox", "remove", f"carol@{DOMAIN}", data_dir=d)
    assert f"carol@{DOMAIN}" not in [m["address"] for m in ok_json("mailbox", "list", data_dir=d)]


def test_alias_add_list_remove(org: Initialized) -> None:
    d = org.data_dir
    ok("alias", "add", f"alice@{DOMAIN}", f"a.l@{DOMAIN}", data_dir=d)
    assert {"alias": f"a.l@{DOMAIN}", "owner": f"alice@{DOMAIN}"} in ok_json(
        "alias", "list", data_dir=d
    )
    ok("alias", "remove", f"a.l@{DOMAIN}", data_dir=d)
    assert all(row["alias"] != f"a.l@{DOMAIN}" for row in ok_json("alias", "list", data_dir=d))


def test_group_new_add_member_list(org: Initialized) -> None:
    d = org.data_dir
    ok("group", "new", f"staff@{DOMAIN}", data_dir=d)
    ok("group", "add-member", f"staff@{DOMAIN}", f"alice@{DOMAIN}", data_dir=d)
    ok("group", "add-member", f"staff@{DOMAIN}", "partner@remote.test", data_dir=d)
    (group,) = [
        g for g in ok_json("group", "list", data_dir=d) if g["address"] == f"staff@{DOMAIN}"
    ]
    assert sorted(group["members"]) == [f"alice@{DOMAIN}", "partner@remote.test"]


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (("mailbox", "remove", f"nobody@{DOMAIN}"), None, f"nobody@{DOMAIN}"),
        (("message", "list", f"nobody@{DOMAIN}"), None, f"nobody@{DOMAIN}"),
        (("mailbox", "new", "x@not-accepted.test", "--password-stdin"), "pw\n", "accepted"),
        (("mailbox", "new", f"alice@{DOMAIN}", "--password-stdin"), "pw\n", f"alice@{DOMAIN}"),
        (("group", "new", f"ALICE@{DOMAIN}"), None, f"alice@{DOMAIN}"),
        (("connector", "receive", "set", "Nope", "--max-message-size", "5"), None, "Nope"),
    ],
    ids=[
        "unknown-mailbox",
        "unknown-mailbox-list",
        "foreign-domain",
        "duplicate",
        "dup-case",
        "connector",
    ],
)
def test_errors_are_one_line_exit_1(
    org: Initialized, args: tuple[str, ...], stdin: str | None, fragment: str
) -> None:
    assert_one_line_error(run(*args, data_dir=org.data_dir, input=stdin), fragment)


def test_uninitialized_data_dir_is_one_line_exit_1(tmp_path: Path) -> None:
    assert_one_line_error(run("mailbox", "list", data_dir=tmp_path / "none"), "postwerk init")


# ---------------------------------------------------------------- connectors


def test_receive_connectors_are_exchanges_defaults(org: Initialized) -> None:
    connectors = {
        c["name"]: c for c in ok_json("connector", "receive", "list", data_dir=org.data_dir)
    }
    default = connectors["Default Frontend MAIL"]
    client = connectors["Client Frontend MAIL"]
    assert {b.rsplit(":", 1)[1] for b in default["bindings"]} == {"25"}
    assert {b.rsplit(":", 1)[1] for b in client["bindings"]} == {"587"}
    assert default["max_message_size"] == 36 * 1024 * 1024
    assert client["max_message_size"] == 35 * 1024 * 1024
    assert default["max_recipients_per_message"] == 200
    assert client["max_recipients_per_message"] == 200
    assert "AnonymousUsers" in default["permission_groups"]
    assert client["permission_groups"] == ["ExchangeUsers"]
    assert default["bound"] and client["bound"] and default["enabled"] and client["enabled"]


def test_receive_connector_set_persists(org: Initialized) -> None:
    d = org.data_dir
    ok("connector", "receive", "set", "Default MAIL", "--max-message-size", "1234567", data_dir=d)
    connectors = {c["name"]: c for c in ok_json("connector", "receive", "list", data_dir=d)}
    assert connectors["Default MAIL"]["max_message_size"] == 1234567
    assert connectors["Default Frontend MAIL"]["max_message_size"] == 36 * 1024 * 1024


# ---------------------------------------------------------------- serve


@dataclass
class Served:
    data_dir: Path
    offset: int
    proc: subprocess.Popen[str]
    message_id: str = ""


def start_serve(data_dir: Path) -> Served:
    """`serve` on a random port offset; retry when a port is taken."""
    pid_file = data_dir / "postwerk.pid"
    for _ in range(10):
        offset = random.randint(20000, 40000)
        proc = subprocess.Popen(
            [
                *postwerk_command(),
                "serve",
                "--data-dir",
                str(data_dir),
                "--port-offset",
                str(offset),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if pid_file.read_text().strip() == str(proc.pid):
                    return Served(data_dir, offset, proc)
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
        if "cannot listen" not in err:
            pytest.fail(f"serve failed: {err}")
    pytest.fail("no free port offset found")


def stop(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.kill()
    served.proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def served(org: Initialized) -> Iterator[Served]:
    """A serving server that has taken one local and one external (Unreachable) message."""
    s = start_serve(org.data_dir)
    try:
        msg = EmailMessage()
        msg["From"] = "Rémy Sender <remy@remote.test>"
        msg["To"] = f"alice@{DOMAIN}"
        msg["Subject"] = "cli inbound"
        msg["Message-ID"] = s.message_id = f"<cli-{time.time_ns()}@remote.test>"
        msg.set_content("hello\n")
        with smtplib.SMTP("127.0.0.1", 25 + s.offset, timeout=10) as smtp:
            smtp.send_message(msg, from_addr="remy@remote.test", to_addrs=[f"alice@{DOMAIN}"])
        out = EmailMessage()
        out["From"] = f"alice@{DOMAIN}"
        out["To"] = "friend@elsewhere.test"
        out["Subject"] = "cli outbound"
        out.set_content("bye\n")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # init's self-signed certificate
        with smtplib.SMTP("127.0.0.1", 587 + s.offset, timeout=10) as smtp:
            smtp.starttls(context=context)
            smtp.login(f"alice@{DOMAIN}", PASSWORD)  # the line --password-stdin read
            smtp.send_message(out)
        yield s
    finally:
        stop(s)


def test_message_list_json(org: Initialized, served: Served) -> None:
    deadline = time.monotonic() + 15
    while not (rows := ok_json("message", "list", f"alice@{DOMAIN}", data_dir=org.data_dir)):
        assert time.monotonic() < deadline, "not delivered"
        time.sleep(0.1)
    assert isinstance(rows, list)
    (row,) = [r for r in rows if r["subject"] == "cli inbound"]
    assert {"folder", "uid", "subject", "from", "size"} <= row.keys()
    assert row["folder"] == "Inbox"
    assert isinstance(row["uid"], int) and row["uid"] >= 1
    assert row["subject"] == "cli inbound"
    assert "Rémy" in row["from"] or "remy@remote.test" in row["from"]
    assert isinstance(row["size"], int) and row["size"] > 100
    sent = ok_json(
        "message", "list", f"alice@{DOMAIN}", "--folder", "Sent Items", data_dir=org.data_dir
    )
    assert sent == []


def test_track_json(org: Initialized, served: Served) -> None:
    d = org.data_dir
    deadline = time.monotonic() + 15
    while True:
        events = ok_json("track", "--message-id", served.message_id, data_dir=d)
        if any(e["event_id"] == "DELIVER" for e in events) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for e in events:
        assert {"timestamp", "event_id", "message_id", "sender", "recipients"} <= e.keys()
        assert isinstance(e["timestamp"], float) and isinstance(e["recipients"], list)
        assert e["message_id"] == served.message_id
        assert e["sender"] == "remy@remote.test"
    kinds = [e["event_id"] for e in events]
    assert kinds[0] == "RECEIVE" and "DELIVER" in kinds, kinds
    assert events[0]["recipients"] == [f"alice@{DOMAIN}"]
    deferred = ok_json("track", "--event-id", "DEFER", data_dir=d)
    assert [e["recipients"] for e in deferred] == [["friend@elsewhere.test"]]


def test_queue_list_json(org: Initialized, served: Served) -> None:
    queues = ok_json("queue", "list", data_dir=org.data_dir)
    assert isinstance(queues, list)
    for q in queues:
        assert {"name", "status", "count"} <= q.keys()
    unreachable = [q for q in queues if q["name"] == "Unreachable"]
    assert len(unreachable) == 1 and unreachable[0]["count"] == 1, queues
    assert isinstance(unreachable[0]["status"], str)


def test_a_second_server_on_the_same_data_dir_exits_1(org: Initialized, served: Served) -> None:
    # The first one holds postwerk.lock; the second must not touch its files.
    (org.data_dir / "blobs" / "tmp" / "in-progress.tmp").write_bytes(b"being written")
    args = ["serve", "--data-dir", str(org.data_dir), "--port-offset", str(served.offset + 1)]
    result = subprocess.run(
        [*postwerk_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(result, f"a server already runs on {org.data_dir}")
    assert str(served.proc.pid) in result.stderr
    assert (org.data_dir / "blobs" / "tmp" / "in-progress.tmp").exists()
    (org.data_dir / "blobs" / "tmp" / "in-progress.tmp").unlink()


def test_serve_exits_1_with_one_line_when_a_port_is_taken(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("ports") / "data"
    ok("init", "--domain", DOMAIN, "--bind", "127.0.0.1", data_dir=data_dir)
    for _ in range(20):
        offset = random.randint(20000, 40000)
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", 587 + offset))
            blocker.listen()
            break
        except OSError:
            blocker.close()
    else:
        pytest.fail("no free port to block")
    with blocker:
        args = ["serve", "--data-dir", str(data_dir), "--port-offset", str(offset)]
        result = subprocess.run(
            [*postwerk_command(), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"postwerk: cannot listen on 127.0.0.1:{587 + offset}"), lines[0]
    assert "Traceback" not in result.stderr


def test_admin_verbs_do_not_disturb_a_message_in_flight(org: Initialized, served: Served) -> None:
    """docs/cli.md: every verb works against a running server. A body bigger than the blob
    writer's buffer is on disk in blobs/tmp/ mid-DATA; a CLI call must not remove it."""
    with socket.create_connection(("127.0.0.1", 25 + served.offset), timeout=10) as sock:
        replies = sock.makefile("rb")

        def reply() -> bytes:
            while (line := replies.readline())[3:4] == b"-":
                pass
            return line

        assert reply().startswith(b"220")
        for command, code in (
            (b"EHLO cli.remote.test", b"250"),
            (b"MAIL FROM:<big@remote.test>", b"250"),
            (f"RCPT TO:<alice@{DOMAIN}>".encode(), b"250"),
            (b"DATA", b"354"),
        ):
            sock.sendall(command + b"\r\n")
            assert reply().startswith(code)
        sock.sendall(b"Subject: in flight\r\n\r\n" + (b"z" * 998 + b"\r\n") * 600)
        tmp = org.data_dir / "blobs" / "tmp"
        deadline = time.monotonic() + 10
        while not any(tmp.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        ok("mailbox", "list", data_dir=org.data_dir)
        sock.sendall(b".\r\n")
        assert reply().startswith(b"250 "), "the CLI broke a message being received"
        sock.sendall(b"QUIT\r\n")


def test_serve_sigterm_exits_0_and_removes_pid_file(org: Initialized, served: Served) -> None:
    # Last in this module: the listing tests above read the data the server took.
    pid_file = org.data_dir / "postwerk.pid"
    assert pid_file.read_text().strip() == str(served.proc.pid)
    served.proc.send_signal(signal.SIGTERM)
    _, err = served.proc.communicate(timeout=30)
    assert served.proc.returncode == 0, err
    assert not pid_file.exists()
    assert "Traceback" not in err


# ---------------------------------------------------------------- config


def test_config_reference_is_the_committed_doc() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text("utf-8")
    assert ok("config", "reference") == committed, "docs/configuration.md is stale: run `make docs`"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["new", "Bad"], "--address-spaces is required"),
        (["new", "Bad", "--address-spaces", "x..y"], "invalid domain"),
        (["new", "Bad", "--address-spaces", "*", "--smart-hosts", "h:70000"], "invalid port"),
        (["new", "Bad", "--address-spaces", "*", "--auth-user", "u"], "--auth-password-stdin"),
        (["set", "Nope", "--port", "26"], "no send connector named"),
        (["remove", "Nope"], "not found"),
    ],
)
def test_send_connector_errors_are_one_line(
    org: Initialized, args: list[str], fragment: str
) -> None:
    assert_one_line_error(run("connector", "send", *args, data_dir=org.data_dir), fragment)
    assert "Bad" not in ok("connector", "send", "list", data_dir=org.data_dir)
