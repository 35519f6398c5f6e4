"""QUOTA (RFC 9208) from `postwerk mailbox set-quota`, and APPEND/COPY refused past it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import cli
from tests.integration.test_imap_condstore import Raw
from tests.integration.test_imap_service import (  # noqa: F401 (fixture)
    ALICE,
    ImapServer,
    imap,
)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ImapServer]:
    found: ImapServer = request.getfixturevalue("imap")
    yield found


def test_no_quota_no_root(server: ImapServer) -> None:
    a = Raw(server)
    try:
        caps = a.ok("CAPABILITY")[0].split()
        assert "QUOTA" in caps and "QUOTA=RES-STORAGE" in caps
        assert a.ok("GETQUOTAROOT INBOX")[0] == "* QUOTAROOT INBOX"
        assert a.cmd('GETQUOTA ""')[-1] == f"t{a.n} NO [NONEXISTENT] No such quota root"
        assert a.cmd("GETQUOTAROOT Nowhere")[-1].startswith(f"t{a.n} NO [NONEXISTENT]")
    finally:
        a.close()


def test_quota_reported_and_enforced(server: ImapServer) -> None:
    a = Raw(server)
    try:
        lines = a.ok("STATUS INBOX (SIZE)")
        used = int(lines[0].split("SIZE ")[1].rstrip(")"))
        out = cli(server.org.data_dir, "mailbox", "set-quota", ALICE, "20K")
        assert "20480 bytes" in out
        # The limit applies to the open session at once.
        lines = a.ok("GETQUOTAROOT INBOX")
        assert lines[0] == '* QUOTAROOT INBOX ""'
        assert lines[1] == f'* QUOTA "" (STORAGE {(used + 1023) // 1024} 20)'
        assert a.ok('GETQUOTA ""')[0] == lines[1]
        assert a.cmd('SETQUOTA "" (STORAGE 99999)')[-1].startswith(f"t{a.n} NO [NOPERM]")
        # An APPEND that would pass 20 KiB is refused before anything is stored.
        big = 20 * 1024 - used + 1
        a.sock.sendall(f"t99 APPEND Drafts {{{big}+}}\r\n".encode() + b"x" * big + b"\r\n")
        line = a.file.readline().decode().rstrip()
        assert line == "t99 NO [OVERQUOTA] Mailbox is over its quota"
        assert a.ok("STATUS Drafts (MESSAGES)")[0] == "* STATUS Drafts (MESSAGES 0)"
        a.ok("SELECT INBOX")
        # Copying the whole Inbox would double it: refused; moving costs nothing.
        cli(server.org.data_dir, "mailbox", "set-quota", ALICE, str(used + 10))
        assert a.cmd("COPY 1:* Drafts")[-1].startswith(f"t{a.n} NO [OVERQUOTA]")
        assert a.ok("MOVE 1 Drafts")[-1].startswith(f"t{a.n} OK")
        cli(server.org.data_dir, "mailbox", "set-quota", ALICE, "unlimited")
        assert a.ok("GETQUOTAROOT INBOX")[0] == "* QUOTAROOT INBOX"
        assert a.ok("COPY 1:* Drafts")[-1].startswith(f"t{a.n} OK [COPYUID")
    finally:
        a.close()


def test_set_quota_refuses_what_is_not_a_size(server: ImapServer) -> None:
    from click.testing import CliRunner

    from postwerk.cli.main import main

    for bad in ("lots", "12X", "", "1.5G"):
        result = CliRunner().invoke(
            main,
            ["mailbox", "set-quota", ALICE, bad, "--data-dir", str(server.org.data_dir)],
        )
        assert result.exit_code != 0 and "not a number of bytes" in result.output, bad
    negative = CliRunner().invoke(
        main, ["mailbox", "set-quota", "--data-dir", str(server.org.data_dir), ALICE, "--", "-5"]
    )
    assert negative.exit_code != 0
    assert "1048576 bytes" in cli(server.org.data_dir, "mailbox", "set-quota", ALICE, "1m")
