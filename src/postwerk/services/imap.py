"""The IMAP4 back-end service: listeners on 143 (STARTTLS) and 993 (implicit TLS).

Purpose: accept connections and drive the sans-I/O IMAP core
(`protocols/imap`: `CommandFramer`, `parse_command`, `responses`) over the
mailbox store, as Exchange 2013's IMAP4 front end and back-end service do
together: up to login the front end's part, then the store the login's route
(`frontend/routing.py`) leads to. An
`ImapChannel` (asyncio Protocol) moves bytes; an `ImapConnection` task per
client runs the command loop, with one exhaustive `match` over the command
types and a table of the commands each state allows (RFC 9051 §3). The
selected folder is a `mailbox.imap_view.FolderView`: sequence numbers,
pending EXPUNGEs and flag updates live there.

Security invariants:
- Plaintext pipelined behind STARTTLS is dropped before the handshake
  (RFC 9051 §11.1, CVE-2011-0411): the framer owns the only input buffer and
  is cleared before the OK is written; no await runs in between.
- Under `LoginType.SECURE_LOGIN` (the default) LOGIN and AUTHENTICATE PLAIN
  are refused before TLS and LOGINDISABLED is advertised (RFC 9051 §6.2.3,
  RFC 8314); the password never travels in the clear.
- Failed logins go through `LoginThrottle`; logs carry the login name, never a
  password.
- Memory per connection is bounded: command text by the framer (`max_line`),
  literals to `max_literal_before_login` until login and to `append_limit`
  after; a synchronizing literal over the limit is refused with NO [TOOBIG]
  before a single octet of it is sent (RFC 7889). A FETCH holds at most one
  message (≤ append limit / transport maximum) at a time.
- Every mailbox name the client sends is resolved inside the authenticated
  user's own mailbox (`mailbox_id` = the user's id); there is no path to
  another user's folders.
- Unexpected exceptions end the connection with `* BYE` and a generic text;
  details go to the log, never a traceback on the wire. Store errors that a
  client can cause map to NO with a response code (RFC 5530).
- No EXPUNGE response is sent while a FETCH, STORE, SEARCH, COPY or MOVE by
  sequence number is answered (RFC 9051 §7.5.1).

Standards: RFC 3501 (IMAP4rev1), RFC 9051 (IMAP4rev2, once ENABLEd), RFC 2177
(IDLE), RFC 2342 (NAMESPACE), RFC 2971 (ID), RFC 3516 (BINARY), RFC 3691
(UNSELECT), RFC 4315 (UIDPLUS), RFC 4731 (ESEARCH), RFC 4959 (SASL-IR), RFC 4616
(PLAIN), RFC 4978 (COMPRESS), RFC 5161 (ENABLE), RFC 5182 (SEARCHRES), RFC 5258
and 5819 (LIST-EXTENDED, LIST-STATUS), RFC 5530 (response codes), RFC 6154
(SPECIAL-USE), RFC 6851 (MOVE), RFC 6855 (UTF8=ACCEPT), RFC 7162 (CONDSTORE,
QRESYNC), RFC 7888 (LITERAL+), RFC 7889 (APPENDLIMIT), RFC 8438 (STATUS=SIZE),
RFC 9208 (QUOTA).
"""

from __future__ import annotations

import asyncio
import bisect
import email.utils
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from typing import ClassVar, Final, assert_never

import structlog
from sqlalchemy.exc import SQLAlchemyError

from postwerk.core.errors import (
    AlreadyExists,
    DefaultFolderProtected,
    FolderHasChildren,
    FolderNotFound,
    InvalidName,
    NotFound,
    NotPermitted,
)
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
from postwerk.mailbox.folder_sync import changes_for
from postwerk.mailbox.imap_view import SYSTEM_FLAG_BITS, FolderView, flag_names
from postwerk.mailbox.notify import MailboxWatch
from postwerk.mime.summary import MessageSummary, decode_words, summarize
from postwerk.protocols.imap import (
    Append,
    Authenticate,
    BinarySection,
    BinarySize,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    CommandFramer,
    CommandReceived,
    CommandRejected,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    FetchItem,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    LineReceived,
    List,
    LiteralNeeded,
    LiteralRefused,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    NeedData,
    Noop,
    Rename,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSequence,
    SearchSize,
    SearchText,
    Section,
    SectionText,
    Select,
    SequenceSet,
    SetQuota,
    StartTls,
    Status,
    Store,
    StoreMode,
    Subscribe,
    UidExpunge,
    Unselect,
    Unsubscribe,
)
from postwerk.protocols.imap import responses as r
from postwerk.protocols.imap.sections import (
    UnknownEncoding,
    binary_bytes,
    header_fields,
    no_nul,
    section_bytes,
    section_name,
)
from postwerk.protocols.imap.utf7 import decode_mailbox, valid_mailbox_name
from postwerk.protocols.sasl import mechanisms as sasl
from postwerk.services.channel import ConnectionCounts, FramedChannel, ServiceListener
from postwerk.services.protocol_settings import AccessSettings
from postwerk.store.api import SEPARATOR, BlobStore, MailStore
from postwerk.store.records import (
    Flag,
    Folder,
    FolderChanges,
    Item,
    ItemBrief,
    ItemHead,
    ItemRange,
    ItemState,
    NewItem,
    Recipient,
)

SASL_MECHANISMS: Final = ("PLAIN",)
PERMANENT_FLAGS: Final = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\*")
FOLDER_FLAGS: Final = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
# FETCH items answered from the session's view, without reading the item.
STATE_ATTRIBUTES: Final = frozenset({FetchItem.FLAGS, FetchItem.UID, FetchItem.MODSEQ})
# FETCH items answered from `MailStore.item_briefs` (with the view's state).
BRIEF_ATTRIBUTES: Final = STATE_ATTRIBUTES | {
    FetchItem.RFC822_SIZE,
    FetchItem.INTERNALDATE,
    FetchItem.ENVELOPE,
}
# Message files read together for a FETCH chunk (each at most this big, too).
PREFETCH_BYTES: Final = 4 * 1024 * 1024
INLINE_FILE_BYTES: Final = 1024 * 1024  # read on the event loop's thread up to this
# Items read (and responses flushed) per step of a large FETCH or SEARCH.
FETCH_CHUNK: Final = 256
BASE_CAPABILITIES: Final = (
    "IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
)  # fmt: skip
AUTHENTICATED_CAPABILITIES: Final = (
    "IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE",
    "ID", "ENABLE", "UNSELECT", "SPECIAL-USE", "CHILDREN", "CONDSTORE", "QRESYNC", "ESEARCH",
    "SEARCHRES", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "BINARY", "UTF8=ACCEPT",
    "COMPRESS=DEFLATE", "QUOTA", "QUOTA=RES-STORAGE",
)  # fmt: skip
QUOTA_ROOT: Final = ""  # one quota root per mailbox, covering every folder
# What ENABLE can turn on (RFC 5161); QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
# IMAP4rev2 (RFC 9051 §6.3.1) and UTF8=ACCEPT (RFC 6855 §3) switch mailbox names
# to UTF-8; IMAP4rev2 also drops RECENT and answers every SEARCH with ESEARCH.
ENABLEABLE: Final = ("CONDSTORE", "QRESYNC", "IMAP4rev2", "UTF8=ACCEPT")
_ENABLEABLE_BY_UPPER: Final = {cap.upper(): cap for cap in ENABLEABLE}
# RFC 4731 §3.1 result options, and RFC 5182 SAVE (SEARCHRES).
ESEARCH_RESULTS: Final = frozenset({"MIN", "MAX", "COUNT", "ALL", "SAVE"})
SEARCH_CHARSETS: Final = ("UTF-8", "US-ASCII")
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")


class State:
    """RFC 9051 §3 connection states, for the ALLOWED table."""

    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"


_ANY: Final = (Capability, Noop, Logout, Id)
_AUTHENTICATED: Final = (
    Enable, Select, Examine, Create, Delete, Rename, Subscribe, Unsubscribe, List, Lsub,
    Namespace, Status, Append, Idle, GetQuota, GetQuotaRoot, SetQuota, Compress,
)  # fmt: skip
_SELECTED_ONLY: Final = (
    Check,
    Close,
    Unselect,
    Expunge,
    UidExpunge,
    Search,
    Fetch,
    Store,
    Copy,
    Move,
)
# Which commands each state admits (RFC 9051 §6.1-§6.4); anything else is BAD.
ALLOWED: Final[dict[str, tuple[type, ...]]] = {
    State.NOT_AUTHENTICATED: (*_ANY, StartTls, Authenticate, Login),
    State.AUTHENTICATED: (*_ANY, *_AUTHENTICATED),
    State.SELECTED: (*_ANY, *_AUTHENTICATED, *_SELECTED_ONLY),
}


@dataclass(frozen=True, slots=True)
class ImapSettings(AccessSettings):
    """IMAP4 service settings (Set-ImapSettings). RFC 9051 §5.4 asks for at least 30
    minutes of idle time after login; IDLE resets the timer."""

    PROTOCOL: ClassVar[str] = "imap4"

    banner: str = "The Microsoft Exchange IMAP4 service is ready."
    port: int = 143
    ssl_port: int = 993
    max_line: int = 65536  # command text without literals; Dovecot's limit
    max_literal_before_login: int = 8192  # a LOGIN needs no megabytes
    append_limit: int = 35 * 1024 * 1024  # Exchange's default 35 MB message size


@dataclass
class ImapContext:
    """What every IMAP connection needs; shared by the 143 and 993 listeners, so
    connection limits span both. Built by the composition root."""

    directory: Directory
    locator: MailboxLocator  # where each user's mailbox is served (frontend/routing.py)
    throttle: LoginThrottle
    tls_context: ssl.SSLContext | None
    settings: ImapSettings = field(default_factory=ImapSettings)
    tarpit_override: float | None = None  # tests shorten the failed-login tarpit
    # The organization's server credentials: a front end proxies remote mailboxes
    # with them, a back end accepts logins on a user's behalf from other servers
    # (frontend/mail_proxy.py). None: neither.
    trust: ServerTrust | None = None
    # A back-end service (1993/1995): logins on a user's behalf by organization servers
    # are accepted here, and only here, never on the client-facing ports.
    accepts_proxy_logins: bool = False
    log: structlog.stdlib.BoundLogger = field(
        default_factory=lambda: structlog.get_logger("postwerk.imap")
    )
    by_ip: ConnectionCounts[str] = field(default_factory=ConnectionCounts)
    by_user: ConnectionCounts[int] = field(default_factory=ConnectionCounts)


ImapChannel = FramedChannel[CommandFramer]


def _unavailable(tag: str) -> bytes:
    text = "Your mailbox is not available right now, try again later"
    return r.tagged(tag, "NO", text, r.code("UNAVAILABLE"))  # RFC 5530


def _too_many_for_user(tag: str) -> bytes:
    return r.tagged(tag, "NO", "Too many connections for this user", r.code("LIMIT"))


class _Refused(Exception):
    """A handler's early NO/BAD; carries the tagged status line to send."""

    def __init__(self, status: r.Status, text: str, code: r.ResponseCode | None = None) -> None:
        super().__init__(text)
        self.status: r.Status = status
        self.text = text
        self.code = code


# ---------------------------------------------------------------- names


def imap_name(stored: str) -> str:
    """The name IMAP shows for a stored folder name: "Inbox" is "INBOX" (RFC 9051 §5.1)."""
    head, sep, rest = stored.partition(SEPARATOR)
    return "INBOX" + sep + rest if head == "Inbox" else stored


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """LIST wildcards: "*" matches anything, "%" anything but the delimiter (RFC 9051 §6.3.9)."""
    head, sep, rest = pattern.partition(SEPARATOR)
    if head.upper() == "INBOX":
        pattern = "INBOX" + sep + rest  # INBOX is case-insensitive in patterns too
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


# ---------------------------------------------------------------- SEARCH helpers


def _address_text(addresses: list[list[str | None]] | None) -> str:
    out = []
    for name, _adl, mailbox, host in addresses or ():
        if mailbox is None:
            continue
        display = decode_words(name) if name else ""
        out.append(f"{display} <{mailbox}@{host or ''}>")
    return ", ".join(out)


def _sent_date(summary: MessageSummary) -> date | None:
    """The date of the Date: header in its own zone (RFC 9051 §6.4.4 SENT*)."""
    raw = summary.envelope["date"]
    if not raw:
        return None
    parsed = email.utils.parsedate_tz(raw)
    if parsed is None:
        return None
    try:
        return date(parsed[0], parsed[1], parsed[2])
    except ValueError:
        return None


def _compare_date(day: date, op: str, when: date) -> bool:
    if op == "BEFORE":
        return day < when
    if op == "ON":
        return day == when
    return day >= when  # SINCE


# ---------------------------------------------------------------- the connection


class ImapConnection:
    """One client connection: the command loop, authentication, the selected folder."""

    def __init__(
        self, ctx: ImapContext, channel: ImapChannel, peer_ip: str, implicit_tls: bool
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.channel = channel
        self.framer = channel.framer
        self.peer_ip = peer_ip
        self.session_id = new_id()
        self.log = ctx.log.bind(session_id=self.session_id, client_ip=peer_ip)
        self.tls_active = implicit_tls
        self.user: Recipient | None = None
        self.backend: MailboxBackend | None = None  # the user's mailbox, from login on
        # Or the back-end session the login opened, for a mailbox on another server.
        self.proxy: mail_proxy.Backend | None = None
        self.folder: Folder | None = None  # the selected folder
        self.view: FolderView | None = None
        self.enabled: set[str] = set()  # ENABLE'd or implied extensions (CONDSTORE, QRESYNC)
        # RFC 5182 "$": UIDs of the last SEARCH RETURN (SAVE) in this selection.
        self.saved: frozenset[int] = frozenset()
        # The UIDs each size or date key of the running SEARCH matches (`_range_of`).
        self._range_hits: dict[SearchKey, frozenset[int]] = {}
        self.bad_commands = 0
        self.stopping = False
        self._out: list[bytes] = []

    # ------------------------------------------------------------ output

    def send(self, data: bytes) -> None:
        self._out.append(data)

    def _flush(self) -> None:
        if self._out:
            self.channel.write(b"".join(self._out))
            self._out.clear()

    @property
    def state(self) -> str:
        if self.user is None:
            return State.NOT_AUTHENTICATED
        return State.SELECTED if self.view is not None else State.AUTHENTICATED

    @property
    def rev2(self) -> bool:
        """IMAP4rev2 behaviour (RFC 9051) once the client enabled it."""
        return "IMAP4rev2" in self.enabled

    @property
    def utf8(self) -> bool:
        """Mailbox names in UTF-8, not modified UTF-7 (RFC 6855 §3, RFC 9051 §5.1)."""
        return "UTF8=ACCEPT" in self.enabled or "IMAP4rev2" in self.enabled

    @property
    def mailbox_id(self) -> int:
        assert self.user is not None
        return self.user.id

    @property
    def mail(self) -> MailStore:
        assert self.backend is not None
        return self.backend.mail

    @property
    def blobs(self) -> BlobStore:
        assert self.backend is not None
        return self.backend.blobs

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        self.log.info("connect", tls=self.tls_active)
        caps = " ".join(self._capabilities())
        self.send(r.untagged_status("OK", self.settings.banner, r.code("CAPABILITY", caps.split())))
        try:
            await self._loop()
        except Exception:
            self.log.exception("session_failed")
            self._out.clear()
            self.send(r.untagged_status("BYE", "Internal error, closing connection"))
        finally:
            self._flush()
            self.channel.close()
            self._release()
            self.log.info("disconnect")

    async def _loop(self) -> None:
        while not self.stopping:
            event = self.framer.next_event()
            match event:
                case NeedData():
                    self._flush()
                    if not await self._wait():
                        return
                case LiteralNeeded(tag=tag, size=size):
                    if self.user is not None and size > self.settings.append_limit:
                        self.framer.discard_command()
                        self.send(r.tagged(tag, "NO", "Message too big", r.code("TOOBIG")))
                    else:
                        self.send(r.continuation("Ready for literal data"))
                        self._flush()
                case LiteralRefused(tag=tag, synchronizing=sync, text=text):
                    if tag is None:
                        self.send(r.untagged_status("BAD", text))
                    elif sync:
                        self.send(r.tagged(tag, "NO", text, r.code("TOOBIG")))
                    else:
                        self.send(r.tagged(tag, "BAD", text))
                case CommandRejected(tag=tag, text=text):
                    if self._bad_command():
                        return
                    if tag is None:
                        self.send(r.untagged_status("BAD", text))
                    else:
                        self.send(r.tagged(tag, "BAD", text))
                case LineReceived():
                    if self._bad_command():
                        return
                    self.send(r.untagged_status("BAD", "Unexpected line"))
                case CommandReceived(command=command):
                    if not isinstance(command, ALLOWED[self.state]):
                        if self._bad_command():
                            return
                        self.send(
                            r.tagged(command.tag, "BAD", f"Command not valid in {self.state} state")
                        )
                        continue
                    try:
                        if not await self._handle(command):
                            return
                    except _Refused as refused:
                        self.send(r.tagged(command.tag, refused.status, refused.text, refused.code))
                    except (OSError, SQLAlchemyError) as exc:
                        # A store or file failure fails this command, not the session
                        # (POP3's -ERR [SYS/TEMP]); the client may retry.
                        self.log.exception("command_failed", command=type(command).__name__)
                        text = f"Internal error ({type(exc).__name__}), try again later"
                        self.send(r.tagged(command.tag, "NO", text, r.code("SERVERBUG")))
                case _:
                    assert_never(event)

    def _bad_command(self) -> bool:
        """Count a bad command; True (and BYE queued) past the limit."""
        self.bad_commands += 1
        if self.bad_commands > self.settings.max_bad_commands:
            self.log.info("too_many_bad_commands")
            self.send(r.untagged_status("BYE", "Too many invalid commands"))
            return True
        return False

    async def _wait(self) -> bool:
        """Wait for input within the idle timeout (RFC 9051 §5.4); False to close."""
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
            self.send(r.untagged_status("BYE", "Autologout; idle for too long"))
            return False
        return not (self.channel.closed and self.framer.buffered == 0)

    def shutdown(self) -> None:
        """Server stopping: say BYE and hang up (a relayed session only hangs up:
        a BYE of ours could land inside a literal or a compressed stream)."""
        self.stopping = True
        self._out.clear()
        if self.proxy is None:
            self.channel.write(r.untagged_status("BYE", "Server shutting down"))
        self.channel.close()

    def _release(self) -> None:
        if self.user is not None:
            self.ctx.by_user.remove(self.user.id)
            self.user = None

    def _changed(self) -> None:
        """Tell other sessions on this mailbox (IDLE, NOOP) to look again."""
        if self.backend is not None and self.backend.notifier is not None:
            self.backend.notifier.changed((self.mailbox_id,))

    # ------------------------------------------------------------ dispatch

    async def _handle(self, command: Command) -> bool:
        """Act on one command; False when the connection must close."""
        tag = command.tag
        # Pending EXPUNGEs may go out after commands that take no sequence numbers
        # (RFC 9051 §7.5.1); UID commands are allowed to carry them too.
        expunge_ok = True
        ok_code: r.ResponseCode | None = None
        try:
            return await self._dispatch(command)
        except _Done as done:
            ok_code = done.code
            expunge_ok = not isinstance(command, Fetch | Store | Search | Copy | Move) or bool(
                getattr(command, "uid", False)
            )
        if self.view is not None:
            await self._sync(expunge_ok)
        self.send(r.tagged(tag, "OK", _completed(command), ok_code))
        return not self.channel.closed

    async def _dispatch(self, command: Command) -> bool:
        tag = command.tag
        expunge_ok = True
        match command:
            # The commands of a session's steady state first (a match tries its
            # cases in order).
            case Fetch():
                expunge_ok = command.uid
                await self._on_fetch(command)
            case Select() | Examine():
                await self._on_select(command)
                return True
            case Search():
                expunge_ok = command.uid
                await self._on_search(command)
            case Store():
                expunge_ok = command.uid
                await self._on_store(command)
            case Capability():
                self.send(r.capability_line(self._capabilities()))
            case Noop() | Check():
                pass
            case Logout():
                self.send(r.untagged_status("BYE", "IMAP4 server signing off"))
                self.send(r.tagged(tag, "OK", "LOGOUT completed"))
                self.log.info("logout")
                return False
            case Id():
                self.send(r.id_line({"name": "postwerk"}))
            case StartTls():
                return await self._on_starttls(tag)
            case Login(user=user, password=password):
                self.send(await self._on_login(tag, user, password))
                return await self._after_login()  # the handler sent the tagged reply
            case Authenticate():
                self.send(await self._on_authenticate(command))
                return await self._after_login()
            case Enable(capabilities=wanted):
                self._on_enable(wanted)
            case Namespace():
                self.send(r.namespace_line([("", SEPARATOR)], None, None, utf8=self.utf8))
            case Create():
                await self._on_create(command)
            case Delete():
                await self._on_delete(command)
            case Rename():
                await self._on_rename(command)
            case Subscribe() | Unsubscribe():
                await self._on_subscribe(command)
            case List():
                await self._on_list(command)
            case Lsub():
                await self._on_lsub(command)
            case Status():
                await self._on_status(command)
            case Append():
                await self._on_append(command)
            case Idle():
                return await self._on_idle(tag)
            case Compress(mechanism=mechanism):
                return self._on_compress(tag, mechanism)
            case GetQuotaRoot(mailbox=mailbox):
                await self._on_getquotaroot(mailbox)
            case GetQuota(root=root):
                usage = await self._quota_usage() if root == QUOTA_ROOT else None
                if usage is None:
                    raise _Refused("NO", "No such quota root", r.code("NONEXISTENT"))
                self.send(r.quota_line(QUOTA_ROOT, {"STORAGE": _storage_kib(*usage)}))
            case SetQuota():
                # RFC 9208 §4.3: only with QUOTASET; limits are the administrator's
                # (postwerk mailbox set-quota).
                raise _Refused("NO", "Quotas are set by the administrator", r.code("NOPERM"))
            case Close():
                await self._on_close(expunge=True)
                self.send(r.tagged(tag, "OK", "CLOSE completed"))
                return True
            case Unselect():
                await self._on_close(expunge=False)
                self.send(r.tagged(tag, "OK", "UNSELECT completed"))
                return True
            case Expunge() | UidExpunge():
                await self._on_expunge(command)
            case Copy():
                expunge_ok = command.uid
                await self._on_copy(command)
            case Move():
                expunge_ok = command.uid
                await self._on_move(command)
            case _:
                assert_never(command)
        if self.view is not None:
            await self._sync(expunge_ok)
        self.send(r.tagged(tag, "OK", _completed(command)))
        return not self.channel.closed

    def _on_enable(self, wanted: Sequence[str]) -> None:
        """RFC 5161: ENABLED lists what this command turned on, nothing else."""
        newly = []
        for name in wanted:
            cap = _ENABLEABLE_BY_UPPER.get(name.upper(), "")  # the parser upper-cases
            if cap and cap not in self.enabled:
                newly.append(cap)
                self.enabled.add(cap)
        if "QRESYNC" in self.enabled:
            self.enabled.add("CONDSTORE")
        if self.view is not None:
            self.view.condstore = "CONDSTORE" in self.enabled
            self.view.qresync = "QRESYNC" in self.enabled
        self.send(r.enabled_line(newly))

    async def _quota_usage(self) -> tuple[int, int] | None:
        """(octets stored in all folders, limit in octets), or None without a quota.
        The limit is read afresh, so `mailbox set-quota` applies to open sessions."""
        recipient = await self.ctx.directory.store.get_recipient(self.mailbox_id)
        if recipient is None or recipient.quota_bytes is None:
            return None
        return await self.mail.mailbox_size(self.mailbox_id), recipient.quota_bytes

    async def _on_getquotaroot(self, mailbox: str) -> None:
        folder = await self._mail_folder(mailbox)
        usage = await self._quota_usage()
        roots = [QUOTA_ROOT] if usage is not None else []
        self.send(r.quotaroot_line(imap_name(folder.name), roots, utf8=self.utf8))
        if usage is not None:
            self.send(r.quota_line(QUOTA_ROOT, {"STORAGE": _storage_kib(*usage)}))

    def _on_compress(self, tag: str, mechanism: str) -> bool:
        """RFC 4978: answer OK uncompressed, then compress both ways from the next octet."""
        if mechanism != "DEFLATE":
            raise _Refused("BAD", "Unknown compression mechanism")
        if self.channel.compressing:
            raise _Refused("NO", "Compression is already on", r.code("COMPRESSIONACTIVE"))
        self.send(r.tagged(tag, "OK", "DEFLATE active"))
        self._flush()
        # The client compresses only after it has read the OK: anything it sent
        # before is not part of the compressed stream.
        self.framer.discard_buffered()
        self.channel.start_deflate()
        self.log.info("compression_started", mechanism="DEFLATE")
        return True

    def _enable_condstore(self) -> None:
        """RFC 7162 §3.1: a CONDSTORE-enabling command turns it on for the session
        (FETCH responses carry MODSEQ from then on)."""
        self.enabled.add("CONDSTORE")
        if self.view is not None:
            self.view.condstore = True

    def _capabilities(self) -> list[str]:
        if self.user is not None:
            # RFC 7889: the largest APPEND this user may send, so clients need not try.
            return [*AUTHENTICATED_CAPABILITIES, f"APPENDLIMIT={self.settings.append_limit}"]
        caps = list(BASE_CAPABILITIES)
        if not self.tls_active and self.ctx.tls_context is not None:
            caps.append("STARTTLS")
        if self.settings.plaintext_allowed(self.tls_active):
            caps.extend(f"AUTH={m}" for m in SASL_MECHANISMS)
        else:
            caps.append("LOGINDISABLED")  # RFC 9051 §6.2.3
        return caps

    # ------------------------------------------------------------ not authenticated

    async def _on_starttls(self, tag: str) -> bool:
        tls_context = self.ctx.tls_context
        if self.tls_active or tls_context is None:
            raise _Refused("BAD", "STARTTLS not available")
        dropped = self.framer.discard_buffered()  # CVE-2011-0411
        if dropped:
            self.log.warning("starttls_injection_discarded", bytes=dropped)
        self.send(r.tagged(tag, "OK", "Begin TLS negotiation now"))
        self._flush()
        if not await self.channel.start_tls(tls_context, self.log):
            return False
        self.tls_active = True
        return True

    async def _on_login(self, tag: str, user: str, password: str) -> bytes:
        if not self.settings.plaintext_allowed(self.tls_active):
            return r.tagged(tag, "NO", "Use STARTTLS first", r.code("PRIVACYREQUIRED"))
        return await self._login(tag, sasl.Credentials("", user, password), "LOGIN")

    async def _on_authenticate(self, command: Authenticate) -> bytes:
        tag = command.tag
        mechanism = sasl.create(command.mechanism) if command.mechanism in SASL_MECHANISMS else None
        if mechanism is None:
            return r.tagged(tag, "NO", "Unsupported authentication mechanism", r.code("CANNOT"))
        if mechanism.plaintext and not self.settings.plaintext_allowed(self.tls_active):
            return r.tagged(tag, "NO", "Use STARTTLS first", r.code("PRIVACYREQUIRED"))
        cancelled = r.tagged(tag, "BAD", "Authentication cancelled")
        initial: bytes | None = None
        if command.initial_response is not None:  # RFC 4959 SASL-IR
            decoded = sasl.decode_response(command.initial_response.encode("ascii"))
            if isinstance(decoded, sasl.SaslError):
                return cancelled
            initial = decoded
        outcome = mechanism.start(initial)
        while isinstance(outcome, sasl.Challenge):
            self.send(r.continuation(sasl.encode_challenge(outcome.data).decode("ascii")))
            self._flush()
            line = await self._read_line()
            if line is None:
                return cancelled
            decoded = sasl.decode_response(line)
            if isinstance(decoded, sasl.SaslError):
                return cancelled  # "*" (RFC 9051 §6.2.2) or bad base64
            outcome = mechanism.step(decoded)
        if isinstance(outcome, sasl.SaslError):
            return await self._auth_failed(tag, None, outcome.reason)
        return await self._login(tag, outcome, "AUTHENTICATE " + mechanism.name)

    async def _read_line(self) -> bytes | None:
        """One raw line after a "+" continuation; None if the connection went away."""
        self.framer.expect_line()
        while True:
            event = self.framer.next_event()
            match event:
                case LineReceived(line=line):
                    return line
                case NeedData():
                    self._flush()
                    if not await self._wait():
                        self.stopping = True
                        return None
                case _:
                    return b"*"  # an over-long line: treat it as a cancel

    async def _login(self, tag: str, creds: sasl.Credentials, method: str) -> bytes:
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
                return await self._auth_failed(tag, account, "locked out", count=False)
            user = await mail_proxy.accept_on_behalf(self.ctx.directory, trust, creds)
            if user is None:
                reason = "not a server's login on behalf of a mailbox"
                return await self._auth_failed(tag, account, reason, by_account=False)
            method = f"{method} by server {account.upper()}"
            account = user.primary_address
        else:
            if throttle.locked_out(self.peer_ip, account):
                return await self._auth_failed(tag, account, "locked out", count=False)
            if on_behalf:
                return await self._auth_failed(tag, account, "authzid differs from authcid")
            found = await self.ctx.directory.authenticate(account, creds.password)
            if found is None:
                return await self._auth_failed(tag, account, "bad credentials")
            user = found
            throttle.record_success(self.peer_ip, account)
        if self.ctx.by_user[user.id] >= self.settings.max_connections_per_user:
            self.log.info("login_refused", account=account, reason="user connection limit")
            return _too_many_for_user(tag)
        route = await self.ctx.locator.locate(user, "imap4")
        if isinstance(route, RemoteRoute) and not on_behalf:
            return await self._login_remote(tag, user, route, account, method)
        if not isinstance(route, LocalRoute):
            # A session a front end proxied here is never proxied on again (the
            # mailbox moved since the front end looked): no loops between servers.
            reason = route.reason if isinstance(route, Unavailable) else "proxied, not here"
            self.log.warning("mailbox_unavailable", account=account, reason=reason)
            return _unavailable(tag)
        self.backend = route.backend
        self.user = user
        self.ctx.by_user.add(user.id)
        # Literals up to the APPENDLIMIT from now on (RFC 7889), synchronizing or not:
        # LITERAL+ is advertised, which promises no lower limit for {n+} (RFC 7888 §3).
        limit = self.settings.append_limit
        self.framer.set_literal_limits(limit, limit)
        self.log.info("login", account=account, mailbox=user.primary_address, method=method)
        return r.tagged(tag, "OK", "LOGIN completed", r.code("CAPABILITY", self._capabilities()))

    async def _login_remote(
        self, tag: str, user: Recipient, route: RemoteRoute, account: str, method: str
    ) -> bytes:
        """The front end's half for a mailbox on another server: log in to its back end
        on the user's behalf; the relay starts once the OK is written (`_after_login`)."""
        trust = self.ctx.trust
        if trust is None:
            self.log.warning("mailbox_unavailable", account=account, reason="no server trust")
            return _unavailable(tag)
        opened = await mail_proxy.open_backend(
            route, "imap4", user.primary_address, trust, self.log
        )
        if isinstance(opened, mail_proxy.Refused):
            # The back end's per-user limit holds across front ends: say so.
            return _too_many_for_user(tag) if opened.code == "LIMIT" else _unavailable(tag)
        if self.stopping or self.channel.closed:
            opened.link.close()  # the client or the server went away meanwhile
            return _unavailable(tag)
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
        try:
            # The client sees the back end's capabilities, as it will on CAPABILITY.
            caps = r.code("CAPABILITY", opened.capabilities)
        except ValueError:
            caps = None  # not sendable as a code: the client may ask instead
        return r.tagged(tag, "OK", "LOGIN completed", caps)

    async def _after_login(self) -> bool:
        """After a LOGIN or AUTHENTICATE reply: relay a proxied session to the end
        (the tagged OK first, then what the client pipelined behind it)."""
        if self.proxy is None:
            return not self.stopping
        self._flush()
        await mail_proxy.relay(self.channel, self.proxy, self.log)
        return False

    async def _auth_failed(
        self,
        tag: str,
        account: str | None,
        reason: str,
        count: bool = True,
        by_account: bool = True,
    ) -> bytes:
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
        return r.tagged(tag, "NO", "LOGIN failed", r.code("AUTHENTICATIONFAILED"))

    # ------------------------------------------------------------ folders

    def _stored_name(self, wire: str) -> str:
        """The store's name for a mailbox name as sent (modified UTF-7 decoded,
        unless the session speaks UTF-8 names)."""
        try:
            name = wire if self.utf8 else decode_mailbox(wire)
        except ValueError:
            raise _Refused("NO", "Invalid mailbox name", r.code("CANNOT")) from None
        head, sep, rest = name.partition(SEPARATOR)
        return "Inbox" + sep + rest if head.upper() == "INBOX" else name

    async def _mail_folder(self, wire: str, missing: str = "NONEXISTENT") -> Folder:
        try:
            folder = await self.mail.get_folder(self.mailbox_id, self._stored_name(wire))
        except FolderNotFound:
            raise _Refused("NO", "Mailbox does not exist", r.code(missing)) from None
        if not folder.is_mail:
            # Calendar, Contacts, ...: not mail, so not visible to IMAP (as in Exchange).
            raise _Refused("NO", "Mailbox does not exist", r.code(missing))
        return folder

    async def _on_select(self, command: Select | Examine) -> None:
        tag = command.tag
        read_only = isinstance(command, Examine)
        if self.view is not None:
            self.send(r.untagged_status("OK", "Previous mailbox closed", r.code("CLOSED")))
        self.view = None  # a failed SELECT leaves the client unselected (RFC 9051 §6.3.2)
        self.folder = None
        qresync = command.qresync
        if qresync is not None and "QRESYNC" not in self.enabled:
            raise _Refused("BAD", "QRESYNC is not enabled")  # RFC 7162 §3.2.5
        if command.condstore:
            self.enabled.add("CONDSTORE")
        folder = await self._mail_folder(command.mailbox)
        # The folder row first, then the states: a change between the two reads is
        # taken in again at the next sync rather than missed. An unchanged folder's
        # states come from the process's snapshot without a store read.
        assert self.backend is not None
        snapshot = await self.backend.snapshots.get(folder)
        view = FolderView(folder, snapshot, read_only=read_only)
        view.condstore = "CONDSTORE" in self.enabled
        view.qresync = "QRESYNC" in self.enabled
        self.saved = frozenset()  # RFC 5182 §2.1: "$" is empty in a new selection
        self.send(r.flags_line(FOLDER_FLAGS))
        self.send(r.exists_line(view.exists))
        if self.rev2:
            # RFC 9051 §6.3.2: LIST with the mailbox name instead of RECENT and UNSEEN.
            attrs = [folder.special_use] if folder.special_use else []
            self.send(r.list_line(attrs, SEPARATOR, imap_name(folder.name), utf8=True))
        else:
            self.send(r.recent_line(0))
            first_unseen = view.first_unseen() if folder.unseen else None
            if first_unseen is not None:
                code = r.code("UNSEEN", first_unseen)
                self.send(r.untagged_status("OK", "First unseen", code))
        self.send(r.untagged_status("OK", "UIDs valid", r.code("UIDVALIDITY", folder.uidvalidity)))
        uidnext = max(folder.uidnext, view.largest_uid + 1)
        self.send(r.untagged_status("OK", "Predicted next UID", r.code("UIDNEXT", uidnext)))
        permanent = () if read_only else PERMANENT_FLAGS
        self.send(r.untagged_status("OK", "Flags permitted", r.code("PERMANENTFLAGS", permanent)))
        # RFC 7162 §3.1.2.1: every SELECT/EXAMINE of a mailbox with persistent MODSEQs.
        highest = r.code("HIGHESTMODSEQ", folder.highest_modseq)
        self.send(r.untagged_status("OK", "Highest", highest))
        if qresync is not None and qresync.uidvalidity == folder.uidvalidity:
            await self._resync(view, uidnext, qresync.modseq, qresync.known_uids)
        self.view = view
        self.folder = folder
        mode = "READ-ONLY" if read_only else "READ-WRITE"
        verb = "EXAMINE" if read_only else "SELECT"
        self.send(r.tagged(tag, "OK", f"{verb} completed", r.code(mode)))

    async def _resync(
        self,
        view: FolderView,
        uidnext: int,
        modseq: int,
        known: SequenceSet | None,
        *,
        fetch: bool = True,
    ) -> None:
        """RFC 7162 §3.2.5.1 / §3.2.6: VANISHED (EARLIER) for UIDs expunged since
        `modseq` (limited to `known`), then FETCH for items changed since. Our
        tombstones are exact, so the sequence-match hint is not needed; once they
        are pruned, every UID the client may know (`known`, else all below
        UIDNEXT) that is not in the folder is reported, as RFC 7162 §3.2.5.1
        allows."""
        saved = sorted(self.saved)  # UID FETCH $ (CHANGEDSINCE n VANISHED)
        largest = max(uidnext - 1, view.largest_uid)

        def candidates() -> Iterator[int]:
            spans = known.resolve(largest, saved) if known is not None else ((1, largest),)
            for lo, hi in spans:
                yield from range(max(lo, 1), min(hi, largest) + 1)

        changes = await changes_for(self.mail, view.folder_id, modseq, candidates())
        gone = changes.expunged
        if known is not None:
            gone = [u for u in gone if known.contains(u, largest, saved)]
        self.send(r.vanished_line(gone, earlier=True))
        if not fetch:
            return
        for state in changes.changed:
            seq = view.seq_of(state.uid)
            if seq is None:
                continue  # arrived after the view was read: the next sync reports it
            if known is not None and not known.contains(state.uid, view.largest_uid):
                continue
            self.send(r.fetch_response(seq, view.flag_items(view.states[state.uid], uid=True)))

    async def _on_create(self, command: Create) -> None:
        name = self._stored_name(command.mailbox.removesuffix(SEPARATOR))
        problem = _new_name_problem(name)
        if problem is not None:
            raise _Refused("NO", problem, r.code("CANNOT"))
        try:
            await self.mail.create_folder(self.mailbox_id, name)
        except AlreadyExists:
            raise _Refused("NO", "Mailbox already exists", r.code("ALREADYEXISTS")) from None
        except InvalidName as exc:
            raise _Refused("NO", str(exc), r.code("CANNOT")) from None

    async def _on_delete(self, command: Delete) -> None:
        name = self._stored_name(command.mailbox)
        if self.folder is not None and self.folder.name == name:
            self.view = None  # deleting the selected folder deselects it
            self.folder = None
        try:
            await self.mail.delete_folder(self.mailbox_id, name)
        except FolderNotFound:
            raise _Refused("NO", "Mailbox does not exist", r.code("NONEXISTENT")) from None
        except FolderHasChildren:
            # RFC 9051 §7.1 HASCHILDREN; IMAP4rev1 clients know only INUSE.
            code = r.code("HASCHILDREN" if self.rev2 else "INUSE")
            raise _Refused("NO", "Mailbox has inferior mailboxes", code) from None
        except DefaultFolderProtected:
            raise _Refused("NO", "Default folders cannot be deleted", r.code("CANNOT")) from None
        except NotPermitted:
            raise _Refused("NO", "Not permitted", r.code("NOPERM")) from None

    async def _on_rename(self, command: Rename) -> None:
        old = self._stored_name(command.mailbox)
        new = self._stored_name(command.new_name)
        problem = _new_name_problem(new)
        if problem is not None:
            raise _Refused("NO", problem, r.code("CANNOT"))
        if old == "Inbox" and new.split(SEPARATOR)[0].upper() != "INBOX":
            await self._rename_inbox(new)
            return
        try:
            renamed = await self.mail.rename_folder(self.mailbox_id, old, new)
        except FolderNotFound:
            raise _Refused("NO", "Mailbox does not exist", r.code("NONEXISTENT")) from None
        except AlreadyExists:
            raise _Refused("NO", "Mailbox already exists", r.code("ALREADYEXISTS")) from None
        except DefaultFolderProtected:
            raise _Refused("NO", "Default folders cannot be renamed", r.code("CANNOT")) from None
        except InvalidName as exc:
            raise _Refused("NO", str(exc), r.code("CANNOT")) from None
        if self.folder is not None and self.folder.id == renamed.id:
            self.folder = renamed

    async def _rename_inbox(self, new: str) -> None:
        """RFC 9051 §6.3.6: renaming INBOX moves its messages to a new mailbox and
        leaves INBOX, empty, where it is."""
        try:
            target = await self.mail.create_folder(self.mailbox_id, new)
        except AlreadyExists:
            raise _Refused("NO", "Mailbox already exists", r.code("ALREADYEXISTS")) from None
        except InvalidName as exc:
            raise _Refused("NO", str(exc), r.code("CANNOT")) from None
        inbox = await self.mail.get_folder(self.mailbox_id, "Inbox")
        uids = [s.uid for s in await self.mail.item_states(inbox.id)]
        for start in range(0, len(uids), 1000):  # bounded transactions
            await self.mail.move_items(inbox.id, uids[start : start + 1000], target.id)
        if uids:
            self._changed()

    async def _on_subscribe(self, command: Subscribe | Unsubscribe) -> None:
        name = self._stored_name(command.mailbox)
        try:
            if isinstance(command, Subscribe):
                await self.mail.subscribe(self.mailbox_id, name)
            else:
                await self.mail.unsubscribe(self.mailbox_id, name)
        except InvalidName as exc:
            raise _Refused("NO", str(exc), r.code("CANNOT")) from None
        except NotFound:
            raise _Refused("NO", "Not subscribed", r.code("NONEXISTENT")) from None

    def _pattern(self, reference: str, pattern: str) -> re.Pattern[str]:
        try:
            ref = reference if self.utf8 else decode_mailbox(reference)
            pat = pattern if self.utf8 else decode_mailbox(pattern)
        except ValueError:
            raise _Refused("BAD", "Invalid mailbox name or pattern") from None
        if ref and not pat.startswith(SEPARATOR):
            pat = ref + pat  # RFC 9051 §6.3.9: the reference is prepended
        return _pattern_regex(pat)

    async def _on_list(self, command: List) -> None:
        """LIST with RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE and RFC 5819
        LIST-STATUS (a STATUS response after each selectable mailbox listed)."""
        selection = set(command.selection) - {"REMOTE"}  # no remote mailboxes here
        unknown = selection - {"SUBSCRIBED", "RECURSIVEMATCH", "SPECIAL-USE"}
        if unknown:
            raise _Refused("BAD", f"Unknown LIST selection option {sorted(unknown)[0]}")
        if selection == {"RECURSIVEMATCH"}:
            raise _Refused("BAD", "RECURSIVEMATCH needs another selection option")  # §3
        returns = set(command.return_options)
        unknown = returns - {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"}
        if unknown:
            raise _Refused("BAD", f"Unknown LIST return option {sorted(unknown)[0]}")
        if command.patterns == ("",) and not selection:
            # RFC 9051 §6.3.9: the delimiter and root of the reference's hierarchy.
            self.send(r.list_line(["\\Noselect"], SEPARATOR, ""))
            return
        folders = {f.name: f for f in await self.mail.list_folders(self.mailbox_id) if f.is_mail}
        subscribed: set[str] = set()
        if "SUBSCRIBED" in selection or "SUBSCRIBED" in returns:
            subscribed = set(await self.mail.list_subscriptions(self.mailbox_id))
        regexes = [self._pattern(command.reference, p) for p in command.patterns]

        def matches(name: str) -> bool:
            shown = imap_name(name)
            return any(rx.fullmatch(shown) for rx in regexes)

        names = set(folders)
        if "SUBSCRIBED" in selection:
            names = subscribed  # subscribed names may name no mailbox (\NonExistent)
        listed = sorted((n for n in names if matches(n)), key=lambda n: (n != "Inbox", n))
        childinfo: set[str] = set()
        if "RECURSIVEMATCH" in selection and "SUBSCRIBED" in selection:
            # A parent that matches, is not itself subscribed, but has subscribed
            # inferiors is listed with CHILDINFO ("SUBSCRIBED") (RFC 5258 §3.5).
            for name in subscribed:
                parts = name.split(SEPARATOR)
                for depth in range(1, len(parts)):
                    parent = SEPARATOR.join(parts[:depth])
                    if parent not in subscribed and matches(parent):
                        childinfo.add(parent)
            listed = sorted(set(listed) | childinfo, key=lambda n: (n != "Inbox", n))
        for name in listed:
            folder = folders.get(name)
            if "SPECIAL-USE" in selection and (folder is None or folder.special_use is None):
                continue
            attrs: list[str] = []
            if folder is None:
                attrs.append("\\NonExistent")  # RFC 5258 §3: implies \Noselect
            else:
                children = any(n.startswith(name + SEPARATOR) for n in folders)
                attrs.append("\\HasChildren" if children else "\\HasNoChildren")
                if folder.special_use is not None:
                    attrs.append(folder.special_use)  # RFC 6154 §2
            if name in subscribed and ("SUBSCRIBED" in selection or "SUBSCRIBED" in returns):
                attrs.append("\\Subscribed")
            extended = {"CHILDINFO": ["SUBSCRIBED"]} if name in childinfo else None
            shown = imap_name(name)
            self.send(r.list_line(attrs, SEPARATOR, shown, extended=extended, utf8=self.utf8))
            if "STATUS" in returns and folder is not None:
                values = await self._status_values(folder, command.status_items)
                self.send(r.status_line(shown, values, utf8=self.utf8))

    async def _on_lsub(self, command: Lsub) -> None:
        if command.pattern == "":
            self.send(r.lsub_line(["\\Noselect"], SEPARATOR, ""))
            return
        rx = self._pattern(command.reference, command.pattern)
        existing = {f.name for f in await self.mail.list_folders(self.mailbox_id) if f.is_mail}
        for name in await self.mail.list_subscriptions(self.mailbox_id):
            shown = imap_name(name)
            if rx.fullmatch(shown):
                attrs = [] if name in existing else ["\\Noselect"]
                self.send(r.lsub_line(attrs, SEPARATOR, shown, utf8=self.utf8))

    async def _on_status(self, command: Status) -> None:
        folder = await self._mail_folder(command.mailbox)
        values = await self._status_values(folder, command.items)
        self.send(r.status_line(imap_name(folder.name), values, utf8=self.utf8))

    async def _status_values(self, folder: Folder, wanted: Sequence[str]) -> dict[str, int]:
        """STATUS items from the folder's counters (RFC 9051 §6.3.11, RFC 8438 SIZE)."""
        values: dict[str, int] = {}
        deleted: int | None = None
        for item in wanted:
            match item:
                case "MESSAGES":
                    values[item] = folder.messages
                case "UIDNEXT":
                    values[item] = folder.uidnext
                case "UIDVALIDITY":
                    values[item] = folder.uidvalidity
                case "UNSEEN":
                    values[item] = folder.unseen
                case "RECENT":
                    values[item] = 0
                case "SIZE":
                    values[item] = folder.size
                case "HIGHESTMODSEQ":
                    values[item] = folder.highest_modseq
                case "APPENDLIMIT":
                    values[item] = self.settings.append_limit
                case "DELETED":
                    if deleted is None:  # no counter for it: the one O(n) item
                        states = await self.mail.item_states(folder.id)
                        deleted = sum(1 for i in states if i.flags & Flag.DELETED)
                    values[item] = deleted
        return values

    async def _on_append(self, command: Append) -> None:
        if command.utf8 and not self.utf8:
            raise _Refused("BAD", "APPEND UTF8 needs ENABLE UTF8=ACCEPT")  # RFC 6855 §4
        folder = await self._mail_folder(command.mailbox, missing="TRYCREATE")
        if len(command.message) > self.settings.append_limit:
            raise _Refused("NO", "Message too big", r.code("TOOBIG"))
        _check_quota(await self._quota_usage(), len(command.message))
        # Stored mail has CRLF line ends (mime/summary.py invariant; RFC 9051 §6.3.12).
        data = _BARE_LF.sub(b"\r\n", command.message)
        flags, keywords = _flags_from_names(command.flags)
        writer = self.blobs.writer()
        try:
            await writer.write(data)
            blob_id = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        when = command.internal_date.timestamp() if command.internal_date else time.time()
        summary = summarize(data).to_json()
        new = NewItem(
            mailbox_id=self.mailbox_id,
            folder_name=folder.name,
            item_class="IPM.Note",
            blob_id=blob_id,
            header_prefix=b"",
            size=len(data),
            internal_date=when,
            flags=flags,
            keywords=keywords,
            summary=summary,
            imap_envelope=r.stored_envelope(summary),
        )
        [item] = await self.mail.deliver([new])
        self._changed()
        raise _Done(r.code("APPENDUID", folder.uidvalidity, item.uid))

    # ------------------------------------------------------------ selected state

    async def _sync(self, expunge_ok: bool) -> None:
        """Re-read the folder if it changed; queue EXISTS / FETCH FLAGS, and EXPUNGEs
        where allowed."""
        assert self.view is not None and self.user is not None
        # Every change to a folder (delivery, flags, expunge) raises its HIGHESTMODSEQ:
        # an unchanged folder costs one small read, not a read of every item.
        view = self.view
        folder = await self._folder_row(self.user.id, view.folder_id)
        if view.changed(folder):
            changes = FolderChanges([], [])
            if folder is not None:
                try:
                    changes = await changes_for(self.mail, view.folder_id, view.modseq, view.uids)
                except FolderNotFound:
                    folder = None  # deleted meanwhile: every message is gone
            for line in view.apply(changes, folder):
                self.send(line)
        if expunge_ok:
            for line in view.flush_expunges():
                self.send(line)

    async def _folder_row(self, mailbox_id: int, folder_id: int) -> Folder | None:
        folder = await self.mail.folder_by_id(folder_id)
        return folder if folder is not None and folder.mailbox_id == mailbox_id else None

    def _targets(self, sequence_set: SequenceSet, uid: bool) -> list[int]:
        """The UIDs a sequence set names, ascending; BAD for a sequence number past the end."""
        view = self.view
        assert view is not None
        if sequence_set.saved:
            # RFC 5182 §2.2: "$" names the saved messages still here, by UID or number.
            return sorted(u for u in self.saved if view.seq_of(u) is not None)
        if uid:
            ranges = sequence_set.resolve(view.largest_uid)
            out = []
            for lo, hi in ranges:
                # RFC 9051 §6.4.9: UIDs not in the mailbox are ignored.
                i = _bisect(view.uids, lo)
                while i < len(view.uids) and view.uids[i] <= hi:
                    out.append(view.uids[i])
                    i += 1
            return out
        ranges = sequence_set.resolve(view.exists)
        if any(lo < 1 or hi > view.exists for lo, hi in ranges):
            raise _Refused("BAD", "Invalid message sequence number")
        return [view.uids[n - 1] for lo, hi in ranges for n in range(lo, hi + 1)]

    async def _on_close(self, expunge: bool) -> None:
        view = self.view
        self.view = None
        self.folder = None
        self.saved = frozenset()
        if expunge and view is not None and not view.read_only:
            # RFC 9051 §6.4.1: silently remove \Deleted messages, no EXPUNGE responses.
            states = await self.mail.item_states(view.folder_id)
            doomed = [i.uid for i in states if i.flags & Flag.DELETED]
            if doomed:
                await self.mail.expunge(view.folder_id, doomed)
                self._changed()

    async def _on_expunge(self, command: Expunge | UidExpunge) -> None:
        view = self.view
        assert view is not None
        if view.read_only:
            raise _Refused("NO", "Mailbox is read-only", r.code("READ-ONLY"))
        states = await self.mail.item_states(view.folder_id)
        doomed = [i.uid for i in states if i.flags & Flag.DELETED]
        if isinstance(command, UidExpunge):
            wanted = set(self._targets(command.sequence_set, uid=True))
            doomed = [u for u in doomed if u in wanted]
        if doomed:
            await self.mail.expunge(view.folder_id, doomed)
            self._changed()

    async def _on_store(self, command: Store) -> None:
        view = self.view
        assert view is not None
        if view.read_only:
            raise _Refused("NO", "Mailbox is read-only", r.code("READ-ONLY"))
        if command.unchanged_since is not None:
            self._enable_condstore()
        await self._sync(expunge_ok=False)  # compute from current flags
        targets = [u for u in self._targets(command.sequence_set, command.uid) if view.live(u)]
        bits, keywords = _flags_from_names(command.flags)
        # RFC 7162 §3.1.3: messages changed after UNCHANGEDSINCE are left alone and
        # named in [MODIFIED]: those the synced view already shows, and (decided
        # inside the store's write) those another session changed since.
        limit = command.unchanged_since
        modified: list[int] = []
        if limit is not None:
            modified = [u for u in targets if view.states[u].modseq > limit]
            if modified:
                skip = set(modified)
                targets = [u for u in targets if u not in skip]
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for uid in targets:
            item = view.states[uid]
            new_flags, new_keywords = _apply(command.mode, item, bits, keywords)
            if (new_flags, new_keywords) != (item.flags, item.keywords):
                groups.setdefault((new_flags, new_keywords), []).append(uid)
        changed: set[int] = set()
        late: set[int] = set()  # changed by another session since the sync
        for (new_flags, new_keywords), uids in groups.items():
            found = await self.mail.set_flags(
                view.folder_id, uids, new_flags, new_keywords, unchanged_since=limit
            )
            view.update_states(i.state for i in found)
            for i in found:
                if limit is not None and (i.flags, i.keywords) != (new_flags, new_keywords):
                    late.add(i.uid)
                else:
                    changed.add(i.uid)
        if late:
            modified = sorted([*modified, *late])
            targets = [u for u in targets if u not in late]
        if groups:
            self._changed()
        for uid in targets:
            if command.silent and not (view.condstore and uid in changed):
                continue
            seq = view.seq_of(uid)
            assert seq is not None
            state = view.states[uid]
            if command.silent:
                # RFC 7162 §3.1.3: the new MODSEQ is sent even for .SILENT.
                items = [("UID", b"%d" % uid)] if command.uid else []
                items.append(("MODSEQ", b"(%d)" % state.modseq))
            else:
                items = view.flag_items(state, uid=command.uid)
            self.send(r.fetch_response(seq, items))
        if modified:
            numbers = modified if command.uid else [view.seq_of(u) or 0 for u in modified]
            raise _Done(r.code("MODIFIED", r.format_uid_set(numbers)))

    async def _on_copy(self, command: Copy) -> None:
        view = self.view
        assert view is not None
        targets = self._targets(command.sequence_set, command.uid)
        dest = await self._mail_folder(command.mailbox, missing="TRYCREATE")
        usage = await self._quota_usage()
        if usage is not None:  # a copy adds its size; a move does not
            briefs = await self.mail.item_briefs(view.folder_id, targets)
            _check_quota(usage, sum(b.size for b in briefs))
        pairs = await self.mail.copy_items(view.folder_id, targets, dest.id)
        if not pairs:
            return
        self._changed()
        raise _Done(
            r.code(
                "COPYUID",
                dest.uidvalidity,
                r.format_uid_set(s for s, _ in pairs),
                r.format_uid_set(d for _, d in pairs),
            )
        )

    async def _on_move(self, command: Move) -> None:
        view = self.view
        assert view is not None
        if view.read_only:
            raise _Refused("NO", "Mailbox is read-only", r.code("READ-ONLY"))
        targets = self._targets(command.sequence_set, command.uid)
        dest = await self._mail_folder(command.mailbox, missing="TRYCREATE")
        pairs = await self.mail.move_items(view.folder_id, targets, dest.id)
        if not pairs:
            return
        self._changed()
        # RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs.
        self.send(
            r.untagged_status(
                "OK",
                "Moved",
                r.code(
                    "COPYUID",
                    dest.uidvalidity,
                    r.format_uid_set(s for s, _ in pairs),
                    r.format_uid_set(d for _, d in pairs),
                ),
            )
        )
        # The client asked for these to go: report them even for MOVE by sequence number.
        await self._sync(expunge_ok=True)

    # ------------------------------------------------------------ FETCH

    async def _read_message(self, item: Item) -> bytes:
        return item.header_prefix + await self.blobs.read(item.blob_id)

    async def _prefetch(
        self, uids: Sequence[int], items: Mapping[int, Item | ItemBrief | ItemHead]
    ) -> dict[str, bytes]:
        """The files of the next messages of a FETCH chunk in one read (one thread
        hop instead of one per message), up to PREFETCH_BYTES; larger messages are
        read on their own when their turn comes."""
        wanted: list[str] = []
        total = 0
        for uid in uids:
            item = items.get(uid)
            if not isinstance(item, Item) or item.size > PREFETCH_BYTES:
                break
            if total + item.size > PREFETCH_BYTES and wanted:
                break
            wanted.append(item.blob_id)
            total += item.size
        if not wanted:
            return {}
        # A few small files (a page of headers) are cheaper to read here than to
        # hand to a thread: with many sessions, the hand-offs were the bottleneck.
        return await self.blobs.read_many(wanted, inline=total <= INLINE_FILE_BYTES)

    async def _on_fetch(self, command: Fetch) -> None:
        view = self.view
        assert view is not None
        if command.vanished and "QRESYNC" not in self.enabled:
            raise _Refused("BAD", "QRESYNC is not enabled")  # RFC 7162 §3.2.6
        for attr in command.attributes:
            if attr is FetchItem.SAVEDATE:
                raise _Refused("BAD", "FETCH item not supported yet", r.code("CANNOT"))
            if isinstance(attr, BodySection) and not all(
                r.atom_ok(f) or f.isascii() for f in attr.section.fields
            ):
                raise _Refused("BAD", "Invalid header field name")
        if command.changed_since is not None or FetchItem.MODSEQ in command.attributes:
            self._enable_condstore()
        await self._sync(expunge_ok=False)  # current flags for the answer
        targets = self._targets(command.sequence_set, command.uid)
        since = command.changed_since
        if since is not None:
            # RFC 7162 §3.1.4.1: only messages changed since, each with its MODSEQ.
            targets = [u for u in targets if view.states[u].modseq > since]
            if FetchItem.MODSEQ not in command.attributes:
                command = replace(command, attributes=(*command.attributes, FetchItem.MODSEQ))
            if command.vanished:
                assert self.folder is not None
                uidnext = self.folder.uidnext
                await self._resync(view, uidnext, since, command.sequence_set, fetch=False)
        sets_seen = not view.read_only and any(_sets_seen(a) for a in command.attributes)
        # FLAGS, UID (and MODSEQ) come from the session's view; anything else needs
        # the items, read a chunk at a time so that a FETCH 1:* on a large folder
        # neither holds every item nor every response in memory.
        needs_item = any(a not in STATE_ATTRIBUTES for a in command.attributes)
        # Metadata (sizes, dates, ENVELOPE) from the brief rows: no summary JSON.
        brief = needs_item and all(a in BRIEF_ATTRIBUTES for a in command.attributes)
        # Headers too (a client's message list): the head rows, and only the header
        # block of each file.
        heads = (
            needs_item
            and not brief
            and all(a in BRIEF_ATTRIBUTES or _header_section(a) for a in command.attributes)
        )
        needs_bytes = any(_needs_bytes(a) for a in command.attributes)
        missing = False
        for start in range(0, len(targets), FETCH_CHUNK):
            chunk = targets[start : start + FETCH_CHUNK]
            items: dict[int, Item | ItemBrief | ItemHead] = {}
            heads_read: dict[str, bytes] = {}
            if brief or heads:
                found: Sequence[ItemBrief | ItemHead] = (
                    await self.mail.item_briefs(view.folder_id, chunk)
                    if brief
                    else await self.mail.item_heads(view.folder_id, chunk)
                )
                envelopes = FetchItem.ENVELOPE in command.attributes
                items = {b.uid: b for b in found if b.imap_envelope is not None or not envelopes}
                if len(items) < len(found):  # stored before ENVELOPEs were kept
                    old = [b.uid for b in found if b.uid not in items]
                    for i in await self.mail.items_by_uid(view.folder_id, old):
                        items[i.uid] = i
                if heads:
                    limits = {h.blob_id: h.header_size for h in found if isinstance(h, ItemHead)}
                    inline = sum(limits.values()) <= INLINE_FILE_BYTES
                    heads_read = await self.blobs.read_many(
                        list(limits), inline=inline, limits=limits
                    )
            elif needs_item:
                items = {i.uid: i for i in await self.mail.items_by_uid(view.folder_id, chunk)}
            files: dict[str, bytes] = {}
            for n, uid in enumerate(chunk):
                seq = view.seq_of(uid)
                assert seq is not None
                item = items.get(uid)
                if needs_item and item is None:
                    missing = True  # expunged meanwhile
                    continue
                if needs_bytes and isinstance(item, Item) and item.blob_id not in files:
                    files = await self._prefetch(chunk[n:], items)
                try:
                    if isinstance(item, ItemBrief):
                        out = self._fetch_brief(item, command)
                    elif isinstance(item, ItemHead):
                        if item.blob_id not in heads_read:
                            raise NotFound(item.blob_id)
                        header = item.header_prefix + heads_read[item.blob_id]
                        out = self._fetch_brief(item, command, header)
                    else:
                        out = await self._fetch_one(uid, item, command, files)
                except NotFound:
                    missing = True  # expunged meanwhile and its blob gone
                    continue
                state = view.states[uid]
                if sets_seen and view.live(uid) and not state.flags & Flag.SEEN:
                    changed = await self.mail.set_flags(
                        view.folder_id, [uid], state.flags | Flag.SEEN, state.keywords
                    )
                    view.update_states(i.state for i in changed)
                    self._changed()
                    now = view.states[uid]
                    fresh = {"FLAGS": r.flags_list(flag_names(now))}
                    if view.condstore:
                        fresh["MODSEQ"] = b"(%d)" % now.modseq
                    out = [(name, fresh.pop(name, value)) for name, value in out]
                    out.extend(fresh.items())
                self.send(r.fetch_response(seq, out))
            if len(targets) > FETCH_CHUNK:
                self._flush()
                await self.channel.drain()
        if missing:
            raise _Done(r.code("EXPUNGEISSUED"))

    def _fetch_brief(
        self, brief: ItemBrief | ItemHead, command: Fetch, header: bytes = b""
    ) -> list[tuple[str, bytes]]:
        """FETCH items from a brief or head row; `header` is the message's header
        section (for a head row). Every attribute passed BRIEF_ATTRIBUTES or
        `_header_section`; ENVELOPE only when the row has it."""
        view = self.view
        assert view is not None
        out: list[tuple[str, bytes]] = []
        if command.uid and FetchItem.UID not in command.attributes:
            out.append(("UID", b"%d" % brief.uid))
        for attr in command.attributes:
            if attr is FetchItem.FLAGS:
                out.append(("FLAGS", r.flags_list(flag_names(view.states[brief.uid]))))
            elif attr is FetchItem.UID:
                out.append(("UID", b"%d" % brief.uid))
            elif attr is FetchItem.MODSEQ:
                out.append(("MODSEQ", b"(%d)" % view.states[brief.uid].modseq))
            elif attr is FetchItem.RFC822_SIZE:
                out.append(("RFC822.SIZE", b"%d" % brief.size))
            elif attr is FetchItem.INTERNALDATE:
                when = datetime.fromtimestamp(brief.internal_date, UTC)
                out.append(("INTERNALDATE", r.internaldate(when)))
            elif attr is FetchItem.ENVELOPE:
                assert brief.imap_envelope is not None
                out.append(("ENVELOPE", brief.imap_envelope))
            elif attr is FetchItem.RFC822_HEADER:
                out.append(("RFC822.HEADER", r.literal(no_nul(header))))
            else:
                assert isinstance(attr, BodySection)
                section = attr.section
                value = header
                if section.text is not SectionText.HEADER:
                    exclude = section.text is SectionText.HEADER_FIELDS_NOT
                    value = header_fields(header, section.fields, exclude)
                out.append(_body_item(section, attr.partial, value))
        return out

    async def _fetch_one(
        self,
        uid: int,
        item: Item | None,
        command: Fetch,
        files: Mapping[str, bytes] | None = None,
    ) -> list[tuple[str, bytes]]:
        """The FETCH items for one message; `item` is None when only the view's
        state is asked for (FLAGS, UID)."""
        view = self.view
        assert view is not None
        state = view.states[uid]
        out: list[tuple[str, bytes]] = []
        if command.uid and FetchItem.UID not in command.attributes:
            out.append(("UID", b"%d" % uid))  # RFC 9051 §6.4.9: UID FETCH always has UID
        if item is None:
            for attr in command.attributes:
                if attr is FetchItem.FLAGS:
                    out.append(("FLAGS", r.flags_list(flag_names(state))))
                elif attr is FetchItem.UID:
                    out.append(("UID", b"%d" % uid))
                elif attr is FetchItem.MODSEQ:
                    out.append(("MODSEQ", b"(%d)" % state.modseq))
            return out
        full_item = item
        message: bytes | None = None
        summary: MessageSummary | None = None

        async def full() -> bytes:
            nonlocal message
            if message is None and files is not None and full_item.blob_id in files:
                message = full_item.header_prefix + files[full_item.blob_id]
            if message is None:
                try:
                    message = await self._read_message(full_item)
                except (FileNotFoundError, KeyError) as exc:
                    raise NotFound(str(exc)) from exc
            return message

        def summ() -> MessageSummary:
            nonlocal summary
            if summary is None:
                summary = _summary_of(full_item)
            return summary

        for attr in command.attributes:
            out.append(await self._fetch_attribute(attr, state, full_item, full, summ))
        return out

    async def _fetch_attribute(
        self,
        attr: FetchAttribute,
        state: ItemState,
        item: Item,
        read: Callable[[], Awaitable[bytes]],
        summ: Callable[[], MessageSummary],
    ) -> tuple[str, bytes]:
        match attr:
            # Body sections first: the common case of a client's page of headers.
            case BodySection(section=section, partial=partial):
                data = await read()
                value = section_bytes(data, len(item.header_prefix), summ().bodystructure, section)
                return _body_item(section, partial, value)
            case FetchItem.FLAGS:
                return ("FLAGS", r.flags_list(flag_names(state)))
            case FetchItem.UID:
                return ("UID", b"%d" % item.uid)
            case FetchItem.MODSEQ:
                return ("MODSEQ", b"(%d)" % state.modseq)
            case FetchItem.INTERNALDATE:
                return (
                    "INTERNALDATE",
                    r.internaldate(datetime.fromtimestamp(item.internal_date, UTC)),
                )
            case FetchItem.RFC822_SIZE:
                return ("RFC822.SIZE", b"%d" % item.size)
            case FetchItem.ENVELOPE:
                if item.imap_envelope is not None:
                    return ("ENVELOPE", item.imap_envelope)
                return ("ENVELOPE", r.envelope(summ().envelope))
            case FetchItem.BODYSTRUCTURE:
                return ("BODYSTRUCTURE", r.bodystructure(summ().bodystructure))
            case FetchItem.BODY:
                return ("BODY", r.body(summ().bodystructure))
            case FetchItem.RFC822:
                return ("RFC822", r.literal(no_nul(await read())))
            case FetchItem.RFC822_HEADER | FetchItem.RFC822_TEXT:
                data = await read()
                end = len(item.header_prefix) + summ().header_size
                part = data[:end] if attr is FetchItem.RFC822_HEADER else data[end:]
                return (attr.value, r.literal(no_nul(part)))
            case BinarySection(part=part, partial=partial):
                value = await self._binary(item, read, summ, part)
                name = f"BINARY[{'.'.join(map(str, part))}]"
                return _section_item(name, partial, value, binary=True)
            case BinarySize(part=part):
                value = await self._binary(item, read, summ, part)
                return (f"BINARY.SIZE[{'.'.join(map(str, part))}]", b"%d" % len(value or b""))
            case _:
                # SAVEDATE was refused before any output.
                raise _Refused("BAD", "FETCH item not supported yet", r.code("CANNOT"))

    async def _binary(
        self,
        item: Item,
        read: Callable[[], Awaitable[bytes]],
        summ: Callable[[], MessageSummary],
        part: tuple[int, ...],
    ) -> bytes | None:
        data = await read()
        try:
            return binary_bytes(data, len(item.header_prefix), summ().bodystructure, part)
        except UnknownEncoding:
            # RFC 3516 §4.3; the FETCH responses already sent for other messages stand.
            raise _Refused(
                "NO", "Cannot decode this part's transfer encoding", r.code("UNKNOWN-CTE")
            ) from None

    # ------------------------------------------------------------ SEARCH

    async def _on_search(self, command: Search) -> None:
        try:
            await self._search(command)
        except BaseException:
            if command.return_options is not None and "SAVE" in command.return_options:
                self.saved = frozenset()  # RFC 5182 §2.1: a failed SEARCH leaves "$" empty
            raise

    async def _search(self, command: Search) -> None:
        view = self.view
        assert view is not None
        wanted = command.return_options
        saving = wanted is not None and "SAVE" in wanted
        if command.charset is not None and command.charset not in SEARCH_CHARSETS:
            raise _Refused("NO", "Unsupported charset", r.code("BADCHARSET", SEARCH_CHARSETS))
        if wanted is not None:
            unknown = [o for o in wanted if o not in ESEARCH_RESULTS]
            if unknown:
                raise _Refused("BAD", f"Unknown RETURN option {unknown[0]}")
            wanted = wanted or ("ALL",)  # RFC 4731 §3.1: RETURN () means ALL
        elif self.rev2:
            wanted = ("ALL",)  # RFC 9051 §6.4.4: IMAP4rev2 answers with ESEARCH only
        by_modseq = _uses_modseq(command.criteria)
        if by_modseq:
            self._enable_condstore()
        await self._sync(expunge_ok=False)
        # Size and internal-date keys are answered by the store's indexes, once each.
        self._range_hits = {
            key: frozenset(await self.mail.uids_in_range(view.folder_id, *_range_of(key)))
            for key in _leaves(command.criteria)
            if _is_range_key(key)
        }
        cache: dict[int, bytes] = {}
        matched: list[int] = []  # UIDs, ascending
        live = [uid for uid in view.uids if view.live(uid)]
        if not _needs_item(command.criteria):
            for uid in live:
                seq = view.seq_of(uid)
                assert seq is not None
                if await self._matches(command.criteria, view.states[uid], seq, cache):
                    matched.append(uid)
        else:
            for start in range(0, len(live), FETCH_CHUNK):
                chunk = live[start : start + FETCH_CHUNK]
                for item in await self.mail.items_by_uid(view.folder_id, chunk):
                    seq = view.seq_of(item.uid)
                    assert seq is not None
                    if await self._matches(command.criteria, item, seq, cache):
                        matched.append(item.uid)
        if saving:
            # After matching: "$" in this SEARCH's own criteria meant the old result.
            self.saved = _saved_result(matched, wanted or ())
        found = matched if command.uid else [view.seq_of(u) or 0 for u in matched]
        # RFC 7162 §3.1.5: a search by MODSEQ reports the highest MODSEQ it found.
        highest = max((view.states[u].modseq for u in matched), default=None) if by_modseq else None
        if wanted is None:
            self.send(r.search_line(found, highest))
            return
        results: dict[str, int | Sequence[int] | None] = {}
        if "MIN" in wanted:
            results["MIN"] = found[0] if found else None
        if "MAX" in wanted:
            results["MAX"] = found[-1] if found else None
        if "ALL" in wanted:
            results["ALL"] = found
        if "COUNT" in wanted:
            results["COUNT"] = len(found)
        if highest is not None:
            results["MODSEQ"] = highest
        if saving and set(wanted) == {"SAVE"}:
            return  # RFC 5182 §2.1: SAVE alone returns no ESEARCH response
        self.send(r.esearch_line(command.tag, command.uid, results))

    async def _matches(
        self, key: SearchKey, item: Item | ItemState, seq: int, cache: dict[int, bytes]
    ) -> bool:
        """Whether a message matches; `item` is an ItemState only when
        `_needs_item(key)` is false."""
        view = self.view
        assert view is not None
        match key:
            case SearchAll():
                return True
            case SearchAnd(keys=keys):
                for sub in keys:
                    if not await self._matches(sub, item, seq, cache):
                        return False
                return True
            case SearchOr(left=left, right=right):
                return await self._matches(left, item, seq, cache) or await self._matches(
                    right, item, seq, cache
                )
            case SearchNot(key=sub):
                return not await self._matches(sub, item, seq, cache)
            case SearchFlag(flag=flag, is_set=is_set):
                bit = SYSTEM_FLAG_BITS.get(flag.upper())
                if flag.upper() == "\\RECENT":
                    present = False  # no session is ever told of recent messages
                elif bit is not None:
                    present = bool(item.flags & bit)
                else:
                    present = flag.lower() in (k.lower() for k in item.keywords)
                return present == is_set
            case SearchSize():
                return item.uid in self._range_hits[key]
            case SearchSequence(sequence_set=sset, uid=uid):
                if sset.saved:
                    return item.uid in self.saved
                if uid:
                    return sset.contains(item.uid, view.largest_uid)
                return sset.contains(seq, view.exists)
            case SearchModSeq(modseq=modseq):
                return item.modseq >= modseq
            case SearchDate(field="SENT", op=op, date=when):
                assert isinstance(item, Item)
                day = _sent_date(_summary_of(item))
                return day is not None and _compare_date(day, op, when)
            case SearchDate():
                # INTERNAL (and SAVED: no separate save date yet), from the index.
                return item.uid in self._range_hits[key]
            case SearchHeader(field=name, value=value):
                assert isinstance(item, Item)
                return await self._header_matches(item, name, value, cache)
            case SearchText(value=value, body_only=body_only):
                assert isinstance(item, Item)
                data = await self._cached_message(item, cache)
                if body_only:
                    data = data[len(item.header_prefix) + _summary_of(item).header_size :]
                return value.casefold() in _as_text(data).casefold()
            case _:
                assert_never(key)

    async def _cached_message(self, item: Item, cache: dict[int, bytes]) -> bytes:
        data = cache.get(item.uid)
        if data is None:
            try:
                data = await self._read_message(item)
            except Exception:
                data = b""
            cache.clear()  # one message at a time: memory stays bounded
            cache[item.uid] = data
        return data

    async def _header_matches(
        self, item: Item, name: str, value: str, cache: dict[int, bytes]
    ) -> bool:
        needle = value.casefold()
        summary = _summary_of(item)
        env = summary.envelope
        # The common fields come from the stored envelope, without reading the blob.
        if name in ("from", "to", "cc", "bcc"):
            addrs = {"from": env["from"], "to": env["to"], "cc": env["cc"], "bcc": env["bcc"]}[name]
            if addrs is None:
                return False
            return needle in _address_text(addrs).casefold()
        if name == "subject":
            if env["subject"] is None:
                return False
            return needle in summary.subject.casefold() or needle in env["subject"].casefold()
        data = await self._cached_message(item, cache)
        block = data[: len(item.header_prefix) + summary.header_size]
        fields = header_fields(block, [name], exclude=False)
        if fields == b"\r\n":
            return False  # the message has no such field
        values = []
        for line in fields.splitlines():
            if line[:1] not in (b" ", b"\t"):
                line = line.split(b":", 1)[-1]
            values.append(line.strip())
        text = decode_words(_as_text(b" ".join(values)))
        return needle in text.casefold()

    # ------------------------------------------------------------ IDLE

    async def _on_idle(self, tag: str) -> bool:
        """RFC 2177: report changes until DONE; the idle timer restarts at each wake."""
        notifier = self.backend.notifier if self.backend is not None else None
        if notifier is None:
            raise _Refused("NO", "IDLE not available", r.code("UNAVAILABLE"))
        with notifier.watch(self.mailbox_id) as watch:
            if self.view is not None:
                await self._sync(expunge_ok=True)
            self.send(r.continuation("idling"))
            self._flush()
            self.framer.expect_line()
            while True:
                event = self.framer.next_event()
                match event:
                    case LineReceived(line=line):
                        if line.strip().upper() != b"DONE":
                            self.send(r.tagged(tag, "BAD", "Expected DONE"))
                            return not self._bad_command()
                        break
                    case NeedData():
                        pass
                    case _:
                        self.send(r.tagged(tag, "BAD", "Expected DONE"))
                        return not self._bad_command()
                woke = await self._idle_wait(watch)
                if woke is None:
                    self.send(r.untagged_status("BYE", "Autologout; idle for too long"))
                    return False
                if woke == "closed":
                    return False
                if woke == "mailbox" and self.view is not None:
                    await self._sync(expunge_ok=True)
                    self._flush()
        if self.view is not None:
            await self._sync(expunge_ok=True)
        self.send(r.tagged(tag, "OK", "IDLE terminated"))
        return True

    async def _idle_wait(self, watch: MailboxWatch) -> str | None:
        """Wait for input or a mailbox change: "input", "mailbox", "closed" or None (timeout)."""
        if self.channel.closed and self.framer.buffered == 0:
            return "closed"
        data = asyncio.ensure_future(self.channel.wait_for_data())
        changed = asyncio.ensure_future(watch.wait())
        try:
            done, _ = await asyncio.wait(
                {data, changed},
                timeout=self.settings.idle_timeout_after_login,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (data, changed):
                if not task.done():
                    task.cancel()
            await asyncio.gather(data, changed, return_exceptions=True)
        if not done:
            return None
        if data in done:
            if self.channel.closed and self.framer.buffered == 0:
                return "closed"
            return "input"
        return "mailbox"


class _Done(Exception):
    """A handler finished with an OK that carries a response code (APPENDUID, COPYUID)."""

    def __init__(self, code: r.ResponseCode) -> None:
        super().__init__("done")
        self.code = code


def _bisect(uids: Sequence[int], lo: int) -> int:
    return bisect.bisect_left(uids, lo)


def _summary_of(item: Item) -> MessageSummary:
    try:
        return MessageSummary.from_json(item.summary)
    except (ValueError, KeyError, TypeError):
        return summarize(b"")  # an item without a usable summary (not from MIME)


def _as_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _header_section(attr: FetchAttribute) -> bool:
    """Whether a FETCH item is the message's header, whole or some fields of it
    (answerable from `MailStore.item_heads` and the file's first octets)."""
    if isinstance(attr, BodySection):
        return not attr.section.part and attr.section.text in (
            SectionText.HEADER,
            SectionText.HEADER_FIELDS,
            SectionText.HEADER_FIELDS_NOT,
        )
    return attr is FetchItem.RFC822_HEADER


def _body_item(
    section: Section, partial: tuple[int, int] | None, value: bytes | None
) -> tuple[str, bytes]:
    """`BODY[section]<origin>` and its value (NIL for a part that does not exist)."""
    return _section_item(f"BODY[{section_name(section)}]", partial, value)


def _section_item(
    name: str, partial: tuple[int, int] | None, value: bytes | None, *, binary: bool = False
) -> tuple[str, bytes]:
    """A section's FETCH item: NIL for a part that does not exist, `<origin>` for a
    partial fetch; a BODY literal has NUL mapped (RFC 9051 §4.3), a BINARY one is
    a literal8 only where a NUL needs it (RFC 3516 §4.2)."""
    if value is None:
        return (name, b"NIL")
    if partial is not None:
        origin, length = partial
        value = value[origin : origin + length]
        name += f"<{origin}>"
    if binary:
        return (name, r.literal(value, binary=b"\x00" in value))
    return (name, r.literal(no_nul(value)))


def _saved_result(matched: Sequence[int], options: Sequence[str]) -> frozenset[int]:
    """What SEARCH RETURN (SAVE ...) keeps for "$" (RFC 5182 §2.4): every match,
    unless MIN and/or MAX are the only other options."""
    if not matched or {"ALL", "COUNT"} & set(options) or set(options) == {"SAVE"}:
        return frozenset(matched)
    kept = set()
    if "MIN" in options:
        kept.add(matched[0])
    if "MAX" in options:
        kept.add(matched[-1])
    return frozenset(kept)


def _sets_seen(attr: FetchAttribute) -> bool:
    """RFC 9051 §6.4.5: BODY[...] and BINARY[...] (not PEEK), RFC822 and RFC822.TEXT
    set \\Seen."""
    if isinstance(attr, BodySection | BinarySection):
        return not attr.peek
    return attr in (FetchItem.RFC822, FetchItem.RFC822_TEXT)


def _flags_from_names(names: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    bits = 0
    keywords: list[str] = []
    for name in names:
        bit = SYSTEM_FLAG_BITS.get(name.upper())
        if bit is not None:
            bits |= bit
        elif name.startswith("\\"):
            continue  # \Recent or an unknown system flag: not storable
        elif name.lower() not in (k.lower() for k in keywords):
            keywords.append(name)
    return bits, tuple(keywords)


def _needs_bytes(attr: FetchAttribute) -> bool:
    """Whether a FETCH item reads the message file (not only the stored summary)."""
    return isinstance(attr, BodySection | BinarySection | BinarySize) or attr in (
        FetchItem.RFC822,
        FetchItem.RFC822_HEADER,
        FetchItem.RFC822_TEXT,
    )


def _check_quota(usage: tuple[int, int] | None, adding: int) -> None:
    """NO [OVERQUOTA] (RFC 9208 §4.4) when `adding` octets would pass the limit."""
    if usage is not None and usage[0] + adding > usage[1]:
        raise _Refused("NO", "Mailbox is over its quota", r.code("OVERQUOTA"))


def _storage_kib(used: int, limit: int) -> tuple[int, int]:
    """RFC 9208 §5.1: STORAGE counts units of 1024 octets (usage rounded up)."""
    return (used + 1023) // 1024, limit // 1024


def _new_name_problem(name: str) -> str | None:
    """Why a name cannot be created here (None: it can)."""
    if name.startswith("#"):
        # RFC 9051 §5.1.2: "#" starts a namespace prefix, and we offer none but "".
        return "Names starting with # are reserved for namespaces"
    return valid_mailbox_name(name)


def _completed(command: Command) -> str:
    """The tagged OK's text: "UID FETCH completed", "STORE completed", ..."""
    name = type(command).__name__.upper()
    if name == "UIDEXPUNGE":
        return "UID EXPUNGE completed"
    return f"UID {name} completed" if getattr(command, "uid", False) else f"{name} completed"


def _some_key(key: SearchKey, test: Callable[[SearchKey], bool]) -> bool:
    """Whether any leaf of a search key (under AND, OR, NOT) passes `test`."""
    match key:
        case SearchAnd(keys=keys):
            return any(_some_key(k, test) for k in keys)
        case SearchOr(left=left, right=right):
            return _some_key(left, test) or _some_key(right, test)
        case SearchNot(key=sub):
            return _some_key(sub, test)
        case _:
            return test(key)


def _uses_modseq(key: SearchKey) -> bool:
    return _some_key(key, lambda k: isinstance(k, SearchModSeq))


def _needs_item(key: SearchKey) -> bool:
    """Whether a search key needs the stored item (sent date, headers, text)
    rather than the view's state (flags, UIDs, sequence numbers, MODSEQ) and
    the index lookups of `_range_of` (sizes, internal dates)."""
    state_only = SearchAll | SearchFlag | SearchSequence | SearchModSeq
    return _some_key(key, lambda k: not (isinstance(k, state_only) or _is_range_key(k)))


def _leaves(key: SearchKey) -> Iterator[SearchKey]:
    match key:
        case SearchAnd(keys=keys):
            for sub in keys:
                yield from _leaves(sub)
        case SearchOr(left=left, right=right):
            yield from _leaves(left)
            yield from _leaves(right)
        case SearchNot(key=sub):
            yield from _leaves(sub)
        case _:
            yield key


def _is_range_key(key: SearchKey) -> bool:
    return isinstance(key, SearchSize) or (isinstance(key, SearchDate) and key.field != "SENT")


def _range_of(key: SearchKey) -> tuple[ItemRange, float | None, float | None]:
    """The `MailStore.uids_in_range` query for a size or internal-date key: LARGER n
    is size ≥ n + 1, SMALLER n size < n; a day is [00:00, 24:00) UTC, as the
    INTERNALDATE the server reports (RFC 9051 §6.4.4 disregards the time)."""
    if isinstance(key, SearchSize):
        return ("size", key.size + 1, None) if key.larger else ("size", None, key.size)
    assert isinstance(key, SearchDate)
    start = datetime.combine(key.date, time_of_day.min, UTC).timestamp()
    end = start + 86_400
    match key.op:
        case "SINCE":
            return ("internal_date", start, None)
        case "BEFORE":
            return ("internal_date", None, start)
        case "ON":
            return ("internal_date", start, end)
        case _:
            assert_never(key.op)


def _apply(
    mode: StoreMode, item: ItemState, bits: int, keywords: tuple[str, ...]
) -> tuple[int, tuple[str, ...]]:
    """The flags after STORE FLAGS / +FLAGS / -FLAGS (RFC 9051 §6.4.6)."""
    match mode:
        case StoreMode.REPLACE:
            return bits, keywords
        case StoreMode.ADD:
            have = {k.lower() for k in item.keywords}
            added = tuple(k for k in keywords if k.lower() not in have)
            return item.flags | bits, item.keywords + added
        case StoreMode.REMOVE:
            drop = {k.lower() for k in keywords}
            return item.flags & ~bits, tuple(k for k in item.keywords if k.lower() not in drop)
        case _:
            assert_never(mode)


class ImapListener(ServiceListener[CommandFramer]):
    """One listening socket: 993 with `implicit_tls`, else 143 with STARTTLS offered.

    Construct with an `ImapContext` (shared by both listeners), then
    `await start()`; `bound_port` is the port in use (0 picks one);
    `await stop()` closes the socket and every connection (each gets BYE).
    """

    ctx: ImapContext

    def __init__(
        self, ctx: ImapContext, host: str | None, port: int, *, implicit_tls: bool = False
    ) -> None:
        super().__init__(ctx, host, port, implicit_tls=implicit_tls)

    def make_framer(self) -> CommandFramer:
        settings = self.ctx.settings
        return CommandFramer(
            max_line=settings.max_line,
            max_literal=settings.max_literal_before_login,
            max_nonsync_literal=min(4096, settings.max_literal_before_login),
        )

    def too_many(self) -> bytes:
        return r.untagged_status("BYE", "Too many connections")

    def connection(self, channel: ImapChannel, ip: str) -> ImapConnection:
        return ImapConnection(self.ctx, channel, ip, self.implicit_tls)
