"""flask-maintenance-tasks: create the maintenance_tasks_runs table

Revision ID: mtasks_0001
Revises:
Create Date: 2026-11-23
"""

# This file is copied into the application's migrations folder, where it
# lives on after the library changes: it names plain SQLAlchemy types only,
# never the library's own (UTCDateTime stores a DateTime(timezone=True)).

import sqlalchemy as sa
from alembic import op

revision = "mtasks_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_tasks_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tick_count", sa.BigInteger(), nullable=False),
        sa.Column("tick_total", sa.BigInteger(), nullable=True),
        sa.Column("time_running", sa.Float(), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=True),
        sa.Column("arguments", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("interruption_reason", sa.String(length=32), nullable=True),
        sa.Column("exclusive_key", sa.String(length=255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error_class", sa.String(length=255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("backtrace", sa.JSON(), nullable=True),
        sa.Column("errored_element", sa.JSON(), nullable=True),
        sa.Column("lock_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_tasks_runs"),
        sa.UniqueConstraint("exclusive_key", name="uq_maintenance_tasks_runs_exclusive_key"),
    )
    op.create_index(
        "ix_maintenance_tasks_runs_task_status_created",
        "maintenance_tasks_runs",
        ["task_name", "status", "created_at"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_maintenance_tasks_runs_task_status_created", table_name="maintenance_tasks_runs"
    )
    op.drop_table("maintenance_tasks_runs")
