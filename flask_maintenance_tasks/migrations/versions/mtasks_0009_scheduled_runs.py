"""flask-maintenance-tasks: runs started at a set time

Revision ID: mtasks_0009
Revises: mtasks_0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "mtasks_0009"
down_revision = "mtasks_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_column("scheduled_at")
