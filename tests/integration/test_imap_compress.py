"""COMPRESS=DEFLATE (RFC 4978) over TLS: a raw client that deflates its commands
and inflates the server's responses, and a deflate bomb that must not inflate
past the framer's limits."""

from __future__ import annotations

import socket
import zlib
from collections.abc import Iterator

import pytest

from tests.integration.test_imap_condstore import Raw
from tests.integration.test_imap_service import (  # noqa: F401 (fixture)
    ALICE,
    ImapServer,
    imap,
)


class Deflated:
    """An IMAP session after COMPRESS DEFLATE (Raw's socket, zlib both ways)."""

    def __init__(self, raw: Raw) -> None:
        self.sock = raw.sock
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inf = zlib.decompressobj(-15)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH))

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += self.inf.decompress(chunk)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines


@pytest.fixture
def session(request: pytest.FixtureRequest) -> Iterator[Raw]:
    server: ImapServer = request.getfixturevalue("imap")
    a = Raw(server)
    yield a
    a.sock.close()


def test_compress_deflate_session(session: Raw) -> None:
    a = session
    assert "COMPRESS=DEFLATE" in a.ok("CAPABILITY")[0].split()
    assert a.cmd("COMPRESS GZIP")[-1].startswith(f"t{a.n} BAD")
    assert a.cmd("COMPRESS DEFLATE") == [f"t{a.n} OK DEFLATE active"]
    z = Deflated(a)
    z.send(b"c1 SELECT INBOX\r\n")
    lines = z.until(b"c1")
    assert b"* 3 EXISTS" in lines and lines[-1].startswith(b"c1 OK [READ-WRITE]")
    z.send(b"c2 UID FETCH 1:* (BODY.PEEK[])\r\nc3 NOOP\r\n")
    fetched = z.until(b"c2")
    assert sum(1 for line in fetched if line.startswith(b"* ") and b" FETCH (" in line) == 3
    assert z.until(b"c3") == [b"c3 OK NOOP completed"]
    z.send(b"c4 COMPRESS DEFLATE\r\n")
    assert z.until(b"c4") == [b"c4 NO [COMPRESSIONACTIVE] Compression is already on"]
    z.send(b"c5 LOGOUT\r\n")
    assert z.until(b"c5")[-1] == b"c5 OK LOGOUT completed"


def test_compress_needs_login(imap: ImapServer) -> None:  # noqa: F811
    ctx = imap.org.client_context()
    raw = socket.create_connection(("127.0.0.1", imap.ssl_port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"a1 COMPRESS DEFLATE\r\n")
        assert f.readline().startswith(b"a1 BAD")


def test_deflate_bomb_is_not_inflated_at_once(session: Raw, imap: ImapServer) -> None:  # noqa: F811
    a = session
    a.ok("COMPRESS DEFLATE")
    z = Deflated(a)
    # 200 MB of one byte, about 200 KB compressed: a line far past the 64 KiB limit.
    chunk = b"x" * (1 << 20)
    for _ in range(200):
        z.sock.sendall(z.out.compress(chunk))
    z.send(b"\r\nc1 NOOP\r\n")
    reply = z.line()
    assert reply.startswith(b"* BAD") or reply.startswith(b"* BYE"), reply
    # The server is still there for others.
    other = Raw(imap)
    assert other.ok("NOOP")
    other.close()


def test_corrupt_deflate_stream_closes_the_connection(session: Raw, imap: ImapServer) -> None:  # noqa: F811
    a = session
    a.ok("COMPRESS DEFLATE")
    # 0xFF... is no valid raw DEFLATE block: nothing after it can be read.
    a.sock.sendall(b"\xff" * 64)
    a.sock.settimeout(10)
    assert a.sock.recv(100) == b""
    other = Raw(imap)
    assert other.ok("NOOP")
    other.close()
