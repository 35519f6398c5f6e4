"""CONDSTORE and QRESYNC (RFC 7162) and ESEARCH (RFC 4731), as raw transcripts
over TLS against the real service, with a second session making the changes."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.conftest import PASSWORD
from tests.integration.test_imap_service import (  # noqa: F401 (fixture)
    ALICE,
    ImapServer,
    imap,
)


class Raw:
    """One IMAP session: send a tagged command, get every line up to its tagged reply."""

    def __init__(self, server: ImapServer) -> None:
        ctx = server.org.client_context()
        sock = socket.create_connection(("127.0.0.1", server.ssl_port), timeout=10)
        self.sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.n = 0
        assert self.file.readline().startswith(b"* OK")
        self.ok(f'LOGIN "{ALICE}" "{PASSWORD}"')

    def cmd(self, text: str) -> list[str]:
        self.n += 1
        tag = f"t{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            line = self.file.readline().decode()
            assert line, "connection closed"
            m = re.search(r"\{(\d+)\}\r\n$", line)
            if m:  # a literal: keep it inline
                line += self.file.read(int(m.group(1))).decode() + self.file.readline().decode()
            lines.append(line.rstrip("\r\n"))
            if line.startswith(tag + " "):
                return lines

    def ok(self, text: str) -> list[str]:
        lines = self.cmd(text)
        assert lines[-1].split(" ")[1] == "OK", lines
        return lines

    def close(self) -> None:
        try:
            self.cmd("LOGOUT")
        except (OSError, AssertionError, ssl.SSLError):
            pass
        self.sock.close()


def code_value(lines: list[str], name: str) -> int:
    for line in lines:
        m = re.search(rf"\[{name} (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no {name} in {lines}")


def modseqs(lines: list[str]) -> dict[int, int]:
    """UID -> MODSEQ from FETCH responses."""
    out = {}
    for line in lines:
        m = re.search(r"FETCH \(.*UID (\d+).*MODSEQ \((\d+)\)", line) or re.search(
            r"FETCH \(.*MODSEQ \((\d+)\).*UID (\d+)", line
        )
        if m and "UID" in line and line.index("UID") < line.index("MODSEQ"):
            out[int(m.group(1))] = int(m.group(2))
        elif m:
            out[int(m.group(2))] = int(m.group(1))
    return out


@pytest.fixture
def two(request: pytest.FixtureRequest) -> Iterator[tuple[Raw, Raw]]:
    server: ImapServer = request.getfixturevalue("imap")
    a, b = Raw(server), Raw(server)
    yield a, b
    a.close()
    b.close()


def test_capabilities_and_highestmodseq(two: tuple[Raw, Raw]) -> None:
    a, _ = two
    caps = a.ok("CAPABILITY")[0]
    for cap in ("CONDSTORE", "QRESYNC", "ESEARCH"):
        assert f" {cap}" in caps
    lines = a.ok("SELECT INBOX")
    assert code_value(lines, "HIGHESTMODSEQ") >= 3
    status = a.ok("STATUS INBOX (HIGHESTMODSEQ MESSAGES)")[0]
    assert f"HIGHESTMODSEQ {code_value(lines, 'HIGHESTMODSEQ')}" in status


def test_fetch_modseq_and_changedsince(two: tuple[Raw, Raw]) -> None:
    a, b = two
    lines = a.ok("SELECT INBOX (CONDSTORE)")
    highest = code_value(lines, "HIGHESTMODSEQ")
    every = modseqs(a.ok("UID FETCH 1:* (MODSEQ)"))
    assert sorted(every) == [1, 2, 3] and max(every.values()) == highest
    unchanged = a.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert unchanged == [f"t{a.n} OK UID FETCH completed"]
    b.ok("SELECT INBOX")
    b.ok("UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    # The other session's change arrives as an unsolicited FETCH with MODSEQ...
    noop = a.ok("NOOP")
    assert any("FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (" in line for line in noop), noop
    # ... and CHANGEDSINCE now returns exactly that message, MODSEQ added.
    changed = a.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert len(changed) == 2 and "UID 2" in changed[0] and "MODSEQ (" in changed[0]
    assert modseqs(changed)[2] > highest


def test_store_unchangedsince(two: tuple[Raw, Raw]) -> None:
    a, b = two
    a.ok("SELECT INBOX")
    every = modseqs(a.ok("UID FETCH 1:* (MODSEQ)"))
    b.ok("SELECT INBOX")
    b.ok("UID STORE 1 +FLAGS.SILENT (\\Answered)")
    # uid 1 changed after the MODSEQ a knows: it is left alone and named.
    known = max(every.values())
    lines = a.cmd(f"UID STORE 1:3 (UNCHANGEDSINCE {known}) +FLAGS (\\Seen)")
    assert lines[-1] == f"t{a.n} OK [MODIFIED 1] UID STORE completed", lines
    stored = [line for line in lines if "FETCH" in line and "\\Seen" in line]
    assert len(stored) == 2 and all("MODSEQ (" in line for line in stored)
    flags = a.ok("UID FETCH 1 (FLAGS)")
    assert "\\Seen" not in flags[-2] and "\\Answered" in flags[-2]
    # UNCHANGEDSINCE 0 always fails (RFC 7162 §3.1.3); .SILENT still reports MODSEQ.
    assert a.cmd("STORE 1 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Draft)")[-1].startswith(
        f"t{a.n} OK [MODIFIED 1]"
    )
    silent = a.ok("UID STORE 3 -FLAGS.SILENT (\\Seen)")
    assert len(silent) == 2 and re.search(r"FETCH \(UID 3 MODSEQ \(\d+\)\)", silent[0])


def test_search_modseq_and_esearch(two: tuple[Raw, Raw]) -> None:
    a, _ = two
    a.ok("SELECT INBOX")
    every = modseqs(a.ok("UID FETCH 1:* (MODSEQ)"))
    top = max(every.values())
    lines = a.ok(f"SEARCH MODSEQ {top}")
    assert lines[0] == f"* SEARCH {max(every, key=lambda u: every[u])} (MODSEQ {top})"
    assert a.ok("SEARCH RETURN (MIN MAX COUNT) ALL")[0] == (
        f'* ESEARCH (TAG "t{a.n}") MIN 1 MAX 3 COUNT 3'
    )
    assert a.ok("UID SEARCH RETURN () 2:3")[0] == f'* ESEARCH (TAG "t{a.n}") UID ALL 2:3'
    assert a.ok("SEARCH RETURN (COUNT MIN) DELETED")[0] == f'* ESEARCH (TAG "t{a.n}") COUNT 0'
    assert a.cmd("SEARCH RETURN (BOGUS) ALL")[-1].startswith(f"t{a.n} BAD")


def test_qresync_select_and_vanished(two: tuple[Raw, Raw]) -> None:
    a, b = two
    # QRESYNC must be enabled first (RFC 7162 §3.2.5).
    assert a.cmd("SELECT INBOX (QRESYNC (1 1))")[-1].startswith(f"t{a.n} BAD")
    assert a.ok("ENABLE QRESYNC")[0] == "* ENABLED QRESYNC"
    assert a.ok("ENABLE QRESYNC CONDSTORE")[0] == "* ENABLED"  # already on
    lines = a.ok("SELECT INBOX")
    validity, highest = code_value(lines, "UIDVALIDITY"), code_value(lines, "HIGHESTMODSEQ")
    a.ok("UNSELECT")
    # Another client deletes one message and flags another while a is away.
    b.ok("SELECT INBOX")
    b.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    b.ok("UID EXPUNGE 1")
    b.ok("UID STORE 3 +FLAGS.SILENT (\\Flagged)")
    lines = a.ok(f"SELECT INBOX (QRESYNC ({validity} {highest}))")
    assert "* VANISHED (EARLIER) 1" in lines
    fetched = [line for line in lines if "FETCH" in line]
    assert len(fetched) == 1 and "UID 3 FLAGS (\\Flagged) MODSEQ (" in fetched[0]
    # Known UIDs limit VANISHED; a wrong UIDVALIDITY gets a plain SELECT.
    a.ok("UNSELECT")
    lines = a.ok(f"SELECT INBOX (QRESYNC ({validity} {highest} 2:3))")
    assert not any("VANISHED" in line for line in lines)
    a.ok("UNSELECT")
    lines = a.ok(f"SELECT INBOX (QRESYNC ({validity + 1} {highest}))")
    assert not any("VANISHED" in line or "FETCH" in line for line in lines)
    # Live expunges are VANISHED now, not EXPUNGE; UID FETCH VANISHED reports history.
    b.ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.ok("UID EXPUNGE 2")
    noop = a.ok("NOOP")
    assert "* VANISHED 2" in noop and not any("EXPUNGE" in line for line in noop)
    history = a.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest} VANISHED)")
    assert history[0] == "* VANISHED (EARLIER) 1:2"
    assert a.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")[-1].startswith(f"t{a.n} BAD")


def test_resync_after_tombstones_are_pruned(request: pytest.FixtureRequest) -> None:
    """Tombstones older than `[database] tombstone_days` are pruned; a QRESYNC
    client and an open session that last looked before still learn exactly which
    UIDs vanished (computed by comparing UIDs)."""
    server: ImapServer = request.getfixturevalue("imap")
    a, b, c = Raw(server), Raw(server), Raw(server)
    try:
        a.ok("ENABLE QRESYNC")
        lines = a.ok("SELECT INBOX")
        validity, highest = code_value(lines, "UIDVALIDITY"), code_value(lines, "HIGHESTMODSEQ")
        a.ok("UNSELECT")
        c.ok("SELECT INBOX")  # stays open across the pruning
        b.ok("SELECT INBOX")
        b.ok("UID STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        b.ok("UID EXPUNGE 1,3")

        async def prune() -> int:
            mail = server.org.server.mailbox_backend.mail
            return await mail.prune_expunged(time.time() + 1)

        assert server.org.call(prune()) == 2
        lines = a.ok(f"SELECT INBOX (QRESYNC ({validity} {highest}))")
        assert "* VANISHED (EARLIER) 1,3" in lines
        a.ok("UNSELECT")
        lines = a.ok(f"SELECT INBOX (QRESYNC ({validity} {highest} 3:4))")
        assert "* VANISHED (EARLIER) 3" in lines
        # The open session is told of both expunges, highest sequence number first.
        noop = c.ok("NOOP")
        assert [x for x in noop if x.endswith("EXPUNGE")] == ["* 3 EXPUNGE", "* 1 EXPUNGE"]
        assert c.ok("UID SEARCH ALL")[0] == "* SEARCH 2"
    finally:
        for raw in (a, b, c):
            raw.close()
