"""what watching a job needs: job metadata, samples of completions, workers with heartbeats, counters for /metrics

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.models import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("metadata", json_type))
        batch.add_column(sa.Column("queued_seconds", sa.Float()))
        batch.add_column(sa.Column("points_ingested", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "samples",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("prompt", json_type),
        sa.Column("completion", json_type),
        sa.Column("rewards", json_type, nullable=False),
        sa.Column("advantage", sa.Float()),
    )
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("current_job", sa.String(40)),
        sa.Column("devices", json_type),
        sa.Column("stopped_at", UtcDateTime()),
    )
    op.create_index("ix_workers_heartbeat_at", "workers", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("samples")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("points_ingested")
        batch.drop_column("queued_seconds")
        batch.drop_column("metadata")
