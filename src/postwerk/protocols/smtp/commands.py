"""SMTP commands as values: one frozen dataclass per verb (RFC 5321 §4.1.1).

Purpose: the vocabulary between `parser` (bytes → command) and the service that
decides what to do with a command. Nothing here does I/O or policy.

Invariants:
- `address` fields hold the path without angle brackets and without any
  source route (RFC 5321 §4.1.2, Appendix C: source routes are ignored).
- `""` is the null reverse-path `<>`; only `MailFrom` can carry it.
- ESMTP parameters are already syntax-checked and decoded (xtext, RFC 3461 §4);
  whether an extension is enabled on this listener is the service's decision.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of MAIL FROM, parsed and decoded."""

    size: int | None = None  # RFC 1870 SIZE=
    body: str | None = None  # RFC 6152 / RFC 3030: "7BIT", "8BITMIME", "BINARYMIME"
    smtputf8: bool = False  # RFC 6531 §3.4
    ret: str | None = None  # RFC 3461 §4.3: "FULL" or "HDRS"
    envid: str | None = None  # RFC 3461 §4.4, xtext-decoded
    auth: str | None = None  # RFC 4954 §5, xtext-decoded; "<>" when the submitter is unknown
    # XPWNEXTHOP= (a private extension, RFC 5321 §4.1.5), xtext-decoded: the next hop
    # ("smtp:<send connector>[:<domain>]") a Mailbox server asks a Client Access
    # server's Outbound Proxy Frontend to relay the transaction to
    # (transport/outbound_proxy.py). Honoured only from an organization server there.
    next_hop: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParams:
    """ESMTP parameters of RCPT TO, parsed and decoded."""

    # RFC 3461 §4.1: ("NEVER",) or a non-empty subset of SUCCESS/FAILURE/DELAY.
    notify: tuple[str, ...] | None = None
    # RFC 3461 §4.2: "<addr-type>;<address>", addr-type lower-cased, xtext-decoded.
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Helo:
    domain: str


@dataclass(frozen=True, slots=True)
class Ehlo:
    domain: str


@dataclass(frozen=True, slots=True)
class MailFrom:
    address: str
    params: MailParams = MailParams()


@dataclass(frozen=True, slots=True)
class RcptTo:
    address: str
    params: RcptParams = RcptParams()


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Bdat:
    """RFC 3030 §2: the next `size` octets after the command line are chunk data."""

    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True)
class Expn:
    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    argument: str | None = None


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    """RFC 4954 §4. `initial_response` is the base64 text as sent ("=" means empty)."""

    mechanism: str
    initial_response: str | None = None


Command = (
    Helo
    | Ehlo
    | MailFrom
    | RcptTo
    | Data
    | Bdat
    | Rset
    | Noop
    | Quit
    | Vrfy
    | Expn
    | Help
    | StartTls
    | Auth
)
