"""The POP3 back-end service: listeners on 110 (STLS) and 995 (implicit TLS).

Purpose: accept connections and drive the sans-I/O POP3 core
(`protocols/pop3`: `Pop3Framer`, `Pop3Session`, `DotStuffer`, `top_of`) over
the mailbox store, as Exchange 2013's POP3 back-end service does: the
maildrop is the Inbox only, snapshot at login; DELE marks, and only QUIT in
TRANSACTION expunges the marked items. A `Pop3Channel` (asyncio Protocol)
moves bytes; a `Pop3Connection` task per client decides what to send. Handlers
return `Reply` values; only `_flush` and the message streamer write.

Security invariants:
- Plaintext pipelined behind STLS is dropped before the handshake
  (CVE-2011-0411, RFC 2595 §4): the framer owns the only input buffer, it is
  cleared, and no await runs between clearing it and `start_tls` taking over.
- Under `LoginType.SECURE_LOGIN` (the default) USER/PASS and the plaintext
  SASL mechanisms are refused before TLS with `-ERR [AUTH]`, at USER, so the
  password is never sent in the clear (RFC 2595 §2.2, RFC 5034 §6).
- Failed logins go through `LoginThrottle` (tarpit, lockout per address and
  per account); logs carry the login name, never a password.
- One session per maildrop in this process (`MaildropLocks`); a second one
  gets `-ERR [IN-USE]` (RFC 2449 §8.1.1). The lock is released when the
  connection ends, whatever the reason.
- Nothing is deleted unless the client sends QUIT in TRANSACTION; a dropped
  or timed-out connection changes nothing (RFC 1939 §6).
- Memory per connection is bounded: command lines by the framer, reading is
  paused when pipelined input piles up, and RETR/TOP stream the blob in chunks
  with write flow control (no whole message in memory).
- Unexpected exceptions are logged with the session id and end the
  connection with a generic `-ERR [SYS/TEMP]`; no traceback goes on the wire.

Standards: RFC 1939 (POP3), RFC 2449 (CAPA, response codes), RFC 2595 §4
(STLS), RFC 3206 (SYS, AUTH codes), RFC 5034 (AUTH, SASL-IR), RFC 4616 (PLAIN).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar, Final, assert_never

import structlog

from postwerk.core.ids import new_id
from postwerk.directory.passwords import LoginThrottle
from postwerk.directory.server_auth import ServerTrust
from postwerk.directory.service import Directory
from postwerk.frontend import mail_proxy
from postwerk.frontend.routing import (
    LocalRoute,
    MailboxBackend,
    MailboxLocator,
    RemoteRoute,
    Unavailable,
)
from postwerk.protocols.pop3 import (
    Auth,
    Capa,
    Close,
    Command,
    CommandReceived,
    CommandRejected,
    Commit,
    Delegated,
    DotStuffer,
    LineReceived,
    MaildropEntry,
    NeedData,
    Pass,
    Pop3Framer,
    Pop3Session,
    Reply,
    ResponseCode,
    SendMessage,
    Stls,
    User,
    Utf8,
    auth_list_reply,
    capa_reply,
    greeting,
    sasl_challenge,
)
from postwerk.protocols.pop3 import session as replies
from postwerk.protocols.sasl import mechanisms as sasl
from postwerk.services.channel import ConnectionCounts, FramedChannel, ServiceListener
from postwerk.services.protocol_settings import AccessSettings
from postwerk.store.api import BlobStore, MailStore
from postwerk.store.records import Item, Recipient

SASL_MECHANISMS: Final = ("PLAIN", "LOGIN")
STREAM_CHUNK: Final = 64 * 1024  # blob read size for RETR/TOP
INLINE_MESSAGE_BYTES: Final = 256 * 1024  # smaller messages are read whole, inline

# Replies only the service sends (the core's are in protocols/pop3/session.py).
TOO_MANY_BAD_COMMANDS: Final = Reply(False, "too many bad commands, closing connection")
TOO_MANY_CONNECTIONS: Final = Reply(False, "too many connections", ResponseCode.SYS_TEMP)
TOO_MANY_USER_CONNECTIONS: Final = Reply(
    False, "too many connections for this user", ResponseCode.SYS_TEMP
)
STLS_UNAVAILABLE: Final = Reply(False, "STLS not available")
UTF8_UNSUPPORTED: Final = Reply(False, "UTF8 not supported")
BAD_BASE64: Final = Reply(False, "invalid base64 data")
ALREADY_USER: Final = Reply(False, "USER already given, send PASS")
SERVER_ERROR: Final = Reply(False, "internal error, closing connection", ResponseCode.SYS_TEMP)


@dataclass(frozen=True, slots=True)
class Pop3Settings(AccessSettings):
    """POP3 service settings (Set-PopSettings); RFC 1939 §3 asks for at least 10
    minutes of idle time after login. The maildrop lock already admits one
    session per mailbox in this process, whatever max_connections_per_user says."""

    PROTOCOL: ClassVar[str] = "pop3"

    banner: str = "The Microsoft Exchange POP3 service is ready."
    port: int = 110
    ssl_port: int = 995


class MaildropLocks:
    """Exclusive maildrop locks by mailbox id, for one process (RFC 1939 §8)."""

    def __init__(self) -> None:
        self._held: set[int] = set()

    def acquire(self, mailbox_id: int) -> bool:
        if mailbox_id in self._held:
            return False
        self._held.add(mailbox_id)
        return True

    def release(self, mailbox_id: int) -> None:
        self._held.discard(mailbox_id)

    def held(self, mailbox_id: int) -> bool:
        return mailbox_id in self._held


@dataclass
class Pop3Context:
    """What every POP3 connection needs; built by the composition root and shared
    by the 110 and 995 listeners, so locks and connection limits span both."""

    directory: Directory
    locator: MailboxLocator  # where each user's mailbox is served (frontend/routing.py)
    throttle: LoginThrottle
    tls_context: ssl.SSLContext | None
    settings: Pop3Settings = field(default_factory=Pop3Settings)
    tarpit_override: float | None = None  # tests shorten the failed-login tarpit
    # The organization's server credentials: a front end proxies remote mailboxes
    # with them, a back end accepts logins on a user's behalf from other servers
    # (frontend/mail_proxy.py). None: neither.
    trust: ServerTrust | None = None
    # A back-end service (1993/1995): logins on a user's behalf by organization servers
    # are accepted here, and only here, never on the client-facing ports.
    accepts_proxy_logins: bool = False
    locks: MaildropLocks = field(default_factory=MaildropLocks)
    log: structlog.stdlib.BoundLogger = field(
        default_factory=lambda: structlog.get_logger("postwerk.pop3")
    )
    # Live connections: per client address, and authenticated ones per mailbox.
    by_ip: ConnectionCounts[str] = field(default_factory=ConnectionCounts)
    by_user: ConnectionCounts[int] = field(default_factory=ConnectionCounts)


Pop3Channel = FramedChannel[Pop3Framer]


class _TopCutter:
    """Streaming `top_of`: pass chunks through until the header, the blank line
    and `lines` body lines have gone by (RFC 1939 §7). Same cut as `top_of` on
    the whole message, without holding it in memory."""

    _BLANK_AT_START = re.compile(rb"\A\r?\n|\n\r?\n")
    _BLANK = re.compile(rb"\n\r?\n")

    def __init__(self, lines: int) -> None:
        self._lines = lines
        self._in_header = True
        self._seen = 0  # octets passed so far
        self._tail = b""  # the last two octets passed, for a split "\n\r\n"
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done or not chunk:
            return b""
        start = 0
        if self._in_header:
            data = self._tail + chunk
            # While the tail is all that came before, "\A" is the message start.
            at_start = self._seen == len(self._tail)
            pattern = self._BLANK_AT_START if at_start else self._BLANK
            self._seen += len(chunk)
            match = pattern.search(data)
            if match is None:
                self._tail = data[-2:]
                return chunk
            # A match ends in this chunk: earlier data held none.
            start = match.end() - len(self._tail)
            self._in_header = False
        if self._lines == 0:
            self.done = True
            return chunk[:start]
        newlines = chunk.count(b"\n", start)
        if newlines < self._lines:
            self._lines -= newlines
            return chunk
        pos = start
        for _ in range(self._lines):
            pos = chunk.index(b"\n", pos) + 1
        self.done = True
        return chunk[:pos]


class Pop3Connection:
    """One client connection: the command loop, authentication, the maildrop."""

    def __init__(
        self,
        ctx: Pop3Context,
        channel: Pop3Channel,
        peer_ip: str,
        implicit_tls: bool,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.channel = channel
        self.framer = channel.framer
        self.session = Pop3Session()
        self.peer_ip = peer_ip
        self.session_id = new_id()
        self.log = ctx.log.bind(session_id=self.session_id, client_ip=peer_ip)
        self.tls_active = implicit_tls
        self.user_name: str | None = None  # from USER, waiting for PASS
        self.user: Recipient | None = None
        self.backend: MailboxBackend | None = None  # the user's mailbox, from login on
        # Or the back-end session the login opened, for a mailbox on another server.
        self.proxy: mail_proxy.Backend | None = None
        self.locked: int | None = None  # mailbox id whose maildrop this session holds
        self.folder_id = 0
        self.items: dict[str, Item] = {}  # unique-id -> item, the login snapshot
        self.bad_commands = 0
        self.stopping = False
        self._out: list[bytes] = []

    @property
    def mail(self) -> MailStore:
        assert self.backend is not None
        return self.backend.mail

    @property
    def blobs(self) -> BlobStore:
        assert self.backend is not None
        return self.backend.blobs

    # ------------------------------------------------------------ the loop

    def send(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    def _flush(self) -> None:
        if self._out:
            self.channel.write(b"".join(self._out))
            self._out.clear()

    async def run(self) -> None:
        self.log.info("connect", tls=self.tls_active)
        self.send(greeting(self.settings.banner))
        try:
            await self._loop()
        except Exception:
            self.log.exception("session_failed")
            self._out.clear()
            self.send(SERVER_ERROR)
        finally:
            self._flush()
            self.channel.close()
            self._release()
            self.log.info("disconnect")

    async def _loop(self) -> None:
        # PIPELINING (RFC 2449 §6.6): answers are collected and written when the
        # client's buffered input is used up, or before a message is streamed.
        while not self.stopping:
            event = self.framer.next_event()
            match event:
                case NeedData():
                    self._flush()
                    if not await self._wait():
                        return
                case CommandReceived(command=command):
                    if not self.session.allowed(command) and self._bad_command():
                        return
                    if not await self._handle(command):
                        return
                case CommandRejected(text=text):
                    if self._bad_command():
                        return
                    self.send(Reply(False, text))
                case LineReceived():
                    # Only after expect_line, which `_read_auth_line` consumes itself.
                    self.send(replies.WRONG_STATE)
                case _:
                    assert_never(event)

    def _bad_command(self) -> bool:
        """Count a bad command; True (and the closing reply queued) past the limit."""
        self.bad_commands += 1
        if self.bad_commands > self.settings.max_bad_commands:
            self.log.info("too_many_bad_commands")
            self.send(TOO_MANY_BAD_COMMANDS)
            return True
        return False

    async def _wait(self) -> bool:
        """Wait for input within the idle timeout; False to close the connection.

        RFC 1939 §3: at the autologout timer the server closes without a reply
        and without removing any message.
        """
        if self.channel.closed:
            return False
        timeout = (
            self.settings.idle_timeout_after_login
            if self.user is not None
            else self.settings.idle_timeout_before_login
        )
        try:
            await asyncio.wait_for(self.channel.wait_for_data(), timeout)
        except TimeoutError:
            self.log.info("timeout", authenticated=self.user is not None)
            return False
        return not (self.channel.closed and self.framer.buffered == 0)

    async def _handle(self, command: Command) -> bool:
        """Act on one command; False when the connection must close."""
        outcome = self.session.handle(command)
        match outcome:
            case Reply():
                self.send(outcome)
            case Delegated(command=delegated):
                return await self._delegated(delegated)
            case SendMessage():
                return await self._send_message(outcome)
            case Commit(delete=uids):
                self.send(await self._commit(uids))
                return False
            case Close(reply=reply):
                self.send(reply)
                return False
            case _:
                assert_never(outcome)
        return True

    def shutdown(self) -> None:
        """Server stopping: hang up; nothing is deleted (RFC 1939 §6)."""
        self.stopping = True
        self._out.clear()
        self.channel.close()

    # ------------------------------------------------------------ AUTHORIZATION

    async def _delegated(self, command: User | Pass | Auth | Stls | Capa | Utf8) -> bool:
        plaintext = self.settings.plaintext_allowed(self.tls_active)
        match command:
            case Capa():
                self.send(
                    capa_reply(
                        plaintext_allowed=plaintext,
                        tls_active=self.tls_active,
                        starttls_available=self.ctx.tls_context is not None,
                        sasl_mechanisms=SASL_MECHANISMS,
                    )
                )
            case User(name=name):
                self.send(self._on_user(name, plaintext))
            case Pass(password=password):
                self.send(await self._on_pass(password, plaintext))
                return await self._after_login()
            case Auth():
                self.send(await self._on_auth(command, plaintext))
                return await self._after_login()
            case Stls():
                return await self._on_stls()
            case Utf8():
                self.send(UTF8_UNSUPPORTED)  # not advertised: messages are sent as stored
            case _:
                assert_never(command)
        return not self.channel.closed

    def _on_user(self, name: str, plaintext: bool) -> Reply:
        if not plaintext:
            # Refused here, so a client never gets as far as sending PASS in the clear.
            return replies.PLAINTEXT_DISALLOWED
        if self.user_name is not None:
            return ALREADY_USER
        self.user_name = name
        return replies.USER_ACCEPTED  # the same whether the user exists or not

    async def _on_pass(self, password: str, plaintext: bool) -> Reply:
        if not plaintext:
            return replies.PLAINTEXT_DISALLOWED
        name = self.user_name
        if name is None:
            return replies.PASS_WITHOUT_USER
        self.user_name = None  # RFC 1939 §7: after a failed PASS the client starts at USER
        return await self._login(sasl.Credentials("", name, password), "USER")

    async def _on_auth(self, command: Auth, plaintext: bool) -> Reply:
        if command.mechanism is None:
            return auth_list_reply(SASL_MECHANISMS, plaintext_allowed=plaintext)
        if command.mechanism not in SASL_MECHANISMS:
            return replies.UNKNOWN_MECHANISM
        mechanism = sasl.create(command.mechanism)
        if mechanism is None:
            return replies.UNKNOWN_MECHANISM
        if mechanism.plaintext and not plaintext:
            return replies.PLAINTEXT_DISALLOWED
        initial: bytes | None = None
        if command.initial_response is not None:  # RFC 5034 §4 SASL-IR
            decoded = sasl.decode_response(command.initial_response.encode("ascii"))
            if isinstance(decoded, sasl.SaslError):
                return replies.AUTH_CANCELLED if decoded is sasl.CANCELLED else BAD_BASE64
            initial = decoded
        outcome = mechanism.start(initial)
        while isinstance(outcome, sasl.Challenge):
            self._flush()
            self.channel.write(sasl_challenge(outcome.data))
            line = await self._read_auth_line()
            if line is None:
                return replies.AUTH_CANCELLED
            decoded = sasl.decode_response(line)
            if isinstance(decoded, sasl.SaslError):
                return replies.AUTH_CANCELLED if decoded is sasl.CANCELLED else BAD_BASE64
            outcome = mechanism.step(decoded)
        if isinstance(outcome, sasl.SaslError):
            return await self._auth_failed(None, outcome.reason)
        return await self._login(outcome, mechanism.name)

    async def _read_auth_line(self) -> bytes | None:
        """The client's answer to a "+ " challenge; None if the connection went away."""
        self.framer.expect_line()
        while True:
            event = self.framer.next_event()
            match event:
                case LineReceived(line=line):
                    return line
                case NeedData():
                    if not await self._wait():
                        self.stopping = True
                        return None
                case CommandRejected():
                    return b"*"  # an over-long response: treat as a cancel
                case CommandReceived():
                    return None  # not reachable in LINE mode; be safe

    async def _login(self, creds: sasl.Credentials, method: str) -> Reply:
        account = creds.authcid
        throttle = self.ctx.throttle
        trust = self.ctx.trust
        on_behalf = bool(creds.authzid) and creds.authzid.lower() != account.lower()
        if on_behalf and trust is not None and self.ctx.accepts_proxy_logins:
            # Another organization server logging in for a user (frontend/mail_proxy.py).
            # Failures count against the address only: a server label locked out by
            # strangers' attempts would shut the proxy for everyone, and a server
            # password (an HMAC) cannot be guessed.
            if throttle.locked_out(self.peer_ip, None):
                return await self._auth_failed(account, "locked out", count=False)
            user = await mail_proxy.accept_on_behalf(self.ctx.directory, trust, creds)
            if user is None:
                reason = "not a server's login on behalf of a mailbox"
                return await self._auth_failed(account, reason, by_account=False)
            method = f"{method} by server {account.upper()}"
            account = user.primary_address
        else:
            if throttle.locked_out(self.peer_ip, account):
                return await self._auth_failed(account, "locked out", count=False)
            if on_behalf:
                return await self._auth_failed(account, "authzid differs from authcid")
            # Primary address or any alias; argon2 runs off the event loop.
            found = await self.ctx.directory.authenticate(account, creds.password)
            if found is None:
                return await self._auth_failed(account, "bad credentials")
            user = found
            throttle.record_success(self.peer_ip, account)
        if self.ctx.by_user[user.id] >= self.settings.max_connections_per_user:
            self.log.info("login_refused", account=account, reason="user connection limit")
            return TOO_MANY_USER_CONNECTIONS
        route = await self.ctx.locator.locate(user, "pop3")
        if isinstance(route, RemoteRoute) and not on_behalf:
            return await self._login_remote(user, route, account, method)
        if not isinstance(route, LocalRoute):
            # A session a front end proxied here is never proxied on again (the
            # mailbox moved since the front end looked): no loops between servers.
            reason = route.reason if isinstance(route, Unavailable) else "proxied, not here"
            self.log.warning("mailbox_unavailable", account=account, reason=reason)
            return replies.TEMP_FAILURE
        self.backend = route.backend
        if not self.ctx.locks.acquire(user.id):
            self.log.info("login_refused", account=account, reason="maildrop in use")
            return replies.MAILDROP_IN_USE
        self.locked = user.id
        try:
            maildrop = await self._snapshot(user.id)
        except Exception:
            self.log.exception("maildrop_failed", account=account)
            self._release()
            return replies.TEMP_FAILURE
        self.user = user
        self.ctx.by_user.add(user.id)
        self.log.info(
            "login",
            account=account,
            mailbox=user.primary_address,
            method=method,
            messages=len(maildrop),
        )
        return self.session.begin_transaction(maildrop)

    async def _login_remote(
        self, user: Recipient, route: RemoteRoute, account: str, method: str
    ) -> Reply:
        """The front end's half for a mailbox on another server: log in to its back end
        on the user's behalf (which locks the maildrop there); the relay starts once
        the back end's "+OK" is passed on (`_after_login`)."""
        trust = self.ctx.trust
        if trust is None:
            self.log.warning("mailbox_unavailable", account=account, reason="no server trust")
            return replies.TEMP_FAILURE
        opened = await mail_proxy.open_backend(route, "pop3", user.primary_address, trust, self.log)
        if isinstance(opened, mail_proxy.Refused):
            # The maildrop lock is the back end's: a second session anywhere is IN-USE.
            in_use = opened.code == ResponseCode.IN_USE
            return replies.MAILDROP_IN_USE if in_use else replies.TEMP_FAILURE
        if self.stopping or self.channel.closed:
            opened.link.close()  # the client or the server went away meanwhile
            return replies.TEMP_FAILURE
        self.proxy = opened
        self.user = user
        self.ctx.by_user.add(user.id)  # the front end's own limit counts proxied sessions
        self.log.info(
            "login",
            account=account,
            mailbox=user.primary_address,
            method=method,
            server=route.server,
        )
        return Reply(True, opened.text)  # the back end's "+OK" (its maildrop's size)

    async def _after_login(self) -> bool:
        """After a PASS or AUTH reply: relay a proxied session to the end (the reply
        first, then what the client pipelined behind it)."""
        if self.proxy is None:
            return not self.channel.closed
        self._flush()
        await mail_proxy.relay(self.channel, self.proxy, self.log)
        return False

    async def _snapshot(self, mailbox_id: int) -> list[MaildropEntry]:
        """The Inbox at login (Exchange's POP3 sees only the Inbox), oldest first."""
        folder = await self.mail.get_folder(mailbox_id, "Inbox")
        self.folder_id = folder.id
        items = sorted(await self.mail.list_items(folder.id), key=lambda i: i.uid)
        entries = []
        for item in items:
            if not item.blob_id:
                continue  # an item without MIME content has nothing to retrieve
            # RFC 1939 §7 unique-id: stable across sessions while UIDVALIDITY holds.
            uid = f"{folder.uidvalidity}.{item.uid}"
            self.items[uid] = item
            # `item.size` counts the header prefix and the blob: the bytes RETR sends
            # before dot-stuffing (stored mail has CRLF line ends; RFC 1939 §11).
            entries.append(MaildropEntry(uid, item.size))
        return entries

    async def _auth_failed(
        self, account: str | None, reason: str, count: bool = True, by_account: bool = True
    ) -> Reply:
        throttle = self.ctx.throttle
        if count:
            throttle.record_failure(self.peer_ip, account if by_account else None)
        self.log.warning("login_failed", account=account, reason=reason)
        delay = (
            self.ctx.tarpit_override
            if self.ctx.tarpit_override is not None
            else throttle.delay_for(self.peer_ip, account)
        )
        if delay > 0:
            self._flush()
            await asyncio.sleep(delay)
        return replies.AUTH_FAILED

    async def _on_stls(self) -> bool:
        tls_context = self.ctx.tls_context
        if self.tls_active:
            self.send(replies.TLS_ACTIVE)
            return True
        if tls_context is None:
            self.send(STLS_UNAVAILABLE)
            return True
        dropped = self.framer.discard_buffered()  # CVE-2011-0411
        if dropped:
            self.log.warning("stls_injection_discarded", bytes=dropped)
        self.send(replies.BEGIN_TLS)
        self._flush()
        if not await self.channel.start_tls(tls_context, self.log):
            return False
        self.tls_active = True
        # RFC 2595 §4: forget what the client said before TLS (a USER name).
        self.user_name = None
        return True

    # ------------------------------------------------------------ TRANSACTION, UPDATE

    async def _send_message(self, order: SendMessage) -> bool:
        item = self.items[order.uid]
        if item.size <= INLINE_MESSAGE_BYTES:
            return await self._send_small(order, item)
        try:
            chunks = self.blobs.stream(item.blob_id, STREAM_CHUNK)
            first = await anext(chunks, b"")
        except Exception:
            # Nothing of the body was sent yet, so the client can be told.
            self.log.warning("message_unreadable", uid=order.uid, exc_info=True)
            self.send(replies.TEMP_FAILURE)
            return True
        self.send(order.head())
        self._flush()
        stuffer = DotStuffer()
        cutter = _TopCutter(order.lines) if order.lines is not None else None
        message = _prepend(item.header_prefix, first, chunks)
        try:
            async for chunk in message:
                data = cutter.feed(chunk) if cutter is not None else chunk
                out = stuffer.feed(data)
                if out:
                    self.channel.write(out)
                    await self.channel.drain()
                if self.channel.closed or (cutter is not None and cutter.done):
                    break
        except Exception:
            # Half a body cannot be taken back: the only honest end is to close.
            self.log.warning("message_stream_failed", uid=order.uid, exc_info=True)
            return False
        finally:
            await message.aclose()
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()  # the blob's file handle, if TOP stopped early
        self.channel.write(stuffer.finish())
        return not self.channel.closed

    async def _send_small(self, order: SendMessage, item: Item) -> bool:
        """A message small enough to read at once on this thread: three thread
        hops per RETR (open, read, EOF) cost more than reading it here."""
        try:
            found = await self.blobs.read_many([item.blob_id], inline=True)
            data = item.header_prefix + found[item.blob_id]
        except Exception:
            self.log.warning("message_unreadable", uid=order.uid, exc_info=True)
            self.send(replies.TEMP_FAILURE)
            return True
        if order.lines is not None:
            cutter = _TopCutter(order.lines)
            data = cutter.feed(data)
        stuffer = DotStuffer()
        self.send(order.head())
        self._out.append(stuffer.feed(data) + stuffer.finish())
        return not self.channel.closed

    async def _commit(self, uids: tuple[str, ...]) -> Reply:
        """RFC 1939 §6 UPDATE: expunge the marked items, then answer."""
        assert self.user is not None
        if uids:
            wanted = [self.items[uid].uid for uid in uids]
            try:
                # An item already gone (another client expunged it) counts as removed.
                await self.mail.expunge(self.folder_id, wanted)
            except Exception:
                self.log.exception("update_failed", mailbox=self.user.primary_address)
                return replies.UPDATE_FAILED
            notifier = self.backend.notifier if self.backend is not None else None
            if notifier is not None:
                notifier.changed((self.user.id,))  # IMAP sessions on this Inbox
        self.log.info("logout", mailbox=self.user.primary_address, deleted=len(uids))
        return replies.BYE

    def _release(self) -> None:
        if self.locked is not None:
            self.ctx.locks.release(self.locked)
            self.locked = None
        if self.user is not None:
            self.ctx.by_user.remove(self.user.id)
            self.user = None


async def _prepend(
    prefix: bytes, first: bytes, rest: AsyncIterator[bytes]
) -> AsyncGenerator[bytes, None]:
    """The stored message: the per-recipient header prefix, then the shared blob."""
    if prefix:
        yield prefix
    if first:
        yield first
    async for chunk in rest:
        yield chunk


class Pop3Listener(ServiceListener[Pop3Framer]):
    """One listening socket: 995 with `implicit_tls`, else 110 with STLS offered.

    Construct with a `Pop3Context` (shared by both listeners), then
    `await start()`; `bound_port` is the port in use (0 picks one);
    `await stop()` closes the socket and every connection; nothing is deleted
    (RFC 1939 §6).
    """

    ctx: Pop3Context

    def __init__(
        self, ctx: Pop3Context, host: str | None, port: int, *, implicit_tls: bool = False
    ) -> None:
        super().__init__(ctx, host, port, implicit_tls=implicit_tls)

    def make_framer(self) -> Pop3Framer:
        return Pop3Framer()

    def too_many(self) -> bytes:
        return TOO_MANY_CONNECTIONS.to_bytes()

    def connection(self, channel: Pop3Channel, ip: str) -> Pop3Connection:
        return Pop3Connection(self.ctx, channel, ip, self.implicit_tls)
