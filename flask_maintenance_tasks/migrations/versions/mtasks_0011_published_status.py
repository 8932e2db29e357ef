"""flask-maintenance-tasks: the status a task publishes (``self.status``)

Revision ID: mtasks_0011
Revises: mtasks_0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "mtasks_0011"
down_revision = "mtasks_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(sa.Column("published", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_column("published")
