"""The dashboard reads a fixed number of queries, however many tasks and runs there are.

(How fast it reads them at 100,000 runs is for ``benchmarks/dashboard.py`` to say.)
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

import pytest
from flask import Flask

from flask_maintenance_tasks.models import failures_table, runs_table
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, count_queries, insert_runs, text
from tests.testapp.many_tasks import COUNT, NAMES

MANY = 5_000


@pytest.fixture
def many_tasks_app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """The test app with a tasks package of 200 generated tasks."""
    with make_app(tasks_package="tests.testapp.many_tasks") as app:
        yield app


def queries(web: Dashboard, path: str, *, htmx: bool = False) -> list[str]:
    engine = web.app.extensions["sqlalchemy"].engine
    with count_queries(engine) as statements:
        response = web.get(path, htmx=htmx)
    assert response.status_code == 200, text(response)
    return statements


def test_the_index_and_a_task_page_read_as_many_queries_with_5000_runs_as_with_10(
    many_tasks_app: Flask,
) -> None:
    web = Dashboard(many_tasks_app)
    engine = many_tasks_app.extensions["sqlalchemy"].engine
    busy = NAMES[7]
    insert_runs(engine, 10, NAMES[:10])
    add_run(engine, busy, "running", tick_count=5, tick_total=50)
    web.get("/")  # connects once: dialect set-up queries are not the page's
    paths = ["/", f"/tasks/{busy}", f"/tasks/{NAMES[0]}"]

    few = {path: len(queries(web, path)) for path in paths}
    insert_runs(engine, MANY, NAMES[:COUNT], ["succeeded", "errored", "cancelled"])
    insert_runs(engine, MANY, [NAMES[0]])  # a task page with 5,000 runs of its own
    many = {path: len(queries(web, path)) for path in paths}
    index = text(web.get("/"))

    assert few == many, (few, many)
    # The runs, then the newest events of the runs shown.
    assert many["/"] <= 3 and many[f"/tasks/{NAMES[0]}"] <= 3
    assert index.count('class="task-entry"') == COUNT
    assert 'rel="next"' in text(web.get(f"/tasks/{NAMES[0]}"))


def test_fragments_and_json_use_at_most_three_queries(many_tasks_app: Flask) -> None:
    web = Dashboard(many_tasks_app)
    engine = many_tasks_app.extensions["sqlalchemy"].engine
    insert_runs(engine, 2_000, NAMES[:20])
    run_id = add_run(engine, NAMES[3], "running", tick_count=5, tick_total=50)
    web.get("/")

    counts = {
        "index fragment": len(queries(web, "/", htmx=True)),
        "task fragment": len(queries(web, f"/tasks/{NAMES[3]}", htmx=True)),
        "older runs fragment": len(queries(web, f"/tasks/{NAMES[3]}?cursor={run_id}", htmx=True)),
        "json": len(queries(web, f"/runs/{run_id}.json")),
    }

    assert all(count <= 3 for count in counts.values()), counts
    assert counts["json"] == 2  # the run, its events (it has no failures, so no retries)


def test_failed_items_on_cards_cost_two_queries_for_the_whole_page(app: Flask) -> None:
    """The newest failures of every card, and the runs that retried them: one query each,
    made only when some card's run has failed items."""
    web = Dashboard(app)
    engine = app.extensions["sqlalchemy"].engine
    name = "SkipBadItemsTask"
    web.get("/")

    def failing_runs(count: int) -> None:
        for _ in range(count):
            run_id = add_run(engine, name, "succeeded", failure_count=5)
            add_run(engine, name, "succeeded", retry_of_id=run_id)
            with engine.begin() as connection:
                connection.execute(
                    failures_table.insert(),
                    [
                        {"run_id": run_id, "item_key": n, "error_class": "BadItem", "attempt": 1}
                        for n in range(5)
                    ],
                )

    insert_runs(engine, 3, [name])
    plain = {path: len(queries(web, path)) for path in ("/", f"/tasks/{name}")}
    failing_runs(2)
    few = {path: len(queries(web, path)) for path in ("/", f"/tasks/{name}")}
    failing_runs(30)
    many = {path: len(queries(web, path)) for path in ("/", f"/tasks/{name}")}
    run_id = add_run(engine, name, "succeeded", failure_count=1)
    json_queries = len(queries(web, f"/runs/{run_id}.json"))
    failures_page = len(queries(web, f"/runs/{run_id}/failures"))

    assert few == many
    # The index shows the task's latest run: a retry, without failures of its own.
    assert many["/"] == plain["/"]
    assert many[f"/tasks/{name}"] == plain[f"/tasks/{name}"] + 2 <= 5
    assert json_queries == 3  # the run, its events, the runs that retried it
    assert failures_page == 4  # the run, counts by class, a page of failures, its retries


def test_dry_runs_cost_no_query_more_and_the_preview_is_its_own_request(app: Flask) -> None:
    """A dry run's marker, what it would change and its "Run for real" button come from
    its row; the task page leaves the preview to a request of its own (htmx, on load)."""
    web = Dashboard(app)
    engine = app.extensions["sqlalchemy"].engine
    name = "DryRunMixedTask"
    changes = {
        "tables": {"items": {"inserted": 0, "updated": 5, "deleted": 0, "columns": ["title"]}},
        "sample": [{"table": "items", "key": 1, "column": "title", "before": "a", "after": "b"}],
    }
    web.get("/")
    insert_runs(engine, 3, [name])
    plain = {path: len(queries(web, path)) for path in ("/", f"/tasks/{name}", "/runs")}
    for status in ("succeeded", "errored", "running"):
        add_run(engine, name, status, dry_run=True, changes=changes)
    dry = {path: len(queries(web, path)) for path in ("/", f"/tasks/{name}", "/runs")}
    preview = queries(web, f"/tasks/{name}/preview", htmx=True)

    assert dry == plain, (plain, dry)
    assert 'id="preview-region"' in text(web.get(f"/tasks/{name}"))
    # The count and the first items, each in a savepoint (see preview.MAX_STATEMENTS).
    assert len(preview) <= 16, preview


def partitioned_runs(engine: t.Any, name: str, runs: int, partitions: int, status: str) -> int:
    """``runs`` runs of ``name``, cut into ``partitions`` each as workers leave them; last id."""
    run_id = 0
    for _ in range(runs):
        run_id = add_run(
            engine,
            name,
            status,
            partitions=partitions,
            bounds=[{"until": n} for n in range(partitions)],
            tick_count=partitions * 3,
            tick_total=partitions * 5,
        )
        insert_children(engine, name, run_id, partitions, status)
    return run_id


def insert_children(engine: t.Any, name: str, run_id: int, count: int, status: str) -> None:
    now = datetime.now(timezone.utc)
    rows = [
        {
            "task_name": name,
            "status": status,
            "parent_id": run_id,
            "partition": index,
            "partitions": 1,
            "bounds": {"until": index, "of": count},
            "tick_count": 3,
            "tick_total": 5,
            "time_running": 1.0,
            "lock_version": 0,
            "created_at": now,
            "updated_at": now,
        }
        for index in range(count)
    ]
    with engine.begin() as connection:
        connection.execute(runs_table.insert(), rows)


def test_partitions_on_cards_cost_one_query_for_the_whole_page(app: Flask) -> None:
    """The partitions of every card on a page: one query (``store.partitions_of``), made only
    when some card's run has been cut, whatever the number of runs and partitions."""
    web = Dashboard(app)
    engine = app.extensions["sqlalchemy"].engine
    name = "PartitionedCountTask"
    web.get("/")
    paths = ("/", f"/tasks/{name}", f"/tasks/{name}?cursor=999999", "/runs")
    insert_runs(engine, 3, [name])
    plain = {path: len(queries(web, path)) for path in paths}
    add_run(engine, name, "enqueued", partitions=4)  # not cut yet: nothing to read
    uncut = {path: len(queries(web, path)) for path in paths}
    partitioned_runs(engine, name, 1, 2, "succeeded")
    partitioned_runs(engine, name, 1, 2, "running")
    few = {path: len(queries(web, path)) for path in paths}
    partitioned_runs(engine, name, 20, 16, "succeeded")
    last = partitioned_runs(engine, name, 3, 16, "paused")
    many = {path: len(queries(web, path)) for path in paths}
    page = text(web.get(f"/tasks/{name}"))
    json_queries = len(queries(web, f"/runs/{last}.json"))

    assert uncut == plain, (plain, uncut)
    assert few == many, (few, many)
    # The task's own collection() reads a flag, once per page (whether it takes a CSV file).
    assert many[f"/tasks/{name}"] == plain[f"/tasks/{name}"] + 1 <= 5
    assert many["/"] == plain["/"] + 1 <= 5
    assert many["/runs"] == plain["/runs"]  # a list of runs: no cards, no partitions
    assert page.count('class="partition partition-') >= 16 * 4
    assert json_queries == 3  # the run, its events, its partitions
