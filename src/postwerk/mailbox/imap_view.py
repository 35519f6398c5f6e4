"""An IMAP session's view of its selected folder: sequence numbers, UIDs, known flags.

Purpose: IMAP numbers messages by position (sequence numbers) in a list that
only the session may renumber, while the store changes under it (deliveries,
other sessions, POP3, EWS). `FolderView` keeps the list of UIDs the client
knows, the flags it was last told, and the store items behind them, and turns
a fresh `list_items` read into the untagged updates the client is owed.
Sans-I/O: the service reads the store and writes the lines.

Invariants:
- Sequence number n is `uids[n - 1]`; `uids` is ascending (UIDs only grow).
- A message expunged in the store stays in the view (`gone`) until
  `flush_expunges`, which the service calls only where RFC 9051 §7.5.1 allows
  an EXPUNGE response (not during FETCH, STORE or SEARCH by sequence number),
  so the client's numbering never shifts under a command it sent.
- EXPUNGE responses go out in descending sequence order: each one renumbers
  only the messages above it, so the numbers sent stay right one by one.
- New messages are announced with EXISTS after the view grows; EXISTS never
  renumbers, so it may go out at any command.

Standards: RFC 9051 §2.3.1 (UIDs, sequence numbers), §7.4.1 (EXISTS),
§7.5.1 (EXPUNGE), §7.5.2 (FETCH FLAGS as unsolicited update); RFC 3501.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from postwerk.protocols.imap import responses
from postwerk.store.records import Flag, Folder, Item

SYSTEM_FLAG_BITS: dict[str, int] = {name.upper(): bit for bit, name in Flag.NAMES.items()}


def flag_names(item: Item) -> list[str]:
    """The IMAP FLAGS of an item: system flags from the bits, then keywords."""
    names = [name for bit, name in Flag.NAMES.items() if item.flags & bit]
    names.extend(item.keywords)
    return names


def folder_state(folder: Folder) -> tuple[int, int, int]:
    """What changes whenever anything in the folder does (HIGHESTMODSEQ rises with
    every delivery, flag change and expunge; UIDNEXT and the count besides)."""
    return (folder.highest_modseq, folder.uidnext, folder.messages)


class FolderView:
    """The selected folder as this session knows it."""

    def __init__(self, folder_id: int, items: Iterable[Item], *, read_only: bool) -> None:
        self.folder_id = folder_id
        self.read_only = read_only
        ordered = sorted(items, key=lambda i: i.uid)
        self.uids: list[int] = [i.uid for i in ordered]
        self.items: dict[int, Item] = {i.uid: i for i in ordered}
        self.gone: set[int] = set()  # expunged in the store, not yet reported
        self.state: tuple[int, int, int] | None = None  # folder_state at the last read
        self._pos: dict[int, int] | None = None

    # ------------------------------------------------------------ numbering

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def largest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        if self._pos is None:
            self._pos = {u: n for n, u in enumerate(self.uids, 1)}
        return self._pos.get(uid)

    def live(self, uid: int) -> bool:
        return uid in self.items and uid not in self.gone

    # ------------------------------------------------------------ updates

    def update_items(self, items: Iterable[Item]) -> None:
        """Items this session changed itself (STORE): known, so not reported again."""
        for item in items:
            if item.uid in self.items:
                self.items[item.uid] = item

    def sync(self, items: Sequence[Item]) -> list[bytes]:
        """Take a fresh read of the folder; return FETCH FLAGS and EXISTS updates.

        Expunged messages are only marked (`gone`); see `flush_expunges`.
        """
        fresh = {i.uid: i for i in items}
        out: list[bytes] = []
        for seq, uid in enumerate(self.uids, 1):
            new = fresh.get(uid)
            if new is None:
                self.gone.add(uid)
                continue
            old = self.items[uid]
            if (new.flags, new.keywords) != (old.flags, old.keywords):
                out.append(
                    responses.fetch_response(
                        seq,
                        [("UID", b"%d" % uid), ("FLAGS", responses.flags_list(flag_names(new)))],
                    )
                )
            self.items[uid] = new
        last = self.largest_uid
        added = sorted(uid for uid in fresh if uid > last)
        if added:
            self.uids.extend(added)
            for uid in added:
                self.items[uid] = fresh[uid]
            self._pos = None
            out.append(responses.exists_line(len(self.uids)))
        return out

    def flush_expunges(self) -> list[bytes]:
        """EXPUNGE responses for every message gone from the store, highest first."""
        if not self.gone:
            return []
        out = [
            responses.expunge_line(seq)
            for seq in range(len(self.uids), 0, -1)
            if self.uids[seq - 1] in self.gone
        ]
        self.uids = [u for u in self.uids if u not in self.gone]
        for uid in self.gone:
            self.items.pop(uid, None)
        self.gone.clear()
        self._pos = None
        return out
