"""What the receive side knows about a message before its body: envelope and session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "" is the null reverse-path
    recipients: tuple[str, ...]
    mail_params: dict[str, Any] = field(default_factory=dict)  # SIZE, BODY, SMTPUTF8, RET, ENVID
    rcpt_params: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per recipient: NOTIFY, ORCPT


@dataclass(frozen=True, slots=True)
class ReceiveInfo:
    """The session a message arrived in: feeds the Received header, policy and tracking."""

    session_id: str
    connector: str
    client_ip: str
    client_helo: str
    server_ip: str
    server_hostname: str
    protocol: str  # RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA
    tls: str = ""  # "version=TLS1_3 cipher=... bits=256"
    auth_user: str | None = None
    submission: bool = False  # a client submission: add Message-ID/Date when missing
    allowed_from: frozenset[str] = frozenset()  # lower-cased; empty = no From check
    max_message_size: int = 36 * 1024 * 1024
    max_header_size: int = 128 * 1024
    max_hop_count: int = 100
