"""The transport agents that ship with postwerk (docs/agents.md).

- `AddressRewriteAgent`, after Exchange's Address Rewriting agents: recipient
  addresses and domains rewritten by a map at RCPT (and on_submitted for mail this
  server generated), and optionally the envelope sender of mail that leaves the
  organization (on_routed).
- `AttachmentFilterAgent`, after Exchange's Attachment Filtering agent: messages
  over a size, or with attachments whose file name extension or content type is
  blocked, are rejected at end of data (or quarantined).

Both take their options from `[agents.options.<ClassName>]`, validated here at
start: a typo stops the server instead of silently filtering nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from postwerk.core.addresses import parse_address
from postwerk.core.errors import InvalidName
from postwerk.mime.summary import BodyPart, decode_words, summarize
from postwerk.transport.agents import (
    AgentResult,
    MessageView,
    SessionView,
    TransportAgent,
    Verdict,
)
from postwerk.transport.categorizer import MAILBOX_HOP

# ---------------------------------------------------------------- address rewriting


def _domain_key(key: str) -> str:
    domain = key[2:] if key.startswith("*.") else key
    if not domain or "@" in domain or any(c.isspace() for c in domain) or "." not in domain:
        raise ValueError(f"{key!r}: expected an address, a domain or *.domain")
    return key.lower()


class AddressMap:
    """Exact addresses first, then the domain, then the nearest `*.parent` wildcard.

    `bob@old.example -> robert@new.example` maps one address; `old.example ->
    new.example` keeps the local part; `*.old.example -> new.example` covers every
    subdomain (not old.example itself, as in Exchange). Applied once, never chained.
    """

    def __init__(self, entries: Mapping[str, str]) -> None:
        self.addresses: dict[str, str] = {}
        self.domains: dict[str, str] = {}
        for key, target in entries.items():
            if "@" in key:
                self.addresses[_address(key).lower()] = _address(target)
            else:
                if "@" in target or target.startswith("*"):
                    raise ValueError(f"{key!r} is a domain: map it to a domain, not {target!r}")
                self.domains[_domain_key(key)] = _domain_key(target)

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains)

    def rewrite(self, address: str) -> str:
        exact = self.addresses.get(address.lower())
        if exact is not None:
            return exact
        local, at, domain = address.rpartition("@")
        if not at:
            return address
        domain = domain.lower()
        parts = domain.split(".")
        # The domain itself, then wildcards from the nearest parent up (never "*.tld").
        keys = [domain, *("*." + ".".join(parts[i:]) for i in range(1, len(parts) - 1))]
        for key in keys:
            target = self.domains.get(key)
            if target is not None:
                return f"{local}@{target}"
        return address


def _address(value: str) -> str:
    try:
        return str(parse_address(value, allow_utf8=True))
    except InvalidName as exc:
        raise ValueError(f"not an address: {value!r}") from exc


class AddressRewriteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipients: dict[str, str] = Field(
        default_factory=dict,
        description="Recipient rewriting: address → address, domain → domain, *.domain → domain.",
    )
    senders: dict[str, str] = Field(
        default_factory=dict,
        description="Envelope-sender rewriting for messages with a recipient outside the "
        "organization (routed to a send connector or waiting in Unreachable).",
    )


class AddressRewriteAgent(TransportAgent):
    """Rewrites envelope addresses by a map (Exchange's Address Rewriting agents).

    Recipients are rewritten at RCPT, before the directory and relay checks see
    them, so the new address must be one this server accepts; mail this server made
    itself (DSNs) has no RCPT and is rewritten on_submitted instead. The sender is
    rewritten on_routed when the message leaves the organization; the message's
    own From/To header fields are not changed.
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        opts = AddressRewriteOptions.model_validate(dict(self.options))
        self.recipients = AddressMap(opts.recipients)
        self.senders = AddressMap(opts.senders)

    async def on_rcpt_to(
        self, session: SessionView, message: MessageView, recipient: str
    ) -> AgentResult:
        new = self.recipients.rewrite(recipient)
        if new == recipient:
            return None
        return Verdict.change_recipients(add=[new], remove=[recipient])

    async def on_submitted(self, session: SessionView, message: MessageView) -> AgentResult:
        if message.source == "SMTP" or not self.recipients:
            return None  # rewritten at RCPT already
        pairs = [(r, self.recipients.rewrite(r)) for r in message.recipients]
        changed = [(old, new) for old, new in pairs if new != old]
        if not changed:
            return None
        return Verdict.change_recipients(
            remove=[old for old, _ in changed], add=[new for _, new in changed]
        )

    async def on_routed(self, session: SessionView, message: MessageView) -> AgentResult:
        if not self.senders or not message.sender:
            return None
        if all(r.next_hop.startswith(MAILBOX_HOP) for r in message.routes):
            return None  # stays inside the organization
        new = self.senders.rewrite(message.sender)
        return Verdict.change_sender(new) if new != message.sender else None


# ---------------------------------------------------------------- attachment filtering

# Exchange 2013's default blocked file name extensions (Get-AttachmentFilterEntry).
DEFAULT_BLOCKED_EXTENSIONS = (
    "ade", "adp", "app", "asx", "bas", "bat", "chm", "cmd", "com", "cpl", "crt", "exe",
    "fxp", "hlp", "hta", "inf", "ins", "isp", "js", "jse", "lnk", "mda", "mdb", "mde",
    "mdt", "mdw", "mdz", "msc", "msi", "msp", "mst", "ops", "pcd", "pif", "prf", "prg",
    "reg", "scf", "scr", "sct", "shb", "shs", "url", "vb", "vbe", "vbs", "wsc", "wsf",
    "wsh",
)  # fmt: skip
# And its default blocked content types.
DEFAULT_BLOCKED_CONTENT_TYPES = (
    "application/x-msdownload",
    "message/partial",
    "text/scriptlet",
    "application/prg",
    "application/msaccess",
    "text/javascript",
    "application/x-javascript",
    "application/javascript",
    "x-internet-signup",
    "application/hta",
)
# Summarizing a big message is CPU work: past this size it runs in a thread.
THREAD_ABOVE = 1024 * 1024


class AttachmentFilterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_size: int | None = Field(
        None, gt=0, description="Largest message in octets; none: no size check."
    )
    blocked_extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_EXTENSIONS),
        description="File name extensions refused, with or without the dot.",
    )
    blocked_content_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_CONTENT_TYPES),
        description="MIME types refused (`type/subtype`).",
    )
    action: Literal["reject", "quarantine"] = Field(
        "reject", description="reject at end of data, or accept into the Quarantine queue."
    )

    @field_validator("blocked_extensions")
    @classmethod
    def _extensions(cls, value: list[str]) -> list[str]:
        return [v.strip().lstrip(".").lower() for v in value if v.strip().lstrip(".")]

    @field_validator("blocked_content_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value if v.strip()]


def _rfc2231(pieces: list[tuple[str, bool]]) -> str:
    """Join RFC 2231 continuations (`name*0*=utf-8''a%20b`, `name*1=c`) and decode."""
    charset = "us-ascii"
    raw = b""
    for i, (value, encoded) in enumerate(pieces):
        if encoded and i == 0 and value.count("'") >= 2:
            charset, _lang, value = value.split("'", 2)
        raw += urllib.parse.unquote_to_bytes(value) if encoded else value.encode("utf-8")
    try:
        codecs.lookup(charset or "us-ascii")
    except LookupError:
        charset = "utf-8"
    return raw.decode(charset or "us-ascii", "replace")


def _param(params: list[list[str]], key: str) -> str | None:
    plain: str | None = None
    pieces: dict[int, tuple[str, bool]] = {}
    for k, v in params:
        if k == key:
            plain = v
        elif k == key + "*":
            pieces[0] = (v, True)
        elif k.startswith(key + "*"):
            rest = k[len(key) + 1 :]
            number = rest.rstrip("*")
            if number.isdigit():
                pieces[int(number)] = (v, rest.endswith("*"))
    if pieces:
        return _rfc2231([pieces[i] for i in sorted(pieces)])
    return decode_words(plain) if plain else None


def _parts(part: BodyPart) -> Iterator[BodyPart]:
    yield part
    for child in part["parts"]:
        yield from _parts(child)
    if part["body"] is not None:  # message/rfc822: its own parts count too
        yield from _parts(part["body"])


def file_names_and_types(data: bytes) -> list[tuple[str | None, str]]:
    """(file name or None, lower-case type/subtype) of every MIME part of a message."""
    root = summarize(data).bodystructure
    out = []
    for part in _parts(root):
        name = _param(part["disposition_params"], "FILENAME") or _param(part["params"], "NAME")
        out.append((name, f"{part['type']}/{part['subtype']}".lower()))
    return out


def extension(name: str) -> str:
    # Windows ignores trailing dots and spaces: "evil.exe. " runs as evil.exe.
    stem = name.strip().rstrip(". ").lower()
    return stem.rpartition(".")[2] if "." in stem else ""


class AttachmentFilterAgent(TransportAgent):
    """Refuses messages that are too big or carry blocked attachments.

    The size is checked at MAIL (from SIZE=, so a big message is refused before it
    is sent) and at end of data; attachments at end of data, by every MIME part's
    file name (Content-Disposition filename or Content-Type name, RFC 2047 and
    RFC 2231 decoded) and content type, nested messages included. Archives are not
    opened.
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.opts = AttachmentFilterOptions.model_validate(dict(self.options))
        self.extensions = frozenset(self.opts.blocked_extensions)
        self.types = frozenset(self.opts.blocked_content_types)

    def _refuse(self, code: int, status: str, text: str) -> Verdict:
        if self.opts.action == "quarantine":
            return Verdict.quarantine(text)
        return Verdict.reject(code, status, text)

    async def on_mail_from(self, session: SessionView, message: MessageView) -> AgentResult:
        limit = self.opts.max_size
        if limit is not None and self.opts.action == "reject" and message.size > limit:
            return Verdict.reject(552, "5.3.4", "Message size exceeds fixed maximum message size")
        return None

    async def on_end_of_data(self, session: SessionView, message: MessageView) -> AgentResult:
        limit = self.opts.max_size
        if limit is not None and message.size > limit:
            return self._refuse(552, "5.3.4", "Message size exceeds fixed maximum message size")
        if not self.extensions and not self.types:
            return None
        data = await message.content()
        if len(data) > THREAD_ABOVE:
            parts = await asyncio.to_thread(file_names_and_types, data)
        else:
            parts = file_names_and_types(data)
        for name, content_type in parts:
            if content_type in self.types:
                return self._refuse(
                    554, "5.7.1", f"Message rejected: content type {content_type} is not allowed"
                )
            if name is not None and extension(name) in self.extensions:
                shown = "".join(c if c.isprintable() else "?" for c in name)[:100]
                return self._refuse(
                    554, "5.7.1", f"Message rejected: attachment {shown} is not allowed"
                )
        return None
