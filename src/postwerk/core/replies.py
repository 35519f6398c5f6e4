"""SMTP replies as values, and the named replies postwerk sends.

Handlers return a `Reply`; only the connection loop turns it into bytes.
Codes follow RFC 5321 §4.2; enhanced status codes follow RFC 3463 and the
IANA registry (RFC 5248). Texts mirror Exchange 2013 where admins grep for them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a three-digit code, an optional enhanced status, text lines."""

    code: int
    status: str | None
    text: str

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.status, text)

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    def lines(self) -> list[str]:
        return self.text.split("\n") if self.text else [""]

    def to_bytes(self, enhanced: bool = True) -> bytes:
        """Serialise with continuation lines (RFC 5321 §4.2.1)."""
        out = []
        lines = self.lines()
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            if enhanced and self.status:
                body = f"{self.status} {line}" if line else self.status
            else:
                body = line
            out.append(f"{self.code}{sep}{body}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8", "replace")


# Connection-level
SERVICE_CLOSING = Reply(221, "2.0.0", "Service closing transmission channel")
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, closing transmission channel")
TOO_MANY_ERRORS = Reply(
    421, "4.7.0", "Too many errors on this connection, closing transmission channel"
)
CONNECTION_TIMEOUT = Reply(421, "4.4.2", "Connection timed out")
INACTIVITY_TIMEOUT = Reply(421, "4.4.2", "Connection dropped due to inactivity")
TOO_MANY_CONNECTIONS = Reply(
    421, "4.3.2", "The maximum number of concurrent connections has been exceeded"
)

# Generic success
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
RESET_OK = Reply(250, "2.0.0", "Resetting")
NOOP_OK = Reply(250, "2.0.0", "OK")
START_MAIL_INPUT = Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")
QUEUED = Reply(250, "2.6.0", "Queued mail for delivery")
READY_TO_START_TLS = Reply(220, "2.0.0", "SMTP server ready")
AUTH_SUCCESSFUL = Reply(235, "2.7.0", "Authentication successful")
VRFY_CANNOT = Reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(
    214,
    "2.0.0",
    "This server supports the commands HELO EHLO STARTTLS AUTH MAIL RCPT "
    "DATA BDAT RSET NOOP QUIT VRFY HELP",
)

# Syntax and sequence
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_ADDRESS_SYNTAX = Reply(501, "5.1.7", "Invalid address")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
HELO_FIRST = Reply(503, "5.5.1", "Send hello first")
MAIL_FIRST = Reply(503, "5.5.1", "Need mail command")
RCPT_FIRST = Reply(503, "5.5.1", "Need rcpt command")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
PARAM_NOT_RECOGNIZED = Reply(555, "5.5.4", "Unrecognized parameter")
BARE_LINE_ENDING = Reply(
    550,
    "5.5.2",
    "Message contains bare CR or LF characters; use CRLF line endings (RFC 5321 2.3.8)",
)
BDAT_AFTER_DATA = Reply(503, "5.5.1", "Cannot mix BDAT and DATA")

# TLS and authentication
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(
    530, "5.7.57", "Client was not authenticated to send anonymous mail during MAIL FROM"
)
AUTH_NOT_ENABLED = Reply(503, "5.5.1", "Authentication is not enabled on this connector")
AUTH_MECH_UNSUPPORTED = Reply(504, "5.7.4", "Unrecognized authentication type")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication unsuccessful")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
AUTH_TEMP_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
ENCRYPTION_REQUIRED_FOR_AUTH = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)

# Policy on recipients and senders
UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "User unknown")
RELAY_DENIED = Reply(550, "5.7.54", "SMTP; Unable to relay recipient in non-accepted domain")
SEND_AS_DENIED = Reply(
    550, "5.7.60", "SMTP; Client does not have permissions to send as this sender"
)
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
SENDER_DOMAIN_INVALID = Reply(501, "5.1.8", "Bad sender address syntax")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
# The recipient's mailbox is at or would pass its storage quota (Exchange's
# ProhibitSendReceiveQuota; Dovecot quota-status answers the same code and status).
MAILBOX_FULL = Reply(552, "5.2.2", "Mailbox full")

# Size
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
HEADERS_TOO_BIG = Reply(552, "5.3.4", "Header size exceeds fixed maximum size")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Hop count exceeded - possible mail loop")

# Local failures
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing; try again later")
STORAGE_FULL = Reply(452, "4.3.1", "Insufficient system storage")
