"""POP3/IMAP4 settings per server, as Exchange's Set-PopSettings -Server (M4).

Existing rows become the organization's default (server ""), which every
server without its own row keeps using.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 16:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("protocol_settings") as batch:
        batch.add_column(
            sa.Column("server", sa.String(), nullable=False, server_default=sa.text("''"))
        )
        batch.drop_constraint(op.f("pk_protocol_settings"), type_="primary")
        batch.create_primary_key(op.f("pk_protocol_settings"), ["server", "protocol"])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM protocol_settings WHERE server != ''"))
    with op.batch_alter_table("protocol_settings") as batch:
        batch.drop_constraint(op.f("pk_protocol_settings"), type_="primary")
        batch.create_primary_key(op.f("pk_protocol_settings"), ["protocol"])
        batch.drop_column("server")
