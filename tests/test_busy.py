"""Operators' actions and recovery never wait long on a run's locked row.

Another connection holds the run's row (on SQLite, the database's write
lock) as a work horse frozen between its progress UPDATE and its COMMIT
would: each action must give up within ``MAINTENANCE_TASKS_LOCK_TIMEOUT``,
say the run is busy (409 on the dashboard and the API, exit 1 on the command
line), and change nothing.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks import RunBusy
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.models import Event, runs_table
from flask_maintenance_tasks.recovery import recover
from flask_maintenance_tasks.state import get_state
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, text
from tests.support.records import age, counters, fresh_run, row_held, seed_items
from tests.support.waiting import wait_until

pytestmark = pytest.mark.both_databases

#: The lock timeout of most tests here, and what an answer may take beyond it.
BOUND = 0.5
MARGIN = 1.5
TOKEN = "busy-tests-api-token-0123456789abcdef"


@pytest.fixture
def app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    with make_app(lock_timeout=BOUND, api_token=TOKEN) as app:
        yield app


def snapshot(engine: sa.Engine, run_id: int) -> tuple[t.Any, ...]:
    """What an action would change: the run's row and the number of events."""
    with engine.connect() as connection:
        row = connection.execute(sa.select(runs_table).where(runs_table.c.id == run_id)).one()
        events = connection.scalar(sa.select(sa.func.count()).select_from(Event))
    return (tuple(row), events)


def timed(action: t.Callable[[], t.Any]) -> tuple[float, t.Any]:
    started = time.monotonic()
    try:
        outcome = action()
    except Exception as error:  # the answer under test
        outcome = error
    return time.monotonic() - started, outcome


def test_every_action_on_a_locked_run_says_busy_within_the_bound_and_changes_nothing(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    running = add_run(
        db.engine, "CountItemsTask", "running", job_id="job-a", exclusive_key="CountItemsTask"
    )
    paused = add_run(db.engine, "ListTask", "paused", job_id=None)
    actions: list[tuple[int, t.Callable[[], t.Any]]] = [
        (running, lambda: mtasks.pause(running)),
        (running, lambda: mtasks.cancel(running)),
        (running, lambda: mtasks.set_speed(running, rate=10)),
        (paused, lambda: mtasks.resume(paused)),
        # The active run holds the task's key: a start of the same task waits for it.
        (running, lambda: mtasks.run("CountItemsTask")),
    ]
    for run_id, action in actions:
        before = snapshot(db.engine, run_id)
        with row_held(db.engine, run_id):
            elapsed, outcome = timed(action)
        assert isinstance(outcome, RunBusy), outcome
        assert BOUND * 0.8 <= elapsed < BOUND + MARGIN
        assert "busy" in str(outcome) and "try again" in str(outcome)
        # Nothing changed, not even a refused event.
        assert snapshot(db.engine, run_id) == before
    with db.engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(runs_table)) == 2

    # Once the row is free the same actions are done.
    assert mtasks.pause(running).status == "pausing"
    assert mtasks.resume(paused).status == "enqueued"


def test_the_default_bound_is_short(app_env: dict[str, str], mtasks: t.Any, db: t.Any) -> None:
    with make_app(lock_timeout=None) as app:
        run_id = add_run(db.engine, "CountItemsTask", "running", job_id="job-a")
        sqlite = db.engine.dialect.name == "sqlite"
        bound = 5.0 if sqlite else 2.0
        with row_held(db.engine, run_id):
            elapsed, outcome = timed(lambda: mtasks.pause(run_id))
        assert isinstance(outcome, RunBusy), outcome
        assert bound * 0.8 <= elapsed < bound + MARGIN
        assert get_state(app).settings.lock_timeout is None


def test_the_dashboard_answers_409_and_shows_why(app: Flask, db: t.Any) -> None:
    dashboard = Dashboard(app)
    run_id = add_run(db.engine, "CountItemsTask", "running", job_id="job-a")
    path = f"/tasks/CountItemsTask/runs/{run_id}/pause"
    dashboard.token()
    before = snapshot(db.engine, run_id)
    with row_held(db.engine, run_id):
        through_htmx = dashboard.post(path, htmx=True)
        plain = dashboard.post(path)
        speed = dashboard.post(f"/runs/{run_id}/speed", {"rate": "5"}, htmx=True)
    for response in (through_htmx, plain, speed):
        assert response.status_code == 409
        assert response.headers["Retry-After"] == "1"
        assert f"Run #{run_id} is busy" in text(response)
    assert 'id="task-runs"' in text(through_htmx)  # the region, up to date, and the message
    assert snapshot(db.engine, run_id) == before


def test_the_api_answers_409_run_busy(app: Flask, db: t.Any) -> None:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    run_id = add_run(db.engine, "CountItemsTask", "running", job_id="job-a")
    before = snapshot(db.engine, run_id)
    with row_held(db.engine, run_id):
        answers = [
            client.post(f"/maintenance_tasks/api/runs/{run_id}/pause", headers=auth),
            client.post(
                f"/maintenance_tasks/api/runs/{run_id}/speed",
                headers=auth,
                data=json.dumps({"rate": 5}),
                content_type="application/json",
            ),
        ]
    for answer in answers:
        assert answer.status_code == 409, answer.get_data(as_text=True)
        assert answer.get_json()["code"] == "run_busy"
        assert answer.headers["Retry-After"] == "1"
    assert snapshot(db.engine, run_id) == before


def test_the_command_line_exits_1_and_says_why(app: Flask, db: t.Any) -> None:
    runner = app.test_cli_runner()
    run_id = add_run(db.engine, "CountItemsTask", "running", job_id="job-a")
    before = snapshot(db.engine, run_id)
    with row_held(db.engine, run_id):
        elapsed, result = timed(lambda: runner.invoke(args=["mtasks", "pause", str(run_id)]))
    assert result.exit_code == 1, result.output
    assert f"Run #{run_id} is busy" in result.output
    assert elapsed < BOUND + MARGIN
    assert snapshot(db.engine, run_id) == before


def test_recovery_skips_a_locked_run_and_comes_back_to_it(
    app: Flask, mtasks: t.Any, db: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    app.extensions["maintenance_tasks"].executor.connection.flushall()  # its job is gone
    db.session.execute(
        runs_table.update().where(runs_table.c.id == run.id).values(status="running")
    )
    db.session.commit()
    age(run.id, seconds=3600)
    before = snapshot(db.engine, run.id)
    with row_held(db.engine, run.id), caplog.at_level(logging.WARNING):
        elapsed, outcome = timed(lambda: recover(get_state()))
    assert outcome == []
    assert elapsed < BOUND + MARGIN
    assert f"Run #{run.id} is busy" in caplog.text
    assert snapshot(db.engine, run.id) == before

    # Next pass: handed on.
    assert [found.run_id for found in recover(get_state())] == [run.id]
    assert fresh_run(run.id).status == "interrupted"


def test_a_pause_while_a_work_horse_is_frozen_mid_commit_answers_within_the_bound(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    from tests.testapp.maintenance.counting import FROZEN_KEY

    redis = app.extensions["maintenance_tasks"].executor.connection
    seed_items(40)
    # Slow enough after the freeze (about 4 s) for the pause to find it under way.
    run = mtasks.run("FreezesBeforeCommitTask", {"freeze": 3.0, "sleep": 0.1})
    workers.start()
    wait_until(lambda: redis.exists(FROZEN_KEY), 30, "the work horse to freeze before its commit")

    elapsed, outcome = timed(lambda: mtasks.pause(run.id))
    assert isinstance(outcome, RunBusy), outcome
    assert elapsed < BOUND + MARGIN
    assert redis.exists(FROZEN_KEY), "the freeze ended before the answer: nothing was shown"

    # Thawed, the horse commits its tick, and the pause asked again is done.
    wait_until(lambda: not redis.exists(FROZEN_KEY), 30, "the freeze to end")
    wait_until(lambda: _paused(mtasks, run.id), 30, "the pause to be taken")
    wait_until(lambda: fresh_run(run.id).status == "paused", 30, "the run to pause")
    mtasks.resume(run.id)
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 60, "the run to succeed")
    assert counters() == [1] * 40


def _paused(mtasks: t.Any, run_id: int) -> bool:
    try:
        mtasks.pause(run_id)
    except RunBusy:
        return False
    return True


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), 601, "2", True])
def test_a_bad_lock_timeout_is_refused_at_init_app(app_env: dict[str, str], value: t.Any) -> None:
    with pytest.raises(ConfigurationError, match="LOCK_TIMEOUT"):
        with make_app(lock_timeout=value):
            pass
