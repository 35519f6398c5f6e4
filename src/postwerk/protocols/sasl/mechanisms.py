"""Server-side SASL mechanisms as sans-I/O state machines (RFC 4422).

Purpose: turn the client's SASL messages into either the next challenge, the
credentials to check, or an error. SMTP AUTH (RFC 4954) uses it now; IMAP
AUTHENTICATE (RFC 9051 §6.2.2) and POP3 AUTH (RFC 5034) will reuse it, each
adding its own framing ("334 " / "+ " prefixes) at its edge.

Security: PLAIN and LOGIN carry the password in the clear, so the service
must offer them only over TLS (RFC 4616 §6, RFC 4954 §4); every mechanism has
a `plaintext` flag for that check. This module never verifies a password: it
returns `Credentials` and the caller checks them against the directory, which
keeps timing and throttling in one place (directory/passwords.py).

Invariants:
- Nothing here imports asyncio, socket or ssl; nothing here raises on client
  input. Every call returns one of `Challenge`, `Credentials`, `SaslError`.
- After a mechanism returns `Credentials` or `SaslError` it is finished; any
  further `step` returns `SaslError`.
- Messages are bytes as decoded from base64; the caller base64-encodes
  challenges (`encode_challenge`) and decodes responses (`decode_response`).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final, Protocol

# RFC 4616 §2 asks servers to accept at least 255 octets per field; we accept
# more but bound it so a client cannot make us hash megabytes of "password".
MAX_FIELD_OCTETS: Final = 1024


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send `data` to the client (base64-encoded on the wire) and wait for a response."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """The exchange finished; check these against the directory.

    `authzid` is "" when the client did not ask to act as someone else
    (RFC 4616 §2: an empty authzid means "derive it from authcid").
    """

    authzid: str
    authcid: str
    password: str = ""

    def __repr__(self) -> str:
        # Keep passwords out of logs and tracebacks.
        return f"Credentials(authzid={self.authzid!r}, authcid={self.authcid!r}, password=***)"


@dataclass(frozen=True, slots=True)
class SaslError:
    """The exchange failed; `reason` is for the log, not for the client (generic reply there)."""

    reason: str


Outcome = Challenge | Credentials | SaslError


class ServerMechanism(Protocol):
    """One authentication exchange on the server side. Create a new one per AUTH command."""

    name: str
    plaintext: bool  # True: reveals the password to an eavesdropper; offer only over TLS

    def start(self, initial_response: bytes | None) -> Outcome:
        """Begin the exchange. `None` means no initial response was sent (RFC 4422 §5)."""
        ...

    def step(self, response: bytes) -> Outcome:
        """Feed the client's answer to the last challenge."""
        ...


_DONE: Final = SaslError("exchange already finished")


def _utf8(field: bytes) -> str | None:
    """Decode one credential field; None if it is not UTF-8 or too long."""
    if len(field) > MAX_FIELD_OCTETS:
        return None
    try:
        return field.decode("utf-8")
    except UnicodeDecodeError:
        return None


class PlainMechanism:
    """PLAIN (RFC 4616): one message `[authzid] NUL authcid NUL passwd`, UTF-8."""

    name: str = "PLAIN"
    plaintext: bool = True

    def __init__(self) -> None:
        self._state = "new"  # new -> waiting -> done

    def start(self, initial_response: bytes | None) -> Outcome:
        if self._state != "new":
            return _DONE
        if initial_response is None:
            # RFC 4422 §5: no initial response, so send an empty challenge.
            self._state = "waiting"
            return Challenge(b"")
        return self._finish(initial_response)

    def step(self, response: bytes) -> Outcome:
        if self._state != "waiting":
            return _DONE
        return self._finish(response)

    def _finish(self, message: bytes) -> Outcome:
        self._state = "done"
        fields = message.split(b"\x00")
        if len(fields) != 3:  # RFC 4616 §2: exactly two NUL separators
            return SaslError("malformed PLAIN message")
        decoded = [_utf8(f) for f in fields]
        authzid, authcid, password = decoded
        if authzid is None or authcid is None or password is None:
            return SaslError("PLAIN field not UTF-8 or too long")
        if not authcid or not password:  # RFC 4616 §2: authcid and passwd are 1*SAFE
            return SaslError("empty authcid or password")
        return Credentials(authzid, authcid, password)


class LoginMechanism:
    """LOGIN (draft-murchison-sasl-login-00): "Username:" then "Password:".

    Obsolete but still what Outlook and many devices use. Some clients send the
    user name as an initial response (`AUTH LOGIN dXNlcg==`); that is accepted.
    """

    name: str = "LOGIN"
    plaintext: bool = True

    USERNAME_CHALLENGE: ClassVar[bytes] = b"Username:"
    PASSWORD_CHALLENGE: ClassVar[bytes] = b"Password:"

    def __init__(self) -> None:
        self._state = "new"  # new -> username -> password -> done
        self._username = ""

    def start(self, initial_response: bytes | None) -> Outcome:
        if self._state != "new":
            return _DONE
        if initial_response is None:
            self._state = "username"
            return Challenge(self.USERNAME_CHALLENGE)
        self._state = "username"
        return self.step(initial_response)

    def step(self, response: bytes) -> Outcome:
        if self._state == "username":
            username = _utf8(response)
            if not username:
                self._state = "done"
                return SaslError("empty or malformed username")
            self._username = username
            self._state = "password"
            return Challenge(self.PASSWORD_CHALLENGE)
        if self._state == "password":
            self._state = "done"
            password = _utf8(response)
            if not password:
                return SaslError("empty or malformed password")
            return Credentials("", self._username, password)
        return _DONE


# Read-only, so no test can leave a modified registry behind (STYLE: no
# module-level mutable state). Order is the preference order for advertising.
MECHANISMS: Final[Mapping[str, type[ServerMechanism]]] = MappingProxyType(
    {"PLAIN": PlainMechanism, "LOGIN": LoginMechanism}
)


def create(name: str) -> ServerMechanism | None:
    """A fresh mechanism for `name` (case-insensitive, RFC 4422 §3.1), or None if unknown."""
    cls = MECHANISMS.get(name.upper())
    return cls() if cls is not None else None


CANCELLED: Final = SaslError("cancelled")


def decode_response(line: bytes) -> bytes | SaslError:
    """Decode one client response line (trailing CRLF allowed).

    `*` cancels the exchange (RFC 4954 §4, RFC 9051 §6.2.2). `=` stands for an
    empty response (RFC 4954 §4, for the initial response; harmless elsewhere
    since `=` alone is not valid base64). An empty line is an empty response.
    """
    line = line.rstrip(b"\r\n").strip(b" \t")
    if line == b"*":
        return CANCELLED
    if line in (b"", b"="):
        return b""
    try:
        # strict_mode rejects junk characters and data after padding, so a
        # client cannot smuggle bytes past the decoder.
        return binascii.a2b_base64(line, strict_mode=True)
    except (binascii.Error, ValueError):
        return SaslError("malformed base64")


def encode_challenge(data: bytes) -> bytes:
    """Base64 for the wire, without line breaks (RFC 4954 §4: one line)."""
    return binascii.b2a_base64(data, newline=False)
