"""An IMAP session's view of its selected folder: sequence numbers, UIDs, known flags.

Purpose: IMAP numbers messages by position (sequence numbers) in a list that
only the session may renumber, while the store changes under it (deliveries,
other sessions, POP3, EWS). `FolderView` keeps the list of UIDs the client
knows and the state (flags, keywords, MODSEQ) it was last told of, never the
items' summaries, and turns the store's changes since the MODSEQ it last took
in (`MailStore.changes_since`) into the untagged updates the client is owed:
a session on a folder of 100,000 items re-reads only what changed.
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
- `modseq` is the folder's HIGHESTMODSEQ read *before* the states it covers,
  so a change racing the read is reported again rather than missed; applying
  a change twice is harmless (same flags: no FETCH; known UID: no EXISTS).

Standards: RFC 9051 §2.3.1 (UIDs, sequence numbers), §7.4.1 (EXISTS),
§7.5.1 (EXPUNGE), §7.5.2 (FETCH FLAGS as unsolicited update); RFC 3501.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from postwerk.mailbox.folder_snapshots import FolderSnapshot
from postwerk.protocols.imap import responses
from postwerk.store.records import Flag, Folder, FolderChanges, ItemState

_UNKNOWN = -1  # FolderView._first_unseen before it is computed
SYSTEM_FLAG_BITS: dict[str, int] = {name.upper(): bit for bit, name in Flag.NAMES.items()}


def flag_names(item: ItemState) -> list[str]:
    """The IMAP FLAGS of an item: system flags from the bits, then keywords."""
    names = [name for bit, name in Flag.NAMES.items() if item.flags & bit]
    names.extend(item.keywords)
    return names


class FolderView:
    """The selected folder as this session knows it."""

    def __init__(self, folder: Folder, snapshot: FolderSnapshot, *, read_only: bool) -> None:
        """A view of `snapshot` (`FolderSnapshots.get(folder)`; `folder` read first)."""
        self.folder_id = folder.id
        self.read_only = read_only
        # Shared with the published snapshot until this view's first change (then
        # copied: `_own`), so an unchanged folder costs sessions no copy at all.
        self.uids: Sequence[int] = snapshot.uids
        self.states: Mapping[int, ItemState] = snapshot.states
        self._shared = True
        self._first_unseen: int | None = snapshot.first_unseen
        self._pos: Mapping[int, int] | None = snapshot.positions  # replaced, never changed
        self.gone: set[int] = set()  # expunged in the store, not yet reported
        # Every change up to this HIGHESTMODSEQ is taken in; HIGHESTMODSEQ rises
        # with every delivery, flag change and expunge, so it alone says "changed".
        self.modseq = max(folder.highest_modseq, snapshot.modseq)
        self.condstore = False  # FETCH updates carry MODSEQ (RFC 7162 §3.1)
        self.qresync = False  # expunges are reported as VANISHED (RFC 7162 §3.2.10)

    def changed(self, folder: Folder | None) -> bool:
        """Whether the folder's row says something happened since the last sync."""
        return folder is None or folder.highest_modseq > self.modseq

    def _own(self) -> tuple[list[int], dict[int, ItemState]]:
        """The view's own, mutable lists (copied from the snapshot the first time)."""
        if self._shared:
            self.uids = list(self.uids)
            self.states = dict(self.states)
            self._shared = False
        self._first_unseen = _UNKNOWN
        assert isinstance(self.uids, list) and isinstance(self.states, dict)
        return self.uids, self.states

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
        return uid in self.states and uid not in self.gone

    def first_unseen(self) -> int | None:
        if self._first_unseen != _UNKNOWN:
            return self._first_unseen
        return next(
            (n for n, uid in enumerate(self.uids, 1) if not self.states[uid].flags & Flag.SEEN),
            None,
        )

    # ------------------------------------------------------------ updates

    def update_states(self, states: Iterable[ItemState]) -> None:
        """Items this session changed itself (STORE): known, so not reported again."""
        for state in states:
            if state.uid in self.states:
                self._own()[1][state.uid] = state

    def apply(self, changes: FolderChanges, folder: Folder | None) -> list[bytes]:
        """Take in the store's changes (read after `folder`); return FETCH FLAGS and
        EXISTS updates. `folder` None: the folder is gone, and every message with it.

        Expunged messages are only marked (`gone`); see `flush_expunges`.
        """
        out: list[bytes] = []
        if folder is None:
            self.gone.update(self.uids)
            return out
        for uid in changes.expunged:
            if uid in self.states:
                self.gone.add(uid)
        last = self.largest_uid
        added: list[ItemState] = []
        for new in changes.changed:
            if new.uid > last:
                added.append(new)
                continue
            old = self.states.get(new.uid)
            if old is None or new.uid in self.gone:
                continue
            if (new.flags, new.keywords) != (old.flags, old.keywords):
                seq = self.seq_of(new.uid)
                assert seq is not None
                out.append(responses.fetch_response(seq, self.flag_items(new, uid=True)))
            if new != old:
                self._own()[1][new.uid] = new
        if added:
            uids, states = self._own()
            for new in added:  # ascending: changes come in UID order
                uids.append(new.uid)
                states[new.uid] = new
            self._pos = None
            out.append(responses.exists_line(len(self.uids)))
        self.modseq = max(self.modseq, folder.highest_modseq)
        return out

    def flag_items(self, state: ItemState, *, uid: bool) -> list[tuple[str, bytes]]:
        """The items of a FETCH response that reports flags (with MODSEQ once the
        client enabled CONDSTORE)."""
        items: list[tuple[str, bytes]] = []
        if uid:
            items.append(("UID", b"%d" % state.uid))
        items.append(("FLAGS", responses.flags_list(flag_names(state))))
        if self.condstore:
            items.append(("MODSEQ", b"(%d)" % state.modseq))
        return items

    def flush_expunges(self) -> list[bytes]:
        """EXPUNGE responses for every message gone from the store, highest first
        (one VANISHED response instead once QRESYNC is enabled)."""
        if not self.gone:
            return []
        if self.qresync:
            out = [responses.vanished_line(sorted(self.gone), earlier=False)]
        else:
            out = [
                responses.expunge_line(seq)
                for seq in range(len(self.uids), 0, -1)
                if self.uids[seq - 1] in self.gone
            ]
        _, states = self._own()
        self.uids = [u for u in self.uids if u not in self.gone]
        for uid in self.gone:
            states.pop(uid, None)
        self.gone.clear()
        self._pos = None
        return out
