"""flask-maintenance-tasks: create the CSV files and CSV chunks tables

Revision ID: mtasks_0002
Revises: mtasks_0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from flask_maintenance_tasks.models import UTCDateTime

revision = "mtasks_0002"
down_revision = "mtasks_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "maintenance_tasks_csv_files",
        sa.Column("id", big_id, autoincrement=True, nullable=False),
        sa.Column("run_id", big_id, nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("original_filename", sa.String(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_tasks_csv_files"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["maintenance_tasks_runs.id"],
            name="fk_maintenance_tasks_csv_files_run_id_maintenance_tasks_runs",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("run_id", name="uq_maintenance_tasks_csv_files_run_id"),
    )
    op.create_table(
        "maintenance_tasks_csv_chunks",
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("start_byte", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "storage_key", "start_byte", name="pk_maintenance_tasks_csv_chunks"
        ),
    )


def downgrade() -> None:
    op.drop_table("maintenance_tasks_csv_chunks")
    op.drop_table("maintenance_tasks_csv_files")
