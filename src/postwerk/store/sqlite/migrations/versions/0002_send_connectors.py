"""Send connectors (M2).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 07:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_connector",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("address_spaces", sa.Text(), nullable=False),
        sa.Column("smart_hosts", sa.Text(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("auth_user", sa.String(), nullable=True),
        sa.Column("auth_password", sa.String(), nullable=True),
        sa.Column("tls", sa.String(), nullable=False),
        sa.Column("verify_certificates", sa.Boolean(), nullable=False),
        sa.Column("source_servers", sa.Text(), nullable=False),
        sa.Column("max_message_size", sa.BigInteger(), nullable=False),
        sa.Column("frontend_proxy", sa.Boolean(), nullable=False),
        sa.Column("fqdn", sa.String(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_send_connector")),
    )


def downgrade() -> None:
    op.drop_table("send_connector")
