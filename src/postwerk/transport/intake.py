"""Intake: the one writer into the queue (Postfix's `cleanup`).

A message streams in from a receive session. The header block is held (up
to the connector's header limit) so that policy can look at it and headers
can be added in front; the rest streams straight into the blob. `finish`
fsyncs the blob, then commits envelope and recipients in one transaction, and
only then returns 250: an acknowledged message survives `kill -9`.

Checks at end of headers: header size, hop count (RFC 5321 §6.3), the From
header of a submission (Exchange's 5.7.60 send-as check).
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from dataclasses import replace
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING

from postwerk.core import replies
from postwerk.core.ids import new_id
from postwerk.core.replies import Reply
from postwerk.store.api import BlobWriter
from postwerk.transport.agents import (
    Event,
    Headers,
    MessageView,
    Quarantine,
    SessionView,
    format_headers,
    insert_headers,
)
from postwerk.transport.envelope import Envelope, ReceiveInfo

if TYPE_CHECKING:
    from postwerk.transport.service import TransportService

_HEADER_END = b"\r\n\r\n"
HANDOFF_MAX_BYTES = 1024 * 1024


def decode_text(value: str | None) -> str:
    """RFC 2047 decoded, single-line text of a header value; never raises."""
    if not value:
        return ""
    try:
        text = str(make_header(decode_header(value)))
    except Exception:  # malformed encoded words: show the raw value
        text = value
    return " ".join(text.split())


def header_rejection(headers: Message, info: ReceiveInfo) -> Reply | None:
    """The checks at end of headers that refuse a message: hop count (RFC 5321 §6.3)
    and the From of a submission (Exchange's 5.7.60 send-as check). Shared with the
    front end's relay (transport/frontend_relay.py), which applies them before a
    byte reaches the Mailbox server."""
    received = headers.get_all("Received") or []
    if len(received) >= info.max_hop_count:
        return replies.TOO_MANY_HOPS
    if info.allowed_from:
        from_values = headers.get_all("From") or []
        addresses = [a.lower() for _, a in email.utils.getaddresses(from_values) if a]
        if not addresses or any(a not in info.allowed_from for a in addresses):
            return replies.SEND_AS_DENIED
    return None


def received_header(info: ReceiveInfo, trace_id: str, recipients: Sequence[str]) -> str:
    """Our Received header (RFC 5321 §4.4) for a message received in session `info`."""
    helo = info.client_helo or "unknown"
    clauses = [
        f"from {helo} ([{info.client_ip}])",
        f"by {info.server_hostname} (postwerk)",
        f"with {info.protocol}" + (f" ({info.tls})" if info.tls else ""),
        f"id {trace_id}",
    ]
    if len(recipients) == 1:
        clauses.append(f"for <{recipients[0]}>")
    date = email.utils.formatdate(localtime=True)
    return "Received: " + "\r\n\t".join(clauses) + f";\r\n\t{date}\r\n"


class MessageIntake:
    """One message being received. Not reusable."""

    def __init__(
        self,
        service: TransportService,
        envelope: Envelope,
        info: ReceiveInfo,
        writer: BlobWriter,
    ) -> None:
        self._service = service
        self._envelope = envelope
        self._info = info
        self._writer = writer
        self.queue_id = new_id()
        self._header_buf = bytearray()
        self._headers_done = False
        self._received_bytes = 0
        self._rejection: Reply | None = None
        self.internet_message_id = ""
        self.subject = ""
        self._finished = False
        # A copy of what goes into the blob while small, handed to delivery in memory.
        self._copy: bytearray | None = bytearray()
        # Set only when transport agents run: their view of the headers, and a quarantine.
        self._headers: Headers | None = None
        self._quarantine: Quarantine | None = None

    @property
    def rejection(self) -> Reply | None:
        return self._rejection

    async def write(self, data: bytes) -> None:
        if self._rejection is not None or not data:
            self._received_bytes += len(data)
            return
        self._received_bytes += len(data)
        if self._received_bytes > self._info.max_message_size:
            self._rejection = replies.MESSAGE_TOO_BIG
            self._header_buf.clear()
            return
        if self._headers_done:
            await self._blob_write(data)
            return
        start = max(0, len(self._header_buf) - 3)
        self._header_buf += data
        end = self._header_buf.find(_HEADER_END, start)
        if end < 0:
            # A message whose header block starts with an empty line has no headers.
            if self._header_buf.startswith(b"\r\n"):
                end = -2
            elif len(self._header_buf) > self._info.max_header_size:
                self._rejection = replies.HEADERS_TOO_BIG
                self._header_buf.clear()
                return
            else:
                return
        split = end + 4
        if split > self._info.max_header_size + 4:
            self._rejection = replies.HEADERS_TOO_BIG
            self._header_buf.clear()
            return
        await self._end_of_headers(bytes(self._header_buf[:split]), bytes(self._header_buf[split:]))

    async def _end_of_headers(self, header_block: bytes, rest: bytes) -> None:
        self._headers_done = True
        self._header_buf = bytearray()
        headers = BytesHeaderParser(policy=compat32).parsebytes(header_block)
        rejection = header_rejection(headers, self._info)
        if rejection is not None:
            self._rejection = rejection
            return
        self.internet_message_id = (headers.get("Message-ID") or "").strip()
        self.subject = decode_text(headers.get("Subject"))
        prefix = [received_header(self._info, self.queue_id, self._envelope.recipients)]
        if self._info.submission:
            if not self.internet_message_id:
                self.internet_message_id = f"<{self.queue_id}@{self._info.server_hostname}>"
                prefix.append(f"Message-ID: {self.internet_message_id}\r\n")
            if headers.get("Date") is None:
                prefix.append(f"Date: {email.utils.formatdate(localtime=True)}\r\n")
        agents = self._service.agents
        if agents:
            self._headers = Headers.parse("".join(prefix).encode("utf-8")).plus(
                Headers.parse(header_block)
            )
            if agents.has(Event.END_OF_HEADERS):
                # No content yet: the view's reader says so (LookupError).
                outcome = await agents.run(
                    Event.END_OF_HEADERS, self._session_view(), self._view(self._received_bytes)
                )
                if outcome.reply is not None:
                    self._rejection = outcome.reply
                    return
                self._quarantine = outcome.quarantine
                if outcome.headers:
                    # Free here, since the header block is still in hand: right after our
                    # Received, where end of data and on_submitted put theirs too.
                    prefix.insert(1, format_headers(outcome.headers).decode("ascii"))
                    self._headers = self._headers.after_trace(outcome.headers)
        await self._blob_write("".join(prefix).encode("utf-8") + header_block + rest)

    def _session_view(self) -> SessionView:
        return SessionView.from_info(self._info)

    def _view(self, size: int, data: bytes | None = None, blob_id: str = "") -> MessageView:
        view = MessageView(
            queue_id=self.queue_id,
            sender=self._envelope.sender,
            recipients=self._envelope.recipients,
            headers=self._headers or Headers(),
            size=size,
            mail_params=dict(self._envelope.mail_params),
        )
        if not blob_id:
            return view

        async def content() -> bytes:
            return data if data is not None else await self._service.blobs.read(blob_id)

        return replace(view, reader=content)

    async def _blob_write(self, data: bytes) -> None:
        if self._copy is not None:
            if len(self._copy) + len(data) > HANDOFF_MAX_BYTES:
                self._copy = None
            else:
                self._copy += data
        await self._writer.write(data)

    async def finish(self) -> Reply:
        """Commit the message; the reply to send for end of data."""
        if self._finished:
            raise RuntimeError("intake finished twice")
        self._finished = True
        if self._rejection is None and not self._headers_done:
            # No empty line ended the headers: the whole message is a header block.
            block = bytes(self._header_buf)
            if block and not block.endswith(b"\r\n"):
                block += b"\r\n"
            await self._end_of_headers(block, b"")
        if self._rejection is not None:
            await self._writer.abort()
            self._service.log_rejection(self, self._rejection)
            return self._rejection
        try:
            blob_id = await self._writer.commit()
        except OSError:
            await self._writer.abort()
            return replies.STORAGE_FULL
        size = self._writer.size
        data = bytes(self._copy) if self._copy is not None else None
        agents = self._service.agents
        if agents and agents.has(Event.END_OF_DATA):
            outcome = await agents.run(
                Event.END_OF_DATA, self._session_view(), self._view(size, data, blob_id)
            )
            if outcome.reply is not None:
                try:
                    await self._service.blobs.delete(blob_id)
                except OSError:  # an orphan, not a reason to accept the message
                    self._service.log.warning("blob_delete_failed", queue_id=self.queue_id)
                self._service.log_rejection(self, outcome.reply)
                return outcome.reply
            self._quarantine = self._quarantine or outcome.quarantine
            if outcome.headers:
                try:
                    blob_id, size, data = await insert_headers(
                        self._service.blobs, blob_id, outcome.headers, data
                    )
                except OSError:
                    return replies.STORAGE_FULL
                if self._headers is not None:
                    self._headers = self._headers.after_trace(outcome.headers)
        try:
            await self._service.enqueue(
                self.queue_id,
                blob_id,
                size,
                self._envelope,
                self._info,
                self.internet_message_id,
                self.subject,
                data,
                headers=self._headers,
                quarantine=self._quarantine,
            )
        except Exception:
            # Not acknowledged, so the client retries; the orphaned blob is collected later.
            self._service.log.exception("enqueue_failed", queue_id=self.queue_id)
            return replies.LOCAL_ERROR
        mid = self.internet_message_id or f"<{self.queue_id}@{self._info.server_hostname}>"
        return Reply(
            250,
            "2.6.0",
            f"{mid} [InternalId={self.queue_id}, Hostname={self._info.server_hostname}] "
            "Queued mail for delivery",
        )

    async def abort(self) -> None:
        if not self._finished:
            self._finished = True
            await self._writer.abort()
