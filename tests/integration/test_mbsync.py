"""Debian's isync (`mbsync`) as an outside IMAP client: a two-way sync over IMAPS.

mbsync mirrors alice's IMAP account into a local Maildir and back: messages are
pulled with their bytes, local flag changes and deletions are pushed, server-side
flag changes and new mail are pulled on the next run, and a new local folder is
created on the server with `Create Both`. Server state is checked with imaplib.
"""

from __future__ import annotations

import email
import imaplib
import re
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DOMAIN, PASSWORD, RunningServer, cli, wait_for

MBSYNC = shutil.which("mbsync")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MBSYNC is None, reason="mbsync is not on PATH (apt-get install isync)"),
]

ALICE = f"alice@{DOMAIN}"


def imap_ports(org: RunningServer) -> dict[int, int]:
    async def read() -> dict[int, int]:
        return {k: v for k, v in org.server.ports.items() if k in (143, 993)}

    return org.call(read())


def message(subject: str) -> bytes:
    return (
        f"From: someone@remote.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@remote.test>\r\n\r\n"
        f"body of {subject}\r\nsecond line\r\n"
    ).encode()


def deliver(org: RunningServer, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", org.smtp_port, timeout=10) as s:
        s.sendmail("someone@remote.test", [ALICE], message(subject))


class Sync:
    """An mbsync configuration in `tmp_path` for alice, and helpers to look at both sides."""

    def __init__(self, org: RunningServer, tmp_path: Path) -> None:
        self.org = org
        cli(org.data_dir, "imap", "enable")
        wait_for(lambda: set(imap_ports(org)) == {143, 993}, timeout=15)
        self.port = imap_ports(org)[993]
        base = tmp_path / "mbsync"
        base.mkdir()
        ca_pem = base / "ca.pem"
        org.ca.cert_pem.write_to_path(str(ca_pem))
        self.maildir = base / "mail"
        self.maildir.mkdir()  # mbsync does not create the store root itself
        self.inbox = base / "inbox"
        self.config = base / "mbsyncrc"
        # Host localhost, not 127.0.0.1: mbsync 1.4 matches the certificate's DNS names
        # only ("certificate owner does not match hostname 127.0.0.1" despite the IP SAN).
        # localhost may resolve to ::1 first; mbsync then falls back to 127.0.0.1.
        self.config.write_text(
            f"""\
IMAPAccount alice
Host localhost
Port {self.port}
User {ALICE}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {ca_pem}
AuthMechs LOGIN
Timeout 20

IMAPStore remote
Account alice

MaildirStore local
Path {self.maildir}/
Inbox {self.inbox}
SubFolders Verbatim

Channel alice
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
Remove None
SyncState *
"""
        )

    def run(self) -> str:
        assert MBSYNC is not None
        done = subprocess.run(
            [MBSYNC, "-V", "-c", str(self.config), "-a"],
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )
        output = f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        assert done.returncode == 0, output
        return output

    def local(self, folder: Path | None = None) -> dict[str, Path]:
        """Messages of a local Maildir (the inbox by default), by Subject."""
        found: dict[str, Path] = {}
        for sub in ("new", "cur"):
            for path in sorted((folder or self.inbox).joinpath(sub).iterdir()):
                msg = email.message_from_bytes(path.read_bytes())
                found[str(msg["Subject"])] = path
        return found

    def imap(self) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", self.port, ssl_context=self.org.client_context(), timeout=15
        )
        client.login(ALICE, PASSWORD)
        return client


def without_tuid(data: bytes) -> bytes:
    """`data` less the one `X-TUID:` line mbsync 1.4 puts last in the header it copies."""
    header, sep, body = data.partition(b"\n\n")
    lines = header.split(b"\n")
    assert lines[-1].startswith(b"X-TUID: "), header
    assert not any(line.startswith(b"X-TUID") for line in lines[:-1]), header
    return b"\n".join(lines[:-1]) + sep + body


def maildir_flags(path: Path) -> str:
    return path.name.rpartition(":2,")[2] if ":2," in path.name else ""


def set_local_flags(path: Path, flags: str) -> Path:
    """Give a Maildir message the info `:2,<flags>` (sorted) and move it to cur/."""
    base = path.name.partition(":2,")[0]
    target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    path.rename(target)
    return target


def server_messages(client: imaplib.IMAP4_SSL, folder: str = "INBOX") -> dict[str, set[str]]:
    """Subject -> flags of the messages in `folder`, read over IMAP."""
    typ, data = client.select(folder, readonly=True)
    assert typ == "OK", data
    if int(data[0] or 0) == 0:
        return {}
    typ, fetched = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", fetched
    result: dict[str, set[str]] = {}
    for part in fetched:
        if not isinstance(part, tuple):
            continue
        meta, header = part
        flags = re.search(rb"FLAGS \(([^)]*)\)", meta)
        assert flags is not None, meta
        subject = email.message_from_bytes(header)["Subject"]
        result[str(subject)] = set(flags.group(1).decode().split())
    return result


def server_bodies(client: imaplib.IMAP4_SSL, folder: str = "INBOX") -> dict[str, bytes]:
    """Subject -> the full message bytes the server serves (BODY.PEEK[])."""
    typ, data = client.select(folder, readonly=True)
    assert typ == "OK", data
    typ, fetched = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    assert typ == "OK", fetched
    bodies: dict[str, bytes] = {}
    for part in fetched:
        if isinstance(part, tuple):
            bodies[str(email.message_from_bytes(part[1])["Subject"])] = part[1]
    return bodies


@pytest.fixture
def synced(org: RunningServer, tmp_path: Path) -> Sync:
    """IMAP enabled, three messages delivered to alice, and a first mbsync run done."""
    sync = Sync(org, tmp_path)
    for n in (1, 2, 3):
        deliver(org, f"message {n}")
    assert len(org.wait_inbox(ALICE, 3)) == 3
    sync.run()
    return sync


def test_pull_copies_messages_with_their_bytes(synced: Sync) -> None:
    local = synced.local()
    assert sorted(local) == ["message 1", "message 2", "message 3"]
    client = synced.imap()
    try:
        served = server_bodies(client)
    finally:
        client.logout()
    assert sorted(served) == sorted(local)
    for subject, path in local.items():
        # The server's bytes, with LF line ends (mbsync's Maildir format) and mbsync's
        # own X-TUID tracking header added as the header's last line.
        assert without_tuid(path.read_bytes()) == served[subject].replace(b"\r\n", b"\n")
        # What the server serves is what was sent, after its trace header fields.
        sent = message(subject)
        assert served[subject].endswith(sent[sent.index(b"From:") :]), served[subject]
        assert maildir_flags(path) == "", path.name  # unseen on the server, unseen here
    # ... and the same bytes the server holds in its store.
    items = synced.org.inbox(ALICE)
    stored = {synced.org.read_item(i).replace(b"\r\n", b"\n") for i in items}
    assert {without_tuid(p.read_bytes()) for p in local.values()} == stored
    # A second run finds both sides in step: no duplicates either way.
    synced.run()
    assert synced.local() == local
    assert len(synced.org.inbox(ALICE)) == 3


def test_local_flags_are_pushed(synced: Sync) -> None:
    set_local_flags(synced.local()["message 2"], "SF")
    synced.run()
    client = synced.imap()
    try:
        flags = server_messages(client)
    finally:
        client.logout()
    assert {"\\Seen", "\\Flagged"} <= flags["message 2"], flags
    assert "\\Seen" not in flags["message 1"] and "\\Flagged" not in flags["message 1"]
    assert "\\Seen" not in flags["message 3"] and "\\Flagged" not in flags["message 3"]


def test_local_deletion_is_pushed_and_expunged(synced: Sync) -> None:
    set_local_flags(synced.local()["message 1"], "T")
    synced.run()
    client = synced.imap()
    try:
        flags = server_messages(client)
    finally:
        client.logout()
    assert sorted(flags) == ["message 2", "message 3"], flags
    assert sorted(synced.local()) == ["message 2", "message 3"]
    assert len(synced.org.inbox(ALICE)) == 2


def test_server_side_changes_are_pulled(synced: Sync) -> None:
    client = synced.imap()
    try:
        typ, data = client.select("INBOX")
        assert typ == "OK", data
        typ, found = client.search(None, "HEADER", "Subject", '"message 3"')
        assert typ == "OK" and found[0], found
        typ, stored = client.store(found[0].decode(), "+FLAGS", "(\\Flagged)")
        assert typ == "OK", stored
    finally:
        client.logout()
    deliver(synced.org, "message 4")
    assert len(synced.org.wait_inbox(ALICE, 4)) == 4
    synced.run()
    local = synced.local()
    assert sorted(local) == ["message 1", "message 2", "message 3", "message 4"]
    assert maildir_flags(local["message 3"]) == "F", local["message 3"].name
    assert maildir_flags(local["message 1"]) == ""
    assert b"body of message 4\nsecond line\n" in local["message 4"].read_bytes()


def test_new_local_folder_is_created_on_the_server(synced: Sync) -> None:
    folder = synced.maildir / "Projects"  # SubFolders Verbatim: Path/<name> is a Maildir
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    (folder / "cur" / "1700000000.1_1.testhost:2,S").write_bytes(
        message("project plan").replace(b"\r\n", b"\n")
    )
    synced.run()
    client = synced.imap()
    try:
        typ, listed = client.list()
        assert typ == "OK", listed
        names = [line.decode() for line in listed if isinstance(line, bytes)]
        assert any(re.search(r'"?Projects"?$', n) for n in names), names
        typ, data = client.select("Projects", readonly=True)
        assert typ == "OK" and int(data[0] or 0) == 1, data
        flags = server_messages(client, "Projects")
        bodies = server_bodies(client, "Projects")
    finally:
        client.logout()
    assert flags == {"project plan": {"\\Seen"}}, flags
    assert b"body of project plan\r\nsecond line\r\n" in bodies["project plan"]
    # The next run finds both sides in step: nothing new locally.
    synced.run()
    assert sorted(synced.local(folder)) == ["project plan"]
