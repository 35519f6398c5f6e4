"""Modified UTF-7 mailbox names and name validation (postwerk.protocols.imap.utf7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postwerk.protocols.imap.utf7 import (
    MAX_LEVELS,
    MAX_NAME_OCTETS,
    decode_mailbox,
    encode_mailbox,
    valid_mailbox_name,
)

PAIRS: list[tuple[str, str]] = [
    # RFC 3501 §5.1.3 examples
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("&Jjo!", "&-Jjo!"),
    # plain printable ASCII is itself
    ("", ""),
    ("INBOX", "INBOX"),
    ("Sent Items", "Sent Items"),
    (" ~!\"#$%'()*+,-./:;<=>?@[\\]^_`{|}", " ~!\"#$%'()*+,-./:;<=>?@[\\]^_`{|}"),
    # "&" alone and in runs
    ("&", "&-"),
    ("&&", "&-&-"),
    ("a&b", "a&-b"),
    # RFC 2152-style examples, modified alphabet
    ("☺!", "&Jjo-!"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Gelöschte Elemente", "Gel&APY-schte Elemente"),
    ("éé", "&AOkA6Q-"),  # one run, not two
    ("é&é", "&AOk-&-&AOk-"),  # "&-" separates encoded runs legitimately
    ("Черновики", "&BCcENQRABD0EPgQyBDgEOgQ4-"),
    # outside the BMP: a surrogate pair in one run
    ("😀", "&2D3eAA-"),
    # "/" of base64 is "," (bits 111111 appear in U+FFFF)
    ("\uffff", "&,,8-"),
    # control characters and DEL are encoded, never sent raw
    ("a\x00b", "a&AAA-b"),
    ("a\r\nb", "a&AA0ACg-b"),
    ("\x7f", "&AH8-"),
]


@pytest.mark.parametrize(("name", "wire"), PAIRS)
def test_encode(name: str, wire: str) -> None:
    assert encode_mailbox(name) == wire


@pytest.mark.parametrize(("name", "wire"), PAIRS)
def test_decode(name: str, wire: str) -> None:
    assert decode_mailbox(wire) == name


MALFORMED: list[tuple[str, str]] = [
    ("&", "'&' not closed"),
    ("&Jjo", "'&' not closed"),
    ("abc&", "'&' not closed"),
    ("&AGE-", "printable US-ASCII"),  # "a" encoded
    ("&ACY-", "printable US-ASCII"),  # "&" encoded instead of "&-"
    ("&AC8-", "printable US-ASCII"),  # "/" encoded: would hide a hierarchy level
    ("&AOkAYQ-", "printable US-ASCII"),  # printable char inside a longer run
    ("&U,BTF-", "bad length"),  # 5 chars: 30 bits, 3 octets (odd)
    ("&A-", "bad length"),  # 6 bits: no whole octet
    ("&AOkA-", "bad length"),  # 24 bits: 3 octets, half a UTF-16 unit left over
    ("&AOkA6ADqA-", "bad length"),  # 54 bits = 6 octets, but 8 chars carry them: extra char
    ("&U,BTFx-", "padding bits"),
    ("&AOl-", "padding bits"),
    ("&AOk=-", "invalid character"),  # "=" padding is not used
    ("&AO/-", "invalid character"),  # "/" instead of ","
    ("&AO k-", "invalid character"),
    ("&2D0-", "surrogate"),  # lone high surrogate
    ("&3gA-", "surrogate"),  # lone low surrogate
    ("&2D3YPQ-", "surrogate"),  # high followed by high
    ("&AOk-&AOk-", "two modified base64 runs"),
    ("é", "outside printable"),
    ("a\tb", "outside printable"),
    ("a\r\nb", "outside printable"),
    ("\x7f", "outside printable"),
]


@pytest.mark.parametrize(("wire", "reason"), MALFORMED)
def test_decode_rejects(wire: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_mailbox(wire)


def test_encode_lone_surrogate_raises_value_error() -> None:
    with pytest.raises(ValueError):
        encode_mailbox("a\ud800b")


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_round_trip(name: str) -> None:
    wire = encode_mailbox(name)
    assert all(0x20 <= ord(c) <= 0x7E for c in wire)
    assert decode_mailbox(wire) == name


@given(st.text())
def test_decode_raises_only_value_error(text: str) -> None:
    try:
        name = decode_mailbox(text)
    except ValueError:
        return
    # whatever decodes is canonical: it encodes back to the same text
    assert encode_mailbox(name) == text


@given(st.text(alphabet="&-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,/=a"))
def test_decode_base64_like_input_is_canonical_or_rejected(text: str) -> None:
    try:
        name = decode_mailbox(text)
    except ValueError:
        return
    assert encode_mailbox(name) == text


VALID_NAMES = [
    "INBOX",
    "Sent Items",
    "Archive/2024/Q1",
    "Entwürfe",
    "a.b",
    "...x",
    "/".join(["x"] * MAX_LEVELS),
    "é" * (MAX_NAME_OCTETS // 2),
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name: str) -> None:
    assert valid_mailbox_name(name) is None


INVALID_NAMES: list[tuple[str, str]] = [
    ("", "empty mailbox name"),
    ("/a", "hierarchy delimiter"),
    ("a/", "hierarchy delimiter"),
    ("/", "hierarchy delimiter"),
    ("a//b", "empty hierarchy level"),
    (".", "'.' or '..'"),
    ("..", "'.' or '..'"),
    ("a/../b", "'.' or '..'"),
    ("a/./b", "'.' or '..'"),
    ("a\x00b", "control character"),
    ("a\rb", "control character"),
    ("a\nb", "control character"),
    ("a\tb", "control character"),
    ("a\x7fb", "control character"),
    ("a\x85b", "control character"),  # C1 NEL
    ("a*", "wildcard"),
    ("50% off", "wildcard"),
    ("a\ud800", "invalid character"),
    ("x" * (MAX_NAME_OCTETS + 1), "longer than"),
    ("é" * (MAX_NAME_OCTETS // 2 + 1), "longer than"),  # counted in UTF-8 octets
    ("/".join(["x"] * (MAX_LEVELS + 1)), "deeper than"),
]


@pytest.mark.parametrize(("name", "reason"), INVALID_NAMES)
def test_invalid_names(name: str, reason: str) -> None:
    result = valid_mailbox_name(name)
    assert result is not None
    assert reason in result


def test_other_delimiter() -> None:
    assert valid_mailbox_name("a/b", ".") is None
    assert valid_mailbox_name("a..b", ".") == "empty hierarchy level in mailbox name"
    assert valid_mailbox_name(".a", ".") is not None


def test_flat_namespace() -> None:
    assert valid_mailbox_name("a/b", None) is None
    assert valid_mailbox_name("..", None) is not None
    assert valid_mailbox_name("a*", None) is not None


def test_reason_never_echoes_the_name() -> None:
    for name, _ in INVALID_NAMES:
        reason = valid_mailbox_name(name)
        assert reason is not None
        assert "\r" not in reason and "\n" not in reason
