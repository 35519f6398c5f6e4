"""The server's configuration, declared once.

`postwerk.toml` in the data directory is read into `Settings`; environment
variables `POSTWERK_<SECTION>__<FIELD>` override it. Every field carries its
documentation here; `docs/configuration.md` is generated from this module
(`postwerk config reference`), and a test keeps the two equal.

What is *data* in Exchange (receive connectors, accepted domains, recipients)
lives in the directory database, not here.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_FILE = "postwerk.toml"

ROLE_NAMES = ("cas", "mailbox", "edge")


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hostname: str = Field(
        "localhost",
        description="Fully qualified name of this server: greeting banners, Received headers, "
        "the certificate's subject, the MX target printed by `init`.",
    )
    organization: str = Field(
        "postwerk", description="Name of the Exchange organization this server belongs to."
    )
    roles: list[str] = Field(
        default_factory=lambda: ["cas", "mailbox"],
        description="Roles this process hosts: `cas` (Client Access front end), `mailbox` "
        "(store and transport), `edge` (perimeter relay). One process may host cas+mailbox.",
    )
    bind: str = Field(
        "",
        description="Address every listener binds to. Empty: all IPv4 and IPv6 addresses.",
    )
    port_offset: int = Field(
        0,
        ge=0,
        le=60000,
        description="Added to every listener port so the system runs unprivileged "
        "(10000: 25 → 10025, 587 → 10587). `serve --port-offset` overrides it.",
    )


class PortSettings(BaseModel):
    """Listener ports, defaulting to the reference's (Exchange 2013 network ports)."""

    model_config = ConfigDict(extra="forbid")

    smtp: int = Field(25, description='Inbound SMTP, receive connector "Default Frontend".')
    submission: int = Field(
        587, description='Authenticated submission, receive connector "Client Frontend".'
    )
    imap: int = Field(143, description="IMAP4 with STARTTLS (disabled by default; M3).")
    imaps: int = Field(993, description="IMAP4 over TLS (disabled by default; M3).")
    pop3: int = Field(110, description="POP3 with STLS (disabled by default; M3).")
    pop3s: int = Field(995, description="POP3 over TLS (disabled by default; M3).")
    https: int = Field(443, description="HTTPS services on the Client Access role (later issues).")
    http: int = Field(80, description="Plain HTTP services on the Client Access role.")
    hub_smtp: int = Field(
        2525, description='Mailbox transport, receive connector "Default <server>" (M4).'
    )
    client_proxy: int = Field(
        465, description='Mailbox transport, receive connector "Client Proxy <server>" (M4).'
    )
    outbound_proxy: int = Field(
        717, description='Client Access, receive connector "Outbound Proxy Frontend" (M2/M4).'
    )
    mailbox_delivery: int = Field(475, description="Mailbox Transport Delivery (M4).")
    imap_backend: int = Field(1993, description="IMAP4 back end on the Mailbox server (M3/M4).")
    pop3_backend: int = Field(1995, description="POP3 back end on the Mailbox server (M3/M4).")
    http_backend: int = Field(444, description="Back-end HTTP on the Mailbox server (M4).")
    edgesync: int = Field(50636, description="EdgeSync LDAP over TLS on the Edge role.")


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "",
        description="Database URL. Empty: SQLite file `postwerk.db` in the data directory "
        "(the embedded default). `postgresql://USER@HOST:PORT/DB`: PostgreSQL (driver "
        "asyncpg, the `postgres` extra), the database an organization's servers share.",
    )
    blobs: Literal["files", "database"] = Field(
        "files",
        description="Where message files live: `files` (DATA_DIR/blobs, the default) or "
        "`database` (the `blob_chunk` table: what servers sharing a PostgreSQL database "
        "choose, so that each reads the messages the others stored).",
    )
    tombstone_days: float = Field(
        30.0,
        gt=0,
        description="Days an expunged message's tombstone is kept, so that IMAP clients "
        "(CONDSTORE/QRESYNC) learn exactly what vanished since their last sync. A client "
        "away longer still resynchronizes correctly, by comparing UIDs.",
    )


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate: str = Field(
        "tls/server.crt",
        description="PEM certificate chain, relative to the data directory or absolute. `init` "
        "writes a self-signed one for the hostname; replace it with your own PEM pair.",
    )
    private_key: str = Field(
        "tls/server.key", description="PEM private key matching `certificate`."
    )
    minimum_version: str = Field(
        "TLSv1.2", description="Lowest TLS version offered: `TLSv1.2` or `TLSv1.3`."
    )


class TransportSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_hop_count: int = Field(
        100,
        ge=10,
        description="Received headers after which a message is refused as a loop "
        "(RFC 5321 §6.3 asks for at least 100).",
    )
    delivery_workers: int = Field(4, ge=1, le=64, description="Concurrent local delivery batches.")
    delivery_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes that deliver through send connectors. Above 1, the server "
        "starts that many minus one delivery workers beside itself, each owning a share of "
        "the queue (by message id): outbound relay can then use more than one core. The "
        "connection limits per next hop are shared out among them.",
    )
    deliver_at_receipt: bool = Field(
        True,
        description="Deliver a message (up to 1 MB) to this server's mailboxes in the same "
        "transaction that accepts it, before the 250; larger messages and other recipients "
        "go through the queue. Off: every message is queued first and delivered after.",
    )
    delivery_batch: int = Field(
        64, ge=1, le=1024, description="Recipients delivered into mailboxes per store transaction."
    )
    max_recipients_per_message: int = Field(
        5000,
        ge=1,
        description="Organization-wide limit on envelope recipients per message (Exchange's "
        "MaxRecipientEnvelopeLimit, 5000); a distribution group counts as one. Applied at RCPT "
        "together with the receive connector's limit: the smaller one wins.",
    )
    # Retry and expiry, Exchange 2013's defaults (Set-TransportService).
    glitch_retry_count: int = Field(
        4,
        ge=0,
        le=15,
        description="QueueGlitchRetryCount: quick retries after a transient failure.",
    )
    glitch_retry_interval: float = Field(
        60.0, ge=1, description="QueueGlitchRetryInterval, seconds between the quick retries."
    )
    transient_retry_count: int = Field(
        6, ge=0, le=15, description="TransientFailureRetryCount: retries after the quick ones."
    )
    transient_retry_interval: float = Field(
        300.0, ge=1, description="TransientFailureRetryInterval, seconds."
    )
    message_retry_interval: float = Field(
        900.0,
        ge=1,
        description="MessageRetryInterval, seconds between later retries of a message whose "
        "next hop answered with a temporary failure.",
    )
    connection_failure_retry_interval: float = Field(
        600.0,
        ge=1,
        description="OutboundConnectionFailureRetryInterval, seconds between later retries when "
        "no next-hop server could be reached.",
    )
    delay_notification_timeout: float = Field(
        4 * 3600.0,
        ge=0,
        description="DelayNotificationTimeout, seconds after receipt when the sender gets a "
        "delay DSN (once) if the message is still waiting; 0 turns delay DSNs off.",
    )
    message_expiration_timeout: float = Field(
        2 * 86400.0,
        ge=60,
        description="MessageExpirationTimeout, seconds after receipt when delivery is given up "
        "and the sender gets a non-delivery report (4.4.7).",
    )
    poison_threshold: int = Field(
        2,
        ge=1,
        description="PoisonThreshold: a message whose delivery crashed the worker this many times "
        "goes to the Poison queue and is never retried by itself.",
    )


class DnsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nameservers: list[str] = Field(
        default_factory=list,
        description="DNS servers for outbound routing (MX, A, AAAA), as `ip` or `ip:port`; "
        "empty: the system's (/etc/resolv.conf). Environment: comma-separated.",
    )
    timeout: float = Field(5.0, gt=0, description="Seconds for one lookup, retries included.")
    prefer_ipv6: bool = Field(
        False, description="Try a next hop's IPv6 addresses before its IPv4 ones."
    )

    @field_validator("nameservers", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tarpit_seconds: float = Field(
        5.0, ge=0, description="Delay before answering a failed AUTH (Exchange AuthTarpitInterval)."
    )
    lockout_failures: int = Field(
        10,
        ge=1,
        description="Failed logins against one account, from any address, within "
        "`lockout_window` that lock that account.",
    )
    lockout_ip_failures: int = Field(
        30,
        ge=1,
        description="Failed logins from one client address (IPv6: its /64), for any accounts, "
        "within `lockout_window` that lock that address out.",
    )
    lockout_window: float = Field(
        600.0, ge=1, description="Window in seconds over which failed logins are counted."
    )
    argon2_profile: str = Field(
        "default",
        description="Password hashing cost: `default` (~30 ms per check) or `cheap` (tests only).",
    )


class LoggingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: str = Field("info", description="debug, info, warning or error.")
    format: str = Field("json", description="`json` (one object per line) or `console`.")


class AdminSettings(BaseModel):
    """The admin listener: health (`/healthz`) and Prometheus metrics (`/metrics`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve /healthz and /metrics.")
    bind: str = Field(
        "127.0.0.1",
        description="Address of the admin listener: loopback by default, so that only "
        "this machine (or a scraper you point at it through a tunnel) can read it.",
    )
    port: int = Field(
        9025, ge=1, le=65535, description="Port of the admin listener; the port offset applies."
    )


class WebSettings(BaseModel):
    """The Client Access HTTP services on 443 and 80 (Exchange's web services)."""

    model_config = ConfigDict(extra="forbid")

    proxy: bool = Field(
        False,
        description="Serve the Client Access HTTP proxy on the `https` and `http` ports "
        "(plus the offset): /owa, /ews, /Microsoft-Server-ActiveSync, /autodiscover, /oab, "
        "/mapi and /rpc forwarded to the back end (444) of the user's Mailbox server "
        "(docs/http-proxy.md). Off by default: the back-end services arrive in later "
        "milestones, and until then every request is answered 503.",
    )


class AgentSettings(BaseModel):
    """Transport agents, called in the order listed (docs/agents.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[str] = Field(
        default_factory=list,
        description="Agents to load, as `package.module:ClassName`, highest priority first; "
        "imported at start (nothing is discovered by name). Built in: "
        "`postwerk.transport.agents_builtin:AddressRewriteAgent`, "
        "`postwerk.transport.agents_builtin:AttachmentFilterAgent`. Environment: comma-separated.",
    )
    timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds one agent may take for one event; past it the agent is logged "
        "and the message goes on as if it had said continue.",
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options by agent class name, e.g. `[agents.options.AddressRewriteAgent]` "
        'with `recipients = { "old.example" = "new.example" }`. Environment: a JSON object.',
    )

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled_comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("enabled")
    @classmethod
    def _module_colon_class(cls, value: list[str]) -> list[str]:
        for path in value:
            module, colon, name = path.partition(":")
            if not colon or not module or not name.isidentifier():
                raise ValueError(f"{path!r} is not 'package.module:ClassName'")
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _options_json(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc}") from exc
        return value


class Settings(BaseModel):
    """Everything `postwerk.toml` may hold."""

    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    ports: PortSettings = Field(default_factory=PortSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    web: WebSettings = Field(default_factory=WebSettings)


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the operator."""


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in environ.items():
        if not key.startswith("POSTWERK_") or "__" not in key:
            continue
        section, _, field = key[len("POSTWERK_") :].lower().partition("__")
        if section in Settings.model_fields:
            out.setdefault(section, {})[field] = value
    return out


def load_settings(data_dir: Path, environ: dict[str, str] | None = None) -> Settings:
    path = data_dir / CONFIG_FILE
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found: run `postwerk init` first") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for section, values in _env_overrides(environ or {}).items():
        raw.setdefault(section, {}).update(values)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc
    bad = [r for r in settings.server.roles if r not in ROLE_NAMES]
    if bad:
        raise ConfigError(f"{path}: server.roles: unknown role {bad[0]!r}")
    return settings


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        items = ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_toml(settings: Settings) -> str:
    """The configuration file `init` writes: every field, with its description as a comment."""
    lines = ["# postwerk configuration. Reference: docs/configuration.md", ""]
    for section_name in Settings.model_fields:
        section = getattr(settings, section_name)
        lines.append(f"[{section_name}]")
        for name, field in type(section).model_fields.items():
            if field.description:
                lines.append(f"# {field.description}")
            value = getattr(section, name)
            # An empty inline table would forbid the `[section.name.X]` tables that fill it.
            prefix = "# " if isinstance(value, dict) and not value else ""
            lines.append(f"{prefix}{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def render_reference() -> str:
    """docs/configuration.md, generated from the model."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `postwerk config reference` from src/postwerk/config/settings.py;",
        "     do not edit by hand. -->",
        "",
        f"`postwerk init` writes `{CONFIG_FILE}` into the data directory (`--data-dir`, else",
        "`$POSTWERK_DATA_DIR`, else `./postwerk-data`). Every field can be overridden by an",
        "environment variable `POSTWERK_<SECTION>__<FIELD>`, e.g. `POSTWERK_LOGGING__LEVEL=debug`.",
        "Receive connectors, accepted domains and recipients are data in the directory database",
        "and are changed with the CLI (see cli.md), not here.",
        "",
    ]
    for section_name, section_field in Settings.model_fields.items():
        section_type = section_field.annotation
        assert isinstance(section_type, type) and issubclass(section_type, BaseModel)
        model = section_type()
        doc = (type(model).__doc__ or "").strip()
        out.append(f"## [{section_name}]")
        out.append("")
        if doc:
            out.extend([doc, ""])
        out.append("| field | default | description |")
        out.append("|---|---|---|")
        for name, field in type(model).model_fields.items():
            default = _toml_value(getattr(model, name))
            desc = (field.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | `{default}` | {desc} |")
        out.append("")
    return "\n".join(out)
