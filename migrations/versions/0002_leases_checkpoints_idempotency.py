"""leases, dispatch times, requested actions, idempotency keys; checkpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from shared.store.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_expires_at", UtcDateTime()))
        batch.add_column(sa.Column("heartbeat_at", UtcDateTime()))
        batch.add_column(sa.Column("dispatched_at", UtcDateTime()))
        batch.add_column(sa.Column("requested_action", sa.String(20)))
        batch.add_column(sa.Column("lost_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("idempotency_key", sa.String(255)))
        batch.add_column(sa.Column("request_fingerprint", sa.String(64)))
        batch.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires_at"])

    op.create_table(
        "checkpoints",
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_index("ix_jobs_status_lease", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        for column in ("request_fingerprint", "idempotency_key", "lost_attempts", "requested_action",
                       "dispatched_at", "heartbeat_at", "lease_expires_at"):
            batch.drop_column(column)
