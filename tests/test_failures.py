"""Failures as data: the error policies, the failure ledger, its limits, and retries.

Every test runs on SQLite and PostgreSQL: what is tested is SQL (savepoints,
the ledger written in a tick's transaction, the retry's lookups by key).
"""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import (
    CannotRetry,
    Failure,
    InvalidArguments,
    MaintenanceTasksError,
    TaskAlreadyRunning,
    signals,
)
from flask_maintenance_tasks.models import Run
from tests.support.csv_files import write
from tests.support.records import counters, fresh_run, seed_items, trail
from tests.support.workers import drain
from tests.testapp import Flag, Item, db
from tests.testapp.maintenance.kinds import EVENTS

pytestmark = pytest.mark.both_databases


def make_bad(*ids: int) -> None:
    db.session.execute(sa.update(Item).where(Item.id.in_(ids)).values(title="bad"))
    db.session.commit()


def fix_all() -> None:
    db.session.execute(sa.update(Item).where(Item.title == "bad").values(title="fixed"))
    db.session.commit()


def ledger(run_id: int) -> list[Failure]:
    db.session.remove()
    return list(
        db.session.scalars(sa.select(Failure).where(Failure.run_id == run_id).order_by(Failure.id))
    )


def runs_count() -> int:
    db.session.remove()
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(Run)) or 0)


def test_skip_records_every_bad_row_and_undoes_exactly_its_writes(app, mtasks):
    """3,000 rows, every 97th bad: the run succeeds, the bad rows are in the ledger, each
    good row changed once, each bad row unchanged (its flushed write undone)."""
    seed_items(3_000)
    bad = list(range(97, 3_001, 97))
    make_bad(*bad)
    run = mtasks.run("SkipBadItemsTask")
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded", run.error_message
    assert run.tick_count == 3_000
    assert run.failure_count == len(bad) == 30
    failures = ledger(run.id)
    assert [f.item_key for f in failures] == bad
    assert {f.error_class for f in failures} == {"BadItem"}
    assert failures[0].message == "item 97 is bad"
    assert failures[0].item == {"class": "Item", "id": 97}
    assert {f.status for f in failures} == {"unresolved"}
    assert all(f.attempt == 1 for f in failures)
    assert failures[0].backtrace and "failing.py" in failures[0].backtrace[-1]
    bad_set = set(bad)
    assert counters() == [0 if n in bad_set else 1 for n in range(1, 3_001)]


def test_stop_errors_at_the_first_failure_and_records_nothing(app, mtasks):
    seed_items(30)
    make_bad(12)
    run = mtasks.run("StopOnBadItemsTask")
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "errored"
    assert run.error_class == "BadItem"
    assert run.failure_count == 0
    assert ledger(run.id) == []
    assert counters()[11:] == [0] * 19


def test_a_run_overrides_the_task_policy(app, mtasks):
    seed_items(30)
    make_bad(12, 20)
    run = mtasks.run("StopOnBadItemsTask", error_policy="skip")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.error_policy, run.failure_count) == ("succeeded", "skip", 2)
    stopped = mtasks.run("SkipBadItemsTask", error_policy="stop")
    drain(app)
    assert fresh_run(stopped.id).status == "errored"


def test_passing_max_failures_errors_the_run_after_recording_the_failure(app, mtasks):
    seed_items(40)
    make_bad(5, 10, 15, 20)
    run = mtasks.run("LimitedSkipTask")
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "errored"
    assert run.error_class == "TooManyFailures"
    assert "3 items failed, more than max_failures (2)" in run.error_message
    assert run.failure_count == 3
    assert [f.item_key for f in ledger(run.id)] == [5, 10, 15]
    assert run.errored_element == {"class": "Item", "id": 15}
    # Up to the third failure the good items were kept; nothing after it ran.
    assert counters()[:15] == [1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0]
    assert counters()[15:] == [0] * 25
    assert run.cursor == 15


def test_a_failure_rate_counts_against_at_least_a_hundred_items(app, mtasks):
    seed_items(300)
    make_bad(*range(1, 6))  # five early failures: 5 <= 5% of 100
    run = mtasks.run("SkipBadItemsTask", max_failure_rate="5%")
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    make_bad(*range(100, 120))
    again = mtasks.run("SkipBadItemsTask", max_failure_rate=0.05)
    drain(app)
    again = fresh_run(again.id)
    assert again.status == "errored"
    assert "more than max_failure_rate (5.0%)" in again.error_message
    assert again.failure_count == 6  # 6 > 5% of max(105, 100)


def test_report_on_errors_are_recorded_under_stop(app, mtasks):
    seed_items(20)
    make_bad(3, 4)
    run = mtasks.run("ReportBadItemsTask")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.failure_count) == ("succeeded", 2)
    assert [f.item_key for f in ledger(run.id)] == [3, 4]


def test_a_failing_batch_is_recorded_with_its_first_and_last_keys(app, mtasks):
    seed_items(35)
    make_bad(17)
    run = mtasks.run("SkipBadBatchesTask")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.failure_count) == ("succeeded", 1)
    (failure,) = ledger(run.id)
    assert failure.item_key == {"first": 11, "last": 20}
    assert failure.item["class"] == "Batch"
    assert counters() == [1] * 10 + [0] * 10 + [1] * 15
    fix_all()
    retry = mtasks.retry_failures(run.id)
    drain(app)
    assert fresh_run(retry.id).status == "succeeded"
    assert counters() == [1] * 35
    assert [f.status for f in ledger(run.id)] == ["resolved"]


def test_retrying_after_fixing_the_data_resolves_every_failure(app, mtasks):
    seed_items(500)
    bad = list(range(7, 501, 7))
    make_bad(*bad)
    run = mtasks.run("SkipBadItemsTask")
    drain(app)
    assert fresh_run(run.id).failure_count == len(bad)
    fix_all()
    retry = mtasks.retry_failures(run.id, actor="ops")
    assert retry.retry_of_id == run.id
    drain(app)
    retry = fresh_run(retry.id)
    assert retry.status == "succeeded"
    assert (retry.tick_total, retry.tick_count, retry.failure_count) == (len(bad), len(bad), 0)
    failures = ledger(run.id)
    assert {f.status for f in failures} == {"resolved"}
    assert {f.retried_by_id for f in failures} == {retry.id}
    assert all(f.resolved_at is not None for f in failures)
    assert counters() == [1] * 500
    assert ("failures_retried", "done", "ops") in trail(run.id)
    with pytest.raises(CannotRetry, match="no unresolved failed items"):
        mtasks.retry_failures(run.id)


def test_items_failing_again_are_recorded_on_the_retry(app, mtasks):
    seed_items(50)
    make_bad(10, 20, 30)
    run = mtasks.run("SkipBadItemsTask")
    drain(app)
    db.session.execute(sa.update(Item).where(Item.id == 20).values(title="fixed"))
    db.session.execute(sa.delete(Item).where(Item.id == 30))
    db.session.commit()
    retry = mtasks.retry_failures(run.id)
    drain(app)
    retry = fresh_run(retry.id)
    assert (retry.status, retry.failure_count) == ("succeeded", 1)
    assert [(f.item_key, f.status) for f in ledger(run.id)] == [
        (10, "failed_again"),
        (20, "resolved"),
        (30, "gone"),
    ]
    (again,) = ledger(retry.id)
    assert (again.item_key, again.attempt, again.status) == (10, 2, "unresolved")
    fix_all()
    third = mtasks.retry_failures(retry.id)
    drain(app)
    assert fresh_run(third.id).status == "succeeded"
    assert [f.status for f in ledger(retry.id)] == ["resolved"]


def test_retrying_a_sequence_finds_items_by_index(app, mtasks):
    db.session.add(Flag(name="every", value="7"))
    db.session.commit()
    run = mtasks.run("SkipBadNumbersTask")
    drain(app)
    assert [f.item_key for f in ledger(run.id)] == [6, 13, 20, 27]  # indexes of 7, 14, 21, 28
    db.session.get(Flag, "every").value = "0"
    db.session.commit()
    EVENTS.clear()
    retry = mtasks.retry_failures(run.id)
    drain(app)
    assert fresh_run(retry.id).status == "succeeded"
    assert EVENTS == [7, 14, 21, 28]


@pytest.mark.parametrize("task", ["SkipBadRowsTask", "SkipBadRowBatchesTask"])
def test_retrying_csv_rows_reads_them_again_from_the_same_file(app, mtasks, tmp_path, task):
    lines = ["id,title,password"] + [
        f"{n},{'bad' if n in (3, 12) else 'ok'},hunter{n}2" for n in range(1, 16)
    ]
    path = write(tmp_path, "items.csv", "\n".join(lines) + "\n")
    run = mtasks.run(task, csv_file=path)
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded"
    failures = ledger(run.id)
    if task == "SkipBadRowsTask":
        assert [f.item_key for f in failures] == [3, 12]
        assert failures[0].item["values"]["password"] == "[FILTERED]"
        assert failures[0].item["values"]["title"] == "bad"
    else:
        expected = [{"first": 1, "last": 5}, {"first": 11, "last": 15}]
        assert [f.item_key for f in failures] == expected
    db.session.add(Flag(name="fixed", value="1"))
    db.session.commit()
    retry = mtasks.retry_failures(run.id)
    drain(app)
    assert fresh_run(retry.id).status == "succeeded"
    assert {f.status for f in ledger(run.id)} == {"resolved"}
    db.session.remove()
    assert sorted(db.session.scalars(sa.select(Item.id))) == list(range(1, 16))


def test_an_enumerator_without_lookup_cannot_be_retried_and_says_so(app, mtasks):
    seed_items(10)
    make_bad(4)
    run = mtasks.run("SkipWalkingTask")
    drain(app)
    before = runs_count()
    with pytest.raises(CannotRetry, match=r"define lookup\(self, keys\)"):
        mtasks.retry_failures(run.id)
    assert runs_count() == before
    refused = [entry for entry in trail(run.id) if entry[0] == "failures_retried"]
    assert refused and refused[0][1] == "refused"

    with_lookup = mtasks.run("SkipWalkingWithLookupTask")
    drain(app)
    fix_all()
    retry = mtasks.retry_failures(with_lookup.id)
    drain(app)
    assert fresh_run(retry.id).status == "succeeded"
    assert [f.status for f in ledger(with_lookup.id)] == ["resolved"]


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"error_policy": "ignore"}, "error_policy", "unknown error policy 'ignore'"),
        ({"max_failures": -1}, "max_failures", "whole number, 0 or more"),
        ({"max_failures": "ten"}, "max_failures", "whole number, 0 or more"),
        ({"max_failure_rate": 0}, "max_failure_rate", "above 0 and at most 1"),
        ({"max_failure_rate": "120%"}, "max_failure_rate", "above 0 and at most 1"),
        ({"max_failure_rate": float("nan")}, "max_failure_rate", "above 0 and at most 1"),
    ],
)
def test_bad_policy_options_are_refused_and_change_nothing(app, mtasks, options, field, message):
    before = runs_count()
    with pytest.raises(InvalidArguments) as refused:
        mtasks.run("SkipBadItemsTask", **options)
    assert message in refused.value.errors[field][0]
    assert runs_count() == before


def test_retries_that_cannot_start_change_nothing(app, mtasks):
    seed_items(10)
    clean = mtasks.run("SkipBadItemsTask")
    drain(app)
    before = runs_count()
    with pytest.raises(CannotRetry, match="no unresolved failed items"):
        mtasks.retry_failures(clean.id)
    with pytest.raises(MaintenanceTasksError, match="Run #999999 not found"):
        mtasks.retry_failures(999_999)
    make_bad(2)
    failed = mtasks.run("SkipBadItemsTask")
    drain(app)
    db.session.execute(sa.update(Run).where(Run.id == failed.id).values(task_name="DeletedTask"))
    db.session.commit()
    with pytest.raises(MaintenanceTasksError, match="Task 'DeletedTask' not found"):
        mtasks.retry_failures(failed.id)
    assert runs_count() == before + 1


def test_a_run_still_active_cannot_have_its_failures_retried(app, mtasks):
    seed_items(10)
    make_bad(2)
    run = mtasks.run("SkipBadItemsTask")
    drain(app)
    db.session.execute(sa.update(Run).where(Run.id == run.id).values(status="running"))
    db.session.commit()
    with pytest.raises(CannotRetry, match="it is running"):
        mtasks.retry_failures(run.id)


def test_item_failed_is_sent_after_the_tick_commits_with_masked_items(app, mtasks):
    seed_items(12)
    make_bad(6)
    seen: list[dict[str, t.Any]] = []

    def receiver(sender, run, item, error):
        stored = db.session.scalar(sa.select(sa.func.count()).select_from(Failure))
        seen.append({"run": run.id, "item": item, "error": str(error), "stored": stored})

    signals.item_failed.connect(receiver, app)
    try:
        run = mtasks.run("SkipBadItemsTask", {"token": "s3cret-value"})
        drain(app)
    finally:
        signals.item_failed.disconnect(receiver, app)
    assert seen == [
        {
            "run": run.id,
            "item": {"class": "Item", "id": 6},
            "error": "item 6 is bad s3cret-value",
            "stored": 1,
        }
    ]
    (failure,) = ledger(run.id)
    assert failure.message == "item 6 is bad [FILTERED]"


def test_the_exclusive_key_still_guards_a_retry(app, mtasks):
    seed_items(10)
    make_bad(2)
    run = mtasks.run("SkipBadItemsTask")
    drain(app)
    mtasks.run("SkipBadItemsTask")  # enqueued, not drained: the task is busy
    with pytest.raises(TaskAlreadyRunning):
        mtasks.retry_failures(run.id)


def test_interrupted_after_every_few_items_the_ledger_holds_each_failure_once(app):
    from flask_maintenance_tasks.testing import retry_task_failures, run_task_interrupted

    seed_items(60)
    make_bad(5, 6, 30, 59)
    run = run_task_interrupted("SkipBadItemsTask", every=4)
    assert (run.status, run.failure_count) == ("succeeded", 4)
    assert [f.item_key for f in ledger(run.id)] == [5, 6, 30, 59]
    assert counters() == [0 if n in (5, 6, 30, 59) else 1 for n in range(1, 61)]
    fix_all()
    retry = retry_task_failures(run.id)
    assert (retry.status, retry.tick_count) == ("succeeded", 4)
    assert counters() == [1] * 60


def test_a_second_retry_waits_for_the_first_to_stop(app, mtasks):
    seed_items(10)
    make_bad(3)
    run = mtasks.run("SkipBadItemsTask")
    drain(app)
    first = mtasks.retry_failures(run.id)  # enqueued, not drained
    # Free the task's exclusive key: the refusal must come from the active retry itself.
    db.session.execute(sa.update(Run).where(Run.id == first.id).values(exclusive_key=None))
    db.session.commit()
    before = runs_count()
    with pytest.raises(CannotRetry, match=f"run #{first.id} is retrying them already"):
        mtasks.retry_failures(run.id)
    assert runs_count() == before


def test_a_large_item_is_described_in_at_most_two_thousand_characters(app, mtasks):
    from flask_maintenance_tasks.sources.base import DESCRIPTION_LIMIT, Source

    described = Source(t.cast(t.Any, None)).describe({"text": "x" * 10_000})
    assert isinstance(described, str) and len(described) <= DESCRIPTION_LIMIT + 6


def test_a_retry_finds_items_by_a_two_column_cursor(app, mtasks):
    seed_items(40)
    make_bad(4, 17, 30)
    run = mtasks.run("SkipBadByGroupTask")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.failure_count) == ("succeeded", 3)
    # Items in (group, id) order: group is the id modulo 3.
    assert [f.item_key for f in ledger(run.id)] == [[0, 30], [1, 4], [2, 17]]
    fix_all()
    retry = mtasks.retry_failures(run.id)
    drain(app)
    assert (fresh_run(retry.id).status, fresh_run(retry.id).tick_count) == ("succeeded", 3)
    assert [f.status for f in ledger(run.id)] == ["resolved"] * 3
    assert counters() == [1] * 40


def test_a_task_rolling_the_session_back_errors_the_run_before_losing_items(app, mtasks):
    seed_items(12)
    make_bad(5)
    run = mtasks.run("RollbackThenRaiseTask")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.error_class) == ("errored", "SessionRolledBack")
    assert run.errored_element == {"class": "Item", "id": 5}
    assert run.failure_count == 0 and ledger(run.id) == []
    # Nothing of the tick was committed: the cursor stays before the items it lost.
    done = counters()
    assert run.cursor is None or done[: run.cursor] == [1] * run.cursor
    assert done[run.cursor or 0 :] == [0] * (12 - (run.cursor or 0))


def test_an_exception_that_cannot_say_what_it_is_is_still_recorded(app, mtasks):
    seed_items(6)
    make_bad(3)
    skipped = mtasks.run("OddErrorsTask", error_policy="skip")
    drain(app)
    stopped = mtasks.run("OddErrorsTask", {"kind": "unprintable"}, error_policy="stop")
    drain(app)
    skipped, stopped = fresh_run(skipped.id), fresh_run(stopped.id)
    assert (skipped.status, skipped.failure_count) == ("succeeded", 1)
    assert ledger(skipped.id)[0].message == "<Unprintable whose message could not be read>"
    assert (stopped.status, stopped.error_class) == ("errored", "Unprintable")


def test_a_base_exception_of_a_task_errors_the_run(app, mtasks):
    seed_items(6)
    make_bad(3)
    run = mtasks.run("OddErrorsTask", {"kind": "halt"}, error_policy="skip")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.error_class, run.error_message) == ("errored", "Halt", "halt")


def test_failures_of_another_kind_of_collection_cannot_be_retried(app, mtasks):
    seed_items(6)
    make_bad(2)
    run = mtasks.run("SkipBadItemsTask")
    drain(app)
    assert ledger(run.id)[0].kind == "records"
    db.session.execute(sa.update(Failure).where(Failure.run_id == run.id).values(kind="sequence"))
    db.session.commit()
    before = runs_count()
    with pytest.raises(CannotRetry, match="of kind sequence, and SkipBadItemsTask's collection"):
        mtasks.retry_failures(run.id)
    assert runs_count() == before


def test_counts_are_whole_ascii_numbers(app, mtasks):
    for text in ("１２", "²"):
        with pytest.raises(InvalidArguments) as refused:
            mtasks.run("SkipBadItemsTask", max_failures=text)
        assert refused.value.errors["max_failures"] == ["must be a whole number, 0 or more"]
