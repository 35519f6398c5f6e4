"""Next-hop resolution (transport/dns.py) against a real DNS server on loopback (dnslib)."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import pytest

from postwerk.transport.dns import (
    DnsConfig,
    DnsFailure,
    Host,
    NextHops,
    Resolver,
    order_mx,
)
from tests import dnsserver
from tests.dnsserver import LocalDns, free_udp_port

local_dns = dnsserver.local_dns  # the shared fixture, made visible to pytest in this module


def resolver(
    dns: LocalDns,
    seed: int = 1,
    config: DnsConfig | None = None,
    local_names: Sequence[str] = (),
    local_addresses: Sequence[str] = (),
) -> Resolver:
    """A resolver asking `dns` only, with a seeded shuffle."""
    return Resolver(
        config or dns.config(),
        local_names=local_names,
        local_addresses=local_addresses,
        rng=random.Random(seed),
    )


async def next_hops(r: Resolver, domain: str) -> NextHops:
    result = await r.resolve_mx(domain)
    assert isinstance(result, NextHops), result
    return result


async def failure(r: Resolver, domain: str) -> DnsFailure:
    result = await r.resolve_mx(domain)
    assert isinstance(result, DnsFailure), result
    return result


# ---------------------------------------------------------------- MX order


async def test_mx_hosts_in_preference_order(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "20 mx2.example.test")
    local_dns.add("example.test", "MX", "10 mx1.example.test")
    local_dns.add("example.test", "MX", "30 mx3.example.test")
    for i in (1, 2, 3):
        local_dns.add(f"mx{i}.example.test", "A", f"127.0.0.{i + 1}")

    hops = await next_hops(resolver(local_dns), "example.test")

    assert hops == NextHops(
        "example.test",
        (
            Host("mx1.example.test", 10, ("127.0.0.2",)),
            Host("mx2.example.test", 20, ("127.0.0.3",)),
            Host("mx3.example.test", 30, ("127.0.0.4",)),
        ),
        implicit=False,
    )


async def test_equal_preferences_are_shuffled_repeatably(local_dns: LocalDns) -> None:
    names = [f"mx{i}.example.test" for i in range(5)]
    for i, name in enumerate(names):
        local_dns.add("example.test", "MX", f"10 {name}")
        local_dns.add(name, "A", f"127.0.1.{i + 1}")
    local_dns.add("example.test", "MX", "20 backup.example.test")
    local_dns.add("backup.example.test", "A", "127.0.2.1")

    orders: set[tuple[str, ...]] = set()
    for seed in range(12):
        hops = await next_hops(resolver(local_dns, seed), "example.test")
        order = tuple(h.name for h in hops.hosts)
        assert sorted(order[:5]) == sorted(names)  # the equals first, in some order
        assert order[5] == "backup.example.test"  # the worse preference always last
        # The same seed gives the order the pure helper gives: the shuffle is injected.
        expected = order_mx(
            [(10, n) for n in names] + [(20, "backup.example.test")], random.Random(seed)
        )
        assert order == tuple(h for _, h in expected)
        orders.add(order)
    assert len(orders) > 1  # and the order really varies


async def test_same_resolver_varies_order_between_lookups(local_dns: LocalDns) -> None:
    for i in range(4):
        local_dns.add("example.test", "MX", f"5 mx{i}.example.test")
        local_dns.add(f"mx{i}.example.test", "A", f"127.0.3.{i + 1}")
    r = resolver(local_dns, seed=7)
    firsts = {(await next_hops(r, "example.test")).hosts[0].name for _ in range(20)}
    assert len(firsts) > 1  # load spreads over equal MX hosts


async def test_many_mx_records_come_back_over_tcp(local_dns: LocalDns) -> None:
    for i in range(40):  # far over 512 bytes: the UDP answer is truncated
        local_dns.add("big.test", "MX", f"{i} mx{i:02d}.big.test")
    local_dns.add("mx00.big.test", "A", "127.0.4.1")

    hops = await next_hops(resolver(local_dns), "big.test")

    assert [h.name for h in hops.hosts] == ["mx00.big.test"]  # the others have no address
    assert any(q.name == "big.test" and q.protocol == "tcp" for q in local_dns.queries)


async def test_names_are_case_insensitive_and_may_end_in_a_dot(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 MX.Example.Test")
    local_dns.add("mx.example.test", "A", "127.0.0.2")
    hops = await next_hops(resolver(local_dns), "EXAMPLE.Test.")
    assert hops.domain == "example.test"
    assert hops.hosts == (Host("mx.example.test", 10, ("127.0.0.2",)),)


async def test_idna_domain_and_mx_host(local_dns: LocalDns) -> None:
    local_dns.add("xn--bcher-kva.test", "MX", "10 xn--mx-bcher-95a.test")
    local_dns.add("mx-bücher.test", "A", "127.0.0.2")  # the server stores A-labels
    hops = await next_hops(resolver(local_dns), "Bücher.test")
    assert hops.domain == "xn--bcher-kva.test"
    assert hops.hosts == (Host("xn--mx-bcher-95a.test", 10, ("127.0.0.2",)),)
    assert {q.name for q in local_dns.queries} >= {"xn--bcher-kva.test", "xn--mx-bcher-95a.test"}


async def test_mx_host_behind_a_cname(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 mail.example.test")
    local_dns.add("mail.example.test", "CNAME", "real.example.test")
    local_dns.add("real.example.test", "A", "127.0.0.2")
    hops = await next_hops(resolver(local_dns), "example.test")
    assert hops.hosts == (Host("mail.example.test", 10, ("127.0.0.2",)),)


# ---------------------------------------------------------------- addresses


async def test_ipv4_first_then_ipv6_by_default(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 mx.example.test")
    local_dns.add("mx.example.test", "AAAA", "2001:db8::25")
    local_dns.add("mx.example.test", "AAAA", "::1")
    local_dns.add("mx.example.test", "A", "127.0.0.2")

    hops = await next_hops(resolver(local_dns), "example.test")
    assert hops.hosts[0].addresses[0] == "127.0.0.2"
    assert set(hops.hosts[0].addresses[1:]) == {"2001:db8::25", "::1"}
    queried = {q.rtype for q in local_dns.queries if q.name == "mx.example.test"}
    assert queried == {"A", "AAAA"}


async def test_prefer_ipv6_puts_ipv6_first(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 mx.example.test")
    local_dns.add("mx.example.test", "AAAA", "2001:db8::25")
    local_dns.add("mx.example.test", "A", "127.0.0.2")
    r = resolver(local_dns, config=local_dns.config(prefer_ipv6=True))
    hops = await next_hops(r, "example.test")
    assert hops.hosts[0].addresses == ("2001:db8::25", "127.0.0.2")


async def test_ipv6_only_host(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 mx.example.test")
    local_dns.add("mx.example.test", "AAAA", "2001:DB8:0:0::25")
    hops = await next_hops(resolver(local_dns), "example.test")
    assert hops.hosts == (Host("mx.example.test", 10, ("2001:db8::25",)),)


# ---------------------------------------------------------------- implicit and null MX


async def test_implicit_mx_uses_the_domains_own_addresses(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "A", "127.0.0.5")
    local_dns.add("example.test", "AAAA", "2001:db8::5")
    local_dns.add("example.test", "TXT", "v=spf1 -all")

    hops = await next_hops(resolver(local_dns), "example.test")

    assert hops == NextHops(
        "example.test", (Host("example.test", 0, ("127.0.0.5", "2001:db8::5")),), implicit=True
    )


async def test_no_mx_and_no_address_is_transient(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "TXT", "exists, but receives no mail")
    result = await failure(resolver(local_dns), "example.test")
    assert (result.permanent, result.status) == (False, "4.4.3")
    assert "no A or AAAA" in result.reason


async def test_null_mx_is_permanent_5_1_10(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "0 .")
    local_dns.add("example.test", "A", "127.0.0.5")  # must not be used as an implicit MX
    result = await failure(resolver(local_dns), "example.test")
    assert (result.permanent, result.status) == (True, "5.1.10")
    assert "null MX" in result.reason
    assert [q.rtype for q in local_dns.queries] == ["MX"]


async def test_root_target_among_real_mx_is_skipped(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "0 .")
    local_dns.add("example.test", "MX", "10 mx.example.test")
    local_dns.add("mx.example.test", "A", "127.0.0.2")
    hops = await next_hops(resolver(local_dns), "example.test")
    assert [h.name for h in hops.hosts] == ["mx.example.test"]


# ---------------------------------------------------------------- failures


async def test_nxdomain_is_permanent_5_4_4(local_dns: LocalDns) -> None:
    result = await failure(resolver(local_dns), "nowhere.test")
    assert (result.permanent, result.status) == (True, "5.4.4")
    assert "nowhere.test" in result.reason


async def test_servfail_is_transient_4_4_3(local_dns: LocalDns) -> None:
    local_dns.servfail("example.test")
    result = await failure(resolver(local_dns), "example.test")
    assert (result.permanent, result.status) == (False, "4.4.3")
    assert "SERVFAIL" in result.reason


async def test_timeout_is_transient_4_4_3(local_dns: LocalDns) -> None:
    local_dns.drop("example.test")
    r = resolver(local_dns, config=local_dns.config(timeout=0.4))
    started = time.monotonic()
    result = await failure(r, "example.test")
    assert (result.permanent, result.status) == (False, "4.4.3")
    assert "timed out" in result.reason
    assert time.monotonic() - started < 3
    assert any(q.name == "example.test" for q in local_dns.queries)  # asked, never answered


async def test_no_server_listening_is_transient() -> None:
    config = DnsConfig(nameservers=(f"127.0.0.1:{free_udp_port()}",), timeout=0.3)
    result = await failure(Resolver(config), "example.test")
    assert (result.permanent, result.status) == (False, "4.4.3")


async def test_second_nameserver_answers_when_the_first_is_dead(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 mx.example.test")
    local_dns.add("mx.example.test", "A", "127.0.0.2")
    dead = f"127.0.0.1:{free_udp_port()}"
    # 1 s for two servers: half a second each, so the dead one cannot use up the lookup.
    r = Resolver(DnsConfig(nameservers=(dead, local_dns.nameserver), timeout=1, cache_size=0))
    assert r.nameservers == [dead, local_dns.nameserver]  # each with its own port
    hops = await next_hops(r, "example.test")
    assert hops.hosts[0].addresses == ("127.0.0.2",)


async def test_invalid_domain_is_permanent_5_1_2(local_dns: LocalDns) -> None:
    result = await failure(resolver(local_dns), "bad..domain")
    assert (result.permanent, result.status) == (True, "5.1.2")
    assert local_dns.queries == []


# ---------------------------------------------------------------- hosts without addresses


async def test_mx_hosts_without_addresses_are_skipped(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 gone.example.test")  # NXDOMAIN
    local_dns.add("example.test", "MX", "20 empty.example.test")  # exists, no A/AAAA
    local_dns.add("empty.example.test", "TXT", "nothing here")
    local_dns.add("example.test", "MX", "25 broken.example.test")  # SERVFAIL
    local_dns.servfail("broken.example.test")
    local_dns.add("example.test", "MX", "30 good.example.test")
    local_dns.add("good.example.test", "A", "127.0.0.9")

    hops = await next_hops(resolver(local_dns), "example.test")

    assert hops.hosts == (Host("good.example.test", 30, ("127.0.0.9",)),)


async def test_no_mx_host_with_an_address_is_transient(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 gone.example.test")
    local_dns.add("example.test", "MX", "20 broken.example.test")
    local_dns.servfail("broken.example.test")

    result = await failure(resolver(local_dns), "example.test")

    assert (result.permanent, result.status) == (False, "4.4.3")
    assert "gone.example.test" in result.reason and "broken.example.test" in result.reason


# ---------------------------------------------------------------- loops


async def test_best_mx_is_us_by_name_is_a_loop_5_4_6(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 mail.ours.test")
    local_dns.add("example.test", "MX", "20 backup.example.test")
    local_dns.add("mail.ours.test", "A", "127.0.0.2")
    local_dns.add("backup.example.test", "A", "127.0.0.3")

    r = resolver(local_dns, local_names=["Mail.Ours.Test."])
    result = await failure(r, "example.test")

    assert (result.permanent, result.status) == (True, "5.4.6")
    assert "loop" in result.reason
    assert {q.name for q in local_dns.queries} == {"example.test"}  # hosts never resolved


async def test_hosts_not_better_than_us_are_discarded(local_dns: LocalDns) -> None:
    # We are the backup MX (20): deliver only to the better one, never to an equal or worse.
    local_dns.add("example.test", "MX", "10 primary.example.test")
    local_dns.add("example.test", "MX", "20 mail.ours.test")
    local_dns.add("example.test", "MX", "20 peer.example.test")
    local_dns.add("example.test", "MX", "30 last.example.test")
    for name in (
        "primary.example.test",
        "mail.ours.test",
        "peer.example.test",
        "last.example.test",
    ):
        local_dns.add(name, "A", "127.0.0.2")

    hops = await next_hops(resolver(local_dns, local_names=["mail.ours.test"]), "example.test")

    assert [h.name for h in hops.hosts] == ["primary.example.test"]


async def test_backup_mx_with_unreachable_primary_waits(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 primary.example.test")  # no address (yet)
    local_dns.add("example.test", "MX", "20 mail.ours.test")
    result = await failure(resolver(local_dns, local_names=["mail.ours.test"]), "example.test")
    assert (result.permanent, result.status) == (False, "4.4.3")


async def test_best_mx_is_us_by_address_is_a_loop(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 alias-of-us.example.test")
    local_dns.add("alias-of-us.example.test", "AAAA", "2001:db8::1")
    local_dns.add("alias-of-us.example.test", "A", "127.0.0.7")
    local_dns.add("example.test", "MX", "10 other.example.test")
    local_dns.add("other.example.test", "A", "127.0.0.8")

    r = resolver(local_dns, local_addresses=["127.0.0.7"])
    result = await failure(r, "example.test")
    assert (result.permanent, result.status) == (True, "5.4.6")

    # An address of ours at a worse preference only cuts that host and those after it.
    local_dns.add("example.test", "MX", "5 better.example.test")
    local_dns.add("better.example.test", "A", "127.0.0.9")
    hops = await next_hops(r, "example.test")
    assert [h.name for h in hops.hosts] == ["better.example.test"]


async def test_implicit_mx_pointing_at_us_is_a_loop(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "AAAA", "2001:db8::1")
    r = resolver(local_dns, local_addresses=["2001:db8:0::1"])
    result = await failure(r, "example.test")
    assert (result.permanent, result.status) == (True, "5.4.6")


async def test_loopback_is_not_ourselves_by_default(local_dns: LocalDns) -> None:
    local_dns.add("example.test", "MX", "10 mx.example.test")
    local_dns.add("mx.example.test", "A", "127.0.0.1")
    local_dns.add("mx.example.test", "AAAA", "::1")
    hops = await next_hops(resolver(local_dns), "example.test")
    assert hops.hosts[0].addresses == ("127.0.0.1", "::1")


async def test_address_literal_domain(local_dns: LocalDns) -> None:
    r = resolver(local_dns, local_addresses=["127.0.0.1"])
    hops = await next_hops(r, "[127.0.0.8]")
    assert hops == NextHops("[127.0.0.8]", (Host("[127.0.0.8]", 0, ("127.0.0.8",)),), True)
    assert (await failure(r, "[127.0.0.1]")).status == "5.4.6"
    assert (await failure(r, "[not-an-ip]")).status == "5.1.2"
    assert local_dns.queries == []


# ---------------------------------------------------------------- resolve_host (smart hosts)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("192.0.2.25", ["192.0.2.25"]),
        ("[192.0.2.25]", ["192.0.2.25"]),
        ("2001:db8::25", ["2001:db8::25"]),
        ("[IPv6:2001:DB8::25]", ["2001:db8::25"]),
    ],
)
async def test_resolve_host_ip_literal_needs_no_dns(
    local_dns: LocalDns, name: str, expected: list[str]
) -> None:
    assert await resolver(local_dns).resolve_host(name) == expected
    assert local_dns.queries == []


async def test_resolve_host_by_name(local_dns: LocalDns) -> None:
    local_dns.add("relay.isp.test", "A", "127.0.0.20")
    local_dns.add("relay.isp.test", "AAAA", "2001:db8::20")
    r = resolver(local_dns)
    assert await r.resolve_host("Relay.ISP.test.") == ["127.0.0.20", "2001:db8::20"]
    r6 = resolver(local_dns, config=local_dns.config(prefer_ipv6=True))
    assert await r6.resolve_host("relay.isp.test") == ["2001:db8::20", "127.0.0.20"]


async def test_resolve_host_failures_are_transient(local_dns: LocalDns) -> None:
    local_dns.servfail("broken.isp.test")
    r = resolver(local_dns)
    for name in ("missing.isp.test", "broken.isp.test"):
        result = await r.resolve_host(name)
        assert isinstance(result, DnsFailure)
        assert (result.permanent, result.status) == (False, "4.4.3")
        assert name in result.reason


async def test_zone_changes_are_seen_by_the_next_lookup(local_dns: LocalDns) -> None:
    # What later tests rely on: TTL 0 records and a cache that keeps nothing stale.
    r = resolver(local_dns, config=local_dns.config(cache_size=100))
    assert (await failure(r, "example.test")).status == "5.4.4"
    local_dns.add("example.test", "A", "127.0.0.5")
    assert (await next_hops(r, "example.test")).implicit


def test_works_on_uvloop(local_dns: LocalDns) -> None:
    # `postwerk serve` runs on uvloop: dnspython's asyncio backend must work there too.
    uvloop = pytest.importorskip("uvloop")
    local_dns.add("example.test", "MX", "10 mx.example.test")
    local_dns.add("mx.example.test", "A", "127.0.0.2")
    local_dns.add("big.test", "MX", "10 mx.example.test")
    for i in range(40):
        local_dns.add("big.test", "MX", f"{i + 20} mx{i:02d}.big.test")

    async def both() -> tuple[NextHops | DnsFailure, NextHops | DnsFailure]:
        r = resolver(local_dns)
        return await r.resolve_mx("example.test"), await r.resolve_mx("big.test")

    small, big = uvloop.run(both())
    assert isinstance(small, NextHops) and small.hosts[0].addresses == ("127.0.0.2",)
    assert isinstance(big, NextHops) and [h.name for h in big.hosts] == ["mx.example.test"]
    assert any(q.protocol == "tcp" for q in local_dns.queries)  # TCP fallback on uvloop too
