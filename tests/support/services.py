"""The servers the tests talk to: a private Redis, and throwaway PostgreSQL databases."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import typing as t
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from redis import Redis

from tests.support.waiting import wait_until

#: The PostgreSQL server of the suite (``make test`` sets it); unset, its tests are skipped.
PG_ENV = "MAINTENANCE_TASKS_TEST_DATABASE_URL"


#: Where the private Redis servers listen: below Linux's ephemeral ports
#: (32768 and up), so no outgoing connection takes a port while its server is
#: stopped, with a block of ports of its own for each pytest-xdist worker.
PORT_BASE = 21000
PORTS_PER_WORKER = 40


def _worker_number() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = name.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def _free_port() -> int:
    """A free port in this pytest-xdist worker's own block."""
    first = PORT_BASE + PORTS_PER_WORKER * _worker_number()
    for port in range(first, first + PORTS_PER_WORKER):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port for redis-server in {first}-{first + PORTS_PER_WORKER - 1}")


class RedisServer:
    """A private ``redis-server`` on a free port; tests may stop and start it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server, on another free port if someone took this one first.

        Between finding a free port and binding it, another process (another
        pytest-xdist worker's server) may take it: ours then exits, and a ping
        would answer from theirs. So the server that answers must be ours.
        """
        for _ in range(5):
            if self._start_once():
                return
            self.port = _free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        pytest.fail(f"could not start a redis-server of our own (last port {self.port})")

    def _start_once(self) -> bool:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make test installs it)")
        self.process = process = subprocess.Popen(
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
        try:
            wait_until(
                lambda: process.poll() is not None or _pings(client), 10, "redis-server to start"
            )
            if process.poll() is None and client.info("server")["process_id"] == process.pid:
                return True
        finally:
            client.close()
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            self.process.wait(10)
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@contextlib.contextmanager
def postgresql_database(server_url: str, prefix: str = "mtasks") -> t.Iterator[str]:
    """A new, empty PostgreSQL database on ``server_url``'s server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
