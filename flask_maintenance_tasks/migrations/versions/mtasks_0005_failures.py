"""flask-maintenance-tasks: the failure ledger, and each run's error policy

Revision ID: mtasks_0005
Revises: mtasks_0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from flask_maintenance_tasks.models import UTCDateTime

revision = "mtasks_0005"
down_revision = "mtasks_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.add_column(
            sa.Column("error_policy", sa.String(length=8), server_default="stop", nullable=False)
        )
        batch.add_column(sa.Column("max_failures", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_failure_rate", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("failure_count", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("retry_of_id", big_id, nullable=True))
        batch.create_foreign_key(
            "fk_maintenance_tasks_runs_retry_of_id_maintenance_tasks_runs",
            "maintenance_tasks_runs",
            ["retry_of_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_index(
        "ix_maintenance_tasks_runs_retry_of_id", "maintenance_tasks_runs", ["retry_of_id"]
    )
    op.create_table(
        "maintenance_tasks_failures",
        sa.Column("id", big_id, autoincrement=True, nullable=False),
        sa.Column("run_id", big_id, nullable=False),
        sa.Column("item_key", sa.JSON(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("position", sa.JSON(), nullable=True),
        sa.Column("item", sa.JSON(), nullable=True),
        sa.Column("error_class", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("backtrace", sa.JSON(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("retried_by_id", big_id, nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_tasks_failures"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["maintenance_tasks_runs.id"],
            name="fk_maintenance_tasks_failures_run_id_maintenance_tasks_runs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["retried_by_id"],
            ["maintenance_tasks_runs.id"],
            name="fk_maintenance_tasks_failures_retried_by",
            ondelete="SET NULL",
        ),
    )
    for name, columns in (
        ("ix_maintenance_tasks_failures_run_id_id", ["run_id", "id"]),
        ("ix_maintenance_tasks_failures_run_id_error_class", ["run_id", "error_class"]),
        ("ix_maintenance_tasks_failures_run_id_status", ["run_id", "status"]),
    ):
        op.create_index(name, "maintenance_tasks_failures", columns)


def downgrade() -> None:
    op.drop_table("maintenance_tasks_failures")
    op.drop_index("ix_maintenance_tasks_runs_retry_of_id", table_name="maintenance_tasks_runs")
    with op.batch_alter_table("maintenance_tasks_runs") as batch:
        batch.drop_constraint(
            "fk_maintenance_tasks_runs_retry_of_id_maintenance_tasks_runs", type_="foreignkey"
        )
        batch.drop_column("retry_of_id")
        batch.drop_column("failure_count")
        batch.drop_column("max_failure_rate")
        batch.drop_column("max_failures")
        batch.drop_column("error_policy")
