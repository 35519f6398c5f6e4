"""Each item's header block size as a column, so that IMAP's header FETCHes need
not extract it from the summary JSON; indexes for IMAP SEARCH by date and size;
the time each tombstone was written, so that old ones can be pruned (M3, issue 4).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:20:00
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable and not back-filled: reads fall back to the summary for older rows,
    # so the upgrade of a large store is instant.
    op.add_column("item", sa.Column("header_size", sa.BigInteger(), nullable=True))
    op.create_index(op.f("ix_item_folder_id_internal_date"), "item", ["folder_id", "internal_date"])
    op.create_index(op.f("ix_item_folder_id_size"), "item", ["folder_id", "size"])
    op.add_column(
        "expunged_item",
        sa.Column("expunged_at", sa.Float(), nullable=False, server_default=sa.text("0")),
    )
    # Tombstones from before count from now: pruning starts its clock at the upgrade.
    op.execute(sa.text("UPDATE expunged_item SET expunged_at = :now").bindparams(now=time.time()))


def downgrade() -> None:
    with op.batch_alter_table("expunged_item") as batch:
        batch.drop_column("expunged_at")
    op.drop_index(op.f("ix_item_folder_id_size"), table_name="item")
    op.drop_index(op.f("ix_item_folder_id_internal_date"), table_name="item")
    with op.batch_alter_table("item") as batch:
        batch.drop_column("header_size")
