"""Mailbox placement and server-to-server trust (M4, issue 5).

- `mailbox_database`: the organization's mailbox databases and the Mailbox server
  each is mounted on; `recipient.database`: the database a mailbox lives in
  (NULL for mailboxes made before: the first Mailbox server to start adopts them).
- `organization.secret`: the key servers derive their credentials from; an
  existing organization gets one here.
- `server.certificate_sha256`: the pinned TLS certificate of each server.
- `queue_recipient.server`: the server whose queue a row is in, for servers sharing
  one database ("" where one server has the database to itself).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 18:20:00
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailbox_database",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("server", sa.String(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mailbox_database")),
    )
    with op.batch_alter_table("recipient") as batch:
        batch.add_column(sa.Column("database", sa.String(), nullable=True))
    with op.batch_alter_table("organization") as batch:
        batch.add_column(sa.Column("secret", sa.String(), nullable=True))
    with op.batch_alter_table("server") as batch:
        batch.add_column(
            sa.Column(
                "certificate_sha256", sa.String(), nullable=False, server_default=sa.text("''")
            )
        )
    with op.batch_alter_table("queue_recipient") as batch:
        batch.add_column(
            sa.Column("server", sa.String(), nullable=False, server_default=sa.text("''"))
        )
    op.execute(
        sa.text("UPDATE organization SET secret = :secret WHERE secret IS NULL").bindparams(
            secret=secrets.token_hex(32)
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("queue_recipient") as batch:
        batch.drop_column("server")
    with op.batch_alter_table("server") as batch:
        batch.drop_column("certificate_sha256")
    with op.batch_alter_table("organization") as batch:
        batch.drop_column("secret")
    with op.batch_alter_table("recipient") as batch:
        batch.drop_column("database")
    op.drop_table("mailbox_database")
