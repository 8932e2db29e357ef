"""The app ``benchmarks/csv_import.py`` drives: its worker processes load it from ``FLASK_APP``.

Configured from the environment: ``CSV_BENCH_DATABASE_URL``,
``CSV_BENCH_REDIS_URL`` and ``CSV_BENCH_RESULTS`` (where the tasks append
their measurements, one JSON object a line).
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_maintenance_tasks import MaintenanceTasks

db = SQLAlchemy()
mtasks = MaintenanceTasks()


class ImportedRow(db.Model):  # type: ignore[name-defined,misc]
    """Where the batched import writes the rows of the file."""

    __tablename__ = "imported_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(100))
    author: Mapped[str] = mapped_column(sa.String(100))
    content: Mapped[str] = mapped_column(sa.Text)
    score: Mapped[int] = mapped_column(sa.Integer)


def create_app() -> Flask:
    import os

    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["CSV_BENCH_DATABASE_URL"],
        MAINTENANCE_TASKS_REDIS_URL=os.environ["CSV_BENCH_REDIS_URL"],
        MAINTENANCE_TASKS_TASKS_PACKAGE="benchmarks.csv_import_app.maintenance",
        # One slice per run: the whole import is measured in one work horse.
        MAINTENANCE_TASKS_MAX_JOB_RUNTIME=3600,
        MAINTENANCE_TASKS_MAX_CSV_BYTES=2 * 1024**3,
        MAINTENANCE_TASKS_ALLOW_ANONYMOUS=True,
    )
    db.init_app(app)
    mtasks.init_app(app, db=db)
    return app
