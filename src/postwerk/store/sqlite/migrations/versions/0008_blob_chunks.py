"""Message files in the database, for servers that share one (M4, issue 5).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 16:25:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob_chunk",
        sa.Column("blob_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "seq", name=op.f("pk_blob_chunk")),
    )


def downgrade() -> None:
    op.drop_table("blob_chunk")
