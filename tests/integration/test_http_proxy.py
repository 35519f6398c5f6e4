"""The Client Access HTTP proxy (frontend/http_proxy.py) over real sockets and TLS.

Two "Mailbox servers" (back-end ASGI apps on 127.0.0.2 and 127.0.0.3, HTTPS with
certificates from the test CA, served by uvicorn) and the proxy on 127.0.0.1
run in one event loop in a thread; httpx and curl talk to the proxy over TLS.
Each back end answers with its name, the request as it saw it, and the special
behaviours below (uploads counted, downloads generated, long polls, drips), so
a test can tell where a request went and what arrived there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from postwerk.frontend.http_listener import HttpProxyListener
from postwerk.frontend.http_proxy import (
    HttpProxy,
    MailboxUpstreams,
    anchor_address,
    basic_credentials,
    end_to_end,
    has_dot_segment,
    service_prefix,
)
from postwerk.frontend.routing import MailboxRoute, RemoteRoute, Unavailable
from postwerk.store.records import Recipient, RecipientKind

T = TypeVar("T")

DOMAIN = "example.test"
PASSWORD = "correct horse battery staple"
ALICE = f"alice@{DOMAIN}"  # on MBX1
BOB = f"bob@{DOMAIN}"  # on MBX2
CAROL = f"carol@{DOMAIN}"  # on a server where nothing listens
DAVE = f"dave@{DOMAIN}"  # on a back end a test starts and stops
EVE = f"eve@{DOMAIN}"  # MBX1's address with MBX2's pin: a man in the middle
LOOPY = f"loopy@{DOMAIN}"  # "placed" on the proxy itself
MOVING = f"moving@{DOMAIN}"  # its database being moved: Unavailable
TEAM = f"team@{DOMAIN}"  # a group, not a mailbox

BLOCK = bytes(range(256)) * 256  # 64 KiB of the download pattern
MB = 1024 * 1024

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="apt install curl")


# ---------------------------------------------------------------- the back ends


@dataclass
class Backend:
    """A Mailbox server's back-end HTTP service, as far as the proxy can tell."""

    name: str
    host: str
    cert: trustme.LeafCert
    listener: HttpProxyListener | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    first_chunk: dict[str, threading.Event] = field(default_factory=dict)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # long polls whose client went away

    @property
    def pin(self) -> str:
        return _pin(self.cert)

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.bound_port

    def route(self) -> RemoteRoute:
        return RemoteRoute(self.name, self.host, self.port, self.pin)

    def tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx

    def serve(self, port: int) -> HttpProxyListener:
        # Stopped at once, as a crash would: a pooled connection from the proxy
        # would otherwise hold the stop for the graceful period.
        return HttpProxyListener(self.app(), self.host, port, self.tls(), graceful_stop=0)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            path = request.url.path.lower()
            token = request.query_params.get("token", "")
            self.seen.append({"path": request.url.path, "token": token})
            if path == "/ews/upload":
                return await self._upload(request, token)
            if path == "/ews/download":
                return self._download(request)
            if path == "/mapi/longpoll":
                return await self._long_poll(request, token)
            if path == "/microsoft-server-activesync/drip":
                return self._drip(request)
            if path == "/microsoft-server-activesync/gate":
                return self._gate(token)
            if path == "/owa/hop":
                return self._hop_headers()
            if path == "/ews/broken":
                return self._broken(request)
            return self._echo(request)

        methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "RPC_IN_DATA"]
        return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])

    def _echo(self, request: Request) -> Response:
        scope = request.scope
        return JSONResponse(
            {
                "backend": self.name,
                "method": request.method,
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]
                ],
            }
        )

    async def _upload(self, request: Request, token: str) -> Response:
        count, digest = 0, hashlib.sha256()
        try:
            async for chunk in request.stream():
                if chunk and count == 0 and token in self.first_chunk:
                    self.first_chunk[token].set()
                count += len(chunk)
                digest.update(chunk)
        except ClientDisconnect:
            self.gone.add(token)
            return Response(status_code=499)
        return JSONResponse({"backend": self.name, "bytes": count, "sha256": digest.hexdigest()})

    def _download(self, request: Request) -> Response:
        size = int(request.query_params["size"])

        async def body() -> AsyncIterator[bytes]:
            left = size
            while left > 0:
                piece = BLOCK if left >= len(BLOCK) else BLOCK[:left]
                left -= len(piece)
                yield piece

        headers = {} if "chunked" in request.query_params else {"content-length": str(size)}
        return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)

    def _broken(self, request: Request) -> Response:
        """A download whose back end fails after the first 64 KiB of ten."""

        async def body() -> AsyncIterator[bytes]:
            yield BLOCK
            await asyncio.sleep(0.05)
            raise RuntimeError("the disk went away")

        chunked = "chunked" in request.query_params
        length = {} if chunked else {"content-length": str(10 * len(BLOCK))}
        return StreamingResponse(body(), headers=length)

    async def _long_poll(self, request: Request, token: str) -> Response:
        deadline = time.monotonic() + float(request.query_params["seconds"])
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                self.gone.add(token)
                return Response(status_code=499)
            await asyncio.sleep(0.05)
        return JSONResponse({"backend": self.name, "changes": ["Inbox"]})

    def _drip(self, request: Request) -> Response:
        count = int(request.query_params.get("count", "5"))
        interval = float(request.query_params.get("interval", "0.4"))

        async def body() -> AsyncIterator[bytes]:
            for i in range(count):
                if i:
                    await asyncio.sleep(interval)
                yield f"chunk {i}\n".encode()

        return StreamingResponse(body(), media_type="text/plain")

    def _gate(self, token: str) -> Response:
        gate = self.gates.setdefault(token, threading.Event())

        async def body() -> AsyncIterator[bytes]:
            yield b"first\n"
            deadline = time.monotonic() + 10
            while not gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            yield b"last\n" if gate.is_set() else b"timeout\n"

        return StreamingResponse(body(), media_type="text/plain")

    def _hop_headers(self) -> Response:
        response = Response(b"hop\n", media_type="text/plain")
        for name, value in [
            ("connection", "x-resp-hop"),
            ("x-resp-hop", "1"),
            ("keep-alive", "timeout=99"),
            ("proxy-authenticate", 'Basic realm="inner"'),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("x-beserver", "MBX1.corp.example.test"),
            ("x-calculatedbetarget", "mbx1.corp.example.test"),
            ("server", "backend-secret/1.0"),
            ("x-kept", "yes"),
        ]:
            response.headers.append(name, value)
        return response


# ---------------------------------------------------------------- the directory and the stack


RECIPIENTS = {
    addr: Recipient(i, RecipientKind.MAILBOX, addr, addr.split("@")[0].title())
    for i, addr in enumerate([ALICE, BOB, CAROL, DAVE, EVE, LOOPY, MOVING], start=1)
}
RECIPIENTS[TEAM] = Recipient(99, RecipientKind.GROUP, TEAM, "Team")


async def authenticate(login: str, password: str) -> Recipient | None:
    recipient = RECIPIENTS.get(login.lower())
    if recipient is None or recipient.kind != RecipientKind.MAILBOX or password != PASSWORD:
        return None
    return recipient


async def find(address: str) -> Recipient | None:
    return RECIPIENTS.get(address.lower())


@dataclass
class Placement:
    """The MailboxLocator the proxy's `MailboxUpstreams` asks: a route per address."""

    routes: dict[str, MailboxRoute] = field(default_factory=dict)

    async def locate(self, mailbox: Recipient, protocol: str) -> MailboxRoute:
        assert protocol == "http"
        return self.routes.get(mailbox.primary_address, Unavailable("not placed"))


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    ca: trustme.CA
    ca_pem: Path
    loop: asyncio.AbstractEventLoop
    backends: dict[str, Backend]
    placement: Placement
    proxy: HttpProxy
    https: HttpProxyListener
    http: HttpProxyListener

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.https.bound_port}{path}"

    def client(self, **kwargs: Any) -> httpx.Client:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return httpx.Client(verify=ctx, timeout=kwargs.pop("timeout", 30), **kwargs)

    def curl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["curl", "-sS", "--cacert", str(self.ca_pem), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def new_loop() -> asyncio.AbstractEventLoop:
    try:  # the server's own loop when installed (cli/main.py)
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


@pytest.fixture(scope="module")
def stack(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("http-proxy")
    ca_pem = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    backends = {
        name: Backend(name, host, ca.issue_cert(host))
        for name, host in (("MBX1", "127.0.0.2"), ("MBX2", "127.0.0.3"))
    }
    placement = Placement()
    proxy = HttpProxy(authenticate, MailboxUpstreams(find, placement), realm="mail.example.test")
    proxy_cert = ca.issue_cert("127.0.0.1", "localhost")
    proxy_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    proxy_cert.configure_cert(proxy_tls)
    https = HttpProxyListener(proxy, "127.0.0.1", 0, proxy_tls, name="https")
    http = HttpProxyListener(proxy, "127.0.0.1", 0, name="http")

    loop = new_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> None:
        for backend in backends.values():
            backend.listener = backend.serve(0)
            await backend.listener.start()
        await https.start()
        await http.start()

    running = Stack(ca, ca_pem, loop, backends, placement, proxy, https, http)
    running.call(start())
    proxy.https_port = https.bound_port
    mbx1, mbx2 = backends["MBX1"], backends["MBX2"]
    placement.routes.update(
        {
            ALICE: mbx1.route(),
            BOB: mbx2.route(),
            CAROL: RemoteRoute("MBX9", "127.0.0.4", free_port("127.0.0.4"), mbx1.pin),
            EVE: RemoteRoute("MBX1", mbx1.host, mbx1.port, mbx2.pin),
            LOOPY: RemoteRoute("CAS1", "127.0.0.1", https.bound_port, _pin(proxy_cert)),
            MOVING: Unavailable("mailbox being moved"),
        }
    )
    try:
        yield running
    finally:

        async def stop() -> None:
            await proxy.aclose()  # first: its pool holds a connection to itself (LOOPY)
            await https.stop()
            await http.stop()
            for backend in backends.values():
                assert backend.listener is not None
                await backend.listener.stop()

        running.call(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _pin(cert: trustme.LeafCert) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).hexdigest()


def echo(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body["h"] = {k: v for k, v in body["headers"]}
    return body


# ---------------------------------------------------------------- the header rules (pure)


def test_service_prefixes_are_the_seven_virtual_directories_case_insensitive() -> None:
    assert service_prefix("/EWS/Exchange.asmx") == "/ews"
    assert service_prefix("/Microsoft-Server-ActiveSync") == "/microsoft-server-activesync"
    assert service_prefix("/owa") == "/owa"
    assert service_prefix("/AutoDiscover/AutoDiscover.xml") == "/autodiscover"
    for path in ("/oab/x", "/mapi/emsmdb", "/rpc/rpcproxy.dll"):
        assert service_prefix(path) is not None
    for path in ("/", "/owafoo", "/ecp/", "/powershell", ""):
        assert service_prefix(path) is None
    assert has_dot_segment("/owa/../ecp") and has_dot_segment("/owa/.\\x")
    assert not has_dot_segment("/owa/..x/y")


def test_anchor_and_basic_parsing() -> None:
    assert anchor_address(b"alice@example.test") == "alice@example.test"
    assert anchor_address(b" SMTP:bob@example.test ") == "bob@example.test"
    assert anchor_address(b"smtp:bob@example.test") == "bob@example.test"
    for value in (b"SID:S-1-5-21-1", b"PUID:1234@x", b"bob", b"a b@example.test", b"@x.y"):
        assert anchor_address(value) is None
    assert basic_credentials(b"Basic YWxpY2VAZXhhbXBsZS50ZXN0OnA6dw==") == (
        "alice@example.test",
        "p:w",
    )
    assert basic_credentials(b"Bearer abc") is None
    assert basic_credentials(b"Basic !!!") is None
    assert basic_credentials(b"Basic bm9jb2xvbg==") is None  # "nocolon"


def test_hop_by_hop_rules() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Trailer", b"X-Sum"),
        (b"Authorization", b"Basic y"),
        (b"X-Dropped", b"z"),
    ]
    assert end_to_end(headers, frozenset({b"x-dropped"})) == [(b"Authorization", b"Basic y")]


# ---------------------------------------------------------------- routing and identity


def test_anchor_mailbox_routes_to_the_users_backend(stack: Stack) -> None:
    with stack.client() as client:
        alice = echo(
            client.get(stack.url("/ews/Exchange.asmx"), headers={"X-AnchorMailbox": ALICE})
        )
        bob = echo(
            client.get(
                stack.url("/ews/Exchange.asmx"),
                headers={"X-AnchorMailbox": f"SMTP:{BOB}", "Authorization": "Basic Ym9iOng="},
            )
        )
    assert alice["backend"] == "MBX1"
    assert bob["backend"] == "MBX2"
    # Anchored: not checked here (that password is wrong); the back end gets it as sent.
    assert bob["h"]["authorization"] == "Basic Ym9iOng="


def test_basic_credentials_route_by_the_authenticated_user(stack: Stack) -> None:
    with stack.client() as client:
        r = client.get(stack.url("/owa/"), auth=(ALICE, PASSWORD))
    assert echo(r)["backend"] == "MBX1"
    assert echo(r)["h"]["authorization"].startswith("Basic ")


@needs_curl
def test_curl_with_basic_credentials_and_with_an_anchor(stack: Stack) -> None:
    done = stack.curl("-u", f"{BOB}:{PASSWORD}", stack.url("/Microsoft-Server-ActiveSync?Cmd=Ping"))
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["backend"] == "MBX2" and body["query"] == "Cmd=Ping"
    done = stack.curl(
        "-H", f"X-AnchorMailbox: {ALICE}", stack.url("/autodiscover/autodiscover.xml")
    )
    assert json.loads(done.stdout)["backend"] == "MBX1"


def test_no_identity_or_wrong_credentials_is_401_with_a_basic_challenge(stack: Stack) -> None:
    url = stack.url("/ews/Exchange.asmx?token=anonymous")
    with stack.client() as client:
        anonymous = client.get(url)
        wrong = client.get(url, auth=(ALICE, "wrong"))
        unknown = client.get(url, auth=("nobody@example.test", "x"))
        bearer = client.get(url, headers={"Authorization": "Bearer t"})
        garbage_anchor = client.get(url, headers={"X-AnchorMailbox": "SID:S-1-5"})
    for response in (anonymous, wrong, unknown, bearer, garbage_anchor):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            'Basic realm="mail.example.test", charset="UTF-8"'
        )
    seen = [s for b in stack.backends.values() for s in b.seen]
    assert not any(s["token"] == "anonymous" for s in seen)


def test_other_paths_are_404_and_prefixes_are_case_insensitive(stack: Stack) -> None:
    headers = {"X-AnchorMailbox": ALICE}
    with stack.client() as client:
        for path in ("/", "/owafoo", "/ecp/", "/powershell", "/favicon.ico"):
            assert client.get(stack.url(path), headers=headers).status_code == 404
        body = echo(client.get(stack.url("/EWS/Exchange.asmx"), headers=headers))
        assert body["raw_path"] == "/EWS/Exchange.asmx"
        body = echo(client.get(stack.url("/OWA/a%20b/%C3%A9?x=1&y=%2F"), headers=headers))
        assert (body["raw_path"], body["query"]) == ("/OWA/a%20b/%C3%A9", "x=1&y=%2F")
        # MAPI/RPC over HTTP use their own methods.
        body = echo(
            client.request(
                "RPC_IN_DATA",
                stack.url("/rpc/rpcproxy.dll?mbx:6001"),
                headers=headers,
                content=b"x",
            )
        )
        assert body["method"] == "RPC_IN_DATA"


@needs_curl
def test_dot_segments_are_refused(stack: Stack) -> None:
    done = stack.curl(
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        f"X-AnchorMailbox: {ALICE}",
        stack.url("/owa/../ecp/"),
    )
    assert done.stdout == "400"
    done = stack.curl(
        "-o", "/dev/null", "-w", "%{http_code}", "-H", f"X-AnchorMailbox: {ALICE}",
        stack.url("/owa/%2e%2e/ecp/"),
    )  # fmt: skip
    assert done.stdout == "400"


def test_an_unknown_or_unavailable_mailbox_is_503_with_retry_after(stack: Stack) -> None:
    with stack.client() as client:
        for who in ("nobody@example.test", TEAM, MOVING):
            r = client.get(stack.url("/owa/"), headers={"X-AnchorMailbox": who})
            assert r.status_code == 503, who
            assert r.headers["retry-after"] == "30"
        r = client.get(stack.url("/owa/"), auth=(MOVING, PASSWORD))
        assert r.status_code == 503


# ---------------------------------------------------------------- headers


def test_hop_by_hop_fields_are_dropped_and_forwarded_fields_set(stack: Stack) -> None:
    sent = {
        "X-AnchorMailbox": ALICE,
        "Connection": "keep-alive, X-Req-Hop",
        "X-Req-Hop": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic c2VjcmV0OnNlY3JldA==",
        "X-Forwarded-For": "203.0.113.66",
        "X-Forwarded-Proto": "gopher",
        "X-Kept-Too": "yes",
    }
    with stack.client() as client:
        r = client.get(stack.url("/owa/hop"), headers=sent)
        request_seen = echo(client.get(stack.url("/owa/echo"), headers=sent))
    # Response: end-to-end fields kept, hop-by-hop and the back end's identity gone.
    assert r.status_code == 200 and r.text == "hop\n"
    assert r.headers["x-kept"] == "yes"
    for name in (
        "x-resp-hop",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
        "x-beserver",
        "x-calculatedbetarget",
        "server",
        "x-postwerk-proxied",
    ):
        assert name not in r.headers, name
    assert len(r.headers.get_list("date")) == 1
    # Request: the same on the way up, X-Forwarded-* ours, the loop guard set.
    h = request_seen["h"]
    for name in ("x-req-hop", "keep-alive", "te", "proxy-authorization"):
        assert name not in h, name
    assert "x-req-hop" not in h.get("connection", "").lower()
    assert h["x-kept-too"] == "yes"
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-host"] == f"127.0.0.1:{stack.https.bound_port}"
    assert h["x-postwerk-proxied"] == "postwerk"
    assert h["host"] == f"127.0.0.2:{stack.backends['MBX1'].port}"
    assert [k for k, _ in request_seen["headers"]].count("x-forwarded-for") == 1


def test_loop_guard_refuses_a_request_that_already_passed_a_proxy(stack: Stack) -> None:
    with stack.client() as client:
        r = client.get(
            stack.url("/owa/"), headers={"X-AnchorMailbox": ALICE, "X-Postwerk-Proxied": "CAS2"}
        )
        assert r.status_code == 508
        # A real loop: the mailbox "placed" on this proxy; the second pass refuses,
        # and the first relays that answer.
        r = client.get(stack.url("/owa/"), headers={"X-AnchorMailbox": LOOPY})
        assert r.status_code == 508 and "Loop Detected" in r.text


def test_plain_http_is_redirected_to_https_not_proxied(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.http.bound_port}"
    with httpx.Client(timeout=10) as client:
        r = client.get(f"{base}/owa/?a=1", auth=(ALICE, PASSWORD))
        assert r.status_code == 302
        assert r.headers["location"] == f"https://127.0.0.1:{stack.https.bound_port}/owa/?a=1"
        r = client.post(f"{base}/ews/Exchange.asmx", auth=(ALICE, PASSWORD), content=b"<x/>")
        assert r.status_code == 403
        assert client.get(f"{base}/nothing").status_code == 404


# ---------------------------------------------------------------- streaming


def test_an_upload_reaches_the_backend_before_the_client_finished_sending(stack: Stack) -> None:
    mbx1 = stack.backends["MBX1"]
    token = "early-upload"
    mbx1.first_chunk[token] = threading.Event()
    arrived_early: list[bool] = []

    def body() -> Iterator[bytes]:
        yield BLOCK
        # Nothing more until the back end has the first chunk: a buffering proxy
        # would wait for the end of the body and this would time out.
        arrived_early.append(mbx1.first_chunk[token].wait(10))
        for _ in range(15):
            yield BLOCK

    with stack.client() as client:
        r = client.post(
            stack.url(f"/ews/upload?token={token}"),
            headers={"X-AnchorMailbox": ALICE},
            content=body(),  # chunked: no Content-Length
        )
    assert arrived_early == [True]
    assert r.json() == {
        "backend": "MBX1",
        "bytes": 16 * len(BLOCK),
        "sha256": hashlib.sha256(BLOCK * 16).hexdigest(),
    }


def test_a_client_abandoning_an_upload_drops_the_upstream_request(stack: Stack) -> None:
    mbx2 = stack.backends["MBX2"]
    token = "abandoned-upload"
    mbx2.first_chunk[token] = threading.Event()

    def body() -> Iterator[bytes]:
        yield BLOCK
        assert mbx2.first_chunk[token].wait(10)
        raise OSError("the client's disk went away")

    with stack.client() as client, pytest.raises(OSError):
        client.put(
            stack.url(f"/ews/upload?token={token}"),
            headers={"X-AnchorMailbox": BOB},
            content=body(),
        )
    deadline = time.monotonic() + 5
    while token not in mbx2.gone and time.monotonic() < deadline:
        time.sleep(0.05)
    assert token in mbx2.gone


def test_large_header_fields_pass(stack: Stack) -> None:
    token = "Negotiate " + "A" * 40_000  # a Kerberos ticket with a large PAC
    with stack.client() as client:
        r = client.get(
            stack.url("/ews/Exchange.asmx"),
            headers={"X-AnchorMailbox": ALICE, "Authorization": token},
        )
    assert echo(r)["h"]["authorization"] == token


def test_response_chunks_reach_the_client_before_the_response_ends(stack: Stack) -> None:
    mbx2 = stack.backends["MBX2"]
    token = "gate-1"
    with (
        stack.client() as client,
        client.stream(
            "GET",
            stack.url(f"/Microsoft-Server-ActiveSync/gate?token={token}"),
            auth=(BOB, PASSWORD),
        ) as r,
    ):
        chunks = r.iter_raw()
        assert next(chunks) == b"first\n"  # while the back end still holds the rest
        mbx2.gates[token].set()
        assert b"".join(chunks) == b"last\n"


@needs_curl
def test_chunks_sent_over_time_arrive_over_time(stack: Stack) -> None:
    command = [
        "curl",
        "-sS",
        "-N",
        "--cacert",
        str(stack.ca_pem),
        "-H",
        f"X-AnchorMailbox: {ALICE}",
        stack.url("/Microsoft-Server-ActiveSync/drip?count=5&interval=0.4"),
    ]
    start = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as curl:
        assert curl.stdout is not None
        for line in curl.stdout:
            arrivals.append((time.monotonic() - start, line.strip()))
    assert [line for _, line in arrivals] == [f"chunk {i}" for i in range(5)]
    assert arrivals[-1][0] - arrivals[0][0] >= 1.2  # 4 intervals of 0.4 s
    assert arrivals[0][0] < arrivals[-1][0] - 1.0  # the first did not wait for the last


@needs_curl
def test_50_mb_up_and_down_with_bounded_proxy_memory(stack: Stack, tmp_path: Path) -> None:
    size = 50 * MB
    upload = tmp_path / "upload.bin"
    digest = hashlib.sha256()
    with upload.open("wb") as f:
        for i in range(size // len(BLOCK)):
            piece = bytes([i % 251]) * 16 + BLOCK[16:]
            f.write(piece)
            digest.update(piece)
    download = tmp_path / "download.bin"

    tracemalloc.start()
    try:
        up = stack.curl(
            "-T", str(upload), "-H", f"X-AnchorMailbox: {BOB}", stack.url("/ews/upload"),
            timeout=120,
        )  # fmt: skip
        down = stack.curl(
            "-o", str(download), "-u", f"{ALICE}:{PASSWORD}",
            stack.url(f"/ews/download?size={size}"),
            timeout=120,
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout) == {
        "backend": "MBX2",
        "bytes": size,
        "sha256": digest.hexdigest(),
    }
    assert down.returncode == 0, down.stderr
    assert download.stat().st_size == size
    got = hashlib.sha256()
    with download.open("rb") as f:
        while piece := f.read(MB):
            got.update(piece)
    assert got.hexdigest() == hashlib.sha256(BLOCK * (size // len(BLOCK))).hexdigest()
    # Proxy and back end together (both in this process), for 100 MB relayed: a
    # few socket buffers, not a body.
    assert peak < 6 * MB, f"peak {peak / MB:.1f} MB"


def test_a_chunked_download_without_length_is_relayed_whole(stack: Stack) -> None:
    with stack.client() as client:
        r = client.get(stack.url("/ews/download?size=300000&chunked=1"), auth=(ALICE, PASSWORD))
        assert r.status_code == 200 and "content-length" not in r.headers
        assert r.content == (BLOCK * 5)[:300000]
        r = client.head(stack.url("/ews/download?size=1000"), auth=(ALICE, PASSWORD))
        assert r.status_code == 200 and r.headers["content-length"] == "1000" and r.content == b""


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_backend_failing_mid_body_aborts_the_client_connection(
    stack: Stack, framing: str
) -> None:
    """A truncated body must not reach the client as a complete one."""
    url = stack.url(f"/ews/broken?{framing}=1")
    received = bytearray()
    with stack.client() as client:
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("GET", url, headers={"X-AnchorMailbox": ALICE}) as r,
        ):
            assert r.status_code == 200
            for chunk in r.iter_raw():
                received += chunk
        assert 0 < len(received) < 10 * len(BLOCK)
        # The next request is served (a new connection).
        r = client.get(stack.url("/owa/"), headers={"X-AnchorMailbox": ALICE})
        assert echo(r)["backend"] == "MBX1"


# ---------------------------------------------------------------- long polls and timeouts


def test_a_long_poll_answers_after_three_seconds(stack: Stack) -> None:
    start = time.monotonic()
    with stack.client() as client:
        r = client.post(
            stack.url("/mapi/longpoll?seconds=3&token=lp"),
            headers={"X-AnchorMailbox": BOB},
            content=b"<NotificationWait/>",
        )
    elapsed = time.monotonic() - start
    assert r.json() == {"backend": "MBX2", "changes": ["Inbox"]}
    assert 2.9 <= elapsed < 10


def test_a_client_giving_up_a_long_poll_drops_the_upstream_request(stack: Stack) -> None:
    mbx1 = stack.backends["MBX1"]
    with (
        stack.client(timeout=httpx.Timeout(10, read=0.5)) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get(stack.url("/mapi/longpoll?seconds=20&token=abandoned"), auth=(ALICE, PASSWORD))
    deadline = time.monotonic() + 5
    while "abandoned" not in mbx1.gone and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "abandoned" in mbx1.gone  # the back end saw its client (the proxy) go


def test_the_read_timeout_is_configurable_and_answers_504(stack: Stack) -> None:
    impatient = HttpProxy(authenticate, MailboxUpstreams(find, stack.placement), read_timeout=1.0)
    listener = HttpProxyListener(impatient, "127.0.0.1", 0)
    stack.call(listener.start())
    try:
        start = time.monotonic()
        r = httpx.get(
            f"http://127.0.0.1:{listener.bound_port}/mapi/longpoll?seconds=3&token=t504",
            headers={"X-AnchorMailbox": ALICE},
            timeout=10,
        )
        assert r.status_code == 504
        assert time.monotonic() - start < 2.5
        assert "MBX1" not in r.text and "127.0.0.2" not in r.text
    finally:
        stack.call(listener.stop())
        stack.call(impatient.aclose())


# ---------------------------------------------------------------- failures


def test_a_backend_that_is_down_is_503_and_the_proxy_keeps_serving(stack: Stack) -> None:
    with stack.client() as client:
        r = client.get(stack.url("/owa/"), headers={"X-AnchorMailbox": CAROL})
        assert r.status_code == 503 and r.headers["retry-after"] == "30"
        assert "127.0.0.4" not in r.text and "MBX9" not in r.text
        assert (
            echo(client.get(stack.url("/owa/"), headers={"X-AnchorMailbox": ALICE}))["backend"]
            == "MBX1"
        )


def test_a_backend_that_stops_is_503_then_served_again_when_back(
    stack: Stack, ca: trustme.CA
) -> None:
    mbx3 = Backend("MBX3", "127.0.0.5", ca.issue_cert("127.0.0.5"))
    port = free_port("127.0.0.5")

    async def start() -> None:
        mbx3.listener = mbx3.serve(port)
        await mbx3.listener.start()

    async def stop() -> None:
        assert mbx3.listener is not None
        await mbx3.listener.stop()

    stack.call(start())
    stack.placement.routes[DAVE] = mbx3.route()
    try:
        with stack.client() as client:
            assert echo(client.get(stack.url("/owa/"), auth=(DAVE, PASSWORD)))["backend"] == "MBX3"
            stack.call(stop())  # the pooled connection to it goes with it
            r = client.get(stack.url("/owa/"), auth=(DAVE, PASSWORD))
            assert r.status_code == 503
            stack.call(start())
            assert echo(client.get(stack.url("/owa/"), auth=(DAVE, PASSWORD)))["backend"] == "MBX3"
    finally:
        stack.call(stop())


def test_a_wrong_certificate_pin_is_502_and_nothing_is_sent(stack: Stack) -> None:
    mbx1 = stack.backends["MBX1"]
    with stack.client() as client:
        r = client.post(
            stack.url("/ews/Exchange.asmx?token=mitm"),
            headers={"X-AnchorMailbox": EVE, "Authorization": "Basic ZXZlOnNlY3JldA=="},
            content=b"<secret/>",
        )
    assert r.status_code == 502
    assert not any(s["token"] == "mitm" for s in mbx1.seen)


def test_a_backend_without_a_pin_is_never_contacted(stack: Stack) -> None:
    mbx1 = stack.backends["MBX1"]
    stack.placement.routes[DAVE] = RemoteRoute("MBX1", mbx1.host, mbx1.port, "")
    with stack.client() as client:
        r = client.get(stack.url("/owa/?token=nopin"), headers={"X-AnchorMailbox": DAVE})
    assert r.status_code == 502
    assert not any(s["token"] == "nopin" for s in mbx1.seen)


def test_a_failing_directory_is_503_not_500(stack: Stack) -> None:
    async def broken(login: str, password: str) -> Recipient | None:
        raise ConnectionError("database down")

    original = stack.proxy.authenticate
    stack.proxy.authenticate = broken
    try:
        with stack.client() as client:
            r = client.get(stack.url("/owa/"), auth=(ALICE, PASSWORD))
        assert r.status_code == 503
    finally:
        stack.proxy.authenticate = original
