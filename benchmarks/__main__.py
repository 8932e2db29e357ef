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

from . import dashboard, dry_runs, iteration, previews, reaction, services, statements
from .harness import Bench, Table, Target

ROOT = Path(__file__).resolve().parent.parent

#: Every section, in the order printed. A section takes the bench and returns its tables;
#: the dashboard and CSV measurements join this list as sections of their own.
SECTIONS: dict[str, t.Callable[[Bench], list[Table]]] = {
    "iteration": iteration.iteration,
    "set-based": iteration.set_based,
    "skip": iteration.skip_policy,
    "dry-run": dry_runs.dry_run,
    "preview": previews.preview,
    "statements": statements.statements,
    "reaction": reaction.reaction,
    "dashboard": dashboard.dashboard,
}


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
