"""flask-maintenance-tasks: the pace of a run, a bounded series of its recent throughput

Revision ID: mtasks_0012
Revises: mtasks_0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "mtasks_0012"
down_revision = "mtasks_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(sa.Column("pace", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_column("pace")
