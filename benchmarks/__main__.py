"""Run the benchmarks and print one Markdown table per section.

    python -m benchmarks                 (or: make bench)
    python -m benchmarks --rows 20000 --repeat 1 --section iteration

PostgreSQL is measured when ``MAINTENANCE_TASKS_TEST_DATABASE_URL`` names a server (``make
bench`` sets it as ``make test`` does); the benchmark creates a database of its own there and
drops it at the end. With ``--output FILE`` the tables and the command also go into FILE,
as the "Latest figures" section of ``benchmarks/README.md``. With ``--check`` the exit
status is 1 when a table shows a missed target (the figures are noisy: a CI gate would
want a margin, or repeats).

CSV imports are measured by ``python -m benchmarks.csv_import`` (a 1,000,000-row file through
a real worker process), which takes a few minutes of its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import sqlalchemy

from . import (
    dashboard,
    dry_runs,
    iteration,
    previews,
    reaction,
    retention,
    scaling,
    services,
    speed,
    statements,
)
from .harness import Bench, Table, Target

ROOT = Path(__file__).resolve().parent.parent

#: Every section, in the order printed. A section takes the bench and returns its tables;
#: the dashboard and CSV measurements join this list as sections of their own.
SECTIONS: dict[str, t.Callable[[Bench], list[Table]]] = {
    "iteration": iteration.iteration,
    "rows": iteration.rows,
    "set-based": iteration.set_based,
    "skip": iteration.skip_policy,
    "dry-run": dry_runs.dry_run,
    "preview": previews.preview,
    "statements": statements.statements,
    "reaction": reaction.reaction,
    "dashboard": dashboard.dashboard,
    "scaling": scaling.scaling,
    "retention": retention.retention,
    "speed": speed.speed,
}


def _counts(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` as ``(1, 2, 4)``: worker counts, each at least 1."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        message = f"not a comma-separated list of numbers: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be at least 1: {text!r}")
    return counts


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Measure flask-maintenance-tasks."
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the table (200,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side per cell (5)")
    parser.add_argument(
        "--preview-rows",
        type=int,
        default=previews.PREVIEW_ROWS,
        help="rows of the table the preview section fills (5,000,000)",
    )
    parser.add_argument(
        "--scaling-items",
        type=int,
        default=scaling.ITEMS,
        help="items of the scaling section's 2 ms task (20,000; at most --rows)",
    )
    parser.add_argument(
        "--scaling-workers",
        type=_counts,
        default=scaling.WORKERS,
        help="worker counts of the scaling section's 2 ms task (1,2,4,8)",
    )
    parser.add_argument(
        "--scaling-update-rows",
        type=int,
        default=scaling.UPDATE_ROWS,
        help="rows of the scaling section's UPDATE task (40,000; at most --rows)",
    )
    parser.add_argument(
        "--scaling-update-workers",
        type=_counts,
        default=scaling.UPDATE_WORKERS,
        help="worker counts of the scaling section's UPDATE task (1,2,4)",
    )
    parser.add_argument(
        "--retention-runs",
        type=int,
        default=retention.RUNS,
        help="old runs the retention section prunes on PostgreSQL (100,000; the issue asks "
        "for 1,000,000)",
    )
    parser.add_argument(
        "--speed-rate",
        type=float,
        default=speed.RATE,
        help="the rate cap of the speed section, items per second (200)",
    )
    parser.add_argument(
        "--speed-seconds",
        type=float,
        default=speed.SECONDS,
        help="how long the speed section measures the cap, seconds (30)",
    )
    parser.add_argument(
        "--speed-window",
        type=float,
        default=speed.WINDOW,
        help="the windows the speed section's rates are taken over, seconds (10, as the issue "
        "asks; shorter only for a quick look)",
    )
    parser.add_argument(
        "--section",
        action="append",
        choices=list(SECTIONS),
        help="run only this section (repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="also write the tables, dated, as benchmarks/README.md's latest figures, to this file",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a table shows a missed target"
    )
    args = parser.parse_args(argv)
    chosen = args.section or list(SECTIONS)

    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="mtasks-bench-") as folder:
        directory = Path(folder)
        with (
            services.redis_server(directory) as redis_url,
            services.postgresql_database() as pg_url,
        ):
            databases = [("SQLite", f"sqlite:///{directory / 'bench.db'}")]
            if pg_url is None:
                _log(f"{services.PG_ENV} is unset: PostgreSQL is skipped")
            else:
                databases.append(("PostgreSQL", pg_url))
            targets = []
            try:
                for name, url in databases:
                    _log(f"seeding {args.rows:,} rows on {name}")
                    targets.append(Target(name, url, redis_url, args.rows))
                bench = Bench(
                    targets,
                    redis_url,
                    args.rows,
                    args.repeat,
                    directory,
                    _log,
                    args.preview_rows,
                    args.scaling_items,
                    args.scaling_workers,
                    args.scaling_update_rows,
                    args.scaling_update_workers,
                    retention_runs=args.retention_runs,
                    speed_rate=args.speed_rate,
                    speed_seconds=args.speed_seconds,
                    speed_window=args.speed_window,
                )
                for section in chosen:
                    _log(f"section {section}")
                    for table in SECTIONS[section](bench):
                        print(table.markdown() + "\n", flush=True)
                        tables.append(table)
            finally:
                for target in targets:
                    target.close()
    if args.output is not None:
        command = (
            "make bench"
            if argv is None and sys.argv[1:] == []
            else ("python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv))
        )
        write(args.output, tables, command)
        _log(f"tables written to {args.output}")
    missed = [table.title for table in tables if table.missed()]
    if missed:
        _log(f"targets missed in: {', '.join(missed)}")
    return 1 if args.check and missed else 0


def write(path: Path, tables: list[Table], command: str) -> None:
    """The "Latest figures" section of ``benchmarks/README.md``: the date, the machine, the tables.

    Paste it over that section; the rest of the file says how to run the benchmarks.
    """
    when = dt.date.today().isoformat()
    machine = (
        f"{os.cpu_count()} cores shared with other jobs, Python {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}"
    )
    lines = [
        "## Latest figures",
        "",
        f"Measured on {when} ({machine}), with `{command}`.",
        "",
    ]
    for table in tables:
        lines.append(table.markdown())
        lines.append("")
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
