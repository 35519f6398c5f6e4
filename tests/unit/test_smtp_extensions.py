"""The EHLO reply built by postwerk.protocols.smtp.extensions."""

from __future__ import annotations

import pytest

from postwerk.protocols.smtp import ehlo_lines


def test_full_ehlo_reply_in_exchange_order() -> None:
    reply = ehlo_lines(
        "mx.example.com",
        "192.0.2.7",
        size=36700160,
        starttls=True,
        auth_mechanisms=["NTLM", "login"],
        binarymime=True,
    )
    assert reply.code == 250
    assert reply.status is None
    assert reply.to_bytes() == (
        b"250-mx.example.com Hello [192.0.2.7]\r\n"
        b"250-SIZE 36700160\r\n"
        b"250-PIPELINING\r\n"
        b"250-DSN\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n"
        b"250-STARTTLS\r\n"
        b"250-AUTH NTLM LOGIN\r\n"
        b"250-8BITMIME\r\n"
        b"250-BINARYMIME\r\n"
        b"250-CHUNKING\r\n"
        b"250 SMTPUTF8\r\n"
    )


def test_minimal_ehlo_reply() -> None:
    reply = ehlo_lines(
        "mx",
        "::1",
        size=None,
        starttls=False,
        auth_mechanisms=(),
        chunking=False,
        pipelining=False,
        smtputf8=False,
        dsn=False,
        enhanced=False,
        eightbit=False,
    )
    assert reply.to_bytes(enhanced=True) == b"250 mx Hello [::1]\r\n"


def test_size_zero_means_no_fixed_limit() -> None:
    reply = ehlo_lines("mx", "x", size=0, starttls=False, auth_mechanisms=[])
    assert "SIZE 0" in reply.lines()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hostname": "mx\r\n250 evil"},
        {"greeting_name": "x\ny"},
        {"binarymime": True, "chunking": False},
        {"size": -1},
        {"auth_mechanisms": ["PLAIN LOGIN"]},
        {"auth_mechanisms": [""]},
    ],
)
def test_invalid_settings_raise(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "hostname": "mx",
        "greeting_name": "x",
        "size": None,
        "starttls": False,
        "auth_mechanisms": ["PLAIN"],
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        ehlo_lines(**args)  # type: ignore[arg-type]
