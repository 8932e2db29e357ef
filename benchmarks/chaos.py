"""Chaos mode of ``make reliability``: random faults on real workers for a while, then the checks.

    python -m benchmarks.reliability --chaos 600 --seed 7 --database postgresql

It seeds ``--rows`` items and starts one run of the test app's
``CountItemsTask`` (it adds 1 to each item's counter), slowed down so that
its fault-free run lasts a little longer than the chaos: the run is under way
for the whole time. Should it end early anyway, another run of the same task
starts, and each row must then have been counted once per run.

``--workers`` real ``flask mtasks worker`` processes take it, with short
settings (``STUCK_AFTER`` 2 s, ``RECOVERY_INTERVAL`` 0.5 s). Every 1 to 4 s a
fault drawn by ``random.Random(seed)`` strikes (see :data:`KINDS`); workers
that die are replaced. Then the faults stop, a paused run is resumed, and the
run must succeed with every row processed exactly once.

A thread samples the run's ``tick_count`` every :data:`SAMPLE_EVERY` seconds.
A *stall* is the time the run goes without committed progress while it should
make some: it is active (not paused or pausing by the operator) and a worker is
there to take it. The promise is per fault: a stall must end within
``STUCK_AFTER + 2 * RECOVERY_INTERVAL`` (plus :data:`MARGIN`) of the last
progress or of the last fault, whichever came later; a fault that lands while
the run still recovers from the previous one starts that clock again. The
longest time without progress at all is printed too, for information.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from flask_maintenance_tasks.models import Run

#: Every kind of fault, in the order the report prints them.
KINDS: tuple[str, ...] = (
    "sigkill_worker_group",
    "sigkill_horse",
    "sigkill_worker",
    "sigterm_worker",
    "sigstop_horse",
    "redis_restart",
    "pg_terminate_backend",
    "pause_resume",
    "duplicate_start",
    "duplicate_slice",
)
#: What each kind does, for the report and the docs.
DESCRIPTIONS: dict[str, str] = {
    "sigkill_worker_group": "SIGKILL of a worker's whole tree (its group and its work horse)",
    "sigkill_horse": "SIGKILL of a work horse only",
    "sigkill_worker": "SIGKILL of a worker only (its work horse carries on)",
    "sigterm_worker": "SIGTERM to a worker (warm shutdown)",
    "sigstop_horse": "SIGSTOP of a work horse for 3-6 s, then SIGCONT",
    "redis_restart": "Redis stopped and started again",
    "pg_terminate_backend": "the workers' database connections killed (PostgreSQL only)",
    "pause_resume": "pause by the operator, resume 1-3 s later",
    "duplicate_start": "a second start of the running task (must be refused)",
    "duplicate_slice": "the run's current slice enqueued a second time",
}
#: Kinds that need PostgreSQL.
POSTGRESQL_ONLY = frozenset({"pg_terminate_backend"})

#: Settings of the workers and of the driver: ticks five times a second, a run
#: silent for 2 s is stuck, workers look for stuck runs twice a second.
STUCK_AFTER = 2.0
RECOVERY_INTERVAL = 0.5
TICKER_DELAY = 0.2
SETTINGS: dict[str, float] = {
    "ticker_delay": TICKER_DELAY,
    "status_reload_frequency": 0.2,
    "stuck_after": STUCK_AFTER,
    "recovery_interval": RECOVERY_INTERVAL,
}
#: Seconds between two samples of the run's progress.
SAMPLE_EVERY = 0.15
#: Slack of the stall bound: one sampling period (a progress is seen up to that
#: late) and one ticker delay (the recovered slice commits its first tick only
#: after it).
MARGIN = SAMPLE_EVERY + TICKER_DELAY
STALL_BOUND = STUCK_AFTER + 2 * RECOVERY_INTERVAL + MARGIN
#: How much longer than the chaos the run would last without faults.
RUN_STRETCH = 1.15
#: Seconds the run may take to succeed once the faults stop.
FINISH_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True)
class PlannedFault:
    """One fault of the schedule: when (seconds after the start), what, how long it holds."""

    at: float
    kind: str
    #: Seconds a SIGSTOP or a pause lasts (0 for the others).
    hold: float = 0.0


def schedule(seconds: float, seed: int, database: str) -> list[PlannedFault]:
    """The faults of a chaos of ``seconds``: one every 1 to 4 s, kinds drawn uniformly.

    The same seed and database give the same list; kinds the database cannot
    have (``pg_terminate_backend`` on SQLite) are left out of the draw.
    """
    rng = random.Random(seed)
    kinds = [k for k in KINDS if database == "postgresql" or k not in POSTGRESQL_ONLY]
    faults: list[PlannedFault] = []
    at = rng.uniform(1.0, 4.0)
    while at < seconds:
        kind = rng.choice(kinds)
        hold = 0.0
        if kind == "sigstop_horse":
            hold = rng.uniform(3.0, 6.0)
        elif kind == "pause_resume":
            hold = rng.uniform(1.0, 3.0)
        faults.append(PlannedFault(round(at, 3), kind, round(hold, 3)))
        at += rng.uniform(1.0, 4.0)
    return faults


@dataclasses.dataclass
class ChaosConfig:
    """What ``--chaos`` was asked for."""

    seconds: float
    seed: int
    database: str = "postgresql"
    workers: int = 3
    rows: int = 20_000
    #: Seconds added to the stall bound. 0 for the benchmark; ``make test`` runs
    #: its chaos beside the rest of the suite, several workers to a core, where
    #: forking a work horse alone can take a second.
    allowance: float = 0.0

    @property
    def stall_bound(self) -> float:
        return STALL_BOUND + self.allowance

    def replay(self) -> str:
        return (
            f"python -m benchmarks.reliability --chaos {self.seconds:g} --seed {self.seed} "
            f"--database {self.database} --workers {self.workers} --rows {self.rows}"
        )


@dataclasses.dataclass
class Stall:
    """The longest time without progress, when it began, and the fault before it."""

    seconds: float = 0.0
    began: float = 0.0
    after: str = "-"


@dataclasses.dataclass
class ChaosReport:
    """What the chaos did and what the checks found."""

    config: ChaosConfig
    counts: dict[str, int]
    #: Faults that found no target (no work horse at that moment) and were skipped.
    skipped: dict[str, int]
    refused_starts: int = 0
    accepted_starts: int = 0
    runs: int = 0
    statuses: list[str] = dataclasses.field(default_factory=list)
    missed: int = 0
    twice: int = 0
    stall: Stall = dataclasses.field(default_factory=Stall)
    raw_stall: Stall = dataclasses.field(default_factory=Stall)
    redis_down: float = 0.0
    duration: float = 0.0
    failures: list[str] = dataclasses.field(default_factory=list)
    logs: str = ""
    #: Each fault struck: seconds after the chaos began, its kind, whether it
    #: may have stopped the run's holder (and started the stall clock again).
    timeline: list[tuple[float, str, bool]] = dataclasses.field(default_factory=list)

    def stall_check(self) -> None:
        """Add a failure if the longest stall broke the bound."""
        bound = self.config.stall_bound
        if self.stall.seconds > bound:
            self.failures.append(
                f"the run stalled {self.stall.seconds:.2f} s (bound {bound:.2f} s) "
                f"at {self.stall.began:.1f} s, after {self.stall.after}"
            )

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        c = self.config
        lines = [
            f"chaos: seed {c.seed}, database {c.database}, {c.seconds:g} s of faults, "
            f"{c.workers} workers, {c.rows} rows, {self.runs} run(s), "
            f"{self.duration:.0f} s in all",
            "",
            "| fault | injected | skipped (no target) |",
            "|---|---:|---:|",
        ]
        for kind in KINDS:
            if kind in POSTGRESQL_ONLY and c.database != "postgresql":
                continue
            lines.append(f"| {kind} | {self.counts[kind]} | {self.skipped[kind]} |")
        lines += [
            "",
            f"duplicate starts refused: {self.refused_starts} (accepted: {self.accepted_starts})",
            f"runs: {', '.join(self.statuses)}",
            f"rows missed: {self.missed}, rows processed twice: {self.twice}",
            f"longest stall: {self.stall.seconds:.2f} s at {self.stall.began:.1f} s, "
            f"after {self.stall.after} (bound {c.stall_bound:.2f} s = STUCK_AFTER "
            f"{STUCK_AFTER:g} + 2 x RECOVERY_INTERVAL {RECOVERY_INTERVAL:g} + margin {MARGIN:.2f}"
            + (f" + allowance {c.allowance:g})" if c.allowance else ")"),
            f"longest time without progress, faults included: {self.raw_stall.seconds:.2f} s "
            f"at {self.raw_stall.began:.1f} s, after {self.raw_stall.after}",
            f"Redis down in all: {self.redis_down:.1f} s",
        ]
        if self.failures:
            lines += ["", "FAILED:", *(f"  - {f}" for f in self.failures)]
            began = self.stall.began
            near = [f"{at:.1f} s {kind}" for at, kind, _ in self.timeline if -8 <= at - began <= 8]
            lines.append(f"  faults near the longest stall: {', '.join(near) or 'none'}")
            if self.logs:
                lines.append(f"  worker logs and faults.log kept in {self.logs}")
            lines.append(f"replay with: {c.replay()}")
        else:
            lines += ["", "all checks passed"]
        return "\n".join(lines)


class ProgressWatch(threading.Thread):
    """Samples the run's progress and measures stalls, on a connection of its own.

    The driver tells it when the clock must start again (:meth:`restart_clock`:
    a fault, a resume, a worker back) and when stalls do not count
    (:attr:`excused`: paused by the operator, no worker alive).
    """

    def __init__(self, url: str, started: float) -> None:
        super().__init__(name="chaos-progress", daemon=True)
        options: dict[str, t.Any] = {}
        if url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 30}
        self.engine = sa.create_engine(url, **options)
        self.started = started
        self.run_id: int | None = None
        self.excused = False
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.last_fault = "-"
        self.stall = Stall()
        self.raw_stall = Stall()
        self._ticks = -1
        self._progress_at = self._clock_at = time.monotonic()
        self._progress_fault = self._clock_fault = "-"
        self.errors = 0

    def restart_clock(self, why: str) -> None:
        """A fault (or the end of an excuse): the bound counts from now."""
        with self.lock:
            self._clock_at = time.monotonic()
            self._clock_fault = why
            self.last_fault = why

    def follow(self, run_id: int) -> None:
        with self.lock:
            self.run_id = run_id
            self._ticks = -1
            self._progress_at = self._clock_at = time.monotonic()

    def run(self) -> None:
        from flask_maintenance_tasks.models import runs_table

        c = runs_table.c
        while not self.stop_event.wait(SAMPLE_EVERY):
            if self.run_id is None:
                continue
            try:
                with self.engine.connect() as connection:
                    row = connection.execute(
                        sa.select(c.tick_count, c.status).where(c.id == self.run_id)
                    ).one()
            except Exception:
                self.errors += 1  # a busy SQLite file: the next sample tells
                continue
            now = time.monotonic()
            with self.lock:
                self._sample(now, int(row.tick_count), str(row.status))

    def _sample(self, now: float, ticks: int, status: str) -> None:
        if ticks != self._ticks or status in ("succeeded", "errored", "cancelled"):
            self._ticks = ticks
            self._progress_at = now
            self._progress_fault = self.last_fault
            return
        if self.excused or status in ("paused", "pausing"):
            # Not the run's fault: both clocks start again when the excuse ends.
            self._progress_at = self._clock_at = now
            return
        since = max(self._progress_at, self._clock_at)
        if now - since > self.stall.seconds:
            after = (
                self._clock_fault
                if self._clock_at > self._progress_at
                else f"a progress (last fault before it: {self._progress_fault})"
            )
            self.stall = Stall(now - since, since - self.started, after)
        if now - self._progress_at > self.raw_stall.seconds:
            self.raw_stall = Stall(
                now - self._progress_at, self._progress_at - self.started, self.last_fault
            )

    def close(self) -> None:
        self.stop_event.set()
        self.join(10)
        self.engine.dispose()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _horse_of(pid: int) -> int | None:
    """The worker's work horse: its child that leads a process group of its own."""
    for child in _children(pid):
        try:
            if os.getpgid(child) == child:
                return child
        except ProcessLookupError:
            continue
    return None


def _get_run(run_id: int) -> Run:
    """The run as stored now (it is never deleted during a chaos)."""
    from tests.testapp import mtasks

    run = mtasks.get_run(run_id)
    assert run is not None, f"run {run_id} vanished"
    return run


def _signal(pid: int, signum: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, signum)


class Chaos:
    """The driver: workers, Redis, the run, the faults, the checks."""

    def __init__(self, config: ChaosConfig, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.rng = random.Random(config.seed + 1)  # targets; the schedule has its own
        self.report = ChaosReport(
            config, counts=dict.fromkeys(KINDS, 0), skipped=dict.fromkeys(KINDS, 0)
        )
        self.horses: set[int] = set()
        #: Frozen work horses and when to wake them.
        self.frozen: dict[int, float] = {}
        #: When to resume a run paused by the operator.
        self.resume_at: float | None = None
        self.run_ids: list[int] = []
        self.started = time.monotonic()

    # -- the whole chaos ------------------------------------------------------

    def execute(self, database_url: str) -> ChaosReport:
        from tests.support.services import RedisServer
        from tests.support.workers import WorkerProcesses

        redis = RedisServer(self.directory)
        redis.start()
        env = {
            "MTASKS_TEST_DATABASE_URL": database_url,
            "MTASKS_TEST_REDIS_URL": redis.url,
            "MTASKS_TEST_SETTINGS": json.dumps(SETTINGS),
        }
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        workers = WorkerProcesses(env, self.directory)
        started = time.monotonic()
        watch = ProgressWatch(database_url, started)
        try:
            self._drive(workers, redis, watch, started)
        finally:
            watch.close()
            for process in workers.processes:
                if process.poll() is None:
                    self.horses.update(_children(process.pid))
            for pid in self.frozen:
                _signal(pid, signal.SIGCONT)
            workers.horses |= self.horses
            workers.stop_all()
            redis.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.report.duration = time.monotonic() - started
        self.report.stall, self.report.raw_stall = watch.stall, watch.raw_stall
        return self.report

    def _drive(self, workers: t.Any, redis: t.Any, watch: ProgressWatch, started: float) -> None:
        from tests.support.apps import make_app
        from tests.support.records import counters, seed_items

        config = self.config
        with make_app() as app:
            self.app = app
            seed_items(config.rows)
            sleep = config.seconds * RUN_STRETCH / config.rows
            self.arguments = {"sleep": round(sleep, 6)}
            live = [workers.start() for _ in range(config.workers)]
            self._start_run(watch)
            watch.start()
            plan = schedule(config.seconds, config.seed, config.database)
            chaos_start = watch.started = self.started = time.monotonic()
            while True:
                now = time.monotonic() - chaos_start
                self._tend(workers, live, watch)
                if plan and plan[0].at <= now:
                    self._inject(plan.pop(0), workers, live, redis, watch)
                    continue
                if now >= config.seconds:
                    break
                run = _get_run(self.run_ids[-1])
                if run.status == "succeeded":
                    self._start_run(watch)  # ended early: keep a run going
                time.sleep(0.05)

            # The faults stop: wake, resume, and let the run end.
            for pid in list(self.frozen):
                _signal(pid, signal.SIGCONT)
            self.frozen.clear()
            deadline = time.monotonic() + FINISH_TIMEOUT
            while time.monotonic() < deadline:
                self._tend(workers, live, watch)
                run = _get_run(self.run_ids[-1])
                if run.status in ("succeeded", "errored", "cancelled"):
                    break
                time.sleep(0.1)
            self._check(counters())

    # -- keeping things going -------------------------------------------------

    def _start_run(self, watch: ProgressWatch) -> None:
        from tests.testapp import mtasks

        run = mtasks.run("CountItemsTask", arguments=self.arguments)
        self.run_ids.append(run.id)
        watch.follow(run.id)

    def _tend(self, workers: t.Any, live: list[t.Any], watch: ProgressWatch) -> None:
        """Wake frozen horses, resume a paused run, replace dead workers, when due."""
        now = time.monotonic()
        for pid, wake_at in list(self.frozen.items()):
            if now >= wake_at:
                _signal(pid, signal.SIGCONT)
                del self.frozen[pid]
                if self.config.database == "sqlite":
                    watch.restart_clock("sigstop_horse (woken)")
        if self.resume_at is not None and now >= self.resume_at:
            self._resume(watch)
        for index, process in enumerate(live):
            if process.poll() is not None:
                live[index] = workers.start()
        # On SQLite a frozen horse holds the one write lock: nothing can move.
        watch.excused = self.resume_at is not None or (
            self.config.database == "sqlite" and bool(self.frozen)
        )

    def _resume(self, watch: ProgressWatch) -> None:
        """Resume the paused run; while it is still pausing, try again a little later."""
        from flask_maintenance_tasks import InvalidTransition
        from tests.testapp import mtasks

        run_id = self.run_ids[-1]
        try:
            mtasks.resume(run_id)
        except InvalidTransition:
            if _get_run(run_id).status == "pausing":
                # The worker has not yet stopped at its next item (or was killed
                # meanwhile, and recovery settles the pause first).
                self.resume_at = time.monotonic() + 0.2
                return
        self.resume_at = None
        watch.excused = False
        watch.restart_clock("pause_resume (resumed)")

    # -- the faults -----------------------------------------------------------

    def _inject(
        self,
        fault: PlannedFault,
        workers: t.Any,
        live: list[t.Any],
        redis: t.Any,
        watch: ProgressWatch,
    ) -> None:
        """Strike; a fault that may stop the run's holder starts the stall clock again.

        Each ``_fault_*`` method returns ``None`` when it found no target, else
        whether it may have stopped the slice that holds the run (a fault on an
        idle worker, a refused start or a duplicated slice must not stall it).
        """
        kind = fault.kind
        outcome = getattr(self, f"_fault_{kind}")(fault, workers, live, redis)
        if outcome is None:
            self.report.skipped[kind] += 1
            return
        self.report.counts[kind] += 1
        self.report.timeline.append((time.monotonic() - self.started, kind, bool(outcome)))
        watch.last_fault = kind
        if outcome:
            watch.restart_clock(kind)

    def _pick(self, live: list[t.Any], with_horse: bool) -> tuple[t.Any, int | None] | None:
        """A live worker (one with a work horse when asked, the run's holder most likely)."""
        alive = [p for p in live if p.poll() is None]
        busy = [(p, h) for p in alive if (h := _horse_of(p.pid)) is not None]
        for _, horse in busy:
            self.horses.add(horse)
        if busy:
            return self.rng.choice(busy)
        if with_horse or not alive:
            return None
        return self.rng.choice(alive), None

    def _fault_sigkill_worker_group(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        picked = self._pick(live, with_horse=False)
        if picked is None:
            return None
        process, horse = picked
        if horse is not None:
            _signal(horse, signal.SIGKILL)
        _signal(process.pid, signal.SIGKILL, group=True)
        return horse is not None

    def _fault_sigkill_horse(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        picked = self._pick(live, with_horse=True)
        if picked is None:
            return None
        _signal(t.cast(int, picked[1]), signal.SIGKILL)
        return True

    def _fault_sigkill_worker(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        picked = self._pick(live, with_horse=False)
        if picked is None:
            return None
        _signal(picked[0].pid, signal.SIGKILL)
        return False  # its work horse carries on

    def _fault_sigterm_worker(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        picked = self._pick(live, with_horse=False)
        if picked is None:
            return None
        _signal(picked[0].pid, signal.SIGTERM)
        return picked[1] is not None

    def _fault_sigstop_horse(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        picked = self._pick(live, with_horse=True)
        if picked is None or picked[1] in self.frozen:
            return None
        horse = t.cast(int, picked[1])
        _signal(horse, signal.SIGSTOP)
        self.frozen[horse] = time.monotonic() + fault.hold
        return True

    def _fault_redis_restart(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        down = time.monotonic()
        redis.stop()
        time.sleep(0.5)
        # The same port, or the workers could never find it again.
        for _ in range(50):
            if redis._start_once():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"redis-server could not start again on port {redis.port}")
        self.report.redis_down += time.monotonic() - down
        return True

    def _fault_pg_terminate_backend(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        from tests.testapp import db

        db.session.remove()
        with db.engine.connect() as connection:
            killed = connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state IN ('active', 'idle in transaction')"
                )
            ).all()
            connection.commit()
        return True if any(killed) else None

    def _fault_pause_resume(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        from flask_maintenance_tasks import InvalidTransition
        from tests.testapp import mtasks

        if self.resume_at is not None:
            return None
        try:
            mtasks.pause(self.run_ids[-1])
        except InvalidTransition:
            return None
        self.resume_at = time.monotonic() + fault.hold
        return False  # excused until the resume, which starts the clock again

    def _fault_duplicate_start(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        from flask_maintenance_tasks.exceptions import TaskAlreadyRunning
        from tests.testapp import mtasks

        if _get_run(self.run_ids[-1]).ended_at is not None:
            return None
        try:
            run = mtasks.run("CountItemsTask", arguments=self.arguments)
        except TaskAlreadyRunning:
            self.report.refused_starts += 1
            return False
        self.report.accepted_starts += 1
        self.report.failures.append(
            f"a second start of the running task was accepted: run {run.id}"
        )
        return False

    def _fault_duplicate_slice(
        self, fault: PlannedFault, workers: t.Any, live: list[t.Any], redis: t.Any
    ) -> bool | None:
        from flask_maintenance_tasks.executors import JOB_FUNCTION

        run = _get_run(self.run_ids[-1])
        if run.ended_at is not None or not run.job_id:
            return None
        executor = self.app.extensions["maintenance_tasks"].executor
        executor.queue().enqueue(JOB_FUNCTION, run.id, run.job_id)
        return False

    # -- the checks -----------------------------------------------------------

    def _check(self, done: list[int]) -> None:

        report = self.report
        report.runs = len(self.run_ids)
        runs = [_get_run(run_id) for run_id in self.run_ids]
        report.statuses = [f"#{run.id} {run.status}" for run in runs]
        for run in runs:
            if run.status != "succeeded":
                report.failures.append(
                    f"run {run.id} ended {run.status!r}, not 'succeeded' ({run.error_message})"
                )
        expected = len(self.run_ids)
        report.missed = sum(1 for c in done if c < expected)
        report.twice = sum(1 for c in done if c > expected)
        if report.missed or report.twice:
            report.failures.append(
                f"{report.missed} row(s) missed, {report.twice} processed twice "
                f"(each row should have been counted {expected} time(s))"
            )


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """Run a chaos on a database of its own (SQLite file or a fresh PostgreSQL database)."""
    from benchmarks.services import postgresql_database

    directory = Path(tempfile.mkdtemp(prefix="mtasks-chaos-"))
    chaos = Chaos(config, directory)
    try:
        if config.database == "postgresql":
            with postgresql_database() as url:
                if url is None:
                    raise SystemExit(
                        "--database postgresql needs MAINTENANCE_TASKS_TEST_DATABASE_URL."
                    )
                report = chaos.execute(url)
        else:
            report = chaos.execute(f"sqlite:///{directory / 'chaos.db'}")
    except BaseException:
        print(f"chaos: worker logs kept in {directory}", file=sys.stderr)
        raise
    report.stall_check()
    (directory / "faults.log").write_text(
        "".join(
            f"{at:8.2f} {kind}{'' if hit else ' (idle target)'}\n"
            for at, kind, hit in report.timeline
        )
    )
    if report.ok:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        report.logs = str(directory)
    return report
