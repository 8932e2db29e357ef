"""The test app, built fresh for a test on the database ``MTASKS_TEST_DATABASE_URL`` names.

``tests.testapp`` reads its database, Redis and settings from the environment
(the ``app_env`` fixture sets it), so that worker subprocesses see what the
test sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing as t

from flask import Flask

#: Fast settings for tests: ticks and status reloads five times a second.
FAST = {"ticker_delay": 0.2, "status_reload_frequency": 0.2}


@contextlib.contextmanager
def make_app(**options: t.Any) -> t.Iterator[Flask]:
    """The test app on empty tables, inside an app context; ``options`` go to ``init_app``.

    On the way out it waits for runs of the in-process executor, drops the
    tables and disposes of the engines.
    """
    from tests import testapp
    from tests.testapp.maintenance import kinds

    app = testapp.create_app(**options)
    with app.app_context():
        testapp.db.drop_all()
        testapp.db.create_all()
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
            testapp.db.drop_all()
            for engine in testapp.db.engines.values():
                engine.dispose()


def configure(app: Flask, **values: t.Any) -> None:
    """Change settings of a running test app (``ticker_delay=0.0``, ...)."""
    state = app.extensions["maintenance_tasks"]
    state.settings = dataclasses.replace(state.settings, **values)
