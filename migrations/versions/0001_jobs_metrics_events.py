"""jobs, metric points and job events

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(JSONB(), "postgresql")
big_int_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("spec", json_type, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime()),
        sa.Column("finished_at", UtcDateTime()),
        sa.Column("error", sa.Text()),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("worker", sa.String(200)),
        sa.Column("total_steps", sa.Integer()),
        sa.Column("latest_step", sa.Integer()),
        sa.Column("latest_metrics", json_type),
        sa.Column("summary", json_type),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_created_at_id", "jobs", ["created_at", "id"])

    op.create_table(
        "metric_points",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("epoch", sa.Float()),
        sa.Column("metrics", json_type, nullable=False),
        sa.Column("logged_at", UtcDateTime(), nullable=False),
    )

    op.create_table(
        "job_events",
        sa.Column("id", big_int_id, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", json_type),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("metric_points")
    op.drop_table("jobs")
