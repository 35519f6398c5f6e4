"""IMAP subscriptions (M3, issue 4).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscription",
        sa.Column("mailbox_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id", "name", name=op.f("pk_subscription")),
    )


def downgrade() -> None:
    op.drop_table("subscription")
