"""Starting, pausing, resuming and cancelling runs through the Python API."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import (
    EnqueueError,
    InvalidArguments,
    InvalidTransition,
    Run,
    TaskAlreadyRunning,
    TaskNotFound,
)
from flask_maintenance_tasks.models import runs_table, utcnow
from tests.support.apps import configure
from tests.support.records import counters, fresh_run, seed_items
from tests.support.workers import drain

# Both databases: starts and status changes are guarded by the database (uniqueness, lock versions).
pytestmark = pytest.mark.both_databases


def _runs(db) -> list[Run]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Run).order_by(Run.id)))


def _set(db, run_id: int, **values) -> None:
    db.session.execute(runs_table.update().where(runs_table.c.id == run_id).values(**values))
    db.session.commit()


def test_run_saves_an_enqueued_run_with_validated_arguments(app, mtasks, db):
    run = mtasks.run("ParamsTask", arguments={"content": "x", "limit": "5", "ids": [1, 2]})
    assert run.status == "enqueued"
    assert run.job_id
    stored = _runs(db)[0]
    assert stored.arguments["limit"] == 5
    assert stored.arguments["ids"] == [1, 2]
    assert stored.arguments["mode"] == "careful"


def test_run_of_an_unknown_task_raises_and_writes_nothing(app, mtasks, db):
    with pytest.raises(TaskNotFound, match="'NoSuchTask' not found"):
        mtasks.run("NoSuchTask")
    assert _runs(db) == []


def test_run_with_invalid_arguments_names_the_field_and_writes_nothing(app, mtasks, db):
    with pytest.raises(InvalidArguments) as caught:
        mtasks.run("ParamsTask", arguments={"content": "", "mode": "reckless"})
    assert set(caught.value.errors) == {"content", "mode"}
    assert "content" in str(caught.value)
    assert _runs(db) == []


def test_unknown_parameter_is_refused(app, mtasks, db):
    with pytest.raises(InvalidArguments, match="nope: unknown parameter"):
        mtasks.run("ParamsTask", arguments={"content": "x", "nope": 1})
    assert _runs(db) == []


def test_a_second_run_of_a_running_task_is_refused(app, mtasks, db):
    first = mtasks.run("CountItemsTask")
    with pytest.raises(TaskAlreadyRunning, match=f"run #{first.id}"):
        mtasks.run("CountItemsTask")
    assert len(_runs(db)) == 1


def test_two_concurrent_starts_give_one_run_and_one_refusal(app, mtasks, db):
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def start() -> None:
        with app.app_context():
            barrier.wait()
            try:
                outcomes.append(mtasks.run("CountItemsTask"))
            except TaskAlreadyRunning as error:
                outcomes.append(error)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(type(o).__name__ for o in outcomes) == ["Run", "TaskAlreadyRunning"]
    assert len(_runs(db)) == 1


def test_a_task_allowing_concurrent_runs_can_run_twice(app, mtasks, db):
    seed_items(9)
    mtasks.run("ConcurrentCountTask", arguments={"group": 0})
    mtasks.run("ConcurrentCountTask", arguments={"group": 1})
    drain(app)
    assert [r.status for r in _runs(db)] == ["succeeded", "succeeded"]
    assert counters() == [1, 0, 1, 1, 0, 1, 1, 0, 1]


def test_a_new_run_may_start_once_the_previous_one_ended(app, mtasks):
    first = mtasks.run("OnceTask")
    drain(app)
    assert fresh_run(first.id).status == "succeeded"
    second = mtasks.run("OnceTask")
    assert second.id != first.id


def test_enqueue_failure_leaves_the_run_errored_with_its_cause(app, mtasks, db, redis_server):
    redis_server.stop()
    with pytest.raises(EnqueueError) as caught:
        mtasks.run("OnceTask")
    run = _runs(db)[0]
    assert run.status == "errored"
    assert run.error_class == "ConnectionError"
    assert caught.value.run_id == run.id
    # The failed run does not block the task.
    redis_server.start()
    mtasks.run("OnceTask")


def test_pause_of_an_enqueued_run_pauses_when_its_job_starts(app, mtasks):
    run = mtasks.run("ListTask")
    assert mtasks.pause(run.id).status == "pausing"
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "paused"
    assert run.tick_count == 0


def test_pausing_twice_is_a_no_op(app, mtasks):
    run = mtasks.run("ListTask")
    first = mtasks.pause(run.id)
    second = mtasks.pause(run.id)
    assert second.status == "pausing"
    assert second.updated_at == first.updated_at


def test_cancel_of_a_paused_run_is_immediate(app, mtasks):
    run = mtasks.run("ListTask")
    mtasks.pause(run.id)
    drain(app)
    run = mtasks.cancel(run.id)
    assert run.status == "cancelled"
    assert run.ended_at is not None


def test_cancel_of_an_enqueued_run_cancels_when_its_job_starts(app, mtasks):
    run = mtasks.run("ListTask")
    assert mtasks.cancel(run.id).status == "cancelling"
    drain(app)
    assert fresh_run(run.id).status == "cancelled"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("pause", "Cannot pause a succeeded run."),
        ("cancel", "Cannot cancel a succeeded run."),
        ("resume", "Cannot resume a succeeded run."),
    ],
)
def test_actions_on_a_succeeded_run_are_refused_and_change_nothing(app, mtasks, action, message):
    run = mtasks.run("OnceTask")
    drain(app)
    before = fresh_run(run.id)
    with pytest.raises(InvalidTransition, match=message):
        getattr(mtasks, action)(run.id)
    after = fresh_run(run.id)
    assert (after.status, after.lock_version) == (before.status, before.lock_version)


def test_actions_on_an_unknown_run_say_so(app, mtasks):
    with pytest.raises(Exception, match="Run #999 not found"):
        mtasks.pause(999)


def test_pause_of_a_stuck_pausing_run_forces_paused(app, mtasks, db):
    run = mtasks.run("ListTask")
    mtasks.pause(run.id)
    _set(db, run.id, updated_at=utcnow() - timedelta(seconds=301))
    run = mtasks.pause(run.id)
    assert run.status == "paused"
    # The job of the stuck run no longer holds it: it does nothing.
    drain(app)
    assert fresh_run(run.id).status == "paused"


def test_cancel_of_a_stuck_cancelling_run_forces_cancelled(app, mtasks, db):
    run = mtasks.run("ListTask")
    mtasks.cancel(run.id)
    _set(db, run.id, updated_at=utcnow() - timedelta(seconds=300))
    run = mtasks.cancel(run.id)
    assert run.status == "cancelled"
    assert run.ended_at is not None


def test_cancel_of_a_stuck_running_run_forces_cancelled(app, mtasks, db):
    run = mtasks.run("ListTask")
    _set(db, run.id, status="running", updated_at=utcnow() - timedelta(seconds=600))
    assert mtasks.cancel(run.id).status == "cancelled"
    # The task may start again.
    mtasks.run("ListTask")


def test_a_recent_cancelling_run_is_not_forced(app, mtasks, db):
    run = mtasks.run("ListTask")
    mtasks.cancel(run.id)
    _set(db, run.id, updated_at=utcnow() - timedelta(seconds=299))
    assert mtasks.cancel(run.id).status == "cancelling"


def test_resume_of_a_paused_run_enqueues_it_with_a_new_job(app, mtasks):
    run = mtasks.run("ListTask")
    mtasks.pause(run.id)
    drain(app)
    old_job = fresh_run(run.id).job_id
    resumed = mtasks.resume(run.id)
    assert resumed.status == "enqueued"
    assert resumed.job_id != old_job
    drain(app)
    assert fresh_run(run.id).status == "succeeded"


def test_a_double_resume_enqueues_once(app, mtasks):
    run = mtasks.run("ListTask")
    mtasks.pause(run.id)
    drain(app)
    mtasks.resume(run.id)
    with pytest.raises(InvalidTransition, match="Cannot resume an enqueued run."):
        mtasks.resume(run.id)


def test_resume_is_refused_while_another_run_of_the_task_is_active(app, mtasks, db):
    run = mtasks.run("ListTask")
    mtasks.pause(run.id)
    drain(app)
    mtasks.cancel(run.id)
    other = mtasks.run("ListTask")
    _set(db, run.id, status="errored")
    with pytest.raises(TaskAlreadyRunning, match=f"run #{other.id}"):
        mtasks.resume(run.id)
    assert fresh_run(run.id).status == "errored"


def test_metadata_is_stored_on_the_run(app, mtasks):
    run = mtasks.run("OnceTask", metadata={"user": "ada@example.com"})
    assert fresh_run(run.id).metadata_ == {"user": "ada@example.com"}


def test_a_resumed_run_keeps_its_total_and_sheds_its_old_error(app, mtasks, db):
    from tests.testapp import Item

    seed_items(30)
    db.session.execute(sa.update(Item).where(Item.id == 17).values(title="bad"))
    db.session.commit()
    configure(app, ticker_delay=0.0)
    run = mtasks.run("CountItemsTask", arguments={"fail_on": "bad"})
    drain(app)
    errored = fresh_run(run.id)
    assert (errored.status, errored.tick_count, errored.tick_total) == ("errored", 16, 30)
    db.session.execute(sa.update(Item).where(Item.id == 17).values(title="good"))
    db.session.commit()
    resumed = mtasks.resume(run.id)
    assert resumed.error_class is None and resumed.errored_element is None
    drain(app)
    done = fresh_run(run.id)
    assert (done.status, done.tick_count, done.tick_total) == ("succeeded", 30, 30)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_a_number_that_json_cannot_hold_is_invalid_and_writes_nothing(app, mtasks, db, value):
    with pytest.raises(InvalidArguments, match="finite number") as caught:
        mtasks.run("WebFormKindsTask", {"note": "x", "ratio": value})
    assert set(caught.value.errors) == {"ratio"}
    assert _runs(db) == []


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"note": "\ud800"}, "note"),
        ({"note": "x", "tags": ["fine", "a\udcffb"]}, "tags"),
        ({"note": "x", "limits": {"\udced\udca0": 1}}, "limits"),
        ({"note": "x", "credentials": {"user": "u", "key": "\ud800"}}, "credentials"),
        ({"note": "x", "\ud800": 1}, "\\ud800"),
    ],
)
def test_text_that_is_not_utf8_is_invalid_and_writes_no_run(app, mtasks, db, arguments, field):
    with pytest.raises(InvalidArguments, match="lone surrogates") as caught:
        mtasks.run("WebFormKindsTask", arguments)
    assert caught.value.errors == {
        field: ["must be text without lone surrogates (it is not valid UTF-8)"]
    }
    str(caught.value).encode("utf-8")  # the message itself can be shown anywhere
    assert _runs(db) == []
