"""BINARY (RFC 3516, part of IMAP4rev2: RFC 9051 §6.4.5): FETCH BINARY[part],
BINARY.PEEK, BINARY.SIZE and APPEND with literal8, as raw transcripts. The
server undoes each part's Content-Transfer-Encoding; a NUL in the result
travels in a literal8 (`~{n}`), never in a plain literal."""

from __future__ import annotations

import base64
import quopri

from tests.protocol.imap.conftest import ImapTestServer, Session, append

PAYLOAD = bytes(range(256)) * 3  # every octet, NUL and CR/LF included
TEXT = "Grüße, naïve café — 10 € ≠ 10 $\r\n".encode()
TEXT_QP = quopri.encodestring(TEXT).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
MIXED = (
    b"From: Carol <carol@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: binary parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="B"\r\n'
    b"\r\n"
    b"--B\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n" + TEXT_QP + b"\r\n"
    b"--B\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n") + b"--B\r\n"
    b"Content-Type: application/x-strange\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 a\r\n"
    b"--B--\r\n"
)


def literal8(data: bytes) -> bytes:
    return b"~{%d}\r\n%s" % (len(data), data)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n%s" % (len(data), data)


def selected(imap: ImapTestServer, folder: str) -> Session:
    s = imap.login()
    append(s, folder, MIXED)
    s.select(folder)
    return s


def test_base64_part_decoded_into_literal8(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    [line] = s.ok("FETCH 1 BINARY.PEEK[2]").untagged
    assert line == b"* 1 FETCH (BINARY[2] " + literal8(PAYLOAD) + b")"


def test_quoted_printable_part_decoded(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    [line] = s.ok("FETCH 1 BINARY.PEEK[1]").untagged
    # No NUL in the result: a plain literal is enough.
    assert line == b"* 1 FETCH (BINARY[1] " + literal(TEXT) + b")"


def test_binary_size_is_the_decoded_size(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    [line] = s.ok("FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2])").untagged
    assert line == b"* 1 FETCH (BINARY.SIZE[1] %d BINARY.SIZE[2] %d)" % (len(TEXT), len(PAYLOAD))


def test_partial_binary(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    [line] = s.ok("FETCH 1 BINARY.PEEK[2]<250.10>").untagged
    assert line == b"* 1 FETCH (BINARY[2]<250> " + literal8(PAYLOAD[250:260]) + b")"


def test_unknown_transfer_encoding_is_no_unknown_cte(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    s.expect("FETCH 1 BINARY.PEEK[3]", "NO", "UNKNOWN-CTE")
    s.ok("NOOP")  # the session goes on


def test_missing_part_is_nil(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    assert s.ok("FETCH 1 BINARY.PEEK[9]").untagged == [b"* 1 FETCH (BINARY[9] NIL)"]


def test_binary_without_peek_sets_seen(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    [line] = s.ok("FETCH 1 BINARY[1]").untagged
    assert b"FLAGS (\\Seen)" in line
    [line] = s.ok("FETCH 1 FLAGS").untagged
    assert line == b"* 1 FETCH (FLAGS (\\Seen))"


def test_whole_message_binary(imap: ImapTestServer, folder: str) -> None:
    s = selected(imap, folder)
    [line] = s.ok("FETCH 1 BINARY.PEEK[]").untagged
    assert line == b"* 1 FETCH (BINARY[] " + literal(MIXED) + b")"


def test_append_literal8_keeps_nul(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    data = b"Subject: raw\r\nContent-Transfer-Encoding: binary\r\n\r\nA\x00B\r\n"
    reply = s.ok(b"APPEND " + folder.encode() + b" ~{%d+}\r\n" % len(data) + data)
    assert reply.code_name == "APPENDUID"
    s.select(folder)
    [line] = s.ok("FETCH 1 BINARY.PEEK[1]").untagged
    assert line == b"* 1 FETCH (BINARY[1] " + literal8(b"A\x00B\r\n") + b")"
    # BODY[] cannot carry NUL (RFC 9051 §4.3): it is mapped, sizes kept.
    [line] = s.ok("FETCH 1 BODY.PEEK[1]").untagged
    assert line == b"* 1 FETCH (BODY[1] " + literal(b"A\x80B\r\n") + b")"


def test_nul_in_plain_literal_is_bad(imap: ImapTestServer, folder: str) -> None:
    s = imap.login()
    data = b"Subject: raw\r\n\r\nA\x00B\r\n"
    reply = s.cmd(b"APPEND " + folder.encode() + b" {%d+}\r\n" % len(data) + data)
    assert reply.status == "BAD"
