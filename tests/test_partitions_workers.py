"""Partitioned runs on real workers: side by side, paused, resumed and cancelled as one run.

Both databases: the partitions' jobs write from several processes at once.
"""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import Run
from tests.support.records import assert_trail_agrees, counters, fresh_run, seed_items, trail
from tests.support.waiting import wait_until
from tests.testapp import db

pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

ITEMS = 240


def partitions_of(run_id: int) -> list[Run]:
    db.session.remove()
    return list(
        db.session.scalars(sa.select(Run).where(Run.parent_id == run_id).order_by(Run.partition))
    )


def under_way(run_id: int, ticks: int = 20) -> None:
    def moved() -> bool:
        run = fresh_run(run_id)
        return run.status == "running" and run.tick_count >= ticks

    wait_until(moved, 60, "the partitioned run to make progress")


def test_partitions_run_side_by_side_and_end_as_one_run(app, mtasks, workers):
    seed_items(ITEMS)
    for _ in range(4):
        workers.start()
    run = mtasks.run("PartitionedCountTask", {"sleep": 0.01})
    # Several partitions make progress at the same time.
    wait_until(
        lambda: sum(child.tick_count > 0 for child in partitions_of(run.id)) >= 3,
        60,
        "three partitions to be under way at once",
    )
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 90, "the run to succeed")
    done = fresh_run(run.id)
    assert counters() == [1] * ITEMS
    assert done.tick_count == ITEMS == done.tick_total
    children = partitions_of(run.id)
    assert [child.status for child in children] == ["succeeded"] * 4
    # The run's time is its longest partition's, not their sum.
    assert done.time_running == pytest.approx(max(c.time_running for c in children), rel=0.01)
    assert_trail_agrees(run.id)


def test_pause_and_resume_act_on_every_partition(app, mtasks, workers):
    seed_items(ITEMS)
    workers.start()
    workers.start()
    # Slow enough (about 2.5 s in all) that the pause finds the run under way.
    run = mtasks.run("PartitionedCountTask", {"sleep": 0.02})
    under_way(run.id)
    mtasks.pause(run.id)
    wait_until(lambda: fresh_run(run.id).status == "paused", 60, "the run to pause")
    children = partitions_of(run.id)
    assert {child.status for child in children} <= {"paused", "succeeded"}
    paused_at = fresh_run(run.id).tick_count
    assert paused_at == sum(child.tick_count for child in children)
    assert 0 < paused_at < ITEMS
    mtasks.resume(run.id)
    try:
        wait_until(lambda: fresh_run(run.id).status == "succeeded", 90, "the run to succeed")
    except AssertionError as error:
        raise AssertionError(_where_it_stands(run.id, workers)) from error
    assert counters() == [1] * ITEMS
    assert fresh_run(run.id).tick_count == ITEMS
    assert_trail_agrees(run.id)


def _where_it_stands(run_id: int, workers: t.Any) -> str:
    """The run, its partitions, its trail and the workers' logs: what a time-out needs."""
    run = fresh_run(run_id)
    lines = [f"run #{run_id}: {run.status} job={run.job_id} ticks={run.tick_count}"]
    lines += [
        f"  partition {c.partition}: #{c.id} {c.status} job={c.job_id} ticks={c.tick_count}"
        for c in partitions_of(run_id)
    ]
    lines += [f"  {event}" for event in trail(run_id)]
    lines += [workers.log(process)[-6000:] for process in workers.processes]
    return "\n".join(lines)


def test_cancel_acts_on_every_partition(app, mtasks, workers):
    seed_items(ITEMS)
    workers.start()
    run = mtasks.run("PartitionedCountTask", {"sleep": 0.04})
    under_way(run.id)
    mtasks.cancel(run.id)
    wait_until(lambda: fresh_run(run.id).status == "cancelled", 60, "the run to cancel")
    children = partitions_of(run.id)
    assert {child.status for child in children} <= {"cancelled", "succeeded"}
    assert "cancelled" in {child.status for child in children}
    assert max(counters()) == 1
    assert fresh_run(run.id).tick_count == sum(counters())
    assert_trail_agrees(run.id)


def test_a_partition_that_errors_stops_the_others_at_their_last_tick(app, mtasks, workers):
    seed_items(ITEMS)
    for _ in range(4):
        workers.start()
    run = mtasks.run("PartitionedCountTask", {"sleep": 0.01, "fail_on": f"item-{ITEMS // 4 + 30}"})
    wait_until(lambda: fresh_run(run.id).status == "errored", 90, "the run to error")
    errored = fresh_run(run.id)
    assert errored.error_message.startswith("Partition 2 of 4 errored")
    children = partitions_of(run.id)
    assert children[1].status == "errored"
    assert {child.status for child in children} <= {"errored", "paused", "succeeded"}
    # Every other partition committed what it did before stopping: counters match ticks.
    assert errored.tick_count == sum(counters())
    assert max(counters()) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_partitions_that_wait_in_vain_for_sqlites_lock_retry_their_tick(app, mtasks, workers):
    # A busy timeout of 0.05 s: a partition's tick holds SQLite's write lock
    # for about 0.2 s, so the others wait for it in vain, again and again.
    workers.env["MTASKS_TEST_DATABASE_URL"] += "?timeout=0.05"
    seed_items(ITEMS)
    started = [workers.start() for _ in range(3)]
    run = mtasks.run("PartitionedCountTask", {"sleep": 0.005})
    try:
        wait_until(lambda: fresh_run(run.id).status == "succeeded", 120, "the run to succeed")
    except AssertionError as error:
        raise AssertionError(_where_it_stands(run.id, workers)) from error
    assert counters() == [1] * ITEMS
    assert fresh_run(run.id).tick_count == ITEMS
    assert "(database_locked); handed on" in "".join(workers.log(w) for w in started)
    assert_trail_agrees(run.id)


def test_partitions_pass_a_failure_limit_together_by_at_most_one_failure_each(app, mtasks, workers):
    seed_items(ITEMS)
    for _ in range(4):
        workers.start()
    run = mtasks.run(
        "PartitionedCountTask",
        {"sleep": 0.005, "fail_every": 3},
        error_policy="skip",
        max_failures=5,
    )
    wait_until(lambda: fresh_run(run.id).status == "errored", 90, "the run to error")
    errored = fresh_run(run.id)
    assert errored.error_class == "TooManyFailures"
    # The sixth failure passes the limit; each other partition may have recorded
    # one at the same time, before it could read the run's count.
    assert 6 <= errored.failure_count <= 5 + 4
    assert errored.failure_count == len(mtasks.failures(run.id))
    assert errored.tick_count == sum(counters()) + errored.failure_count
    assert max(counters()) == 1
    assert {child.status for child in partitions_of(run.id)} <= {"errored", "paused", "succeeded"}


def test_a_dry_runs_changes_are_all_its_partitions_even_when_they_end_together(
    app, mtasks, workers
):
    seed_items(80)
    for _ in range(4):
        workers.start()
    for _ in range(4):
        run = mtasks.run("PartitionedCountTask", dry_run=True)
        wait_until(
            lambda run_id=run.id: fresh_run(run_id).status == "succeeded", 60, "the dry run to end"
        )
        assert fresh_run(run.id).changes["tables"]["items"]["updated"] == 80
    assert counters() == [0] * 80
