"""what a job needs of its worker: the GPUs it is routed by, and why it may wait

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("gpus_needed", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("status_reason", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("status_reason")
        batch.drop_column("gpus_needed")
