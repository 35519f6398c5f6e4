"""A real DNS server for tests: dnslib on 127.0.0.1, UDP and TCP on one ephemeral port.

Each test gets its own zone:

    with LocalDns() as dns:
        dns.add("example.test", "MX", "10 mx1.example.test")
        dns.add("mx1.example.test", "A", "127.0.0.2")
        resolver = Resolver(dns.config())

or the `local_dns` fixture, made visible in a test module with
`local_dns = dnsserver.local_dns` (a plain import used as a test argument trips
ruff's F811). A name is answered authoritatively: records of the asked type,
CNAMEs followed inside the zone, NOERROR with no records (NoAnswer) when the name
exists with other types only, NXDOMAIN when it does not exist. `servfail(name)`
answers SERVFAIL, `drop(name)` never answers (the client times out). TTLs default
to 0, so a resolver's cache never hides a zone change made during a test. UDP
answers over 512 bytes are truncated (TC), as a classic server without EDNS does,
so clients retry over TCP. Every query is recorded in `queries`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from postwerk.transport.dns import DnsConfig

UDP_LIMIT = 512  # RFC 1035 §4.2.1, for a client that does not offer EDNS


def _key(name: str) -> str:
    """Zone key: lower case, A-labels, no trailing dot."""
    name = name.strip().rstrip(".").lower()
    return name if name.isascii() else name.encode("idna").decode("ascii")


@dataclass(frozen=True)
class Query:
    name: str
    rtype: str
    protocol: str  # "udp" or "tcp"


class _Drop(DNSError):
    """Raised by the zone for dropped names: dnslib's handler then sends nothing."""


class _ZoneResolver(BaseResolver):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, list[RR]] = {}
        self.failing: set[str] = set()
        self.dropped: set[str] = set()
        self.queries: list[Query] = []
        self.negative_soa = RR(
            ".",
            QTYPE.SOA,
            rdata=SOA("ns.local-dns.test.", "hostmaster.local-dns.test.", (1, 60, 60, 60, 0)),
            ttl=0,
        )

    def resolve(self, request: Any, handler: Any) -> Any:
        name = _key(str(request.q.qname))
        qtype = request.q.qtype
        with self.lock:
            self.queries.append(Query(name, QTYPE[qtype], handler.protocol))
            if name in self.dropped:
                raise _Drop(f"dropped {name}")
            reply = request.reply()
            if name in self.failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            for _ in range(8):  # follow CNAMEs inside the zone, as a recursive server would
                records = self.records.get(name)
                if records is None:
                    reply.header.rcode = RCODE.NXDOMAIN
                    break
                wanted = [rr for rr in records if rr.rtype == qtype]
                cnames = [rr for rr in records if rr.rtype == QTYPE.CNAME]
                if wanted or not cnames or qtype == QTYPE.CNAME:
                    for rr in wanted:
                        reply.add_answer(rr)
                    break
                reply.add_answer(cnames[0])
                name = _key(str(cnames[0].rdata.label))
            if not any(rr.rtype == qtype for rr in reply.rr):
                # A negative answer carries an SOA whose TTL and minimum say how long it
                # may be cached (RFC 2308); without one, dnspython caches it for 300 s.
                reply.add_auth(self.negative_soa)
            return reply


class _Handler(DNSHandler):
    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        packed: bytes = reply.pack()
        if self.protocol == "udp" and len(packed) > UDP_LIMIT:
            # Truncate as a server without EDNS does: the question stays (dnslib's own
            # truncate() drops it, and clients then ignore the answer), TC is set.
            truncated = request.reply()
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed


def _rdata(rtype: str, value: str) -> Any:
    match rtype:
        case "A":
            return A(value)
        case "AAAA":
            return AAAA(value)
        case "MX":
            preference, _, host = value.strip().partition(" ")
            return MX(_key(host) + "." if host.strip() != "." else ".", int(preference))
        case "CNAME":
            return CNAME(_key(value) + ".")
        case "TXT":
            return TXT(value)
    raise ValueError(f"LocalDns cannot serve {rtype} records")


class LocalDns:
    """A dnslib server with a zone the test fills in; see the module docstring."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self._zone = _ZoneResolver()
        self._servers: list[DNSServer] = []

    # -- zone

    def add(self, name: str, rtype: str, value: str, ttl: int = 0) -> None:
        """Add one record: ("example.test", "MX", "10 mx.example.test"), ("mx…", "A", "…")."""
        rtype = rtype.upper()
        rr = RR(_key(name) + ".", getattr(QTYPE, rtype), rdata=_rdata(rtype, value), ttl=ttl)
        with self._zone.lock:
            self._zone.records.setdefault(_key(name), []).append(rr)

    def remove(self, name: str) -> None:
        """Forget every record of `name` (and any servfail/drop), so it is NXDOMAIN again."""
        key = _key(name)
        with self._zone.lock:
            self._zone.records.pop(key, None)
            self._zone.failing.discard(key)
            self._zone.dropped.discard(key)

    def servfail(self, name: str) -> None:
        """Answer every query for `name` with SERVFAIL."""
        with self._zone.lock:
            self._zone.failing.add(_key(name))

    def drop(self, name: str) -> None:
        """Never answer queries for `name` (the client times out)."""
        with self._zone.lock:
            self._zone.dropped.add(_key(name))

    @property
    def queries(self) -> list[Query]:
        with self._zone.lock:
            return list(self._zone.queries)

    # -- addressing

    @property
    def port(self) -> int:
        assert self._servers, "LocalDns is not started"
        return int(self._servers[0].server.server_address[1])

    @property
    def nameserver(self) -> str:
        """ "127.0.0.1:PORT", as `DnsConfig.nameservers` takes it."""
        return f"{self.address}:{self.port}"

    def config(self, **overrides: Any) -> DnsConfig:
        """A resolver configuration asking only this server (short timeout, no cache)."""
        values: dict[str, Any] = {
            "nameservers": (self.nameserver,),
            "timeout": 2.0,
            "cache_size": 0,
        }
        values.update(overrides)
        return DnsConfig(**values)

    # -- lifecycle

    def start(self) -> LocalDns:
        logger = DNSLogger("-request,-reply,-truncated,-error", prefix=False)
        for _attempt in range(20):
            # UDP takes an ephemeral port; TCP must get the same number, which another
            # process may hold: then try again with a fresh one.
            udp = DNSServer(
                self._zone, address=self.address, port=0, logger=logger, handler=_Handler
            )
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(
                    self._zone,
                    address=self.address,
                    port=port,
                    tcp=True,
                    logger=logger,
                    handler=_Handler,
                )
            except OSError:
                udp.server.server_close()
                continue
            self._servers = [udp, tcp]
            for server in self._servers:
                # Not DNSServer.start_thread: its 0.5 s poll makes every stop() that slow.
                threading.Thread(
                    target=server.server.serve_forever,
                    kwargs={"poll_interval": 0.02},
                    daemon=True,
                ).start()
            return self
        raise RuntimeError("no free port for both UDP and TCP")

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()
        self._servers = []

    def __enter__(self) -> LocalDns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_udp_port(address: str = "127.0.0.1") -> int:
    """A port nobody answers DNS on (bound for a moment, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def local_dns() -> Iterator[LocalDns]:
    """A fresh LocalDns per test."""
    with LocalDns() as server:
        yield server
