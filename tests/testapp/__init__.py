"""The app the test suite runs against, in process and in worker subprocesses.

Everything it needs comes from the environment, so that a ``flask mtasks
worker`` started by a test sees the same database and Redis as the test:

- ``MTASKS_TEST_DATABASE_URL``: the SQLAlchemy URL (required);
- ``MTASKS_TEST_REDIS_URL``: RQ's Redis (absent: the in-process executor);
- ``MTASKS_TEST_SETTINGS``: JSON of extra ``MAINTENANCE_TASKS_*`` settings.
"""

from __future__ import annotations

import json
import logging
import os
import typing as t

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_maintenance_tasks import MaintenanceTasks

db = SQLAlchemy()
mtasks = MaintenanceTasks()


class Item(db.Model):  # type: ignore[name-defined,misc]
    """A row a test task walks; ``counter`` counts how often it was processed."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(100), default="")
    group: Mapped[int] = mapped_column(sa.Integer, default=0)
    counter: Mapped[int] = mapped_column(sa.Integer, default=0)


class Flag(db.Model):  # type: ignore[name-defined,misc]
    """A named switch tests flip from outside a worker (throttles, failures)."""

    __tablename__ = "flags"

    name: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(200), default="")


def flag(name: str) -> str | None:
    row = db.session.get(Flag, name)
    return None if row is None else row.value


def create_app(**settings: t.Any) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = url = os.environ["MTASKS_TEST_DATABASE_URL"]
    if url.startswith("sqlite") and "timeout=" not in url:
        # As the docs advise for partitions on SQLite: their ticks take the write
        # lock in turn, and anyone else (a test pausing the run) waits its turn.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 30}}
        # And operators' actions may wait as long (the default bound, 5 s, keeps a
        # shorter busy timeout given in the URL).
        app.config["MAINTENANCE_TASKS_LOCK_TIMEOUT"] = 30
    app.config["TESTING"] = True
    app.config["SECRET_KEY"] = "test-secret-key"
    redis_url = os.environ.get("MTASKS_TEST_REDIS_URL")
    if redis_url:
        app.config["MAINTENANCE_TASKS_REDIS_URL"] = redis_url
    extra = json.loads(os.environ.get("MTASKS_TEST_SETTINGS") or "{}")
    for key, value in extra.items():
        app.config[f"MAINTENANCE_TASKS_{key.upper()}"] = value
    if os.environ.get("MTASKS_TEST_DEBUG_LOG"):
        _log_debug_lines()
    db.init_app(app)
    mtasks.init_app(app, db=db, **settings)
    return app


def _log_debug_lines() -> None:
    """The extension's debug lines on stderr, each stamped with its Unix time (a worker's log)."""
    logger = logging.getLogger("flask_maintenance_tasks")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
