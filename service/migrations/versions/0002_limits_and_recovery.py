"""Key expiry, per-job recovery count and byte accounting for quotas.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add api_keys.expires_at, jobs.recoveries, jobs.artifact_bytes, uploads.stored_bytes."""
    with op.batch_alter_table("api_keys") as t:
        t.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("jobs") as t:
        t.add_column(sa.Column("recoveries", sa.Integer(), nullable=False,
                               server_default="0"))
        t.add_column(sa.Column("artifact_bytes", sa.BigInteger(), nullable=False,
                               server_default="0"))
    with op.batch_alter_table("uploads") as t:
        t.add_column(sa.Column("stored_bytes", sa.BigInteger(), nullable=False,
                               server_default="0"))


def downgrade() -> None:
    """Drop the columns added by :func:`upgrade`."""
    with op.batch_alter_table("uploads") as t:
        t.drop_column("stored_bytes")
    with op.batch_alter_table("jobs") as t:
        t.drop_column("artifact_bytes")
        t.drop_column("recoveries")
    with op.batch_alter_table("api_keys") as t:
        t.drop_column("expires_at")
