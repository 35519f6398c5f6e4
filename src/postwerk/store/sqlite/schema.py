"""The relational schema: every table of the row store in ONE `MetaData`.

Portable on purpose (SQLite now, PostgreSQL in M4 through asyncpg):
- autoincrement keys are BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite;
- times are UTC epoch seconds as floats (`DateTime(timezone=True)` drops the zone on SQLite);
- JSON goes into TEXT only for opaque values that are never searched;
- constraints are named by convention, so alembic batch mode can rebuild tables on SQLite.

Message bodies never live here: items and queue rows hold a blob id (`store.blobs`).
The alembic migrations under `migrations/` must produce exactly this metadata;
`tests/conformance/test_sqlite_specific.py` checks that with `compare_metadata`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Deterministic constraint names: batch mode on SQLite recreates tables and must
# be able to name what it drops; PostgreSQL needs names for ALTER ... DROP.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# BIGINT on PostgreSQL; plain INTEGER on SQLite, where only "INTEGER PRIMARY KEY"
# aliases the rowid and autoincrements. Tables whose ids must never be reused
# also say sqlite_autoincrement=True (PostgreSQL sequences never reuse).
BigId = BigInteger().with_variant(Integer, "sqlite")

# ---------------------------------------------------------------- directory

organization = Table(
    "organization",
    metadata,
    # One row (id = 1): an installation is one Exchange organization.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String, nullable=False),
    Column("created", Float, nullable=False),
    Column("secret", String, nullable=True),  # migration 0010
)

accepted_domain = Table(
    "accepted_domain",
    metadata,
    Column("name", String, primary_key=True),  # lower-case A-label
    Column("type", String, nullable=False),
    Column("is_default", Boolean, nullable=False, default=False),
)

recipient = Table(
    "recipient",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String, nullable=False),
    Column("primary_address", String, nullable=False),
    Column("display_name", String, nullable=False),
    Column("password_hash", String, nullable=True),
    Column("quota_bytes", BigInteger, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created", Float, nullable=False),
    Column("database", String, nullable=True),  # mailboxes: their mailbox database (0010)
    # Never reuse an id (plain rowids are reused after deleting the highest):
    # a new recipient must not inherit a deleted mailbox's folders.
    sqlite_autoincrement=True,
)

# Every address a recipient answers to (primary and aliases), keyed by the
# lower-cased address so lookups are one unique-index probe.
proxy_address = Table(
    "proxy_address",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("address", String, nullable=False),
    Column("address_key", String, nullable=False),
    Column(
        "recipient_id",
        BigId,
        ForeignKey("recipient.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("is_primary", Boolean, nullable=False),
    UniqueConstraint("address_key"),
    Index(None, "recipient_id"),
)

# Members are addresses, not recipient ids: a group may hold external contacts.
group_member = Table(
    "group_member",
    metadata,
    Column(
        "group_id",
        BigId,
        ForeignKey("recipient.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("address_key", String, nullable=False),
    Column("address", String, nullable=False),
    PrimaryKeyConstraint("group_id", "address_key"),
)

receive_connector = Table(
    "receive_connector",
    metadata,
    Column("name", String, primary_key=True),
    Column("transport_role", String, nullable=False),
    # Tuples of strings as JSON arrays: read whole, never searched.
    Column("bindings", Text, nullable=False),
    Column("remote_ip_ranges", Text, nullable=False),
    Column("permission_groups", Text, nullable=False),
    Column("auth_mechanisms", Text, nullable=False),
    Column("max_message_size", BigInteger, nullable=False),
    Column("max_recipients_per_message", Integer, nullable=False),
    Column("max_header_size", Integer, nullable=False),
    Column("banner", String, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("require_tls", Boolean, nullable=False),
    Column("connection_timeout", Float, nullable=False),
    Column("connection_inactivity_timeout", Float, nullable=False),
    Column("auth_tarpit_interval", Float, nullable=False),
    Column("max_inbound_connections", Integer, nullable=False),
    Column("max_inbound_connections_per_source", Integer, nullable=False),
    Column("max_protocol_errors", Integer, nullable=False),
    Column("bound", Boolean, nullable=False),
)

protocol_settings = Table(
    "protocol_settings",
    metadata,
    # The server's label ("" = the organization's default, migration 0009).
    Column("server", String, primary_key=True, server_default=text("''")),
    Column("protocol", String, primary_key=True),  # "pop3", "imap4"
    Column("enabled", Boolean, nullable=False),
    Column("settings", Text, nullable=False),  # JSON of the service's typed settings
)

# Message files kept in the database (`[database] blobs = "database"`,
# store/sqlite/blob_table.py): chunks of 1 MiB, in order.
blob_chunk = Table(
    "blob_chunk",
    metadata,
    Column("blob_id", String, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("blob_id", "seq"),
)

# The organization's servers, as each registers itself (`postwerk init` / `serve`).
server = Table(
    "server",
    metadata,
    Column("name", String, primary_key=True),
    Column("fqdn", String, nullable=False),
    Column("roles", Text, nullable=False),  # JSON array
    Column("addresses", Text, nullable=False),  # JSON array
    Column("port_offset", Integer, nullable=False),
    Column("version", String, nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("stopped_at", Float, nullable=False),
    Column("certificate_sha256", String, nullable=False, server_default=text("''")),
)

# Mailbox databases and the Mailbox server each is mounted on (migration 0010).
mailbox_database = Table(
    "mailbox_database",
    metadata,
    Column("name", String, primary_key=True),
    Column("server", String, nullable=False),
    Column("created", Float, nullable=False),
)

send_connector = Table(
    "send_connector",
    metadata,
    Column("name", String, primary_key=True),
    # JSON: [{"domain": "*", "cost": 1}, ...] and ["host:port", ...]; read whole.
    Column("address_spaces", Text, nullable=False),
    Column("smart_hosts", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("auth_user", String, nullable=True),
    Column("auth_password", String, nullable=True),
    Column("tls", String, nullable=False),
    Column("verify_certificates", Boolean, nullable=False),
    Column("source_servers", Text, nullable=False),
    Column("max_message_size", BigInteger, nullable=False),
    Column("frontend_proxy", Boolean, nullable=False),
    Column("fqdn", String, nullable=True),
    Column("enabled", Boolean, nullable=False),
)

# ---------------------------------------------------------------- mailbox store

# High-water marks that must outlive the rows they were taken for; "uidvalidity"
# keeps UIDVALIDITY unique even after every folder was deleted.
sequence = Table(
    "sequence",
    metadata,
    Column("name", String, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# mailbox_id is a recipient id but carries no foreign key: in a role split (M4)
# the Mailbox server's store and the directory live in different databases.
folder = Table(
    "folder",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("mailbox_id", BigInteger, nullable=False),
    Column("name", String, nullable=False),
    Column("container_class", String, nullable=False),
    Column("special_use", String, nullable=True),
    # The counters below are updated in the same transaction as every item
    # change, so SELECT/STATUS never counts rows.
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False),
    Column("highest_modseq", BigInteger, nullable=False),
    Column("messages", BigInteger, nullable=False),
    Column("unseen", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    UniqueConstraint("mailbox_id", "name"),
    sqlite_autoincrement=True,
)

item = Table(
    "item",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("mailbox_id", BigInteger, nullable=False),
    Column(
        "folder_id",
        BigId,
        ForeignKey("folder.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("uid", BigInteger, nullable=False),
    Column("item_class", String, nullable=False),
    Column("blob_id", String, nullable=False),
    Column("header_prefix", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("internal_date", Float, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("keywords", Text, nullable=False),  # JSON array
    Column("modseq", BigInteger, nullable=False),
    Column("summary", Text, nullable=False),  # JSON object: envelope, bodystructure
    Column("delivery_key", String, nullable=True),
    Column("imap_envelope", LargeBinary, nullable=True),  # ENVELOPE as IMAP sends it
    # The summary's header_size, for header FETCHes; NULL for rows stored before 0006.
    Column("header_size", BigInteger, nullable=True),
    # Idempotent delivery is one probe of this index, whatever the mailbox size.
    # NULL keys never collide (both SQLite and PostgreSQL treat NULLs as distinct).
    UniqueConstraint("mailbox_id", "delivery_key"),
    Index(None, "folder_id", "uid", unique=True),
    Index(None, "folder_id", "flags"),  # SEARCH UNSEEN/FLAGGED/DELETED
    Index(None, "folder_id", "modseq"),  # CONDSTORE CHANGEDSINCE (RFC 7162)
    Index(None, "folder_id", "internal_date"),  # SEARCH SINCE/BEFORE/ON
    Index(None, "folder_id", "size"),  # SEARCH LARGER/SMALLER
    Index(None, "blob_id"),  # "is this blob still referenced?"
    sqlite_autoincrement=True,
)

# IMAP subscriptions (RFC 9051 §6.3.7): names, not folder ids, because a
# subscription outlives the folder it names and may name one that never existed.
subscription = Table(
    "subscription",
    metadata,
    Column("mailbox_id", BigInteger, nullable=False),
    Column("name", String, nullable=False),
    PrimaryKeyConstraint("mailbox_id", "name"),
)

# Expunged UIDs (tombstones), so that a session or a client that knew the folder
# at some MODSEQ learns what left it since (RFC 7162 QRESYNC's VANISHED) without
# comparing whole UID lists. UIDs are never reused within a folder.
expunged_item = Table(
    "expunged_item",
    metadata,
    Column(
        "folder_id",
        BigId,
        ForeignKey("folder.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("uid", BigInteger, nullable=False),  # 0: the pruned-up-to mark (mailstore.py)
    Column("modseq", BigInteger, nullable=False),
    # When it was written, for `prune_expunged` (Unix time).
    Column("expunged_at", Float, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("folder_id", "uid"),
    Index(None, "folder_id", "modseq"),
)

# ---------------------------------------------------------------- transport

queue_message = Table(
    "queue_message",
    metadata,
    Column("id", String, primary_key=True),
    Column("blob_id", String, nullable=False),
    Column("sender", String, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received", Float, nullable=False),
    Column("source", String, nullable=False),
    Column("connector", String, nullable=False),
    Column("client_ip", String, nullable=False),
    Column("server_ip", String, nullable=False),
    Column("internet_message_id", String, nullable=False),
    Column("subject", String, nullable=False),
    Column("auth_user", String, nullable=True),
    Column("params", Text, nullable=False),  # JSON object
)

queue_recipient = Table(
    "queue_recipient",
    metadata,
    Column(
        "message_id",
        String,
        ForeignKey("queue_message.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("address", String, nullable=False),
    Column("ordinal", Integer, nullable=False),  # RCPT order, kept for DSNs
    Column("status", String, nullable=False),
    Column("next_hop", String, nullable=False),
    Column("params", Text, nullable=False),  # JSON object
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("next_attempt", Float, nullable=False),
    # The server whose transport works this row (its queue, as Exchange's queues are
    # per server); "" on a database one server has to itself (migration 0010).
    Column("server", String, nullable=False, server_default=text("''")),
    PrimaryKeyConstraint("message_id", "address"),
    Index(None, "status", "next_attempt"),  # the scheduler's "what is due"
)

tracking_event = Table(
    "tracking_event",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("timestamp", Float, nullable=False),
    Column("event_id", String, nullable=False),
    Column("source", String, nullable=False),
    Column("message_id", String, nullable=False),
    Column("internet_message_id", String, nullable=False),
    Column("sender", String, nullable=False),
    # Lower-cased sender: searches are case-insensitive and still use an index.
    Column("sender_key", String, nullable=False),
    Column("return_path", String, nullable=False),
    Column("recipients", Text, nullable=False),  # JSON array, as given
    # The same array lower-cased in Python (SQL lower() is ASCII-only on SQLite):
    # a recipient search is a LIKE on it, then an exact check.
    Column("recipients_key", Text, nullable=False),
    Column("recipient_status", Text, nullable=False),
    Column("connector", String, nullable=False),
    Column("client_ip", String, nullable=False),
    Column("server_ip", String, nullable=False),
    Column("server_hostname", String, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("subject", String, nullable=False),
    Column("related_recipient", String, nullable=False),
    Column("reference", String, nullable=False),
    Index(None, "timestamp"),
    Index(None, "message_id"),
    Index(None, "internet_message_id"),
    Index(None, "sender_key"),
)
