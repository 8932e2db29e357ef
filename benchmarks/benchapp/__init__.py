"""The app the benchmarks run against, in process and in ``flask mtasks worker`` subprocesses.

Like the test app it reads its services from the environment, so that a
worker started by a benchmark sees the same database and Redis:

- ``MTASKS_BENCH_DATABASE_URL``: the SQLAlchemy URL (required);
- ``MTASKS_BENCH_REDIS_URL``: RQ's Redis (required: benchmarks take the real path).

Every setting of the extension keeps its default: the figures are those a
user gets without tuning.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_maintenance_tasks import MaintenanceTasks

DATABASE_ENV = "MTASKS_BENCH_DATABASE_URL"
REDIS_ENV = "MTASKS_BENCH_REDIS_URL"

db = SQLAlchemy()
mtasks = MaintenanceTasks()


class Row(db.Model):  # type: ignore[name-defined,misc]
    """A row of the table the benchmark tasks and their hand-written baselines walk."""

    __tablename__ = "bench_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(100), default="")
    counter: Mapped[int] = mapped_column(sa.Integer, default=0)


class PreviewRow(db.Model):  # type: ignore[name-defined,misc]
    """A row of the large table previews are measured on (``benchmarks.previews`` fills it).

    ``bucket`` is ``id % 1000`` and indexed; ``amount`` is spread over 0 to 1,000,002 and
    ``note`` is text, neither indexed.
    """

    __tablename__ = "bench_preview_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    bucket: Mapped[int] = mapped_column(sa.Integer, index=True)
    amount: Mapped[int] = mapped_column(sa.Integer)
    note: Mapped[str] = mapped_column(sa.String(40))


def create_app(database_url: str | None = None, redis_url: str | None = None) -> Flask:
    """The benchmark app; URLs not given come from the environment."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url or os.environ[DATABASE_ENV]
    app.config["MAINTENANCE_TASKS_REDIS_URL"] = redis_url or os.environ[REDIS_ENV]
    app.config["MAINTENANCE_TASKS_ALLOW_ANONYMOUS"] = True
    db.init_app(app)
    mtasks.init_app(app, db=db)
    return app
