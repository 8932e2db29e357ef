"""Fixtures of the whole suite: a private Redis, SQLite and PostgreSQL databases,
the test app, in-process and subprocess RQ workers.

Every test that takes ``app`` runs once on SQLite and once on PostgreSQL. The
PostgreSQL server comes from ``MAINTENANCE_TASKS_TEST_DATABASE_URL`` (``make
test`` sets it); the suite creates a database of its own there and drops it at
the end, so two runs never share tables. Without the variable the PostgreSQL
half is skipped, except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing as t
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
PG_ENV = "MAINTENANCE_TASKS_TEST_DATABASE_URL"

#: Fast settings for tests: ticks and status reloads five times a second.
FAST = {"ticker_delay": 0.2, "status_reload_frequency": 0.2}


def wait_until(predicate: t.Callable[[], t.Any], timeout: float = 30.0, what: str = "") -> t.Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free port; tests may stop and start it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make test installs it)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        wait_until(lambda: _pings(client), 10, "redis-server to start")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> t.Iterator[str]:
    if redis_server.process is None or redis_server.process.poll() is not None:
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
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set under CI: the PostgreSQL tests cannot be skipped")
        pytest.skip(f"{PG_ENV} is not set")
    name = f"mtasks_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return t.cast(str, request.getfixturevalue("postgresql_url"))


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


def _make_app(**overrides: t.Any) -> t.Iterator[Flask]:
    from tests import testapp
    from tests.testapp.maintenance import kinds

    app = testapp.create_app(**overrides)
    with app.app_context():
        testapp.db.drop_all()
        testapp.db.create_all()
        testapp.db.session.remove()
    kinds.EVENTS.clear()
    ctx = app.app_context()
    ctx.push()
    try:
        yield app
    finally:
        testapp.db.session.remove()
        ctx.pop()
        with app.app_context():
            executor = app.extensions["maintenance_tasks"].executor
            if hasattr(executor, "join"):
                executor.join(10)
            testapp.db.session.remove()
            testapp.db.drop_all()
            for engine in testapp.db.engines.values():
                engine.dispose()


@pytest.fixture
def app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """The test app with the RQ executor, inside an app context."""
    yield from _make_app()


@pytest.fixture
def inprocess_app(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Flask]:
    """The test app with the in-process executor (no Redis URL)."""
    monkeypatch.delenv("MTASKS_TEST_REDIS_URL")
    yield from _make_app()


@pytest.fixture
def mtasks() -> t.Any:
    from tests.testapp import mtasks

    return mtasks


@pytest.fixture
def db() -> t.Any:
    from tests.testapp import db

    return db


def configure(app: Flask, **values: t.Any) -> None:
    """Change settings of a running test app (``ticker_delay=0.0``, ...)."""
    import dataclasses

    state = app.extensions["maintenance_tasks"]
    state.settings = dataclasses.replace(state.settings, **values)


def seed_items(count: int, **fields: t.Any) -> None:
    """Insert ``count`` items titled ``item-<n>``; ``fields`` override columns."""
    from tests.testapp import Item, db

    db.session.execute(
        sa.insert(Item),
        [
            {"title": f"item-{n}", "group": n % 3, "counter": 0, **fields}
            for n in range(1, count + 1)
        ],
    )
    db.session.commit()


def counters(database_url: str | None = None) -> list[int]:
    """Every item's counter, in id order, read on a fresh connection."""
    from tests.testapp import Item, db

    db.session.remove()
    return list(db.session.scalars(sa.select(Item.counter).order_by(Item.id)))


def fresh_run(run_id: int) -> t.Any:
    from tests.testapp import mtasks

    return mtasks.get_run(run_id)


def _quiet_worker_class() -> type:
    from flask_maintenance_tasks.worker import MaintenanceSimpleWorker

    class QuietWorker(MaintenanceSimpleWorker):
        """No pubsub listener: its thread takes a second to stop after each burst."""

        def subscribe(self) -> None:
            pass

        def unsubscribe(self) -> None:
            pass

    return QuietWorker


def drain(app: Flask, burst: bool = True) -> None:
    """Run every queued job in this process with a real RQ SimpleWorker."""
    executor = app.extensions["maintenance_tasks"].executor
    worker = _quiet_worker_class()([executor.queue()], connection=executor.connection)
    worker.work(burst=burst, with_scheduler=False)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in path.read_text().split()]
    except FileNotFoundError:
        return []


class WorkerProcesses:
    """``flask mtasks worker`` subprocesses of the test app, killed at teardown."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.directory / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "tests.testapp:create_app",
                "mtasks",
                "worker",
                *args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        index = self.processes.index(process)
        return (self.directory / f"worker-{index}.log").read_text(errors="replace")

    def horse_pid(self, process: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """The pid of the worker's work horse: the child that leads its own process group.

        (The worker's other child, RQ's scheduler, stays in the worker's group.)
        """

        def horse() -> int | None:
            for pid in _children(process.pid):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except FileNotFoundError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[2]) == pid:
                    return pid
            return None

        return t.cast(int, wait_until(horse, timeout, "a work horse"))

    def cli(
        self, *args: str, input: bytes | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``flask mtasks ARGS`` against the test app in a subprocess."""
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "tests.testapp:create_app", "mtasks", *args],
            cwd=ROOT,
            env=self.env,
            input=input.decode() if input else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                # The horse sits in a process group of its own: kill it first.
                for pid in _children(process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                process.kill()
            process.wait(10)


@pytest.fixture
def workers(app_env: dict[str, str], tmp_path: Path) -> t.Iterator[WorkerProcesses]:
    procs = WorkerProcesses(app_env, tmp_path)
    yield procs
    procs.stop_all()
