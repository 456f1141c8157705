"""Initial schema: api_keys, jobs, job_events, uploads, idempotency_keys, job_tasks, demos.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(col: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([col], [target], ondelete="CASCADE")


def upgrade() -> None:
    """Create api_keys, jobs, uploads, demos, idempotency_keys, job_events, job_tasks."""
    _create_keys_and_jobs()
    _create_uploads_and_demos()
    _create_idempotency_events_and_tasks()


def _create_keys_and_jobs() -> None:
    """api_keys and jobs, with the jobs listing indexes."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("principal_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("runner_pid", sa.Integer(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        _ts("heartbeat_at", nullable=True),
        _fk("principal_id", "api_keys.id"),
    )
    op.create_index("ix_jobs_principal_created", "jobs", ["principal_id", "created_at", "id"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])


def _create_uploads_and_demos() -> None:
    """uploads and demos, with their indexes."""
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("principal_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("format", sa.String(32), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        _ts("created_at"),
        _fk("principal_id", "api_keys.id"),
    )
    op.create_index("ix_uploads_principal_created", "uploads",
                    ["principal_id", "created_at", "id"])
    op.create_table(
        "demos",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("principal_id", sa.String(40), nullable=False),
        sa.Column("trial", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
        _fk("job_id", "jobs.id"),
        _fk("principal_id", "api_keys.id"),
    )
    op.create_index("ix_demos_job_id", "demos", ["job_id"])


def _create_idempotency_events_and_tasks() -> None:
    """idempotency_keys, job_events and job_tasks."""
    op.create_table(
        "idempotency_keys",
        sa.Column("principal_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        _ts("created_at"),
        _fk("job_id", "jobs.id"),
        _fk("principal_id", "api_keys.id"),
        sa.PrimaryKeyConstraint("principal_id", "key"),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        _ts("created_at"),
        _fk("job_id", "jobs.id"),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),
    )
    op.create_table(
        "job_tasks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("queue_job_id", sa.Integer(), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        _ts("heartbeat_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("job_id", "jobs.id"),
        sa.UniqueConstraint("job_id", "kind", "shard", name="uq_job_tasks_job_kind_shard"),
    )
    op.create_index("ix_job_tasks_state", "job_tasks", ["state"])


def downgrade() -> None:
    """Drop every table of this revision."""
    for table in ("job_tasks", "job_events", "idempotency_keys", "demos", "uploads", "jobs",
                  "api_keys"):
        op.drop_table(table)
