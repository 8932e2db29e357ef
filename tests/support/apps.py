"""The test app, built fresh for a test on the database ``MTASKS_TEST_DATABASE_URL`` names.

``tests.testapp`` reads its database, Redis and settings from the environment
(the ``app_env`` fixture sets it), so that worker subprocesses see what the
test sees. :func:`make_app` gives it empty tables, without the DDL that would
cost more than most tests: a SQLite file is overwritten by a copy of a file
holding the empty schema, made once per process (SQLite commits every
``CREATE`` on its own); on PostgreSQL the tables stay from one test to the
next and are emptied, their id sequences restarted, unless one is missing
(then they are dropped and created).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import shutil
import tempfile
import typing as t
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

#: Fast settings for tests: ticks and status reloads five times a second.
FAST = {"ticker_delay": 0.2, "status_reload_frequency": 0.2}


@contextlib.contextmanager
def make_app(**options: t.Any) -> t.Iterator[Flask]:
    """The test app on empty tables, inside an app context; ``options`` go to ``init_app``.

    On the way out it waits for runs of the in-process executor and disposes
    of the engines (the SQLite file is the fixture's to remove).
    """
    from tests import testapp
    from tests.testapp.maintenance import kinds

    app = testapp.create_app(**options)
    empty_tables(app)
    kinds.EVENTS.clear()
    try:
        with app.app_context():
            yield app
    finally:
        close_app(app)


def empty_tables(app: Flask) -> None:
    """Give the database of ``app`` (a test app) every table of the test app, empty."""
    from tests import testapp

    url = sa.make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    with app.app_context():
        if url.get_backend_name() == "sqlite":
            assert url.database, "the SQLite test database must be a file workers can open"
            _copy_sqlite_schema(Path(url.database))
        elif not _emptied(testapp.db.engine, testapp.db.metadata):
            testapp.db.drop_all()
        testapp.db.create_all()  # only tables the copy or the emptied schema lacks
        testapp.db.session.remove()


def close_app(app: Flask) -> None:
    """Wait for runs of the in-process executor, then dispose of the app's engines."""
    from tests import testapp

    with app.app_context():
        executor = app.extensions["maintenance_tasks"].executor
        if hasattr(executor, "join"):
            executor.join(10)
        testapp.db.session.remove()
        for engine in testapp.db.engines.values():
            engine.dispose()


def _emptied(engine: sa.Engine, metadata: sa.MetaData) -> bool:
    """Delete every row of the tables and restart their ids, if they are all there."""
    with engine.begin() as connection:
        if not set(metadata.tables) <= set(sa.inspect(connection).get_table_names()):
            return False
        for table in reversed(metadata.sorted_tables):
            connection.execute(table.delete())
        for table in metadata.sorted_tables:
            if table.autoincrement_column is not None:
                connection.execute(
                    sa.text("SELECT setval(pg_get_serial_sequence(:table, :column), 1, false)"),
                    {"table": table.name, "column": table.autoincrement_column.name},
                )
    return True


def _copy_sqlite_schema(path: Path) -> None:
    # A journal left by a killed writer would be rolled back into the copy.
    for leftover in ("-journal", "-wal", "-shm"):
        path.with_name(path.name + leftover).unlink(missing_ok=True)
    shutil.copyfile(_sqlite_schema(), path)


@functools.cache
def _sqlite_schema() -> Path:
    """A SQLite file with the test app's empty tables (its metadata as the tests import it)."""
    from tests import testapp

    directory = Path(tempfile.mkdtemp(prefix="mtasks-schema-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = directory / "schema.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        testapp.db.metadata.create_all(engine)
    finally:
        engine.dispose()
    return path


def configure(app: Flask, **values: t.Any) -> None:
    """Change settings of a running test app (``ticker_delay=0.0``, ...)."""
    state = app.extensions["maintenance_tasks"]
    state.settings = dataclasses.replace(state.settings, **values)
