"""Partitioned runs: the collection cut into ranges, each walked by its own jobs, one run.

Both databases: the cut is made by queries (quantiles, windows) and the
partitions' ticks write their run's row.
"""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import InvalidArguments, Run
from flask_maintenance_tasks.testing import run_task
from tests.support.records import counters, fresh_run, seed_items
from tests.testapp import Item, db

pytestmark = pytest.mark.both_databases


def partitions_of(run_id: int) -> list[Run]:
    db.session.remove()
    return list(
        db.session.scalars(sa.select(Run).where(Run.parent_id == run_id).order_by(Run.partition))
    )


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_every_row_once_whatever_the_partitions(app, mtasks, count):
    seed_items(50)
    # Gaps in the keys: every third row is gone.
    db.session.execute(sa.delete(Item).where(Item.id % 3 == 0))
    db.session.commit()
    run = run_task("CountItemsTask", partitions=count)
    assert run.status == "succeeded", run.error_message
    assert set(counters()) == {1}
    assert run.tick_count == len(counters())
    children = partitions_of(run.id)
    assert len(children) == (count if count > 1 else 0)
    if count > 1:
        assert sum(child.tick_count for child in children) == run.tick_count
        assert all(child.status == "succeeded" for child in children)


def test_a_composite_cursor_with_duplicates_in_its_leading_column(app, mtasks):
    seed_items(40)  # groups 0, 1 and 2: the leading column repeats
    db.session.execute(sa.update(Item).where(Item.id == 7).values(title="skip"))
    db.session.commit()
    for count in (2, 3, 8):
        run = run_task("CountByGroupTask", partitions=count)
        assert run.status == "succeeded", run.error_message
        children = partitions_of(run.id)
        # The ranges end at whole keys (group, id), not at a group.
        cuts = [child.bounds["until"] for child in children[:-1]]
        assert all(isinstance(cut, list) and len(cut) == 2 for cut in cuts)
        assert cuts == sorted(cuts)
    assert counters() == [0 if n == 7 else 3 for n in range(1, 41)]


def test_fewer_rows_than_partitions(app, mtasks):
    seed_items(3)
    run = run_task("CountItemsTask", partitions=8)
    assert run.status == "succeeded", run.error_message
    assert counters() == [1, 1, 1]
    children = partitions_of(run.id)
    assert [child.tick_count for child in children] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert run.tick_total == 3


def test_no_rows_at_all(app, mtasks):
    run = run_task("CountItemsTask", partitions=4)
    assert run.status == "succeeded"
    assert run.tick_count == 0
    assert len(partitions_of(run.id)) == 4


def test_ranges_hold_similar_numbers_of_rows(app, mtasks):
    seed_items(1000)
    db.session.execute(sa.delete(Item).where(Item.id.between(100, 400)))
    db.session.commit()
    run = run_task("CountItemsTask", partitions=4)
    totals = [child.tick_total for child in partitions_of(run.id)]
    assert totals == [child.tick_count for child in partitions_of(run.id)]
    assert max(totals) - min(totals) <= 1
    assert sum(totals) == 699 == run.tick_count == run.tick_total


def test_batches_are_cut_by_keys(app, mtasks):
    seed_items(31)
    run = run_task("PartitionedBatchesTask")
    assert run.status == "succeeded", run.error_message
    assert counters() == [1] * 31
    children = partitions_of(run.id)
    assert len(children) == 3
    assert run.tick_count == sum(child.tick_count for child in children) == run.tick_total


def test_a_list_is_cut_by_index(app, mtasks):
    from tests.testapp.maintenance.kinds import EVENTS

    EVENTS.clear()
    run = run_task("PartitionedListTask")
    assert run.status == "succeeded"
    numbers = sorted(number for _, number, _ in EVENTS)
    assert numbers == list(range(100, 123))
    # Each partition knew its place.
    assert {index for _, _, index in EVENTS} == {0, 1, 2, 3, 4}
    assert run.tick_count == 23


def test_a_task_may_cut_its_own_ranges(app, mtasks):
    from tests.testapp.maintenance.kinds import EVENTS

    EVENTS.clear()
    run = run_task("RangedSquaresTask")
    assert run.status == "succeeded", run.error_message
    assert sorted(square for _, square in EVENTS) == [n * n for n in range(1, 21)]
    children = partitions_of(run.id)
    assert [child.bounds["range"] for child in children] == [[1, 7], [7, 14], [14, 21]]


@pytest.mark.parametrize("partitions", [0, -1, 17, "two", 2.5, True, "9" * 5000, "\u0664"])
def test_bad_numbers_of_partitions_are_refused_and_nothing_is_written(app, mtasks, partitions):
    seed_items(5)
    with pytest.raises(InvalidArguments) as caught:
        mtasks.run("CountItemsTask", partitions=partitions)
    assert "partitions" in caught.value.errors
    db.session.remove()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


@pytest.mark.parametrize("given", ["3", " 3 ", "0000003", "0" * 5000 + "3"])
def test_a_number_of_partitions_as_text_is_read_as_the_form_reads_it(app, mtasks, given):
    from flask_maintenance_tasks.state import get_state
    from flask_maintenance_tasks.web import forms

    assert mtasks.run("CountItemsTask", partitions=given).partitions == 3
    task = get_state().registry.get("CountItemsTask")
    assert forms.partitions_from(task, {forms.PARTITIONS_FIELD: given}, 16) == (3, {})


def test_a_task_that_cannot_be_cut_is_refused(app, mtasks):
    with pytest.raises(InvalidArguments) as caught:
        mtasks.run("UncuttableTask", partitions=2)
    message = caught.value.errors["partitions"][0]
    assert "partition_ranges" in message
    db.session.remove()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0
    # One partition is today's engine: allowed.
    assert run_task("UncuttableTask", partitions=1).status == "succeeded"


def test_a_partition_that_errors_errors_the_run_naming_it_and_resume_finishes(app, mtasks):
    from flask_maintenance_tasks.testing import resume_task

    seed_items(40)
    run = run_task("PartitionedCountTask", {"fail_on": "item-25"})
    assert run.status == "errored"
    assert run.error_class == "ValueError"
    assert run.error_message.startswith("Partition 3 of 4 errored: cannot process item 25")
    assert run.errored_element == {"class": "Item", "id": 25}
    children = partitions_of(run.id)
    assert [child.status for child in children][2] == "errored"
    # Nothing was processed twice, and the failing item's tick was undone.
    assert max(counters()) == 1
    assert counters()[24] == 0
    db.session.execute(sa.update(Item).where(Item.id == 25).values(title="fixed"))
    db.session.commit()
    run = resume_task(run.id)
    assert run.status == "succeeded", run.error_message
    assert counters() == [1] * 40
    assert run.tick_count == 40


def test_a_dry_run_cut_into_partitions_changes_nothing_and_counts_everything(app, mtasks):
    seed_items(30)
    run = run_task("CountItemsTask", partitions=3, dry_run=True)
    assert run.status == "succeeded", run.error_message
    assert counters() == [0] * 30
    from flask_maintenance_tasks.partitions import merged_changes

    merged = merged_changes(partitions_of(run.id))
    assert merged["tables"]["items"]["updated"] == 30
    assert run.changes["tables"]["items"]["updated"] == 30


def test_running_a_dry_run_for_real_keeps_its_partitions_unless_told(app, mtasks):
    from flask_maintenance_tasks import InvalidArguments

    seed_items(6)
    dry = run_task("CountItemsTask", partitions=3, dry_run=True)
    assert dry.status == "succeeded", dry.error_message
    with pytest.raises(InvalidArguments, match="partitions"):
        mtasks.run_for_real(dry.id, partitions=0)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1 + 3
    kept = mtasks.run_for_real(dry.id)
    assert (kept.dry_run, kept.partitions) == (False, 3)
    mtasks.cancel(kept.id)
    from flask_maintenance_tasks.job import perform_run

    perform_run(kept.id, fresh_run(kept.id).job_id)  # its job finds it cancelling
    assert fresh_run(kept.id).status == "cancelled"
    assert mtasks.run_for_real(dry.id, partitions=2).partitions == 2


def test_a_retry_of_a_partitioned_run_walks_every_failure_in_one_walk(app, mtasks):
    from flask_maintenance_tasks.testing import retry_task_failures

    seed_items(40)
    run = run_task("PartitionedCountTask", {"fail_on": "item-3"}, error_policy="skip")
    assert run.status == "succeeded"
    assert run.failure_count == 1
    assert len(mtasks.failures(run.id)) == 1
    db.session.execute(sa.update(Item).where(Item.id == 3).values(title="fixed"))
    db.session.commit()
    retry = retry_task_failures(run.id)
    assert retry.status == "succeeded"
    assert retry.partitions == 1
    assert counters() == [1] * 40


def _quoted_csv(rows: int) -> str:
    lines = ["id,title"]
    for n in range(1, rows + 1):
        if n % 4 == 0:
            lines.append(f'{n},"a title\nover two lines, {n}"')
        elif n % 7 == 0:
            lines.append("")  # a blank line: no row
            lines.append(f'{n},"say ""{n}"""')
        else:
            lines.append(f"{n},plain {n}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("count", [2, 3, 8])
def test_a_csv_file_is_cut_at_record_starts_keeping_row_numbers(app, mtasks, tmp_path, count):
    from tests.testapp.maintenance.kinds import EVENTS

    path = tmp_path / "quoted.csv"
    path.write_text(_quoted_csv(45))
    EVENTS.clear()
    whole = run_task("RecordRowsTask", csv_file=path)
    assert whole.status == "succeeded", whole.error_message
    expected = sorted(EVENTS, key=lambda row: row["row"])
    EVENTS.clear()
    run = run_task("RecordRowsTask", csv_file=path, partitions=count)
    assert run.status == "succeeded", run.error_message
    assert sorted(EVENTS, key=lambda row: row["row"]) == expected
    assert len(EVENTS) == 45 == run.tick_count == run.tick_total
    children = partitions_of(run.id)
    assert [child.tick_count for child in children] == [child.tick_total for child in children]


def test_a_partition_cannot_be_acted_on_alone(app, mtasks):
    from flask_maintenance_tasks import MaintenanceTasksError

    seed_items(10)
    run = run_task("PartitionedCountTask", {"fail_on": "item-9"})
    child = partitions_of(run.id)[0]
    for action in (mtasks.pause, mtasks.resume, mtasks.cancel, mtasks.retry_failures):
        with pytest.raises(MaintenanceTasksError, match=f"partition 1 of run #{run.id}"):
            action(child.id)
    assert partitions_of(run.id)[0].status == child.status


def test_the_run_sends_each_signal_once_with_its_partitions(app, mtasks):
    from flask_maintenance_tasks import signals

    seed_items(20)
    received: list[tuple[str, int, t.Any]] = []

    def receiver(name: str) -> t.Callable[..., None]:
        def receive(sender: t.Any, run: Run, payload: dict[str, t.Any]) -> None:
            received.append((name, run.id, payload.get("partitions")))

        return receive

    hooks = {name: receiver(name) for name in ("run_started", "run_succeeded")}
    for name, hook in hooks.items():
        getattr(signals, name).connect(hook, sender=app)
    try:
        run = run_task("PartitionedCountTask")
    finally:
        for name, hook in hooks.items():
            getattr(signals, name).disconnect(hook, sender=app)
    assert [(name, run_id) for name, run_id, _ in received] == [
        ("run_started", run.id),
        ("run_succeeded", run.id),
    ]
    finished = received[-1][2]
    assert [part["index"] for part in finished] == [0, 1, 2, 3]
    assert {part["status"] for part in finished} == {"succeeded"}
    assert sum(part["tick_count"] for part in finished) == 20


def test_a_collection_cut_by_the_task_itself_reads_its_range(app, mtasks):
    from tests.testapp.maintenance.kinds import EVENTS

    EVENTS.clear()
    run = run_task("ParityCutTask")
    assert (run.status, run.tick_count) == ("succeeded", 10)
    assert sorted(number for _, number, _ in EVENTS) == list(range(1, 11))
    assert {(number % 2, index) for _, number, index in EVENTS} == {(0, 0), (1, 1)}


def test_a_resumed_run_starts_again_as_any_run_does(app, mtasks):
    """after_start and run_started come again after a resume, once for the run."""
    from flask_maintenance_tasks import signals
    from flask_maintenance_tasks.testing import resume_task
    from tests.testapp import Flag

    seed_items(12)
    started: list[int] = []

    def receive(sender: t.Any, run: Run, payload: dict[str, t.Any]) -> None:
        started.append(run.id)

    signals.run_started.connect(receive, sender=app)
    try:
        run = run_task("PartitionedCountTask", {"fail_on": "item-11"})
        assert run.status == "errored" and started == [run.id]
        db.session.execute(sa.update(Item).where(Item.id == 11).values(title="fixed"))
        # after_start now fails: the resumed run errors with its message, its partitions stop.
        db.session.add(Flag(name="partitioned-start-fails", value="yes"))
        db.session.commit()
        before = [(child.status, child.tick_count) for child in partitions_of(run.id)]
        done = counters()
        run = resume_task(run.id)
        assert run.status == "errored"
        assert run.error_message == "after_start refuses"
        # As for any run, nothing is walked: its partitions stay as they were.
        assert [(child.status, child.tick_count) for child in partitions_of(run.id)] == before
        assert counters() == done
        assert started == [run.id]
        db.session.execute(sa.delete(Flag))
        db.session.commit()
        run = resume_task(run.id)
    finally:
        signals.run_started.disconnect(receive, sender=app)
    assert run.status == "succeeded", run.error_message
    assert started == [run.id, run.id]
    assert counters() == [1] * 12


def test_a_run_whose_after_complete_failed_is_finished_by_its_job_once_resumed(app, mtasks):
    """Resuming only enqueues: after_complete runs in a job, not in the caller's process."""
    from flask_maintenance_tasks.job import perform_run
    from tests.testapp import Flag
    from tests.testapp.maintenance.kinds import EVENTS

    seed_items(8)
    db.session.add(Flag(name="partitioned-complete-fails", value="yes"))
    db.session.commit()
    run = run_task("PartitionedCountTask")
    assert (run.status, run.error_message) == ("errored", "after_complete refuses")
    assert {child.status for child in partitions_of(run.id)} == {"succeeded"}
    db.session.execute(sa.delete(Flag))
    db.session.commit()
    EVENTS.clear()
    resumed = mtasks.resume(run.id)
    assert resumed.status == "enqueued"
    assert EVENTS == []
    perform_run(run.id, fresh_run(run.id).job_id)
    done = fresh_run(run.id)
    assert (done.status, done.tick_count, done.job_id) == ("succeeded", 8, done.job_id)
    assert EVENTS == [("completed", run.id, None)]
    assert counters() == [1] * 8


def test_a_resumed_run_whose_partition_fails_at_once_errors_again(app, mtasks):
    """A partition erroring before it claims its job is not resumed again and again."""
    from flask_maintenance_tasks.testing import resume_task
    from tests.testapp import Flag

    seed_items(12)
    run = run_task("PartitionedCountTask", {"fail_on": "item-11"})
    assert run.status == "errored"
    # Now the collection itself cannot be built: every partition fails before its walk.
    db.session.add(Flag(name="partitioned-broken", value="yes"))
    db.session.commit()
    run = resume_task(run.id)
    assert run.status == "errored"
    assert "collection is broken" in run.error_message
    db.session.execute(sa.delete(Flag))
    db.session.execute(sa.update(Item).where(Item.id == 11).values(title="fixed"))
    db.session.commit()
    run = resume_task(run.id)
    assert run.status == "succeeded", run.error_message
    assert counters() == [1] * 12


def test_a_nullable_cursor_column_cannot_be_cut(app, mtasks):
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    from flask_maintenance_tasks import Task
    from flask_maintenance_tasks.partitions import check_splittable

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes_never_created"
        id = mapped_column(sa.Integer, primary_key=True)
        tag = mapped_column(sa.String(20), nullable=True)

    class ByTagTask(Task):
        cursor_columns = ("tag",)
        collection = sa.select(Note)

        def process(self, note: Note) -> None:
            pass

    with pytest.raises(InvalidArguments) as caught:
        check_splittable(ByTagTask, {}, 2)
    assert "may hold NULL" in caught.value.errors["partitions"][0]
    check_splittable(ByTagTask, {}, 1)


def test_a_run_cancelled_while_a_partition_errors_ends_cancelled(app, mtasks, workers):
    from tests.support.records import fresh_run
    from tests.support.waiting import wait_until

    seed_items(200)
    workers.start()
    # One worker walks the partitions in turn: the second fails on its tenth item,
    # about 1.8 s in, and the cancel comes well before on a busy machine too.
    run = mtasks.run("PartitionedCountTask", {"sleep": 0.03, "fail_on": "item-60"})
    wait_until(lambda: fresh_run(run.id).tick_count >= 5, 60, "the run to make progress")
    mtasks.cancel(run.id)
    wait_until(lambda: fresh_run(run.id).ended_at is not None, 60, "the run to end")
    assert fresh_run(run.id).status == "cancelled"


@pytest.mark.parametrize("name", ["RowsCountTask", "RowsByGroupTask", "CoreRowsTask"])
@pytest.mark.parametrize("count", [2, 3])
def test_row_collections_are_cut_too(app, mtasks, name, count):
    seed_items(37)
    run = run_task(name, partitions=count)
    assert run.status == "succeeded", run.error_message
    expected = [0 if name == "CoreRowsTask" and n % 3 == 1 else 1 for n in range(1, 38)]
    assert counters() == expected
    assert run.tick_count == sum(expected) == run.tick_total
    assert len(partitions_of(run.id)) == count


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("partitions", [1, 2])
def test_a_lock_past_its_timeout_after_after_complete_does_not_call_it_again(
    app_env, monkeypatch, partitions
):
    """The run's last change waits for the lock again; after_complete is not called twice."""
    from tests.support.apps import make_app
    from tests.testapp.maintenance.kinds import EVENTS

    url = app_env["MTASKS_TEST_DATABASE_URL"]
    monkeypatch.setenv("MTASKS_TEST_DATABASE_URL", f"{url}?timeout=0.5")
    monkeypatch.delenv("MTASKS_TEST_REDIS_URL")
    with make_app():
        EVENTS.clear()
        run = run_task("LockOnCompleteTask", partitions=partitions)
        assert (run.status, run.tick_count) == ("succeeded", 4), run.error_message
        assert [event[0] for event in EVENTS] == ["completed"]


def test_a_settle_that_read_the_run_before_its_resume_leaves_the_resume_alone(app, mtasks):
    """A partition's settle may read the paused run just before the operator resumes it.

    It must not then take the resumed run, waiting for its own job, for a run whose
    partitions will not come, and pause it again: the resume would be lost.
    """
    from flask_maintenance_tasks import audit, partitions
    from flask_maintenance_tasks.state import get_state
    from flask_maintenance_tasks.store import open_session
    from tests.support.workers import drain

    seed_items(40)
    run = run_task("PartitionedCountTask", {"fail_on": "item-25"})
    assert run.status == "errored"
    db.session.execute(sa.update(Item).where(Item.id == 25).values(title="fixed"))
    db.session.commit()
    state = get_state()
    stale_children = partitions_of(run.id)  # read before the resume, as a late settle does

    resumed = mtasks.resume(run.id)
    assert resumed.status == "enqueued" and resumed.job_id is not None
    with open_session(state.db) as session:
        partitions._derive(state, session, run.id, stale_children, audit.worker())
    # Each stopped partition is asked again, against the run as it now stands.
    partitions.settle(state, run.id)
    after = fresh_run(run.id)
    assert (after.status, after.job_id) == ("enqueued", resumed.job_id)
    assert [child.status for child in partitions_of(run.id)][2] == "errored"

    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 40
