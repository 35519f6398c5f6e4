"""Parse one complete IMAP4 command into a command dataclass or a rejection.

Purpose: `parse_command(pieces)` is the whole parser. The framer hands it a
command as alternating pieces: text, literal payload, text, ..., text. Every
text piece but the last ends with the literal announcement (`{n}`, `{n+}` or
`~{n}`) whose payload is the next piece; line endings are already removed.
`parse_command([b'a LOGIN {5}', b'alice', b' secret'])` is `Login("a", ...)`.

Security and robustness invariants:
- Never raises: every input gives a `Command` or `CommandRejected` (tag None
  when no valid tag could be read; the service then answers `* BAD`).
- Bounded work: no backtracking regex on client data, numbers are read with
  at most 20 digits before `int()`, search criteria may nest at most
  MAX_SEARCH_DEPTH levels (a rejection, never a RecursionError).
- Syntax only: whether a command is allowed in the current state, whether an
  extension was enabled, whether a charset is supported: the service decides.
- Strict where looseness hides bugs: one SP between tokens, only `\\"` and
  `\\\\` escapes in quoted strings, no NUL in a string (only literal8 may carry
  one, RFC 3516), literal8 only where the grammar allows it (APPEND).
  Liberal where it is harmless: command names and keywords in any case,
  trailing spaces at the end of a command.

Standards: RFC 9051 §9 and RFC 3501 §9 (formal syntax), RFC 7888 (LITERAL+/-),
RFC 3516 (literal8), and the extensions listed in `commands`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postwerk.protocols.imap.commands import (
    FETCH_MACROS,
    MAX_NUMBER,
    MAX_NUMBER64,
    SEARCH_RETURN_OPTIONS,
    STATUS_ITEMS,
    SYSTEM_FLAGS,
    Append,
    Authenticate,
    BinarySection,
    BinarySize,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    Compress,
    Copy,
    Create,
    DateField,
    DateOp,
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
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    QResync,
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

MAX_SEARCH_DEPTH = 32  # nested (), NOT and OR; real clients stay far below


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A command that cannot be executed; answer `<tag> BAD <text>` (or `* BAD` for None)."""

    tag: str | None
    text: str


class _Bad(Exception):
    """Internal: a syntax error at the reader's position; becomes CommandRejected."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# RFC 9051 §9: ATOM-CHAR is any CHAR except atom-specials: ( ) { SP CTL % * " \ ]
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')  # ASTRING-CHAR adds "]"
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')  # tag: ASTRING-CHAR except "+"
_LIST_MAILBOX = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')  # list-char adds % * ]
_QUOTED = re.compile(rb'"((?:[^"\\\x00]|\\["\\])*)"')  # no CR/LF: the framer split lines
_UNESCAPE = re.compile(rb'\\(["\\])')
# A literal announcement ends its text piece (the framer split the command there).
_LITERAL = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")
_DIGITS = re.compile(rb"[0-9]+")
_SEQUENCE = re.compile(rb"[0-9:*,$]+")
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_NAME = re.compile(rb"[A-Za-z.]+")
_BASE64 = re.compile(rb"=|[A-Za-z0-9+/]+={0,2}")
_SASL_MECH = re.compile(r"[A-Z0-9_-]{1,20}")  # RFC 4422 §3.1
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §3.6.8 ftext
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    r"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})"  # date-day-fixed "-" date-month "-" year
    r" ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"  # SP time SP zone
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_MAX_DIGITS = 20  # enough for number64; keeps int() cheap on hostile input
_ID_MAX_PAIRS = 30  # RFC 2971 §3.3
_SPECIAL_USE = {
    f.upper(): f
    for f in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
_LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})  # RFC 5258
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})  # + RFC 5819
_UTF8_CHARSETS = frozenset({"US-ASCII", "UTF-8"})


def parse_tag(line: bytes) -> str | None:
    """The tag at the start of a command's first line, or None if it has no valid one."""
    m = _TAG.match(line)
    if m is None or (m.end() < len(line) and line[m.end()] != 0x20):
        return None
    return m.group().decode("ascii")


def parse_command(pieces: Sequence[bytes]) -> Command | CommandRejected:
    """Parse a complete command given as alternating text / literal pieces."""
    if len(pieces) % 2 == 0:
        return CommandRejected(None, "Incomplete command")
    tag = parse_tag(pieces[0])
    if tag is None:
        return CommandRejected(None, "Missing or invalid tag")
    reader = _Reader(pieces, len(tag))
    try:
        command = _parse_after_tag(reader, tag)
        if not reader.at_end():
            raise _Bad("Unexpected extra arguments")
        return command
    except _Bad as exc:
        return CommandRejected(tag, exc.text)


def _parse_after_tag(r: _Reader, tag: str) -> Command:
    if r.at_end():
        raise _Bad("Missing command")
    r.sp()
    name = r.atom("command").upper()
    if name == "UID":
        r.sp()
        sub = r.atom("command").upper()
        if sub == "EXPUNGE":
            return _uid_expunge(r, tag)
        uid_handler = _SELECTED_HANDLERS.get(sub)
        if uid_handler is None:
            raise _Bad("Unknown UID command")
        return uid_handler(r, tag, True)
    selected = _SELECTED_HANDLERS.get(name)
    if selected is not None:
        return selected(r, tag, False)
    handler = _HANDLERS.get(name)
    if handler is None:
        raise _Bad("Unknown command")
    return handler(r, tag)


# --- the reader ----------------------------------------------------------------------


class _Reader:
    """A cursor over the pieces of one command; methods raise _Bad on a syntax error."""

    __slots__ = ("_i", "_pieces", "_pos", "_text")

    def __init__(self, pieces: Sequence[bytes], pos: int) -> None:
        self._pieces = pieces
        self._i = 0
        self._pos = pos
        self._text = pieces[0]
        if len(pieces) == 1:
            self._text = self._text.rstrip(b" ")  # tolerate trailing spaces

    def at_end(self) -> bool:
        return self._pos >= len(self._text) and self._i == len(self._pieces) - 1

    def peek(self, prefix: bytes) -> bool:
        return self._text.startswith(prefix, self._pos)

    def peek_digit(self, offset: int = 0) -> bool:
        pos = self._pos + offset
        return pos < len(self._text) and 0x30 <= self._text[pos] <= 0x39

    def peek_dot_digit(self) -> bool:
        return self.peek(b".") and self.peek_digit(1)

    def expect(self, token: bytes, what: str) -> None:
        if not self.peek(token):
            raise _Bad(f"Expected {what}")
        self._pos += len(token)

    def sp(self) -> None:
        self.expect(b" ", "space")

    def maybe(self, token: bytes) -> bool:
        """Consume `token` if it comes next."""
        if self.peek(token):
            self._pos += len(token)
            return True
        return False

    def match(self, pattern: re.Pattern[bytes]) -> bytes | None:
        m = pattern.match(self._text, self._pos)
        if m is None:
            return None
        self._pos = m.end()
        return m.group()

    def atom(self, what: str, pattern: re.Pattern[bytes] = _ATOM) -> str:
        value = self.match(pattern)
        if value is None:
            raise _Bad(f"Expected {what}")
        return value.decode("ascii")

    def peek_atom(self) -> str:
        """The upper-cased atom that comes next ("" if none), without consuming it."""
        m = _ATOM.match(self._text, self._pos)
        return m.group().decode("ascii").upper() if m else ""

    def number(self, what: str, maximum: int = MAX_NUMBER, minimum: int = 0) -> int:
        digits = self.match(_DIGITS)
        if digits is None or len(digits) > _MAX_DIGITS:
            raise _Bad(f"Expected {what}")
        value = int(digits)
        if not minimum <= value <= maximum:
            raise _Bad(f"{what.capitalize()} out of range")
        return value

    def is_string(self) -> bool:
        return self.peek(b'"') or self.peek(b"{") or self.peek(b"~{")

    def string(self, what: str, binary: bool = False) -> bytes:
        """quoted / literal (/ literal8 if `binary`)."""
        if self.peek(b'"'):
            m = _QUOTED.match(self._text, self._pos)
            if m is None:
                raise _Bad(f"Bad quoted string in {what}")
            self._pos = m.end()
            return _UNESCAPE.sub(rb"\1", m.group(1))
        data, _ = self.literal(what, binary)
        return data

    def literal(self, what: str, binary: bool = False) -> tuple[bytes, bool]:
        """A literal's payload and whether it was literal8 (RFC 3516 `~{n}`)."""
        m = _LITERAL.match(self._text, self._pos)
        if m is None or self._i + 2 >= len(self._pieces):
            raise _Bad(f"Expected {what}")
        is8 = bool(m.group(1))
        if is8 and not binary:
            raise _Bad(f"literal8 not allowed in {what}")
        data = self._pieces[self._i + 1]
        if len(m.group(2)) > _MAX_DIGITS or int(m.group(2)) != len(data):
            raise _Bad("Literal size mismatch")
        if not is8 and b"\x00" in data:
            raise _Bad("NUL in literal (use literal8)")  # RFC 9051 §4.3: CHAR8 excludes NUL
        self._i += 2
        self._text = self._pieces[self._i]
        self._pos = 0
        if self._i == len(self._pieces) - 1:
            self._text = self._text.rstrip(b" ")
        return data, is8

    def astring(self, what: str) -> bytes:
        if self.is_string():
            return self.string(what)
        value = self.match(_ASTRING_ATOM)
        if value is None:
            raise _Bad(f"Expected {what}")
        return value

    def nstring(self, what: str) -> bytes | None:
        if self.peek_atom() == "NIL":
            self._pos += 3
            return None
        return self.string(what)

    def paren_list(self, item: Callable[[], None], *, empty_ok: bool = True) -> None:
        """ "(" [item *(SP item)] ")", calling `item` for each element."""
        self.expect(b"(", "(")
        if self.maybe(b")"):
            if not empty_ok:
                raise _Bad("Empty list")
            return
        item()
        while self.maybe(b" "):
            item()
        self.expect(b")", ")")


# --- values --------------------------------------------------------------------------


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad(f"Invalid UTF-8 in {what}") from None


def _mailbox(r: _Reader) -> str:
    name = _utf8(r.astring("mailbox name"), "mailbox name")
    # RFC 9051 §5.1: INBOX is case-insensitive. ASCII only: "ınbox".upper() == "INBOX".
    return "INBOX" if name.isascii() and name.upper() == "INBOX" else name


def _list_mailbox(r: _Reader) -> str:
    """RFC 9051 §9 list-mailbox = 1*list-char / string (wildcards allowed unquoted)."""
    if r.is_string():
        return _utf8(r.string("mailbox pattern"), "mailbox pattern")
    return r.atom("mailbox pattern", _LIST_MAILBOX)


def _sequence_set(r: _Reader, *, allow_star: bool = True) -> SequenceSet:
    raw = r.match(_SEQUENCE)
    if raw is None:
        raise _Bad("Expected sequence set")
    text = raw.decode("ascii")
    if text == "$":
        return SequenceSet(saved=True)  # RFC 5182 §2: "$" stands alone
    ranges: list[tuple[int | None, int | None]] = []
    for item in text.split(","):
        bounds = [_seq_number(part, allow_star) for part in item.split(":")]
        if len(bounds) > 2:
            raise _Bad("Invalid sequence set")
        ranges.append((bounds[0], bounds[-1]))
    return SequenceSet(tuple(ranges))


def _seq_number(text: str, allow_star: bool) -> int | None:
    if text == "*" and allow_star:
        return None
    # nz-number = digit-nz *DIGIT: no 0, no leading zero, at most 2^32-1.
    if not text.isdigit() or text.startswith("0") or len(text) > 10 or int(text) > MAX_NUMBER:
        raise _Bad("Invalid sequence set")
    return int(text)


def _flag(r: _Reader, *, storable: bool) -> str:
    """flag = system flag / keyword (RFC 9051 §9); `storable` refuses \\Recent."""
    if not r.maybe(b"\\"):
        return r.atom("flag")
    name = SYSTEM_FLAGS.get("\\" + r.atom("flag").upper())
    if name is None:
        raise _Bad("Unknown system flag")  # flag-extension: none are defined
    if storable and name == "\\Recent":
        raise _Bad("\\Recent cannot be set by a client")  # RFC 3501 §2.3.2
    return name


def _flag_list(r: _Reader) -> tuple[str, ...]:
    flags: list[str] = []
    r.paren_list(lambda: flags.append(_flag(r, storable=True)))
    return tuple(flags)


def _date(r: _Reader) -> datetime.date:
    """RFC 9051 §9 date = date-text / DQUOTE date-text DQUOTE."""
    raw = r.string("date") if r.peek(b'"') else r.atom("date").encode()
    m = _DATE.fullmatch(raw.decode("ascii", "replace"))
    if m is None or m.group(2).upper() not in _MONTHS:
        raise _Bad("Invalid date")
    try:
        return datetime.date(int(m.group(3)), _MONTHS[m.group(2).upper()], int(m.group(1)))
    except ValueError:
        raise _Bad("Invalid date") from None


def _date_time(raw: bytes) -> datetime.datetime:
    """RFC 9051 §9 date-time (without the quotes): "dd-Mon-yyyy hh:mm:ss +zzzz"."""
    m = _DATE_TIME.fullmatch(raw.decode("ascii", "replace"))
    if m is None or m.group(2).upper() not in _MONTHS:
        raise _Bad("Invalid date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    if int(zm) > 59:
        raise _Bad("Invalid date-time")
    offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
    try:
        zone = datetime.timezone(-offset if sign == "-" else offset)
        return datetime.datetime(
            int(year), _MONTHS[mon.upper()], int(day), int(hh), int(mm), int(ss), tzinfo=zone
        )
    except ValueError:
        raise _Bad("Invalid date-time") from None


def _mod_sequence(r: _Reader, *, zero_ok: bool) -> int:
    """RFC 7162 §7 mod-sequence-value (1..2^63-1) / mod-sequence-valzer (0..)."""
    return r.number("mod-sequence", MAX_NUMBER64, 0 if zero_ok else 1)


# --- commands without arguments -------------------------------------------------------

_Handler = Callable[[_Reader, str], Command]
_SelectedHandler = Callable[[_Reader, str, bool], Command]


def _no_args(make: Callable[[str], Command]) -> _Handler:
    def parse(r: _Reader, tag: str) -> Command:
        if not r.at_end():
            raise _Bad("This command takes no arguments")
        return make(tag)

    return parse


# --- not authenticated / any state ---------------------------------------------------


def _authenticate(r: _Reader, tag: str) -> Command:
    r.sp()
    mechanism = r.atom("SASL mechanism").upper()
    if not _SASL_MECH.fullmatch(mechanism):
        raise _Bad("Invalid SASL mechanism name")
    initial: str | None = None
    if r.maybe(b" "):  # RFC 4959 SASL-IR
        raw = r.match(_BASE64)
        if raw is None:
            raise _Bad("Invalid initial response")
        initial = raw.decode("ascii")
    return Authenticate(tag, mechanism, initial)


def _login(r: _Reader, tag: str) -> Command:
    r.sp()
    user = _utf8(r.astring("user name"), "user name")
    r.sp()
    password = _utf8(r.astring("password"), "password")
    return Login(tag, user, password)


def _id(r: _Reader, tag: str) -> Command:
    """RFC 2971 §3.3: ID ( "(" *(string SP nstring) ")" / NIL )."""
    r.sp()
    if r.peek_atom() == "NIL":
        r.atom("NIL")
        return Id(tag, None)
    params: dict[str, str | None] = {}

    def pair() -> None:
        key = _utf8(r.string("ID field"), "ID field")
        r.sp()
        value = r.nstring("ID value")
        params[key] = None if value is None else _utf8(value, "ID value")
        if len(params) > _ID_MAX_PAIRS:
            raise _Bad("Too many ID fields")

    r.paren_list(pair)
    return Id(tag, params)


def _enable(r: _Reader, tag: str) -> Command:
    names: list[str] = []
    while r.maybe(b" "):
        names.append(r.atom("capability").upper())
    if not names:
        raise _Bad("Expected capability")
    return Enable(tag, tuple(names))


def _compress(r: _Reader, tag: str) -> Command:
    r.sp()
    return Compress(tag, r.atom("compression mechanism").upper())


# --- mailboxes -----------------------------------------------------------------------


def _select_params(r: _Reader) -> tuple[bool, QResync | None]:
    """RFC 4466 select-params; CONDSTORE and QRESYNC (RFC 7162 §3.1.8, §3.2.5)."""
    condstore = False
    qresync: QResync | None = None

    def param() -> None:
        nonlocal condstore, qresync
        name = r.atom("select parameter").upper()
        if name == "CONDSTORE" and not condstore:
            condstore = True
        elif name == "QRESYNC" and qresync is None:
            r.sp()
            qresync = _qresync(r)
        else:
            raise _Bad("Unknown or repeated select parameter")

    if r.maybe(b" "):
        r.paren_list(param)
    return condstore, qresync


def _qresync(r: _Reader) -> QResync:
    r.expect(b"(", "(")
    uidvalidity = r.number("UIDVALIDITY", minimum=1)
    r.sp()
    modseq = _mod_sequence(r, zero_ok=False)
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if r.maybe(b" ") and not r.peek(b"("):
        known = _uid_set(r)  # known-uids: "*" is not allowed
        if not r.maybe(b" "):
            r.expect(b")", ")")
            return QResync(uidvalidity, modseq, known)
    if r.maybe(b"("):
        seqs = _uid_set(r)
        r.sp()
        uids = _uid_set(r)
        r.expect(b")", ")")
        match = (seqs, uids)
    r.expect(b")", ")")
    return QResync(uidvalidity, modseq, known, match)


def _uid_set(r: _Reader) -> SequenceSet:
    result = _sequence_set(r, allow_star=False)
    if result.saved:
        raise _Bad("Invalid sequence set")
    return result


def _select(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = _mailbox(r)
    return Select(tag, mailbox, *_select_params(r))


def _examine(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = _mailbox(r)
    return Examine(tag, mailbox, *_select_params(r))


def _create(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = _mailbox(r)
    uses: list[str] = []
    if r.maybe(b" "):  # RFC 6154 §3: (USE (attr ...))
        r.expect(b"(", "(")
        if r.atom("create parameter").upper() != "USE":
            raise _Bad("Unknown create parameter")
        r.sp()
        r.paren_list(lambda: uses.append(_use_attr(r)), empty_ok=False)
        r.expect(b")", ")")
    return Create(tag, mailbox, tuple(uses))


def _use_attr(r: _Reader) -> str:
    r.expect(b"\\", "special-use attribute")
    name = "\\" + r.atom("special-use attribute")
    return _SPECIAL_USE.get(name.upper(), name)


def _one_mailbox(make: Callable[[str, str], Command]) -> _Handler:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        return make(tag, _mailbox(r))

    return parse


def _rename(r: _Reader, tag: str) -> Command:
    r.sp()
    old = _mailbox(r)
    r.sp()
    return Rename(tag, old, _mailbox(r))


def _list(r: _Reader, tag: str) -> Command:
    """RFC 5258 §6: LIST [SP select-opts] SP mailbox SP mbox-or-pat [SP return-opts]."""
    r.sp()
    selection: list[str] = []
    if r.peek(b"("):
        r.paren_list(lambda: selection.append(_option(r, _LIST_SELECT)))
        r.sp()
        # RFC 5258 §3: RECURSIVEMATCH needs another option to modify.
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            raise _Bad("RECURSIVEMATCH needs another selection option")
    reference = _utf8(r.astring("reference"), "reference")
    r.sp()
    patterns: list[str] = []
    if r.peek(b"("):
        r.paren_list(lambda: patterns.append(_list_mailbox(r)), empty_ok=False)
    else:
        patterns.append(_list_mailbox(r))
    options: list[str] = []
    status: list[str] = []
    if r.maybe(b" "):
        if r.atom("RETURN").upper() != "RETURN":
            raise _Bad("Expected RETURN")
        r.sp()
        r.paren_list(lambda: options.append(_return_option(r, status)))
    return List(tag, reference, tuple(patterns), tuple(selection), tuple(options), tuple(status))


def _option(r: _Reader, allowed: frozenset[str]) -> str:
    name = r.atom("option").upper()
    if name not in allowed:
        raise _Bad(f"Unknown option {name}")
    return name


def _return_option(r: _Reader, status: list[str]) -> str:
    name = _option(r, _LIST_RETURN)
    if name == "STATUS":  # RFC 5819: STATUS (items)
        if status:
            raise _Bad("Repeated STATUS option")
        r.sp()
        status.extend(_status_items(r))
    return name


def _lsub(r: _Reader, tag: str) -> Command:
    r.sp()
    reference = _utf8(r.astring("reference"), "reference")
    r.sp()
    return Lsub(tag, reference, _list_mailbox(r))


def _status_items(r: _Reader) -> list[str]:
    items: list[str] = []
    r.paren_list(lambda: items.append(_option(r, STATUS_ITEMS)), empty_ok=False)
    return items


def _status(r: _Reader, tag: str) -> Command:
    r.sp()
    mailbox = _mailbox(r)
    r.sp()
    return Status(tag, mailbox, tuple(_status_items(r)))


def _append(r: _Reader, tag: str) -> Command:
    """RFC 9051 §6.3.12: APPEND mailbox [SP flag-list] [SP date-time] SP literal,
    or RFC 6855's UTF8 (literal8) in place of the literal."""
    r.sp()
    mailbox = _mailbox(r)
    r.sp()
    flags: tuple[str, ...] = ()
    if r.peek(b"("):
        flags = _flag_list(r)
        r.sp()
    when: datetime.datetime | None = None
    if r.peek(b'"'):
        when = _date_time(r.string("date-time"))
        r.sp()
    if r.peek_atom() == "UTF8":
        # RFC 6855 §4: append-data-ext "UTF8" SP "(" literal8 ")"
        r.atom("UTF8")
        r.sp()
        r.expect(b"(", "(")
        message, _ = r.literal("message literal8", binary=True)
        r.expect(b")", ")")
        return Append(tag, mailbox, message, flags, when, binary=True, utf8=True)
    message, binary = r.literal("message literal", binary=True)
    return Append(tag, mailbox, message, flags, when, binary)


def _getquota(r: _Reader, tag: str) -> Command:
    r.sp()
    return GetQuota(tag, _utf8(r.astring("quota root"), "quota root"))


def _setquota(r: _Reader, tag: str) -> Command:
    """RFC 9208 §4.3: SETQUOTA root (resource limit ...)."""
    r.sp()
    root = _utf8(r.astring("quota root"), "quota root")
    r.sp()
    limits: list[tuple[str, int]] = []

    def resource() -> None:
        name = r.atom("resource name").upper()
        r.sp()
        limits.append((name, r.number("limit", MAX_NUMBER64)))

    r.paren_list(resource)
    return SetQuota(tag, root, tuple(limits))


# --- selected state ------------------------------------------------------------------


def _uid_expunge(r: _Reader, tag: str) -> Command:
    r.sp()
    return UidExpunge(tag, _sequence_set(r))


def _copy(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    seqs = _sequence_set(r)
    r.sp()
    return Copy(tag, seqs, _mailbox(r), uid)


def _move(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    seqs = _sequence_set(r)
    r.sp()
    return Move(tag, seqs, _mailbox(r), uid)


def _store(r: _Reader, tag: str, uid: bool) -> Command:
    """RFC 9051 §6.4.6 with the RFC 7162 §3.1.3 UNCHANGEDSINCE modifier."""
    r.sp()
    seqs = _sequence_set(r)
    r.sp()
    unchanged: int | None = None
    if r.peek(b"("):
        r.expect(b"(", "(")
        if r.atom("store modifier").upper() != "UNCHANGEDSINCE":
            raise _Bad("Unknown store modifier")
        r.sp()
        unchanged = _mod_sequence(r, zero_ok=True)
        r.expect(b")", ")")
        r.sp()
    mode = StoreMode.ADD if r.maybe(b"+") else StoreMode.REMOVE if r.maybe(b"-") else None
    item = r.atom("FLAGS").upper()
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise _Bad("Expected FLAGS")
    r.sp()
    if r.peek(b"("):
        flags = _flag_list(r)
    else:
        flag_items = [_flag(r, storable=True)]
        while r.maybe(b" "):
            flag_items.append(_flag(r, storable=True))
        flags = tuple(flag_items)
    return Store(
        tag, seqs, mode or StoreMode.REPLACE, flags, item == "FLAGS.SILENT", unchanged, uid
    )


def _fetch(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    seqs = _sequence_set(r)
    r.sp()
    attributes: list[FetchAttribute] = []
    if r.peek(b"("):
        r.paren_list(lambda: attributes.append(_fetch_att(r)), empty_ok=False)
    elif r.peek_atom() in FETCH_MACROS:
        attributes.extend(FETCH_MACROS[r.atom("macro").upper()])
    else:
        attributes.append(_fetch_att(r))
    changed: int | None = None
    vanished = False
    if r.maybe(b" "):  # RFC 4466 fetch-modifiers, RFC 7162 §3.1.4.1 and §3.2.6

        def modifier() -> None:
            nonlocal changed, vanished
            name = r.atom("fetch modifier").upper()
            if name == "CHANGEDSINCE" and changed is None:
                r.sp()
                changed = _mod_sequence(r, zero_ok=True)
            elif name == "VANISHED" and not vanished:
                vanished = True
            else:
                raise _Bad("Unknown or repeated fetch modifier")

        r.paren_list(modifier, empty_ok=False)
    if vanished and (not uid or changed is None):
        raise _Bad("VANISHED needs UID FETCH and CHANGEDSINCE")  # RFC 7162 §3.2.6
    return Fetch(tag, seqs, tuple(attributes), changed, vanished, uid)


def _fetch_att(r: _Reader) -> FetchAttribute:
    raw = r.match(_FETCH_NAME)
    name = raw.decode("ascii").upper() if raw else ""
    if name in ("BODY", "BODY.PEEK") and r.peek(b"["):
        section = _section(r)
        return BodySection(section, name == "BODY.PEEK", _partial(r))
    if name in ("BINARY", "BINARY.PEEK"):
        part = _binary_part(r)
        return BinarySection(part, name == "BINARY.PEEK", _partial(r))
    if name == "BINARY.SIZE":
        return BinarySize(_binary_part(r))
    try:
        return FetchItem(name)
    except ValueError:
        raise _Bad("Unknown fetch attribute") from None


def _part_numbers(r: _Reader) -> list[int]:
    """section-part = nz-number *("." nz-number); stops before ".TEXT" etc."""
    part = [r.number("part number", minimum=1)]
    while r.peek_dot_digit():
        r.expect(b".", ".")
        part.append(r.number("part number", minimum=1))
    return part


def _section(r: _Reader) -> Section:
    """RFC 9051 §9 section = "[" [section-spec] "]"."""
    r.expect(b"[", "[")
    part: list[int] = []
    if r.peek_digit():
        part = _part_numbers(r)
        if not r.maybe(b"."):
            r.expect(b"]", "]")
            return Section(tuple(part))
    elif r.maybe(b"]"):
        return Section()
    raw = r.match(_SECTION_NAME)
    try:
        text = SectionText(raw.decode("ascii").upper() if raw else "")
    except ValueError:
        raise _Bad("Unknown section") from None
    if text is SectionText.MIME and not part:
        raise _Bad("MIME needs a part number")  # RFC 9051 §6.4.5
    fields: list[str] = []
    if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
        r.sp()
        r.paren_list(lambda: fields.append(_field_name(r)), empty_ok=False)
    r.expect(b"]", "]")
    return Section(tuple(part), text, tuple(fields))


def _field_name(r: _Reader) -> str:
    name = r.astring("header field name").decode("ascii", "replace")
    if not _FIELD_NAME.fullmatch(name):
        raise _Bad("Invalid header field name")
    return name


def _binary_part(r: _Reader) -> tuple[int, ...]:
    """RFC 3516 §4.2 section-binary = "[" [section-part] "]"."""
    r.expect(b"[", "[")
    if r.maybe(b"]"):
        return ()
    part = [r.number("part number", minimum=1)]
    while r.maybe(b"."):
        part.append(r.number("part number", minimum=1))
    r.expect(b"]", "]")
    return tuple(part)


def _partial(r: _Reader) -> tuple[int, int] | None:
    """ "<" number "." nz-number ">" (RFC 9051 §6.4.5)."""
    if not r.maybe(b"<"):
        return None
    origin = r.number("partial origin")
    r.expect(b".", ".")
    length = r.number("partial length", minimum=1)
    r.expect(b">", ">")
    return origin, length


# --- SEARCH --------------------------------------------------------------------------

_Decode = Callable[[bytes], str]


def _search(r: _Reader, tag: str, uid: bool) -> Command:
    """RFC 9051 §6.4.4: SEARCH [RETURN (...)] [CHARSET astring] 1*(SP search-key)."""
    r.sp()
    options: tuple[str, ...] | None = None
    if r.peek_atom() == "RETURN":  # RFC 4731 §3.1
        r.atom("RETURN")
        r.sp()
        chosen: list[str] = []
        r.paren_list(lambda: chosen.append(_option(r, SEARCH_RETURN_OPTIONS)))
        options = tuple(chosen)
        r.sp()
    charset: str | None = None
    if r.peek_atom() == "CHARSET":
        r.atom("CHARSET")
        r.sp()
        charset = _utf8(r.astring("charset"), "charset").upper()
        r.sp()
    decode = _decoder(charset)
    keys = [_search_key(r, decode, 1)]
    while r.maybe(b" "):
        keys.append(_search_key(r, decode, 1))
    criteria = keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    return Search(tag, criteria, charset, options, uid)


def _decoder(charset: str | None) -> _Decode:
    if charset is None or charset in _UTF8_CHARSETS:
        return lambda data: _utf8(data, "search string")
    # The service refuses other charsets with NO [BADCHARSET]; Latin-1 loses nothing.
    return lambda data: data.decode("latin-1")


def _search_key(r: _Reader, decode: _Decode, depth: int) -> SearchKey:
    if depth > MAX_SEARCH_DEPTH:
        raise _Bad("Search criteria nested too deeply")
    if r.maybe(b"("):
        keys = [_search_key(r, decode, depth + 1)]
        while r.maybe(b" "):
            keys.append(_search_key(r, decode, depth + 1))
        r.expect(b")", ")")
        return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    if r.peek_digit() or r.peek(b"*") or r.peek(b"$"):
        return SearchSequence(_sequence_set(r))
    name = r.atom("search key").upper()
    simple = _SEARCH_SIMPLE.get(name)
    if simple is not None:
        return simple
    parse = _SEARCH_KEYS.get(name)
    if parse is None:
        raise _Bad("Unknown search key")
    r.sp()
    return parse(r, decode, depth, name)


_SEARCH_SIMPLE: dict[str, SearchKey] = {
    "ALL": SearchAll(),
    "NEW": SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False))),
    "OLD": SearchFlag("\\Recent", False),
    **{f[1:].upper(): SearchFlag(f) for f in SYSTEM_FLAGS.values()},
    **{"UN" + f[1:].upper(): SearchFlag(f, False) for f in SYSTEM_FLAGS.values()},
}
del _SEARCH_SIMPLE["UNRECENT"]  # not a search key


def _key_keyword(r: _Reader, _d: _Decode, _depth: int, name: str) -> SearchKey:
    return SearchFlag(r.atom("keyword"), name == "KEYWORD")


def _key_header(r: _Reader, decode: _Decode, _depth: int, name: str) -> SearchKey:
    if name == "HEADER":
        field_name = _field_name(r).lower()
        r.sp()
    else:
        field_name = name.lower()
    return SearchHeader(field_name, decode(r.astring("search string")))


def _key_text(r: _Reader, decode: _Decode, _depth: int, name: str) -> SearchKey:
    return SearchText(decode(r.astring("search string")), name == "BODY")


_DATE_FIELDS: tuple[tuple[str, DateField], ...] = (
    ("", "INTERNAL"),
    ("SENT", "SENT"),
    ("SAVED", "SAVED"),  # RFC 8514 §4.2
)
_DATE_OPS: tuple[DateOp, ...] = ("BEFORE", "ON", "SINCE")
_DATE_KEYS: dict[str, tuple[DateField, DateOp]] = {
    prefix + op: (field_name, op) for prefix, field_name in _DATE_FIELDS for op in _DATE_OPS
}


def _key_date(r: _Reader, _d: _Decode, _depth: int, name: str) -> SearchKey:
    field_name, op = _DATE_KEYS[name]
    return SearchDate(field_name, op, _date(r))


def _key_size(r: _Reader, _d: _Decode, _depth: int, name: str) -> SearchKey:
    return SearchSize(name == "LARGER", r.number("size", MAX_NUMBER64))


def _key_not(r: _Reader, decode: _Decode, depth: int, _name: str) -> SearchKey:
    return SearchNot(_search_key(r, decode, depth + 1))


def _key_or(r: _Reader, decode: _Decode, depth: int, _name: str) -> SearchKey:
    left = _search_key(r, decode, depth + 1)
    r.sp()
    return SearchOr(left, _search_key(r, decode, depth + 1))


def _key_uid(r: _Reader, _d: _Decode, _depth: int, _name: str) -> SearchKey:
    return SearchSequence(_sequence_set(r), uid=True)


def _key_modseq(r: _Reader, _d: _Decode, _depth: int, _name: str) -> SearchKey:
    """RFC 7162 §3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer."""
    entry: tuple[str, str] | None = None
    if r.is_string():
        entry_name = _utf8(r.string("entry name"), "entry name")
        r.sp()
        kind = r.atom("entry type").lower()
        if kind not in ("priv", "shared", "all"):
            raise _Bad("Invalid entry type")
        r.sp()
        entry = (entry_name, kind)
    return SearchModSeq(_mod_sequence(r, zero_ok=True), entry)


_SearchParser = Callable[[_Reader, _Decode, int, str], SearchKey]
_SEARCH_KEYS: dict[str, _SearchParser] = {
    "KEYWORD": _key_keyword,
    "UNKEYWORD": _key_keyword,
    **dict.fromkeys(("BCC", "CC", "FROM", "SUBJECT", "TO", "HEADER"), _key_header),
    "BODY": _key_text,
    "TEXT": _key_text,
    **dict.fromkeys(_DATE_KEYS, _key_date),
    "LARGER": _key_size,
    "SMALLER": _key_size,
    "NOT": _key_not,
    "OR": _key_or,
    "UID": _key_uid,
    "MODSEQ": _key_modseq,
}

# --- dispatch tables -----------------------------------------------------------------

_HANDLERS: dict[str, _Handler] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(StartTls),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ID": _id,
    "ENABLE": _enable,
    "SELECT": _select,
    "EXAMINE": _examine,
    "CREATE": _create,
    "DELETE": _one_mailbox(Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_args(Idle),
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(GetQuotaRoot),
    "SETQUOTA": _setquota,
    "COMPRESS": _compress,
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "EXPUNGE": _no_args(Expunge),
}

# Commands that have a UID form (RFC 9051 §6.4.9, RFC 6851 §3.2).
_SELECTED_HANDLERS: dict[str, _SelectedHandler] = {
    "COPY": _copy,
    "MOVE": _move,
    "FETCH": _fetch,
    "STORE": _store,
    "SEARCH": _search,
}
