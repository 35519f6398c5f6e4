"""Sans-I/O SMTP server protocol: command parsing, framing, the EHLO reply.

No I/O here (no asyncio, socket, ssl, database); `services/` drives it.
See docs/protocols-smtp.md for the design.
"""

from postwerk.protocols.smtp.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    MailFrom,
    MailParams,
    Noop,
    Quit,
    RcptParams,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from postwerk.protocols.smtp.connection import (
    AUTH_LINE_LIMIT,
    BodyData,
    BodyEnd,
    BodyRejected,
    ChunkData,
    ChunkEnd,
    CommandReceived,
    CommandRejected,
    ConnectionClosed,
    Event,
    LineReceived,
    NeedData,
    ServerConnection,
)
from postwerk.protocols.smtp.extensions import ehlo_lines
from postwerk.protocols.smtp.parser import parse_command
from postwerk.protocols.smtp.xtext import xtext_decode, xtext_encode

__all__ = [
    "AUTH_LINE_LIMIT",
    "Auth",
    "Bdat",
    "BodyData",
    "BodyEnd",
    "BodyRejected",
    "ChunkData",
    "ChunkEnd",
    "Command",
    "CommandReceived",
    "CommandRejected",
    "ConnectionClosed",
    "Data",
    "Ehlo",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "LineReceived",
    "MailFrom",
    "MailParams",
    "NeedData",
    "Noop",
    "Quit",
    "RcptParams",
    "RcptTo",
    "Rset",
    "ServerConnection",
    "StartTls",
    "Vrfy",
    "ehlo_lines",
    "parse_command",
    "xtext_decode",
    "xtext_encode",
]
