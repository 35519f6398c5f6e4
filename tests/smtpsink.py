"""Real SMTP peers for outbound tests (no test functions here).

- `SmtpSink`: an aiosmtpd server in its own thread (aiosmtpd's `Controller`) on an
  ephemeral port of any loopback address (127.0.0.x). It records every message
  and the raw MAIL/RCPT arguments, counts connections, and answers with scripted
  replies: per recipient, to MAIL, to the end of data. Options switch STARTTLS,
  AUTH, DSN, SMTPUTF8, 8BITMIME and SIZE on and off, so the client's extension
  handling can be checked against what the peer advertised.
- `ScriptedPeer`: a raw asyncio server in the test's own event loop for peers
  that misbehave in ways aiosmtpd cannot: a 421 greeting, EHLO refused, a
  connection dropped in the middle of DATA, no reply to the end of data.

    with SmtpSink("127.0.0.2", dsn=True) as sink:
        ...deliver to ("mx.sink.test", "127.0.0.2") port sink.port...
        assert sink.handler.messages[0].rcpt_options["a@x.test"] == ["NOTIFY=NEVER"]
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DSN_PARAMS = frozenset({"RET", "ENVID", "NOTIFY", "ORCPT"})


@dataclass
class SinkMessage:
    """One message as the sink received it."""

    connection: int  # 1-based number of the connection it arrived on
    mail_from: str
    mail_args: str  # the raw MAIL argument, case preserved: "FROM:<a@b> SIZE=12 RET=HDRS"
    rcpt_tos: list[str]
    rcpt_options: dict[str, list[str]]  # per accepted recipient, case preserved
    data: bytes  # as received, dot-unstuffed
    tls: bool
    auth_user: str | None


@dataclass
class _Connection:
    number: int
    mail_args: str = ""
    rcpt_options: dict[str, list[str]] = field(default_factory=dict)
    auth_user: str | None = None


class SinkHandler:
    """aiosmtpd handler: records what arrives and answers as scripted.

    Set the reply fields from the test thread before the client sends; aiosmtpd
    runs the hooks in the sink's thread, so every shared list is guarded by a lock.
    """

    def __init__(self, *, dsn: bool = False, eightbitmime: bool = True, size: bool = True) -> None:
        self.dsn = dsn
        self.eightbitmime = eightbitmime
        self.size = size
        self.lock = threading.Lock()
        self.messages: list[SinkMessage] = []
        self.connections = 0  # connections that said EHLO or HELO
        self.active = 0
        self.max_active = 0
        self.in_data = 0
        self.max_in_data = 0
        self.mail_commands = 0
        self.rset_commands = 0
        # Scripted replies (None: accept).
        self.mail_reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}  # lower-cased address -> reply
        self.data_replies: list[str] = []  # consumed one per message; then 250
        self.data_delay = 0.0  # seconds to sleep before answering the end of data

    # Connection bookkeeping, called by _SinkSMTP.
    def connection_opened(self) -> int:
        with self.lock:
            self.connections += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            return self.connections

    def connection_closed(self) -> None:
        with self.lock:
            self.active -= 1

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no client connection is open (e.g. after the client's close())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.active == 0:
                    return True
            time.sleep(0.02)
        return False

    # aiosmtpd hooks.
    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the five-argument hook must do this itself
        lines = [r[4:] for r in responses]
        if not self.eightbitmime:
            lines = [x for x in lines if x != "8BITMIME"]
        if not self.size:
            lines = [x for x in lines if not x.startswith("SIZE")]
        if self.dsn:
            lines.insert(-1, "DSN")
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        with self.lock:
            self.mail_commands += 1
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.rset_commands += 1
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.in_data += 1
            self.max_in_data = max(self.max_in_data, self.in_data)
        try:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
        finally:
            with self.lock:
                self.in_data -= 1
        conn: _Connection = server.sink_connection  # type: ignore[attr-defined]
        with self.lock:
            reply = self.data_replies.pop(0) if self.data_replies else None
        if reply is not None:
            return reply
        content = envelope.original_content or b""
        message = SinkMessage(
            connection=conn.number,
            mail_from=envelope.mail_from or "",
            mail_args=conn.mail_args,
            rcpt_tos=list(envelope.rcpt_tos),
            rcpt_options={r: conn.rcpt_options.get(r.lower(), []) for r in envelope.rcpt_tos},
            data=content,
            tls=session.ssl is not None,
            auth_user=conn.auth_user,
        )
        with self.lock:
            self.messages.append(message)
        return "250 2.0.0 Queued as sink"


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP with connection counting, raw argument capture and DSN params."""

    def __init__(self, handler: SinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink_handler = handler
        self.sink_connection = _Connection(number=0)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink_connection.number:
            self.sink_handler.connection_closed()
        super().connection_lost(exc)

    def _count(self) -> None:
        # Counted at the first EHLO/HELO, so the Controller's own start-up probe
        # (connect, read the banner, close) is not a connection of the test.
        if not self.sink_connection.number:
            self.sink_connection.number = self.sink_handler.connection_opened()

    async def smtp_EHLO(self, hostname: str) -> None:
        self._count()
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        self._count()
        await super().smtp_HELO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        self.sink_connection.mail_args = arg or ""
        self.sink_connection.rcpt_options = {}
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg:
            # "TO:<addr> NOTIFY=... ORCPT=..." with the case the client sent.
            address, _, rest = arg[3:].strip().partition(" ")
            key = address.strip("<>").lower()
            self.sink_connection.rcpt_options[key] = rest.split()
        await super().smtp_RCPT(arg)

    def _getparams(self, params: Any) -> dict[str, str | bool] | None:
        result = super()._getparams(params)
        if result is not None and self.sink_handler.dsn:
            # aiosmtpd knows no DSN: take its parameters off so it does not answer 555.
            for name in DSN_PARAMS:
                result.pop(name, None)
        return result


class _SinkController(Controller):
    """aiosmtpd's Controller on an ephemeral port (port=0)."""

    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]  # before start() probes it
        return server


class SmtpSink:
    """An aiosmtpd sink on `host`, ephemeral port; a context manager.

    `tls_context` (a server context) enables STARTTLS; `auth_users` enables
    AUTH PLAIN/LOGIN over TLS (or without, with `auth_require_tls=False`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        hostname: str = "sink.test",
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        auth_users: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        dsn: bool = False,
        smtputf8: bool = True,
        eightbitmime: bool = True,
        size_limit: int | None = 33554432,
    ) -> None:
        self.handler = SinkHandler(dsn=dsn, eightbitmime=eightbitmime, size=bool(size_limit))
        self.auth_users = auth_users or {}
        kwargs: dict[str, Any] = {
            "server_hostname": hostname,
            "tls_context": tls_context,
            "require_starttls": require_starttls,
            "enable_SMTPUTF8": smtputf8,
            "data_size_limit": size_limit,
            "auth_require_tls": auth_require_tls,
        }
        if auth_users:
            kwargs["authenticator"] = self._authenticate
        else:
            # aiosmtpd advertises AUTH even without an authenticator; a relay sink should not.
            kwargs["auth_exclude_mechanism"] = ["LOGIN", "PLAIN"]
        self.controller = _SinkController(self.handler, hostname=host, port=0, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user = data.login.decode()
            if self.auth_users.get(user) == data.password.decode():
                assert isinstance(server, _SinkSMTP)
                server.sink_connection.auth_user = user
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    @property
    def host(self) -> str:
        return str(self.controller.hostname)

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def messages(self) -> list[SinkMessage]:
        with self.handler.lock:
            return list(self.handler.messages)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- scripted raw peers ------------------------------------------------------

Script = Callable[["PeerConnection"], Awaitable[None]]


class PeerConnection:
    """One accepted connection of a `ScriptedPeer`, with line helpers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.commands: list[bytes] = []

    async def send(self, *lines: str) -> None:
        self.writer.write("".join(line + "\r\n" for line in lines).encode())
        await self.writer.drain()

    async def command(self) -> bytes:
        """The next command line without CRLF; b"" at EOF."""
        line = await self.reader.readline()
        line = line.rstrip(b"\r\n")
        if line:
            self.commands.append(line)
        return line

    async def read_data(self) -> bytes:
        """The message body up to the lone dot, dot-unstuffed."""
        lines: list[bytes] = []
        while True:
            line = await self.reader.readline()
            if not line or line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)

    def drop(self) -> None:
        """Close abruptly (RST), like a crashed peer."""
        transport = self.writer.transport
        transport.abort()


class ScriptedPeer:
    """A raw SMTP peer in the running event loop; each connection runs `script`.

    async with ScriptedPeer(greet_421) as peer:
        ...peer.port, peer.connections...
    """

    def __init__(self, script: Script, host: str = "127.0.0.1", port: int = 0) -> None:
        self.script = script
        self.host = host
        self.port = port  # 0: ephemeral; a sink's port puts both behind one Destination
        self.connections = 0
        self.transcripts: list[list[bytes]] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = PeerConnection(reader, writer)
        self.transcripts.append(conn.commands)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self.script(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def __aenter__(self) -> ScriptedPeer:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


async def simple_session(
    conn: PeerConnection,
    *,
    greeting: str = "220 peer.test ESMTP",
    ehlo: tuple[str, ...] = ("250-peer.test", "250 8BITMIME"),
    after_data: Callable[[PeerConnection, bytes], Awaitable[bool]] | None = None,
    drop_in_data: bool = False,
) -> None:
    """A minimal SMTP server dialogue for scripted peers.

    `greeting` other than 220 closes after sending it; `ehlo` may be a refusal
    (then HELO is accepted); `drop_in_data` closes after the first body line;
    `after_data(conn, body)` answers the end of data itself and returns False
    to end the session.
    """
    await conn.send(greeting)
    if not greeting.startswith("220"):
        return
    while True:
        line = await conn.command()
        if not line:
            return
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            await conn.send(*ehlo)
        elif verb == b"HELO":
            await conn.send("250 peer.test")
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            await conn.send("250 2.0.0 OK")
        elif verb == b"DATA":
            await conn.send("354 go ahead")
            if drop_in_data:
                await conn.reader.readline()
                conn.drop()
                return
            body = await conn.read_data()
            if after_data is None:
                await conn.send("250 2.0.0 OK")
            elif not await after_data(conn, body):
                return
        elif verb == b"QUIT":
            await conn.send("221 2.0.0 Bye")
            return
        else:
            await conn.send("502 5.5.2 Command not implemented")
