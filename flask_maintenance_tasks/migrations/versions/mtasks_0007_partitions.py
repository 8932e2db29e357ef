"""flask-maintenance-tasks: partitions of a run

Revision ID: mtasks_0007
Revises: mtasks_0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "mtasks_0007"
down_revision = "mtasks_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(sa.Column("partitions", sa.Integer(), server_default="1", nullable=False))
        big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
        batch.add_column(sa.Column("parent_id", big_id, nullable=True))
        batch.add_column(sa.Column("partition", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("bounds", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            "fk_maintenance_tasks_runs_parent_id",
            "maintenance_tasks_runs",
            ["parent_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(
            "ix_maintenance_tasks_runs_parent_id_partition", ["parent_id", "partition"]
        )


def downgrade() -> None:
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_index("ix_maintenance_tasks_runs_parent_id_partition")
        batch.drop_constraint("fk_maintenance_tasks_runs_parent_id", type_="foreignkey")
        batch.drop_column("bounds")
        batch.drop_column("partition")
        batch.drop_column("parent_id")
        batch.drop_column("partitions")
