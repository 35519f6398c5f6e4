"""One organization on three machines (issue M4): a Client Access server on
127.0.0.1 and two Mailbox servers on 127.0.0.2 and 127.0.0.3, each a separate
`postwerk serve` process, sharing one PostgreSQL database.

Clients only ever talk to the CAS: inbound SMTP (25) and submission (587) are
relayed to a Mailbox server's transport during the session, IMAP4 and POP3 are
proxied to the back end serving the user's mailbox database. Mail for a mailbox
on the other Mailbox server goes Mailbox → Mailbox over 2525.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import poplib
import random
import signal
import smtplib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from imapclient import IMAPClient  # type: ignore[import-untyped]

from tests.conftest import DOMAIN, PASSWORD, child_env, cli, postwerk_command, wait_for
from tests.pg import PG_SERVER, create_database, drop_database

pytestmark = pytest.mark.slow

ALICE = f"alice@{DOMAIN}"  # on MBX1
BOB = f"bob@{DOMAIN}"  # on MBX2


@dataclass
class Machine:
    """One server of the organization: its data directory, address and process."""

    name: str
    address: str
    roles: str
    data_dir: Path
    offset: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name.lower()}.{DOMAIN}"

    def port(self, port: int) -> int:
        return port + self.offset

    def start(self) -> None:
        log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [*postwerk_command(), "serve", "--data-dir", str(self.data_dir)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_listening(self, *ports: int) -> None:
        for port in ports:
            wait_for(lambda p=port: _connects(self.address, self.port(p)), timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def log(self) -> str:
        path = self.data_dir / "serve.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Organization:
    cas: Machine
    mbx1: Machine
    mbx2: Machine
    ca: trustme.CA

    def client_context(self) -> object:
        import ssl

        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP(self.cas.address, self.cas.port(25), timeout=20)

    def submission(self) -> smtplib.SMTP:
        s = smtplib.SMTP(self.cas.address, self.cas.port(587), timeout=20)
        s.starttls(context=self.client_context())  # type: ignore[arg-type]
        s.login(ALICE, PASSWORD)
        return s

    def imap(self, user: str) -> imaplib.IMAP4_SSL:
        imap = imaplib.IMAP4_SSL(
            self.cas.address,
            self.cas.port(993),
            ssl_context=self.client_context(),  # type: ignore[arg-type]
            timeout=20,
        )
        imap.login(user, PASSWORD)
        return imap

    def pop(self, user: str) -> poplib.POP3_SSL:
        pop = poplib.POP3_SSL(
            self.cas.address,
            self.cas.port(995),
            context=self.client_context(),  # type: ignore[arg-type]
            timeout=20,
        )
        pop.user(user)
        pop.pass_(PASSWORD)
        return pop

    def inbox_subjects(self, user: str) -> list[str]:
        imap = self.imap(user)
        try:
            _, count = imap.select("INBOX", readonly=True)
            if count == [b"0"]:
                return []  # FETCH 1:* in an empty mailbox is a BAD
            typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            if typ != "OK" or data == [None]:
                return []
            return [
                part[1].decode().strip().removeprefix("Subject: ")
                for part in data
                if isinstance(part, tuple)
            ]
        finally:
            imap.logout()

    def wait_subject(self, user: str, subject: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while subject not in self.inbox_subjects(user):
            if time.monotonic() > deadline:
                raise AssertionError(f"{subject!r} not in {user}'s inbox; CAS log:\n")
            time.sleep(0.3)


def _init(machine: Machine, ca: trustme.CA, pg_url: str) -> None:
    cli_args = [
        "init",
        "--domain",
        DOMAIN,
        "--hostname",
        machine.hostname,
        "--roles",
        machine.roles,
        "--bind",
        machine.address,
        "--database",
        pg_url,
        "--port-offset",
        str(machine.offset),
    ]
    from click.testing import CliRunner

    from postwerk.cli.main import main

    result = CliRunner().invoke(main, [*cli_args, "--data-dir", str(machine.data_dir)])
    assert result.exit_code == 0, result.output
    config = machine.data_dir / "postwerk.toml"
    config.write_text(
        config.read_text().replace('argon2_profile = "default"', 'argon2_profile = "cheap"')
    )
    # The test CA's certificate for this machine (clients verify the CAS's; the
    # servers pin each other's, registered again by `serve`).
    cert = ca.issue_cert(machine.hostname, machine.address)
    cert.private_key_pem.write_to_path(str(machine.data_dir / "tls" / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(machine.data_dir / "tls" / "server.crt"))
    env = child_env()
    env["POSTWERK_ADMIN__BIND"] = machine.address
    # Mail waiting for a stopped Mailbox server is retried within seconds, not minutes.
    env["POSTWERK_TRANSPORT__GLITCH_RETRY_INTERVAL"] = "1"
    env["POSTWERK_TRANSPORT__CONNECTION_FAILURE_RETRY_INTERVAL"] = "1"
    env["POSTWERK_TRANSPORT__TRANSIENT_RETRY_INTERVAL"] = "1"
    env["POSTWERK_TRANSPORT__MESSAGE_RETRY_INTERVAL"] = "1"
    machine.env = env


@pytest.fixture
def organization(tmp_path: Path, ca: trustme.CA) -> Iterator[Organization]:
    name = asyncio.run(create_database("postwerk_split"))
    pg_url = PG_SERVER.replace("postgresql+asyncpg://", "postgresql://") + f"/{name}"
    offset = random.randrange(20000, 36000, 100)
    machines = [
        Machine("MBX1", "127.0.0.2", "mailbox", tmp_path / "mbx1", offset),
        Machine("MBX2", "127.0.0.3", "mailbox", tmp_path / "mbx2", offset),
        Machine("CAS1", "127.0.0.1", "cas", tmp_path / "cas1", offset),
    ]
    try:
        for machine in machines:
            _init(machine, ca, pg_url)
        mbx1, mbx2, cas = machines
        for user, database in (("alice", "MBX1-DB01"), ("bob", "MBX2-DB01")):
            cli(
                cas.data_dir,
                "mailbox",
                "new",
                f"{user}@{DOMAIN}",
                "--database",
                database,
                "--password-stdin",
                input=PASSWORD + "\n",
            )
        cli(cas.data_dir, "imap", "enable")
        cli(cas.data_dir, "pop", "enable")
        for machine in machines:
            machine.start()
        mbx1.wait_listening(2525, 1993, 1995)
        mbx2.wait_listening(2525, 1993, 1995)
        cas.wait_listening(25, 587, 993, 995)
        yield Organization(cas, mbx1, mbx2, ca)
    finally:
        for machine in machines:
            machine.stop()
        asyncio.run(drop_database(name))


def test_three_servers_behave_as_one_organization(organization: Organization) -> None:
    org = organization
    listed = json.loads(cli(org.cas.data_dir, "mailbox", "list", "--json"))
    assert {(m["address"], m["database"], m["server"]) for m in listed} == {
        (ALICE, "MBX1-DB01", "MBX1"),
        (BOB, "MBX2-DB01", "MBX2"),
    }
    # The CAS is ready: its listeners are up and a Mailbox server runs.
    health = _healthz(org.cas)
    assert health["roles"]["cas"]["checks"]["mailbox_servers"] is True, health
    servers = {s["name"]: s for s in json.loads(cli(org.cas.data_dir, "server", "list", "--json"))}
    assert {n: (s["roles"], s["running"]) for n, s in servers.items()} == {
        "CAS1": (["cas"], True),
        "MBX1": (["mailbox"], True),
        "MBX2": (["mailbox"], True),
    }

    # Inbound SMTP through the CAS lands in mailboxes on both Mailbox servers; the
    # client's 250 is the Mailbox server's (its queue id), given during the session.
    with org.smtp() as s:
        s.ehlo("remote.test")
        s.mail("someone@remote.test")
        assert s.rcpt(ALICE)[0] == 250
        assert s.rcpt(BOB)[0] == 250
        code, text = s.data(b"Subject: inbound both\r\n\r\nhello\r\n")
        assert code == 250, text
        assert b"mbx" in text.lower()  # Hostname=mbx1|mbx2.example.test: the back end's reply
    org.wait_subject(ALICE, "inbound both")
    org.wait_subject(BOB, "inbound both")

    # Submission through the CAS (587), to a local and a remote-server mailbox.
    with org.submission() as s:
        s.sendmail(ALICE, [BOB], f"From: {ALICE}\r\nSubject: submitted\r\n\r\nhi bob\r\n")
    org.wait_subject(BOB, "submitted")

    # IMAP4 and POP3 through the CAS reach the right back end, with its capabilities.
    imap = org.imap(ALICE)
    typ, caps = imap.capability()
    assert typ == "OK" and b"IMAP4REV1" in caps[0].upper()
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "\\Flagged")
    assert imap.search(None, "FLAGGED")[1] == [b"1"]
    imap.logout()
    pop = org.pop(BOB)
    count, _ = pop.stat()
    assert count == 2
    assert b"hello" in b"\r\n".join(pop.retr(1)[1])
    pop.quit()
    # The CAS counts what it relayed and proxied (/metrics on its admin listener).
    url = f"http://{org.cas.address}:{org.cas.port(9025)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        scraped = response.read().decode()
    assert _sample(scraped, 'postwerk_frontend_relay_connections_total{result="connected"}') >= 1
    logins = 'postwerk_frontend_proxy_logins_total{protocol="imap4",result="relayed"}'
    assert _sample(scraped, logins) >= 2


def test_idle_through_cas_sees_mail_relayed_between_mailbox_servers(
    organization: Organization,
) -> None:
    org = organization
    client = IMAPClient(
        org.cas.address, port=org.cas.port(993), ssl_context=org.client_context(), timeout=20
    )
    try:
        client.login(BOB, PASSWORD)
        client.select_folder("INBOX")
        client.idle()
        # Submitted by alice, so accepted by her Mailbox server (MBX1) or any other;
        # bob's database is on MBX2, which delivers and wakes the IDLE.
        with org.submission() as s:
            s.sendmail(ALICE, [BOB], f"From: {ALICE}\r\nSubject: wake\r\n\r\nidle\r\n")
        responses = client.idle_check(timeout=20)
        client.idle_done()
        assert any(r[1] == b"EXISTS" for r in responses if len(r) > 1), responses
    finally:
        client.logout()


def test_a_stopped_mailbox_server_holds_its_mail_and_the_other_keeps_working(
    organization: Organization,
) -> None:
    org = organization
    org.mbx2.stop(signal.SIGKILL)
    # alice (MBX1) keeps working through the CAS.
    with org.smtp() as s:
        s.sendmail("someone@remote.test", [ALICE], b"Subject: while mbx2 down\r\n\r\nx\r\n")
    org.wait_subject(ALICE, "while mbx2 down")
    # bob's mail is accepted (by MBX1, failing over) and waits in a queue, never lost.
    with org.smtp() as s:
        s.sendmail("someone@remote.test", [BOB], b"Subject: for bob later\r\n\r\nx\r\n")
    # bob cannot log in while his server is down: a temporary failure.
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        org.imap(BOB)
    org.mbx2.start()
    org.mbx2.wait_listening(2525, 1993)
    org.wait_subject(BOB, "for bob later", timeout=60)


def test_a_mailbox_move_keeps_uids(organization: Organization) -> None:
    org = organization
    with org.smtp() as s:
        for n in range(3):
            s.sendmail("someone@remote.test", [ALICE], f"Subject: keep {n}\r\n\r\nx\r\n".encode())
    org.wait_subject(ALICE, "keep 2")
    imap = org.imap(ALICE)
    imap.select("INBOX")
    before = imap.uid("FETCH", "1:*", "(UID)")[1]
    validity = imap.response("UIDVALIDITY")
    imap.logout()
    out = cli(org.cas.data_dir, "mailbox", "move", ALICE, "--server", "MBX2")
    assert "to MBX2-DB01" in out
    # The next login is served by MBX2: stop MBX1 and alice still works.
    org.mbx1.stop()
    wait_for(lambda: _login_ok(org, ALICE), timeout=20)
    imap = org.imap(ALICE)
    imap.select("INBOX")
    assert imap.uid("FETCH", "1:*", "(UID)")[1] == before
    assert imap.response("UIDVALIDITY") == validity
    imap.logout()
    # And new mail for alice now goes to MBX2.
    with org.smtp() as s:
        s.sendmail("someone@remote.test", [ALICE], b"Subject: after move\r\n\r\nx\r\n")
    org.wait_subject(ALICE, "after move")


def _sample(scraped: str, name: str) -> float:
    for line in scraped.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _healthz(machine: Machine) -> dict[str, Any]:
    url = f"http://{machine.address}:{machine.port(9025)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # 503: not ready, the body says why
        return dict(json.loads(exc.read()))


def _login_ok(org: Organization, user: str) -> bool:
    try:
        org.imap(user).logout()
        return True
    except (imaplib.IMAP4.error, OSError):
        return False


def test_anonymous_clients_get_no_server_rights_on_internal_ports(
    organization: Organization,
) -> None:
    org = organization
    mbx = org.mbx1
    # 2525 (Default MBX1): no anonymous mail at all, and no relaying.
    with smtplib.SMTP(mbx.address, mbx.port(2525), timeout=10) as s:
        s.ehlo("intruder.test")
        code, _ = s.mail("someone@remote.test")
        if code == 250:
            assert s.rcpt("victim@elsewhere.test")[0] >= 500
        else:
            assert code in (530, 550)
        s.starttls(context=_insecure())
        s.ehlo("intruder.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("CAS1", "not the server password")
    # 1993: a proxy login needs the server password.
    imap = imaplib.IMAP4_SSL(mbx.address, mbx.port(1993), ssl_context=_insecure(), timeout=10)
    import base64

    token = base64.b64encode(f"{ALICE}\0CAS1\0guess".encode())
    with pytest.raises(imaplib.IMAP4.error):
        imap.authenticate("PLAIN", lambda _: base64.b64decode(token))
    imap.shutdown()
    assert os.path.exists(org.cas.data_dir)


def _insecure() -> object:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
