"""IMAP4 commands as values: one frozen dataclass per command (RFC 9051 §6, RFC 3501 §6).

Purpose: the vocabulary between `parser` (pieces of a command → command) and
the IMAP service that executes it. Nothing here does I/O or policy.

Invariants (the parser guarantees them; code that builds commands by hand
should keep them too):
- Every command carries the client's `tag` exactly as sent.
- Mailbox names are the decoded astring exactly as sent (quoted strings
  unescaped, literals decoded as UTF-8), except that `INBOX` in any case is
  "INBOX" (RFC 9051 §5.1). Modified UTF-7 (RFC 3501 §5.1.3) is *not* decoded
  here: whether a name is mUTF-7 or UTF-8 depends on UTF8=ACCEPT (RFC 6855),
  which is session state.
- System flags are case-normalized ("\\Seen"); keywords are atoms as sent.
  STORE and APPEND never carry "\\Recent" (RFC 3501 §2.3.2: only the server
  sets it).
- Sequence numbers and UIDs are 1..2^32-1; "*" is `None` in a range; "$"
  (RFC 5182 SEARCHRES) is `SequenceSet(saved=True)`.
- Search criteria form a tree of frozen dataclasses no deeper than the
  parser's bound (MAX_SEARCH_DEPTH), so the service may recurse over it.

Standards: RFC 9051 (IMAP4rev2), RFC 3501 (IMAP4rev1), RFC 2177 (IDLE),
RFC 2971 (ID), RFC 3516 (BINARY), RFC 4315 (UIDPLUS), RFC 4731 (ESEARCH),
RFC 4959 (SASL-IR), RFC 4978 (COMPRESS), RFC 5161 (ENABLE), RFC 5182
(SEARCHRES), RFC 5258 (LIST-EXTENDED), RFC 5819 (LIST-STATUS), RFC 6154
(SPECIAL-USE), RFC 6851 (MOVE), RFC 7162 (CONDSTORE/QRESYNC), RFC 7889
(APPENDLIMIT), RFC 8438 (STATUS=SIZE), RFC 8514 (SAVEDATE), RFC 9208 (QUOTA).
"""

from __future__ import annotations

import bisect
import datetime
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

MAX_NUMBER = 2**32 - 1  # RFC 9051 §9: nz-number / number are 32-bit unsigned
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 §9 number64; RFC 7162 mod-sequence-value

# --- sequence sets -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence set (RFC 9051 §9 sequence-set) of message numbers or UIDs.

    `ranges` holds (first, last) pairs as sent: `None` stands for "*" and a
    pair may be reversed ("4:2" is the same as "2:4"). `saved=True` is the
    "$" of RFC 5182: the result saved by an earlier SEARCH RETURN (SAVE).
    """

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def __str__(self) -> str:
        if self.saved:
            return "$"
        return ",".join(_range_text(lo, hi) for lo, hi in self.ranges)

    def resolve(self, largest: int, saved: Sequence[int] = ()) -> tuple[tuple[int, int], ...]:
        """Ascending, merged (low, high) ranges with "*" replaced by `largest`.

        `largest` is the number of messages (sequence numbers) or the highest
        UID in use (UIDs); `saved` supplies the numbers for "$". The result
        is not clipped to `largest`: "UID FETCH 5:9" names UIDs that may not
        exist, and the service decides whether that is an error.
        """
        if self.saved:
            spans = [(n, n) for n in saved]
        else:
            spans = [_ordered(lo, hi, largest) for lo, hi in self.ranges]
        return _merge(spans)

    def contains(self, number: int, largest: int, saved: Sequence[int] = ()) -> bool:
        ranges = self.resolve(largest, saved)
        i = bisect.bisect_right(ranges, (number, MAX_NUMBER64)) - 1
        return i >= 0 and ranges[i][0] <= number <= ranges[i][1]

    def numbers(self, largest: int, saved: Sequence[int] = ()) -> Iterator[int]:
        """The members from 1 to `largest`, ascending, each once."""
        for lo, hi in self.resolve(largest, saved):
            yield from range(max(lo, 1), min(hi, largest) + 1)


def _range_text(lo: int | None, hi: int | None) -> str:
    first = "*" if lo is None else str(lo)
    if lo == hi:
        return first
    return f"{first}:{'*' if hi is None else hi}"


def _ordered(lo: int | None, hi: int | None, largest: int) -> tuple[int, int]:
    a = largest if lo is None else lo
    b = largest if hi is None else hi
    return (a, b) if a <= b else (b, a)


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


# --- flags ---------------------------------------------------------------------------

# RFC 9051 §2.3.2 system flags, keyed by their upper-case form. "\Recent" is
# RFC 3501 only; a client may search for it but never store it.
SYSTEM_FLAGS: dict[str, str] = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


class StoreMode(enum.Enum):
    """RFC 9051 §6.4.6: FLAGS replaces, +FLAGS adds, -FLAGS removes."""

    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


# --- FETCH ---------------------------------------------------------------------------


class FetchItem(enum.StrEnum):
    """FETCH data items without a section (RFC 9051 §6.4.5, RFC 7162, RFC 8514)."""

    FLAGS = "FLAGS"
    UID = "UID"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    ENVELOPE = "ENVELOPE"
    BODY = "BODY"  # the non-extensible BODYSTRUCTURE
    BODYSTRUCTURE = "BODYSTRUCTURE"
    RFC822 = "RFC822"  # RFC 3501: same as BODY[] but sets \Seen
    RFC822_HEADER = "RFC822.HEADER"
    RFC822_TEXT = "RFC822.TEXT"
    MODSEQ = "MODSEQ"
    SAVEDATE = "SAVEDATE"


# RFC 9051 §6.4.5: the macros, expanded by the parser.
FETCH_MACROS: dict[str, tuple[FetchItem, ...]] = {
    "FAST": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE),
    "ALL": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.ENVELOPE),
    "FULL": (
        FetchItem.FLAGS,
        FetchItem.INTERNALDATE,
        FetchItem.RFC822_SIZE,
        FetchItem.ENVELOPE,
        FetchItem.BODY,
    ),
}


class SectionText(enum.StrEnum):
    """RFC 9051 §9 section-msgtext and "MIME" (only after a part number)."""

    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """The `[...]` of BODY[...]: `BODY[]` is `Section()`.

    `fields` holds the header field names of HEADER.FIELDS(.NOT) as sent;
    matching them is case-insensitive (RFC 5322 §1.2.2).
    """

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BodySection:
    """BODY[section]<origin.length> and BODY.PEEK[...] (RFC 9051 §6.4.5)."""

    section: Section = Section()
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, length); length > 0


@dataclass(frozen=True, slots=True)
class BinarySection:
    """BINARY[part]<partial> and BINARY.PEEK (RFC 3516 §4.2, RFC 9051 §6.4.5)."""

    part: tuple[int, ...] = ()
    peek: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class BinarySize:
    """BINARY.SIZE[part] (RFC 3516 §4.2)."""

    part: tuple[int, ...] = ()


FetchAttribute = FetchItem | BodySection | BinarySection | BinarySize

# --- SEARCH --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """A flag or keyword that must be set (`is_set`) or clear.

    ANSWERED → ("\\Answered", True), UNSEEN → ("\\Seen", False),
    KEYWORD k → (k, True), RECENT/OLD → ("\\Recent", True/False).
    NEW is And(\\Recent set, \\Seen clear) (RFC 3501 §6.4.4).
    """

    flag: str
    is_set: bool = True


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER field value; BCC/CC/FROM/SUBJECT/TO are this with their field name.

    `field` is lower-cased (field names are case-insensitive); an empty
    `value` matches every message that has the field (RFC 9051 §6.4.4).
    """

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY (`body_only`) or TEXT (header and body) contains `value`."""

    value: str
    body_only: bool


DateField = Literal["INTERNAL", "SENT", "SAVED"]
DateOp = Literal["BEFORE", "ON", "SINCE"]


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE (internal date), SENT* (Date: header), SAVED* (RFC 8514)."""

    field: DateField
    op: DateOp
    date: datetime.date


@dataclass(frozen=True, slots=True)
class SearchSize:
    """LARGER (`larger`) or SMALLER than `size` octets (RFC822.SIZE)."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SearchSequence:
    """A sequence set as a key (`uid=False`) or UID sequence-set."""

    sequence_set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """RFC 7162 §3.1.5 MODSEQ [entry-name entry-type-req] mod-sequence-valzer.

    `entry` is (name, "priv" | "shared" | "all") when given.
    """

    modseq: int
    entry: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """Every key must match: a parenthesized group, or several top-level keys."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll
    | SearchFlag
    | SearchHeader
    | SearchText
    | SearchDate
    | SearchSize
    | SearchSequence
    | SearchModSeq
    | SearchNot
    | SearchOr
    | SearchAnd
)

# RFC 4731 §3.1 / RFC 5182 §2: ESEARCH return options.
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})

# RFC 9051 §6.3.11 and extensions: STATUS data items.
STATUS_ITEMS = frozenset(
    {
        "MESSAGES",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "DELETED",  # RFC 9051
        "SIZE",  # RFC 8438
        "RECENT",  # RFC 3501
        "HIGHESTMODSEQ",  # RFC 7162
        "APPENDLIMIT",  # RFC 7889
    }
)

# --- commands: any state (RFC 9051 §6.1) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class Id:
    """RFC 2971: `parameters` is None for `ID NIL`."""

    tag: str
    parameters: dict[str, str | None] | None = field(default=None, hash=False)


# --- not authenticated (RFC 9051 §6.2) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTls:
    tag: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """RFC 9051 §6.2.2, RFC 4959 SASL-IR: base64 text as sent, "=" meaning empty."""

    tag: str
    mechanism: str  # upper-cased
    initial_response: str | None = None


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    user: str
    password: str


# --- authenticated (RFC 9051 §6.3) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enable:
    """RFC 5161: capability names, upper-cased."""

    tag: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QResync:
    """RFC 7162 §3.2.5 QRESYNC select parameter.

    `seq_match` is (known sequence set, known UID set) when sent.
    """

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    tag: str
    mailbox: str
    condstore: bool = False  # RFC 7162 §3.1.8
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Examine:
    tag: str
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """`special_use` from RFC 6154 §3 `(USE (\\Drafts ...))`, known ones case-normalized."""

    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST, with RFC 5258 LIST-EXTENDED and RFC 5819 LIST-STATUS.

    `selection` and `return_options` are upper-cased option names; a
    RETURN (STATUS (...)) option appears as "STATUS" in `return_options`
    with its items in `status_items`. Reference and patterns are as sent.
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lsub:
    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


@dataclass(frozen=True, slots=True)
class Status:
    """`items` upper-cased, from STATUS_ITEMS, in the order sent."""

    tag: str
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """One message (no MULTIAPPEND, no CATENATE); `binary` if sent as literal8 (RFC 3516),
    `utf8` if sent as RFC 6855's `UTF8 (~{n}...)` (a message with UTF-8 headers)."""

    tag: str
    mailbox: str
    message: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None  # always timezone-aware
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True, slots=True)
class Idle:
    tag: str


@dataclass(frozen=True, slots=True)
class GetQuota:
    tag: str
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """RFC 9208 §4.3: (resource name upper-cased, limit) pairs; empty removes limits."""

    tag: str
    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Compress:
    """RFC 4978: the mechanism, upper-cased (only DEFLATE is defined)."""

    tag: str
    mechanism: str


# --- selected (RFC 9051 §6.4) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    tag: str


@dataclass(frozen=True, slots=True)
class UidExpunge:
    """RFC 4315 §2.1 UID EXPUNGE."""

    tag: str
    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH.

    `charset` is upper-cased when given. String values are decoded as UTF-8
    for no charset, US-ASCII and UTF-8; for any other charset they are
    decoded as Latin-1 so that nothing is lost, and the service answers
    NO [BADCHARSET] before it looks at them. `return_options` is None
    without RETURN (a plain SEARCH response), else the upper-cased ESEARCH
    options (RFC 4731; an empty tuple means ALL).
    """

    tag: str
    criteria: SearchKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH / UID FETCH with RFC 7162 CHANGEDSINCE and VANISHED (UID FETCH only)."""

    tag: str
    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    changed_since: int | None = None
    vanished: bool = False
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    """STORE / UID STORE with RFC 7162 UNCHANGEDSINCE."""

    tag: str
    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    unchanged_since: int | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Copy:
    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    """RFC 6851 MOVE / UID MOVE."""

    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


Command = (
    Capability
    | Noop
    | Logout
    | Id
    | StartTls
    | Authenticate
    | Login
    | Enable
    | Select
    | Examine
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Namespace
    | Status
    | Append
    | Idle
    | GetQuota
    | GetQuotaRoot
    | SetQuota
    | Compress
    | Check
    | Close
    | Unselect
    | Expunge
    | UidExpunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
)
