"""Fuzzing the live IMAP service: random command lines (real command names with
arguments made of IMAP's tokens, and plain garbage) sent to a logged-in,
selected session over TLS. Whatever comes in, every command gets its tagged
answer (or the session ends with BYE), no traceback escapes, and the server
keeps serving: after each example a NOOP on the same session and a fresh login
succeed."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PASSWORD
from tests.integration.test_imap_service import (  # noqa: F401 (fixture)
    ALICE,
    ImapServer,
    imap,
)

# Commands that change the session's framing or end it are left out: they
# wait for more input (IDLE, AUTHENTICATE), switch the byte stream (STARTTLS,
# COMPRESS) or close (LOGOUT); their own tests cover them.
COMMANDS = [
    "CAPABILITY", "NOOP", "CHECK", "ID", "ENABLE", "NAMESPACE", "SELECT", "EXAMINE",
    "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS",
    "APPEND", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
    "UID FETCH", "UID SEARCH", "UID STORE", "UID COPY", "UID MOVE", "UID EXPUNGE",
    "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "LOGIN", "FROB",
]  # fmt: skip
ATOMS = [
    "INBOX", "Drafts", "1", "1:*", "*", "2,4:7", "0", "4294967296", "$", "(", ")", "[", "]",
    "BODY[]", "BODY.PEEK[HEADER.FIELDS (From)]", "BODY[1.2.MIME]<0.10>", "FLAGS", "+FLAGS",
    "-FLAGS.SILENT", "(\\\\Seen \\\\Deleted)", "\\\\Draft", "$Label1", "ALL", "FAST", "FULL",
    "ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "UID", "MODSEQ", "(CHANGEDSINCE 1)",
    "(UNCHANGEDSINCE 5)", "OR", "NOT", "SUBJECT", "FROM", "TEXT", "SINCE", "1-Jan-2020",
    "LARGER", "NIL", '""', '"quoted \\\\" string"', "CONDSTORE", "QRESYNC", "RETURN",
    "(MIN MAX COUNT)", "(SUBSCRIBED)", "(STATUS (MESSAGES SIZE))", "&AOQ-", "&Jjo-!",
    "Sent Items", "../bob", "#shared", "%", "a/b/c", "UTF8", "(STORAGE 10)",
    "BINARY[1]", "BINARY.PEEK[2]<0.5>", "BINARY.SIZE[1.1]", "IMAP4rev2", "UTF8=ACCEPT",
    "(SAVE)", "(SAVE MIN)", "Résumé",
]  # fmt: skip

token = st.one_of(
    st.sampled_from(ATOMS),
    st.text(alphabet='abcXYZ019*%:,()[]<>.\\"-+ $&', min_size=1, max_size=12),
    st.binary(min_size=1, max_size=6).map(lambda b: b.decode("latin-1")),
)


@st.composite
def command_line(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(COMMANDS))
    args = draw(st.lists(token, max_size=6))
    text = " ".join([name, *args])
    # No synchronizing literal announcements: the server would wait for their
    # octets. A LITERAL+ literal with its octets exercises the literal path.
    text = text.replace("{", "(").replace("\r", " ").replace("\n", " ")
    line = text.encode("latin-1")
    if draw(st.booleans()) and name in ("APPEND", "SEARCH", "CREATE", "LOGIN"):
        data = draw(st.binary(max_size=40))
        line += b" {%d+}\r\n" % len(data) + data
    return line


class Session:
    def __init__(self, server: ImapServer) -> None:
        ctx = server.org.client_context()
        sock = socket.create_connection(("127.0.0.1", server.ssl_port), timeout=10)
        self.sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.n = 0
        assert self.file.readline().startswith(b"* OK")

    def command(self, line: bytes) -> bytes:
        """Send one tagged line; return the tagged answer, or b"" once the server
        said BYE and closed (the bad-command limit)."""
        self.n += 1
        tag = b"f%d" % self.n
        self.sock.sendall(tag + b" " + line + b"\r\n")
        while True:
            got = self.file.readline()
            if not got:
                return b""
            if got.startswith(tag + b" "):
                return got
            if got.startswith(b"* BAD"):
                return b"* BAD"  # a line it could not read a tag from: answered untagged
            if got.startswith(b"* BYE"):
                rest = self.file.readline()
                return rest if rest.startswith(tag + b" ") else b""
            if got.rstrip().endswith(b"}"):  # a literal in a response: skip it
                size = int(got.rstrip()[:-1].rsplit(b"{", 1)[1])
                self.file.read(size)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ImapServer]:
    found: ImapServer = request.getfixturevalue("imap")
    yield found


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(command_line(), min_size=1, max_size=8))
def test_random_commands_never_break_the_session(server: ImapServer, lines: list[bytes]) -> None:
    s = Session(server)
    try:
        assert s.command(f'LOGIN "{ALICE}" "{PASSWORD}"'.encode()).split()[1] == b"OK"
        assert s.command(b"SELECT INBOX").split()[1] == b"OK"
        for line in lines:
            answer = s.command(line)
            if not answer:
                break  # BYE: too many bad commands; the server stays up (below)
            assert answer == b"* BAD" or answer.split()[1] in (b"OK", b"NO", b"BAD"), answer
        else:
            assert s.command(b"NOOP").split()[1] == b"OK"
    finally:
        s.close()
    fresh = Session(server)
    try:
        assert fresh.command(f'LOGIN "{ALICE}" "{PASSWORD}"'.encode()).split()[1] == b"OK"
    finally:
        fresh.close()
