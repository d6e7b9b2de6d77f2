"""every job and file belongs to a project (the existing ones to `default`); idempotency keys are per project

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO projects (name, created_at) SELECT 'default', CURRENT_TIMESTAMP "
        "WHERE NOT EXISTS (SELECT 1 FROM projects WHERE name = 'default')"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default="default"))
        batch.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_jobs_project_idempotency_key", ["project", "idempotency_key"])
        batch.create_index("ix_jobs_project_created_at_id", ["project", "created_at", "id"])
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default="default"))
        batch.create_index("ix_files_project_created_at_id", ["project", "created_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_project_created_at_id")
        batch.drop_column("project")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_project_created_at_id")
        batch.drop_constraint("uq_jobs_project_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
        batch.drop_column("project")
