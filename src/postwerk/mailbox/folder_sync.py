"""A folder's changes since a MODSEQ, whether or not its tombstones are still kept.

Purpose: `MailStore.changes_since` answers from expunge tombstones, which the
store prunes after a while (`MailStore.prune_expunged`, docs/limits.md). A
session, a folder snapshot or a QRESYNC client that last looked before the
pruning gets `complete=False`; `changes_for` then finds what is gone by
comparing the UIDs the caller knows with the folder's UIDs now (one read of
every item's state, as at a first SELECT). Either way the caller gets an
exact, complete answer, and nothing above this module needs to know that
tombstones are ever pruned.
"""

from __future__ import annotations

from collections.abc import Iterable

from postwerk.store.api import MailStore
from postwerk.store.records import FolderChanges


async def changes_for(
    mail: MailStore, folder_id: int, modseq: int, known: Iterable[int]
) -> FolderChanges:
    """Changes after `modseq`; `known` (the UIDs the caller holds, iterated only
    when the tombstones are gone) bounds the expunged UIDs reported then."""
    changes = await mail.changes_since(folder_id, modseq)
    if changes.complete:
        return changes
    states = await mail.item_states(folder_id)
    present = {s.uid for s in states}
    return FolderChanges(
        changed=[s for s in states if s.modseq > modseq],
        expunged=sorted({u for u in known if u not in present}),
    )
