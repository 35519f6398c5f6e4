"""PIPELINING (RFC 2920) and CHUNKING/BDAT (RFC 3030) in the outbound client, on the wire.

The scripted peers read the whole pipelined group before answering anything: a
client that waited for a reply between commands would stall until its command
timeout, so these tests fail if the client does not pipeline. A real postwerk
organization (which offers both) receives BDAT from the client byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from postwerk.transport.smtp_client import (
    Destination,
    OutboundClient,
    OutboundMessage,
    SendResult,
    TlsPolicy,
)
from tests.conftest import DOMAIN, RunningServer
from tests.smtpsink import PeerConnection, ScriptedPeer

BODY = b"From: a@origin.test\r\nSubject: hi\r\n\r\n.leading dot\r\nline\r\n..two\r\n"
PIPE_EHLO = ("250-peer.test", "250-PIPELINING", "250-SIZE 100000000", "250 8BITMIME")
CHUNK_EHLO = ("250-peer.test", "250-PIPELINING", "250-CHUNKING", "250 8BITMIME")
CHUNK_ONLY_EHLO = ("250-peer.test", "250-CHUNKING", "250 8BITMIME")

Transaction = Callable[[PeerConnection, bytes], Awaitable[bool]]


@pytest.fixture
async def client() -> AsyncIterator[OutboundClient]:
    c = OutboundClient()
    try:
        yield c
    finally:
        await c.close()


def dest(port: int, **kw: Any) -> Destination:
    # Short timeouts: a client that waits for a reply the peer holds back fails fast.
    kw.setdefault("connect_timeout", 3.0)
    kw.setdefault("command_timeout", 2.0)
    kw.setdefault("data_timeout", 2.0)
    return Destination(hosts=[("peer.test", "127.0.0.1")], port=port, helo_name="out.test", **kw)


def message(*recipients: str, data: bytes = BODY) -> OutboundMessage:
    return OutboundMessage(
        sender="a@origin.test", recipients=tuple((r, {}) for r in recipients), data=data
    )


def outcome(result: SendResult) -> list[tuple[str, int, str]]:
    return [(r.address, r.code, r.status) for r in result.recipients]


async def session(conn: PeerConnection, ehlo: tuple[str, ...], transaction: Transaction) -> None:
    """Greeting, EHLO, then `transaction(conn, first_line)` for each MAIL; RSET and QUIT."""
    await conn.send("220 peer.test ESMTP")
    while True:
        line = await conn.command()
        if not line:
            return
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            await conn.send(*ehlo)
        elif verb == b"MAIL":
            if not await transaction(conn, line):
                return
        elif verb == b"RSET":
            await conn.send("250 2.0.0 Reset")
        elif verb == b"QUIT":
            await conn.send("221 2.0.0 Bye")
            return
        else:
            await conn.send("502 5.5.2 Not implemented")


async def read_group(conn: PeerConnection) -> list[bytes]:
    """Lines after MAIL up to and including DATA or BDAT, before any reply is sent."""
    lines: list[bytes] = []
    while True:
        line = await conn.command()
        assert line, "the client closed mid-group"
        lines.append(line)
        if line.upper() == b"DATA" or line.upper().startswith(b"BDAT"):
            return lines


def bdat_size(line: bytes) -> tuple[int, bool]:
    parts = line.split()
    return int(parts[1]), len(parts) > 2 and parts[2].upper() == b"LAST"


# --- PIPELINING with DATA ------------------------------------------------------------


async def test_pipelined_group_is_sent_before_any_reply(client: OutboundClient) -> None:
    received: list[bytes] = []
    groups: list[list[bytes]] = []

    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        group = await read_group(conn)  # nothing answered yet: the client must not wait
        groups.append([mail, *group])
        rcpts = ["550 5.1.1 Unknown" if b"<no@" in line else "250 2.1.5 OK" for line in group[:-1]]
        await conn.send("250 2.1.0 Sender OK", *rcpts, "354 Go")
        received.append(await conn.read_data())
        await conn.send("250 2.6.0 Queued")
        return True

    async with ScriptedPeer(lambda c: session(c, PIPE_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test", "no@x.test"))
        assert outcome(result) == [("b@x.test", 250, "2.6.0"), ("no@x.test", 550, "5.1.1")]
        assert received == [BODY]
        assert groups[0] == [
            f"MAIL FROM:<a@origin.test> SIZE={len(BODY)}".encode(),
            b"RCPT TO:<b@x.test>",
            b"RCPT TO:<no@x.test>",
            b"DATA",
        ]
        # The connection is reused, and the next transaction is pipelined as well.
        again = await client.send(dest(peer.port), message("c@x.test"))
        assert again.connection_reused and outcome(again) == [("c@x.test", 250, "2.6.0")]
        assert peer.connections == 1 and len(groups) == 2


async def test_pipelined_all_refused_data_refused(client: OutboundClient) -> None:
    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        await read_group(conn)
        await conn.send(
            "250 OK", "550 5.1.1 No", "450 4.2.1 Later", "554 5.5.1 No valid recipients"
        )
        return True

    async with ScriptedPeer(lambda c: session(c, PIPE_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test", "c@x.test"))
        assert outcome(result) == [("b@x.test", 550, "5.1.1"), ("c@x.test", 450, "4.2.1")]
        assert result.connection_error is None
        await client.close()
        # The aborted transaction is reset before the session goes back to the pool.
        assert b"RSET" in peer.transcripts[0]


async def test_pipelined_354_without_recipients_sends_empty_body(client: OutboundClient) -> None:
    bodies: list[bytes] = []

    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        await read_group(conn)
        await conn.send("250 OK", "550 5.1.1 No", "354 Go ahead anyway")
        bodies.append(await conn.read_data())
        await conn.send("554 5.5.1 No valid recipients")
        return True

    async with ScriptedPeer(lambda c: session(c, PIPE_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test"))
        assert outcome(result) == [("b@x.test", 550, "5.1.1")]
        assert bodies == [b""]  # RFC 2920 §3.1: the message itself is never sent
        await client.close()
        assert b"RSET" in peer.transcripts[0]


async def test_pipelined_mail_refused_decides_every_recipient(client: OutboundClient) -> None:
    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        await read_group(conn)
        await conn.send("550 5.7.1 Sender rejected", "503 5.5.1 Need MAIL", "503 5.5.1 Need MAIL")
        return True

    async with ScriptedPeer(lambda c: session(c, PIPE_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test"))
        assert outcome(result) == [("b@x.test", 550, "5.7.1")]
        assert result.recipients[0].permanent


async def test_pipelined_421_after_mail_keeps_refusals(client: OutboundClient) -> None:
    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        await read_group(conn)
        await conn.send("250 OK", "550 5.1.1 No", "421 4.3.2 Shutting down")
        return False

    async with ScriptedPeer(lambda c: session(c, PIPE_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("no@x.test", "b@x.test"))
        assert outcome(result) == [("no@x.test", 550, "5.1.1"), ("b@x.test", 421, "4.3.2")]
        assert result.connection_error is not None and "421" in result.connection_error
        assert client.idle_connections() == 0


async def test_pipelined_connection_lost_after_rcpt_replies(client: OutboundClient) -> None:
    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        await read_group(conn)
        await conn.send("250 OK", "250 OK")
        conn.drop()
        return False

    async with ScriptedPeer(lambda c: session(c, PIPE_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test"))
        [r] = result.recipients
        assert (r.code, r.status, r.permanent, r.delivered, r.remote) == (
            451,
            "4.4.2",
            False,
            False,
            False,
        )
        assert result.connection_error is not None and "lost connection" in result.connection_error


# --- CHUNKING (BDAT) -------------------------------------------------------------------


async def read_chunks(conn: PeerConnection, first: bytes, replies: list[str]) -> bytes:
    """The BDAT chunks starting with the command line `first`; answers each with replies[i]."""
    body = b""
    line = first
    i = 0
    while True:
        size, last = bdat_size(line)
        body += await conn.reader.readexactly(size)
        await conn.send(replies[min(i, len(replies) - 1)])
        i += 1
        if last:
            return body
        line = await conn.command()


async def test_bdat_pipelined_sends_the_message_unstuffed(client: OutboundClient) -> None:
    received: list[bytes] = []
    groups: list[list[bytes]] = []

    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        group = await read_group(conn)
        groups.append([mail, *group])
        await conn.send("250 2.1.0 OK", "250 2.1.5 OK")
        received.append(await read_chunks(conn, group[-1], ["250 2.6.0 Queued"]))
        return True

    async with ScriptedPeer(lambda c: session(c, CHUNK_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test"))
        assert outcome(result) == [("b@x.test", 250, "2.6.0")]
        assert received == [BODY]  # no dot-stuffing, no end marker
        assert groups[0] == [
            b"MAIL FROM:<a@origin.test>",
            b"RCPT TO:<b@x.test>",
            f"BDAT {len(BODY)} LAST".encode(),
        ]


async def test_bdat_without_pipelining_waits_for_each_reply(client: OutboundClient) -> None:
    received: list[bytes] = []

    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        await conn.send("250 OK")
        assert await conn.command() == b"RCPT TO:<b@x.test>"
        await conn.send("250 OK")
        line = await conn.command()
        received.append(await read_chunks(conn, line, ["250 2.6.0 Queued"]))
        return True

    async with ScriptedPeer(lambda c: session(c, CHUNK_ONLY_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test"))
        assert outcome(result) == [("b@x.test", 250, "2.6.0")]
        assert received == [BODY]


async def test_bdat_large_message_in_chunks(client: OutboundClient) -> None:
    data = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    data = data * 2600  # about 2.6 MB: three chunks of at most 1 MiB
    sizes: list[tuple[int, bool]] = []
    received: list[bytes] = []

    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        group = await read_group(conn)
        await conn.send("250 OK", "250 OK")
        body = b""
        line = group[-1]
        while True:
            size, last = bdat_size(line)
            sizes.append((size, last))
            body += await conn.reader.readexactly(size)
            await conn.send("250 2.0.0 Chunk OK" if not last else "250 2.6.0 Queued")
            if last:
                break
            line = await conn.command()
        received.append(body)
        return True

    async with ScriptedPeer(lambda c: session(c, CHUNK_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test", data=data))
        assert outcome(result) == [("b@x.test", 250, "2.6.0")]
        assert received == [data]
        assert [last for _, last in sizes] == [False, False, True]
        assert all(size <= 1 << 20 for size, _ in sizes)


async def test_bdat_refused_chunk_fails_the_message(client: OutboundClient) -> None:
    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        group = await read_group(conn)
        await conn.send("250 OK", "250 OK")
        await read_chunks(conn, group[-1], ["552 5.3.4 Message too big"])
        return True

    async with ScriptedPeer(lambda c: session(c, CHUNK_EHLO, transaction)) as peer:
        result = await client.send(dest(peer.port), message("b@x.test"))
        assert outcome(result) == [("b@x.test", 552, "5.3.4")]
        await client.close()
        assert b"RSET" in peer.transcripts[0]


async def test_pipelining_can_be_turned_off(client: OutboundClient) -> None:
    plain = OutboundClient(pipelining=False, chunking=False)

    async def transaction(conn: PeerConnection, mail: bytes) -> bool:
        await conn.send("250 OK")  # the client waits for this before RCPT
        assert await conn.command() == b"RCPT TO:<b@x.test>"
        await conn.send("250 OK")
        assert await conn.command() == b"DATA"
        await conn.send("354 Go")
        assert await conn.read_data() == BODY
        await conn.send("250 2.6.0 Queued")
        return True

    try:
        async with ScriptedPeer(lambda c: session(c, CHUNK_EHLO, transaction)) as peer:
            result = await plain.send(dest(peer.port), message("b@x.test"))
            assert outcome(result) == [("b@x.test", 250, "2.6.0")]
    finally:
        await plain.close()


# --- against postwerk itself (PIPELINING and CHUNKING offered) ---------------------------


async def test_bdat_to_postwerk(client: OutboundClient, org: RunningServer) -> None:
    user = f"alice@{DOMAIN}"
    body = (
        f"From: a@origin.test\r\nTo: {user}\r\nSubject: bdat\r\n\r\n".encode()
        + b".a line with a leading dot\r\n"
        + b"y" * 70
        + b"\r\n"
    )
    destination = Destination(
        hosts=[("mail.example.test", "127.0.0.1")],
        port=org.smtp_port,
        helo_name="out.test",
        command_timeout=5.0,
        data_timeout=5.0,
    )
    msg = OutboundMessage(sender="a@origin.test", recipients=((user, {}),), data=body)
    result = await client.send(destination, msg)
    assert result.all_delivered, result
    items = await asyncio.to_thread(org.wait_inbox, user, 1)
    assert len(items) == 1
    raw = await asyncio.to_thread(org.read_item, items[0])
    assert raw.endswith(body.split(b"\r\n\r\n", 1)[1])  # BDAT: no dot-stuffing to undo


async def test_plaintext_after_starttls_reply_is_refused(client: OutboundClient) -> None:
    """Bytes sent after 220 to STARTTLS must never be read as if they came over TLS."""

    async def injector(conn: PeerConnection) -> None:
        await conn.send("220 peer.test ESMTP")
        assert (await conn.command()).startswith(b"EHLO")
        await conn.send("250-peer.test", "250 STARTTLS")
        assert await conn.command() == b"STARTTLS"
        await conn.send("220 2.0.0 Ready", "250 2.0.0 injected")
        await conn.reader.read(1024)

    async with ScriptedPeer(injector) as peer:
        result = await client.send(dest(peer.port, tls=TlsPolicy.REQUIRED), message("b@x.test"))
        [r] = result.recipients
        assert (r.code, r.status, r.delivered) == (451, "4.7.5", False)
        assert result.connection_error is not None
        assert "after its STARTTLS reply" in result.connection_error
