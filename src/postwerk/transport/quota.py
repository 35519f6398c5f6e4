"""Mailbox storage quotas on the mail flow (Set-Mailbox -ProhibitSendReceiveQuota).

A mailbox with a quota (`postwerk mailbox set-quota`, `Recipient.quota_bytes`;
None is unlimited) takes no more mail once it is full. Two places ask:

- RCPT TO (`services/smtp.py`), for a mailbox of an authoritative domain:
  refused `552 5.2.2` when the mailbox is full already, or when the size the
  client announced (MAIL FROM SIZE=, RFC 1870) would take it past its limit. The
  other recipients of the transaction are not affected. This is Postfix asking
  Dovecot's quota-status; RFC 5321 §4.5.3.1.10 lets a client treat 552 at RCPT
  as temporary, and either way nothing is stored.
- Final delivery (`transport/service.py`): a message that would take the mailbox
  past its limit is not stored; that recipient fails with 5.2.2 and the sender
  gets an NDR, as from Exchange's store driver. This catches what RCPT cannot
  know: no SIZE=, members of a group, usage grown since.

Invariants:
- Usage is `MailStore.mailbox_size` (the folders' size counters): one indexed
  read whatever the mailbox holds, and none at all for a mailbox without a quota.
- The limit is read through the recipient cache, like every RCPT check: a
  `set-quota` reaches the mail flow within its TTL (5 seconds).
- Within one delivery batch the items for a mailbox count against each other.
  Deliveries running at the same time in different sessions or batches each see
  only what is stored, so together they may pass the limit by what was in
  flight: the limit is soft, as Exchange's is.
"""

from __future__ import annotations

from postwerk.core import replies
from postwerk.core.replies import Reply
from postwerk.directory.cache import RecipientLookup
from postwerk.store.api import MailStore
from postwerk.store.records import Recipient, RecipientKind

# A delivery refused for quota, as the NDR, the queue row and the tracking log say it
# (Exchange's store driver reports "554 5.2.2 mailbox full; STOREDRV.Deliver...").
DELIVERY_REFUSED = (
    f"{replies.MAILBOX_FULL.code} {replies.MAILBOX_FULL.status} STOREDRV.Deliver; mailbox full"
)


def over_quota(used: int, adding: int, limit: int | None) -> bool:
    """Whether a mailbox storing `used` octets may not take `adding` more: it is full
    already (`used >= limit`, even for nothing more) or would pass its limit."""
    return limit is not None and (used >= limit or used + adding > limit)


async def refuses(mail: MailStore, recipient: Recipient, adding: int) -> bool:
    """`over_quota` for a directory recipient: one usage read, none without a quota."""
    if recipient.kind != RecipientKind.MAILBOX or recipient.quota_bytes is None:
        return False
    return over_quota(await mail.mailbox_size(recipient.id), adding, recipient.quota_bytes)


def rcpt_refused(address: str) -> Reply:
    """The RCPT reply, naming the recipient (as Postfix's quota-status replies do)."""
    return replies.MAILBOX_FULL.with_text(f"<{address}>: Mailbox full")


class QuotaLedger:
    """What one delivery batch adds to each mailbox: a mailbox's usage and limit are
    read once, then each item admitted for it is counted before the next is asked."""

    def __init__(self, mail: MailStore, lookup: RecipientLookup) -> None:
        self._mail = mail
        self._lookup = lookup
        self._usage: dict[int, list[int] | None] = {}  # mailbox id -> [used, limit]

    async def admit(self, address: str, mailbox_id: int, size: int) -> bool:
        """True when `size` more octets fit into the mailbox (and are counted); False
        when they would pass its quota. `address` is the row's primary address."""
        if mailbox_id not in self._usage:
            self._usage[mailbox_id] = await self._read(address, mailbox_id)
        usage = self._usage[mailbox_id]
        if usage is None:
            return True
        if over_quota(usage[0], size, usage[1]):
            return False
        usage[0] += size
        return True

    async def _read(self, address: str, mailbox_id: int) -> list[int] | None:
        recipient = await self._lookup.find_recipient(address)
        if (
            recipient is None
            or recipient.id != mailbox_id  # removed and recreated since it was routed
            or recipient.kind != RecipientKind.MAILBOX
            or recipient.quota_bytes is None
        ):
            return None
        return [await self._mail.mailbox_size(mailbox_id), recipient.quota_bytes]
