"""Section: how a partitioned run scales with the number of workers.

Two tasks, each run by W real ``flask mtasks worker`` processes (forking workers, as in
production) at default settings, the run cut into K = W partitions (K = 1 is a plain run):

- ``ScalingSleepTask`` waits 2 ms on each item, like a task calling an external service: its
  throughput should grow with the workers. Target: a rate at W workers of at least 0.8 x W
  times the rate at one worker. It runs on PostgreSQL when the bench has it (SQLite lets one
  writer at a time commit, and eight partitions commit a tick each every second), on SQLite
  otherwise, with a note.
- ``ScalingUpdateTask`` sends one UPDATE per row, on PostgreSQL only: a curve with no target,
  which shows where the database and the machine stop it scaling.

A rate counts the run's items over the run's own timestamps, from ``started_at`` (the first job
took the run, before it was cut) to ``ended_at`` (the run succeeded, after its last partition
and the run's settle). The workers are started, and registered with Redis, before the run is
created, so their start-up is left out; each horse's fork is not. Columns say where the rest
of the time went: how long after the run's start the last partition began, and how far apart
the partitions ended.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa
from rq import Worker

from flask_maintenance_tasks.models import Run

from .benchapp import Row, db, mtasks
from .harness import MISSED, Bench, Table, Target, mtasks_executor, number

ROOT = Path(__file__).resolve().parent.parent

#: Items of the I/O-bound task, and what it waits on each.
ITEMS = 20_000
SLEEP = 0.002
#: Worker counts of the I/O-bound task, and its target: rate_W >= TARGET x W x rate_1.
WORKERS = (1, 2, 4, 8)
TARGET = 0.8
#: Rows the database-bound task updates, and its worker counts.
UPDATE_ROWS = 40_000
UPDATE_WORKERS = (1, 2, 4)
#: Longest wait for workers to register or a run to end.
TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True)
class Measure:
    """One run to the end, by W workers in K partitions."""

    workers: int
    items: int
    #: From the run's ``started_at`` to its ``ended_at``.
    seconds: float
    #: From the run's ``started_at`` to the latest ``started_at`` of its partitions.
    last_start: float
    #: From the first partition's ``ended_at`` to the last one's.
    end_spread: float
    #: From the ``mtasks.run`` call to this process reading ``succeeded``.
    wall: float
    #: Milliseconds per item of the slowest partition, its ``started_at`` to its ``ended_at``.
    item_ms: float
    #: Cores the whole machine kept busy meanwhile (other jobs included), if it can tell.
    busy: float | None

    @property
    def rate(self) -> float:
        return self.items / self.seconds


class RunFailed(RuntimeError):
    """The measured run ended without succeeding (errored, cancelled or paused)."""


class Workers:
    """``count`` ``flask mtasks worker`` processes on the target's app, each logging to a file."""

    def __init__(self, target: Target, directory: Path, name: str, count: int) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        try:
            for n in range(count):
                path = directory / f"{name}-{n}.log"
                with open(path, "wb") as log:
                    self.processes.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "flask", "mtasks", "worker"],
                            cwd=ROOT,
                            env=target.env(),
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
                self.logs.append(path)
            self._wait_registered(target, count)
        except BaseException:
            self.stop()
            raise

    def _wait_registered(self, target: Target, count: int) -> None:
        with target.context():
            executor = mtasks_executor()
            queue = executor.queue()
            deadline = time.monotonic() + TIMEOUT
            while Worker.count(connection=executor.connection, queue=queue) < count:
                for process, log in zip(self.processes, self.logs, strict=True):
                    if process.poll() is not None:
                        raise RuntimeError(f"a worker exited {process.returncode}; see {log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{count} workers did not register in {TIMEOUT:.0f}s")
                time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def measure(
    target: Target,
    directory: Path,
    task: str,
    arguments: dict[str, t.Any],
    items: int,
    workers: int,
) -> Measure:
    """Run ``task`` to the end with ``workers`` workers and as many partitions."""
    pool = Workers(target, directory, f"{task}-{target.name}-{workers}", workers)
    try:
        with target.context():
            cpu = _cpu_times()
            start = time.perf_counter()
            run = mtasks.run(task, arguments, partitions=workers)
            deadline = time.monotonic() + TIMEOUT
            while True:
                found = mtasks.get_run(run.id)
                assert found is not None
                if found.status == "succeeded":
                    wall = time.perf_counter() - start
                    busy = _busy(cpu, _cpu_times())
                    break
                if found.status in ("errored", "cancelled", "paused"):
                    raise RunFailed(
                        f"{task} ended {found.status} on {target.name}: {found.error_message}; "
                        f"see {pool.logs[0]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{task} did not end in {TIMEOUT:.0f}s on {target.name}")
                time.sleep(0.01)
            db.session.rollback()
            parent = db.session.get(Run, run.id)
            assert parent is not None
            children = list(db.session.scalars(sa.select(Run).where(Run.parent_id == run.id)))
    finally:
        pool.stop()
    if parent.tick_count != items:
        raise RuntimeError(f"{task} counted {parent.tick_count} items, not {items}")
    if len(children) != (workers if workers > 1 else 0):
        raise RuntimeError(f"{task} had {len(children)} partitions, not {workers}")
    started, ended = _when(parent.started_at), _when(parent.ended_at)
    parts = children or [parent]
    return Measure(
        workers=workers,
        items=items,
        seconds=ended - started,
        last_start=max(_when(child.started_at) for child in parts) - started,
        end_spread=(
            max(_when(child.ended_at) for child in parts)
            - min(_when(child.ended_at) for child in parts)
        ),
        wall=wall,
        item_ms=max(
            (_when(child.ended_at) - _when(child.started_at)) * 1000 / child.tick_count
            for child in parts
        ),
        busy=busy,
    )


def _when(moment: dt.datetime | None) -> float:
    assert moment is not None
    return moment.timestamp()


def _cpu_times() -> tuple[int, int] | None:
    """The machine's CPU time so far, all and idle, in clock ticks (Linux only)."""
    try:
        with open("/proc/stat") as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(values), values[3] + values[4]  # idle and iowait


def _busy(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Cores busy on average between two readings of :func:`_cpu_times`."""
    if before is None or after is None or after[0] == before[0]:
        return None
    total, idle = after[0] - before[0], after[1] - before[1]
    return (total - idle) / total * (os.cpu_count() or 1)


def _cores(busy: float | None) -> str:
    return "—" if busy is None else f"{busy:.1f} of {os.cpu_count()}"


def _counter_sum(target: Target, upto: int) -> int:
    with target.context():
        total = db.session.scalar(sa.select(sa.func.sum(Row.counter)).where(Row.id <= upto))
        return int(total or 0)


def io_bound(bench: Bench) -> Table:
    """The sleep task at each worker count, against W times the one-worker rate."""
    target = next((t for t in bench.targets if t.is_postgresql), bench.targets[0])
    items = min(bench.scaling_items, bench.rows)
    arguments = {"upto": items, "seconds": SLEEP}
    rows = []
    failures = []
    single: float | None = None
    for workers in bench.scaling_workers:
        target.settle()
        try:
            found = measure(target, bench.directory, "ScalingSleepTask", arguments, items, workers)
        except RunFailed as failure:
            # A cell whose run failed misses its target; the next cells still run.
            bench.log(f"{target.name} sleep, {workers} workers: {failure}")
            first_line = str(failure).splitlines()[0][:300]
            failures.append(f"With {workers} workers the run failed: {first_line}")
            rows.append([target.name, str(workers), f"{items:,}", "failed"] + ["—"] * 6 + [MISSED])
            continue
        bench.log(
            f"{target.name} sleep, {workers} workers: {found.rate:,.0f} items/s "
            f"({found.seconds:.2f} s, wall {found.wall:.2f} s, {found.item_ms:.3f} ms per item, "
            f"last start {found.last_start:.3f} s, ends spread {found.end_spread:.3f} s, "
            f"{_cores(found.busy)} cores busy, load {_load()})"
        )
        if workers == 1:
            single = found.rate
        ratio = None if single is None else found.rate / (workers * single)
        rows.append(
            [
                target.name,
                str(workers),
                f"{items:,}",
                f"{found.seconds:.2f} s",
                number(found.rate),
                "—" if ratio is None else f"{ratio:.2f}",
                f"{found.item_ms:.2f}",
                f"{found.last_start:.2f} s",
                f"{found.end_spread:.2f} s",
                _cores(found.busy),
                "—" if ratio is None else ("yes" if ratio >= TARGET else MISSED),
            ]
        )
    ideal = items * SLEEP
    notes = [
        f"Default settings; {SLEEP * 1000:g} ms of `time.sleep` per item, so one worker can do "
        f"at most {1 / SLEEP:,.0f} items/s ({ideal:g} s for {items:,} items). W real `flask "
        "mtasks worker` processes, started and registered before the run; the run is cut into "
        "K = W partitions (W = 1: a plain run). Seconds and rates come from the run's "
        "timestamps, `started_at` to `ended_at`; *ratio* is rate_W / (W x rate_1). *Ms per "
        "item* is that of the slowest partition, from its start to its end; *last partition "
        "began* is the time from the run's start to the latest start of a partition; *ends "
        "spread* the time between the first and the last partition ending; *cores busy* the "
        "machine's average meanwhile, other jobs included. "
        f"Load average when the section ended: {_load()}.",
    ]
    if not target.is_postgresql:
        notes.append(
            "Measured on SQLite, because PostgreSQL was not available. SQLite has one write "
            "lock, and each tick of a partition takes it first (`BEGIN IMMEDIATE`) and holds "
            "it until the tick commits: partitions take turns instead of running side by "
            "side, and a tick that waits longer than the driver's busy timeout (5 s in "
            "Python's `sqlite3`) is handed to a new job and tried again a second later. "
            "Use PostgreSQL for partitioned runs."
        )
    notes.extend(failures)
    return Table(
        "Scaling with partitions, a task waiting 2 ms per item",
        [
            "database",
            "workers = partitions",
            "items",
            "seconds",
            "items/s",
            "ratio",
            "ms per item",
            "last partition began",
            "ends spread",
            "cores busy",
            f"≥ {TARGET:g}",
        ],
        rows,
        notes,
    )


def db_bound(bench: Bench) -> Table | None:
    """The UPDATE task at each worker count, as a curve (PostgreSQL only)."""
    target = next((t for t in bench.targets if t.is_postgresql), None)
    if target is None:
        bench.log("PostgreSQL is unavailable: the database-bound scaling curve is skipped")
        return None
    items = min(bench.scaling_update_rows, bench.rows)
    rows = []
    single: float | None = None
    for workers in bench.scaling_update_workers:
        target.settle()
        before = _counter_sum(target, items)
        found = measure(
            target, bench.directory, "ScalingUpdateTask", {"upto": items}, items, workers
        )
        if _counter_sum(target, items) - before != items:
            raise RuntimeError("ScalingUpdateTask did not update every row exactly once")
        bench.log(
            f"{target.name} update, {workers} workers: {found.rate:,.0f} rows/s "
            f"({found.seconds:.2f} s, wall {found.wall:.2f} s, "
            f"{_cores(found.busy)} cores busy, load {_load()})"
        )
        if workers == 1:
            single = found.rate
        rows.append(
            [
                target.name,
                str(workers),
                f"{items:,}",
                f"{found.seconds:.2f} s",
                number(found.rate),
                "—" if single is None else f"{found.rate / single:.2f}",
                "—" if single is None else f"{found.rate / (workers * single):.2f}",
                _cores(found.busy),
            ]
        )
    return Table(
        "Scaling with partitions, one UPDATE per row",
        [
            "database",
            "workers = partitions",
            "rows",
            "seconds",
            "rows/s",
            "speed-up",
            "of linear",
            "cores busy",
        ],
        rows,
        [
            "Default settings; each item sends `UPDATE bench_rows SET counter = counter + 1 "
            "WHERE id = ?` (the collection hands ids). Measured as above, no target: the "
            f"curve shows where the machine's {os.cpu_count()} cores, shared by the workers and "
            "the database server, stop the run from scaling. "
            f"Load average when the section ended: {_load()}.",
        ],
    )


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def scaling(bench: Bench) -> list[Table]:
    tables = [io_bound(bench)]
    curve = db_bound(bench)
    if curve is not None:
        tables.append(curve)
    return tables
