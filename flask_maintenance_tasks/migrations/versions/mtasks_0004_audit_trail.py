"""flask-maintenance-tasks: the audit trail (events), and who started each run

Revision ID: mtasks_0004
Revises: mtasks_0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from flask_maintenance_tasks.models import UTCDateTime

revision = "mtasks_0004"
down_revision = "mtasks_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(sa.Column("started_by", sa.String(length=255), nullable=True))
    op.create_index(
        "ix_maintenance_tasks_runs_started_by_id", "maintenance_tasks_runs", ["started_by", "id"]
    )
    # The runs page filters by status, newest first: the status index gains the id.
    op.create_index(
        "ix_maintenance_tasks_runs_status_id", "maintenance_tasks_runs", ["status", "id"]
    )
    op.drop_index("ix_maintenance_tasks_runs_status", table_name="maintenance_tasks_runs")
    op.create_table(
        "maintenance_tasks_events",
        sa.Column("id", big_id, autoincrement=True, nullable=False),
        sa.Column("run_id", big_id, nullable=True),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_tasks_events"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["maintenance_tasks_runs.id"],
            name="fk_maintenance_tasks_events_run_id_maintenance_tasks_runs",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_maintenance_tasks_events_run_id_id", "maintenance_tasks_events", ["run_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_maintenance_tasks_events_run_id_id", table_name="maintenance_tasks_events")
    op.drop_table("maintenance_tasks_events")
    op.create_index("ix_maintenance_tasks_runs_status", "maintenance_tasks_runs", ["status"])
    op.drop_index("ix_maintenance_tasks_runs_status_id", table_name="maintenance_tasks_runs")
    op.drop_index("ix_maintenance_tasks_runs_started_by_id", table_name="maintenance_tasks_runs")
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_column("started_by")
