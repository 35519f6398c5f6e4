"""Expunged-UID tombstones for IMAP CONDSTORE/QRESYNC, and each item's IMAP
ENVELOPE rendered at delivery (M3, issue 4).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: items stored before have none and get theirs rendered at FETCH.
    op.add_column("item", sa.Column("imap_envelope", sa.LargeBinary(), nullable=True))
    op.create_table(
        "expunged_item",
        sa.Column(
            "folder_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["folder.id"],
            name=op.f("fk_expunged_item_folder_id_folder"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("folder_id", "uid", name=op.f("pk_expunged_item")),
    )
    op.create_index(
        op.f("ix_expunged_item_folder_id_modseq"),
        "expunged_item",
        ["folder_id", "modseq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_expunged_item_folder_id_modseq"), table_name="expunged_item")
    op.drop_table("expunged_item")
    with op.batch_alter_table("item") as batch:
        batch.drop_column("imap_envelope")
