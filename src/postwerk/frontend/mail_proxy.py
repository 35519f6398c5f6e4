"""The IMAP4/POP3 proxy of the Client Access front end, and the back end's check
of it.

Purpose: as in Exchange 2013, the front end terminates the client's TLS,
authenticates the client and asks the `MailboxLocator` where the mailbox is
(frontend/routing.py). For a `RemoteRoute` it then:

1. connects to the Mailbox server's back-end service (1993/1995, implicit TLS)
   and pins its certificate to the one the directory registered
   (directory/server_auth.py);
2. logs in there on the user's behalf with SASL PLAIN (RFC 4616): authzid the
   user's primary address, authcid this server's label, the server password
   (IMAP `AUTHENTICATE PLAIN` with SASL-IR, RFC 4959; POP3 `AUTH PLAIN`,
   RFC 5034); for IMAP it learns the back end's capabilities, which the front
   end's tagged OK then carries (the client sees the back end's, not ours);
3. relays octets both ways, unchanged, until either side closes (`relay`).

The back end accepts such a login only from an organization server
(`accept_on_behalf`): the authcid and password must be a registered server's
(`ServerTrust.is_server`), and the authzid an enabled mailbox.

The login dialogs (`ImapLogin`, `Pop3Login`) are sans-I/O: lines in, octets to
send or an outcome out. `BackendLink` is the asyncio Protocol of the back-end
connection: a line reader during the login, one end of the relay afterwards.

Invariants:
- The server password is written only inside TLS to a peer whose certificate
  is the registered one; nothing at all is sent before the pin is checked.
- Every failure before the relay starts is a `Refused` with the back-end
  connection closed; the client has seen nothing of the attempt and gets the
  answer of an unavailable mailbox (or the back end's LIMIT / IN-USE).
- While relaying nothing is interpreted: IDLE, literals and COMPRESS=DEFLATE
  pass as octets. Each side's reading pauses while the other side's write
  buffer is above its high-water mark, so a relayed connection holds at most
  about two transport buffers of data.
- When either side closes or fails, the other is closed.
- A proxied session is never proxied again: the back end serves it locally or
  refuses it (the services check this), so placement races cannot loop.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass
from typing import Any, Final

from postwerk.directory.server_auth import ServerTrust, internal_client_context, pinned
from postwerk.directory.service import Directory
from postwerk.frontend.routing import RemoteRoute
from postwerk.observe import metrics
from postwerk.protocols.sasl.mechanisms import Credentials
from postwerk.services.channel import FramedChannel, RelayPeer
from postwerk.store.records import Recipient, RecipientKind

CONNECT_TIMEOUT: Final = 5.0  # TCP connect and TLS handshake to the back end
LOGIN_TIMEOUT: Final = 15.0  # the whole attempt: connect, greeting, login, CAPABILITY
MAX_LOGIN_LINE: Final = 64 * 1024  # a back-end response line during the login
# RFC 2449 §4: a POP3 command line is at most 255 octets; a longer AUTH falls back
# to the continuation form (RFC 5034 §4).
POP3_MAX_COMMAND: Final = 255


# ---------------------------------------------------------------- sans-I/O login


@dataclass(frozen=True, slots=True)
class Send:
    """Write these octets to the back end, then read on."""

    data: bytes


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """The back end accepted the login. `capabilities`: IMAP's after login;
    `text`: the back end's reply text (POP3's "+OK" line, shown to the client)."""

    capabilities: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """No session on the back end. `reason` is for the log; `code` the back end's
    response code (upper case), if it gave one, for the services to pass on."""

    reason: str
    code: str | None = None


Step = Send | LoggedIn | Refused | None  # None: read another line


def plain_response(authzid: str, authcid: str, password: str) -> str:
    """The SASL PLAIN message (RFC 4616 §2), base64 as sent on the wire."""
    message = b"\0".join(s.encode("utf-8") for s in (authzid, authcid, password))
    return base64.b64encode(message).decode("ascii")


_IMAP_STATUS = re.compile(r"(\S+) (OK|NO|BAD|BYE|PREAUTH)(?: \[([^\]]*)\])? ?(.*)", re.I)
_POP3_CODE = re.compile(r"\[([^\]]*)\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never passed on in a reply text


def _code_name(code: str | None) -> str | None:
    return code.split(" ", 1)[0].upper() if code else None


class ImapLogin:
    """The front end's side of an IMAP4 login on a user's behalf.

    Feed each line the back end sends (without CRLF) to `receive_line`; it answers
    what to do. States: greeting -> authenticate -> (capability) -> done.
    """

    AUTH_TAG: Final = "PW1"
    CAPABILITY_TAG: Final = "PW2"

    def __init__(self, initial_response: str) -> None:
        self._initial = initial_response
        self._state = "greeting"
        self._continued = False
        self._capabilities: tuple[str, ...] = ()

    def receive_line(self, line: bytes) -> Step:
        text = line.decode("utf-8", errors="replace")
        if self._state == "done":
            return None
        match = _IMAP_STATUS.fullmatch(text)
        if self._state == "greeting":
            if match is None or match.group(1) != "*" or match.group(2).upper() != "OK":
                # PREAUTH would be a session for nobody in particular; BYE a refusal.
                return self._fail(f"unexpected greeting {text[:80]!r}", None)
            self._state = "authenticate"
            command = f"{self.AUTH_TAG} AUTHENTICATE PLAIN {self._initial}\r\n"
            return Send(command.encode("ascii"))  # RFC 4959 SASL-IR
        if text.startswith("+"):
            if self._state == "authenticate" and not self._continued:
                # An empty challenge: the message again, as a continuation (RFC 9051 §6.2.2).
                self._continued = True
                return Send(self._initial.encode("ascii") + b"\r\n")
            return self._fail("unexpected continuation request", None)
        if text[:13].upper() == "* CAPABILITY ":
            self._capabilities = tuple(text[13:].split())
            return None
        if match is None or match.group(1) == "*":
            if match is not None and match.group(2).upper() == "BYE":
                return self._fail(f"back end said BYE: {match.group(4)}", match.group(3))
            return None  # other untagged data: not ours to judge
        tag, status, code, rest = match.groups()
        expected = self.AUTH_TAG if self._state == "authenticate" else self.CAPABILITY_TAG
        if tag != expected:
            return self._fail(f"unexpected tagged response {tag[:20]!r}", code)
        if status.upper() != "OK":
            return self._fail(f"back end answered {status.upper()}: {rest[:200]}", code)
        if code and code[:11].upper() == "CAPABILITY ":
            self._capabilities = tuple(code[11:].split())  # the OK's code (RFC 9051 §7.1)
        if self._capabilities:
            self._state = "done"
            return LoggedIn(self._capabilities, rest)
        if self._state == "authenticate":
            self._state = "capability"  # none given with the OK: ask (RFC 9051 §6.1.1)
            return Send(f"{self.CAPABILITY_TAG} CAPABILITY\r\n".encode("ascii"))
        return self._fail("back end sent no capabilities", None)

    def _fail(self, reason: str, code: str | None) -> Refused:
        self._state = "done"
        return Refused(reason, _code_name(code))


class Pop3Login:
    """The front end's side of a POP3 login on a user's behalf (RFC 5034 AUTH PLAIN).
    States: greeting -> auth -> done."""

    def __init__(self, initial_response: str) -> None:
        self._initial = initial_response
        self._state = "greeting"
        self._challenged = False

    def receive_line(self, line: bytes) -> Step:
        text = line.decode("utf-8", errors="replace")
        if self._state == "done":
            return None
        ok = text[:3].upper() == "+OK"
        if self._state == "greeting":
            if not ok:
                return self._fail(f"unexpected greeting {text[:80]!r}", text)
            self._state = "auth"
            command = f"AUTH PLAIN {self._initial}\r\n".encode("ascii")
            if len(command) > POP3_MAX_COMMAND:
                self._challenged = True  # send it after the "+ " instead
                return Send(b"AUTH PLAIN\r\n")
            return Send(command)
        if ok:
            self._state = "done"
            return LoggedIn((), _CONTROL.sub(" ", text[3:]).strip())
        if text[:4].upper() == "-ERR":
            return self._fail(f"back end answered {text[:200]}", text)
        if text.startswith("+") and self._challenged:
            self._challenged = False
            return Send(self._initial.encode("ascii") + b"\r\n")
        return self._fail(f"unexpected line {text[:80]!r}", text)

    def _fail(self, reason: str, text: str) -> Refused:
        self._state = "done"
        match = _POP3_CODE.search(text[:200])
        return Refused(reason, _code_name(match.group(1)) if match else None)


# ---------------------------------------------------------------- the back-end connection


class BackendLink(asyncio.Protocol):
    """The TLS connection to a back-end service: `read_line` during the login,
    then one end of the relay (`relay_to`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.finished = asyncio.Event()  # set once closed, from either side
        self.octets_in = 0  # relayed from the back end
        self.octets_out = 0  # relayed to the back end
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._peer: RelayPeer | None = None

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        if self.transport is None:
            return None
        found: ssl.SSLObject | None = self.transport.get_extra_info("ssl_object")
        return found

    # -- asyncio callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass

    def data_received(self, data: bytes) -> None:
        if self._peer is not None:
            self.octets_in += len(data)
            self._peer.write(data)
            return
        self._buffer += data
        if len(self._buffer) > MAX_LOGIN_LINE:
            self.close()  # far more than a login needs: not a back end we can talk to
        self._wake()

    def eof_received(self) -> bool:
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:
        if self._peer is not None:
            self._peer.pause_input()  # the back end reads slowly: stop reading the client

    def resume_writing(self) -> None:
        if self._peer is not None:
            self._peer.resume_input()

    # -- the login ----------------------------------------------------------------

    async def read_line(self) -> bytes | None:
        """One line without its CRLF; None once the connection is closed."""
        while True:
            nl = self._buffer.find(b"\n")
            if nl >= 0:
                line = bytes(self._buffer[:nl]).removesuffix(b"\r")
                del self._buffer[: nl + 1]
                return line
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- RelayPeer ----------------------------------------------------------------

    def relay_to(self, peer: RelayPeer) -> None:
        """From now on the back end's octets go to `peer`, starting with any it sent
        after its login reply. Call with no await before the client side's relay_to."""
        leftover = bytes(self._buffer)
        self._buffer.clear()
        self._peer = peer
        self.octets_out = 0  # count the session's octets, not the login's
        if leftover:
            self.octets_in += len(leftover)
            peer.write(leftover)
        if self.closed:
            self._close_peer()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.octets_out += len(data)
            self.transport.write(data)

    def pause_input(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_input(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                # A TLS close flushes what was written first (the client's last command).
                self.transport.close()
        self.finished.set()
        self._wake()
        self._close_peer()

    def _close_peer(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.close()


@dataclass
class Backend:
    """A session on the back end, logged in on the user's behalf, ready to relay."""

    link: BackendLink
    route: RemoteRoute
    capabilities: tuple[str, ...]  # IMAP: the back end's, after login
    text: str  # the back end's reply text (POP3: shown to the client)


async def open_backend(
    route: RemoteRoute, protocol: str, mailbox: str, trust: ServerTrust, log: Any
) -> Backend | Refused:
    """Connect to the back end of `route`, pin it, and log in as `mailbox` (the user's
    primary address) for `protocol` ("imap4" or "pop3"). On a `Refused` nothing is
    left open; the reason has been logged."""
    log = log.bind(server=route.server, backend=f"{route.host}:{route.port}")
    authcid, password = trust.credentials()
    initial = plain_response(mailbox, authcid, password)
    dialog = ImapLogin(initial) if protocol == "imap4" else Pop3Login(initial)
    link: BackendLink | None = None
    outcome: LoggedIn | Refused
    try:
        async with asyncio.timeout(LOGIN_TIMEOUT):
            link = await _connect(route)
            if not pinned(link.ssl_object, route.certificate_sha256):
                # Not the server the directory names: it gets no password.
                outcome = Refused("back-end certificate does not match the registered one")
            else:
                outcome = await _log_in(link, dialog)
    except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
        outcome = Refused(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    except BaseException:
        if link is not None:
            link.close()  # cancelled (server stopping): leave nothing open
        raise
    if isinstance(outcome, LoggedIn) and link is not None:
        log.info("proxy_login", mailbox=mailbox, protocol=protocol)
        metrics.PROXY_LOGINS.labels(protocol=protocol, result="relayed").inc()
        return Backend(link, route, outcome.capabilities, outcome.text)
    if link is not None:
        link.close()
    assert isinstance(outcome, Refused)
    log.warning("proxy_refused", mailbox=mailbox, protocol=protocol, reason=outcome.reason)
    metrics.PROXY_LOGINS.labels(protocol=protocol, result="refused").inc()
    return outcome


async def _connect(route: RemoteRoute) -> BackendLink:
    loop = asyncio.get_running_loop()
    _transport, link = await asyncio.wait_for(
        loop.create_connection(
            BackendLink,
            route.host,
            route.port,
            ssl=internal_client_context(),
            ssl_handshake_timeout=CONNECT_TIMEOUT,
        ),
        CONNECT_TIMEOUT,
    )
    return link


async def _log_in(link: BackendLink, dialog: ImapLogin | Pop3Login) -> LoggedIn | Refused:
    while True:
        line = await link.read_line()
        if line is None:
            return Refused("back end closed the connection")
        step = dialog.receive_line(line)
        match step:
            case None:
                continue
            case Send(data=data):
                link.write(data)
            case LoggedIn() | Refused():
                return step


async def relay(client: FramedChannel[Any], backend: Backend, log: Any) -> None:
    """Copy octets between the client's channel and the back end until either side
    closes; then close both. Call right after writing the login reply to the
    client, with no await in between (the client's pipelined octets go first)."""
    link = backend.link
    link.relay_to(client)
    pipelined = client.relay_to(link)
    log.info("proxy_relaying", server=backend.route.server, pipelined=pipelined)
    try:
        await link.finished.wait()
    finally:
        link.close()
        client.close()
        log.info(
            "proxy_ended",
            server=backend.route.server,
            octets_from_client=link.octets_out,
            octets_to_client=link.octets_in,
        )


# ---------------------------------------------------------------- the back end's half


async def accept_on_behalf(
    directory: Directory, trust: ServerTrust, creds: Credentials
) -> Recipient | None:
    """The mailbox a front end may log in to for a user: the authcid and password
    must be a registered organization server's, and the authzid an enabled
    mailbox (primary address or alias). None: refuse, as any failed login."""
    if not await trust.is_server(creds.authcid, creds.password):
        return None
    user = await directory.store.find_recipient(creds.authzid.strip())
    if user is None or user.kind != RecipientKind.MAILBOX or not user.enabled:
        return None
    return user
