"""Transcript tests for postwerk.protocols.pop3.session: the state machine, replies,
CAPA, and putting messages on the wire (dot-stuffing, TOP)."""

from __future__ import annotations

import itertools

import pytest

from postwerk.protocols.pop3 import (
    ALLOWED,
    Auth,
    Capa,
    Close,
    Command,
    CommandReceived,
    Commit,
    Dele,
    Delegated,
    DotStuffer,
    List,
    MaildropEntry,
    NeedData,
    Noop,
    Outcome,
    Pass,
    Pop3Framer,
    Pop3Session,
    Quit,
    Rejected,
    Reply,
    ResponseCode,
    Retr,
    Rset,
    SendMessage,
    ServiceCommand,
    Stat,
    State,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
    auth_list_reply,
    capa_reply,
    dot_stuff,
    dot_stuff_chunks,
    greeting,
    parse_command,
    sasl_challenge,
    top_of,
)
from postwerk.protocols.pop3 import session as s

MAILDROP = [("uid-1", 120), ("uid-2", 200), ("uid-3", 3000)]
MESSAGES = {
    "uid-1": b"Subject: one\r\n\r\nbody one\r\n",
    "uid-2": b"Subject: two\r\nFrom: a@b\r\n\r\n.line\r\nsecond\r\n.\r\nlast",
    "uid-3": b"Subject: three\r\n\r\n" + b"x\r\n" * 100,
}


def logged_in(maildrop: list[tuple[str, int]] | None = None) -> Pop3Session:
    session = Pop3Session()
    assert session.begin_transaction(MAILDROP if maildrop is None else maildrop) == s.LOGGED_IN
    return session


def render(outcome: Outcome) -> bytes:
    """What a well-behaved service writes for an outcome (no store, no socket)."""
    match outcome:
        case Reply():
            return outcome.to_bytes()
        case SendMessage(uid=uid, lines=lines):
            message = MESSAGES[uid]
            body = message if lines is None else top_of(message, lines)
            return outcome.head().to_bytes() + dot_stuff(body)
        case Commit():
            return s.BYE.to_bytes()
        case Close(reply):
            return reply.to_bytes()
        case Delegated():
            return b"(service)\r\n"


def transcript(session: Pop3Session, text: str) -> None:
    """Run 'C: command' lines; each following 'S: ' block is the expected output."""
    framer = Pop3Framer()
    expected = b""
    got = b""
    for raw in text.strip().splitlines():
        line = raw.strip()
        if line.startswith("C: "):
            framer.receive_data(line[3:].encode() + b"\r\n")
            while not isinstance(event := framer.next_event(), NeedData):
                assert isinstance(event, CommandReceived), event
                got += render(session.handle(event.command))
        else:
            assert line.startswith("S:"), line
            expected += line[3:].encode() + b"\r\n"
    assert got.decode() == expected.decode()


# --- transcripts (RFC 1939 §5-§7 examples, adapted) ---------------------------------


def test_stat_list_uidl() -> None:
    transcript(
        logged_in(),
        """
        C: STAT
        S: +OK 3 3320
        C: LIST
        S: +OK 3 messages (3320 octets)
        S: 1 120
        S: 2 200
        S: 3 3000
        S: .
        C: LIST 2
        S: +OK 2 200
        C: LIST 4
        S: -ERR no such message
        C: UIDL
        S: +OK
        S: 1 uid-1
        S: 2 uid-2
        S: 3 uid-3
        S: .
        C: UIDL 3
        S: +OK 3 uid-3
        C: UIDL 9
        S: -ERR no such message
        C: NOOP
        S: +OK
        """,
    )


def test_dele_rset_and_deleted_is_no_such_message() -> None:
    transcript(
        logged_in(),
        """
        C: DELE 1
        S: +OK message 1 deleted
        C: DELE 1
        S: -ERR no such message
        C: STAT
        S: +OK 2 3200
        C: LIST
        S: +OK 2 messages (3200 octets)
        S: 2 200
        S: 3 3000
        S: .
        C: LIST 1
        S: -ERR no such message
        C: UIDL 1
        S: -ERR no such message
        C: RETR 1
        S: -ERR no such message
        C: TOP 1 0
        S: -ERR no such message
        C: UIDL
        S: +OK
        S: 2 uid-2
        S: 3 uid-3
        S: .
        C: RSET
        S: +OK maildrop has 3 messages (3320 octets)
        C: STAT
        S: +OK 3 3320
        C: LIST 1
        S: +OK 1 120
        """,
    )


def test_retr_and_top_stream_through_the_stuffer() -> None:
    transcript(
        logged_in(),
        """
        C: RETR 2
        S: +OK 200 octets
        S: Subject: two
        S: From: a@b
        S:
        S: ..line
        S: second
        S: ..
        S: last
        S: .
        C: TOP 2 1
        S: +OK top of message follows
        S: Subject: two
        S: From: a@b
        S:
        S: ..line
        S: .
        C: TOP 1 0
        S: +OK top of message follows
        S: Subject: one
        S:
        S: .
        """,
    )


def test_empty_maildrop() -> None:
    transcript(
        logged_in([]),
        """
        C: STAT
        S: +OK 0 0
        C: LIST
        S: +OK 0 messages (0 octets)
        S: .
        C: UIDL
        S: +OK
        S: .
        C: RETR 1
        S: -ERR no such message
        C: RSET
        S: +OK maildrop has 0 messages (0 octets)
        """,
    )


# --- outcomes -------------------------------------------------------------------


def test_retr_and_top_markers() -> None:
    session = logged_in()
    assert session.handle(Retr(3)) == SendMessage(3, "uid-3", 3000, None)
    assert session.handle(Top(1, 5)) == SendMessage(1, "uid-1", 120, 5)
    assert session.handle(Retr(4)) == s.NO_SUCH_MESSAGE
    assert session.handle(Retr(2**31)) == s.NO_SUCH_MESSAGE
    assert SendMessage(3, "uid-3", 3000).head().to_bytes() == b"+OK 3000 octets\r\n"


def test_quit_in_transaction_commits_marked_uids_in_order() -> None:
    session = logged_in()
    session.handle(Dele(3))
    session.handle(Dele(1))
    assert session.handle(Quit()) == Commit(("uid-1", "uid-3"))
    assert session.state is State.UPDATE
    # RFC 1939 §6: nothing else is accepted once UPDATE begins.
    assert session.handle(Stat()) == s.WRONG_STATE
    assert session.handle(Quit()) == s.WRONG_STATE


def test_quit_without_deletions_commits_nothing() -> None:
    assert logged_in().handle(Quit()) == Commit(())


def test_rset_then_quit_deletes_nothing() -> None:
    session = logged_in()
    session.handle(Dele(2))
    session.handle(Rset())
    assert session.handle(Quit()) == Commit(())


def test_quit_in_authorization_closes_without_update() -> None:
    session = Pop3Session()
    assert session.handle(Quit()) == Close(s.BYE)
    assert session.state is State.AUTHORIZATION


@pytest.mark.parametrize(
    "command", [User("a"), Pass("p"), Auth(None), Auth("PLAIN", "="), Stls(), Capa(), Utf8()]
)
def test_authorization_commands_are_delegated(command: ServiceCommand) -> None:
    assert Pop3Session().handle(command) == Delegated(command)


def test_capa_is_delegated_in_transaction() -> None:
    assert logged_in().handle(Capa()) == Delegated(Capa())


# --- the state table -----------------------------------------------------------

ALL_COMMANDS: list[Command] = [
    User("a"),
    Pass("p"),
    Auth("PLAIN"),
    Stls(),
    Capa(),
    Quit(),
    Stat(),
    List(),
    Retr(1),
    Dele(1),
    Noop(),
    Rset(),
    Top(1, 0),
    Uidl(),
    Utf8(),
]

EXPECTED_TABLE = {
    State.AUTHORIZATION: {"User", "Pass", "Auth", "Stls", "Capa", "Utf8", "Quit"},
    State.TRANSACTION: {
        "Stat",
        "List",
        "Retr",
        "Dele",
        "Noop",
        "Rset",
        "Top",
        "Uidl",
        "Capa",
        "Quit",
    },
    State.UPDATE: set(),
}


def test_state_table() -> None:
    assert {state: {t.__name__ for t in kinds} for state, kinds in ALLOWED.items()} == (
        EXPECTED_TABLE
    )


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: type(c).__name__)
def test_wrong_state_is_refused_before_any_handler(command: Command) -> None:
    fresh = Pop3Session()
    in_auth = fresh.handle(command)
    assert (in_auth == s.WRONG_STATE) == (
        type(command).__name__ not in EXPECTED_TABLE[State.AUTHORIZATION]
    )
    session = logged_in()
    in_txn = session.handle(command)
    assert (in_txn == s.WRONG_STATE) == (
        type(command).__name__ not in EXPECTED_TABLE[State.TRANSACTION]
    )


def test_refused_commands_change_nothing() -> None:
    session = Pop3Session()
    assert session.handle(Dele(1)) == s.WRONG_STATE
    session.begin_transaction(MAILDROP)
    assert session.handle(Pass("x")) == s.WRONG_STATE
    assert session.handle(Stat()) == Reply(True, "3 3320")


# --- begin_transaction contract ------------------------------------------------------


def test_begin_transaction_accepts_entries_and_tuples() -> None:
    session = Pop3Session()
    session.begin_transaction([MaildropEntry("a", 1), ("b", 2)])
    assert session.state is State.TRANSACTION
    assert session.handle(Stat()) == Reply(True, "2 3")


@pytest.mark.parametrize(
    "maildrop",
    [
        [("", 1)],
        [("has space", 1)],
        [("x" * 71, 1)],
        [("ü", 1)],
        [("a\r\n", 1)],
        [("a", 1), ("a", 2)],
        [("a", -1)],
    ],
)
def test_begin_transaction_rejects_bad_snapshots(maildrop: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError):
        Pop3Session().begin_transaction(maildrop)


def test_begin_transaction_twice_is_a_bug() -> None:
    session = logged_in()
    with pytest.raises(RuntimeError):
        session.begin_transaction(MAILDROP)


# --- replies ---------------------------------------------------------------------


NAMED = {
    "OK": (True, None),
    "BYE": (True, None),
    "LOGGED_IN": (True, None),
    "USER_ACCEPTED": (True, None),
    "BEGIN_TLS": (True, None),
    "UTF8_ENABLED": (True, None),
    "NO_SUCH_MESSAGE": (False, None),
    "WRONG_STATE": (False, None),
    "PASS_WITHOUT_USER": (False, None),
    "AUTH_FAILED": (False, ResponseCode.AUTH),
    "AUTH_CANCELLED": (False, None),
    "UNKNOWN_MECHANISM": (False, None),
    "PLAINTEXT_DISALLOWED": (False, ResponseCode.AUTH),
    "TLS_ACTIVE": (False, None),
    "MAILDROP_IN_USE": (False, ResponseCode.IN_USE),
    "LOGIN_DELAYED": (False, ResponseCode.LOGIN_DELAY),
    "TEMP_FAILURE": (False, ResponseCode.SYS_TEMP),
    "PERM_FAILURE": (False, ResponseCode.SYS_PERM),
    "UPDATE_FAILED": (False, ResponseCode.SYS_TEMP),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_replies(name: str) -> None:
    reply = getattr(s, name)
    assert isinstance(reply, Reply)
    assert (reply.ok, reply.code) == NAMED[name]
    wire = reply.to_bytes()
    assert wire.startswith(b"+OK" if reply.ok else b"-ERR")
    assert wire.endswith(b"\r\n") and wire.count(b"\n") == 1


def test_response_code_wire_form() -> None:
    assert s.MAILDROP_IN_USE.to_bytes() == b"-ERR [IN-USE] maildrop in use\r\n"
    assert s.TEMP_FAILURE.to_bytes().startswith(b"-ERR [SYS/TEMP] ")
    assert s.AUTH_FAILED.to_bytes().startswith(b"-ERR [AUTH] ")
    assert [c.value for c in ResponseCode] == [
        "IN-USE",
        "LOGIN-DELAY",
        "SYS/TEMP",
        "SYS/PERM",
        "AUTH",
        "UTF8",
    ]


@pytest.mark.parametrize("text", ["a\r\n+OK forged", "a\nb", "a\rb", "a\x00b"])
def test_reply_refuses_line_breaks(text: str) -> None:
    with pytest.raises(ValueError):
        Reply(False, text)
    with pytest.raises(ValueError):
        Reply(True, lines=("fine", text))


def test_multiline_reply_stuffs_lines() -> None:
    assert Reply(True, "x", lines=(".a", "b", "")).to_bytes() == b"+OK x\r\n..a\r\nb\r\n\r\n.\r\n"


def test_greeting() -> None:
    assert greeting().to_bytes() == b"+OK POP3 service is ready\r\n"
    assert greeting("hello").to_bytes() == b"+OK hello\r\n"
    with pytest.raises(ValueError):
        greeting("x" * 600)
    with pytest.raises(ValueError):
        greeting("a\r\n+OK")


def test_sasl_challenge() -> None:
    assert sasl_challenge(b"") == b"+ \r\n"
    assert sasl_challenge(b"Username:") == b"+ VXNlcm5hbWU6\r\n"


# --- CAPA ---------------------------------------------------------------------


def capa_lines(reply: Reply) -> list[str]:
    assert reply.ok and reply.lines is not None
    return list(reply.lines)


def test_capa_before_tls_without_plaintext() -> None:
    lines = capa_lines(
        capa_reply(plaintext_allowed=False, tls_active=False, sasl_mechanisms=["PLAIN", "LOGIN"])
    )
    assert lines == [
        "TOP",
        "UIDL",
        "STLS",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "EXPIRE NEVER",
    ]


def test_capa_after_tls() -> None:
    lines = capa_lines(
        capa_reply(
            plaintext_allowed=True,
            tls_active=True,
            sasl_mechanisms=["plain", "LOGIN", "PLAIN"],
            login_delay=900,
            expire_days=30,
            utf8=True,
            implementation="postwerk",
        )
    )
    assert lines == [
        "TOP",
        "UIDL",
        "SASL PLAIN LOGIN",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "EXPIRE 30",
        "LOGIN-DELAY 900",
        "UTF8 USER",
        "IMPLEMENTATION postwerk",
    ]


def test_capa_keeps_non_plaintext_mechanisms_without_tls() -> None:
    lines = capa_lines(
        capa_reply(
            plaintext_allowed=False,
            tls_active=False,
            starttls_available=False,
            sasl_mechanisms=["PLAIN", "XOAUTH2"],
            utf8=True,
        )
    )
    assert "SASL XOAUTH2" in lines
    assert "USER" not in lines and "STLS" not in lines
    assert "UTF8" in lines


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sasl_mechanisms": ["PL AIN"]},
        {"sasl_mechanisms": ["A" * 21]},
        {"login_delay": -1},
        {"expire_days": -1},
        {"implementation": "x\r\ny"},
        {"implementation": ""},
    ],
)
def test_capa_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        capa_reply(plaintext_allowed=True, tls_active=True, **kwargs)  # type: ignore[arg-type]


def test_auth_list_reply() -> None:
    assert auth_list_reply(["PLAIN", "LOGIN"], plaintext_allowed=True).to_bytes() == (
        b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    )
    assert auth_list_reply(["PLAIN"], plaintext_allowed=False).to_bytes() == b"+OK\r\n.\r\n"


# --- dot-stuffing ---------------------------------------------------------------


def reference_stuff(message: bytes) -> bytes:
    """Slow, obvious model: split into lines on LF, stuff, end with CRLF . CRLF."""
    if not message:
        return b".\r\n"
    lines = message.split(b"\n")
    last = lines.pop()  # "" if the message ended with LF
    out = b""
    for line in lines:
        line = line.removesuffix(b"\r")
        out += (b"." + line if line.startswith(b".") else line) + b"\r\n"
    if last:  # an unterminated last line (a lone trailing CR is its line end)
        last = last.removesuffix(b"\r")
        out += (b"." + last if last.startswith(b".") else last) + b"\r\n"
    return out + b".\r\n"


def stuff_in_pieces(message: bytes, cuts: list[int]) -> bytes:
    points = sorted({0, len(message), *cuts})
    stuffer = DotStuffer()
    out = b"".join(stuffer.feed(message[a:b]) for a, b in itertools.pairwise(points))
    return out + stuffer.finish()


STUFF_CASES = [
    (b"", b".\r\n"),
    (b"a\r\n", b"a\r\n.\r\n"),
    (b"a", b"a\r\n.\r\n"),  # no trailing CRLF: one is added before the terminator
    (b".", b"..\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"..x\r\n", b"...x\r\n.\r\n"),
    (b"a\n.b\n", b"a\r\n..b\r\n.\r\n"),  # bare LF is a line end, sent as CRLF
    (b"a\r", b"a\r\n.\r\n"),
    (b"a\r.b\r\n", b"a\r.b\r\n.\r\n"),  # a bare CR is not a line end
    (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
    (b"\n\n.", b"\r\n\r\n..\r\n.\r\n"),
]


@pytest.mark.parametrize(("message", "wire"), STUFF_CASES)
def test_dot_stuff_cases(message: bytes, wire: bytes) -> None:
    assert dot_stuff(message) == wire
    assert reference_stuff(message) == wire


def test_dot_stuffing_split_at_every_position() -> None:
    # A line starting with "." (and CRLFs and bare LFs) split at every point, and in two.
    message = b"Subject: x\r\n\r\n.hidden\r\n..two\r\n.\r\nend\n.lf\r\nlast."
    expected = reference_stuff(message)
    for i in range(len(message) + 1):
        assert stuff_in_pieces(message, [i]) == expected, i
        for j in range(i, len(message) + 1):
            assert stuff_in_pieces(message, [i, j]) == expected, (i, j)


def test_dot_stuffing_one_byte_at_a_time() -> None:
    message = MESSAGES["uid-2"]
    assert stuff_in_pieces(message, list(range(len(message)))) == reference_stuff(message)


def test_terminator_when_message_lacks_trailing_crlf() -> None:
    assert b"".join(dot_stuff_chunks([b"Subject: x\r\n\r\nno end"])).endswith(b"no end\r\n.\r\n")
    assert b"".join(dot_stuff_chunks([b"a\r", b""])).endswith(b"a\r\n.\r\n")
    assert b"".join(dot_stuff_chunks([])) == b".\r\n"


def test_stuffer_after_finish_is_inert() -> None:
    stuffer = DotStuffer()
    stuffer.feed(b"a")
    assert stuffer.finish() == b"\r\n.\r\n"
    assert stuffer.feed(b"more") == b""
    assert stuffer.finish() == b""


def test_stuffed_body_has_exactly_one_terminator_line() -> None:
    wire = dot_stuff(b".\r\n.\n\n.\r\n..\r\n")
    assert wire.split(b"\r\n").count(b".") == 1
    assert wire.endswith(b"\r\n.\r\n")


# --- TOP ---------------------------------------------------------------------------

TOP_MESSAGE = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3"


@pytest.mark.parametrize(
    ("message", "lines", "expected"),
    [
        (TOP_MESSAGE, 0, b"A: 1\r\nB: 2\r\n\r\n"),
        (TOP_MESSAGE, 1, b"A: 1\r\nB: 2\r\n\r\nl1\r\n"),
        (TOP_MESSAGE, 2, b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"),
        (TOP_MESSAGE, 3, TOP_MESSAGE),
        (TOP_MESSAGE, 2**31, TOP_MESSAGE),
        (b"A: 1\r\nB: 2\r\n", 5, b"A: 1\r\nB: 2\r\n"),  # no body at all
        (b"A: 1", 0, b"A: 1"),
        (b"", 3, b""),
        (b"\r\nbody\r\nmore\r\n", 1, b"\r\nbody\r\n"),  # no headers
        (b"A: 1\n\nl1\nl2\n", 1, b"A: 1\n\nl1\n"),  # bare LF
        (b"A: 1\r\n\r\n\r\n\r\nx", 1, b"A: 1\r\n\r\n\r\n"),  # blank body lines count
        (b"A: 1\r\n\r\nl1\r\n", 1, b"A: 1\r\n\r\nl1\r\n"),
    ],
)
def test_top_of(message: bytes, lines: int, expected: bytes) -> None:
    assert top_of(message, lines) == expected


def test_top_of_is_stuffed_like_any_body() -> None:
    assert dot_stuff(top_of(b"A: 1\r\n\r\n.x\r\ny", 1)) == b"A: 1\r\n\r\n..x\r\n.\r\n"


def test_parse_and_handle_round_trip() -> None:
    session = logged_in()
    command = parse_command(b"top 2 0")
    assert not isinstance(command, Rejected)
    assert session.handle(command) == SendMessage(2, "uid-2", 200, 0)
