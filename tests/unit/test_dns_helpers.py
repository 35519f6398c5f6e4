"""transport/dns.py helpers and configuration, without any network."""

from __future__ import annotations

import random

import dns.asyncresolver
import dns.resolver
import pytest

from postwerk.core.errors import InvalidName
from postwerk.transport.dns import (
    MAX_TRY_TIMEOUT,
    DnsConfig,
    DnsFailure,
    Resolver,
    discard_from_loop,
    ip_literal,
    normalize_name,
    order_addresses,
    order_mx,
    parse_nameserver,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        (" 192.0.2.53:53 ", ("192.0.2.53", 53)),
        ("::1", ("::1", 53)),
        ("2001:DB8::53", ("2001:db8::53", 53)),
        ("[::1]", ("::1", 53)),
        ("[2001:db8::53]:5300", ("2001:db8::53", 5300)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "dns.example.com", "dns.example.com:53", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000",
     "127.0.0.1:x", "[::1", "[::1]5353", "[::1]:", "1.2.3:53"],
)  # fmt: skip
def test_parse_nameserver_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("[192.0.2.1]", "192.0.2.1"),
        ("::1", "::1"),
        ("[IPv6:2001:DB8:0::1]", "2001:db8::1"),
        ("[ipv6:::1]", "::1"),
        ("[2001:db8::1]", "2001:db8::1"),  # lenient: the tag is often forgotten
        ("mail.example.com", None),
        ("[mail.example.com]", None),
        ("[IPv6:192.0.2.1x]", None),
        ("999.1.1.1", None),
    ],
)
def test_ip_literal(text: str, expected: str | None) -> None:
    assert ip_literal(text) == expected


def test_normalize_name() -> None:
    assert normalize_name("Example.COM.") == "example.com"
    assert normalize_name("Bücher.Example") == "xn--bcher-kva.example"
    assert normalize_name("xn--bcher-kva.example") == "xn--bcher-kva.example"
    for bad in ("", ".", "a..b", "-a.example", "a b.example"):
        with pytest.raises(InvalidName):
            normalize_name(bad)


def test_order_mx_sorts_by_preference_and_dedupes() -> None:
    records = [(20, "b"), (10, "a"), (30, "c"), (40, "a")]
    assert order_mx(records, random.Random(0)) == [(10, "a"), (20, "b"), (30, "c")]


def test_order_mx_shuffles_only_within_equal_preferences() -> None:
    records = [(10, h) for h in "abcdef"] + [(5, "first"), (99, "last")]
    seen: set[tuple[str, ...]] = set()
    for seed in range(30):
        ordered = order_mx(records, random.Random(seed))
        assert ordered[0] == (5, "first") and ordered[-1] == (99, "last")
        assert sorted(h for _, h in ordered[1:-1]) == list("abcdef")
        assert order_mx(list(reversed(records)), random.Random(seed)) == ordered  # input order
        seen.add(tuple(h for _, h in ordered))
    assert len(seen) > 10


def test_order_addresses() -> None:
    given = ["2001:db8::1", "192.0.2.2", "2001:DB8:0::1", "192.0.2.1", "192.0.2.2"]
    assert order_addresses(given, prefer_ipv6=False) == ("192.0.2.2", "192.0.2.1", "2001:db8::1")
    assert order_addresses(given, prefer_ipv6=True) == ("2001:db8::1", "192.0.2.2", "192.0.2.1")
    assert order_addresses([], prefer_ipv6=False) == ()


def test_discard_from_loop_follows_rfc_5321_5_1() -> None:
    hosts = [(10, "a"), (20, "us"), (20, "peer"), (30, "z")]
    assert discard_from_loop(hosts, []) == hosts
    assert discard_from_loop(hosts, ["us"]) == [(10, "a")]
    assert discard_from_loop(hosts, ["z"]) == [(10, "a"), (20, "us"), (20, "peer")]
    assert discard_from_loop(hosts, ["a", "z"]) == []


def test_config_validation() -> None:
    assert DnsConfig().nameservers == ()
    with pytest.raises(ValueError, match="IP address"):
        DnsConfig(nameservers=("ns.example.com",))
    with pytest.raises(ValueError):
        DnsConfig(timeout=0)
    with pytest.raises(ValueError):
        DnsConfig(cache_size=-1)


def test_resolver_uses_the_configured_servers_ports_and_timeouts() -> None:
    config = DnsConfig(nameservers=("127.0.0.1:5353", "[::1]:5300", "192.0.2.53"), timeout=3)
    r = Resolver(config)
    assert r.nameservers == ["127.0.0.1:5353", "[::1]:5300", "192.0.2.53:53"]
    inner = r._resolver
    assert inner.lifetime == 3
    assert inner.timeout == pytest.approx(1.0)  # shared by three servers
    assert isinstance(inner.cache, dns.resolver.LRUCache)
    assert Resolver(DnsConfig(nameservers=("127.0.0.1",), timeout=30))._resolver.timeout == (
        MAX_TRY_TIMEOUT
    )
    assert Resolver(DnsConfig(nameservers=("127.0.0.1",), cache_size=0))._resolver.cache is None


def test_local_identity_is_normalized() -> None:
    r = Resolver(
        DnsConfig(nameservers=("127.0.0.1",)),
        local_names=["Mail.Bücher.Example."],
        local_addresses=["2001:DB8::1"],
    )
    assert r._local_names == {"mail.xn--bcher-kva.example"}
    assert r.is_local_address("2001:db8:0:0::1")
    assert not r.is_local_address("127.0.0.1")  # loopback is not assumed to be us


async def test_without_system_configuration_lookups_fail_as_transient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = dns.asyncresolver.Resolver

    def no_resolv_conf(configure: bool = True) -> dns.asyncresolver.Resolver:
        if configure:
            raise dns.resolver.NoResolverConfiguration("no /etc/resolv.conf")
        return real(configure=False)

    monkeypatch.setattr(dns.asyncresolver, "Resolver", no_resolv_conf)
    r = Resolver(DnsConfig())  # empty list → system configuration, which is missing
    assert r.nameservers == []
    result = await r.resolve_mx("example.com")
    assert result == DnsFailure(False, "4.4.3", "example.com: no DNS servers configured")
    assert isinstance(await r.resolve_host("relay.example.com"), DnsFailure)
    assert await r.resolve_host("[192.0.2.1]") == ["192.0.2.1"]  # literals need no DNS


def test_empty_list_uses_the_system_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    real = dns.asyncresolver.Resolver
    calls: list[bool] = []

    def system(configure: bool = True) -> dns.asyncresolver.Resolver:
        calls.append(configure)
        resolver = real(configure=False)
        resolver.nameservers = ["192.0.2.53"]  # as if read from /etc/resolv.conf
        return resolver

    monkeypatch.setattr(dns.asyncresolver, "Resolver", system)
    r = Resolver(DnsConfig(timeout=4))
    assert calls == [True]
    assert r.nameservers == ["192.0.2.53:53"]
    assert r._resolver.lifetime == 4
