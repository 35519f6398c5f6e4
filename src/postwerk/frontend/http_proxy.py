"""The HTTP proxy of the Client Access front end: the web services' paths, forwarded
to the back-end HTTP service of the user's Mailbox server.

Purpose: as in Exchange 2013, clients speak HTTPS to a Client Access server on
443 (80 redirects there) and never to a Mailbox server. For each request to one
of the seven service paths (`/owa`, `/ews`, `/Microsoft-Server-ActiveSync`,
`/autodiscover`, `/oab`, `/mapi`, `/rpc`; case-insensitive, as IIS is) the
proxy finds the user, asks where the mailbox is served, and forwards the
request to that server's back-end service (444, HTTPS), streaming both ways:

1. The user: the `X-AnchorMailbox` header (`addr` or `SMTP:addr`) when the
   client sends one; else the HTTP Basic credentials (RFC 7617), verified
   through the injected `authenticate`. No identity, or wrong credentials: 401
   with a Basic challenge. An anchored request is not authenticated here: its
   `Authorization` goes up unchanged and the back end authenticates it (as it
   does every request; the proxy's check only decides the route).
2. The route: the injected `locate` returns the back end's `Upstream` (origin
   and certificate pin) or None: 503 with `Retry-After`.
3. The exchange: request and response bodies are relayed chunk by chunk, with
   the status and the end-to-end header fields kept and the hop-by-hop ones
   dropped (RFC 9110 §7.6.1); `X-Forwarded-For`/`-Proto`/`-Host` are set and
   `X-Postwerk-Proxied` marks the request, so a request coming back to a proxy
   (a placement loop) is refused with 508 Loop Detected (RFC 5842 §7.2).
   Long polls (ActiveSync Ping, EWS streaming notifications, MAPI/HTTP
   NotificationWait) simply wait: the read timeout is an hour by default.

Failures the client sees, with the details only in the log: the back end does
not answer a connection (refused, unreachable, timed out) 503 + `Retry-After`;
its certificate is not the pinned one, or it breaks the protocol before the
response header 502; it sends no response header within the read timeout 504.
A failure after the response header was sent aborts the client's connection.

Security: the back end's name and address never reach the client (the
`X-BEServer`-like response fields are removed, `Server` too); the client's own
`X-Forwarded-*` fields are replaced, not trusted. Plain HTTP (port 80) is not
proxied when `https_port` is set: GET/HEAD are redirected to HTTPS, other
methods get 403, so credentials are never checked on a plain connection.

Invariants:
- No body is held whole: a request chunk goes up as the client sends it, a
  response chunk down as the back end sends it, and each side's flow control
  (uvicorn pauses reading from the client, httpcore awaits each write) keeps a
  request to a few socket buffers of memory, whatever the body's size.
- No byte of a request (its `Authorization` included) reaches a back end before
  the back end's TLS certificate matched the pin: the check runs inside the
  handshake (`pinned_client_context`). A back end without a pin, or not on
  HTTPS, is never contacted.
- A response is never completed after a failure: a truncated body must not
  look whole, so the connection is aborted instead.
- A client that goes away (during a long poll, say) cancels its upstream
  request at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, assert_never

import httpx
import structlog
from starlette.types import Receive, Scope, Send

from postwerk.directory.server_auth import internal_client_context, pinned
from postwerk.frontend.routing import LocalRoute, MailboxLocator, RemoteRoute, Unavailable
from postwerk.store.records import Recipient, RecipientKind

log = structlog.get_logger("postwerk.http_proxy")

# The virtual directories of an Exchange 2013 Client Access server, lower case.
SERVICE_PREFIXES: Final = (
    "/owa",
    "/ews",
    "/microsoft-server-activesync",
    "/autodiscover",
    "/oab",
    "/mapi",
    "/rpc",
)

PROXIED: Final = b"x-postwerk-proxied"  # the loop guard, set on every forwarded request
ANCHOR: Final = b"x-anchormailbox"

# RFC 9110 §7.6.1: fields for this connection only (Proxy-* by prefix, below), and
# those the Connection field names.
HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Request fields the proxy sets itself: Host is the back end's (httpx writes it);
# Expect is not relayed (the body is sent without waiting for 100 Continue, which
# RFC 9110 §10.1.1 allows; uvicorn answers the client's 100 Continue itself).
REQUEST_REPLACED: Final = frozenset(
    {b"host", b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", PROXIED}
)
# Response fields that would tell the client about the back end, and Date, which
# the listener writes for every response (one Date, never two).
RESPONSE_INTERNAL: Final = frozenset(
    {
        b"x-beserver",
        b"x-calculatedbetarget",
        b"x-diaginfo",
        b"x-feserver",
        b"x-postwerk-server",
        b"server",
        b"date",
        PROXIED,
    }
)

# MS-ASCMD 2.2.3.79: an ActiveSync Ping may wait up to 3540 s for a change; the
# default read timeout lets the longest long poll answer.
DEFAULT_READ_TIMEOUT: Final = 3600.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0  # TCP connect and TLS handshake to the back end
DEFAULT_WRITE_TIMEOUT: Final = 60.0  # one write to the back end
DEFAULT_RETRY_AFTER: Final = 30  # seconds, in 503 answers
# Kept shorter than the back end's keep-alive timeout (uvicorn's default is 5 s), so
# an idle pooled connection is dropped here before the back end closes it under a
# request.
DEFAULT_UPSTREAM_KEEPALIVE: Final = 4.0
# The kernel's receive buffer of each back-end connection, fixed instead of
# autotuned (up to several MB). httpcore reads through anyio, which pauses the
# transport only once the reading task runs again; under uvloop, libuv reads the
# socket until it is empty meanwhile, so whatever the kernel holds is pulled into
# memory at once: ~8 MB per download to a client slower than the LAN without this
# limit, a few hundred kB with it. 256 kB still fills a LAN's pipe.
DEFAULT_UPSTREAM_RECEIVE_BUFFER: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class Upstream:
    """A Mailbox server's back-end HTTP service, as `locate` names it."""

    base_url: str  # origin only: "https://mbx1.corp.example:444"
    certificate_sha256: str  # hex SHA-256 of its TLS certificate (ServerRecord's)
    server: str = ""  # its label, for the log only


Authenticate = Callable[[str, str], Awaitable[Recipient | None]]
Locate = Callable[[Recipient | str], Awaitable[Upstream | None]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer the proxy gives itself: a short text body."""

    status: int
    text: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


NOT_FOUND: Final = Refusal(404, "Not Found")
BAD_PATH: Final = Refusal(400, "Bad Request: dot segments in the path")
LOOP: Final = Refusal(508, "Loop Detected: this request has already passed a Client Access proxy")
TLS_REQUIRED: Final = Refusal(403, "Forbidden: use HTTPS")
BAD_GATEWAY: Final = Refusal(502, "Bad Gateway: the mailbox server could not be reached safely")
GATEWAY_TIMEOUT: Final = Refusal(504, "Gateway Timeout: the mailbox server did not answer")


# ---------------------------------------------------------------- header rules


def service_prefix(path: str) -> str | None:
    """The service path `path` belongs to, lower case; None for any other path."""
    lowered = path.lower()
    for prefix in SERVICE_PREFIXES:
        if lowered == prefix or lowered.startswith(prefix + "/"):
            return prefix
    return None


def has_dot_segment(path: str) -> bool:
    """`.` or `..` segments (decoded, `\\` read as `/` as IIS does): a path that a
    back end or a URL library would resolve outside the prefix checked here."""
    return any(seg in (".", "..") for seg in path.replace("\\", "/").split("/"))


def end_to_end(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """`headers` without the hop-by-hop fields (RFC 9110 §7.6.1), those the
    Connection field names, and `drop`."""
    fields = list(headers)
    named = {
        token.strip().lower()
        for name, value in fields
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    kept = []
    for name, value in fields:
        low = name.lower()
        if low in HOP_BY_HOP or low.startswith(b"proxy-") or low in named or low in drop:
            continue
        kept.append((name, value))
    return kept


def first_header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def anchor_address(value: bytes) -> str | None:
    """The SMTP address of an `X-AnchorMailbox` value (`addr` or `SMTP:addr`);
    None for the other forms Exchange knows (SID:, PUID:, Oid:) and for garbage,
    which then leave the routing to the credentials."""
    text = value.decode("latin-1").strip()
    kind, sep, rest = text.partition(":")
    if sep:
        if kind.strip().lower() != "smtp":
            return None
        text = rest.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain:
        return None
    if any(ch.isspace() or ch in '<>,;"' for ch in text):
        return None
    return text


def basic_credentials(value: bytes) -> tuple[str, str] | None:
    """(login, password) of an `Authorization: Basic` value (RFC 7617); None for
    other schemes and malformed values. UTF-8, else Latin-1 (RFC 7617 §2.1)."""
    scheme, _, param = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        text = decoded.decode("latin-1")
    login, sep, password = text.partition(":")
    if not sep or not login:
        return None
    return login, password


# ---------------------------------------------------------------- the pinned upstream


class PinMismatch(ssl.SSLCertVerificationError):
    """The back end's certificate is not the one the directory registered."""


def pinned_client_context(expected_sha256: str) -> ssl.SSLContext:
    """A client context whose handshake fails unless the peer's certificate has
    this SHA-256: `internal_client_context()` (no CA check) plus the pin, checked
    by the SSLObject itself as the handshake completes, so that no connection
    that reaches httpx, and no request byte, has an unpinned peer. (httpcore's
    asyncio backend, anyio, drives TLS through `SSLContext.wrap_bio`, which makes
    `sslobject_class` objects: documented stdlib API.)"""
    expected = expected_sha256.lower()
    ctx = internal_client_context()
    ctx.set_alpn_protocols(["http/1.1"])

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()  # SSLWantReadError until the handshake is done
            if not pinned(self, expected):
                raise PinMismatch(f"certificate not the pinned sha256 {expected[:16]}…")

    ctx.sslobject_class = PinnedObject
    return ctx


def _tls_failed(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# ---------------------------------------------------------------- the ASGI app


class _ClientGone(Exception):
    """The client disconnected while its request body was being relayed."""


@dataclass
class _Exchange:
    finishing: bool = False  # the last body message is being sent


class HttpProxy:
    """The ASGI app. `authenticate(login, password)` verifies Basic credentials
    (`Directory.authenticate`); `locate(recipient or address)` names the back end
    (`MailboxUpstreams` below). `https_port`: where plain-HTTP requests are sent
    (443 + offset), None to proxy plain HTTP as well (behind a TLS-terminating
    load balancer). `via`: this server's label, sent in `X-Postwerk-Proxied`.
    Call `aclose()` after the listeners serving it stopped."""

    def __init__(
        self,
        authenticate: Authenticate,
        locate: Locate,
        *,
        realm: str = "postwerk",
        via: str = "postwerk",
        https_port: int | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        retry_after: int = DEFAULT_RETRY_AFTER,
        upstream_keepalive: float = DEFAULT_UPSTREAM_KEEPALIVE,
        max_upstream_connections: int | None = None,
        upstream_receive_buffer: int = DEFAULT_UPSTREAM_RECEIVE_BUFFER,
    ) -> None:
        self.authenticate = authenticate
        self.locate = locate
        self.via = via.encode("ascii")
        self.https_port = https_port
        # Any time may pass while a request body comes from the client; the pool
        # has no limit by default (each long poll holds a connection), so waiting
        # for one is bounded by the connect timeout.
        self._timeout = httpx.Timeout(
            connect=connect_timeout,
            read=read_timeout,
            write=write_timeout,
            pool=connect_timeout,
        ).as_dict()
        self._limits = httpx.Limits(
            max_connections=max_upstream_connections,
            max_keepalive_connections=64,
            keepalive_expiry=upstream_keepalive,
        )
        self._socket_options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, upstream_receive_buffer)]
        self._transports: dict[tuple[str, str], httpx.AsyncHTTPTransport] = {}
        challenge = f'Basic realm="{realm}", charset="UTF-8"'.encode()
        self._challenge = Refusal(401, "Unauthorized", ((b"www-authenticate", challenge),))
        self._unavailable = Refusal(
            503,
            "Service Unavailable: the mailbox is not available now; try again later",
            ((b"retry-after", str(retry_after).encode()),),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off and WebSocket not offered by the listener
        started = time.monotonic()
        decision = await self.route(scope)
        if isinstance(decision, Refusal):
            await _answer(send, decision)
            log.debug(
                "http_proxy_refused",
                method=scope["method"],
                path=scope["path"],
                status=decision.status,
            )
            return
        status = await self._forward(scope, receive, send, decision)
        log.debug(
            "http_proxy_request",
            method=scope["method"],
            service=service_prefix(scope["path"]),
            server=decision.server,
            status=status,
            seconds=round(time.monotonic() - started, 3),
        )

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()

    # -- deciding: guard clauses, each returning a refusal early

    async def route(self, scope: Scope) -> Upstream | Refusal:
        """Where this request goes, or the answer the proxy gives itself."""
        path: str = scope["path"]
        if service_prefix(path) is None:
            return NOT_FOUND
        if has_dot_segment(path):
            return BAD_PATH
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        via = first_header(headers, PROXIED)
        if via is not None:
            log.warning("http_proxy_loop", path=path, via=via.decode("latin-1"))
            return LOOP
        if scope.get("scheme") == "http" and self.https_port is not None:
            return self._to_https(scope)
        who: Recipient | str
        anchor = first_header(headers, ANCHOR)
        address = anchor_address(anchor) if anchor is not None else None
        if address is not None:
            who = address  # the back end authenticates the request itself
        else:
            authorization = first_header(headers, b"authorization")
            credentials = basic_credentials(authorization) if authorization else None
            if credentials is None:
                return self._challenge
            try:
                recipient = await self.authenticate(*credentials)
            except Exception:
                log.exception("http_proxy_authenticate_failed")
                return self._unavailable
            if recipient is None:
                log.info("http_proxy_auth_failed", login=credentials[0], client=_client(scope))
                return self._challenge
            who = recipient
        try:
            upstream = await self.locate(who)
        except Exception:
            log.exception("http_proxy_locate_failed")
            return self._unavailable
        if upstream is None:
            log.info("http_proxy_no_route", anchor=address is not None)
            return self._unavailable
        return upstream

    def _to_https(self, scope: Scope) -> Refusal:
        if scope["method"] not in ("GET", "HEAD"):
            return TLS_REQUIRED
        host = first_header(scope["headers"], b"host")
        if not host:
            return TLS_REQUIRED
        name = host.decode("latin-1")  # without its port; an IPv6 literal keeps its brackets
        name = name[: name.find("]") + 1] if name.startswith("[") else name.rsplit(":", 1)[0]
        port = "" if self.https_port == 443 else f":{self.https_port}"
        target = _target(scope).decode("latin-1")
        location = f"https://{name}{port}{target}".encode("latin-1")
        return Refusal(302, "Found", ((b"location", location),))

    # -- forwarding

    def _transport(self, upstream: Upstream) -> httpx.AsyncHTTPTransport | None:
        url = httpx.URL(upstream.base_url)
        if url.scheme != "https" or not upstream.certificate_sha256:
            return None
        key = (f"{url.host}:{url.port}", upstream.certificate_sha256.lower())
        transport = self._transports.get(key)
        if transport is None:
            # One pool per (back end, pin): a renewed certificate gets a new pool; the
            # old one is closed with the proxy (a handful, rarely more).
            transport = httpx.AsyncHTTPTransport(
                verify=pinned_client_context(upstream.certificate_sha256),
                trust_env=False,  # never HTTPS_PROXY & co. between our own servers
                http1=True,
                http2=False,
                limits=self._limits,
                retries=0,
                socket_options=self._socket_options,
            )
            self._transports[key] = transport
        return transport

    async def _forward(self, scope: Scope, receive: Receive, send: Send, upstream: Upstream) -> int:
        """Relay one exchange; the status the client got (0: aborted or gone)."""
        transport = self._transport(upstream)
        if transport is None:
            log.error(
                "http_proxy_upstream_not_pinned", server=upstream.server, url=upstream.base_url
            )
            await _answer(send, BAD_GATEWAY)
            return BAD_GATEWAY.status
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        body_done = asyncio.Event()
        body: AsyncIterator[bytes] | None = None
        if _has_body(headers):
            body = _request_body(receive, body_done)
        else:
            body_done.set()
        request = httpx.Request(
            scope["method"],
            httpx.URL(upstream.base_url).copy_with(raw_path=_target(scope)),
            headers=self._upstream_headers(scope),
            content=body,
            extensions={"timeout": self._timeout},
        )
        exchange = _Exchange()
        inner = asyncio.create_task(self._exchange(transport, request, send, upstream, exchange))
        gone = asyncio.create_task(_disconnected(receive, body_done))
        try:
            await asyncio.wait({inner, gone}, return_when=asyncio.FIRST_COMPLETED)
            if inner.done() or exchange.finishing:
                return await inner
            # The client went away (a long poll it gave up, say): drop the upstream
            # request now rather than when the back end answers.
            inner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await inner
            log.debug("http_proxy_client_gone", server=upstream.server)
            return 0
        finally:
            for task in (inner, gone):
                task.cancel()
            await asyncio.gather(inner, gone, return_exceptions=True)

    def _upstream_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        forwarded = end_to_end(headers, REQUEST_REPLACED)
        client = _client(scope)
        if client:
            forwarded.append((b"x-forwarded-for", client.encode("latin-1")))
        forwarded.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
        host = first_header(headers, b"host")
        if host:
            forwarded.append((b"x-forwarded-host", host))
        forwarded.append((PROXIED, self.via))
        return forwarded

    async def _exchange(
        self,
        transport: httpx.AsyncHTTPTransport,
        request: httpx.Request,
        send: Send,
        upstream: Upstream,
        exchange: _Exchange,
    ) -> int:
        try:
            response = await transport.handle_async_request(request)
        except _ClientGone:
            return 0
        except httpx.TransportError as exc:
            refusal = self._failure(exc)
            log.warning(
                "http_proxy_upstream_failed",
                server=upstream.server,
                url=upstream.base_url,
                error=f"{type(exc).__name__}: {exc}",
                status=refusal.status,
            )
            await _answer(send, refusal)
            return refusal.status
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": end_to_end(response.headers.raw, RESPONSE_INTERNAL),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            exchange.finishing = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return response.status_code
        except httpx.TransportError as exc:
            # The header is out; completing the body would make a truncated one look
            # whole. Raising makes uvicorn close the client's connection.
            log.warning(
                "http_proxy_upstream_aborted",
                server=upstream.server,
                error=f"{type(exc).__name__}: {exc}",
            )
            raise
        finally:
            await response.aclose()

    def _failure(self, exc: httpx.TransportError) -> Refusal:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            # A refused or unreachable back end is a mailbox not available now; a
            # failed pin or TLS handshake is not transient, and not the client's.
            return BAD_GATEWAY if _tls_failed(exc) else self._unavailable
        if isinstance(exc, httpx.PoolTimeout):
            return self._unavailable
        if isinstance(exc, httpx.ReadTimeout):
            return GATEWAY_TIMEOUT
        return BAD_GATEWAY


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _target(scope: Scope) -> bytes:
    """The request target as the client wrote it (percent-encoding kept)."""
    raw_path: bytes | None = scope.get("raw_path")
    path = raw_path if raw_path else scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    return path + b"?" + query if query else path


def _has_body(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    # RFC 9112 §6.3: a request has a body only if it says so.
    if first_header(headers, b"transfer-encoding") is not None:
        return True
    length = first_header(headers, b"content-length")
    return length is not None and length.strip() not in (b"0", b"")


async def _request_body(receive: Receive, done: asyncio.Event) -> AsyncIterator[bytes]:
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
    finally:
        done.set()


async def _disconnected(receive: Receive, body_done: asyncio.Event) -> None:
    """Returns when the client disconnects (or the response completed): uvicorn's
    `receive` answers `http.disconnect` then. Waits for the request body first,
    which is `_request_body`'s to read."""
    await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass  # the rest of a body the back end did not read


async def _answer(send: Send, refusal: Refusal) -> None:
    body = (refusal.text + "\n").encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *refusal.headers,
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# ---------------------------------------------------------------- locating by the directory


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class MailboxUpstreams:
    """`locate` for HttpProxy from the front end's routing seam (frontend/routing.py):
    the recipient (found by `find` for an X-AnchorMailbox address) must be an
    enabled mailbox; a `RemoteRoute` becomes its server's back end, a `LocalRoute`
    (the mailbox served in this process: the all-in-one server) becomes `local`,
    this server's own back-end listener, or None when it has none yet."""

    def __init__(
        self,
        find: Callable[[str], Awaitable[Recipient | None]],
        locator: MailboxLocator,
        local: Upstream | None = None,
    ) -> None:
        self.find = find
        self.locator = locator
        self.local = local

    async def __call__(self, who: Recipient | str) -> Upstream | None:
        recipient = await self.find(who) if isinstance(who, str) else who
        if recipient is None or recipient.kind != RecipientKind.MAILBOX or not recipient.enabled:
            return None
        route = await self.locator.locate(recipient, "http")
        match route:
            case RemoteRoute():
                return Upstream(
                    base_url=f"https://{_url_host(route.host)}:{route.port}",
                    certificate_sha256=route.certificate_sha256,
                    server=route.server,
                )
            case LocalRoute():
                return self.local
            case Unavailable():
                log.info("http_proxy_mailbox_unavailable", reason=route.reason)
                return None
            case _:
                assert_never(route)
