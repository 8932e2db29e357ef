"""The dashboard's half of partitioned runs: the "Partitions" field of the run form, its
refusals, the partitions' bars on a run's card, the run's JSON and a partition's own id.

Runs go through Redis and an RQ worker (``drain``), which walks each partition's jobs.
"""

from __future__ import annotations

import json
import re
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks.models import Event, Run, runs_table
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, text
from tests.support.records import counters, fresh_run, seed_items
from tests.support.workers import drain

COUNT = "PartitionedCountTask"
LIST = "PartitionedListTask"
UNCUTTABLE = "UncuttableTask"


@pytest.fixture
def web(app: Flask) -> Dashboard:
    return Dashboard(app)


def counts(engine: sa.Engine) -> tuple[int, int]:
    """Runs and events in the tables."""
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            int(connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (runs_table, Event.__table__)
        )


def queued(app: Flask) -> int:
    return int(app.extensions["maintenance_tasks"].executor.queue().count)


def card_of(page: str, run_id: int) -> str:
    start = page.rindex("<article", 0, page.index(f'id="run-{run_id}"'))
    return page[start : page.find("</article>", start)]


def start(app: Flask, web: Dashboard, name: str = COUNT, **fields: str) -> int:
    """Press "Run" (or "Dry run") on the task page and let a worker finish it; the run's id."""
    response = web.post(f"/tasks/{name}/runs", fields)
    assert response.status_code == 303, text(response)
    run_id = int(response.headers["Location"].rsplit("run-", 1)[1])
    drain(app)
    return run_id


def children(db: t.Any, run_id: int) -> list[Run]:
    db.session.remove()
    query = sa.select(Run).where(Run.parent_id == run_id).order_by(Run.partition)
    return list(db.session.scalars(query))


# -- the field -------------------------------------------------------------------------


def test_the_field_shows_the_tasks_partitions_and_the_maximum(web: Dashboard) -> None:
    page = text(web.get(f"/tasks/{COUNT}"))
    field = re.search(r'<input type="number" id="run-partitions"[^>]*>', page)

    assert field is not None, page
    assert 'name="_partitions"' in field.group(0) and 'value="4"' in field.group(0)
    assert 'min="1"' in field.group(0) and 'max="16"' in field.group(0)
    assert "the task's own: 4" in page
    # Not a parameter of the preview: it walks the same items, however cut.
    assert re.search(r'hx-params="not [^"]*_partitions', page)


def test_no_field_for_a_task_that_cannot_be_cut(web: Dashboard) -> None:
    assert 'id="run-partitions"' not in text(web.get(f"/tasks/{UNCUTTABLE}"))
    assert 'id="run-partitions"' in text(web.get("/tasks/RangedSquaresTask"))
    assert 'id="run-partitions"' in text(web.get("/tasks/ListTask"))


def test_a_run_started_with_partitions_is_cut_into_them(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    seed_items(30)
    default = start(app, web)
    three = start(app, web, _partitions=" " + "0" * 5000 + "3 ")  # int() alone refuses it
    one = start(app, web, _partitions="1")

    assert [fresh_run(r).status for r in (default, three, one)] == ["succeeded"] * 3
    assert [len(children(db, r)) for r in (default, three, one)] == [4, 3, 0]
    assert fresh_run(three).partitions == 3 and fresh_run(three).tick_count == 30
    assert set(counters()) == {3}


def test_the_empty_field_keeps_the_tasks_partitions(app: Flask, web: Dashboard, db: t.Any) -> None:
    seed_items(8)
    run_id = start(app, web, _partitions="")
    assert fresh_run(run_id).partitions == 4 and len(children(db, run_id)) == 4


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Must be at least 1, not 0."),
        ("-1", "Must be at least 1, not -1."),
        ("17", "17 is more than MAINTENANCE_TASKS_MAX_PARTITIONS allows (16)"),
        ("abc", "Enter a whole number from 1 to 16."),
        ("2.5", "Enter a whole number from 1 to 16."),
        ("9" * 5000, "More than MAINTENANCE_TASKS_MAX_PARTITIONS allows (16)"),
        ("-" + "9" * 5000, "Enter a whole number from 1 to 16."),
        ("１２", "Enter a whole number from 1 to 16."),  # fullwidth digits
        ("٣", "Enter a whole number from 1 to 16."),  # an Arabic-Indic three
        ("<b>4</b>", "Enter a whole number from 1 to 16."),
    ],
)
def test_bad_partitions_redisplay_the_form_with_422_and_enqueue_nothing(
    app: Flask, web: Dashboard, db: t.Any, value: str, message: str
) -> None:
    before = counts(db.engine), queued(app)

    response = web.post(f"/tasks/{COUNT}/runs", {"_partitions": value, "sleep": "0"})

    page = text(response)
    assert response.status_code == 422
    assert "The run was not started: correct the fields below." in page
    error = re.search(r'<p class="field-error" id="run-partitions-error">([^<]*)</p>', page)
    assert error is not None and message in error.group(1), page
    assert 'aria-invalid="true"' in re.search(r'<input[^>]*id="run-partitions"[^>]*>', page)[0]
    assert "<b>4" not in page
    assert (counts(db.engine), queued(app)) == before


def test_a_bad_field_and_bad_partitions_are_told_together(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    before = counts(db.engine)
    response = web.post(f"/tasks/{COUNT}/runs", {"_partitions": "0", "sleep": "fast"})
    page = text(response)
    assert response.status_code == 422
    assert 'id="run-partitions-error"' in page and 'id="param-sleep-error"' in page
    assert counts(db.engine) == before


def test_partitions_of_a_task_that_cannot_be_cut_are_refused_by_the_runner(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    before = counts(db.engine)[0], queued(app)

    response = web.post(f"/tasks/{UNCUTTABLE}/runs", {"_partitions": "2"})

    page = text(response)
    assert response.status_code == 422
    assert "cannot cut into ranges" in page and "partition_ranges" in page
    assert (counts(db.engine)[0], queued(app)) == before


@pytest.mark.parametrize("token", [None, "other"])
def test_the_field_does_not_bypass_csrf(
    app: Flask, web: Dashboard, db: t.Any, token: str | None
) -> None:
    if token == "other":
        token = Dashboard(app).token()  # another session's
    before = counts(db.engine), queued(app)

    response = web.post(f"/tasks/{COUNT}/runs", {"_partitions": "2"}, token=token)

    assert response.status_code == 400
    assert (counts(db.engine), queued(app)) == before


def test_run_again_keeps_a_runs_own_partitions(app: Flask, web: Dashboard) -> None:
    seed_items(6)
    run_id = start(app, web, _partitions="2")
    page = text(web.get(f"/tasks/{COUNT}"))
    link = re.search(r'href="([^"]*)">Run again', card_of(page, run_id))
    assert link is not None and "_partitions=2" in link.group(1)

    form = text(web.get(link.group(1).replace("&amp;", "&").removeprefix(web.prefix)))
    assert re.search(r'id="run-partitions"[^>]*value="2"', form)


# -- the card --------------------------------------------------------------------------


def test_the_card_of_a_partitioned_run_has_a_bar_per_partition(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    seed_items(20)
    run_id = start(app, web, _partitions="4")
    parts = children(db, run_id)

    for page in (text(web.get(f"/tasks/{COUNT}")), text(web.get("/"))):
        card = card_of(page, run_id)
        assert "Partitions: 4" in card
        bar = r'<li class="partition partition-(\w+)" id="run-(\d+)-partition-(\d)"'
        bars = re.findall(bar, card)
        assert bars == [("succeeded", str(run_id), str(n)) for n in range(4)]
        for part in parts:
            assert f"{part.tick_count} / {part.tick_total}</span>" in card
        assert card.count("<progress") == 5  # the run's, and one per partition
        assert "style=" not in card
    assert sum(p.tick_count for p in parts) == 20


def test_a_run_not_cut_yet_says_it_will_be(app: Flask, web: Dashboard, db: t.Any) -> None:
    run_id = add_run(db.engine, COUNT, "enqueued", partitions=4)
    card = card_of(text(web.get(f"/tasks/{COUNT}")), run_id)
    assert "Cut into 4 partitions when it starts." in card
    assert 'class="partition-list"' not in card


def test_an_errored_partition_shows_on_its_bar(app: Flask, web: Dashboard, db: t.Any) -> None:
    seed_items(12)
    run_id = start(app, web, _partitions="3", fail_on="item-11")

    card = card_of(text(web.get(f"/tasks/{COUNT}")), run_id)
    assert fresh_run(run_id).status == "errored"
    assert 'class="partition partition-errored"' in card
    assert "Partition 3 of 3 errored" in card


def test_a_partitioned_dry_run_shows_its_partitions_changes_together(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    seed_items(9)
    run_id = start(app, web, _partitions="3", _dry_run="1")

    card = card_of(text(web.get(f"/tasks/{COUNT}")), run_id)
    assert fresh_run(run_id).status == "succeeded"
    assert set(counters()) == {0}
    assert "<li>Would update 9 rows of items: counter</li>" in card
    assert card.count('class="partition partition-succeeded"') == 3


def test_a_running_dry_run_adds_up_its_partitions_changes(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    """The run's own changes are brought up to date as partitions settle; the card adds up
    the partitions' as they are now."""
    parent = add_run(db.engine, COUNT, "running", partitions=2, bounds=[{}, {}], dry_run=True)
    for index, title in enumerate(["a", "<b>"]):
        changes = {
            "tables": {"items": {"inserted": 0, "updated": 5, "deleted": 0, "columns": ["title"]}},
            "sample": [
                {"table": "items", "key": index, "column": "title", "before": title, "after": "z"}
            ],
        }
        add_run(
            db.engine,
            COUNT,
            "running",
            parent_id=parent,
            partition=index,
            partitions=1,
            bounds={"of": 2},
            dry_run=True,
            changes=changes,
        )

    card = card_of(text(web.get(f"/tasks/{COUNT}")), parent)
    assert "<li>Would update 10 rows of items: title so far</li>" in card
    assert "&lt;b&gt;" in card and "<b>" not in card


def test_hostile_partition_values_are_escaped(app: Flask, web: Dashboard, db: t.Any) -> None:
    hostile = "<script>alert(1)</script>"
    parent = add_run(db.engine, COUNT, "running", partitions=2, bounds=[{}, {}])
    for index in range(2):
        add_run(
            db.engine,
            hostile,
            hostile if index else "running",
            parent_id=parent,
            partition=index,
            partitions=1,
            bounds={"of": 2},
            tick_count=1,
            tick_total=3,
        )
    page = text(web.get(f"/tasks/{COUNT}"))
    assert "<script>alert" not in page and "&lt;script&gt;" in page


# -- the JSON and a partition's id -----------------------------------------------------


def test_the_json_of_a_run_lists_its_partitions(app: Flask, web: Dashboard, db: t.Any) -> None:
    seed_items(10)
    run_id = start(app, web, _partitions="2")
    plain = start(app, web, name=LIST, _partitions="1")

    data = web.get(f"/runs/{run_id}.json").get_json()
    other = web.get(f"/runs/{plain}.json").get_json()

    assert data["partition_count"] == 2
    assert [p["index"] for p in data["partitions"]] == [0, 1]
    assert {p["status"] for p in data["partitions"]} == {"succeeded"}
    assert sum(p["tick_count"] for p in data["partitions"]) == data["tick_count"] == 10
    assert set(data["partitions"][0]) >= {"run_id", "tick_total", "failure_count", "cursor"}
    assert other["partitions"] == [] and other["partition_count"] == 1


def test_a_partitions_id_shows_it_and_leads_to_its_run(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    seed_items(10)
    run_id = start(app, web, _partitions="2")
    second = children(db, run_id)[1]

    data = web.get(f"/runs/{second.id}.json").get_json()
    page = web.get(f"/runs/{second.id}")
    run_page = web.get(f"/runs/{run_id}")

    assert data["id"] == second.id and data["partition"] == 1 and data["partition_count"] == 2
    assert data["parent_id"] == run_id and data["parent_url"].endswith(f"/runs/{run_id}.json")
    assert page.status_code == 302
    assert page.headers["Location"].endswith(f"/tasks/{COUNT}#run-{run_id}-partition-1")
    assert run_page.headers["Location"].endswith(f"/tasks/{COUNT}#run-{run_id}")
    assert web.get("/runs/999999").status_code == 404
    assert json.loads(text(web.get("/runs/999999.json")))["error"] == "Not Found"


def test_a_partition_hidden_by_authorize_is_not_found(app_env: dict[str, str], db: t.Any) -> None:
    def no_counts(action: str, task_name: str | None, run: t.Any) -> bool:
        return task_name != COUNT

    with make_app(authorize=no_counts) as app:
        web = Dashboard(app)
        parent = add_run(db.engine, COUNT, "running", partitions=2, bounds=[{}, {}])
        child = add_run(db.engine, COUNT, "running", parent_id=parent, partition=0)
        assert web.get(f"/runs/{child}").status_code == 404
        assert web.get(f"/runs/{child}.json").status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_busy_past_its_timeout_is_a_409_that_changes_nothing(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's write lock held elsewhere (a partition's tick, say): the run is busy, try
    again, not a 500; and the action waits no longer than the connection's own busy
    timeout, shorter than the default bound."""
    import sqlite3

    url = app_env["MTASKS_TEST_DATABASE_URL"]
    monkeypatch.setenv("MTASKS_TEST_DATABASE_URL", f"{url}?timeout=0.2")
    with make_app() as app:
        web = Dashboard(app)
        run_id = add_run(app.extensions["sqlalchemy"].engine, COUNT, "running", job_id="j")
        holder = sqlite3.connect(sa.make_url(url).database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            page = web.post(f"/tasks/{COUNT}/runs/{run_id}/pause")
            data = web.post(f"/tasks/{COUNT}/runs/{run_id}/pause", htmx=True)
            elapsed = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert page.status_code == data.status_code == 409
        assert page.headers["Retry-After"] == data.headers["Retry-After"] == "1"
        assert f"Run #{run_id} is busy" in text(page)
        assert f"Run #{run_id} is busy" in text(data)
        assert elapsed < 2.5  # two answers of about 0.2 s each, not 5 s each
        assert fresh_run(run_id).status == "running"
