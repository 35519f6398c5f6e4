"""The outbound SMTP client (transport/smtp_client.py) against real peers over real sockets.

Peers: aiosmtpd sinks on 127.0.0.x (tests/smtpsink.py), scripted raw peers for
misbehaviour, and a postwerk organization (port 25 and the 587 smart host).
TLS uses the session's trustme CA.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
import trustme

from postwerk.transport.smtp_client import (
    Destination,
    OutboundClient,
    OutboundMessage,
    SendResult,
    TlsPolicy,
)
from tests.conftest import DOMAIN, PASSWORD, RunningServer
from tests.smtpsink import PeerConnection, ScriptedPeer, SmtpSink, simple_session

MX = "mx.sink.test"
BODY = (
    b"From: a@origin.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\n"
    b"line one\r\n.leading dot\r\nlast\r\n"
)


@pytest.fixture
async def client() -> AsyncIterator[OutboundClient]:
    c = OutboundClient()
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture(scope="module")
def sink_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert(MX, "127.0.0.2")


@pytest.fixture
def server_tls(sink_cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sink_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def trust(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink("127.0.0.2") as s:
        yield s


@pytest.fixture
def tls_sink(server_tls: ssl.SSLContext) -> Iterator[SmtpSink]:
    with SmtpSink("127.0.0.2", tls_context=server_tls) as s:
        yield s


def dest(port: int, hosts: list[tuple[str, str]] | None = None, **kw: Any) -> Destination:
    kw.setdefault("connect_timeout", 5.0)
    kw.setdefault("command_timeout", 5.0)
    kw.setdefault("data_timeout", 5.0)
    return Destination(
        hosts=hosts or [(MX, "127.0.0.2")], port=port, helo_name="out.postwerk.test", **kw
    )


def message(
    *recipients: str | tuple[str, Mapping[str, str]],
    sender: str = "a@origin.test",
    data: bytes = BODY,
    **kw: Any,
) -> OutboundMessage:
    rcpts = tuple((r, {}) if isinstance(r, str) else r for r in recipients)
    return OutboundMessage(sender=sender, recipients=rcpts, data=data, **kw)


def codes(result: SendResult) -> list[tuple[str, int, str, bool, bool]]:
    return [(r.address, r.code, r.status, r.permanent, r.delivered) for r in result.recipients]


# --- delivery and TLS ----------------------------------------------------------


async def test_plain_delivery(client: OutboundClient, sink: SmtpSink) -> None:
    result = await client.send(dest(sink.port), message("b@dest.test", "c@dest.test"))
    assert codes(result) == [
        ("b@dest.test", 250, "2.0.0", False, True),
        ("c@dest.test", 250, "2.0.0", False, True),
    ]
    assert result.recipients[0].text == "Queued as sink"
    assert result.recipients[0].reply == "250 2.0.0 Queued as sink"
    assert (result.remote_host, result.remote_ip, result.tls) == (MX, "127.0.0.2", None)
    assert result.connection_error is None and result.all_delivered
    [got] = sink.messages
    assert got.mail_from == "a@origin.test"
    assert got.rcpt_tos == ["b@dest.test", "c@dest.test"]
    assert got.data == BODY  # dot-stuffed on the wire exactly once
    assert not got.tls
    assert got.mail_args == f"FROM:<a@origin.test> SIZE={len(BODY)}"


async def test_null_sender(client: OutboundClient, sink: SmtpSink) -> None:
    result = await client.send(dest(sink.port), message("b@dest.test", sender=""))
    assert result.all_delivered
    assert sink.messages[0].mail_args.startswith("FROM:<> ")


async def test_starttls_opportunistic(client: OutboundClient, tls_sink: SmtpSink) -> None:
    result = await client.send(dest(tls_sink.port), message("b@dest.test"))
    assert result.all_delivered
    assert result.tls is not None and result.tls.startswith("version=TLS1_")
    assert not result.tls_verified  # verification is off by default, as in Exchange
    assert tls_sink.messages[0].tls


async def test_tls_policy_none_stays_plaintext(client: OutboundClient, tls_sink: SmtpSink) -> None:
    result = await client.send(dest(tls_sink.port, tls=TlsPolicy.NONE), message("b@dest.test"))
    assert result.all_delivered and result.tls is None
    assert not tls_sink.messages[0].tls


async def test_tls_required_but_not_offered(client: OutboundClient, sink: SmtpSink) -> None:
    result = await client.send(
        dest(sink.port, tls=TlsPolicy.REQUIRED), message("b@dest.test", "c@dest.test")
    )
    assert [(r.code, r.status, r.permanent, r.delivered) for r in result.recipients] == [
        (451, "4.7.4", False, False)
    ] * 2
    assert not result.recipients[0].remote
    assert result.connection_error is not None
    assert "TLS is required, but was not offered" in result.connection_error
    assert sink.messages == [] and sink.handler.mail_commands == 0


async def test_tls_required_verified_with_the_right_ca(
    client: OutboundClient, tls_sink: SmtpSink, trust: ssl.SSLContext
) -> None:
    d = dest(tls_sink.port, tls=TlsPolicy.REQUIRED, verify_certificates=True, ssl_context=trust)
    result = await client.send(d, message("b@dest.test"))
    assert result.all_delivered
    assert result.tls is not None and result.tls_verified
    assert tls_sink.messages[0].tls


async def test_tls_required_wrong_hostname_fails_before_mail(
    client: OutboundClient, tls_sink: SmtpSink, trust: ssl.SSLContext
) -> None:
    d = dest(
        tls_sink.port,
        hosts=[("wrong.sink.test", "127.0.0.2")],
        tls=TlsPolicy.REQUIRED,
        verify_certificates=True,
        ssl_context=trust,
    )
    result = await client.send(d, message("b@dest.test"))
    [r] = result.recipients
    assert (r.code, r.status, r.permanent, r.delivered) == (451, "4.7.5", False, False)
    assert result.connection_error is not None
    assert "handshake" in result.connection_error
    assert "certificate" in result.connection_error.lower()
    assert tls_sink.handler.mail_commands == 0


async def test_tls_required_untrusted_ca_fails(client: OutboundClient, tls_sink: SmtpSink) -> None:
    # The system trust store does not know the test CA.
    d = dest(tls_sink.port, tls=TlsPolicy.REQUIRED, verify_certificates=True)
    result = await client.send(d, message("b@dest.test"))
    assert result.recipients[0].status == "4.7.5"
    assert tls_sink.handler.mail_commands == 0


async def test_opportunistic_handshake_failure_retries_in_plaintext(
    client: OutboundClient, tls_sink: SmtpSink, trust: ssl.SSLContext
) -> None:
    d = dest(
        tls_sink.port,
        hosts=[("wrong.sink.test", "127.0.0.2")],
        verify_certificates=True,
        ssl_context=trust,
    )
    result = await client.send(d, message("b@dest.test"))
    assert result.all_delivered
    assert result.tls is None and not result.tls_verified
    assert tls_sink.handler.connections == 2  # the failed handshake, then plaintext
    assert not tls_sink.messages[0].tls


# --- AUTH to a smart host -------------------------------------------------------


async def test_smart_host_auth(client: OutboundClient, server_tls: ssl.SSLContext) -> None:
    with SmtpSink("127.0.0.2", tls_context=server_tls, auth_users={"relay": "s3cret"}) as s:
        result = await client.send(dest(s.port, auth=("relay", "s3cret")), message("b@dest.test"))
        assert result.all_delivered
        assert s.messages[0].auth_user == "relay" and s.messages[0].tls

        bad = await client.send(dest(s.port, auth=("relay", "wrong")), message("b@dest.test"))
        [r] = bad.recipients
        assert (r.code // 100, r.status[:1], r.permanent, r.delivered) == (4, "4", False, False)
        assert bad.connection_error is not None and "authentication" in bad.connection_error
        assert len(s.messages) == 1


async def test_auth_refused_without_tls_unless_allowed(client: OutboundClient) -> None:
    with SmtpSink("127.0.0.2", auth_users={"relay": "s3cret"}, auth_require_tls=False) as s:
        refused = await client.send(dest(s.port, auth=("relay", "s3cret")), message("b@x.test"))
        assert refused.recipients[0].status == "4.7.10"
        assert s.handler.mail_commands == 0

        allowed = await client.send(
            dest(s.port, auth=("relay", "s3cret"), allow_plaintext_auth=True),
            message("b@x.test"),
        )
        assert allowed.all_delivered
        assert s.messages[0].auth_user == "relay" and not s.messages[0].tls


async def test_auth_session_not_reused_for_other_credentials(
    client: OutboundClient, server_tls: ssl.SSLContext
) -> None:
    users = {"one": "pw1", "two": "pw2"}
    with SmtpSink("127.0.0.2", tls_context=server_tls, auth_users=users) as s:
        await client.send(dest(s.port, auth=("one", "pw1")), message("b@x.test"))
        await client.send(dest(s.port, auth=("two", "pw2")), message("b@x.test"))
        await client.send(dest(s.port, auth=("one", "pw1")), message("b@x.test"))
        assert [m.auth_user for m in s.messages] == ["one", "two", "one"]
        assert s.handler.connections == 2


# --- replies per recipient, DATA, SIZE, SMTPUTF8, DSN, 8BITMIME -----------------


async def test_mixed_rcpt_results(client: OutboundClient, sink: SmtpSink) -> None:
    sink.handler.rcpt_replies = {
        "gone@dest.test": "550 5.1.1 No such user",
        "busy@dest.test": "450-4.2.1 Mailbox busy\r\n450 4.2.1 Try later",
        "old@dest.test": "553 Not here",  # no enhanced status: 5.0.0 synthesized
    }
    result = await client.send(
        dest(sink.port),
        message("ok@dest.test", "gone@dest.test", "busy@dest.test", "old@dest.test"),
    )
    assert codes(result) == [
        ("ok@dest.test", 250, "2.0.0", False, True),
        ("gone@dest.test", 550, "5.1.1", True, False),
        ("busy@dest.test", 450, "4.2.1", False, False),
        ("old@dest.test", 553, "5.0.0", True, False),
    ]
    assert result.recipients[1].text == "No such user" and result.recipients[1].remote
    assert result.connection_error is None
    assert sink.messages[0].rcpt_tos == ["ok@dest.test"]


async def test_all_rcpts_rejected_sends_no_data(client: OutboundClient, sink: SmtpSink) -> None:
    sink.handler.rcpt_replies = {"x@dest.test": "550 5.1.1 No", "y@dest.test": "451 4.3.0 Later"}
    result = await client.send(dest(sink.port), message("x@dest.test", "y@dest.test"))
    assert [(r.code, r.permanent) for r in result.recipients] == [(550, True), (451, False)]
    assert sink.messages == []
    assert sink.handler.rset_commands == 1  # the aborted transaction is reset for reuse
    again = await client.send(dest(sink.port), message("z@dest.test"))
    assert again.all_delivered and again.connection_reused
    assert sink.handler.connections == 1


async def test_mail_from_rejected(client: OutboundClient, sink: SmtpSink) -> None:
    sink.handler.mail_reply = "553 5.7.1 Sender rejected"
    result = await client.send(dest(sink.port), message("x@dest.test", "y@dest.test"))
    assert codes(result) == [
        ("x@dest.test", 553, "5.7.1", True, False),
        ("y@dest.test", 553, "5.7.1", True, False),
    ]


@pytest.mark.parametrize(
    "reply,code,status,permanent",
    [
        ("451 4.3.0 Try again later", 451, "4.3.0", False),
        ("554 5.6.0 Content rejected", 554, "5.6.0", True),
        ("452 Insufficient storage", 452, "4.0.0", False),
    ],
)
async def test_data_reply_applies_to_accepted_recipients(
    client: OutboundClient, sink: SmtpSink, reply: str, code: int, status: str, permanent: bool
) -> None:
    sink.handler.rcpt_replies = {"no@dest.test": "550 5.1.1 Unknown"}
    sink.handler.data_replies = [reply]
    result = await client.send(
        dest(sink.port), message("a@dest.test", "no@dest.test", "b@dest.test")
    )
    assert codes(result) == [
        ("a@dest.test", code, status, permanent, False),
        ("no@dest.test", 550, "5.1.1", True, False),
        ("b@dest.test", code, status, permanent, False),
    ]
    assert result.connection_error is None
    # The session survives a refused message.
    again = await client.send(dest(sink.port), message("c@dest.test"))
    assert again.all_delivered and again.connection_reused


async def test_size_limit_fails_permanently_without_sending(client: OutboundClient) -> None:
    with SmtpSink("127.0.0.2", size_limit=1000) as s:
        big = BODY + b"x" * 2000 + b"\r\n"
        result = await client.send(dest(s.port), message("a@dest.test", "b@dest.test", data=big))
        assert [(r.code, r.status, r.permanent, r.remote) for r in result.recipients] == [
            (552, "5.3.4", True, False)
        ] * 2
        assert s.handler.mail_commands == 0
        small = await client.send(dest(s.port), message("a@dest.test"))
        assert small.all_delivered and small.connection_reused
        assert f"SIZE={len(BODY)}" in s.messages[0].mail_args


async def test_smtputf8_needed_but_not_offered(client: OutboundClient) -> None:
    with SmtpSink("127.0.0.2", smtputf8=False) as s:
        result = await client.send(dest(s.port), message("b@dest.test", needs_smtputf8=True))
        [r] = result.recipients
        assert (r.code, r.status, r.permanent, r.remote) == (554, "5.6.7", True, False)
        # A non-ASCII address needs it even when the flag is not set.
        result = await client.send(dest(s.port), message("jörg@dest.test"))
        assert result.recipients[0].status == "5.6.7"
        assert s.handler.mail_commands == 0


async def test_smtputf8_offered(client: OutboundClient, sink: SmtpSink) -> None:
    data = "Subject: grüße\r\n\r\nhé\r\n".encode()
    result = await client.send(
        dest(sink.port),
        message("jörg@dest.test", sender="zoë@origin.test", data=data, needs_smtputf8=True),
    )
    assert result.all_delivered
    [got] = sink.messages
    assert got.rcpt_tos == ["jörg@dest.test"] and got.mail_from == "zoë@origin.test"
    assert "SMTPUTF8" in got.mail_args.split()
    assert got.data == data


async def test_8bitmime_sent_when_offered_and_still_sent_when_not(
    client: OutboundClient,
) -> None:
    data = "Subject: x\r\n\r\ncaf\u00e9\r\n".encode()
    with SmtpSink("127.0.0.2") as s:
        await client.send(dest(s.port), message("b@dest.test", data=data, eight_bit=True))
        await client.send(dest(s.port), message("b@dest.test"))
        assert "BODY=8BITMIME" in s.messages[0].mail_args.split()
        assert "BODY=8BITMIME" not in s.messages[1].mail_args  # 7-bit: no BODY
    with SmtpSink("127.0.0.2", eightbitmime=False) as s:
        result = await client.send(dest(s.port), message("b@dest.test", data=data, eight_bit=True))
        assert result.all_delivered
        assert "BODY" not in s.messages[0].mail_args
        assert s.messages[0].data == data


DSN_RCPT = {"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;Orig+1=x@origin.test"}


async def test_dsn_params_forwarded_when_advertised(client: OutboundClient) -> None:
    with SmtpSink("127.0.0.2", dsn=True) as s:
        msg = message(
            ("b@dest.test", DSN_RCPT),
            ("c@dest.test", {"notify": "never"}),
            mail_params={"RET": "HDRS", "ENVID": "id 1+2", "BODY": "8BITMIME"},
        )
        result = await client.send(dest(s.port), msg)
        assert result.all_delivered
        [got] = s.messages
        assert got.mail_args.split()[1:] == [f"SIZE={len(BODY)}", "RET=HDRS", "ENVID=id+201+2B2"]
        assert got.rcpt_options == {
            "b@dest.test": ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;Orig+2B1+3Dx@origin.test"],
            "c@dest.test": ["NOTIFY=NEVER"],
        }


async def test_dsn_params_dropped_when_not_advertised(
    client: OutboundClient, sink: SmtpSink
) -> None:
    msg = message(("b@dest.test", DSN_RCPT), mail_params={"RET": "FULL", "ENVID": "e1"})
    result = await client.send(dest(sink.port), msg)
    assert result.all_delivered  # aiosmtpd would have answered 555 to an unknown parameter
    [got] = sink.messages
    assert got.mail_args == f"FROM:<a@origin.test> SIZE={len(BODY)}"
    assert got.rcpt_options == {"b@dest.test": []}


def test_invalid_dsn_values_are_rejected_early() -> None:
    with pytest.raises(ValueError):
        message(("b@dest.test", {"NOTIFY": "NEVER ORCPT=x"}))
    with pytest.raises(ValueError):
        message("b@dest.test", mail_params={"RET": "FULL\r\nRSET"})


# --- reuse, hosts, misbehaving peers -----------------------------------------------


async def test_connection_reuse(client: OutboundClient, sink: SmtpSink) -> None:
    first = await client.send(dest(sink.port), message("b@dest.test"))
    second = await client.send(dest(sink.port), message("c@dest.test"))
    assert not first.connection_reused and second.connection_reused
    assert sink.handler.connections == 1
    assert [m.connection for m in sink.messages] == [1, 1]
    assert sink.handler.rset_commands == 0  # a completed transaction needs no RSET
    assert client.idle_connections() == 1
    await client.close()
    assert sink.handler.wait_idle()  # QUIT on close


async def test_reuse_limits_and_idle_timeout(sink: SmtpSink) -> None:
    c = OutboundClient(max_messages_per_connection=2, idle_timeout=0.3)
    try:
        for _ in range(3):
            assert (await c.send(dest(sink.port), message("b@dest.test"))).all_delivered
        assert [m.connection for m in sink.messages] == [1, 1, 2]
        assert c.idle_connections() == 1
        await asyncio.sleep(0.6)
        assert c.idle_connections() == 0
        assert sink.handler.wait_idle()
    finally:
        await c.close()


async def test_first_address_refuses_second_used(client: OutboundClient, sink: SmtpSink) -> None:
    # Nothing listens on 127.0.0.3 at the sink's port: connection refused.
    hosts = [("mx1.sink.test", "127.0.0.3"), ("mx2.sink.test", "127.0.0.2")]
    result = await client.send(dest(sink.port, hosts=hosts), message("b@dest.test"))
    assert result.all_delivered
    assert (result.remote_host, result.remote_ip) == ("mx2.sink.test", "127.0.0.2")
    assert result.connection_error is None


async def test_no_host_answers(client: OutboundClient, sink: SmtpSink) -> None:
    hosts = [("mx1.sink.test", "127.0.0.3"), ("mx2.sink.test", "127.0.0.4")]
    result = await client.send(dest(sink.port, hosts=hosts), message("b@x.test", "c@x.test"))
    assert [(r.code, r.status, r.permanent, r.remote) for r in result.recipients] == [
        (451, "4.4.1", False, False)
    ] * 2
    assert result.remote_host is None
    assert result.connection_error is not None
    assert "127.0.0.3" in result.connection_error and "127.0.0.4" in result.connection_error


async def test_421_greeting_tries_next_host(client: OutboundClient, sink: SmtpSink) -> None:
    async def greet_421(conn: PeerConnection) -> None:
        await simple_session(conn, greeting="421 4.3.2 Too busy, try later")

    async with ScriptedPeer(greet_421, "127.0.0.4", sink.port) as peer:
        alone = await client.send(
            dest(sink.port, hosts=[("busy.test", "127.0.0.4")]), message("b@x.test")
        )
        [r] = alone.recipients
        assert (r.code, r.status, r.permanent, r.text) == (
            421,
            "4.3.2",
            False,
            "Too busy, try later",
        )
        assert alone.connection_error is not None and "refused to talk" in alone.connection_error

        hosts = [("busy.test", "127.0.0.4"), (MX, "127.0.0.2")]
        result = await client.send(dest(sink.port, hosts=hosts), message("b@x.test"))
        assert result.all_delivered and result.remote_ip == "127.0.0.2"
        assert peer.connections == 2


async def test_5xx_greeting_is_transient(client: OutboundClient) -> None:
    async def greet_554(conn: PeerConnection) -> None:
        await simple_session(conn, greeting="554 5.7.1 No SMTP service here")

    async with ScriptedPeer(greet_554, "127.0.0.4") as peer:
        result = await client.send(
            dest(peer.port, hosts=[("x.test", "127.0.0.4")]), message("b@x.test")
        )
        [r] = result.recipients
        assert (r.code, r.status, r.permanent) == (451, "4.7.1", False)


async def test_ehlo_refused_falls_back_to_helo(client: OutboundClient) -> None:
    async def old_server(conn: PeerConnection) -> None:
        await simple_session(conn, ehlo=("500 5.5.1 Command unrecognized",))

    async with ScriptedPeer(old_server) as peer:
        result = await client.send(
            dest(peer.port, hosts=[("old.test", "127.0.0.1")]),
            message(("b@x.test", DSN_RCPT), data=BODY, eight_bit=True),
        )
        assert result.all_delivered
        commands = peer.transcripts[0]
        assert commands[0].startswith(b"EHLO ") and commands[1] == b"HELO out.postwerk.test"
        # No extensions after HELO: no SIZE, BODY or DSN parameters.
        assert commands[2] == b"MAIL FROM:<a@origin.test>"
        assert commands[3] == b"RCPT TO:<b@x.test>"


async def test_disconnect_mid_data(client: OutboundClient) -> None:
    async def drop(conn: PeerConnection) -> None:
        await simple_session(conn, drop_in_data=True)

    async with ScriptedPeer(drop) as peer:
        result = await client.send(
            dest(peer.port, hosts=[("drop.test", "127.0.0.1")]), message("b@x.test", "c@x.test")
        )
        assert [
            (r.code, r.status, r.permanent, r.delivered, r.remote) for r in result.recipients
        ] == [(451, "4.4.2", False, False, False)] * 2
        assert result.connection_error is not None
        assert "lost connection" in result.connection_error
        assert result.remote_ip == "127.0.0.1"
        assert client.idle_connections() == 0


async def test_no_reply_to_end_of_data_times_out(client: OutboundClient) -> None:
    async def silent(conn: PeerConnection, body: bytes) -> bool:
        await asyncio.sleep(30)
        return False

    async def script(conn: PeerConnection) -> None:
        await simple_session(conn, after_data=silent)

    async with ScriptedPeer(script) as peer:
        d = dest(peer.port, hosts=[("slow.test", "127.0.0.1")], data_timeout=0.5)
        result = await client.send(d, message("b@x.test"))
        [r] = result.recipients
        assert (r.code, r.status, r.permanent, r.delivered) == (451, "4.4.2", False, False)
        assert result.connection_error is not None and "timed out" in result.connection_error


async def test_421_to_rcpt_closes_and_defers_all(client: OutboundClient, sink: SmtpSink) -> None:
    sink.handler.rcpt_replies = {"b@x.test": "421 4.3.2 Shutting down"}
    result = await client.send(dest(sink.port), message("a@x.test", "b@x.test", "c@x.test"))
    assert [(r.code, r.status, r.permanent, r.delivered) for r in result.recipients] == [
        (421, "4.3.2", False, False)
    ] * 3
    assert result.connection_error is not None
    assert sink.messages == [] and client.idle_connections() == 0


async def test_idle_connection_closed_by_peer_is_replaced(client: OutboundClient) -> None:
    # The peer hangs up on the second MAIL: the race of an idle timeout. The message
    # goes out on a fresh connection instead of failing.
    async def one_message(conn: PeerConnection) -> None:
        async def then_hang_up(c: PeerConnection, body: bytes) -> bool:
            await c.send("250 2.0.0 OK")
            await c.command()  # the next MAIL
            c.drop()
            return False

        await simple_session(conn, after_data=then_hang_up)

    async with ScriptedPeer(one_message) as peer:
        d = dest(peer.port, hosts=[("peer.test", "127.0.0.1")])
        first = await client.send(d, message("b@x.test"))
        second = await client.send(d, message("c@x.test"))
        assert first.all_delivered and second.all_delivered
        assert not second.connection_reused
        assert peer.connections == 2


async def test_concurrency_limit_per_destination(sink: SmtpSink) -> None:
    sink.handler.data_delay = 0.3
    c = OutboundClient(max_connections_per_destination=2)
    try:
        results = await asyncio.gather(
            *(c.send(dest(sink.port), message(f"r{i}@x.test")) for i in range(5))
        )
        assert all(r.all_delivered for r in results)
        assert sink.handler.max_in_data == 2
        assert sink.handler.max_active == 2 and sink.handler.connections == 2
        assert sum(r.connection_reused for r in results) == 3
        # Another destination key is not held back by the first one's limit.
        other = dest(sink.port, next_hop="smtp:other")
        more = await asyncio.gather(
            c.send(dest(sink.port), message("x@x.test")),
            c.send(other, message("y@x.test")),
            c.send(other, message("z@x.test")),
        )
        assert all(r.all_delivered for r in more)
    finally:
        await c.close()


# --- a postwerk organization as the peer -----------------------------------------


def org_message(*recipients: str, sender: str = "someone@remote.test") -> OutboundMessage:
    data = (
        f"From: {sender}\r\nTo: {recipients[0]}\r\nSubject: via client\r\n"
        "Message-ID: <client-test@remote.test>\r\n\r\nhello\r\n"
    ).encode()
    return message(*recipients, sender=sender, data=data)


async def test_postwerk_peer_port_25(client: OutboundClient, org: RunningServer) -> None:
    d = dest(
        org.smtp_port,
        hosts=[("mail.example.test", "127.0.0.1")],
        tls=TlsPolicy.REQUIRED,
        verify_certificates=True,
        ssl_context=org.client_context(),
    )
    msg = OutboundMessage(
        sender="someone@remote.test",
        recipients=(
            (f"alice@{DOMAIN}", {"NOTIFY": "FAILURE"}),
            (f"nobody@{DOMAIN}", {}),
        ),
        data=org_message(f"alice@{DOMAIN}").data,
        mail_params={"ENVID": "env-1", "RET": "HDRS"},
    )
    result = await client.send(d, msg)
    alice, nobody = result.recipients
    assert alice.delivered and alice.code == 250 and alice.status.startswith("2.")
    assert (nobody.code, nobody.status, nobody.permanent) == (550, "5.1.1", True)
    assert result.tls_verified and result.tls is not None
    items = await asyncio.to_thread(org.wait_inbox, f"alice@{DOMAIN}", 1)
    assert len(items) == 1
    raw = await asyncio.to_thread(org.read_item, items[0])
    assert b"Subject: via client" in raw and b"with ESMTPS" in raw


async def test_postwerk_submission_as_smart_host(
    client: OutboundClient, org: RunningServer
) -> None:
    user = f"alice@{DOMAIN}"
    d = dest(
        org.submission_port,
        hosts=[("mail.example.test", "127.0.0.1")],
        tls=TlsPolicy.REQUIRED,
        verify_certificates=True,
        ssl_context=org.client_context(),
        auth=(user, PASSWORD),
    )
    result = await client.send(d, org_message(f"bob@{DOMAIN}", sender=user))
    assert result.all_delivered, result
    items = await asyncio.to_thread(org.wait_inbox, f"bob@{DOMAIN}", 1)
    assert len(items) == 1
    wrong = await client.send(
        dest(
            org.submission_port,
            hosts=[("mail.example.test", "127.0.0.1")],
            tls=TlsPolicy.REQUIRED,
            ssl_context=org.client_context(),
            auth=(user, "not the password"),
        ),
        org_message(f"bob@{DOMAIN}", sender=user),
    )
    [r] = wrong.recipients
    assert not r.delivered and not r.permanent and r.code // 100 == 4


async def test_421_to_data_defers_accepted_recipients(
    client: OutboundClient, sink: SmtpSink
) -> None:
    sink.handler.rcpt_replies = {"no@x.test": "550 5.1.1 Unknown"}
    sink.handler.data_replies = ["421 4.3.2 Going down"]
    result = await client.send(dest(sink.port), message("a@x.test", "no@x.test"))
    assert codes(result) == [
        ("a@x.test", 421, "4.3.2", False, False),
        ("no@x.test", 550, "5.1.1", True, False),
    ]
    assert result.connection_error is not None and client.idle_connections() == 0


def test_destination_validation() -> None:
    with pytest.raises(ValueError):
        Destination(hosts=[], helo_name="me.test")
    with pytest.raises(ValueError):
        Destination(hosts=[("a", "127.0.0.1")], helo_name="me.test\r\nRSET")
    with pytest.raises(ValueError):
        message("b@x.test\r\nRCPT TO:<c@x.test>")
