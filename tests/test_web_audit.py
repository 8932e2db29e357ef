"""The audit trail on the dashboard: run card timelines, the runs page, the run's JSON."""

from __future__ import annotations

import io
import re
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask, request

from flask_maintenance_tasks.models import Event
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, count_queries, insert_runs, text
from tests.support.records import fresh_run, trail
from tests.support.workers import drain

pytestmark = pytest.mark.both_databases


def _operator() -> t.Any:
    return {"user": request.headers.get("X-Operator"), "api_token": "tok-9c1f"}


@pytest.fixture
def audited(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """The test app whose MAINTENANCE_TASKS_METADATA says who the operator is.

    Open to any address (``app.testing`` opens it to this machine only).
    """
    with make_app(metadata=_operator, allow_anonymous=True) as app:
        yield app


def _events(app: Flask) -> list[Event]:
    db = app.extensions["sqlalchemy"]
    db.session.remove()
    return list(db.session.scalars(sa.select(Event).order_by(Event.id)))


def test_dashboard_actions_record_the_operator_and_their_address(audited: Flask) -> None:
    web = Dashboard(audited)
    ada = {"X-Operator": "ada"}
    response = web.post(
        "/tasks/ListTask/runs", headers=ada, environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    assert response.status_code == 303
    (started,) = _events(audited)
    run_id = t.cast(int, started.run_id)
    web.post(f"/tasks/ListTask/runs/{run_id}/pause", headers={"X-Operator": "bob"})
    # Pausing again is no change; resuming a pausing run is refused, and says why.
    web.post(f"/tasks/ListTask/runs/{run_id}/resume", headers={"X-Operator": "eve"})

    assert [(e.action, e.outcome, e.origin) for e in _events(audited)] == [
        ("started", "done", "dashboard"),
        ("pause_requested", "done", "dashboard"),
        ("resumed", "refused", "dashboard"),
    ]
    started, paused, refused = _events(audited)
    # Masked names are filtered out of who, like everywhere else.
    assert started.actor == '{"api_token":"[FILTERED]","user":"ada"}'
    assert started.address == "10.1.2.3"
    assert paused.actor is not None and '"user":"bob"' in paused.actor
    assert refused.detail == "Cannot resume a pausing run."
    assert fresh_run(run_id).started_by == started.actor

    page = text(web.get("/tasks/ListTask"))
    history = page[page.index(f'id="run-{run_id}-history"') :]
    assert (
        "Started by {&#34;api_token&#34;:&#34;[FILTERED]&#34;,&#34;user&#34;:&#34;ada&#34;}"
        in history
    )
    assert "(dashboard, 10.1.2.3)" in history
    assert "Resume" in history and "refused - Cannot resume a pausing run." in history
    assert "tok-9c1f" not in page


def test_the_runs_json_carries_the_timeline(audited: Flask) -> None:
    web = Dashboard(audited)
    web.post("/tasks/ListTask/runs", headers={"X-Operator": "ada"})
    (started,) = _events(audited)
    run_id, actor = started.run_id, started.actor
    drain(audited)
    data = web.get(f"/runs/{run_id}.json").get_json()
    assert [e["action"] for e in data["events"]] == ["started", "began", "succeeded"]
    assert data["events"][0]["origin"] == "dashboard"
    assert data["events"][1]["actor"] == "worker"
    assert data["events_omitted"] == 0
    assert data["started_by"] == actor


def test_a_csv_download_is_recorded(audited: Flask) -> None:
    web = Dashboard(audited)
    response = web.post(
        "/tasks/ImportItemsTask/runs",
        {"csv_file": (io.BytesIO(b"id,title\n1,a\n"), "new_items.csv"), "sleep": "0"},
        headers={"X-Operator": "ada"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303, text(response)
    run_id = t.cast(int, _events(audited)[0].run_id)
    assert web.get(f"/runs/{run_id}/csv", headers={"X-Operator": "bob"}).status_code == 200
    actions = [(action, outcome) for action, outcome, _ in trail(run_id)]
    assert actions == [("started", "done"), ("csv_uploaded", "done"), ("csv_downloaded", "done")]
    assert _events(audited)[1].detail == "new_items.csv"
    history = text(web.get("/tasks/ImportItemsTask"))
    assert "CSV file uploaded by" in history and "- new_items.csv" in history


# -- the runs page -----------------------------------------------------------

ROW = re.compile(r'<tr id="runs-row-(\d+)"')


def _ids(page: str) -> list[int]:
    return [int(n) for n in ROW.findall(page)]


def _next(page: str) -> str | None:
    found = re.search(r'href="[^"]*?/runs\?([^"]*)" rel="next"', page)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_runs_page_filters_and_pages_through_every_run(app: Flask) -> None:
    engine = app.extensions["sqlalchemy"].engine
    insert_runs(
        engine,
        50,
        ["ListTask", "OnceTask"],
        ["succeeded", "errored", "cancelled"],
        started_by=["ada", "bob"],
    )
    app.config["MAINTENANCE_TASKS_RUNS_PER_PAGE"] = 7
    web = Dashboard(app)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT id, task_name, status, started_by FROM maintenance_tasks_runs")
        ).all()

    def expect(**where: str) -> list[int]:
        keep = [r for r in rows if all(getattr(r, k) == v for k, v in where.items())]
        return sorted((r.id for r in keep), reverse=True)

    cases = [
        {},
        {"task_name": "OnceTask"},
        {"status": "errored"},
        {"started_by": "bob"},
        {"task_name": "ListTask", "status": "cancelled", "started_by": "ada"},
    ]
    for where in cases:
        query = "&".join(
            f"{param}={where[column]}"
            for param, column in (
                ("task", "task_name"),
                ("status", "status"),
                ("who", "started_by"),
            )
            if column in where
        )
        seen: list[int] = []
        link: str | None = query
        while link is not None:
            page = text(web.get(f"/runs?{link}"))
            seen += _ids(page)
            link = _next(page)
        assert seen == expect(**where), where


def test_the_runs_page_refuses_bad_filters(app: Flask) -> None:
    web = Dashboard(app)
    assert web.get("/runs?status=nonsense").status_code == 400
    assert web.get("/runs?who=" + "x" * 256).status_code == 400
    assert web.get(f"/runs?cursor={2**64}").status_code == 400
    assert web.get("/runs?cursor=-5").status_code == 400
    hostile = web.get("/runs?task=<script>alert(1)</script>")
    assert hostile.status_code == 200
    assert "<script>alert" not in text(hostile)


def test_the_runs_page_shows_only_runs_the_operator_may_view(app_env: dict[str, str]) -> None:
    def authorize(action: str, task_name: str | None, run: t.Any) -> bool:
        return task_name != "OnceTask"

    with make_app(authorize=authorize) as app:
        insert_runs(app.extensions["sqlalchemy"].engine, 6, ["ListTask", "OnceTask"])
        page = text(Dashboard(app).get("/runs"))
        assert len(_ids(page)) == 3
        assert "OnceTask</td>" not in page


def _insert_runs_in_sql(engine: sa.Engine, count: int) -> None:
    """``count`` runs made by the database itself (a Python insert of 100,000 is slow)."""
    if engine.dialect.name == "sqlite":
        numbers = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
            "SELECT i FROM n"
        )
        now = "CURRENT_TIMESTAMP"
    else:
        numbers = "SELECT i FROM generate_series(1, :count) AS i"
        now = "now()"
    tasks = "CASE i % 3 WHEN 0 THEN 'ListTask' WHEN 1 THEN 'OnceTask' ELSE 'SquaresTask' END"
    statuses = "CASE i % 4 WHEN 0 THEN 'succeeded' WHEN 1 THEN 'errored' ELSE 'cancelled' END"
    who = "CASE i % 3 WHEN 0 THEN 'ada' WHEN 1 THEN 'bob' ELSE 'carol' END"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO maintenance_tasks_runs (task_name, status, started_by, tick_count, "
                "time_running, lock_version, created_at, updated_at) "
                f"SELECT {tasks}, {statuses}, {who}, 10, 1.0, 0, {now}, {now} FROM ({numbers}) AS s"
            ),
            {"count": count},
        )


# The number of queries does not depend on the database: one is enough for 100,000 runs.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_runs_page_reads_two_queries_at_most_with_100_000_runs(app: Flask) -> None:
    engine = app.extensions["sqlalchemy"].engine
    _insert_runs_in_sql(engine, 100_000)
    web = Dashboard(app)
    web.get("/runs")  # connects once: dialect set-up queries are not the page's
    for query in ("", "task=OnceTask", "status=errored&who=carol", "cursor=50000&who=ada"):
        with count_queries(engine) as statements:
            response = web.get(f"/runs?{query}")
        assert response.status_code == 200
        assert len(_ids(text(response))) == 20, query
        assert len(statements) <= 2, (query, statements)


def test_a_nul_in_a_filter_is_refused(app: Flask) -> None:
    web = Dashboard(app)
    for name in ("task", "status", "who"):
        response = web.get(f"/runs?{name}=a%00b")
        assert response.status_code == 400, name
        assert "NUL" in text(response)


def test_a_head_request_for_the_csv_file_records_no_download(audited: Flask) -> None:
    web = Dashboard(audited)
    web.post(
        "/tasks/ImportItemsTask/runs",
        {"csv_file": (io.BytesIO(b"id,title\n1,a\n"), "items.csv"), "sleep": "0"},
        content_type="multipart/form-data",
    )
    run_id = t.cast(int, _events(audited)[0].run_id)
    assert web.client.head(web.url(f"/runs/{run_id}/csv")).status_code == 200
    assert [action for action, _, _ in trail(run_id)] == ["started", "csv_uploaded"]
