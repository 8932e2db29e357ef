"""flask-maintenance-tasks: dry runs, and what they would change

Revision ID: mtasks_0006
Revises: mtasks_0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "mtasks_0006"
down_revision = "mtasks_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(
            sa.Column("dry_run", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("changes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_column("changes")
        batch.drop_column("dry_run")
