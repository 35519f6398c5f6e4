"""Send connector selection: most specific address space, then lowest cost."""

from __future__ import annotations

import pytest

from postwerk.core.errors import InvalidName
from postwerk.store.records import AddressSpace, SendConnector
from postwerk.transport.routing import (
    choose_connector,
    parse_address_space,
    parse_smart_host,
    parse_smtp_hop,
    route,
    specificity,
    validate_send_connector,
)


def conn(name: str, *spaces: str, **kw: object) -> SendConnector:
    return SendConnector(name, tuple(parse_address_space(s) for s in spaces), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", AddressSpace("*", 1)),
        ("*;5", AddressSpace("*", 5)),
        ("SMTP:example.COM;2", AddressSpace("example.com", 2)),
        ("*.Example.com", AddressSpace("*.example.com", 1)),
        ("bücher.example", AddressSpace("xn--bcher-kva.example", 1)),
        ("example.com.", AddressSpace("example.com", 1)),
    ],
)
def test_parse_address_space(text: str, expected: AddressSpace) -> None:
    assert parse_address_space(text) == expected


@pytest.mark.parametrize("text", ["", "exa mple.com", "*;0", "*;101", "*;x", "a..b", "*.*"])
def test_parse_address_space_rejects(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_address_space(text)


def test_specificity_order() -> None:
    d = "mail.eu.example.com"
    scores = {
        p: specificity(p, d)
        for p in [
            "*",
            "*.com",
            "*.example.com",
            "*.eu.example.com",
            d,
            "example.com",
            "*.other.com",
        ]
    }
    assert scores["example.com"] is None and scores["*.other.com"] is None
    assert scores["*"] < scores["*.com"] < scores["*.example.com"] < scores["*.eu.example.com"]  # type: ignore[operator]
    assert scores["*.eu.example.com"] < scores[d]  # type: ignore[operator]
    # An exact match beats a wildcard for the same domain; a wildcard includes its base.
    assert specificity("example.com", "example.com") > specificity("*.example.com", "example.com")  # type: ignore[operator]


def test_most_specific_then_cost_then_name() -> None:
    internet = conn("Internet", "*;1")
    partner = conn("Partner", "partner.test;10")
    cheap = conn("B cheap", "*.partner.test;1")
    dear = conn("A dear", "*.partner.test;5")
    tie = conn("A tie", "*.partner.test;1")
    cs = [internet, partner, cheap, dear]
    assert choose_connector(cs, "elsewhere.test") is internet
    assert (
        choose_connector(cs, "partner.test") is partner
    )  # exact beats wildcard, whatever the cost
    assert choose_connector(cs, "x.partner.test") is cheap
    assert choose_connector([*cs, tie], "x.partner.test") is tie  # same cost: by name
    assert choose_connector([partner], "other.test") is None


def test_disabled_and_source_servers() -> None:
    off = conn("Off", "*", enabled=False)
    only_b = conn("Only B", "*", source_servers=("mbx-b",))
    assert choose_connector([off], "x.test") is None
    assert choose_connector([only_b], "x.test", server="mbx-a") is None
    assert choose_connector([only_b], "x.test", server="mbx-b") is only_b


def test_next_hops() -> None:
    dns = route([conn("Internet", "*")], "example.org")
    assert dns is not None and dns.next_hop == "smtp:Internet:example.org"
    smart = route([conn("Relay", "*", smart_hosts=("relay.isp.test:587",))], "example.org")
    assert smart is not None and smart.next_hop == "smtp:Relay"
    assert parse_smtp_hop("smtp:Internet:example.org") == ("Internet", "example.org")
    assert parse_smtp_hop("smtp:Relay") == ("Relay", None)
    with pytest.raises(ValueError):
        parse_smtp_hop("mailbox:3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("relay.isp.test", ("relay.isp.test", None)),
        ("Relay.ISP.test:587", ("relay.isp.test", 587)),
        ("[192.0.2.1]", ("192.0.2.1", None)),
        ("[2001:db8::1]:25", ("2001:db8::1", 25)),
    ],
)
def test_parse_smart_host(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_smart_host(text) == expected


@pytest.mark.parametrize(
    "text",
    ["[192.0.2.1", "[not-an-ip]", "[192.0.2.1]587", "host:0", "host:70000", "host:x", "a..b"],
)
def test_parse_smart_host_rejects(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_smart_host(text)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"name": "a:b"}, "name"),
        ({"name": " padded"}, "name"),
        ({"address_spaces": ()}, "address space"),
        ({"tls": "maybe"}, "TLS policy"),
        ({"port": 0}, "port"),
        ({"auth_user": "u"}, "both a user and a password"),
        ({"auth_user": "u", "auth_password": "p"}, "smart hosts"),
        (
            {"auth_user": "u", "auth_password": "p", "smart_hosts": ("h",), "tls": "none"},
            "needs TLS",
        ),
        ({"smart_hosts": ("[bad",)}, "smart host"),
        ({"max_message_size": 0}, "max message size"),
    ],
)
def test_validate_send_connector_refuses(changes: dict[str, object], reason: str) -> None:
    import dataclasses

    good = conn("Internet", "*")
    assert validate_send_connector(good) is good
    with pytest.raises(InvalidName, match=reason):
        validate_send_connector(dataclasses.replace(good, **changes))  # type: ignore[arg-type]
