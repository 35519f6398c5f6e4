"""Transcript tests for the IMAP4 service: raw bytes over real sockets to a real server.

Each test module gets one server (module scope: starting one costs about a second)
with IMAP enabled through the CLI, as an administrator would, before it starts; the
listeners come up at the first settings poll. Tests talk to it with `Session`, a
raw client that sends exactly the bytes written in the test and returns every
response line, literals included, so assertions can compare the server's output
byte for byte.

A response "line" as returned here is everything up to the CRLF that ends a
response, with literals kept in place: `* 1 FETCH (BODY[] {5}\\r\\nhello)`.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from tests.conftest import (
    DOMAIN,
    PASSWORD,
    RunningServer,
    cli,
    init_data_dir,
    populate,
    start_server,
    stop_server,
    wait_for,
)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
TIMEOUT = 15.0  # generous: the machine is shared with benchmarks

_LITERAL_END = re.compile(rb"~?\{([0-9]+)\+?\}\Z")
_TAGGED = re.compile(rb"([^ ]+) (OK|NO|BAD)(?: \[([^\]]*)\])?(?: (.*))?\Z", re.DOTALL)


@dataclass
class Reply:
    """Everything the server sent for one command: untagged lines, then the tagged one."""

    tag: str
    untagged: list[bytes]
    tagged: bytes

    @property
    def status(self) -> str:
        return self._parts()[1].decode()

    @property
    def code(self) -> str | None:
        """The response code of the tagged line without brackets, e.g. "APPENDUID 1 3"."""
        raw = self._parts()[2]
        return None if raw is None else raw.decode()

    @property
    def code_name(self) -> str | None:
        code = self.code
        return None if code is None else code.split(" ", 1)[0]

    def _parts(self) -> tuple[bytes, ...]:
        m = _TAGGED.match(self.tagged)
        assert m is not None, f"not a tagged status line: {self.tagged!r}"
        return m.groups()

    @property
    def data(self) -> list[bytes]:
        """Untagged lines other than `* OK` status lines (data: FETCH, LIST, SEARCH, ...)."""
        return [line for line in self.untagged if not line.startswith(b"* OK")]

    def __str__(self) -> str:
        return "\n".join(x.decode("latin-1") for x in [*self.untagged, self.tagged])


class Session:
    """A raw IMAP client: send bytes, read whole responses (literals included)."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = b""
        self.greeting = self.read_line()
        self._n = 0

    # ----------------------------------------------------------- bytes

    def send(self, data: bytes | str) -> None:
        """Send `data` as is (no CRLF added)."""
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed; unread: {self.buf!r}")
        self.buf += chunk

    def _raw_line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            self._fill()

    def read_line(self) -> bytes:
        """One response: a line, with any literal it announces and the text after it."""
        out = self._raw_line()
        while True:
            m = _LITERAL_END.search(out)
            if m is None:
                return out
            size = int(m.group(1))
            while len(self.buf) < size:
                self._fill()
            out += b"\r\n" + self.buf[:size]
            self.buf = self.buf[size:]
            out += self._raw_line()

    def read_until_tagged(self, tag: str) -> Reply:
        untagged: list[bytes] = []
        prefix = tag.encode() + b" "
        while True:
            line = self.read_line()
            if line.startswith(prefix):
                return Reply(tag, untagged, line)
            untagged.append(line)

    def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed the connection (anything buffered is dropped)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, ssl.SSLError, OSError):
            return True

    # ----------------------------------------------------------- commands

    def tag(self) -> str:
        self._n += 1
        return f"t{self._n}"

    def cmd(self, text: bytes | str) -> Reply:
        """Send `<tag> <text>` CRLF and read to the tagged reply."""
        if isinstance(text, str):
            text = text.encode()
        tag = self.tag()
        self.send(tag.encode() + b" " + text + b"\r\n")
        return self.read_until_tagged(tag)

    def ok(self, text: bytes | str) -> Reply:
        reply = self.cmd(text)
        assert reply.status == "OK", str(reply)
        return reply

    def expect(self, text: bytes | str, status: str, code: str | None = None) -> Reply:
        """Run a command; assert its tagged status and response code name (or no code)."""
        reply = self.cmd(text)
        assert (reply.status, reply.code_name) == (status, code), str(reply)
        return reply

    def login(self, user: str = ALICE, password: str = PASSWORD) -> Reply:
        return self.ok(f'LOGIN {user} "{password}"')

    def select(self, mailbox: str, examine: bool = False) -> Reply:
        return self.ok(f"{'EXAMINE' if examine else 'SELECT'} {quote(mailbox)}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def quote(name: str) -> str:
    """A quoted string for a mailbox name (no escapes needed in test names)."""
    assert '"' not in name and "\\" not in name
    return f'"{name}"'


@dataclass
class ImapTestServer:
    org: RunningServer
    ssl_port: int
    plain_port: int
    sessions: list[Session] = field(default_factory=list)

    def connect(self) -> Session:
        """A TLS connection to the implicit-TLS port, greeting read."""
        sock = socket.create_connection(("127.0.0.1", self.ssl_port), timeout=TIMEOUT)
        tls = self.org.client_context().wrap_socket(sock, server_hostname="localhost")
        session = Session(tls)
        self.sessions.append(session)
        return session

    def connect_plain(self) -> Session:
        """A cleartext connection to the STARTTLS port, greeting read."""
        sock = socket.create_connection(("127.0.0.1", self.plain_port), timeout=TIMEOUT)
        session = Session(sock)
        self.sessions.append(session)
        return session

    def login(self, user: str = ALICE) -> Session:
        session = self.connect()
        session.login(user)
        return session

    def close_sessions(self) -> None:
        for session in self.sessions:
            session.close()
        self.sessions.clear()

    def deliver(self, message: bytes, to: str = ALICE, sender: str = "someone@remote.test") -> None:
        with smtplib.SMTP("127.0.0.1", self.org.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail(sender, [to], message)

    def new_user(self, local: str) -> str:
        address = f"{local}@{DOMAIN}"
        cli(
            self.org.data_dir,
            "mailbox",
            "new",
            address,
            "--password-stdin",
            input=PASSWORD + "\n",
        )
        return address


def message(
    subject: str,
    body: str = "Hello.\n",
    sender: str = "Some One <someone@remote.test>",
    to: str = ALICE,
    date: str | None = "Mon, 03 Feb 2025 10:00:00 +0000",
    extra: dict[str, str] | None = None,
) -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = date
    msg["Message-ID"] = f"<{re.sub(r'[^A-Za-z0-9]', '-', subject)}@remote.test>"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def append(session: Session, mailbox: str, data: bytes, extra: str = "") -> int:
    """APPEND with LITERAL+ (advertised); returns the new UID from APPENDUID."""
    head = f"APPEND {quote(mailbox)} {extra + ' ' if extra else ''}{{{len(data)}+}}\r\n"
    reply = session.ok(head.encode() + data)
    assert reply.code_name == "APPENDUID", str(reply)
    assert reply.code is not None
    return int(reply.code.split()[2])


@pytest.fixture(scope="session")
def imap_template(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Path:
    """An initialized data directory (alice, bob, IMAP enabled), built once and copied
    for each module's server: `init` costs far more than a copy."""
    data_dir: Path = tmp_path_factory.mktemp("imap-template") / "data"
    init_data_dir(data_dir, ca)
    populate(data_dir)
    cli(data_dir, "imap", "enable")
    return data_dir


def start_imap_server(
    tmp_path_factory: pytest.TempPathFactory,
    ca: trustme.CA,
    template: Path,
    settings: dict[str, str] | None = None,
) -> RunningServer:
    data_dir: Path = tmp_path_factory.mktemp("imap") / "data"
    shutil.copytree(template, data_dir)
    args = [f"--{k}={v}" for k, v in (settings or {}).items()]
    if args:
        cli(data_dir, "imap", "settings", *args)
    # Many failed logins from 127.0.0.1 across a module must not lock the address out.
    environ = {"POSTWERK_AUTH__LOCKOUT_IP_FAILURES": "1000"}
    return start_server(data_dir, ca, environ)


def imap_ports(org: RunningServer) -> dict[int, int]:
    async def read() -> dict[int, int]:
        return {k: v for k, v in org.server.ports.items() if k in (143, 993)}

    return org.call(read())


def make_imap(
    tmp_path_factory: pytest.TempPathFactory,
    ca: trustme.CA,
    template: Path,
    settings: dict[str, str] | None = None,
) -> Iterator[ImapTestServer]:
    org = start_imap_server(tmp_path_factory, ca, template, settings)
    try:
        wait_for(lambda: set(imap_ports(org)) == {143, 993}, timeout=20)
        ports = imap_ports(org)
        server = ImapTestServer(org, ports[993], ports[143])
        yield server
        server.close_sessions()
    finally:
        stop_server(org)


@pytest.fixture(scope="module")
def imap_server(
    tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, imap_template: Path
) -> Iterator[ImapTestServer]:
    """One IMAP-enabled server per test module (alice and bob as in tests/conftest.py)."""
    yield from make_imap(tmp_path_factory, ca, imap_template)


@pytest.fixture
def imap(imap_server: ImapTestServer) -> Iterator[ImapTestServer]:
    """The module's server; the sessions a test opens are closed after it."""
    yield imap_server
    imap_server.close_sessions()


@pytest.fixture
def folder(request: pytest.FixtureRequest, imap: ImapTestServer) -> str:
    """A fresh, empty mail folder of alice's named after the test."""
    name = re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-40:]
    org = imap.org

    async def create() -> None:
        # Straight into the store: one TLS handshake and login less per test.
        user = await org.server.directory.get(ALICE)
        await org.server.backend.sql.mailstore.create_folder(user.id, name)

    org.call(create())
    return name
