"""quotas hold jobs (`held_since`), per-project secrets (encrypted), and an audit log of what operators change

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from shared.store.models import BigIntId, JsonType, UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("held_since", UtcDateTime()))
    op.create_table(
        "secrets",
        sa.Column("project", sa.String(64), sa.ForeignKey("projects.name"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(64)),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("project", sa.String(64)),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("data", JsonType),
    )
    op.create_index("ix_audit_events_project_id", "audit_events", ["project", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_project_id", "audit_events")
    op.drop_table("audit_events")
    op.drop_table("secrets")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("held_since")
