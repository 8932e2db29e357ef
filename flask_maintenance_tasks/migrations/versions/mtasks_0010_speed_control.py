"""flask-maintenance-tasks: an operator's live speed control

Revision ID: mtasks_0010
Revises: mtasks_0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "mtasks_0010"
down_revision = "mtasks_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(sa.Column("max_rate", sa.Float(), nullable=True))
        batch.add_column(sa.Column("batch_size_override", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ticker_delay_override", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_column("ticker_delay_override")
        batch.drop_column("batch_size_override")
        batch.drop_column("max_rate")
