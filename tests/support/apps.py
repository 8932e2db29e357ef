"""The test app, built fresh for a test on the database ``MTASKS_TEST_DATABASE_URL`` names.

``tests.testapp`` reads its database, Redis and settings from the environment
(the ``app_env`` fixture sets it), so that worker subprocesses see what the
test sees. :func:`make_app` gives it empty tables: on PostgreSQL it drops and
creates them; a SQLite file is overwritten by a copy of a file holding the
empty schema, made once per process, because SQLite commits every ``CREATE``
on its own and the DDL would cost more than most tests.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import os
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

    On the way out it waits for runs of the in-process executor, drops the
    tables (PostgreSQL; a SQLite file is the fixture's to remove) and disposes
    of the engines.
    """
    from tests import testapp
    from tests.testapp.maintenance import kinds

    url = sa.make_url(os.environ["MTASKS_TEST_DATABASE_URL"])
    on_sqlite = url.get_backend_name() == "sqlite"
    app = testapp.create_app(**options)
    with app.app_context():
        if on_sqlite:
            assert url.database, "the SQLite test database must be a file workers can open"
            _copy_sqlite_schema(Path(url.database))
        else:
            testapp.db.drop_all()
        testapp.db.create_all()  # on the SQLite copy: only tables defined since it was made
        testapp.db.session.remove()
    kinds.EVENTS.clear()
    try:
        with app.app_context():
            yield app
    finally:
        with app.app_context():
            executor = app.extensions["maintenance_tasks"].executor
            if hasattr(executor, "join"):
                executor.join(10)
            testapp.db.session.remove()
            if not on_sqlite:
                testapp.db.drop_all()
            for engine in testapp.db.engines.values():
                engine.dispose()


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
