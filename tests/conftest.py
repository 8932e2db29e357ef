"""Fixtures of the whole suite: a private Redis, SQLite and PostgreSQL databases,
the test app, in-process and subprocess RQ workers. (Plain helpers live in
``tests.support``.)

A test runs on SQLite, in a file of its own. A test marked ``both_databases``
(module by module, where what is tested depends on the database: the store,
the job loop, sources, recovery, CSV storage, migrations, faults, workers)
runs once on SQLite and once on PostgreSQL; ``--all-databases`` runs every
test on both. The PostgreSQL server comes from
``MAINTENANCE_TASKS_TEST_DATABASE_URL`` (``make test`` sets it); the suite
creates a database of its own there and drops it at the end, so two runs
never share tables. Without the variable the PostgreSQL half is skipped,
except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import typing as t
import uuid
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from redis import Redis

from tests.support.apps import FAST, make_app
from tests.support.commands import Invoke
from tests.support.services import PG_ENV, RedisServer, postgresql_database
from tests.support.workers import WorkerProcesses

# The suite reads English: commands it starts speak English whatever the machine's
# locale (a test of another language sets LANGUAGE for its own command).
os.environ["LANGUAGE"] = "en"

DATABASES = ("sqlite", "postgresql")
#: Where SQLite test files go when the machine has a memory file system: what
#: is tested does not need a disk, and every commit would otherwise wait on one.
MEMORY_FS = Path("/dev/shm")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-databases",
        action="store_true",
        help="run every test that uses the database on SQLite and PostgreSQL, "
        "not only those marked both_databases",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests marked ``both_databases`` (or all, with ``--all-databases``) on both."""
    if "database_url" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("browser") is not None:
        return  # tests/browser/conftest.py chooses the browser tests' one database
    wanted = metafunc.definition.get_closest_marker("both_databases") is not None
    if not (wanted or metafunc.config.getoption("all_databases")):
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "database_url" in names:
            return  # the test chose its database itself
    metafunc.parametrize("database_url", DATABASES, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests on PostgreSQL ``postgresql`` (``-m "not postgresql"`` leaves them out),
    and move those marked ``starts_first`` to the front: pytest-xdist hands tests out in
    this order, so the longest one starts first instead of ending the run alone."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            item.add_marker(pytest.mark.postgresql)
    items.sort(key=lambda item: item.get_closest_marker("starts_first") is None)


@pytest.fixture(autouse=True)
def _no_command_outlives_its_test(request: pytest.FixtureRequest) -> t.Iterator[None]:
    """Kill any ``flask`` command a test left running, once its own fixtures are done.

    A worker left alive would take later tests' jobs from this pytest-xdist
    worker's Redis. What is killed is noted in a log file, to find its test.
    """
    yield
    from tests.support.processes import kill_leftovers

    leftovers = kill_leftovers()
    if leftovers:
        log = Path(tempfile.gettempdir()) / "mtasks-test-leftovers.log"
        with log.open("a") as out:
            out.write(f"{request.node.nodeid}: {'; '.join(leftovers)}\n")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> t.Iterator[str]:
    if not redis_server.running:
        redis_server.start()
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    if redis_server.process is None:
        redis_server.start()
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def postgresql_url() -> t.Iterator[str]:
    """The suite's own PostgreSQL database; skipped without a server (failed under CI)."""
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set under CI: the PostgreSQL tests cannot be skipped")
        pytest.skip(f"{PG_ENV} is not set")
    with postgresql_database(server_url, prefix=f"mtasks_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_directory(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Path]:
    if MEMORY_FS.is_dir() and os.access(MEMORY_FS, os.W_OK):
        directory = Path(tempfile.mkdtemp(prefix="mtasks-tests-", dir=MEMORY_FS))
        yield directory
        shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("sqlite")


@pytest.fixture
def database_url(request: pytest.FixtureRequest, sqlite_directory: Path) -> t.Iterator[str]:
    """The test's database: a SQLite file of its own, or the suite's PostgreSQL database."""
    database = getattr(request, "param", "sqlite")
    assert database in DATABASES, database
    if database == "postgresql":
        yield t.cast(str, request.getfixturevalue("postgresql_url"))
        return
    path = sqlite_directory / f"{uuid.uuid4().hex}.db"
    yield f"sqlite:///{path}"
    for file in sqlite_directory.glob(f"{path.name}*"):
        file.unlink(missing_ok=True)


@pytest.fixture
def settings() -> dict[str, t.Any]:
    """``MAINTENANCE_TASKS_*`` settings of the test app (override per test)."""
    return dict(FAST)


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str, settings: dict[str, t.Any]
) -> dict[str, str]:
    """The environment that makes ``tests.testapp`` (here and in subprocesses) use our services."""
    env = {
        "MTASKS_TEST_DATABASE_URL": database_url,
        "MTASKS_TEST_REDIS_URL": redis_url,
        "MTASKS_TEST_SETTINGS": json.dumps(settings),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """The test app with the RQ executor, inside an app context."""
    with make_app() as app:
        yield app


@pytest.fixture
def inprocess_app(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Flask]:
    """The test app with the in-process executor (no Redis URL)."""
    monkeypatch.delenv("MTASKS_TEST_REDIS_URL")
    with make_app() as app:
        yield app


@pytest.fixture
def mtasks() -> t.Any:
    from tests.testapp import mtasks

    return mtasks


@pytest.fixture
def db() -> t.Any:
    from tests.testapp import db

    return db


@pytest.fixture
def workers(app_env: dict[str, str], tmp_path: Path) -> t.Iterator[WorkerProcesses]:
    procs = WorkerProcesses(app_env, tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def cli(app: Flask) -> Invoke:
    """Run ``flask mtasks ARGS`` on the test app with Flask's CLI runner."""
    runner = app.test_cli_runner()

    def invoke(*args: str, input: str | bytes | None = None) -> Result:
        return runner.invoke(args=["mtasks", *args], input=input)

    return invoke
