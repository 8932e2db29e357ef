"""Faults injected into a partitioned run (K = 4) on four real workers.

Each test seeds the rows, starts four ``flask mtasks worker`` processes and a
run of ``PartitionedCountTask`` (four partitions, each adding one to the
counter of every row of its range), waits until every partition has
committed some progress, injects one fault, and lets the workers (their
periodic recovery) or new workers carry the run on. Then it asserts the
promises: the run succeeds, no row was missed, no row was changed twice, and
the run's count equals the rows and its partitions' counts together.

With ``MTASKS_RELIABILITY_REPORT`` set to a file, every test appends what it
measured (a JSON line) for ``benchmarks/reliability.py``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import traceback
import typing as t

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import Run
from flask_maintenance_tasks.executors import JOB_FUNCTION
from flask_maintenance_tasks.recovery import HAND_OVER_GRACE
from tests.support.apps import FAST, configure
from tests.support.faults import Fault, database_of
from tests.support.records import (
    age,
    assert_trail_agrees,
    counters,
    fresh_run,
    seed_items,
    trail,
)
from tests.support.services import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import drain, run_one_job

pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

PARTITIONS = 4
WORKERS = 4
ITEMS = 400
#: Seconds per item: each partition has about a second of work, time to strike it half-way.
SLEEP = 0.01
STUCK_AFTER = 2.0
#: Generous: four workers and another test's four share two cores, and SQLite one writer.
TIMEOUT = 90.0


@pytest.fixture
def settings() -> dict[str, t.Any]:
    # Recovery looks twice a second for runs silent for two seconds.
    return {**FAST, "stuck_after": STUCK_AFTER, "recovery_interval": 0.5}


@pytest.fixture
def app_env(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """On SQLite, a minute's busy timeout instead of pysqlite's five seconds.

    Each tick of a partition holds SQLite's write lock while it processes its
    items, and the tick after it takes the lock again at once: the other
    partitions, waiting for their turn, may wait seconds (four partitions of
    this run take turns for about four). The default timeout would error one of
    them ("database is locked") in a test of something else.
    """
    url = app_env["MTASKS_TEST_DATABASE_URL"]
    if not url.startswith("sqlite"):
        return app_env
    patient = f"{url}?timeout=60"
    monkeypatch.setenv("MTASKS_TEST_DATABASE_URL", patient)
    return {**app_env, "MTASKS_TEST_DATABASE_URL": patient}


def partitions_of(run_id: int) -> list[Run]:
    from tests.testapp import db

    db.session.remove()
    return list(
        db.session.scalars(sa.select(Run).where(Run.parent_id == run_id).order_by(Run.partition))
    )


@dataclasses.dataclass
class PartitionFault(Fault):
    """A partitioned run under way, the fault, and the measure of what followed."""

    items: int = ITEMS
    timeout: float = TIMEOUT

    def check(self) -> None:
        """The promises for the run, then for each of its partitions."""
        super().check()
        children = partitions_of(self.run_id)
        assert fresh_run(self.run_id).tick_count == sum(c.tick_count for c in children)
        assert [c.status for c in children] == ["succeeded"] * PARTITIONS
        assert [c.tick_count for c in children] == [c.tick_total for c in children]
        for child in children:
            assert_trail_agrees(child.id)


def _start_run(app_env: dict[str, str], name: str) -> PartitionFault:
    """Start the run as the dashboard would, in this process: the workers take it from Redis."""
    from tests.testapp import mtasks

    run = mtasks.run("PartitionedCountTask", arguments={"sleep": SLEEP})
    assert run.partitions == PARTITIONS
    return PartitionFault(name, run.id, database_of(app_env))


def _under_way(fault: PartitionFault) -> None:
    """Wait until the run is cut, a tenth done and a partition half-way through a tick.

    On PostgreSQL the four partitions run side by side. On SQLite they take
    turns for the write lock (each tick of a partition holds it), so one of
    them may be done before the last one is even claimed.
    """

    def moved() -> bool:
        children = partitions_of(fault.run_id)
        ticks = sum(c.tick_count for c in children)
        return (
            len(children) == PARTITIONS
            and ITEMS // 10 <= ticks <= ITEMS // 2
            and any(
                c.status == "running" and 0 < c.tick_count < (c.tick_total or ITEMS)
                for c in children
            )
        )

    wait_until(moved, TIMEOUT, "the partitioned run to make progress")


def _busiest(run_id: int) -> Run:
    """The partition under way with the most ticks still to do (committing ticks, on SQLite)."""
    children = [c for c in partitions_of(run_id) if c.status == "running" and c.tick_count]
    assert children, "no partition is under way"
    return max(children, key=lambda c: (c.tick_count < (c.tick_total or 0), c.tick_count))


def _worker_of(workers: t.Any, run_id: int) -> t.Any:
    """The worker whose latest job is a slice of run ``run_id`` (RQ logs each job it takes)."""
    taken = {}
    for process in workers.processes:
        if process.poll() is not None:
            continue
        jobs = [
            line for line in workers.log(process).splitlines() if "maintenance task run #" in line
        ]
        if jobs:
            taken[process] = jobs[-1]
    found = [p for p, line in taken.items() if f"maintenance task run #{run_id} (" in line]
    assert len(found) == 1, (run_id, taken)
    return found[0]


def _recovered(run_id: int) -> list[int]:
    """The partitions of the run that recovery handed on, by index."""
    return [
        c.partition
        for c in partitions_of(run_id)
        if any(action == "recovered" and outcome == "done" for action, outcome, _ in trail(c.id))
    ]


def _none_recovered(fault: PartitionFault) -> None:
    """No partition was handed on by recovery: their jobs carried them through.

    On PostgreSQL only: on SQLite a partition waiting for its turn at the write
    lock longer than the stuck limit (2 s here) is taken for orphaned, and
    handed on, harmlessly (its waiting job is fenced off).
    """
    if fault.database == "postgresql":
        assert _recovered(fault.run_id) == []


def _start_workers(app: t.Any, workers: t.Any) -> None:
    """Start four workers and wait until each listens: the first would otherwise take every job."""
    executor = app.extensions["maintenance_tasks"].executor
    for _ in range(WORKERS):
        workers.start()
    alive = sum(process.poll() is None for process in workers.processes)
    wait_until(lambda: (executor.worker_count() or 0) >= alive, TIMEOUT, "the workers to listen")


@pytest.fixture
def fault_run(app, workers, app_env):
    """Seed the rows, start four workers and a run, and wait until every partition is under way."""

    def start(name: str) -> PartitionFault:
        seed_items(ITEMS)
        _start_workers(app, workers)
        fault = _start_run(app_env, name)
        _under_way(fault)
        return fault

    return start


def test_sigkill_of_one_partitions_work_horse(fault_run, workers):
    fault = fault_run("K=4, four workers: SIGKILL of one partition's work horse")
    target = _busiest(fault.run_id)
    worker = _worker_of(workers, target.id)
    horse = workers.horse_pid(worker)
    fault.inject()
    os.kill(horse, signal.SIGKILL)
    # The killed tick is rolled back; an idle worker recovers the partition once it is stale.
    fault.watch_recovery()
    assert worker.poll() is None
    fault.check()
    assert target.partition in _recovered(fault.run_id)


def test_sigkill_of_one_worker_and_its_work_horse(fault_run, workers):
    fault = fault_run("K=4, four workers: SIGKILL of one worker and its work horse")
    target = _busiest(fault.run_id)
    worker = _worker_of(workers, target.id)
    horse = workers.horse_pid(worker)
    fault.inject()
    os.kill(horse, signal.SIGKILL)
    worker.kill()
    worker.wait(10)
    # The three other workers recover the partition: no new worker is needed.
    fault.watch_recovery()
    fault.check()
    assert target.partition in _recovered(fault.run_id)


def test_sigterm_to_all_four_workers_then_new_workers(app, fault_run, workers):
    fault = fault_run("K=4, four workers: SIGTERM to all, then four new workers")
    fault.inject()
    first = list(workers.processes)
    for worker in first:
        worker.send_signal(signal.SIGTERM)
    for worker in first:
        assert worker.wait(60) == 0, workers.log(worker)
    # Each partition committed its last tick and is interrupted at its cursor, its next
    # slice waiting in the queue; the counters agree with the ticks.
    executor = app.extensions["maintenance_tasks"].executor
    children = partitions_of(fault.run_id)
    # (On SQLite a partition may not have been claimed yet: its first slice waits.)
    statuses = {c.status for c in children}
    assert statuses <= {"interrupted", "succeeded", "enqueued"}, children
    assert "interrupted" in statuses
    for child in children:
        if child.status == "interrupted":
            assert child.interruption_reason == "worker_shutdown"
        if child.status != "succeeded":
            assert executor.is_waiting(child.job_id), child
    assert (
        sum(counters()) == fresh_run(fault.run_id).tick_count == sum(c.tick_count for c in children)
    )
    assert max(counters()) == 1
    _start_workers(app, workers)
    fault.watch_recovery()
    fault.check()
    # (No assertion on recovery here: a new worker's first recovery pass may find
    # a partition interrupted for longer than the stuck limit just as another new
    # worker dequeued its slice, before it claimed it, and hand it on; harmless.)


# Nothing is killed here: a stuck limit of ten seconds, not two, keeps a partition that a
# loaded machine left unscheduled for a few seconds from being handed on, which the test
# would read as the duplicates' doing.
@pytest.mark.parametrize(
    "settings",
    [{**FAST, "stuck_after": 10.0, "recovery_interval": 0.5}],
    ids=["stuck-after-10s"],
)
def test_a_duplicated_slice_of_one_partition(app, workers, app_env):
    """Three deliveries of one partition's first slice, then one with its stale job id.

    The run is cut in this process (as a worker would), so that two duplicates
    of partition 2's first slice sit at the front of the queue before the
    workers start: the first two workers to listen take them together, one
    claims the partition and the other finds it claimed; the slice's own
    delivery comes later and finds the partition held by another job. Once the
    run is under way, a slice with the job id the partition was created with
    does nothing either.
    """
    seed_items(ITEMS)
    fault = _start_run(app_env, "K=4, four workers: a duplicated slice of one partition")
    queue = app.extensions["maintenance_tasks"].executor.queue()
    run_one_job(app)  # the run's own job: it cuts the run and enqueues a job per partition
    children = partitions_of(fault.run_id)
    assert [c.status for c in children] == ["enqueued"] * PARTITIONS
    target = children[1]
    first_job = target.job_id
    for _ in range(2):
        queue.enqueue(JOB_FUNCTION, target.id, first_job, at_front=True)
    assert queue.count == PARTITIONS + 2
    _start_workers(app, workers)
    _under_way(fault)
    assert partitions_of(fault.run_id)[1].job_id != first_job
    fault.inject()
    queue.enqueue(JOB_FUNCTION, target.id, first_job, at_front=True)  # stale by now
    fault.watch_recovery()
    fault.check()
    logs = "".join(workers.log(p) for p in workers.processes)
    fenced = logs.count(f"no longer holds run #{target.id};") + logs.count(
        f"Run #{target.id} was handed on;"
    )
    assert fenced >= 3, logs
    _none_recovered(fault)


def test_redis_restarted_mid_run(fault_run, redis_server: RedisServer):
    fault = fault_run("K=4, four workers: Redis restarted mid-run")
    fault.inject()
    redis_server.stop()
    time.sleep(1)
    redis_server.start()
    fault.watch_recovery()
    fault.check()


# -- a run that cannot be settled does not hold its partitions up --------------
# (In this process: the fault is a settle of the run failing, as it may when
# SQLite's lock is busy for longer than its timeout, or the process dies.)


def _failing_settles(monkeypatch: pytest.MonkeyPatch, caller: str, times: int) -> list[int]:
    """Make the first ``times`` settles of a run called from ``caller`` fail; return their runs."""
    from flask_maintenance_tasks import partitions

    real = partitions.settle
    failed: list[int] = []

    def settle(state: t.Any, run_id: int, actor: t.Any = None) -> None:
        if len(failed) < times and caller in {f.name for f in traceback.extract_stack()}:
            failed.append(run_id)
            raise sa.exc.OperationalError("UPDATE runs", {}, Exception("database is locked"))
        real(state, run_id, actor)

    monkeypatch.setattr(partitions, "settle", settle)
    return failed


def test_a_partition_is_handed_on_when_its_run_cannot_be_settled(app, mtasks, monkeypatch):
    """A partition's next slice is enqueued before its run is settled, and it does not error."""
    seed_items(40)
    configure(app, max_job_runtime=0.03)  # every partition is handed on a few times
    failed = _failing_settles(monkeypatch, "_stopped", 3)
    run = mtasks.run("PartitionedCountTask", {"sleep": 0.01})
    drain(app)
    assert len(failed) == 3
    done = fresh_run(run.id)
    assert done.status == "succeeded", done.error_message
    assert [c.status for c in partitions_of(run.id)] == ["succeeded"] * PARTITIONS
    assert counters() == [1] * 40
    assert done.tick_count == 40


def test_recovery_enqueues_a_partition_when_its_run_cannot_be_settled(
    app, mtasks, monkeypatch, redis_url
):
    """Recovery enqueues a partition's new job before settling its run, which may fail."""
    from redis import Redis

    from flask_maintenance_tasks.recovery import recover
    from flask_maintenance_tasks.state import get_state

    seed_items(40)
    run = mtasks.run("PartitionedCountTask")
    run_one_job(app)  # the run is cut; its partitions' jobs are then lost with Redis
    Redis.from_url(redis_url).flushall()
    age(run.id, seconds=HAND_OVER_GRACE + 0.5)  # not jobs being enqueued just now
    failed = _failing_settles(monkeypatch, "_recover_one", PARTITIONS)
    recovered = recover(get_state(app), log=False)
    assert len(failed) == PARTITIONS
    assert len(recovered) == PARTITIONS
    executor = app.extensions["maintenance_tasks"].executor
    children = partitions_of(run.id)
    assert all(executor.is_waiting(child.job_id) for child in children), children
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 40
