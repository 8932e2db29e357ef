"""Runs at a set time: ``mtasks.run(at=...)``, ``flask mtasks run --at``, the "Start at"
field of the dashboard, the ``scheduled`` status, and the faults between scheduling and
the start (a worker restarted, Redis flushed).

Runs go through a real Redis; the tests of the start itself use real ``flask mtasks
worker`` processes, whose RQ scheduler moves a due job to the queue.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis import Redis

from flask_maintenance_tasks import (
    InvalidArguments,
    InvalidTransition,
    RunStatus,
    TaskAlreadyRunning,
    store,
)
from flask_maintenance_tasks.job import perform_run
from flask_maintenance_tasks.models import Event, runs_table
from flask_maintenance_tasks.recovery import HAND_OVER_GRACE, OVERDUE_SLACK, recover
from flask_maintenance_tasks.state import get_state
from tests.support.apps import FAST
from tests.support.dashboard import Dashboard, text
from tests.support.records import age, assert_trail_agrees, counters, fresh_run, seed_items
from tests.support.waiting import wait_until
from tests.support.workers import drain

pytestmark = pytest.mark.both_databases

TASK = "CountItemsTask"
ITEMS = 20


@pytest.fixture
def settings() -> dict[str, t.Any]:
    # Workers look for lost jobs twice a second.
    return {**FAST, "stuck_after": 2.0, "recovery_interval": 0.5}


def soon(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def started_once_at_its_time(run_id: int, timeout: float) -> None:
    """The run succeeds, having started no earlier than its time, each item done once."""
    wait_until(lambda: fresh_run(run_id).status == "succeeded", timeout, "the run to succeed")
    done = fresh_run(run_id)
    assert done.started_at >= done.scheduled_at
    assert counters() == [1] * ITEMS
    assert_trail_agrees(run_id)


def scheduled_jobs(app: Flask) -> list[str]:
    """The ids of the jobs waiting in RQ's scheduled registry."""
    registry = app.extensions["maintenance_tasks"].executor.queue().scheduled_job_registry
    return list(registry.get_job_ids())


def queued_jobs(app: Flask) -> int:
    return int(app.extensions["maintenance_tasks"].executor.queue().count)


def active_runs(app: Flask) -> list[t.Any]:
    with store.open_session(get_state().db) as session:
        return store.active_runs(session)


def row_counts(db: t.Any) -> tuple[int, int]:
    """Runs and events in the tables."""
    with db.engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            int(connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (runs_table, Event.__table__)
        )


# -- starting later from Python ---------------------------------------------------


def test_a_run_at_a_time_to_come_is_scheduled_and_its_job_waits_in_rq(
    app: Flask, mtasks: t.Any
) -> None:
    at = soon(3600)

    run = mtasks.run(TASK, at=at)

    stored = fresh_run(run.id)
    assert stored.status == RunStatus.SCHEDULED
    assert stored.scheduled_at == at
    assert stored.started_at is None
    assert scheduled_jobs(app) == [stored.job_id]
    assert queued_jobs(app) == 0


def test_a_scheduled_run_holds_the_task(app: Flask, mtasks: t.Any) -> None:
    run = mtasks.run(TASK, at=soon(3600))

    with pytest.raises(TaskAlreadyRunning) as refused:
        mtasks.run(TASK)

    assert str(run.id) in str(refused.value)
    assert run.id in [r.id for r in active_runs(app)]


def test_an_offset_other_than_utc_is_the_same_moment(app: Flask, mtasks: t.Any) -> None:
    at = soon(7200).astimezone(timezone(timedelta(hours=-5)))

    run = mtasks.run(TASK, at=at.isoformat())

    assert fresh_run(run.id).scheduled_at == at
    assert fresh_run(run.id).scheduled_at.utcoffset() == timedelta(0)


PAST = "2020-01-01T00:00+00:00"


@pytest.mark.parametrize(
    ("at", "message"),
    [
        (PAST, "is in the past"),
        (datetime(2020, 1, 1, tzinfo=timezone.utc), "is in the past"),
        ("2030-06-01T02:00", "has no time zone"),
        (datetime(2030, 6, 1, 2, 0), "has no time zone"),
        ("2030-06-01", "has no time zone"),
        ("tomorrow at two", "is not a date and time"),
        ("", "is not a date and time"),
        ("9" * 5000, "is not a date and time"),
        ("9999-12-31T23:59+00:00", "is more than a year ahead"),
        ("0001-01-01T00:00+05:00", "is out of range"),
        ("9999-12-31T23:00-05:00", "is out of range"),
        ("2026-13-45T99:00+00:00", "is not a date and time"),
        (1_700_000_000, "not int"),
    ],
)
def test_a_bad_time_is_refused_on_at_and_nothing_is_written_or_enqueued(
    app: Flask, mtasks: t.Any, db: t.Any, at: t.Any, message: str
) -> None:
    before = row_counts(db)[0]

    with pytest.raises(InvalidArguments) as refused:
        mtasks.run(TASK, at=at)

    assert list(refused.value.errors) == ["at"]
    assert message in refused.value.errors["at"][0]
    assert row_counts(db)[0] == before
    assert (scheduled_jobs(app), queued_jobs(app)) == ([], 0)


def test_without_redis_a_run_at_a_set_time_is_refused(inprocess_app: Flask, mtasks: t.Any) -> None:
    with pytest.raises(InvalidArguments) as refused:
        mtasks.run(TASK, at=soon(60))

    assert "MAINTENANCE_TASKS_REDIS_URL" in refused.value.errors["at"][0]
    assert active_runs(inprocess_app) == []


def test_a_scheduled_run_cannot_be_paused(app: Flask, mtasks: t.Any) -> None:
    run = mtasks.run(TASK, at=soon(3600))

    with pytest.raises(InvalidTransition, match="Cannot pause a scheduled run"):
        mtasks.pause(run.id)

    assert fresh_run(run.id).status == RunStatus.SCHEDULED


def test_a_cancelled_scheduled_run_is_cancelled_at_once_and_its_job_does_nothing(
    app: Flask, mtasks: t.Any
) -> None:
    seed_items(ITEMS)
    run = mtasks.run(TASK, at=soon(3600))
    job_id = run.job_id

    cancelled = mtasks.cancel(run.id)
    perform_run(run.id, job_id)  # its job, had RQ's scheduler run it anyway

    assert cancelled.status == RunStatus.CANCELLED
    stored = fresh_run(run.id)
    assert (stored.status, stored.started_at, stored.tick_count) == ("cancelled", None, 0)
    assert counters() == [0] * ITEMS
    assert mtasks.run(TASK).status == RunStatus.ENQUEUED  # the task is free again


def test_a_due_job_starts_the_run_and_an_early_one_waits(app: Flask, mtasks: t.Any) -> None:
    seed_items(ITEMS)
    run = mtasks.run(TASK, at=soon(1.5))

    perform_run(run.id, run.job_id)  # early: hands the run to a job due at its time
    early = fresh_run(run.id)
    assert early.status == RunStatus.SCHEDULED and early.job_id != run.job_id
    assert early.job_id in scheduled_jobs(app)
    time.sleep(max(0.0, (early.scheduled_at - datetime.now(timezone.utc)).total_seconds()))
    perform_run(run.id, early.job_id)

    done = fresh_run(run.id)
    assert done.status == RunStatus.SUCCEEDED
    assert done.started_at >= done.scheduled_at
    assert counters() == [1] * ITEMS
    assert_trail_agrees(run.id)


# -- the command line ---------------------------------------------------------------


def test_run_at_schedules_the_run_and_status_shows_it(app: Flask, cli: t.Any) -> None:
    at = soon(3600).replace(microsecond=0)

    result = cli("run", TASK, "--at", at.isoformat())

    assert result.exit_code == 0, result.output
    run_id = int(result.stdout.split()[0])
    assert fresh_run(run_id).status == RunStatus.SCHEDULED
    assert f"Run #{run_id} is scheduled for" in result.stderr
    listed = json.loads(cli("status", "--json").stdout)
    (active,) = listed["active"]
    assert (active["status"], active["scheduled_at"]) == ("scheduled", at.isoformat())
    assert "Scheduled for" in active["status_text"]
    assert "scheduled" in cli("status").stdout


@pytest.mark.parametrize(
    ("at", "message"),
    [(PAST, "is in the past"), ("2030-06-01T02:00", "has no time zone"), ("soon", "not a date")],
)
def test_run_at_a_bad_time_fails_like_other_bad_arguments(
    app: Flask, cli: t.Any, db: t.Any, at: str, message: str
) -> None:
    before = row_counts(db)[0]

    result = cli("run", TASK, "--at", at)

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Invalid arguments for CountItemsTask: at: ")
    assert message in result.stderr
    assert row_counts(db)[0] == before and scheduled_jobs(app) == []


def test_cancel_of_a_scheduled_run_from_the_command_line(app: Flask, cli: t.Any) -> None:
    run_id = int(cli("run", TASK, "--at", soon(3600).isoformat()).stdout.split()[0])

    result = cli("cancel", str(run_id))

    assert result.exit_code == 0 and f"Run #{run_id} is cancelled." in result.stdout
    assert cli("pause", str(run_id)).exit_code == 1


# -- the dashboard --------------------------------------------------------------------


@pytest.fixture
def web(app: Flask) -> Dashboard:
    return Dashboard(app)


def card_of(page: str, run_id: int) -> str:
    start = page.rindex("<article", 0, page.index(f'id="run-{run_id}"'))
    return page[start : page.find("</article>", start)]


def test_the_start_at_field_schedules_the_run_and_its_card_says_when(
    app: Flask, web: Dashboard
) -> None:
    at = soon(3600).replace(microsecond=0)

    response = web.post(f"/tasks/{TASK}/runs", {"_at": at.isoformat(), "sleep": "0"})

    assert response.status_code == 303, text(response)
    run_id = int(response.headers["Location"].rsplit("run-", 1)[1])
    page = text(web.get(f"/tasks/{TASK}"))
    assert f"is scheduled for {at:%Y-%m-%d %H:%M:%S} UTC" in page
    card = card_of(page, run_id)
    assert "Scheduled for" in card and 'data-status="scheduled"' in card
    assert re.search(r"<button[^>]*>\s*Cancel\s*</button>", card), card
    assert "Pause" not in card
    assert re.search(r'hx-params="not [^"]*_at', page)


def test_the_cancel_button_of_a_scheduled_card_cancels_it(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    run = mtasks.run(TASK, at=soon(3600))

    response = web.post(f"/tasks/{TASK}/runs/{run.id}/cancel")

    assert response.status_code in (302, 303), text(response)
    assert fresh_run(run.id).status == RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (PAST, "is in the past"),
        ("2030-06-01T02:00", "has no time zone"),
        ("<b>soon</b>", "is not a date and time"),
        ("99999-01-01T00:00+00:00", "is not a date and time"),
    ],
)
def test_a_bad_start_time_redisplays_the_form_with_422_and_writes_nothing(
    app: Flask, web: Dashboard, db: t.Any, value: str, message: str
) -> None:
    before = row_counts(db)

    response = web.post(f"/tasks/{TASK}/runs", {"_at": value, "sleep": "0"})

    page = text(response)
    assert response.status_code == 422
    error = re.search(r'<p class="field-error" id="run-at-error">([^<]*)</p>', page)
    assert error is not None and message in error.group(1).replace("&#39;", "'"), page
    assert "<b>soon" not in page
    assert row_counts(db) == before and (scheduled_jobs(app), queued_jobs(app)) == ([], 0)


def test_the_start_at_field_without_redis_is_refused_under_the_field(
    inprocess_app: Flask, db: t.Any
) -> None:
    web = Dashboard(inprocess_app)
    before = row_counts(db)[0]

    response = web.post(f"/tasks/{TASK}/runs", {"_at": soon(60).isoformat(), "sleep": "0"})

    assert response.status_code == 422
    error = re.search(r'<p class="field-error" id="run-at-error">([^<]*)</p>', text(response))
    assert error is not None and "MAINTENANCE_TASKS_REDIS_URL" in error.group(1)
    assert row_counts(db)[0] == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(max_size=40) | st.datetimes(timezones=st.none() | st.timezones()).map(str))
@example(value="\x00")
@example(value="2026-12-01T02:00+99:00")
def test_any_start_time_gets_an_answer_not_a_server_error(
    app: Flask, web: Dashboard, value: str
) -> None:
    assume(value.strip())  # an empty field starts the run now
    response = web.post(f"/tasks/{TASK}/runs", {"_at": value, "sleep": "0"})

    assert response.status_code in (303, 409, 422), text(response)
    if response.status_code == 303:
        # A valid time to come: the run waits; call it off for the next example.
        run_id = int(response.headers["Location"].rsplit("run-", 1)[1])
        assert fresh_run(run_id).status == RunStatus.SCHEDULED
        from tests.testapp import mtasks

        mtasks.cancel(run_id)


# -- recovery ---------------------------------------------------------------------------


def test_redis_flushed_before_its_time_recovery_schedules_the_run_again(
    app: Flask, mtasks: t.Any, redis_url: str
) -> None:
    run = mtasks.run(TASK, at=soon(3600))
    Redis.from_url(redis_url).flushall()
    age(run.id, seconds=HAND_OVER_GRACE + 0.5)  # not a job being enqueued just now

    done = recover(get_state())

    again = fresh_run(run.id)
    assert [r.run_id for r in done] == [run.id]
    assert again.status == RunStatus.SCHEDULED and again.job_id != run.job_id
    assert scheduled_jobs(app) == [again.job_id] and queued_jobs(app) == 0
    assert recover(get_state()) == []  # its new job waits: nothing more to do


def test_a_scheduled_run_whose_job_waits_is_left_alone_by_recovery(
    app: Flask, mtasks: t.Any
) -> None:
    run = mtasks.run(TASK, at=soon(3600))

    assert recover(get_state()) == []
    assert fresh_run(run.id).job_id == run.job_id


def test_a_scheduled_run_whose_job_is_overdue_in_rq_schedule_is_started_once(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    """No scheduler moved its job (a Redis outage killed it): recovery does, without
    waiting for the stuck limit, and the old job never starts it again."""
    seed_items(ITEMS)
    run = mtasks.run(TASK, at=soon(3600))
    past = soon(-(get_state().settings.recovery_interval + OVERDUE_SLACK + 1))
    with db.engine.begin() as connection:  # as if its time had come and gone
        connection.execute(
            runs_table.update().where(runs_table.c.id == run.id).values(scheduled_at=past)
        )
    executor = app.extensions["maintenance_tasks"].executor
    executor.queue().scheduled_job_registry.schedule(executor.queue().fetch_job(run.job_id), past)

    assert [r.run_id for r in recover(get_state())] == [run.id]

    again = fresh_run(run.id)
    assert again.status == RunStatus.SCHEDULED and again.job_id != run.job_id
    assert scheduled_jobs(app) == [] and queued_jobs(app) == 1
    perform_run(run.id, run.job_id)  # the old job, had a scheduler moved it after all
    assert fresh_run(run.id).status == RunStatus.SCHEDULED
    drain(app)
    assert recover(get_state()) == []
    assert fresh_run(run.id).status == RunStatus.SUCCEEDED
    assert counters() == [1] * ITEMS
    assert_trail_agrees(run.id)


# -- real workers -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_starts_the_run_at_its_time_and_not_before(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(ITEMS)
    workers.start()
    run = mtasks.run(TASK, at=soon(2.5))

    time.sleep(1.5)
    waiting = fresh_run(run.id)
    assert (waiting.status, waiting.started_at, counters()) == ("scheduled", None, [0] * ITEMS)
    started_once_at_its_time(run.id, timeout=60)


@pytest.mark.slow
def test_a_cancelled_scheduled_run_never_starts_on_a_worker(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(ITEMS)
    worker = workers.start()
    run = mtasks.run(TASK, at=soon(1.5))
    mtasks.cancel(run.id)

    wait_until(lambda: run.job_id not in scheduled_jobs(app), 30, "its job to leave RQ's schedule")
    time.sleep(1.0)  # time for its job to run

    stored = fresh_run(run.id)
    assert (stored.status, stored.started_at, stored.tick_count) == ("cancelled", None, 0)
    assert counters() == [0] * ITEMS
    assert worker.poll() is None, workers.log(worker)


@pytest.mark.slow
def test_a_worker_restarted_between_scheduling_and_the_start_loses_nothing(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(ITEMS)
    first = workers.start()
    executor = app.extensions["maintenance_tasks"].executor
    wait_until(lambda: (executor.worker_count() or 0) > 0, 30, "the first worker to listen")
    run = mtasks.run(TASK, at=soon(3))
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, workers.log(first)
    assert fresh_run(run.id).status == "scheduled"

    workers.start()
    started_once_at_its_time(run.id, timeout=90)


@pytest.mark.slow
def test_redis_flushed_recovery_starts_the_run_once_after_its_time(
    app: Flask, mtasks: t.Any, workers: t.Any, redis_url: str
) -> None:
    seed_items(ITEMS)
    run = mtasks.run(TASK, at=soon(1.5))
    Redis.from_url(redis_url).flushall()  # the job is gone, nobody has seen it
    time.sleep(2.0)
    assert fresh_run(run.id).status == "scheduled"

    workers.start()  # its periodic recovery finds the job gone and the time passed
    started_once_at_its_time(run.id, timeout=60)


def test_redis_flushed_after_its_time_recovery_enqueues_it_and_it_runs_once(
    app: Flask, mtasks: t.Any, redis_url: str
) -> None:
    seed_items(ITEMS)
    run = mtasks.run(TASK, at=soon(1.0))
    Redis.from_url(redis_url).flushall()
    time.sleep(1.2)
    age(run.id, seconds=HAND_OVER_GRACE + 0.5)  # not a job being enqueued just now

    recover(get_state())
    drain(app)
    recover(get_state())  # a second pass finds nothing to hand on
    drain(app)

    done = fresh_run(run.id)
    assert done.status == RunStatus.SUCCEEDED
    assert counters() == [1] * ITEMS
    assert_trail_agrees(run.id)


@pytest.mark.slow
def test_a_worker_killed_before_the_start_holds_rq_scheduler_lock_and_recovery_starts_the_run(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(ITEMS)
    first = workers.start()
    executor = app.extensions["maintenance_tasks"].executor
    wait_until(lambda: (executor.worker_count() or 0) > 0, 30, "the first worker to listen")
    run = mtasks.run(TASK, at=soon(2))
    # A lost machine: the worker and its scheduler die at once, the scheduler's lock in
    # Redis lives on for a minute, and its job stays in RQ's schedule.
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)

    workers.start()
    started_once_at_its_time(run.id, timeout=30)
