"""The services a benchmark needs, private to it: a redis-server and a database.

A benchmark never touches a database or a Redis that something else uses:
SQLite lives in a file of a temporary folder, PostgreSQL gets a database of
its own on the server named by ``MAINTENANCE_TASKS_TEST_DATABASE_URL`` (the
variable ``make test`` sets), dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import typing as t
import uuid
from pathlib import Path

import sqlalchemy as sa
from redis import Redis

PG_ENV = "MAINTENANCE_TASKS_TEST_DATABASE_URL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(directory: Path) -> t.Iterator[str]:
    """A ``redis-server`` on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make bootstrap installs it).")
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("redis-server did not start within 10 s.") from None
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def postgresql_database() -> t.Iterator[str | None]:
    """A fresh database on the PostgreSQL server of ``$MAINTENANCE_TASKS_TEST_DATABASE_URL``.

    Yields its URL, or ``None`` when the variable is unset (PostgreSQL is then skipped).
    """
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        yield None
        return
    name = f"mtasks_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
