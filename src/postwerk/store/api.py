"""The storage contracts. Domain code depends on these Protocols only.

Backends (`store.memory`, `store.sqlite`, later `store.postgres`) implement them
and are chosen in the composition roots (`postwerk.roles`). One conformance
suite (`tests/conformance`) runs against every backend.

Invariants every backend keeps:
- UIDs in a folder strictly increase and are never reused (UIDNEXT only grows).
- MODSEQ is per mailbox folder, strictly increasing with every change.
- Folder counters (messages, unseen, size) always equal what the items say.
- `deliver` is idempotent per (mailbox, delivery_key): a repeated delivery
  returns the existing item, so crash recovery can simply redo deliveries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Protocol

from postwerk.core.errors import InvalidName
from postwerk.store.records import (
    AcceptedDomain,
    DomainType,
    Folder,
    FolderChanges,
    Item,
    ItemBrief,
    ItemHead,
    ItemRange,
    ItemState,
    MailboxDatabase,
    NewItem,
    Organization,
    ProtocolSettings,
    QueuedMessage,
    QueuedRecipient,
    QueueSummary,
    ReceiveConnector,
    Recipient,
    RecipientKind,
    RecipientStatus,
    SendConnector,
    ServerRecord,
    TrackingEvent,
    TransportCommit,
)

# Exchange 2013's default folder set: (name, container class, IMAP special-use).
DEFAULT_FOLDERS: tuple[tuple[str, str, str | None], ...] = (
    ("Inbox", "IPF.Note", None),
    ("Drafts", "IPF.Note", "\\Drafts"),
    ("Sent Items", "IPF.Note", "\\Sent"),
    ("Deleted Items", "IPF.Note", "\\Trash"),
    ("Junk Email", "IPF.Note", "\\Junk"),
    ("Outbox", "IPF.Note", None),
    ("Calendar", "IPF.Appointment", None),
    ("Contacts", "IPF.Contact", None),
    ("Tasks", "IPF.Task", None),
    ("Notes", "IPF.StickyNote", None),
    ("Journal", "IPF.Journal", None),
)


# ---------------------------------------------------------------- shared rules
# Small pure functions that pin down contract semantics, so every backend (and
# the conformance suite) agrees on them instead of re-deriving them.


# The names create_default_folders makes: Exchange lets nobody rename or delete them.
DEFAULT_FOLDER_NAMES: frozenset[str] = frozenset(name for name, _, _ in DEFAULT_FOLDERS)

# The hierarchy separator of folder names, as IMAP LIST reports it.
SEPARATOR = "/"


def folder_key(name: str) -> str:
    """The stored folder name a client's name refers to.

    RFC 9051 §5.1: INBOX is case-insensitive; every other name matches exactly.
    The first level of a name below INBOX ("inbox/Lists") is INBOX too, as in
    Dovecot and Exchange, so a folder under Inbox has one spelling only.
    """
    head, sep, rest = name.partition(SEPARATOR)
    if head.upper() != "INBOX":
        return name
    return "Inbox" + sep + rest


def check_folder_name(name: str) -> str:
    """The stored name (`folder_key`) for a folder to be created or renamed to;
    InvalidName when it cannot be one.

    Protocol-neutral rules, stricter than RFC 9051 needs, so that every client
    (IMAP, EWS, EAS) can name every folder: no empty level (which also refuses
    a leading or trailing "/"), no "." or ".." level, no control character, no
    wildcard ("*" and "%" would make LIST patterns ambiguous, RFC 9051 §6.3.9).
    """
    if not name:
        raise InvalidName("empty folder name")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        raise InvalidName("control character in folder name")
    if "*" in name or "%" in name:
        raise InvalidName("wildcard character in folder name")
    levels = name.split(SEPARATOR)
    if any(not level for level in levels):
        raise InvalidName("empty hierarchy level in folder name")
    if any(level in (".", "..") for level in levels):
        raise InvalidName("'.' or '..' hierarchy level in folder name")
    return folder_key(name)


def folder_parents(key: str) -> list[str]:
    """The superiors of a stored name, outermost first: "a/b/c" -> ["a", "a/b"]."""
    levels = key.split(SEPARATOR)
    return [SEPARATOR.join(levels[:n]) for n in range(1, len(levels))]


def is_below(name: str, ancestor: str) -> bool:
    """Whether stored name `name` is an inferior of `ancestor` (not `ancestor` itself)."""
    return name.startswith(ancestor + SEPARATOR)


def address_key(address: str) -> str:
    """The lookup key of an address: whole address case-insensitive.

    RFC 5321 §2.4 lets the local part be case-sensitive, but Exchange (and every
    client's expectation) treats proxy addresses case-insensitively.
    """
    return address.lower()


def queue_name(recipient: QueuedRecipient) -> str:
    """The queue a pending recipient sits in, as Exchange's Get-Queue names it."""
    if recipient.status == RecipientStatus.POISON:
        return "Poison"
    if recipient.status == RecipientStatus.UNREACHABLE or recipient.next_hop == "unreachable":
        return "Unreachable"
    if recipient.next_hop == "":
        return "Submission"
    if recipient.next_hop.startswith("mailbox:"):
        return "mailbox delivery"
    return recipient.next_hop


# Recipients that keep their message in the queue.
PENDING_STATUSES: frozenset[RecipientStatus] = frozenset(
    {
        RecipientStatus.READY,
        RecipientStatus.UNREACHABLE,
        RecipientStatus.SUSPENDED,
        RecipientStatus.POISON,
    }
)


def queue_summaries(pending: Iterable[QueuedRecipient], now: float) -> list[QueueSummary]:
    """Group pending recipients into queues; `count` is distinct messages per queue.

    A queue is in "Retry" when a recipient in it has failed before and waits for
    its next attempt; otherwise "Ready".
    """
    groups: dict[str, list[QueuedRecipient]] = {}
    for r in pending:
        if r.status in PENDING_STATUSES:
            groups.setdefault(queue_name(r), []).append(r)
    out: list[QueueSummary] = []
    for name in sorted(groups):
        rs = groups[name]
        waiting = [r for r in rs if r.attempts > 0 and r.next_attempt > now]
        errored = sorted((r for r in rs if r.last_error), key=lambda r: r.attempts)
        held = all(r.status == RecipientStatus.SUSPENDED for r in rs)
        out.append(
            QueueSummary(
                name=name,
                status="Suspended" if held else "Retry" if waiting else "Ready",
                count=len({r.message_id for r in rs}),
                last_error=errored[-1].last_error if errored else "",
                next_retry=min(r.next_attempt for r in waiting) if waiting else None,
            )
        )
    return out


class BlobWriter(Protocol):
    """A blob being written. `commit` makes it durable (fsync) and returns its id."""

    size: int

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> str: ...

    async def abort(self) -> None: ...


_HEX_DIGITS = "0123456789abcdef"


def partition_of(message_id: str, n: int) -> int:
    """Which of `n` delivery processes owns a message: its last hex digit mod n
    (ids end in random hex, core/ids.py); anything else goes to the last one.
    Backends evaluate the same rule in their queries."""
    if not message_id:
        return 0  # as SQLite: instr(x, "") is 1
    return (_HEX_DIGITS.find(message_id[-1].lower()) + n) % n


class BlobStore(Protocol):
    """Immutable message bodies, written once and shared by every recipient."""

    def writer(self) -> BlobWriter: ...

    async def read(self, blob_id: str) -> bytes: ...

    def stream(self, blob_id: str, chunk_size: int = 65536) -> AsyncIterator[bytes]: ...

    async def size(self, blob_id: str) -> int: ...

    async def delete(self, blob_id: str) -> None: ...

    async def read_many(
        self,
        blob_ids: Sequence[str],
        *,
        inline: bool = False,
        limits: Mapping[str, int] | None = None,
    ) -> dict[str, bytes]:
        """Several small blobs at once (one thread hop); missing ones are left out.
        `inline`: read on the calling thread, for a few small files whose reading
        costs less than the hop (IMAP header fetches). `limits`: read at most
        that many leading octets of the blobs named (a message's header)."""
        ...

    async def delete_many(self, blob_ids: Sequence[str]) -> None:
        """`delete` for several blobs at once; idempotent."""
        ...

    async def ids(self) -> list[str]: ...


class DirectoryStore(Protocol):
    """What Active Directory holds for an Exchange organization."""

    async def get_organization(self) -> Organization | None: ...

    async def set_organization(self, name: str) -> Organization: ...

    async def add_domain(
        self, name: str, type: DomainType, default: bool = False
    ) -> AcceptedDomain: ...

    async def remove_domain(self, name: str) -> None: ...

    async def list_domains(self) -> list[AcceptedDomain]: ...

    async def add_recipient(
        self,
        kind: RecipientKind,
        primary_address: str,
        display_name: str,
        password_hash: str | None = None,
        quota_bytes: int | None = None,
        database: str | None = None,
    ) -> Recipient: ...

    async def remove_recipient(self, recipient_id: int) -> None: ...

    async def find_recipient(self, address: str) -> Recipient | None:
        """Look up by any proxy address (primary or alias), case-insensitively."""
        ...

    async def get_recipient(self, recipient_id: int) -> Recipient | None: ...

    async def list_recipients(self, kind: RecipientKind | None = None) -> list[Recipient]: ...

    async def set_password_hash(self, recipient_id: int, password_hash: str) -> None: ...

    async def set_quota(self, recipient_id: int, quota_bytes: int | None) -> None:
        """The mailbox's storage limit (None: none). NotFound."""
        ...

    async def add_alias(self, recipient_id: int, address: str) -> None: ...

    async def remove_alias(self, address: str) -> None: ...

    async def add_group_member(self, group_id: int, address: str) -> None: ...

    async def remove_group_member(self, group_id: int, address: str) -> None: ...

    async def group_members(self, group_id: int) -> list[str]: ...

    async def list_receive_connectors(self) -> list[ReceiveConnector]: ...

    async def put_receive_connector(self, connector: ReceiveConnector) -> None: ...

    async def list_send_connectors(self) -> list[SendConnector]: ...

    async def get_protocol_settings(
        self, protocol: str, server: str = ""
    ) -> ProtocolSettings | None:
        """This server's settings of `protocol`, else the organization default (""),
        else None."""
        ...

    async def put_server(self, server: ServerRecord) -> ServerRecord:
        """Register a server or update it by name; its `registered_at` is kept from
        the first registration. Returns what is stored."""
        ...

    async def list_servers(self) -> list[ServerRecord]:
        """Every registered server, by name."""
        ...

    async def touch_server(self, name: str, at: float, *, stopping: bool = False) -> None:
        """A running server's heartbeat, or (`stopping`) its clean stop at `at`.
        NotFound for an unknown name."""
        ...

    async def put_protocol_settings(self, settings: ProtocolSettings) -> None:
        """Create or replace by (server, protocol)."""
        ...

    async def put_mailbox_database(self, database: MailboxDatabase) -> MailboxDatabase:
        """Create a mailbox database, or mount an existing one on `database.server`
        (its creation time is kept). Returns what is stored."""
        ...

    async def list_mailbox_databases(self) -> list[MailboxDatabase]:
        """Every mailbox database, by name."""
        ...

    async def mailbox_counts(self) -> dict[str, int]:
        """Mailboxes per database name (databases without mailboxes are absent)."""
        ...

    async def set_recipient_database(self, recipient_id: int, database: str | None) -> None:
        """Place a mailbox in `database`. NotFound for an unknown recipient or database."""
        ...

    async def adopt_unplaced_mailboxes(self, database: str) -> int:
        """Place every mailbox that has no database in `database`; how many moved."""
        ...

    async def put_send_connector(self, connector: SendConnector) -> None:
        """Create or replace by name."""
        ...

    async def remove_send_connector(self, name: str) -> None:
        """NotFound when there is none by that name."""
        ...


class MailStore(Protocol):
    """Mailboxes' folders and items; read by every client protocol."""

    async def create_default_folders(self, mailbox_id: int) -> list[Folder]: ...

    async def list_folders(self, mailbox_id: int) -> list[Folder]: ...

    async def get_folder(self, mailbox_id: int, name: str) -> Folder:
        """Raise FolderNotFound when absent. Name match is case-insensitive for Inbox only."""
        ...

    async def folder_by_id(self, folder_id: int) -> Folder | None:
        """One folder's row (counters, HIGHESTMODSEQ), None when it is gone: what an
        IMAP session reads after each command to see whether its folder changed."""
        ...

    async def mailbox_size(self, mailbox_id: int) -> int:
        """Octets stored in all of the mailbox's folders: the sum of their size
        counters, read without touching items (what counts against its quota).
        0 for a mailbox without folders."""
        ...

    async def deliver(self, items: Sequence[NewItem]) -> list[Item]:
        """Insert items (one transaction per batch); idempotent per delivery_key."""
        ...

    async def list_items(self, folder_id: int, limit: int | None = None) -> list[Item]: ...

    async def get_item(self, folder_id: int, uid: int) -> Item: ...

    async def item_states(self, folder_id: int) -> list[ItemState]:
        """Every item's UID, flags, keywords and MODSEQ, ascending by UID: IMAP's
        SELECT, without reading summaries. FolderNotFound."""
        ...

    async def items_by_uid(self, folder_id: int, uids: Sequence[int]) -> list[Item]:
        """The items with these UIDs, ascending by UID; absent UIDs are skipped.
        FolderNotFound."""
        ...

    async def item_briefs(self, folder_id: int, uids: Sequence[int]) -> list[ItemBrief]:
        """Size, internal date and stored ENVELOPE of these UIDs, ascending; absent
        UIDs are skipped. FolderNotFound."""
        ...

    async def item_heads(self, folder_id: int, uids: Sequence[int]) -> list[ItemHead]:
        """`ItemHead`s of these UIDs (file, header prefix, header block size, and
        the `ItemBrief` fields), ascending; absent UIDs are skipped. FolderNotFound."""
        ...

    async def prune_expunged(self, older_than: float) -> int:
        """Forget tombstones written before `older_than` (a Unix time); returns how
        many. Each folder remembers the highest MODSEQ it forgot, so that
        `changes_since` from before it answers `complete=False`."""
        ...

    async def uids_in_range(
        self, folder_id: int, column: ItemRange, low: float | None, high: float | None
    ) -> list[int]:
        """UIDs of the items whose `column` ("size" or "internal_date") is at least
        `low` and below `high` (None: unbounded), ascending; an index serves it
        (IMAP SEARCH LARGER/SMALLER, SINCE/BEFORE/ON). FolderNotFound."""
        ...

    async def changes_since(self, folder_id: int, modseq: int) -> FolderChanges:
        """Items whose MODSEQ is above `modseq` and UIDs expunged (or moved away)
        with a MODSEQ above it: what a session that knew the folder at `modseq`
        has missed (RFC 7162 CHANGEDSINCE, QRESYNC). FolderNotFound."""
        ...

    async def set_flags(
        self,
        folder_id: int,
        uids: Sequence[int],
        flags: int,
        keywords: Sequence[str] = (),
        *,
        unchanged_since: int | None = None,
    ) -> list[Item]:
        """Replace flags and keywords of the given UIDs; absent UIDs are ignored.
        With `unchanged_since`, an item whose MODSEQ is above it is left alone,
        decided inside the write (RFC 7162 STORE UNCHANGEDSINCE). Returns every
        found item as it now is (changed ones with the new MODSEQ), by UID."""
        ...

    async def expunge(self, folder_id: int, uids: Sequence[int]) -> list[int]: ...

    async def delete_mailbox(self, mailbox_id: int) -> list[str]:
        """Remove all folders, items and subscriptions; return blob ids no longer
        referenced by this store."""
        ...

    # Folder hierarchy (IMAP CREATE/RENAME/DELETE; "/" separates levels).

    async def create_folder(self, mailbox_id: int, name: str) -> Folder:
        """Create a mail folder (IPF.Note) and any missing superiors (RFC 9051 §6.3.4),
        each with a new UIDVALIDITY; return the folder named.

        InvalidName (`check_folder_name`); AlreadyExists when it exists (INBOX always does).
        """
        ...

    async def rename_folder(self, mailbox_id: int, old: str, new: str) -> Folder:
        """Rename a folder and its inferiors (RFC 9051 §6.3.6), keeping ids, UIDs,
        UIDVALIDITY and counters; missing superiors of `new` are created. Returns
        the renamed folder. Subscriptions are left as they are (RFC 9051 §6.3.7).

        FolderNotFound; AlreadyExists (INBOX always exists); InvalidName, also for a
        folder moved below itself; DefaultFolderProtected for Exchange's default
        folders and for INBOX (RFC 9051's "move INBOX's messages" is not supported).
        """
        ...

    async def delete_folder(self, mailbox_id: int, name: str) -> list[str]:
        """Remove a folder and its items; return blob ids no longer referenced by
        this store. Subscriptions are left as they are (RFC 9051 §6.3.7).

        FolderNotFound; DefaultFolderProtected; FolderHasChildren (RFC 9051 §6.3.5
        would allow a \\Noselect remnant; we refuse instead).
        """
        ...

    # Items between folders (IMAP COPY/MOVE).

    async def copy_items(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        """Copy items into another folder of the same mailbox; return (source uid,
        new uid) pairs in source UID order (COPYUID, RFC 4315). Copies share the
        blob and keep flags, keywords, internal date, summary and header prefix,
        but no delivery key; all take one new MODSEQ of the destination. Absent
        UIDs are skipped. FolderNotFound; NotPermitted across mailboxes.
        """
        ...

    async def move_items(
        self, folder_id: int, uids: Sequence[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        """`copy_items` and expunge from the source as one atomic change (RFC 6851).
        A moved item keeps its id and delivery key (a redone delivery still finds
        it); the source's and the destination's HIGHESTMODSEQ each grow by one.
        """
        ...

    # Subscriptions (IMAP LSUB / LIST (SUBSCRIBED)): names, not folders.

    async def subscribe(self, mailbox_id: int, name: str) -> None:
        """Subscribe to a name (stored as `folder_key`); idempotent. It need not
        exist (RFC 9051 §6.3.7). InvalidName as `check_folder_name`."""
        ...

    async def unsubscribe(self, mailbox_id: int, name: str) -> None:
        """NotFound when the name is not subscribed."""
        ...

    async def list_subscriptions(self, mailbox_id: int) -> list[str]:
        """Subscribed names, sorted."""
        ...


class QueueStore(Protocol):
    """The transport service's durable queue."""

    async def enqueue(self, message: QueuedMessage, recipients: Sequence[QueuedRecipient]) -> None:
        """Envelope and every recipient row in one transaction."""
        ...

    async def get_message(self, message_id: str) -> QueuedMessage | None: ...

    async def recipients(self, message_id: str) -> list[QueuedRecipient]: ...

    async def messages_with_recipients(
        self, message_ids: Sequence[str]
    ) -> dict[str, tuple[QueuedMessage, list[QueuedRecipient]]]:
        """Messages with all their recipients (RCPT order) in one read; absent ones left out:
        the delivery queues' hot path."""
        ...

    async def due(
        self,
        now: float,
        limit: int = 500,
        next_hop_prefix: str | None = None,
        partition: tuple[int, int] | None = None,
    ) -> list[QueuedRecipient]:
        """Recipients in READY whose next_attempt <= now (and next hop starts so);
        `partition=(k, n)`: only messages with `partition_of(id, n) == k`."""
        ...

    async def update_recipients(self, updates: Sequence[QueuedRecipient]) -> None: ...

    async def list_messages(self, status: RecipientStatus | None = None) -> list[QueuedMessage]: ...

    async def in_status(
        self, statuses: Sequence[RecipientStatus]
    ) -> list[tuple[QueuedMessage, list[QueuedRecipient]]]:
        """Each message with a recipient in `statuses`, with those recipients, in one read
        (messages by arrival, recipients in RCPT order): routing passes over the queue."""
        ...

    async def summaries(self) -> list[QueueSummary]: ...

    async def remove_message(self, message_id: str) -> None: ...

    async def finished_messages(self) -> list[str]:
        """Messages with no recipient left in READY or UNREACHABLE: their blob may go."""
        ...


class TransportStore(Protocol):
    """Queue, mailbox delivery and tracking changed in one transaction."""

    async def commit(self, change: TransportCommit) -> list[Item]:
        """Apply every part of `change` or none; return the delivered items (in order)."""
        ...


class TrackingLog(Protocol):
    """Exchange's message tracking log."""

    async def append(self, events: Sequence[TrackingEvent]) -> None: ...

    async def search(
        self,
        sender: str | None = None,
        recipient: str | None = None,
        message_id: str | None = None,
        since: float | None = None,
        event_id: str | None = None,
        limit: int = 1000,
    ) -> list[TrackingEvent]: ...
