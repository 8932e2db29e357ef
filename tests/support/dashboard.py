"""The dashboard as the tests drive it: a test client that knows the CSRF token,
query counting, and runs inserted in bulk or one by one as a worker leaves them."""

from __future__ import annotations

import contextlib
import re
import typing as t
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import Flask
from werkzeug.test import TestResponse

from flask_maintenance_tasks.models import runs_table

PREFIX = "/maintenance_tasks"
SECRET_KEY = "dashboard-tests-only"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Dashboard:
    """Flask's test client on the dashboard, with a session and its CSRF token."""

    def __init__(self, app: Flask, prefix: str = PREFIX) -> None:
        app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or SECRET_KEY
        app.secret_key = app.config["SECRET_KEY"]
        self.app = app
        self.prefix = prefix
        self.client = app.test_client()
        self._token: str | None = None

    def url(self, path: str) -> str:
        return self.prefix + path

    def get(self, path: str, *, htmx: bool = False, **kwargs: t.Any) -> TestResponse:
        headers = {**({"HX-Request": "true"} if htmx else {}), **kwargs.pop("headers", {})}
        return self.client.get(self.url(path), headers=headers, **kwargs)

    def token(self) -> str:
        if self._token is None:
            page = self.get("/tasks/ListTask")
            found = _TOKEN.search(page.get_data(as_text=True))
            assert found, "no CSRF token in the task page"
            self._token = found.group(1)
        return self._token

    def post(
        self,
        path: str,
        data: dict[str, t.Any] | None = None,
        *,
        htmx: bool = False,
        token: str | None | bool = True,
        **kwargs: t.Any,
    ) -> TestResponse:
        data = dict(data or {})
        headers: dict[str, str] = dict(kwargs.pop("headers", {}))
        if token is True:
            if htmx:
                headers["X-CSRFToken"] = self.token()
            else:
                data["csrf_token"] = self.token()
        elif isinstance(token, str):
            data["csrf_token"] = token
        if htmx:
            headers["HX-Request"] = "true"
        return self.client.post(self.url(path), data=data, headers=headers, **kwargs)


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def field_tag(page: str, name: str) -> str:
    """The opening tag of the input, select or textarea named ``name``."""
    found = re.search(rf'<(input|select|textarea)[^>]*\bname="{re.escape(name)}"[^>]*>', page)
    assert found, f"no field named {name!r}"
    return found.group(0)


@contextlib.contextmanager
def count_queries(engine: sa.Engine) -> t.Iterator[list[str]]:
    """The SQL statements ``engine`` sends while the block runs."""
    statements: list[str] = []

    def record(*args: t.Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def insert_runs(
    engine: sa.Engine,
    count: int,
    task_names: t.Sequence[str],
    status: str | t.Sequence[str] = "succeeded",
    *,
    chunk: int = 20_000,
    start: datetime | None = None,
    started_by: t.Sequence[str | None] = (None,),
) -> None:
    """Insert ``count`` finished runs with Core, spread over ``task_names`` in turn.

    ``status`` and ``started_by`` are taken in turn too.
    """
    start = start or datetime(2024, 1, 1, tzinfo=timezone.utc)
    statuses = [status] if isinstance(status, str) else list(status)
    with engine.begin() as connection:
        for offset in range(0, count, chunk):
            rows = []
            for n in range(offset, min(offset + chunk, count)):
                moment = start + timedelta(seconds=n)
                rows.append(
                    {
                        "task_name": task_names[n % len(task_names)],
                        "status": statuses[n % len(statuses)],
                        "started_by": started_by[n % len(started_by)],
                        "tick_count": 10,
                        "tick_total": 10,
                        "time_running": 1.5,
                        "arguments": {"n": n},
                        "lock_version": 0,
                        "created_at": moment,
                        "updated_at": moment,
                        "started_at": moment,
                        "ended_at": moment + timedelta(seconds=1),
                    }
                )
            connection.execute(runs_table.insert(), rows)


def add_run(engine: sa.Engine, task_name: str, status: str, **fields: t.Any) -> int:
    """Insert one run in ``status`` (as a worker would have left it) and return its id."""
    now = datetime.now(timezone.utc)
    values: dict[str, t.Any] = {
        "task_name": task_name,
        "status": status,
        "tick_count": 0,
        "time_running": 0.0,
        "lock_version": 0,
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    with engine.begin() as connection:
        result = connection.execute(runs_table.insert().values(**values))
        return int(result.inserted_primary_key[0])
