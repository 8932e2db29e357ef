"""Recovery of runs that no job holds any more, and of stuck pauses and cancels."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from rq.job import Job, JobStatus

from flask_maintenance_tasks.exceptions import TaskAlreadyRunning
from flask_maintenance_tasks.models import runs_table, utcnow
from flask_maintenance_tasks.recovery import HAND_OVER_GRACE, OVERDUE_SLACK, recover
from flask_maintenance_tasks.state import get_state
from tests.support import ROOT
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


# -- runs whose RQ job is dead, recovered without waiting for the stuck limit --


def _fail_in_a_plain_rq_worker(app) -> None:
    """Run the queued jobs in ``rq worker --burst`` without ``FLASK_APP``: each fails."""
    executor = app.extensions["maintenance_tasks"].executor
    env = {k: v for k, v in os.environ.items() if k != "FLASK_APP"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "--burst",
            "--url",
            executor.redis_url,
            executor.queue_name,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "A maintenance task job ran outside an app" in result.stdout + result.stderr


def _past_the_hand_over(db, run_id: int) -> None:
    """The run last changed longer ago than a job takes to enqueue the job it committed."""
    _age(db, run_id, seconds=HAND_OVER_GRACE + 0.5)


def _job(app, job_id: str) -> Job:
    return Job.fetch(job_id, connection=app.extensions["maintenance_tasks"].executor.connection)


def test_an_enqueued_run_whose_job_failed_outside_the_runner_is_enqueued_again_at_once(
    app, mtasks, db
):
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    _fail_in_a_plain_rq_worker(app)
    assert _job(app, run.job_id).get_status() == JobStatus.FAILED
    assert fresh_run(run.id).status == "enqueued"  # the heartbeat is fresh
    _past_the_hand_over(db, run.id)

    recovered = recover(get_state())

    assert [(r.run_id, r.was, r.status) for r in recovered] == [(run.id, "enqueued", "enqueued")]
    assert fresh_run(run.id).job_id != run.job_id
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 5


def test_a_cancelled_run_whose_job_failed_is_settled_and_frees_the_task_at_once(app, mtasks, db):
    run = mtasks.run("CountItemsTask")
    _fail_in_a_plain_rq_worker(app)
    assert mtasks.cancel(run.id).status == "cancelling"
    with pytest.raises(TaskAlreadyRunning):
        mtasks.run("CountItemsTask")
    _past_the_hand_over(db, run.id)

    assert [r.status for r in recover(get_state())] == ["cancelled"]

    assert fresh_run(run.id).status == "cancelled"
    assert mtasks.run("CountItemsTask").status == "enqueued"


def test_a_pausing_run_whose_job_failed_is_settled_to_paused(app, mtasks, db):
    run = mtasks.run("CountItemsTask")
    _fail_in_a_plain_rq_worker(app)
    mtasks.pause(run.id)
    _past_the_hand_over(db, run.id)
    assert [r.status for r in recover(get_state())] == ["paused"]
    assert fresh_run(run.id).status == "paused"


@pytest.mark.parametrize("end", ["canceled", "stopped", "deleted"])
def test_an_interrupted_run_whose_job_was_canceled_stopped_or_deleted_carries_on(
    app, mtasks, db, end
):
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    db.session.execute(
        runs_table.update().where(runs_table.c.id == run.id).values(status="interrupted", cursor=2)
    )
    db.session.commit()
    _past_the_hand_over(db, run.id)
    job = _job(app, run.job_id)
    if end == "canceled":
        job.cancel()
    elif end == "stopped":
        job.set_status(JobStatus.STOPPED)
    else:
        job.delete()

    assert [r.status for r in recover(get_state())] == ["interrupted"]

    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [0, 0, 1, 1, 1]


def test_a_run_just_handed_to_a_job_not_yet_enqueued_is_left_alone_for_the_grace(app, mtasks, db):
    """A job commits its run's next job id, then enqueues that job: in between, RQ
    does not know the job. Recovery must not take that moment for a lost job."""
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    app.extensions["maintenance_tasks"].executor.connection.flushall()
    _age(db, run.id, seconds=0, status="interrupted", cursor=2)  # handed over just now

    assert recover(get_state()) == []
    assert fresh_run(run.id).job_id == run.job_id

    _past_the_hand_over(db, run.id)  # the enqueue never came: the job was lost
    assert [r.status for r in recover(get_state())] == ["interrupted"]
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED])
def test_a_run_whose_job_is_queued_scheduled_or_started_is_left_alone(app, mtasks, db, status):
    run = mtasks.run("CountItemsTask")
    _job(app, run.job_id).set_status(status)
    mtasks.cancel(run.id)
    assert recover(get_state()) == []
    assert fresh_run(run.id).status == "cancelling"


def test_a_run_whose_job_is_delayed_in_rq_scheduler_is_left_alone(app, mtasks, db):
    run = mtasks.run("CountItemsTask")
    executor = app.extensions["maintenance_tasks"].executor
    executor.connection.flushall()
    executor.enqueue(run.id, run.job_id, delay=600)
    assert recover(get_state()) == []
    assert fresh_run(run.id).job_id == run.job_id


def test_a_running_run_with_a_fresh_heartbeat_is_left_alone_though_its_job_failed(app, mtasks, db):
    run = mtasks.run("CountItemsTask")
    _job(app, run.job_id).set_status(JobStatus.FAILED)
    _age(db, run.id, seconds=5, status="running")
    assert recover(get_state()) == []
    assert fresh_run(run.id).status == "running"


def test_a_dead_job_run_that_moved_on_meanwhile_is_left_alone(app, mtasks, db):
    """The fence: recovery applies only if status, job and heartbeat are as seen."""
    from flask_maintenance_tasks import recovery

    run = mtasks.run("CountItemsTask")
    _job(app, run.job_id).set_status(JobStatus.FAILED)
    _past_the_hand_over(db, run.id)
    [seen] = recovery.dead_job_candidates(get_state())
    _age(db, run.id, seconds=-5)  # heard of since: a newer heartbeat
    assert recovery._recover_one(get_state(), seen, heard_until=seen.updated_at) is None
    assert fresh_run(run.id).job_id == run.job_id


def test_a_resumed_partitioned_run_whose_job_vanished_is_enqueued_again(app, mtasks, db):
    """A cut run waiting for its own job after a resume is handed on as any run."""
    from flask_maintenance_tasks.testing import run_task
    from tests.testapp import Item

    seed_items(12)
    run = run_task("PartitionedCountTask", {"fail_on": "item-11"})
    assert run.status == "errored"
    db.session.execute(sa.update(Item).where(Item.id == 11).values(title="fixed"))
    db.session.commit()
    mtasks.resume(run.id)
    app.extensions["maintenance_tasks"].executor.connection.flushall()
    _age(db, run.id)
    lost = fresh_run(run.id)
    assert [(r.run_id, r.was, r.status) for r in recover(get_state())] == [
        (run.id, "enqueued", "enqueued")
    ]
    assert fresh_run(run.id).job_id not in (None, lost.job_id)
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 12


# -- delayed jobs that no scheduler moves to the queue --


def _delayed_slice(app, mtasks, db):
    """An interrupted run whose next slice waits in RQ's schedule, as a throttle leaves it."""
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    executor = app.extensions["maintenance_tasks"].executor
    executor.connection.flushall()
    _past_the_hand_over(db, run.id)
    db.session.execute(
        runs_table.update().where(runs_table.c.id == run.id).values(status="interrupted")
    )
    db.session.commit()
    executor.enqueue(run.id, run.job_id, delay=600)
    return fresh_run(run.id)


def _due(app, job_id: str, seconds_ago: float) -> None:
    """Move the job's due time in RQ's schedule into the past, as if its delay had passed."""
    registry = app.extensions["maintenance_tasks"].executor.queue().scheduled_job_registry
    registry.schedule(_job(app, job_id), utcnow() - timedelta(seconds=seconds_ago))


def test_a_delayed_slice_overdue_by_a_recovery_interval_is_handed_to_a_job_queued_at_once(
    app, mtasks, db
):
    """RQ's scheduler is gone (a Redis outage killed it, say): recovery moves the slice."""
    from flask_maintenance_tasks.job import perform_run

    run = _delayed_slice(app, mtasks, db)
    executor = app.extensions["maintenance_tasks"].executor
    interval = get_state().settings.recovery_interval
    _due(app, run.job_id, seconds_ago=interval + OVERDUE_SLACK + 1)

    assert [(r.run_id, r.was, r.status) for r in recover(get_state())] == [
        (run.id, "interrupted", "interrupted")
    ]

    handed = fresh_run(run.id)
    assert handed.job_id != run.job_id
    assert executor.queue().job_ids == [handed.job_id]
    assert executor.queue().scheduled_job_registry.get_job_ids() == []
    assert executor.overdue_since(run.job_id) is None
    perform_run(run.id, run.job_id)  # the old job, had a scheduler moved it after all
    assert counters() == [0] * 5
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 5
    assert recover(get_state()) == []


def test_a_delayed_slice_due_less_than_a_recovery_interval_ago_is_left_alone(app, mtasks, db):
    run = _delayed_slice(app, mtasks, db)
    _due(app, run.job_id, seconds_ago=get_state().settings.recovery_interval / 2)
    assert recover(get_state()) == []
    assert fresh_run(run.id).job_id == run.job_id
    assert app.extensions["maintenance_tasks"].executor.is_waiting(run.job_id)


def test_a_cut_run_whose_last_settle_failed_is_settled_at_the_next_pass(app, mtasks, db):
    """Every partition ended, but the run did not follow (the last settle met SQLite's
    lock, or its process died): recovery settles it long before it would count as stuck."""
    from tests.support.dashboard import add_run
    from tests.support.records import age

    def cut_run(*statuses: str) -> int:
        parent = add_run(
            db.engine,
            "PartitionedCountTask",
            "running",
            partitions=len(statuses),
            bounds=[{}] * len(statuses),
        )
        for number, status in enumerate(statuses):
            add_run(
                db.engine,
                "PartitionedCountTask",
                status,
                parent_id=parent,
                partition=number,
                partitions=1,
                job_id=None if status == "succeeded" else f"job-{parent}-{number}",
            )
        return parent

    done = cut_run("succeeded", "succeeded")
    moving = cut_run("succeeded", "running")
    fresh = cut_run("succeeded", "succeeded")
    age(done, moving, seconds=HAND_OVER_GRACE + 5)

    recover(get_state())

    assert fresh_run(done).status == "succeeded"
    assert fresh_run(moving).status == "running"  # its last partition settles it
    assert fresh_run(fresh).status == "running"  # its last settle may be on its way


def test_a_job_taken_off_the_queue_by_a_worker_killed_before_it_started_is_recovered(
    app, mtasks, db
):
    """Found by the chaos mode (seed 7, PostgreSQL): a worker SIGKILLed just after it
    took the job off the queue leaves the job ``queued`` in RQ's intermediate queue,
    in no queue. Recovery used to wait for it as for a queued job, for the ten minutes
    RQ takes to clean that queue up; once the run is stale it hands the run on."""
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    executor = app.extensions["maintenance_tasks"].executor
    queue = executor.queue()
    # What a worker's dequeue does (RQ's LMOVE), before the worker dies.
    assert executor.connection.lmove(queue.key, queue.intermediate_queue_key) is not None
    assert Job.fetch(run.job_id, connection=executor.connection).get_status() == JobStatus.QUEUED
    assert not executor.is_waiting(run.job_id)

    _age(db, run.id, seconds=get_state().settings.stuck_after + 1)
    recovered = recover(get_state())
    assert [(r.run_id, r.was) for r in recovered] == [(run.id, "enqueued")]
    handed = fresh_run(run.id)
    assert handed.job_id != run.job_id
    assert queue.job_ids == [handed.job_id]
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 5


def test_a_job_still_in_its_queue_is_waiting(app, mtasks, db):
    run = mtasks.run("CountItemsTask")
    assert app.extensions["maintenance_tasks"].executor.is_waiting(run.job_id)
    _age(db, run.id)
    assert recover(get_state()) == []
