"""The iteration loop: ticks, slices, stops, errors, throttles and fencing."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from rq import Queue
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from flask_maintenance_tasks import signals
from flask_maintenance_tasks.job import perform_run
from tests.support.apps import configure
from tests.support.records import counters, fresh_run, seed_items
from tests.support.waiting import wait_until
from tests.support.workers import drain
from tests.testapp import Flag, Item
from tests.testapp.maintenance.kinds import EVENTS

# Both databases: the job loop's commits, reloads and fencing are SQL.
pytestmark = pytest.mark.both_databases


def test_a_backfill_changes_every_row_exactly_once(app, mtasks):
    seed_items(1050)
    run = mtasks.run("CountItemsTask")
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded"
    assert (run.tick_count, run.tick_total) == (1050, 1050)
    assert run.cursor == 1050
    assert run.started_at <= run.ended_at
    assert run.time_running > 0
    assert counters() == [1] * 1050


def test_every_collection_kind_runs_to_completion(app, mtasks, db):
    seed_items(25)
    names = ["CountItemsInBatchesTask", "CountByGroupTask", "ListTask", "OnceTask", "SquaresTask"]
    runs = [mtasks.run(name) for name in names]
    drain(app)
    results = {r.task_name: fresh_run(r.id) for r in runs}
    assert {name: r.status for name, r in results.items()} == dict.fromkeys(names, "succeeded")
    assert results["CountItemsInBatchesTask"].tick_total == 3  # ceil(25 / 10)
    assert results["CountByGroupTask"].cursor == [2, 23]
    assert results["OnceTask"].tick_count == 1
    assert db.session.get(Flag, "once").value == "done"
    assert EVENTS == ["a", "b", "c", "d", "e", 1, 4, 9, 16, 25]
    assert counters() == [2] * 25


def test_a_custom_count_sets_the_total(app, mtasks):
    seed_items(3)
    run = mtasks.run("CountWithCustomCountTask")
    drain(app)
    assert fresh_run(run.id).tick_total == 42


def test_a_time_slice_hands_the_run_to_a_new_job_without_repeating_items(app, mtasks, settings):
    seed_items(40)
    configure(app, max_job_runtime=0.15)
    slices: list[str] = []

    def interrupted(sender, run, payload) -> None:
        slices.append(run.interruption_reason)

    with signals.run_interrupted.connected_to(interrupted, app):
        run = mtasks.run("CountItemsTask", arguments={"sleep": 0.02})
        drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded"
    assert len(slices) >= 2
    assert set(slices) == {"time_slice"}
    assert run.interruption_reason is None
    assert counters() == [1] * 40


def test_callbacks_fire_and_reported_errors_do_not_stop_the_run(app, mtasks):
    reported = []

    def handler(error, context) -> None:
        reported.append((type(error).__name__, context["errored_element"]))

    configure(app, error_handler=handler)
    run = mtasks.run("CallbacksTask")
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert EVENTS == ["start", ("process", 1), ("process", 3), "complete"]
    assert reported == [("KeyError", 2)]


def test_an_error_records_the_item_the_exception_and_the_last_committed_cursor(app, mtasks, db):
    seed_items(30)
    db.session.execute(sa.update(Item).where(Item.id == 17).values(title="bad"))
    db.session.commit()
    contexts = []
    configure(app, error_handler=lambda error, context: contexts.append(context))
    errored = []

    def on_error(sender, run, payload) -> None:
        errored.append(payload)

    with signals.run_errored.connected_to(on_error, app):
        run = mtasks.run("CountItemsTask", arguments={"fail_on": "bad"})
        drain(app)

    run = fresh_run(run.id)
    assert run.status == "errored"
    assert run.error_class == "ValueError"
    assert run.error_message == "cannot process item 17: its title is 'bad'"
    assert run.errored_element == {"class": "Item", "id": 17}
    assert run.ended_at is not None
    assert any("counting.py" in frame and "in process" in frame for frame in run.backtrace)
    assert not any("flask_maintenance_tasks" in frame for frame in run.backtrace)
    # Items 1..16 were in the same (uncommitted) tick as item 17: rolled back.
    assert run.cursor is None and run.tick_count == 0
    assert counters() == [0] * 30
    assert contexts[0]["task_name"] == "CountItemsTask"
    assert contexts[0]["errored_element"] == {"class": "Item", "id": 17}
    assert contexts[0]["source"] == "maintenance-tasks"
    assert errored[0]["error"]["class"] == "ValueError"


def test_resume_of_an_errored_run_retries_the_failed_item_first(app, mtasks, db):
    seed_items(30)
    db.session.execute(sa.update(Item).where(Item.id == 17).values(title="bad"))
    db.session.commit()
    run = mtasks.run("CountItemsTask", arguments={"fail_on": "bad"})
    drain(app)
    db.session.execute(sa.update(Item).where(Item.id == 17).values(title="good"))
    db.session.commit()
    mtasks.resume(run.id)
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded"
    assert run.tick_count == 30
    assert counters() == [1] * 30


def test_an_exception_in_after_complete_errors_the_run(app, mtasks):
    run = mtasks.run("ExplodingCallbackTask")
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "errored"
    assert run.error_message == "after_complete went wrong"


def test_a_slice_whose_job_id_no_longer_holds_the_run_writes_nothing(app, mtasks, db):
    seed_items(10)
    run = mtasks.run("CountItemsTask")
    perform_run(run.id, "some-other-job")
    run = fresh_run(run.id)
    assert (run.status, run.tick_count) == ("enqueued", 0)
    assert counters() == [0] * 10


def test_a_throttle_interrupts_the_run_and_schedules_the_next_slice(app, mtasks, db):
    seed_items(20)
    db.session.add(Flag(name="busy", value="yes"))
    db.session.commit()
    run = mtasks.run("ThrottledCountTask")
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "interrupted", (run.error_class, run.error_message)
    assert run.interruption_reason == "throttle"
    executor = app.extensions["maintenance_tasks"].executor
    registry = ScheduledJobRegistry(
        queue=Queue(executor.queue_name, connection=executor.connection)
    )
    assert registry.get_job_ids() == [run.job_id]

    db.session.execute(sa.delete(Flag))
    db.session.commit()
    scheduler = RQScheduler([executor.queue_name], connection=executor.connection)
    scheduler.acquire_locks()

    def moved_to_queue() -> bool:
        scheduler.enqueue_scheduled_jobs()
        return not registry.get_job_ids()

    wait_until(moved_to_queue, 10, "the backoff to pass")
    scheduler.release_locks()
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 20


def test_pause_mid_run_on_the_in_process_executor_then_resume(inprocess_app, mtasks):
    seed_items(200)
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.005})
    wait_until(lambda: fresh_run(run.id).tick_count > 10, 20, "progress")
    mtasks.pause(run.id)
    wait_until(lambda: fresh_run(run.id).status == "paused", 20, "the pause")
    paused = fresh_run(run.id)
    assert 10 < paused.tick_count < 200
    assert sum(counters()) == paused.tick_count
    assert paused.interruption_reason == "pause"
    mtasks.resume(run.id)
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 30, "the resumed run")
    assert counters() == [1] * 200


def test_cancel_mid_run_on_the_in_process_executor_stops_at_the_cursor(inprocess_app, mtasks):
    seed_items(200)
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.005})
    wait_until(lambda: fresh_run(run.id).tick_count > 10, 20, "progress")
    mtasks.cancel(run.id)
    wait_until(lambda: fresh_run(run.id).status == "cancelled", 20, "the cancel")
    run = fresh_run(run.id)
    assert counters() == [1] * run.cursor + [0] * (200 - run.cursor)


class _Statements:
    """Counts statements on the app's engine, split by whether they touch our tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.framework = 0
        self.other = 0
        self.engine = engine
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, conn, cursor, statement, parameters, context, executemany) -> None:
        # The runs table, and the audit trail written with each status change.
        if "maintenance_tasks_runs" in statement or "maintenance_tasks_events" in statement:
            self.framework += 1
        else:
            self.other += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._count)


@pytest.mark.parametrize("settings", [{}], indirect=False)
@pytest.mark.parametrize("task", ["CountItemsTask", "PublishEveryItemTask"])
def test_the_framework_issues_no_statement_per_item(app, mtasks, db, settings, task):
    """Default ticker and reload settings (1 s), batch size 100, 1,500 items over ~1.5 s.

    A task publishing its status at every item (``self.status``) costs nothing more:
    the mapping rides on each tick's UPDATE.
    """
    seed_items(1500)
    run = mtasks.run(task, arguments={"sleep": 0.001})
    counter = _Statements(db.engine)
    started = time.monotonic()
    try:
        drain(app)
    finally:
        counter.close()
    elapsed = time.monotonic() - started
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 1500
    seconds = int(elapsed) + 1
    # Start (load, count's ORM-free COUNT is not ours, mark running and its
    # event, reloads) and end (flush, succeed and its event): a constant; then
    # one UPDATE per tick and one SELECT per status reload, each at most once
    # per second.
    print(f"framework statements: {counter.framework} in {elapsed:.2f}s")
    assert counter.framework <= 12 + 2 * seconds, (counter.framework, elapsed)
    if task == "PublishEveryItemTask":
        assert fresh_run(run.id).published == {"count": 1500, "last_id": 1500}


def test_an_in_batches_update_does_not_fetch_the_changed_keys_back(app, mtasks, db):
    """The batch names mapped attributes, so the ORM synchronises the session by evaluation."""
    seed_items(25)
    run = mtasks.run("CountItemsInBatchesTask", arguments={"of": 10})
    updates: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("UPDATE items"):
            updates.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        drain(app)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 25
    assert len(updates) == 3
    assert not [u for u in updates if "RETURNING" in u.upper()]
