"""Records that cross the storage boundary. Plain frozen dataclasses, no behaviour.

Every backend (memory, SQLite, later PostgreSQL) stores and returns exactly these.
Times are UTC epoch seconds as floats, so that both databases agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

# ---------------------------------------------------------------- directory


class DomainType(StrEnum):
    """Exchange's AcceptedDomain DomainType."""

    AUTHORITATIVE = "authoritative"
    INTERNAL_RELAY = "internal-relay"
    EXTERNAL_RELAY = "external-relay"


@dataclass(frozen=True, slots=True)
class Organization:
    name: str
    created: float
    # Random, made with the organization: the key servers derive their credentials
    # from when they talk to each other (directory/server_auth.py).
    secret: str = ""


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """One server of the organization as it registers itself (Exchange keeps a
    server object per machine in Active Directory): what the other servers, the
    ports tool and `server list` need to know of it."""

    name: str  # the label connectors are named after: first hostname label, upper case
    fqdn: str
    roles: tuple[str, ...]  # "cas", "mailbox", "edge"
    addresses: tuple[str, ...]  # where the other servers reach it; () = all its addresses
    port_offset: int = 0
    version: str = ""
    registered_at: float = 0.0  # first registration (kept across re-registrations)
    heartbeat_at: float = 0.0  # last sign of life from a running `serve`
    stopped_at: float = 0.0  # when `serve` last stopped cleanly (0: never)
    # SHA-256 of its TLS certificate (DER, hex): the other servers pin it when they
    # connect to its internal ports (directory/server_auth.py).
    certificate_sha256: str = ""


@dataclass(frozen=True, slots=True)
class MailboxDatabase:
    """A mailbox database: the unit of mailbox placement. Exchange mounts each on
    one Mailbox server, which serves and delivers to the mailboxes in it; here the
    data of every database sits in the organization's store, and `server` says which
    Mailbox server is the database's (docs/deployment.md)."""

    name: str
    server: str  # the hosting server's label
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class AcceptedDomain:
    name: str  # lower-case A-label form
    type: DomainType
    default: bool = False


class RecipientKind(StrEnum):
    MAILBOX = "mailbox"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class Recipient:
    """A mailbox or a distribution group, with all its proxy addresses."""

    id: int
    kind: RecipientKind
    primary_address: str
    display_name: str
    aliases: tuple[str, ...] = ()
    password_hash: str | None = None  # argon2id encoded hash; None for groups
    quota_bytes: int | None = None
    enabled: bool = True
    created: float = 0.0
    database: str | None = None  # mailboxes: the mailbox database it lives in


@dataclass(frozen=True, slots=True)
class ReceiveConnector:
    """Exchange's ReceiveConnector as data (New-ReceiveConnector parameters)."""

    name: str
    transport_role: str  # "FrontendTransport" | "HubTransport"
    bindings: tuple[str, ...]  # "0.0.0.0:25", "[::]:25"
    remote_ip_ranges: tuple[str, ...]  # CIDR; the most specific match wins
    permission_groups: tuple[str, ...]  # AnonymousUsers, ExchangeUsers, ExchangeServers, ...
    auth_mechanisms: tuple[str, ...]  # TLS, BasicAuth, BasicAuthRequireTLS, ExchangeServer
    max_message_size: int
    max_recipients_per_message: int
    max_header_size: int = 128 * 1024
    banner: str | None = None
    enabled: bool = True
    require_tls: bool = False
    connection_timeout: float = 600.0
    connection_inactivity_timeout: float = 300.0
    auth_tarpit_interval: float = 5.0
    max_inbound_connections: int = 5000
    max_inbound_connections_per_source: int = 20  # Exchange's MaxInboundConnectionPerSource
    max_protocol_errors: int = 5
    bound: bool = True  # False: defined for a role split (M4) but not listened on


@dataclass(frozen=True, slots=True)
class AddressSpace:
    """One entry of a send connector's AddressSpaces: a domain pattern and its cost."""

    domain: str  # "*" (everything), "example.com" (exactly), "*.example.com" (its subdomains)
    cost: int = 1


TLS_POLICIES = ("opportunistic", "required", "none")


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """A client access protocol's switch and settings (Exchange's Set-PopSettings,
    Set-ImapSettings): `protocol` is "pop3" or "imap4"; `settings` is the service's
    own typed settings as JSON (services/pop3.py `Pop3Settings.to_mapping`).
    `server` is the server they are for (its label, as `server list` shows it),
    as in Exchange, where they are set per server; "" is the organization's
    default, which rows from before migration 0009 are."""

    protocol: str
    enabled: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    server: str = ""


@dataclass(frozen=True, slots=True)
class SendConnector:
    """Exchange's SendConnector as data (New-SendConnector parameters)."""

    name: str
    address_spaces: tuple[AddressSpace, ...]
    smart_hosts: tuple[str, ...] = ()  # "host" or "host:port"; empty: DNS (MX) routing
    port: int = 25
    auth_user: str | None = None  # smart-host AUTH (only over TLS)
    auth_password: str | None = None
    tls: str = "opportunistic"  # one of TLS_POLICIES
    verify_certificates: bool = False
    source_servers: tuple[str, ...] = ()  # empty: every Mailbox server of the organization
    max_message_size: int = 35 * 1024 * 1024
    frontend_proxy: bool = False  # FrontEndProxyEnabled: out through a CAS (M4)
    fqdn: str | None = None  # the HELO/EHLO name; None: the server's own name
    enabled: bool = True


# ---------------------------------------------------------------- mailbox store


@dataclass(frozen=True, slots=True)
class Folder:
    id: int
    mailbox_id: int
    name: str  # display name, e.g. "Sent Items"; hierarchy with "/" separator
    container_class: str  # IPF.Note, IPF.Appointment, ...
    special_use: str | None  # \\Sent, \\Trash, \\Junk, \\Drafts, \\Inbox-like None
    uidvalidity: int
    uidnext: int
    highest_modseq: int
    messages: int
    unseen: int
    size: int

    @property
    def is_mail(self) -> bool:
        return self.container_class == "IPF.Note"


class Flag:
    """System flags as bits (IMAP RFC 9051 §2.3.2), so SEARCH on flags uses an index."""

    SEEN = 1
    ANSWERED = 2
    FLAGGED = 4
    DELETED = 8
    DRAFT = 16

    NAMES: ClassVar[dict[int, str]] = {
        SEEN: "\\Seen",
        ANSWERED: "\\Answered",
        FLAGGED: "\\Flagged",
        DELETED: "\\Deleted",
        DRAFT: "\\Draft",
    }


@dataclass(frozen=True, slots=True)
class NewItem:
    """What delivery or APPEND hands to the store."""

    mailbox_id: int
    folder_name: str
    item_class: str  # IPM.Note
    blob_id: str
    header_prefix: bytes  # e.g. Return-Path stamped at delivery, prepended to the blob
    size: int  # len(header_prefix) + blob size
    internal_date: float
    flags: int = 0
    keywords: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)  # envelope, bodystructure, ...
    delivery_key: str | None = None  # idempotency: same key in the same mailbox => same item
    # IMAP's ENVELOPE as sent on the wire, rendered once at delivery from the
    # summary: metadata FETCH then decodes no JSON (None: rendered at FETCH).
    imap_envelope: bytes | None = None


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    mailbox_id: int
    folder_id: int
    uid: int
    item_class: str
    blob_id: str
    header_prefix: bytes
    size: int
    internal_date: float
    flags: int
    keywords: tuple[str, ...]
    modseq: int
    summary: dict[str, Any]
    delivery_key: str | None
    imap_envelope: bytes | None = None

    @property
    def state(self) -> ItemState:
        return ItemState(self.uid, self.flags, self.keywords, self.modseq)


@dataclass(frozen=True, slots=True)
class ItemState:
    """What changes about an item after delivery (IMAP's per-session view holds
    only this: a folder of 100,000 items is read without their summaries)."""

    uid: int
    flags: int
    keywords: tuple[str, ...]
    modseq: int


@dataclass(frozen=True, slots=True)
class ItemBrief:
    """What IMAP's metadata FETCH (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)
    needs of an item besides its state; `imap_envelope` None for items stored
    before it was kept (render it from the item's summary)."""

    uid: int
    size: int
    internal_date: float
    imap_envelope: bytes | None


# The item columns `MailStore.uids_in_range` can select on.
ItemRange = Literal["size", "internal_date"]


@dataclass(frozen=True, slots=True)
class ItemHead:
    """What IMAP's FETCH of header sections (BODY[HEADER], BODY[HEADER.FIELDS
    (...)], RFC822.HEADER) needs besides the metadata of `ItemBrief`: the
    message file and the size of its header block, so that only the header is
    read and no summary is decoded. The header section is `header_prefix`
    followed by the file's first `header_size` octets."""

    uid: int
    blob_id: str
    header_prefix: bytes
    header_size: int
    size: int
    internal_date: float
    imap_envelope: bytes | None


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """A folder's changes after a MODSEQ (RFC 7162): items delivered or changed
    since, ascending by UID, and UIDs expunged since (tombstones), ascending.

    `complete` is False when tombstones that old have been pruned
    (`MailStore.prune_expunged`): `expunged` may then miss UIDs, and a caller
    must find what is gone by comparing the UIDs it knows with the folder's
    (`mailbox.folder_sync.changes_for` does)."""

    changed: list[ItemState]
    expunged: list[int]
    complete: bool = True


# ---------------------------------------------------------------- transport


class RecipientStatus(StrEnum):
    READY = "ready"  # waiting for the categorizer / delivery
    DELIVERED = "delivered"
    FAILED = "failed"  # permanent failure; an NDR is due (M2)
    UNREACHABLE = "unreachable"  # no route (no send connector yet)
    RELAYED = "relayed"
    SUSPENDED = "suspended"  # an admin held it (Suspend-Message); never due until resumed
    POISON = "poison"  # its delivery crashed the worker repeatedly; waits for an admin


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: str
    blob_id: str
    sender: str  # "" is the null reverse-path
    size: int
    received: float
    source: str  # SMTP, DSN, AGENT, ...
    connector: str
    client_ip: str
    server_ip: str
    internet_message_id: str
    subject: str
    auth_user: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # DSN RET/ENVID, BODY, SMTPUTF8


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    message_id: str
    address: str
    status: RecipientStatus = RecipientStatus.READY
    next_hop: str = ""  # "mailbox:<id>", "unreachable", a domain for M2
    params: dict[str, Any] = field(default_factory=dict)  # NOTIFY, ORCPT
    attempts: int = 0
    last_error: str = ""
    next_attempt: float = 0.0


@dataclass(frozen=True, slots=True)
class QueueSummary:
    name: str  # next hop: "Submission", "mailbox delivery", "Unreachable", ...
    status: str  # Active, Ready, Retry, Suspended
    count: int
    last_error: str = ""
    next_retry: float | None = None


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    """One line of the message tracking log (Exchange's MSGTRK fields, the ones we have)."""

    timestamp: float
    event_id: str  # RECEIVE, SUBMIT, RESOLVE, EXPAND, DELIVER, DEFER, FAIL, DSN, ...
    source: str  # SMTP, STOREDRIVER, ROUTING, AGENT, ADMIN
    message_id: str  # internal queue id
    internet_message_id: str = ""
    sender: str = ""
    return_path: str = ""
    recipients: tuple[str, ...] = ()
    recipient_status: str = ""
    connector: str = ""
    client_ip: str = ""
    server_ip: str = ""
    server_hostname: str = ""
    total_bytes: int = 0
    subject: str = ""
    related_recipient: str = ""
    reference: str = ""


def message_event(
    message: QueuedMessage,
    event_id: str,
    source: str,
    recipients: tuple[str, ...],
    status: str = "",
    *,
    timestamp: float,
    server_hostname: str,
    **fields: str,
) -> TrackingEvent:
    """A tracking event about a queued message: its ids, sender, size and subject
    filled in; `fields` (connector, client_ip, server_ip, ...) for the rest."""
    return TrackingEvent(
        timestamp=timestamp,
        event_id=event_id,
        source=source,
        message_id=message.id,
        internet_message_id=message.internet_message_id,
        sender=message.sender,
        return_path=message.sender,
        recipients=recipients,
        recipient_status=status,
        server_hostname=server_hostname,
        total_bytes=message.size,
        subject=message.subject,
        **fields,
    )


@dataclass(frozen=True, slots=True)
class TransportCommit:
    """What the transport service changes in one step, committed atomically.

    Receiving a message for local mailboxes is one of these (queue rows only for
    recipients still pending, Inbox items for the others, tracking events), and so
    is a delivery pass (items, queue updates and removals, DELIVER events): a
    crash leaves either all of it or none, never an item without its queue change.
    """

    enqueue: tuple[QueuedMessage, tuple[QueuedRecipient, ...]] | None = None
    deliver: tuple[NewItem, ...] = ()
    update: tuple[QueuedRecipient, ...] = ()
    remove: tuple[str, ...] = ()  # queue message ids with nothing left to do
    events: tuple[TrackingEvent, ...] = ()
