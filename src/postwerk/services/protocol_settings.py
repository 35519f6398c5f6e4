"""Stored form of the client access protocols' settings (POP3, IMAP4), validated.

Set-PopSettings and Set-ImapSettings values live in the database as JSON
(`ProtocolSettings.settings`) and reach the services as frozen dataclasses. One
conversion for both, driven by the dataclass fields and a table of bounds, so
that a new setting cannot skip validation: every field needs a rule below.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")


class LoginType(enum.StrEnum):
    """Exchange's Set-PopSettings / Set-ImapSettings -LoginType."""

    # Plaintext credentials only once TLS is active (Exchange's default).
    SECURE_LOGIN = "SecureLogin"
    # Plaintext logins accepted without TLS.
    PLAIN_TEXT_LOGIN = "PlainTextLogin"
    # Exchange adds NTLM here; postwerk has no integrated authentication, so this
    # behaves as PlainTextLogin.
    PLAIN_TEXT_AUTHENTICATION = "PlainTextAuthentication"


@dataclasses.dataclass(frozen=True, slots=True)
class AccessSettings:
    """What Set-PopSettings and Set-ImapSettings share; defaults are Exchange 2013's.
    Each service subclasses it with its protocol name, ports and banner."""

    PROTOCOL: ClassVar[str] = ""

    login_type: LoginType = LoginType.SECURE_LOGIN
    max_connections: int = 2000  # MaxConnections, all listeners sharing a context
    max_connections_per_ip: int = 64  # MaxConnectionFromSingleIP
    max_connections_per_user: int = 16  # MaxConnectionsPerUser
    # PreAuthenticatedConnectionTimeout / AuthenticatedConnectionTimeout; the RFC
    # minimum after login is in TIMEOUT_AFTER_LOGIN_MIN.
    idle_timeout_before_login: float = 60.0
    idle_timeout_after_login: float = 1800.0
    # Unknown or out-of-state commands; one more and the connection is closed
    # (Exchange and Dovecot both disconnect persistent offenders).
    max_bad_commands: int = 10
    banner: str = ""
    # UnencryptedOrTLSBindings / SSLBindings: ports on server.bind, plus the port offset.
    port: int = 0
    ssl_port: int = 0

    def plaintext_allowed(self, tls_active: bool) -> bool:
        return tls_active or self.login_type is not LoginType.SECURE_LOGIN

    def to_mapping(self) -> dict[str, Any]:
        """The stored form (`ProtocolSettings.settings`)."""
        return to_mapping(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Self:
        """Validated settings from their stored (or CLI) form; ValueError names the field."""
        return from_mapping(cls, cls.PROTOCOL, values)


# Inclusive bounds per numeric field. Timeouts follow the RFC minimums after login:
# RFC 1939 §3 (POP3) 10 minutes, RFC 9051 §5.4 (IMAP) 30 minutes.
BOUNDS: dict[str, tuple[float, float]] = {
    "max_connections": (1, 1_000_000),
    "max_connections_per_ip": (1, 1_000_000),
    "max_connections_per_user": (1, 10_000),
    "idle_timeout_before_login": (10, 3600),
    "max_bad_commands": (1, 1000),
    "max_line": (1024, 16 * 1024 * 1024),
    "max_literal_before_login": (1024, 1024 * 1024),
    "append_limit": (1024, 2 * 1024 * 1024 * 1024),
    "port": (1, 65535),
    "ssl_port": (1, 65535),
}
TIMEOUT_AFTER_LOGIN_MIN = {"pop3": 600.0, "imap4": 1800.0}
MAX_BANNER = 200


def to_mapping(settings: Any) -> dict[str, Any]:
    """A settings dataclass as JSON-ready values (enums by value)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = value.value if isinstance(value, enum.Enum) else value
    return out


def from_mapping(cls: type[T], protocol: str, values: Mapping[str, Any]) -> T:
    """Validated settings: unknown keys refused, missing ones default; ValueError names
    the field and the rule."""
    default = cls()
    known = to_mapping(default)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {protocol} setting {unknown[0]!r}")
    merged = {**known, **values}
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(default):  # type: ignore[arg-type]
        current = getattr(default, f.name)
        value = merged[f.name]
        if isinstance(current, enum.Enum):
            try:
                kwargs[f.name] = type(current)(value)
            except ValueError:
                choices = ", ".join(str(m.value) for m in type(current))
                raise ValueError(f"{f.name} must be one of {choices}") from None
        elif isinstance(current, str):
            text = str(value)
            if not text or "\r" in text or "\n" in text or len(text) > MAX_BANNER:
                raise ValueError(f"{f.name} must be one line of 1 to {MAX_BANNER} characters")
            kwargs[f.name] = text
        elif isinstance(current, int | float) and not isinstance(current, bool):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number")
            if f.name == "idle_timeout_after_login":
                low, high = TIMEOUT_AFTER_LOGIN_MIN.get(protocol, 600.0), 86_400.0
            elif f.name in BOUNDS:
                low, high = BOUNDS[f.name]
            else:
                raise ValueError(f"{f.name}: no validation rule")  # a new field needs one
            if not low <= value <= high:
                raise ValueError(f"{f.name} must be between {low:g} and {high:g}")
            kwargs[f.name] = type(current)(value)
        else:
            raise ValueError(f"{f.name}: no validation rule")
    settings = cls(**kwargs)
    if "port" in kwargs and kwargs.get("port") == kwargs.get("ssl_port"):
        raise ValueError("port and ssl_port must differ")
    return settings
