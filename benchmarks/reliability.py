"""Run the fault suite and print what each fault did to a run, as a Markdown table.

    python -m benchmarks.reliability          (or: make reliability)
    python -m benchmarks.reliability --chaos 600 --seed 7 [--database sqlite|postgresql]
                                             (or: make reliability ARGS='--chaos 600 --seed 7')

Every fault of tests/test_faults.py is injected into real ``flask mtasks
worker`` processes half-way through a run of 300 rows (2,000 rows, every
seventh failing, for the faults of a ``skip``-policy run), on SQLite and on
PostgreSQL; those of tests/test_partition_faults.py into a run of 400 rows cut
into four partitions (K=4), on four workers. The table says how many rows
were missed or changed twice, and how many seconds passed between the fault
and the run's next committed progress (with ``MAINTENANCE_TASKS_STUCK_AFTER``
shortened to 2 s, and workers looking for orphaned runs every 0.5 s).

With ``--chaos SECONDS`` it runs the chaos mode of :mod:`benchmarks.chaos`
instead: random faults of every kind on several workers for that long, then
the checks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ENV = "MAINTENANCE_TASKS_TEST_DATABASE_URL"

#: What happens and what an operator sees, per fault.
STORY = {
    "SIGTERM to the worker": (
        "the task stops at the next item, commits, the run is handed to the next worker",
        "`interrupted` (worker shutdown), then `running`",
    ),
    "SIGTERM to the worker and its work horse": (
        "same as SIGTERM to the worker",
        "`interrupted` (worker shutdown), then `running`",
    ),
    "SIGKILL of the work horse": (
        "the open tick is rolled back; the worker recovers the run once its heartbeat is stale",
        "`running` with an old heartbeat, then `interrupted` (recovery)",
    ),
    "SIGKILL of the worker and its work horse (machine lost)": (
        "the open tick is rolled back; another worker recovers the run",
        "`running` with an old heartbeat, then `interrupted` (recovery)",
    ),
    "SIGKILL of the worker (its work horse carries on)": (
        "the work horse finishes its slice on its own",
        "nothing unusual",
    ),
    "Redis flushed while a run is running": (
        "the running slice goes on; the database holds the state",
        "nothing unusual",
    ),
    "Redis flushed while a run is enqueued": (
        "the job is lost; recovery enqueues a new one once the run is stale",
        "`enqueued` for the stuck limit, then `running`",
    ),
    "Redis restarted while a run is running": (
        "the running slice goes on; workers reconnect",
        "nothing unusual",
    ),
    "Redis restarted while a run is enqueued": (
        "the job is lost with Redis; recovery enqueues a new one",
        "`enqueued` for the stuck limit, then `running`",
    ),
    "Worker's database connection killed (pg_terminate_backend)": (
        "the open tick dies with the connection; the run is handed to a new slice after 1 s",
        "`interrupted` (connection lost), then `running`",
    ),
    "The same slice delivered to two workers at once": (
        "the first slice claims the run; the second finds it claimed and stops",
        "nothing unusual",
    ),
    "SIGKILL of the work horse, skip policy, every 7th row failing": (
        "the open tick is rolled back with its ledger rows; the recovered slice records them again",
        "`running` with an old heartbeat, then `interrupted` (recovery); each failure listed once",
    ),
    "SIGTERM to the worker, skip policy, every 7th row failing": (
        "the last tick is committed with its ledger rows; the run is handed to the next worker",
        "`interrupted` (worker shutdown), then `running`; each failure listed once",
    ),
    "The same slice delivered to two workers at once, skip policy, every 7th row failing": (
        "the second slice finds the run claimed and stops without writing a ledger row",
        "nothing unusual; each failure listed once",
    ),
    "Work horse frozen (SIGSTOP) past the stuck limit, then continued": (
        "another worker takes the run over; the woken horse is fenced off at its next tick",
        "`interrupted` (recovery), then `running`",
    ),
    "K=4, four workers: SIGKILL of one partition's work horse": (
        "the partition's open tick is rolled back; an idle worker recovers that partition "
        "once its heartbeat is stale, the others go on",
        "`running` until the run is done",
    ),
    "K=4, four workers: SIGKILL of one worker and its work horse": (
        "same, recovered by one of the three other workers",
        "`running` until the run is done",
    ),
    "K=4, four workers: SIGTERM to all, then four new workers": (
        "each partition commits its tick and is interrupted at its cursor, its next slice queued",
        "`running` (its partitions `interrupted`), then the new workers carry on",
    ),
    "K=4, four workers: a duplicated slice of one partition": (
        "one delivery claims the partition; the others find it claimed and stop without writing",
        "nothing unusual",
    ),
    "K=4, four workers: Redis restarted mid-run": (
        "the running slices go on; workers reconnect",
        "nothing unusual",
    ),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--chaos", type=float, metavar="SECONDS", help="inject random faults for SECONDS"
    )
    parser.add_argument("--seed", type=int, default=None, help="the chaos's seed (default: random)")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default=None,
        help="the chaos's database (default: postgresql when "
        "MAINTENANCE_TASKS_TEST_DATABASE_URL is set, else sqlite)",
    )
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the run (default 20000)")
    return parser.parse_args(argv)


def chaos(args: argparse.Namespace) -> int:
    from benchmarks.chaos import ChaosConfig, run_chaos

    database = args.database or ("postgresql" if os.environ.get(PG_ENV) else "sqlite")
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    config = ChaosConfig(args.chaos, seed, database, args.workers, args.rows)
    print(f"chaos: {config.replay()}", flush=True)
    report = run_chaos(config)
    print(report.render())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.chaos is not None:
        return chaos(args)
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "faults.jsonl"
        env = {**os.environ, "MTASKS_RELIABILITY_REPORT": str(report)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/test_faults.py",
                "tests/test_partition_faults.py",
                "-q",
                "-p",
                "no:cacheprovider",
                "-k",
                "not racing and not resume_requests and not cannot_be_settled",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if not report.exists():
            print(result.stdout[-3000:], file=sys.stderr)
            print("No fault was measured.", file=sys.stderr)
            return 1
        rows = [json.loads(line) for line in report.read_text().splitlines()]
    print(
        "| fault | database | what happens | what an operator sees "
        "| rows missed | rows changed twice | seconds to recover |"
    )
    print("|---|---|---|---|---:|---:|---:|")
    for row in rows:
        happens, sees = STORY.get(row["fault"], ("", ""))
        seconds = row["recovered_after"]
        print(
            f"| {row['fault']} | {row['database']} | {happens} | {sees} | {row['missed']} "
            f"| {row['twice']} | {'-' if seconds is None else f'{seconds:.1f}'} |"
        )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"\npytest: {summary}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
