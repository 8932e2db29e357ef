"""Section: pruning many old runs on PostgreSQL while a task runs.

The runs table is filled with ``--retention-runs`` ended runs (100,000 by default;
``--retention-runs 1000000`` for the issue's million), 200 days old, spread over ten task
names, each with one event and every tenth with a failure: one set-based
``INSERT ... SELECT generate_series`` per table. Meanwhile a real ``flask mtasks worker``
runs ``TickTimesTask``, which sleeps 5 ms per item and writes the time of each item to a
file; its progress is committed once per ticker delay (one second), an UPDATE of the same
runs table that the prune deletes from.

Then ``flask mtasks prune`` runs in a process of its own, which times each batch's
transaction and reads its resident memory after each batch. The table gives:

- the prune's rate and its longest batch;
- the task's longest gap between two items while nothing is pruned (the same number of
  seconds just before), and while the prune runs. Target: the gap during the prune is at
  most the gap without it plus the longest batch (a tick waits at most for one batch);
- the pruning process's resident memory after its first batch and at its peak. Target: the
  peak is at most 20 MiB above the first batch (memory stays flat however many runs go).

PostgreSQL only: it is the database the issue asks about, and the only one where the task and
the prune write at the same time (SQLite lets one writer at a time commit).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa

from .benchapp import db, mtasks
from .harness import MISSED, Bench, Table, Target, number
from .scaling import Workers

ROOT = Path(__file__).resolve().parent.parent

#: Old runs pruned by default (``--retention-runs``).
RUNS = 100_000
#: Seconds the task's gaps are watched before the prune, to compare with: 10, or
#: one per 10,000 runs pruned when fewer (a small run, as the test suite's, waits less).
BASELINE = 10.0


def _baseline(runs: int) -> float:
    return min(BASELINE, max(1.0, runs / 10_000))


#: How far the pruning process's memory may grow beyond its first batch (MiB).
FLAT_MIB = 20.0
#: Environment variable that makes ``python -m benchmarks.retention`` the pruning process.
REPORT_ENV = "MTASKS_BENCH_PRUNE_REPORT"


def retention(bench: Bench) -> list[Table]:
    targets = [target for target in bench.targets if target.is_postgresql]
    if not targets:
        bench.log("retention: PostgreSQL is not available, section skipped")
        return []
    target = targets[0]
    runs = bench.retention_runs
    workers = Workers(target, bench.directory, "retention", 1)
    times = bench.directory / "tick-times.txt"
    try:
        with target.context():
            run = mtasks.run("TickTimesTask", {"path": str(times)})
        _wait_for(lambda: times.exists() and times.stat().st_size > 0, "the task to tick")
        bench.log(f"retention: inserting {runs:,} old runs")
        inserted = _insert_old_runs(target, runs)
        target.settle()
        before = time.time()
        baseline = _baseline(runs)
        time.sleep(baseline)
        bench.log("retention: pruning")
        report = _prune(target, bench.directory)
        after = time.time()
        with target.context():
            mtasks.cancel(run.id)
            left = db.session.scalar(
                sa.text("SELECT count(*) FROM maintenance_tasks_runs WHERE task_name LIKE 'Old%'")
            )
    finally:
        workers.stop()
    stamps = [float(line) for line in times.read_text().split()]
    quiet_gap = _longest_gap(stamps, before - baseline, before)
    pruning_gap = _longest_gap(stamps, report["started"], report["ended"])
    seconds = report["ended"] - report["started"]
    longest_batch = report["longest_batch"]
    waited_ok = pruning_gap <= quiet_gap + longest_batch
    growth = report["peak_mib"] - report["first_batch_mib"]
    rows = [
        [
            f"{inserted:,} runs",
            f"{report['runs']:,} in {report['batches']:,} batches",
            number(report["runs"] / seconds),
            number(longest_batch * 1000),
            number(quiet_gap * 1000),
            number(pruning_gap * 1000),
            "yes" if waited_ok else MISSED,
            f"{report['first_batch_mib']:.0f} / {report['peak_mib']:.0f}",
            "yes" if growth <= FLAT_MIB else MISSED,
        ]
    ]
    notes = [
        f"Pruned in {seconds:,.0f} s ({after - before:,.0f} s with the {baseline:.0f} s before); "
        f"{left:,} old runs left (the latest of each of the ten task names).",
        "A gap is the longest time between two items of the running task (5 ms each, its "
        "progress committed once a second).",
    ]
    return [
        Table(
            "Retention: pruning old runs while a task runs (PostgreSQL)",
            [
                "runs",
                "pruned",
                "runs/s",
                "longest batch ms",
                "task gap ms, no prune",
                "task gap ms, pruning",
                "gap <= no prune + 1 batch",
                "RSS MiB, 1st batch / peak",
                "flat (<= 20 MiB more)",
            ],
            rows,
            notes,
        )
    ]


def _wait_for(predicate: t.Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _insert_old_runs(target: Target, count: int) -> int:
    """``count`` runs ended 200 days ago, one event each and a failure every tenth, set-based."""
    with target.context():
        with db.engine.begin() as connection:
            connection.execute(
                sa.text(
                    """
                    INSERT INTO maintenance_tasks_runs
                        (task_name, status, tick_count, time_running, lock_version,
                         error_policy, failure_count, dry_run, partitions,
                         created_at, updated_at, started_at, ended_at)
                    SELECT 'OldTask' || (g % 10), 'succeeded', 10, 1.0, 3, 'stop', 0, false, 1,
                           now() - interval '200 days', now() - interval '200 days',
                           now() - interval '200 days', now() - interval '200 days'
                    FROM generate_series(1, :count) AS g
                    """
                ),
                {"count": count},
            )
            connection.execute(
                sa.text(
                    """
                    INSERT INTO maintenance_tasks_events
                        (run_id, task_name, action, outcome, origin, created_at)
                    SELECT id, task_name, 'succeeded', 'done', 'engine', ended_at
                    FROM maintenance_tasks_runs WHERE task_name LIKE 'OldTask%'
                    """
                )
            )
            connection.execute(
                sa.text(
                    """
                    INSERT INTO maintenance_tasks_failures
                        (run_id, error_class, attempt, status, created_at)
                    SELECT id, 'ValueError', 1, 'unresolved', ended_at
                    FROM maintenance_tasks_runs
                    WHERE task_name LIKE 'OldTask%' AND id % 10 = 0
                    """
                )
            )
    return count


def _prune(target: Target, directory: Path) -> dict[str, t.Any]:
    """Run the pruning process (this module as a script) and read its report."""
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".json", delete=False) as report:
        path = Path(report.name)
    log = directory / "prune.log"
    with open(log, "wb") as out:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.retention"],
            cwd=ROOT,
            env={**target.env(), REPORT_ENV: str(path)},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"the pruning process exited {completed.returncode}; see {log}")
    return t.cast(dict[str, t.Any], json.loads(path.read_text()))


def _longest_gap(stamps: list[float], start: float, end: float) -> float:
    """The longest time between two items of which at least one fell in ``[start, end]``."""
    longest = 0.0
    for previous, current in zip(stamps, stamps[1:], strict=False):
        if current >= start and previous <= end:
            longest = max(longest, current - previous)
    return longest


def _rss_mib() -> float:
    """This process's resident memory now, in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pruning_process(report: Path) -> None:
    """Prune with the benchmark app's settings, timing each batch; write the report."""
    from flask_maintenance_tasks.retention import prune
    from flask_maintenance_tasks.state import get_state

    from .benchapp import create_app

    app = create_app()
    batches: list[float] = []
    memory: list[float] = []
    began: list[float] = []
    with app.app_context():
        engine = db.engine

        def begin(connection: sa.Connection) -> None:
            began.append(time.perf_counter())

        def commit(connection: sa.Connection) -> None:
            batches.append(time.perf_counter() - began[-1])
            memory.append(_rss_mib())

        sa.event.listen(engine, "begin", begin)
        sa.event.listen(engine, "commit", commit)
        started = time.time()
        pruned = prune(get_state())
        ended = time.time()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.write_text(
        json.dumps(
            {
                "runs": pruned.runs,
                "events": pruned.events,
                "failures": pruned.failures,
                "batches": pruned.batches,
                "started": started,
                "ended": ended,
                "longest_batch": max(batches, default=0.0),
                "first_batch_mib": memory[0] if memory else 0.0,
                "peak_mib": max(peak_kib / 1024, *memory) if memory else peak_kib / 1024,
            }
        )
    )


if __name__ == "__main__":
    _pruning_process(Path(os.environ[REPORT_ENV]))
