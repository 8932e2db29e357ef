"""flask-maintenance-tasks: indexes for the dashboard's reads

Revision ID: mtasks_0003
Revises: mtasks_0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "mtasks_0003"
down_revision = "mtasks_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_maintenance_tasks_runs_task_id", "maintenance_tasks_runs", ["task_name", "id"]
    )
    op.create_index("ix_maintenance_tasks_runs_status", "maintenance_tasks_runs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_maintenance_tasks_runs_status", table_name="maintenance_tasks_runs")
    op.drop_index("ix_maintenance_tasks_runs_task_id", table_name="maintenance_tasks_runs")
