"""Stored POP3/IMAP settings: every refusal names the field, defaults round-trip."""

from __future__ import annotations

from typing import Any

import pytest

from postwerk.services.imap import ImapSettings
from postwerk.services.pop3 import Pop3Settings
from postwerk.services.protocol_settings import LoginType


def test_defaults_round_trip() -> None:
    assert Pop3Settings.from_mapping(Pop3Settings().to_mapping()) == Pop3Settings()
    assert ImapSettings.from_mapping({}) == ImapSettings()
    changed = Pop3Settings.from_mapping({"login_type": "PlainTextLogin", "port": 1110})
    assert changed.login_type is LoginType.PLAIN_TEXT_LOGIN and changed.port == 1110


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"colour": "blue"}, "unknown pop3 setting 'colour'"),
        ({"login_type": "Kerberos"}, "login_type must be one of"),
        ({"max_connections": True}, "max_connections must be a number"),
        ({"max_connections": "many"}, "max_connections must be a number"),
        ({"max_connections": 0}, "max_connections must be between 1 and"),
        ({"idle_timeout_after_login": 599}, "between 600 and 86400"),  # RFC 1939 §3
        ({"banner": "two\r\nlines"}, "banner must be one line"),
        ({"banner": ""}, "banner must be one line"),
        ({"port": 995}, "port and ssl_port must differ"),
        ({"port": 70000}, "port must be between 1 and 65535"),
    ],
)
def test_pop3_refusals(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pop3Settings.from_mapping(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"idle_timeout_after_login": 1799}, "between 1800 and 86400"),  # RFC 9051 §5.4
        ({"max_line": 100}, "max_line must be between 1024"),
        ({"append_limit": 10}, "append_limit must be between 1024"),
    ],
)
def test_imap_refusals(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImapSettings.from_mapping(values)
