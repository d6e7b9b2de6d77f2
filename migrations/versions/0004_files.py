"""uploaded dataset files

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.store.models import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("prompt_format", sa.String(20), nullable=False),
        sa.Column("columns", json_type, nullable=False),
        sa.Column("column_map", json_type),
        sa.Column("sample", json_type, nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_files_created_at_id", "files", ["created_at", "id"])


def downgrade() -> None:
    op.drop_table("files")
