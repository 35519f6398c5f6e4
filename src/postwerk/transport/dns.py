"""Next-hop resolution for outbound SMTP: MX, implicit MX, null MX, loops (RFC 5321 §5.1).

Every DNS lookup of the transport goes through one `Resolver`, which wraps one
`dns.asyncresolver.Resolver` built from `DnsConfig` (tests point it at a local
dnslib server). Results are values, never exceptions:

- `resolve_mx(domain)` → `NextHops` (hosts in the order to try, each with its
  addresses) or `DnsFailure` (permanent → NDR now; transient → retry later);
- `resolve_host(name)` → the addresses of a smart host, or `DnsFailure`.

Status codes (RFC 3463): null MX 5.1.10 (RFC 7505), nonexistent domain 5.4.4,
MX pointing at this server 5.4.6, invalid domain 5.1.2; DNS server failure,
timeout, or no usable address 4.4.3. Operator-facing rules: docs/send-connectors.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from postwerk.core.addresses import normalize_domain
from postwerk.core.errors import InvalidName

MAX_TRY_TIMEOUT = 2.0  # seconds: the most one try at one server may take

# Enhanced status codes (RFC 3463, RFC 7505) for the outcomes of resolution.
STATUS_NULL_MX = "5.1.10"
STATUS_BAD_DOMAIN = "5.1.2"
STATUS_NO_DOMAIN = "5.4.4"
STATUS_LOOP = "5.4.6"
STATUS_DNS_TRANSIENT = "4.4.3"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """How the transport reaches DNS.

    `nameservers`: "ip", "ip:port", "[ipv6]:port" (or a bare IPv6 address, port 53);
    empty → the system configuration (/etc/resolv.conf).
    `timeout`: seconds for one DNS query, all servers and retries included (dnspython's
    `lifetime`); each try at one server gets an equal share, at most `MAX_TRY_TIMEOUT`.
    `resolve_mx` asks MX, then A and AAAA of all hosts at once: at most twice this.
    `prefer_ipv6`: order a host's IPv6 addresses before its IPv4 ones. The default is
    IPv4 first: mail from IPv6 is more often refused for a missing PTR or SPF record,
    and the IPv6 addresses stay in the list as a fallback.
    `cache_size`: answers kept for their TTL (0 = no cache).
    """

    nameservers: tuple[str, ...] = ()
    timeout: float = 5.0
    prefer_ipv6: bool = False
    cache_size: int = 10_000

    def __post_init__(self) -> None:
        for text in self.nameservers:
            parse_nameserver(text)  # fail at configuration time, not at the first lookup
        if not self.timeout > 0:
            raise ValueError(f"DNS timeout must be positive, not {self.timeout!r}")
        if self.cache_size < 0:
            raise ValueError(f"DNS cache size must be >= 0, not {self.cache_size!r}")


@dataclass(frozen=True, slots=True)
class Host:
    """One host to try: its name, MX preference (0 for an implicit MX), its addresses."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NextHops:
    """Hosts for `domain` in the order to try; `implicit` when the domain has no MX."""

    domain: str
    hosts: tuple[Host, ...]
    implicit: bool


@dataclass(frozen=True, slots=True)
class DnsFailure:
    """Why no next hop: `permanent` → NDR with `status`; otherwise retry later."""

    permanent: bool
    status: str  # enhanced status code, e.g. "5.1.10"
    reason: str


# ---------------------------------------------------------------- pure helpers


def parse_nameserver(text: str) -> tuple[str, int]:
    """ "ip", "ip:port", "[v6]:port", "[v6]" or a bare IPv6 address → (ip, port)."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid DNS server {text!r}")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:  # one colon: IPv4 with port; several: a bare IPv6 address
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        # dnspython takes addresses only; a name would need DNS to find DNS.
        raise ValueError(f"DNS server must be an IP address, not {text!r}") from None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port in DNS server {whole!r}")
    return int(text)


def ip_literal(text: str) -> str | None:
    """The address of an IP literal ("1.2.3.4", "[1.2.3.4]", "::1", "[IPv6:::1]"), else None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text[:5].lower() == "ipv6:":  # RFC 5321 §4.1.3 address literal tag
            text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def normalize_name(name: str) -> str:
    """Case-folded A-label form without the trailing dot; InvalidName if unusable.

    The same normalization as mail domains (core.addresses), so a U-label domain
    from an SMTPUTF8 address and its A-label spelling are one next hop.
    """
    return normalize_domain(name)


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Sort (preference, host) by preference, shuffled among equal preferences (RFC 5321 §5.1).

    A host listed twice keeps its lowest preference.
    """
    best: dict[str, int] = {}
    for preference, host in records:
        if host not in best or preference < best[host]:
            best[host] = preference
    groups: dict[int, list[str]] = {}
    for host, preference in best.items():
        groups.setdefault(preference, []).append(host)
    ordered: list[tuple[int, str]] = []
    for preference in sorted(groups):
        hosts = sorted(groups[preference])  # a fixed start, so a seeded rng repeats itself
        rng.shuffle(hosts)
        ordered.extend((preference, host) for host in hosts)
    return ordered


def order_addresses(addresses: Iterable[str], prefer_ipv6: bool) -> tuple[str, ...]:
    """Unique addresses, one family before the other, each in the order given."""
    v4: list[str] = []
    v6: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text)
        family = v6 if address.version == 6 else v4
        canonical = str(address)
        if canonical not in family:
            family.append(canonical)
    return tuple(v6 + v4) if prefer_ipv6 else tuple(v4 + v6)


def discard_from_loop(
    hosts: Sequence[tuple[int, str]], is_local: Iterable[str]
) -> list[tuple[int, str]]:
    """RFC 5321 §5.1: when one of the hosts is this server, drop it and every host whose
    preference is not lower than its own (they would hand the message back to us)."""
    local = set(is_local)
    cutoff = min((p for p, host in hosts if host in local), default=None)
    if cutoff is None:
        return list(hosts)
    return [(p, host) for p, host in hosts if p < cutoff]


# ---------------------------------------------------------------- the resolver


@dataclass(frozen=True, slots=True)
class _Lookup:
    """One query's outcome: records (possibly none), NXDOMAIN, or a transient error."""

    values: tuple[str, ...] = ()
    nxdomain: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Addresses:
    addresses: tuple[str, ...]
    nxdomain: bool  # both queries said the name does not exist
    error: str  # a transient error on either query ("" if none)


class Resolver:
    """The one door to DNS for the transport.

    `local_names` and `local_addresses` identify this server (its FQDN, the names and
    addresses it receives mail on) for loop detection. Nothing is local by default:
    loopback addresses are not assumed to be ours, because a host on 127.0.0.x may well
    be another server (tests run remote servers there). `rng` orders MX hosts of equal
    preference; give a seeded one for a repeatable order.
    """

    def __init__(
        self,
        config: DnsConfig | None = None,
        *,
        local_names: Iterable[str] = (),
        local_addresses: Iterable[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or DnsConfig()
        self._rng = rng or random.Random()
        self._local_names = frozenset(normalize_name(n) for n in local_names)
        self._local_addresses: frozenset[IPAddress] = frozenset(
            ipaddress.ip_address(a) for a in local_addresses
        )
        self._resolver = self._build(self.config)

    @staticmethod
    def _build(config: DnsConfig) -> dns.asyncresolver.Resolver:
        if config.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            # Do53Nameserver carries its own port, so servers on different ports can mix.
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(ip, port)
                for ip, port in map(parse_nameserver, config.nameservers)
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                # No usable /etc/resolv.conf: start anyway (local delivery needs no DNS);
                # every outbound lookup then fails as transient and says why.
                resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.lifetime = config.timeout
        # Split the lookup's time among the servers, so a dead first one leaves time
        # to ask the next.
        servers = max(1, len(resolver.nameservers))
        resolver.timeout = min(config.timeout / servers, MAX_TRY_TIMEOUT)
        resolver.cache = dns.resolver.LRUCache(config.cache_size) if config.cache_size else None
        return resolver

    @property
    def nameservers(self) -> list[str]:
        """The servers asked, as "ip:port" or "[ipv6]:port" (for logs and diagnostics)."""
        shown: list[str] = []
        for ns in self._resolver.nameservers:
            if isinstance(ns, dns.nameserver.Do53Nameserver):
                address, port = ns.address, ns.port
            elif isinstance(ns, str) and ip_literal(ns) is not None:  # from resolv.conf
                address, port = ns, self._resolver.port
            else:  # DoH/DoT given by dnspython objects: their own notation
                shown.append(str(ns))
                continue
            shown.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        return shown

    def is_local_address(self, address: str) -> bool:
        return ipaddress.ip_address(address) in self._local_addresses

    # -- public lookups

    async def resolve_mx(self, domain: str) -> NextHops | DnsFailure:
        """The hosts to deliver mail for `domain` to, in order, or why there are none."""
        if domain.strip().startswith("["):  # user@[192.0.2.1]: the address is the destination
            literal = ip_literal(domain)
            if literal is None:
                return DnsFailure(True, STATUS_BAD_DOMAIN, f"invalid address literal {domain!r}")
            if self.is_local_address(literal):
                return DnsFailure(True, STATUS_LOOP, f"{domain} is this server (mail loop)")
            return NextHops(domain.strip(), (Host(domain.strip(), 0, (literal,)),), implicit=True)
        try:
            domain = normalize_name(domain)
        except InvalidName:
            return DnsFailure(True, STATUS_BAD_DOMAIN, f"invalid domain name {domain!r}")

        mx = await self._query(domain, "MX")
        if mx.nxdomain:
            return DnsFailure(True, STATUS_NO_DOMAIN, f"{domain}: domain does not exist (NXDOMAIN)")
        if mx.error:
            return DnsFailure(False, STATUS_DNS_TRANSIENT, f"{domain}: {mx.error}")
        implicit = not mx.values
        if implicit:  # RFC 5321 §5.1: no MX → the domain itself, preference 0
            candidates = [(0, domain)]
        else:
            records = [_split_mx(v) for v in mx.values]
            if len(records) == 1 and records[0][1] == "":
                return DnsFailure(
                    True, STATUS_NULL_MX, f"{domain} does not accept mail (null MX, RFC 7505)"
                )
            # A root target among other MX records is broken, not a null MX: skip it.
            candidates = order_mx(((p, h) for p, h in records if h), self._rng)
            if not candidates:
                return DnsFailure(False, STATUS_DNS_TRANSIENT, f"{domain}: no usable MX host")

        # Loop check by name first: hosts it discards need no address lookups.
        local_by_name = [h for _, h in candidates if h in self._local_names]
        kept = discard_from_loop(candidates, local_by_name)
        if not kept:
            return self._loop(domain, local_by_name)
        found = await asyncio.gather(*(self._addresses(host) for _, host in kept))
        resolved = list(zip(kept, found, strict=True))
        local_by_address = [
            host
            for (_, host), result in resolved
            if any(self.is_local_address(a) for a in result.addresses)
        ]
        kept = discard_from_loop(kept, local_by_address)
        if not kept:
            return self._loop(domain, local_by_address)

        hosts: list[Host] = []
        problems: list[str] = []
        for (preference, host), result in resolved:
            if (preference, host) not in kept:
                continue
            if result.addresses:
                hosts.append(Host(host, preference, result.addresses))
            else:  # RFC 5321 §5.1: an MX host without addresses is skipped
                problems.append(f"{host}: {_no_address_reason(result)}")
        if not hosts:
            return DnsFailure(
                False, STATUS_DNS_TRANSIENT, f"{domain}: no usable address ({'; '.join(problems)})"
            )
        return NextHops(domain, tuple(hosts), implicit)

    async def resolve_host(self, name: str) -> list[str] | DnsFailure:
        """The addresses of a smart host (an IP literal is returned as is, without DNS).

        Every failure is transient: a smart host is the administrator's setting, and a
        mistake in it should hold mail in the queue, not bounce it.
        """
        literal = ip_literal(name)
        if literal is not None:
            return [literal]
        try:
            host = normalize_name(name)
        except InvalidName:
            return DnsFailure(False, STATUS_DNS_TRANSIENT, f"invalid smart host name {name!r}")
        result = await self._addresses(host)
        if result.addresses:
            return list(result.addresses)
        return DnsFailure(
            False, STATUS_DNS_TRANSIENT, f"smart host {host}: {_no_address_reason(result)}"
        )

    # -- internals

    def _loop(self, domain: str, local_hosts: Sequence[str]) -> DnsFailure:
        names = ", ".join(local_hosts)
        return DnsFailure(
            True, STATUS_LOOP, f"{domain}: the best mail exchanger is this server ({names}): loop"
        )

    async def _addresses(self, host: str) -> _Addresses:
        """AAAA and A for `host`, asked at once, ordered by the configured preference."""
        aaaa, a = await asyncio.gather(self._query(host, "AAAA"), self._query(host, "A"))
        addresses = order_addresses((*aaaa.values, *a.values), self.config.prefer_ipv6)
        return _Addresses(addresses, aaaa.nxdomain and a.nxdomain, aaaa.error or a.error)

    async def _query(self, name: str, rdtype: str) -> _Lookup:
        if not self._resolver.nameservers:
            return _Lookup(error="no DNS servers configured")
        qname = dns.name.from_text(name, origin=dns.name.root)  # absolute: no search list
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return _Lookup(nxdomain=True)
        except dns.exception.Timeout:
            return _Lookup(error=f"{rdtype} query timed out after {self.config.timeout:g} s")
        except dns.resolver.NoNameservers:
            return _Lookup(error=f"{rdtype} query: server failure (SERVFAIL or refused)")
        except dns.exception.DNSException as exc:
            return _Lookup(error=f"{rdtype} query: {exc}")
        if answer.rrset is None:  # NOERROR without records of this type ("NoAnswer")
            return _Lookup()
        return _Lookup(values=tuple(rdata.to_text() for rdata in answer.rrset))


def _split_mx(text: str) -> tuple[int, str]:
    """An MX rdata's text "10 mx.example.com." → (10, "mx.example.com"); "0 ." → (0, "")."""
    preference, _, exchange = text.partition(" ")
    return int(preference), exchange.rstrip(".").lower()


def _no_address_reason(result: _Addresses) -> str:
    if result.error:
        return result.error
    if result.nxdomain:
        return "name does not exist (NXDOMAIN)"
    return "no A or AAAA records"
