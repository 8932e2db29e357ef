"""Live speed control: a rate cap, a batch size and a ticker delay set on an active run
from Python, the CLI, the run card and the JSON API, and a real worker taking them at its
next status reload without pausing.
"""

from __future__ import annotations

import html
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks import InvalidArguments, InvalidTransition, MaintenanceTasksError
from flask_maintenance_tasks.models import Event, Run
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, text
from tests.support.records import counters, fresh_run, seed_items
from tests.support.waiting import wait_until
from tests.support.workers import drain

TASK = "CountItemsTask"
API_TOKEN = "api-token-for-the-speed-tests-0123456789"


def speed_of(run_id: int) -> tuple[t.Any, t.Any, t.Any]:
    run = fresh_run(run_id)
    return run.max_rate, run.batch_size_override, run.ticker_delay_override


def events(run_id: int) -> list[tuple[str, str, str | None]]:
    from tests.testapp import db

    db.session.remove()
    rows = db.session.execute(
        sa.select(Event.action, Event.outcome, Event.detail)
        .where(Event.run_id == run_id)
        .order_by(Event.id)
    ).all()
    return [(str(a), str(o), d) for a, o, d in rows]


def running_run(app: Flask) -> int:
    from tests.testapp import db

    return add_run(db.engine, TASK, "running", job_id="job-1")


# -- Python ---------------------------------------------------------------------------


def test_set_speed_writes_the_run_and_its_partitions_with_one_event(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    run_id = add_run(db.engine, TASK, "running", partitions=2)
    parts = [add_run(db.engine, TASK, "running", parent_id=run_id, partition=n) for n in range(2)]

    run = mtasks.set_speed(run_id, rate=200, batch_size=50, ticker_delay=0.5, actor="ops")

    assert (run.max_rate, run.batch_size_override, run.ticker_delay_override) == (200, 50, 0.5)
    # Each partition keeps its share of the cap: together they keep the run's.
    assert [speed_of(part) for part in parts] == [(100, 50, 0.5)] * 2
    assert events(run_id) == [
        ("speed_changed", "done", "rate=200/s, batch_size=50, ticker_delay=0.5s")
    ]


def test_a_cap_is_shared_by_the_partitions_that_have_not_finished(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    run_id = add_run(db.engine, TASK, "running", partitions=3)
    done = add_run(db.engine, TASK, "succeeded", parent_id=run_id, partition=0)
    left = [add_run(db.engine, TASK, "running", parent_id=run_id, partition=n) for n in (1, 2)]

    mtasks.set_speed(run_id, rate=90)

    assert [speed_of(part)[0] for part in left] == [45, 45]
    assert speed_of(done)[0] == 90  # a finished partition walks nothing: its share is moot


def test_a_partition_that_succeeds_gives_its_share_to_the_others(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    from flask_maintenance_tasks import partitions
    from flask_maintenance_tasks.state import get_state

    run_id = add_run(db.engine, TASK, "running", partitions=3)
    parts = [add_run(db.engine, TASK, "running", parent_id=run_id, partition=n) for n in range(3)]
    mtasks.set_speed(run_id, rate=90)
    assert [speed_of(part)[0] for part in parts] == [30, 30, 30]
    with db.engine.begin() as connection:
        connection.execute(
            sa.update(Run).where(Run.id == parts[0]).values(status="succeeded", job_id=None)
        )
        # Cut, and held by no job of its own: its partitions' jobs walk it.
        connection.execute(
            sa.update(Run).where(Run.id == run_id).values(bounds=[{}] * 3, job_id=None)
        )

    partitions.settle(get_state(), run_id)

    assert [speed_of(part)[0] for part in parts[1:]] == [45, 45]
    mtasks.set_speed(run_id, reset=["rate"])  # lifted: no partition keeps a share
    assert [speed_of(part)[0] for part in parts] == [None, None, None]


def test_a_speed_set_before_the_cut_reaches_the_partitions(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    from tests.testapp import db as app_db

    seed_items(40)
    run = mtasks.run("PartitionedCountTask", partitions=2)
    mtasks.set_speed(run.id, rate=20, batch_size=7)
    started = time.monotonic()
    drain(app)  # a real RQ worker, in this process: the partitions' slices one by one
    elapsed = time.monotonic() - started

    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 40
    app_db.session.remove()
    children = app_db.session.scalars(
        sa.select(Run).where(Run.parent_id == run.id).order_by(Run.ended_at)
    ).all()
    assert [c.batch_size_override for c in children] == [7, 7]
    # 10 items/s each while both walk; the last one alone, the whole cap.
    assert [c.max_rate for c in children] == [10, 20]
    assert 40 / elapsed <= 20 * 1.05 + 10 / elapsed


def test_none_leaves_a_value_and_reset_gives_it_back_to_the_task(app: Flask, mtasks: t.Any) -> None:
    run_id = running_run(app)
    mtasks.set_speed(run_id, rate=20, ticker_delay=2)

    mtasks.set_speed(run_id, batch_size=10, reset=["rate"])

    assert speed_of(run_id) == (None, 10, 2)
    assert events(run_id)[-1][2] == "rate=task's own, batch_size=10"


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -5}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": "fast"}, "rate"),
        ({"rate": True}, "rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": 100_001}, "batch_size"),
        ({"ticker_delay": 0}, "ticker_delay"),
        ({"ticker_delay": 151}, "ticker_delay"),  # half of MAINTENANCE_TASKS_STUCK_AFTER: 150
        ({"reset": ["speed"]}, "reset"),
        ({}, "__root__"),
    ],
)
def test_bad_values_are_refused_by_field_and_change_nothing(
    app: Flask, mtasks: t.Any, given: dict[str, t.Any], field: str
) -> None:
    run_id = running_run(app)
    mtasks.set_speed(run_id, rate=100)

    with pytest.raises(InvalidArguments) as refused:
        mtasks.set_speed(run_id, **given)

    assert list(refused.value.errors) == [field]
    assert speed_of(run_id) == (100, None, None)
    assert events(run_id)[-1][:2] == ("speed_changed", "refused")


def test_an_ended_run_and_a_partition_are_refused(app: Flask, mtasks: t.Any, db: t.Any) -> None:
    ended = add_run(db.engine, TASK, "succeeded")
    parent = add_run(db.engine, TASK, "running", partitions=2)
    part = add_run(db.engine, TASK, "running", parent_id=parent, partition=0)

    with pytest.raises(InvalidTransition, match="Cannot set the speed of a succeeded run"):
        mtasks.set_speed(ended, rate=10)
    with pytest.raises(MaintenanceTasksError, match=f"act on run #{parent}"):
        mtasks.set_speed(part, rate=10)

    assert speed_of(ended) == speed_of(part) == (None, None, None)


# -- the command line -----------------------------------------------------------------


def test_cli_set_caps_the_run(app: Flask, cli: t.Any) -> None:
    run_id = running_run(app)

    result = cli("set", str(run_id), "--rate", "200", "--batch-size", "500")

    assert result.exit_code == 0, result.output
    assert f"Run #{run_id}: rate cap 200/s, batch size 500, ticker delay task's own." in (
        result.output
    )
    assert speed_of(run_id) == (200, 500, None)


def test_cli_reset_lifts_the_cap(app: Flask, cli: t.Any, mtasks: t.Any) -> None:
    run_id = running_run(app)
    mtasks.set_speed(run_id, rate=5)

    result = cli("set", str(run_id), "--reset", "rate")

    assert result.exit_code == 0, result.output
    assert speed_of(run_id) == (None, None, None)


@pytest.mark.parametrize(
    "args", [("--rate", "0"), ("--rate", "abc"), ("--batch-size", "0"), ("--ticker-delay", "-1")]
)
def test_cli_bad_value_fails_and_changes_nothing(
    app: Flask, cli: t.Any, args: tuple[str, str]
) -> None:
    run_id = running_run(app)

    result = cli("set", str(run_id), *args)

    assert result.exit_code == 1
    field = args[0][2:].replace("-", "_")
    assert f"Error: Invalid arguments for the speed of run #{run_id}: {field}: must be" in (
        result.output
    )
    assert speed_of(run_id) == (None, None, None)


def test_cli_set_without_an_option_is_a_usage_error(app: Flask, cli: t.Any, db: t.Any) -> None:
    run_id = running_run(app)

    result = cli("set", str(run_id))

    assert result.exit_code == 2
    assert (
        "Error: Give at least one of --rate, --batch-size, --ticker-delay or --reset."
        in result.output
    )
    assert "__root__" not in result.output
    assert speed_of(run_id) == (None, None, None)


# -- the run card ---------------------------------------------------------------------


def test_active_card_has_the_speed_form_and_it_sets_the_speed(app: Flask) -> None:
    run_id = running_run(app)
    dashboard = Dashboard(app)
    page = dashboard.get(f"/tasks/{TASK}").get_data(as_text=True)
    assert f'id="run-{run_id}-speed"' in page

    answer = dashboard.post(
        f"/runs/{run_id}/speed",
        {"rate": "12.5", "batch_size": "", "ticker_delay": "3"},
        follow_redirects=True,
    )

    assert answer.status_code == 200
    assert f"Run #{run_id}: rate cap 12.5/s, batch size task's own, ticker delay 3s" in (
        html.unescape(text(answer))
    )
    assert speed_of(run_id) == (12.5, None, 3)
    assert events(run_id)[-1][0] == "speed_changed"


def test_card_form_refuses_bad_values_and_a_post_without_csrf(app: Flask, db: t.Any) -> None:
    run_id = running_run(app)
    ended = add_run(db.engine, TASK, "succeeded")
    dashboard = Dashboard(app)
    assert f'id="run-{ended}-speed"' not in dashboard.get(f"/tasks/{TASK}").get_data(as_text=True)

    refused = dashboard.post(f"/runs/{run_id}/speed", {"rate": "0"}, follow_redirects=True)
    forged = dashboard.post(f"/runs/{run_id}/speed", {"rate": "5"}, token=False)

    assert "rate: must be a number greater than 0" in html.unescape(text(refused))
    assert forged.status_code == 400
    assert speed_of(run_id) == (None, None, None)


# -- the JSON API ---------------------------------------------------------------------


@pytest.fixture
def api(app_env: dict[str, str]) -> t.Iterator[t.Any]:
    with make_app(api_token=API_TOKEN) as app:
        client = app.test_client()

        def post(run_id: int, json: t.Any) -> t.Any:
            return client.post(
                f"/maintenance_tasks/api/runs/{run_id}/speed",
                json=json,
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            )

        yield post


def test_api_sets_and_resets_the_speed(api: t.Any, db: t.Any) -> None:
    run_id = add_run(db.engine, TASK, "running")

    capped = api(run_id, {"rate": 200, "ticker_delay": 0.5})
    lifted = api(run_id, {"rate": None})

    assert capped.status_code == 200
    assert capped.get_json()["speed"] == {"rate": 200, "batch_size": None, "ticker_delay": 0.5}
    assert lifted.get_json()["speed"] == {"rate": None, "batch_size": None, "ticker_delay": 0.5}


def test_api_refuses_bad_values_with_stable_codes(api: t.Any, db: t.Any) -> None:
    run_id = add_run(db.engine, TASK, "running")
    ended = add_run(db.engine, TASK, "cancelled")

    zero = api(run_id, {"rate": 0})
    wrong_type = api(run_id, {"batch_size": "ten"})
    unknown = api(run_id, {"speed": 3})
    late = api(ended, {"rate": 5})

    assert (zero.status_code, zero.get_json()["code"]) == (422, "invalid_arguments")
    assert zero.get_json()["errors"] == {"rate": ["must be a number greater than 0"]}
    assert (wrong_type.status_code, wrong_type.get_json()["code"]) == (400, "bad_request")
    assert (unknown.status_code, unknown.get_json()["code"]) == (400, "bad_request")
    assert (late.status_code, late.get_json()["code"]) == (409, "invalid_transition")
    assert speed_of(run_id) == (None, None, None)


# -- a real worker --------------------------------------------------------------------


@pytest.mark.both_databases
def test_worker_takes_the_cap_at_its_next_reload_without_pausing(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    # About 250 items/s uncapped: 1,200 items leave time to set the cap under way,
    # even on a busy machine where SQLite's lock makes the change wait for a turn
    # between the worker's ticks, and the cap (100/s) is well below that.
    items, cap = 1200, 100
    seed_items(items)
    run = mtasks.run(TASK, {"sleep": 0.004})
    workers.start()
    wait_until(lambda: fresh_run(run.id).tick_count >= 20, what="the run to move")

    mtasks.set_speed(run.id, rate=cap)
    time.sleep(1.0)  # a reload (0.2 s) and a tick (0.2 s) later
    first_count, first_at = fresh_run(run.id).tick_count, time.monotonic()
    found = wait_until(
        lambda: fresh_run(run.id) if fresh_run(run.id).status == "succeeded" else None,
        timeout=60,
        what="the run to succeed",
    )
    elapsed = time.monotonic() - first_at

    left = items - first_count
    assert left > 300, "the cap came too late to be measured"
    # A tick (0.2 s) of items may have been committed before the first read.
    assert left / elapsed <= cap * 1.05 + 20 / elapsed
    assert elapsed >= left / cap - 0.5
    assert counters() == [1] * items
    actions = [action for action, _, _ in events(run.id)]
    assert "speed_changed" in actions
    assert not {"pausing", "paused", "interrupted"} & set(actions)
    assert found.max_rate == cap


def test_a_capped_run_waiting_for_its_turn_pauses_promptly_and_resumes_capped(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(50)
    run = mtasks.run(TASK)
    mtasks.set_speed(run.id, rate=0.2)  # set before it starts: one item every 5 s
    workers.start()
    wait_until(lambda: fresh_run(run.id).tick_count >= 1, what="the first item")

    asked = time.monotonic()
    mtasks.pause(run.id)
    wait_until(lambda: fresh_run(run.id).status == "paused", timeout=10, what="the pause")
    waited = time.monotonic() - asked

    assert waited < 2.0  # a reload (0.2 s) and a tick, not the 5 s of the item's turn
    assert fresh_run(run.id).tick_count <= 2
    resumed = mtasks.resume(run.id)
    assert resumed.max_rate == 0.2
    mtasks.cancel(run.id)


def test_worker_takes_a_new_ticker_delay_at_once(app: Flask, mtasks: t.Any, workers: t.Any) -> None:
    seed_items(1000)
    run = mtasks.run(TASK, {"sleep": 0.01})
    workers.start()
    wait_until(lambda: fresh_run(run.id).tick_count >= 10, what="the run to move")

    mtasks.set_speed(run.id, ticker_delay=3)
    changed = time.monotonic()
    # At the old delay (0.2 s) the count moves five times a second: a quiet stretch of
    # 1.5 s comes only once the job took the new one at a reload (every 0.2 s; a loaded
    # machine may take a little longer to get there, hence the bound of a few seconds).
    seen = {"count": fresh_run(run.id).tick_count, "since": time.monotonic()}

    def quiet_for_a_while() -> bool:
        count = fresh_run(run.id).tick_count
        if count != seen["count"]:
            seen.update(count=count, since=time.monotonic())
        return time.monotonic() - seen["since"] >= 1.5

    wait_until(quiet_for_a_while, timeout=8, what="the commits to slow down to the new delay")
    held = seen["count"]
    assert held < 1000
    assert time.monotonic() - changed < 8
    wait_until(lambda: fresh_run(run.id).tick_count > held, timeout=5, what="the next tick")
    mtasks.cancel(run.id)


def test_a_batch_size_sets_the_page_size_of_the_next_slice(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    seed_items(30)
    run = mtasks.run(TASK)  # CountItemsTask fetches 100 records a query
    mtasks.set_speed(run.id, batch_size=7)
    pages: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "FROM items" in statement and "LIMIT" in statement:
            pages.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        drain(app)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)

    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 30
    assert len(pages) == 5  # 7, 7, 7, 7 and the last 2 (a short page ends the walk)


def partitions_moving(run_id: int) -> bool:
    from tests.testapp import db

    db.session.remove()
    rows = db.session.execute(
        sa.select(Run.status, Run.tick_count).where(Run.parent_id == run_id)
    ).all()
    return len(rows) == 2 and all(status == "running" and ticks for status, ticks in rows)


# On SQLite one partition's ticks, back to back, can keep the other from its first write
# for the whole walk: partitions run side by side on PostgreSQL.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_partitions_share_the_cap_of_their_run(app: Flask, mtasks: t.Any, workers: t.Any) -> None:
    seed_items(2000)
    workers.start()
    workers.start()
    run = mtasks.run(TASK, {"sleep": 0.004}, partitions=2)
    wait_until(lambda: partitions_moving(run.id), what="both partitions to move")

    mtasks.set_speed(run.id, rate=40)
    time.sleep(1.0)
    first_count, first_at = fresh_run(run.id).tick_count, time.monotonic()
    time.sleep(5.0)
    count, elapsed = fresh_run(run.id).tick_count, time.monotonic() - first_at

    assert partitions_moving(run.id)
    # Two partitions at 20 items/s each; a tick (0.2 s) of each may come on top.
    assert (count - first_count) / elapsed <= 40 * 1.05 + 20 / elapsed
    assert count - first_count >= 40 * elapsed * 0.8
    mtasks.cancel(run.id)
