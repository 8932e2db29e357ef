"""flask-maintenance-tasks: an index on the retry that resolved a failure, for retention

Deleting a run sets ``retried_by_id`` of the failures it retried to NULL (its
foreign key says ``ON DELETE SET NULL``); without an index, PostgreSQL reads
the whole failures table for every run deleted.

Revision ID: mtasks_0008
Revises: mtasks_0007
Create Date: 2026-12-01
"""

from alembic import op

revision = "mtasks_0008"
down_revision = "mtasks_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_maintenance_tasks_failures_retried_by_id",
        "maintenance_tasks_failures",
        ["retried_by_id"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_maintenance_tasks_failures_retried_by_id", table_name="maintenance_tasks_failures"
    )
