"""Recovery of runs that no job holds any more, and of stuck pauses and cancels."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks.models import runs_table, utcnow
from flask_maintenance_tasks.recovery import recover
from flask_maintenance_tasks.state import get_state
from tests.support.records import counters, fresh_run, seed_items
from tests.support.workers import drain

# Both databases: recovery finds and hands on runs by SQL, two recoverers race in it.
pytestmark = pytest.mark.both_databases


def _age(db, run_id: int, seconds: float = 301, **values) -> None:
    db.session.execute(
        runs_table.update()
        .where(runs_table.c.id == run_id)
        .values(updated_at=utcnow() - timedelta(seconds=seconds), **values)
    )
    db.session.commit()


def _orphan(app, mtasks, db, status: str = "running", **values):
    """A run whose job vanished: Redis forgot it, the heartbeat is old."""
    run = mtasks.run("CountItemsTask")
    app.extensions["maintenance_tasks"].executor.connection.flushall()
    _age(db, run.id, status=status, **values)
    return fresh_run(run.id)


def test_a_running_run_whose_job_vanished_is_handed_on_and_finishes(app, mtasks, db):
    seed_items(20)
    run = _orphan(app, mtasks, db, cursor=5, tick_count=5)
    recovered = recover(get_state())
    assert [(r.run_id, r.was, r.status) for r in recovered] == [(run.id, "running", "interrupted")]
    handed = fresh_run(run.id)
    assert handed.job_id != run.job_id
    assert handed.interruption_reason == "recovery"
    drain(app)
    finished = fresh_run(run.id)
    assert finished.status == "succeeded"
    assert finished.tick_count == 20
    assert counters() == [0] * 5 + [1] * 15


def test_an_enqueued_run_whose_job_vanished_is_enqueued_again(app, mtasks, db):
    seed_items(5)
    run = _orphan(app, mtasks, db, status="enqueued")
    assert [r.status for r in recover(get_state())] == ["enqueued"]
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 5


def test_an_interrupted_run_whose_next_slice_vanished_carries_on(app, mtasks, db):
    seed_items(5)
    run = _orphan(app, mtasks, db, status="interrupted", cursor=2, tick_count=2)
    assert [r.status for r in recover(get_state())] == ["interrupted"]
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [0, 0, 1, 1, 1]


def test_a_run_with_a_recent_heartbeat_is_left_alone(app, mtasks, db):
    run = _orphan(app, mtasks, db)
    _age(db, run.id, seconds=100)
    assert recover(get_state()) == []
    assert fresh_run(run.id).job_id == run.job_id


def test_a_run_whose_job_waits_in_the_queue_is_left_alone(app, mtasks, db):
    run = mtasks.run("CountItemsTask")
    _age(db, run.id, seconds=3600)
    assert recover(get_state()) == []
    assert fresh_run(run.id).job_id == run.job_id


def test_a_stuck_pausing_run_is_settled_to_paused(app, mtasks, db):
    run = _orphan(app, mtasks, db, status="pausing")
    assert [r.status for r in recover(get_state())] == ["paused"]
    paused = fresh_run(run.id)
    assert paused.status == "paused"
    assert paused.job_id is None


def test_a_stuck_cancelling_run_is_settled_to_cancelled(app, mtasks, db):
    run = _orphan(app, mtasks, db, status="cancelling")
    assert [r.status for r in recover(get_state())] == ["cancelled"]
    cancelled = fresh_run(run.id)
    assert cancelled.ended_at is not None
    mtasks.run("CountItemsTask")  # the task is free again


def test_a_recovered_slice_of_the_old_job_writes_nothing(app, mtasks, db):
    """The old job, were it only frozen, is fenced off by the new job id."""
    from flask_maintenance_tasks.job import perform_run

    seed_items(10)
    run = _orphan(app, mtasks, db)
    recover(get_state())
    perform_run(run.id, run.job_id)
    assert counters() == [0] * 10
    assert fresh_run(run.id).status == "interrupted"


def test_two_recoverers_at_once_hand_the_run_on_once(app, mtasks, db):
    seed_items(10)
    _orphan(app, mtasks, db)
    barrier = threading.Barrier(2)
    results: list[list[object]] = []

    def recoverer() -> None:
        with app.app_context():
            barrier.wait()
            results.append(list(recover(get_state())))

    threads = [threading.Thread(target=recoverer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(len(r) for r in results) == [0, 1]
    queue = app.extensions["maintenance_tasks"].executor.queue()
    assert queue.count == 1
    drain(app)
    assert counters() == [1] * 10


def test_finished_runs_are_never_touched(app, mtasks, db):
    run = mtasks.run("OnceTask")
    drain(app)
    _age(db, run.id, seconds=10_000)
    assert recover(get_state()) == []
    db.session.remove()
    assert db.session.scalar(sa.select(runs_table.c.status)) == "succeeded"


def test_the_recover_command_says_what_it_did(app, mtasks, db):
    run = _orphan(app, mtasks, db)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["mtasks", "recover"])
    assert result.exit_code == 0, result.output
    assert f"Run #{run.id} (CountItemsTask) had no live job: handed to a new job." in result.output
    again = runner.invoke(args=["mtasks", "recover"])
    assert again.output.strip() == "Nothing to recover."
