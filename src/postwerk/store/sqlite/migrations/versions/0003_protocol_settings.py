"""Client access protocol settings: POP3 and IMAP4 switches (M3).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "protocol_settings",
        sa.Column("protocol", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("protocol", name=op.f("pk_protocol_settings")),
    )


def downgrade() -> None:
    op.drop_table("protocol_settings")
