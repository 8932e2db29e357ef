"""Faults injected into real workers while a run is half-way through.

Each test starts ``flask mtasks worker`` processes, starts a run of a task
that adds one to a counter column of every row, waits until the run has
committed some progress, injects one fault, and lets the system recover on
its own (a worker's periodic recovery) or with a new worker, as an operator
would after a crash. Then it asserts the promises: the run succeeds, no row
was missed, no row was changed twice, and the counters equal the rows.

With ``MTASKS_RELIABILITY_REPORT`` set to a file, every test appends what it
measured (a JSON line) for ``benchmarks/reliability.py``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import typing as t
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import InvalidTransition
from flask_maintenance_tasks.models import Event
from tests.support.apps import FAST
from tests.support.faults import Fault, database_of
from tests.support.records import assert_trail_agrees, counters, fresh_run, seed_items, trail
from tests.support.services import RedisServer
from tests.support.waiting import wait_until
from tests.support.workers import drain

# Both databases: recovery after a fault depends on the database's transactions and locks.
pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

ITEMS = 300
#: Seconds per item: a run lasts about 1.5 s of work, ample time to strike it half-way.
SLEEP = 0.005
STUCK_AFTER = 2.0


@pytest.fixture
def settings() -> dict[str, t.Any]:
    # Recovery looks twice a second for runs silent for two seconds.
    return {**FAST, "stuck_after": STUCK_AFTER, "recovery_interval": 0.5}


def _start_run(app_env: dict[str, str], name: str, *, sleep: float = SLEEP) -> Fault:
    """Start the run as the dashboard would, in this process: the workers take it from Redis."""
    from tests.testapp import mtasks

    run = mtasks.run("CountItemsTask", arguments={"sleep": sleep})
    return Fault(name, run.id, database_of(app_env), items=ITEMS)


def _under_way(fault: Fault) -> None:
    def moved() -> bool:
        run = fresh_run(fault.run_id)
        return run.status == "running" and run.tick_count >= 20

    wait_until(moved, 30, "the run to make progress")


@pytest.fixture
def fault_run(app, workers, app_env):
    """Seed the rows, start one worker and a run, and wait until it is under way."""

    def start(name: str, *, wait: bool = True) -> tuple[Fault, t.Any]:
        seed_items(ITEMS)
        worker = workers.start()
        fault = _start_run(app_env, name)
        if wait:
            _under_way(fault)
        return fault, worker

    return start


def test_sigterm_to_the_worker(fault_run, workers):
    fault, worker = fault_run("SIGTERM to the worker")
    fault.inject()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, workers.log(worker)
    run = fresh_run(fault.run_id)
    assert (run.status, run.interruption_reason) == ("interrupted", "worker_shutdown")
    workers.start()
    fault.watch_recovery()
    fault.check()


def test_sigterm_to_the_worker_and_its_work_horse(fault_run, workers):
    fault, worker = fault_run("SIGTERM to the worker and its work horse")
    horse = workers.horse_pid(worker)
    fault.inject()
    os.kill(horse, signal.SIGTERM)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, workers.log(worker)
    assert fresh_run(fault.run_id).status == "interrupted"
    workers.start()
    fault.watch_recovery()
    fault.check()


def test_sigkill_of_the_work_horse(fault_run, workers):
    fault, worker = fault_run("SIGKILL of the work horse")
    horse = workers.horse_pid(worker)
    fault.inject()
    os.kill(horse, signal.SIGKILL)
    # The surviving worker recovers the run once its heartbeat is old enough.
    fault.watch_recovery()
    assert worker.poll() is None
    fault.check()


def test_sigkill_of_the_worker_and_its_work_horse(fault_run, workers):
    fault, worker = fault_run("SIGKILL of the worker and its work horse (machine lost)")
    horse = workers.horse_pid(worker)
    fault.inject()
    os.kill(horse, signal.SIGKILL)
    worker.kill()
    worker.wait(10)
    workers.start()
    fault.watch_recovery()
    assert fresh_run(fault.run_id).interruption_reason is None
    fault.check()


def test_sigkill_of_the_worker_alone(fault_run, workers):
    fault, worker = fault_run("SIGKILL of the worker (its work horse carries on)")
    fault.inject()
    worker.kill()
    worker.wait(10)
    workers.start()
    fault.watch_recovery()
    fault.check()


def test_a_scheduled_start_racing_a_worker_restart(app, workers, app_env):
    """SIGTERM reaches the worker as the run's time comes: whether its scheduler had
    moved the job, its work horse had taken it, or neither, the run starts once."""
    from tests.testapp import mtasks

    seed_items(ITEMS)
    first = workers.start()
    executor = app.extensions["maintenance_tasks"].executor
    wait_until(lambda: (executor.worker_count() or 0) > 0, 30, "the worker to listen")
    due = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    run = mtasks.run("CountItemsTask", arguments={"sleep": SLEEP}, at=due)
    fault = Fault("a scheduled start racing a worker restart", run.id, database_of(app_env))
    time.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))
    fault.inject()
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, workers.log(first)
    assert fresh_run(run.id).status in ("scheduled", "enqueued", "interrupted")

    workers.start()
    fault.watch_recovery()
    fault.check()
    done = fresh_run(run.id)
    assert done.started_at >= done.scheduled_at
    actions = [action for action, _, _ in trail(run.id)]
    assert (actions.count("due"), actions.count("began")) == (1, 1)


def test_redis_flushed_while_running(fault_run, redis_url):
    from redis import Redis

    fault, _ = fault_run("Redis flushed while a run is running")
    fault.inject()
    Redis.from_url(redis_url).flushall()
    fault.watch_recovery()
    fault.check()


def test_redis_flushed_while_enqueued(app, workers, app_env, redis_url):
    from redis import Redis

    seed_items(ITEMS)
    # The fault strikes before the run starts: nothing to slow down.
    fault = _start_run(app_env, "Redis flushed while a run is enqueued", sleep=0.0)
    fault.inject()
    Redis.from_url(redis_url).flushall()
    workers.start()
    fault.watch_recovery()
    fault.check()


def test_redis_restarted_while_running(fault_run, redis_server: RedisServer):
    fault, worker = fault_run("Redis restarted while a run is running")
    fault.inject()
    redis_server.stop()
    time.sleep(1)
    redis_server.start()
    fault.watch_recovery()
    fault.check()


def test_redis_restarted_while_enqueued(app, workers, app_env, redis_server: RedisServer):
    seed_items(ITEMS)
    fault = _start_run(app_env, "Redis restarted while a run is enqueued", sleep=0.0)
    fault.inject()
    redis_server.stop()
    time.sleep(1)
    redis_server.start()
    workers.start()
    fault.watch_recovery()
    fault.check()


def _kill_the_workers_connections(db) -> None:
    """``pg_terminate_backend`` of every connection at work but this test's.

    A tick's connection is idle for a moment between its commit and the next
    item: on a loaded machine the first look may find none at work, so it looks
    again until it has killed one.
    """

    def kill() -> list[bool]:
        db.session.remove()
        killed = db.session.scalars(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state IN ('active', 'idle in transaction')"
            )
        ).all()
        db.session.commit()
        return list(killed)

    killed = wait_until(kill, 10, "a connection of the worker at work")
    assert all(killed)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # pg_terminate_backend
def test_database_connection_killed(fault_run, db):
    fault, _ = fault_run("Worker's database connection killed (pg_terminate_backend)")
    fault.inject()
    _kill_the_workers_connections(db)
    fault.watch_recovery()
    fault.check()


def _assert_one_copy_wrote_nothing(workers, report: str | None = None) -> None:
    """One of the two copies stood aside: fenced off mid-way, refused at its claim, or,
    taken after the other had finished the run (a loaded machine starts workers late),
    found nothing to do. That it wrote nothing is what ``fault.check()`` proved."""
    logs = "".join(workers.log(p) for p in workers.processes)
    said = ("stops without writing", "no longer holds", "does nothing")
    assert any(words in logs for words in said), report or logs[-3000:]


def test_the_same_slice_delivered_twice_to_two_workers(app, workers, app_env):
    seed_items(ITEMS)
    for _ in range(2):
        workers.start()
    fault = _start_run(app_env, "The same slice delivered to two workers at once")
    run = fresh_run(fault.run_id)
    executor = app.extensions["maintenance_tasks"].executor
    from flask_maintenance_tasks.executors import JOB_FUNCTION

    queue = executor.queue()
    copy = queue.enqueue(JOB_FUNCTION, run.id, run.job_id)
    fault.inject()
    fault.watch_recovery()
    fault.check()
    wait_until(lambda: _done(queue, copy.id), 30, "the copy's job to be done")
    _assert_one_copy_wrote_nothing(workers, _copies_report(queue, run, copy.id, workers))


def test_a_rate_cap_racing_a_worker_restart(app, fault_run, workers):
    """The cap is set while the worker shuts down: its last tick, its hand-over and the
    cap are all kept, and the new worker walks the rest at the capped speed."""
    from tests.testapp import mtasks

    cap = 60.0
    fault, worker = fault_run("a rate cap racing a worker restart")
    fault.inject()
    barrier = threading.Barrier(2)
    outcome: list[t.Any] = []

    def cap_it() -> None:
        with app.app_context():
            barrier.wait()
            outcome.append(mtasks.set_speed(fault.run_id, rate=cap, actor="ops"))

    thread = threading.Thread(target=cap_it)
    thread.start()
    barrier.wait()
    worker.send_signal(signal.SIGTERM)
    thread.join(30)
    assert worker.wait(30) == 0, workers.log(worker)
    assert [run.max_rate for run in outcome] == [cap]
    stopped = fresh_run(fault.run_id)
    assert (stopped.status, stopped.max_rate) == ("interrupted", cap)

    workers.start()
    wait_until(
        lambda: fresh_run(fault.run_id).tick_count > stopped.tick_count, 30, "the new worker"
    )
    first, first_at = fresh_run(fault.run_id).tick_count, time.monotonic()
    fault.watch_recovery()
    elapsed = time.monotonic() - first_at
    fault.check()
    left = fault.items - first
    assert left > 100, "the run was nearly done before the new worker took it"
    # The new worker honours the cap from its first slice (one tick of slack).
    assert left / elapsed <= cap * 1.05 + 15 / elapsed
    from tests.testapp import db

    db.session.remove()
    actions = db.session.scalars(sa.select(Event.action).where(Event.run_id == fault.run_id))
    assert list(actions).count("speed_changed") == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_frozen_work_horse_is_fenced_off_after_the_stuck_limit(fault_run, workers):
    """SIGSTOP past the stuck limit, then SIGCONT: the run was handed on meanwhile.

    PostgreSQL only: SQLite lets one writer at a time, so a frozen writer
    blocks recovery too, and there is nothing to hand over until it wakes.
    """
    fault, worker = fault_run("Work horse frozen (SIGSTOP) past the stuck limit, then continued")
    horse = workers.horse_pid(worker)
    before = fresh_run(fault.run_id)
    fault.inject()
    os.kill(horse, signal.SIGSTOP)
    try:
        rescuer = workers.start()
        wait_until(lambda: fresh_run(fault.run_id).job_id != before.job_id, 30, "a hand-over")
    finally:
        os.kill(horse, signal.SIGCONT)
    fault.watch_recovery()
    fault.check()
    assert "stops without writing" in workers.log(worker), workers.log(worker)
    assert rescuer.poll() is None


# -- the skip policy: the failure ledger under faults -------------------------

#: Rows of a skip-policy run, every :data:`BAD_EVERY`-th of them bad.
SKIP_ITEMS = 2000
BAD_EVERY = 7
#: Seconds each item sleeps after its write is flushed, so that a tick is in flight.
SKIP_SLEEP = 0.001


@dataclasses.dataclass
class SkipFault(Fault):
    """A fault of a skip-policy run whose bad rows fail after writing."""

    items: int = SKIP_ITEMS
    bad: tuple[int, ...] = ()

    def check(self) -> None:
        """The ledger holds each bad row once, and agrees with the run and the rows.

        Good rows were changed exactly once; bad rows not at all, their flushed
        writes undone by their savepoints, those of a killed tick by its rollback.
        """
        from flask_maintenance_tasks.models import Failure
        from tests.testapp import db

        done = counters()
        bad = set(self.bad)
        good = [c for n, c in enumerate(done, 1) if n not in bad]
        missed = sum(1 for c in good if c == 0)
        twice = sum(1 for c in done if c > 1)
        run = fresh_run(self.run_id)
        self.report(run, missed, twice)
        ledger = sa.select(Failure.item_key).where(Failure.run_id == self.run_id)
        keys = list(db.session.scalars(ledger.order_by(Failure.id)))
        assert run.status == "succeeded", run.error_message
        assert (missed, twice) == (0, 0)
        assert [done[n - 1] for n in self.bad] == [0] * len(self.bad)
        assert sorted(keys) == list(self.bad), "a bad row missing from the ledger, or twice in it"
        assert run.failure_count == len(keys) == len(self.bad)
        assert run.tick_count == self.items == len(good) + len(self.bad)
        assert_trail_agrees(self.run_id)


@pytest.fixture
def skip_fault_run(app, workers, app_env):
    """Seed the rows (every seventh bad), start a skip-policy run, and maybe a worker."""

    def start(name: str, *, worker: bool = True) -> tuple[SkipFault, t.Any]:
        from tests.testapp import Item, db, mtasks

        seed_items(SKIP_ITEMS)
        bad = tuple(range(BAD_EVERY, SKIP_ITEMS + 1, BAD_EVERY))
        db.session.execute(sa.update(Item).where(Item.id.in_(bad)).values(title="bad"))
        db.session.commit()
        process = workers.start() if worker else None
        run = mtasks.run("SlowSkipBadItemsTask", arguments={"sleep": SKIP_SLEEP})
        database = database_of(app_env)
        fault = SkipFault(name, run.id, database, bad=bad)
        if worker:
            _under_way(fault)
        return fault, process

    return start


def test_skip_policy_sigkill_of_the_work_horse(skip_fault_run, workers):
    """The killed tick's failures vanish with its rollback; the recovered run records them again."""
    fault, worker = skip_fault_run("SIGKILL of the work horse, skip policy, every 7th row failing")
    horse = workers.horse_pid(worker)
    fault.inject()
    os.kill(horse, signal.SIGKILL)
    fault.watch_recovery()
    assert worker.poll() is None
    fault.check()


def test_skip_policy_sigterm_to_the_worker(skip_fault_run, workers):
    """The last tick, failures included, is committed before the run is handed on."""
    fault, worker = skip_fault_run("SIGTERM to the worker, skip policy, every 7th row failing")
    fault.inject()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, workers.log(worker)
    run = fresh_run(fault.run_id)
    assert (run.status, run.interruption_reason) == ("interrupted", "worker_shutdown")
    workers.start()
    fault.watch_recovery()
    fault.check()


def test_skip_policy_the_same_slice_delivered_twice(app, skip_fault_run, workers):
    """Two workers take the same slice at once: one of them records the failures, once."""
    from flask_maintenance_tasks.executors import JOB_FUNCTION

    # Both workers listen before the two copies are queued, so that each takes one at
    # once (started after, the second could come up when the first had ended the run).
    for _ in range(2):
        workers.start()
    fault, _ = skip_fault_run(
        "The same slice delivered to two workers at once, skip policy, every 7th row failing",
        worker=False,
    )
    run = fresh_run(fault.run_id)
    queue = app.extensions["maintenance_tasks"].executor.queue()
    copy = queue.enqueue(JOB_FUNCTION, run.id, run.job_id)
    try:
        _under_way(fault)
    except AssertionError as error:
        # Seen once in CI, and once (the other copy never ran) on older code: say where
        # both copies and the run stand, and what the workers did, for the next look.
        raise AssertionError(_copies_report(queue, run, copy.id, workers)) from error
    fault.inject()
    fault.watch_recovery()
    fault.check()
    # The copy may have been left to the first worker, once it had ended the run (seen
    # on SQLite in CI: the second worker sat idle): its words are logged when it is done.
    wait_until(lambda: _done(queue, copy.id), 30, "the copy's job to be done")
    _assert_one_copy_wrote_nothing(workers, _copies_report(queue, run, copy.id, workers))


def _done(queue: t.Any, job_id: str) -> bool:
    from rq.job import Job, JobStatus

    status = Job.fetch(job_id, connection=queue.connection).get_status()
    return status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)


def _copies_report(queue: t.Any, run: t.Any, copy_id: str, workers: t.Any) -> str:
    """Where the run, its two RQ jobs and the queue stand, and the workers' logs."""
    from rq.job import Job

    lines = [f"run: {fresh_run(run.id).status} {fresh_run(run.id).tick_count} ticks"]
    for name, job_id in (("the run's job", run.job_id), ("the copy", copy_id)):
        try:
            status = Job.fetch(job_id, connection=queue.connection).get_status()
        except Exception as error:  # noqa: BLE001 - a report, whatever Redis says
            status = repr(error)
        lines.append(f"{name} {job_id}: {status}")
    lines.append(f"queue {queue.name}: {queue.get_job_ids()}")
    lines.append(f"redis keys: {sorted(k.decode() for k in queue.connection.keys('rq:*'))[:40]}")
    lines.append("".join(workers.log(p) for p in workers.processes)[-4000:])
    return "\n".join(lines)


# -- operator races (in process: the race is between two requests) ----------


def test_pause_racing_the_last_tick_either_pauses_or_succeeds(app, mtasks):
    """An operator's pause arriving as the run completes never leaves it in between."""
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    finished = threading.Event()

    def pause_now() -> None:
        with app.app_context():
            try:
                mtasks.pause(run.id)
            except InvalidTransition:
                pass
            finished.set()

    threading.Timer(0.0, pause_now).start()
    drain(app)
    finished.wait(10)
    status = fresh_run(run.id).status
    if status == "pausing":  # the pause came after the job had finished nothing
        drain(app)
        status = fresh_run(run.id).status
    assert status in ("paused", "succeeded")
    if status == "paused":
        mtasks.resume(run.id)
        drain(app)
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 5


def test_cancel_racing_the_last_tick_ends_the_run_once(app, mtasks):
    """A cancel that lands while the last items are processed ends the run exactly once.

    Whether it ends ``cancelled`` or ``succeeded`` depends on which comes first,
    the cancel or the end of the collection; either way it ends, once, and
    the counters match what the run says it did.
    """
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    from flask_maintenance_tasks import signals

    def cancel_as_it_starts(sender, run, payload) -> None:
        mtasks.cancel(run.id)

    with signals.run_started.connected_to(cancel_as_it_starts, app):
        drain(app)
    final = fresh_run(run.id)
    assert final.status in ("cancelled", "succeeded")
    assert final.ended_at is not None
    with pytest.raises(InvalidTransition):
        mtasks.cancel(run.id)
    assert sum(counters()) == final.tick_count


def test_two_resume_requests_at_once_enqueue_one_job(app, mtasks):
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    mtasks.pause(run.id)
    drain(app)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def resume() -> None:
        with app.app_context():
            barrier.wait()
            try:
                outcomes.append(mtasks.resume(run.id).status)
            except InvalidTransition as error:
                outcomes.append(str(error))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["Cannot resume an enqueued run.", "enqueued"]
    assert app.extensions["maintenance_tasks"].executor.queue().count == 1
    drain(app)
    assert counters() == [1] * 5


def _scheduler_pid(worker: t.Any) -> int | None:
    """The worker's RQ scheduler: its child that stays in the worker's process group."""
    from tests.support.workers import _children

    for pid in _children(worker.pid):
        if os.getpgid(pid) == os.getpgid(worker.pid):
            return pid
    return None


def test_a_delayed_slice_starts_without_rq_scheduler_by_recovery(app, mtasks, workers, db) -> None:
    """RQ's scheduler died (killed here; a Redis outage does it too) and the worker
    does not start it again: its periodic recovery moves the throttled slice."""
    from tests.testapp import Flag

    seed_items(20)
    worker = workers.start()
    scheduler = wait_until(lambda: _scheduler_pid(worker), 30, "RQ's scheduler to start")
    os.kill(scheduler, signal.SIGKILL)
    db.session.add(Flag(name="busy", value="yes"))
    db.session.commit()
    run = mtasks.run("ThrottledCountTask")
    wait_until(lambda: fresh_run(run.id).status == "interrupted", 30, "the run to back off")
    db.session.execute(sa.delete(Flag).where(Flag.name == "busy"))
    db.session.commit()
    delayed = time.monotonic()

    # Its backoff (1 s, to the whole second in RQ), a recovery interval, the slack, a margin.
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 6, "recovery to move the slice")
    assert time.monotonic() - delayed < 6
    assert counters() == [1] * 20, workers.log(worker)
    assert_trail_agrees(run.id)


# -- delayed slices when RQ's scheduler is gone (issue 16) --------------------
#
# A delayed slice waits in RQ's scheduled registry for RQ's scheduler; a Redis
# outage kills that scheduler, and a SIGKILLed worker's lock keeps the others'
# out. Recovery hands on a slice overdue by a recovery interval plus its slack.


def _delayed_slice_bound(app: t.Any) -> float:
    """The longest a delayed slice may wait past the moment its delay began: its
    delay (1 s: a throttle's backoff, the retry after a lost connection), RQ's
    rounding of due times to the whole second, one recovery interval, recovery's
    slack, and a margin for these busy machines."""
    from flask_maintenance_tasks.recovery import OVERDUE_SLACK
    from flask_maintenance_tasks.state import get_state

    return 1.0 + 1.0 + get_state(app).settings.recovery_interval + OVERDUE_SLACK + 1.5


def _restart_redis(redis_server: RedisServer, *, keep_data: bool) -> None:
    """Stop Redis for a second and start it again, its data saved first if ``keep_data``
    (as a Redis with persistence would), so that RQ's schedule outlives the restart."""
    from redis import Redis

    dump = redis_server.directory / "dump.rdb"
    if keep_data:
        client = Redis.from_url(redis_server.url)
        client.save()
        client.close()
    redis_server.stop()
    time.sleep(1)
    try:
        redis_server.start()
    finally:
        # No later restart of this server may bring these keys back.
        dump.unlink(missing_ok=True)


def _scheduler_lost(workers: t.Any, worker: t.Any) -> None:
    """The premise of these tests: the worker is alive, its RQ scheduler is not.

    The scheduler shares the worker's connection, whose commands ride out a
    short outage: it outlived the restart. It is killed here, as an outage
    longer than those retries would end it, its lock left in Redis.
    """
    scheduler = _scheduler_pid(worker)
    assert scheduler is not None, "RQ's scheduler outlives a short Redis restart"

    def gone() -> bool:
        pid = _scheduler_pid(worker)
        if pid is None:
            return True
        try:  # the worker does not reap it: a zombie is gone too
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    os.kill(scheduler, signal.SIGKILL)
    wait_until(gone, 15, "RQ's scheduler to die")
    assert worker.poll() is None, workers.log(worker)[-6000:]


# Short slices: the worker is between two jobs, or watching its work horse, at each restart.
@pytest.mark.parametrize(
    "settings",
    [{**FAST, "stuck_after": STUCK_AFTER, "recovery_interval": 0.5, "max_job_runtime": 0.3}],
    ids=["slices-of-0.3s"],
)
def test_a_busy_worker_outlives_redis_restarts(app, workers, app_env, redis_server: RedisServer):
    """RQ retries a lost Redis only while it waits for a job: a worker watching its
    work horse, or doing a job's bookkeeping, would quit at the first restart
    ("found an unhandled exception, quitting"). Its connection retries instead."""
    seed_items(ITEMS)
    worker = workers.start()
    fault = _start_run(app_env, "Redis restarted three times under a busy worker", sleep=0.02)
    _under_way(fault)
    for restart in range(3):
        _restart_redis(redis_server, keep_data=True)
        time.sleep(0.5)
        assert worker.poll() is None, f"restart {restart + 1}:\n" + workers.log(worker)[-6000:]
    wait_until(lambda: fresh_run(fault.run_id).status == "succeeded", 60, "the run to succeed")
    assert worker.poll() is None, workers.log(worker)[-6000:]
    assert counters() == [1] * ITEMS
    assert_trail_agrees(fault.run_id)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # pg_terminate_backend
def test_redis_restarted_then_the_database_connection_killed(
    app, db, workers, app_env, redis_server: RedisServer
):
    """The retry a second after a lost connection starts without RQ's scheduler."""
    seed_items(ITEMS)
    worker = workers.start()
    wait_until(lambda: _scheduler_pid(worker), 30, "RQ's scheduler to start")
    # Slower items: the run outlives the Redis restart with time to spare.
    fault = _start_run(app_env, "Redis restarted, then the database connection killed", sleep=0.01)
    _under_way(fault)
    _restart_redis(redis_server, keep_data=True)
    _scheduler_lost(workers, worker)
    before = fresh_run(fault.run_id).tick_count
    wait_until(lambda: fresh_run(fault.run_id).tick_count > before + 10, 30, "ticks again")

    fault.inject()
    _kill_the_workers_connections(db)
    fault.watch_recovery(timeout=30)
    assert fault.recovered_after < _delayed_slice_bound(app), workers.log(worker)[-3000:]
    fault.check()
    retried = fresh_run(fault.run_id)
    assert retried.status == "succeeded"


def test_a_throttled_backoff_spanning_a_redis_restart(
    app, mtasks, workers, db, redis_server: RedisServer
):
    """The slice a throttle delayed outlives a Redis restart and the loss of RQ's scheduler."""
    from tests.testapp import Flag

    seed_items(20)
    worker = workers.start()
    wait_until(lambda: _scheduler_pid(worker), 30, "RQ's scheduler to start")
    db.session.add(Flag(name="busy", value="yes"))
    db.session.commit()
    run = mtasks.run("ThrottledCountTask")
    wait_until(lambda: fresh_run(run.id).status == "interrupted", 30, "the run to back off")
    _restart_redis(redis_server, keep_data=True)
    db.session.execute(sa.delete(Flag).where(Flag.name == "busy"))
    db.session.commit()
    delayed = time.monotonic()
    _scheduler_lost(workers, worker)

    wait_until(lambda: fresh_run(run.id).status == "succeeded", 30, "recovery to move the slice")
    assert time.monotonic() - delayed < _delayed_slice_bound(app), workers.log(worker)[-3000:]
    assert counters() == [1] * 20, workers.log(worker)
    assert_trail_agrees(run.id)


def test_the_worker_holding_rq_scheduler_lock_killed_while_a_slice_is_delayed(
    app, mtasks, workers, db, redis_url
):
    """A lost machine takes RQ's only scheduler with it, and its lock keeps the other
    worker's out: that worker's recovery hands the throttled slice on."""
    from redis import Redis
    from rq.scheduler import RQScheduler

    from tests.testapp import Flag

    seed_items(20)
    executor = app.extensions["maintenance_tasks"].executor
    first = workers.start()
    scheduler = wait_until(lambda: _scheduler_pid(first), 30, "RQ's scheduler to start")
    connection = Redis.from_url(redis_url)
    lock = RQScheduler.get_locking_key(executor.queue().name)

    def holder() -> int | None:
        name = connection.get(lock)
        pid = name and connection.hget(f"rq:scheduler:{name.decode()}", "pid")
        return int(pid) if pid else None

    wait_until(lambda: holder() == scheduler, 30, "the first worker's scheduler to take the lock")
    second = workers.start()
    wait_until(lambda: (executor.worker_count() or 0) == 2, 30, "the second worker to listen")

    db.session.add(Flag(name="busy", value="yes"))
    db.session.commit()
    run = mtasks.run("ThrottledCountTask")
    wait_until(lambda: fresh_run(run.id).status == "interrupted", 30, "the run to back off")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert holder() == scheduler, "the lock outlives its holder"
    # Had the scheduler moved the slice before it died, the second worker has taken it
    # and backed off again by now: a slice is delayed either way.
    time.sleep(1.5)
    db.session.execute(sa.delete(Flag).where(Flag.name == "busy"))
    db.session.commit()
    delayed = time.monotonic()

    wait_until(lambda: fresh_run(run.id).status == "succeeded", 30, "recovery to move the slice")
    assert time.monotonic() - delayed < _delayed_slice_bound(app), workers.log(second)[-3000:]
    assert second.poll() is None
    assert counters() == [1] * 20
    assert_trail_agrees(run.id)
    connection.close()
