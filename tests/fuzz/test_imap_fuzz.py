"""Hypothesis fuzzing of the IMAP parser and framer: no input may raise, memory stays bounded,
and valid commands survive any split of the byte stream."""

from __future__ import annotations

import datetime
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwerk.protocols.imap import (
    Append,
    BodySection,
    Command,
    CommandFramer,
    CommandReceived,
    CommandRejected,
    Fetch,
    FetchAttribute,
    FetchItem,
    LiteralNeeded,
    Login,
    NeedData,
    Search,
    SearchAll,
    SearchAnd,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchNot,
    SearchOr,
    SearchSequence,
    Section,
    SectionText,
    Select,
    SequenceSet,
    Store,
    StoreMode,
    parse_command,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that steer the framer into its interesting states.
TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\x00",
    b'"',
    b"\\",
    b"(",
    b")",
    b"[",
    b"]",
    b"{3}\r\n",
    b"{5+}\r\n",
    b"~{2}\r\n",
    b"{99999999999+}\r\n",
    b"{4096+}\r\n",
    b"{0}\r\n",
    b"a1 ",
    b"* ",
    b"+ ",
    b"LOGIN ",
    b"APPEND INBOX ",
    b"UID FETCH 1:* (BODY.PEEK[1.HEADER.FIELDS (From)]<0.10>)",
    b"SEARCH OR NOT (",
    b"IDLE\r\n",
    b"DONE\r\n",
    b"NOOP\r\n",
    b"\xff",
    "ü".encode(),
    b"x" * 300,
]
chunks = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=64)), max_size=30).map(
    b"".join
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("data"), chunks),
        st.tuples(st.just("expect_line"), st.just(b"")),
        st.tuples(st.just("discard"), st.just(b"")),
    ),
    max_size=25,
)


def drain(framer: CommandFramer, refuse_literals: bool) -> None:
    # The framer must make progress: a bounded number of events empties any buffer.
    for _ in range(100_000):
        event = framer.next_event()
        if isinstance(event, NeedData):
            return
        if isinstance(event, LiteralNeeded) and refuse_literals:
            framer.discard_command()
    raise AssertionError("framer did not reach NeedData")


@FUZZ
@given(
    operations,
    st.booleans(),
    st.integers(min_value=16, max_value=400),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=400),
)
def test_framer_never_raises_and_stays_bounded(
    ops: list[tuple[str, bytes]], refuse: bool, max_line: int, max_literal: int, max_nonsync: int
) -> None:
    framer = CommandFramer(max_line, max_literal, max_nonsync)
    for name, payload in ops:
        if name == "data":
            framer.receive_data(payload)
        elif name == "expect_line":
            framer.expect_line()
        else:
            assert framer.discard_buffered() >= 0
            assert framer.buffered == 0
        drain(framer, refuse)
        # After NeedData, what is buffered is less than one line or one literal.
        assert framer.buffered < max(max_line, max_literal, 1)


@FUZZ
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=7))
def test_parse_command_never_raises_on_pieces(pieces: list[bytes]) -> None:
    result = parse_command(pieces)
    assert isinstance(result, CommandRejected) or hasattr(result, "tag")


WORDS = [
    "LOGIN",
    "SELECT",
    "FETCH",
    "UID",
    "STORE",
    "SEARCH",
    "APPEND",
    "LIST",
    "STATUS",
    "ID",
    "OR",
    "NOT",
    "HEADER",
    "BODY[",
    "BODY.PEEK[",
    "BINARY[",
    "HEADER.FIELDS",
    "MIME",
    "]",
    "(",
    ")",
    "<",
    ">",
    ".",
    " ",
    '"',
    "\\",
    "1",
    "*",
    "$",
    ":",
    ",",
    "0",
    "4294967296",
    "9" * 30,
    "NIL",
    "RETURN",
    "CHARSET",
    "\\Seen",
    "+FLAGS",
    "(CHANGEDSINCE",
    "VANISHED",
    "QRESYNC",
    "1-Jan-2024",
    "ü",
]


@FUZZ
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=4), max_size=40))
def test_parse_command_never_raises_on_command_like_text(parts: list[str]) -> None:
    result = parse_command([("t " + "".join(parts)).encode("utf-8", "surrogatepass")])
    assert result is not None


# --- round trip: generated commands, serialized, framed at random splits ---------------

SAFE_TEXT = st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=12)
ATOM_TEXT = st.from_regex(r"[A-Za-z0-9_.\-]{1,10}", fullmatch=True)
TAGS = st.from_regex(r"[A-Za-z0-9.]{1,8}", fullmatch=True)


@st.composite
def astring(draw: st.DrawFn, text: str) -> bytes:
    """Any valid encoding of `text`: atom (when it can be), quoted, or a literal."""
    forms = ["literal", "literal+"]
    if "\r" not in text and "\n" not in text:
        forms.append("quoted")
    if text and all(c.isascii() and (c.isalnum() or c in "_.-") for c in text):
        forms.append("atom")
    form = draw(st.sampled_from(forms))
    raw = text.encode()
    if form == "atom":
        return raw
    if form == "quoted":
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    plus = b"+" if form == "literal+" else b""
    return b"{%d%s}\r\n%s" % (len(raw), plus, raw)


def mailbox_value(name: str) -> str:
    return "INBOX" if name.isascii() and name.upper() == "INBOX" else name


@st.composite
def login_commands(draw: st.DrawFn) -> tuple[bytes, Command]:
    tag = draw(TAGS)
    user, password = draw(SAFE_TEXT), draw(SAFE_TEXT)
    wire = b"%s LOGIN %s %s" % (tag.encode(), draw(astring(user)), draw(astring(password)))
    return wire, Login(tag, user, password)


@st.composite
def select_commands(draw: st.DrawFn) -> tuple[bytes, Command]:
    tag = draw(TAGS)
    name = draw(st.one_of(SAFE_TEXT, st.sampled_from(["inbox", "INBOX", "Inbox", "Sent"])))
    wire = b"%s SELECT %s" % (tag.encode(), draw(astring(name)))
    return wire, Select(tag, mailbox_value(name))


numbers = st.one_of(st.none(), st.integers(min_value=1, max_value=2**32 - 1))
sequence_sets = st.lists(st.tuples(numbers, numbers), min_size=1, max_size=5).map(
    lambda ranges: SequenceSet(tuple(ranges))
) | st.just(SequenceSet(saved=True))

FETCH_FORMS: list[tuple[bytes, FetchAttribute]] = [
    (b"FLAGS", FetchItem.FLAGS),
    (b"UID", FetchItem.UID),
    (b"RFC822.SIZE", FetchItem.RFC822_SIZE),
    (b"BODYSTRUCTURE", FetchItem.BODYSTRUCTURE),
    (b"BODY.PEEK[]", BodySection(peek=True)),
    (b"BODY[1.2.MIME]<5.10>", BodySection(Section((1, 2), SectionText.MIME), False, (5, 10))),
    (
        b"BODY[HEADER.FIELDS (From To)]",
        BodySection(Section((), SectionText.HEADER_FIELDS, ("From", "To"))),
    ),
]


@st.composite
def fetch_commands(draw: st.DrawFn) -> tuple[bytes, Command]:
    tag = draw(TAGS)
    uid = draw(st.booleans())
    seqs = draw(sequence_sets)
    forms = draw(st.lists(st.sampled_from(FETCH_FORMS), min_size=1, max_size=4))
    atts = b"(" + b" ".join(text for text, _ in forms) + b")"
    wire = b"%s %sFETCH %s %s" % (tag.encode(), b"UID " if uid else b"", str(seqs).encode(), atts)
    return wire, Fetch(tag, seqs, tuple(att for _, att in forms), uid=uid)


@st.composite
def store_commands(draw: st.DrawFn) -> tuple[bytes, Command]:
    tag = draw(TAGS)
    seqs = draw(sequence_sets)
    mode = draw(st.sampled_from(StoreMode))
    silent = draw(st.booleans())
    flags = draw(
        st.lists(st.sampled_from(["\\Seen", "\\Deleted", "\\Flagged", "$Junk", "work"]), max_size=4)
    )
    item = (mode.value + "FLAGS" + (".SILENT" if silent else "")).encode()
    wire = b"%s STORE %s %s (%s)" % (
        tag.encode(),
        str(seqs).encode(),
        item,
        " ".join(flags).encode(),
    )
    return wire, Store(tag, seqs, mode, tuple(flags), silent)


def search_keys(depth: int = 3) -> st.SearchStrategy[tuple[bytes, SearchKey]]:
    leaves = st.one_of(
        st.just((b"ALL", SearchAll())),
        st.just((b"UNSEEN", SearchFlag("\\Seen", False))),
        sequence_sets.map(lambda s: (str(s).encode(), SearchSequence(s))),
        ATOM_TEXT.map(lambda v: (b"SUBJECT " + v.encode(), SearchHeader("subject", v))),
    )
    if depth == 0:
        return leaves
    sub = search_keys(depth - 1)
    return st.one_of(
        leaves,
        sub.map(lambda k: (b"NOT " + k[0], SearchNot(k[1]))),
        st.tuples(sub, sub).map(
            lambda p: (b"OR %s %s" % (p[0][0], p[1][0]), SearchOr(p[0][1], p[1][1]))
        ),
        st.lists(sub, min_size=2, max_size=3).map(
            lambda ks: (
                b"(" + b" ".join(k[0] for k in ks) + b")",
                SearchAnd(tuple(k[1] for k in ks)),
            )
        ),
    )


@st.composite
def search_commands(draw: st.DrawFn) -> tuple[bytes, Command]:
    tag = draw(TAGS)
    text, key = draw(search_keys())
    return b"%s SEARCH %s" % (tag.encode(), text), Search(tag, key)


@st.composite
def append_commands(draw: st.DrawFn) -> tuple[bytes, Command]:
    tag = draw(TAGS)
    message = draw(st.binary(max_size=60))
    binary = b"\x00" in message or draw(st.booleans())
    when = draw(st.none() | st.datetimes(min_value=datetime.datetime(1970, 1, 1)))
    flags = draw(st.lists(st.sampled_from(["\\Seen", "\\Draft", "$Forwarded"]), max_size=3))
    wire = b"%s APPEND INBOX (%s) " % (tag.encode(), " ".join(flags).encode())
    internal = None
    if when is not None:
        internal = when.replace(microsecond=0, tzinfo=datetime.UTC)
        wire += internal.strftime('"%d-%b-%Y %H:%M:%S +0000" ').encode()
    wire += b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(message), message)
    return wire, Append(tag, "INBOX", message, tuple(flags), internal, binary)


commands = st.one_of(
    login_commands(),
    select_commands(),
    fetch_commands(),
    store_commands(),
    search_commands(),
    append_commands(),
)


@FUZZ
@given(st.lists(commands, min_size=1, max_size=5), st.lists(st.integers(0, 2000), max_size=10))
def test_valid_commands_round_trip_at_any_split(
    generated: list[tuple[bytes, Command]], cuts: list[int]
) -> None:
    wire = b"".join(text + b"\r\n" for text, _ in generated)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    framer = CommandFramer()
    received: list[Command] = []
    for start, stop in itertools.pairwise(points):
        framer.receive_data(wire[start:stop])
        while not isinstance(event := framer.next_event(), NeedData):
            assert isinstance(event, CommandReceived | LiteralNeeded), event
            if isinstance(event, CommandReceived):
                received.append(event.command)
    assert received == [command for _, command in generated]
    assert framer.buffered == 0
