"""`postwerk ports` on an initialized data directory: the table, the JSON and the
nftables ruleset follow what the directory says (connectors, IMAP4/POP3 switches)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.conftest import (
    child_env,
    cli,
    init_data_dir,
    postwerk_command,
    start_server,
    stop_server,
)
from tests.integration.test_durability import start_serve


@pytest.fixture
def data_dir(tmp_path: Path, ca: trustme.CA) -> Path:
    path = tmp_path / "data"
    init_data_dir(path, ca)
    return path


def by_port(data_dir: Path) -> dict[tuple[int, str, str], dict[str, object]]:
    flows = json.loads(cli(data_dir, "ports", "--format", "json"))
    return {(f["port"], f["transport"], f["source"]): f for f in flows}


def test_json_follows_the_directory(data_dir: Path) -> None:
    flows = by_port(data_dir)
    imaps = flows[(993, "tcp", "clients (any)")]
    assert (imaps["state"], imaps["enabled"], imaps["listen_port"]) == ("disabled", False, None)
    inbound = flows[(25, "tcp", "Internet (any)")]
    assert inbound["service"] == 'receive connector "Default Frontend MAIL"'
    assert inbound["enabled"] is True
    cli(data_dir, "imap", "enable")
    cli(data_dir, "connector", "send", "new", "Internet", "--address-space", "*")
    flows = by_port(data_dir)
    assert flows[(993, "tcp", "clients (any)")]["enabled"] is True
    assert flows[(143, "tcp", "clients (any)")]["listen_port"] == 143
    outbound = flows[(25, "tcp", "Mailbox server MAIL")]
    assert outbound["service"] == 'send connector "Internet"' and outbound["enabled"] is True


def test_table_lists_every_row(data_dir: Path) -> None:
    lines = cli(data_dir, "ports").splitlines()
    assert lines[0].split()[:2] == ["port", "purpose"]
    assert len(lines) == 1 + 18  # the all-in-one rows (tests/unit/test_topology_flows.py)


@pytest.mark.skipif(shutil.which("nft") is None, reason="apt install nftables")
def test_nftables_output_passes_nft_check(data_dir: Path, tmp_path: Path) -> None:
    cli(data_dir, "pop", "enable")
    text = cli(data_dir, "ports", "--format", "nftables")
    assert "tcp dport 995 accept" in text and "tcp dport 993 accept" not in text
    path = tmp_path / "rules.nft"
    path.write_text(text)
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_server_list_after_init_and_while_serving(
    data_dir: Path, ca: trustme.CA, tmp_path: Path
) -> None:
    [entry] = json.loads(cli(data_dir, "server", "list", "--json"))
    assert (entry["name"], entry["fqdn"], entry["roles"]) == (
        "MAIL",
        "mail.example.test",
        ["cas", "mailbox"],
    )
    assert entry["running"] is False and entry["heartbeat_at"] == "never"
    org = start_server(data_dir, ca)
    try:
        [entry] = json.loads(cli(data_dir, "server", "list", "--json"))
        assert entry["running"] is True
        assert "running" in cli(data_dir, "server", "list")
    finally:
        stop_server(org)
    # A clean stop says so at once.
    [entry] = json.loads(cli(data_dir, "server", "list", "--json"))
    assert entry["running"] is False
    assert entry["heartbeat_at"] != "never" and entry["stopped_at"] != "never"
    assert "stopped (last seen " in cli(data_dir, "server", "list")


def run_cli(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*postwerk_command(), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**child_env(), **env},
        stdin=subprocess.DEVNULL,
    )


def test_connectivity_probes_what_should_be_open(tmp_path: Path, ca: trustme.CA) -> None:
    """A real `serve` on a random offset; `test connectivity` connects to each
    enabled inbound flow and checks its greeting, over TLS on 993/995."""
    data_dir = tmp_path / "served"
    init_data_dir(data_dir, ca)
    cli(data_dir, "imap", "enable")
    cli(data_dir, "pop", "enable")
    log = tmp_path / "serve.log"
    served = start_serve(data_dir, log)
    try:
        # serve took its offset on the command line; the probe reads the configuration.
        env_offset = {"POSTWERK_SERVER__PORT_OFFSET": str(served.offset)}
        result = run_cli(data_dir, env_offset, "test", "connectivity", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        probes = {(p["port"], p["source"]): p for p in json.loads(result.stdout)}
        for port in (25, 587, 143, 993, 110, 995):
            source = "Internet (any)" if port == 25 else "clients (any)"
            assert probes[(port, source)]["outcome"] == "passed", probes[(port, source)]
        assert "over TLS" in probes[(993, "clients (any)")]["detail"]
        assert probes[(443, "clients (any)")]["outcome"] == "skipped"
        assert probes[(2525, "Client Access server MAIL")]["outcome"] == "skipped"
    finally:
        served.terminate()
    # Stopped: every probe of an enabled flow fails, and the exit status says so.
    result = run_cli(data_dir, env_offset, "test", "connectivity")
    assert result.returncode == 1
    assert "failed" in result.stdout
