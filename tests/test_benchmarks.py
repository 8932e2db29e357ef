"""Reduced runs of the benchmarks, so that the scripts keep working."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.services import PG_ENV

pytestmark = pytest.mark.slow


def test_the_csv_import_benchmark_runs_on_a_small_file_and_reports_both_limits():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.csv_import", "--rows", "2000", "--resume-at", "1800"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| CSV file | 2,000 rows" in result.stdout
    assert "run resumed at row 1,800: job start to first processed row" in result.stdout
    assert (
        "Command: `python -m benchmarks.csv_import --rows 2000 --resume-at 1800`" in result.stdout
    )
    assert "Both limits held" in result.stdout


def test_the_skip_policy_cells_run_on_a_small_table_and_report_a_ratio_per_database():
    """Both sides of each cell walk every row (each side checks its count); no time is asserted."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--section", "skip", "--rows", "500", "--repeat=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### Skip policy, no failures" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| SQLite |")]
    assert [row.split(" | ")[1] for row in rows] == ["no-op", "one ORM attribute"]


def test_the_dry_run_cells_run_on_a_small_table_and_check_what_each_dry_run_counted():
    """Each dry run is checked (table unchanged, every row counted); no time is asserted."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--section",
            "dry-run",
            "--rows",
            "500",
            "--repeat=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### Dry runs" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| SQLite |")]
    cells = [row.split(" | ") for row in rows]
    assert [cell[1] for cell in cells] == ["no-op", "one ORM attribute"]
    # The rows each dry run counted as updated: none for the no-op, every row for the other.
    assert [cell[8] for cell in cells] == ["0", "500"]


def test_the_row_collection_cell_runs_on_a_small_table_and_reports_a_ratio_per_database():
    """Both sides walk every row (each side checks its count); no time is asserted."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--section", "rows", "--rows", "1000", "--repeat=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### Row collections" in result.stdout
    assert "median paired ratio" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| SQLite |")]
    assert [row.split(" | ")[1] for row in rows] == ["no-op, rows of 2 columns"]


def _scaling(env: dict[str, str], workers: str) -> str:
    """The scaling section at a tiny size: 100 items and rows, with these 2 ms task workers."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--section=scaling",
            "--rows=200",
            "--scaling-items=100",
            f"--scaling-workers={workers}",
            "--scaling-update-rows=100",
            "--scaling-update-workers=1,2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _cells(output: str, title: str) -> list[list[str]]:
    """The cells of the table ``title`` in the benchmark's output."""
    table = output.split(f"### {title}\n\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip("| ").split(" | ") for line in table.splitlines()[2:]]


def test_the_scaling_section_falls_back_to_sqlite_without_postgresql():
    """Each run is checked (every item counted, one partition per worker); no time is asserted."""
    env = {name: value for name, value in os.environ.items() if name != PG_ENV}
    output = _scaling(env, "1,2")
    cells = _cells(output, "Scaling with partitions, a task waiting 2 ms per item")
    assert [(cell[0], cell[1], cell[2]) for cell in cells] == [
        ("SQLite", "1", "100"),
        ("SQLite", "2", "100"),
    ]
    assert cells[0][5] == "1.00"
    assert "Measured on SQLite, because PostgreSQL was not available" in output
    assert "one UPDATE per row" not in output


def test_the_scaling_section_measures_both_tasks_on_postgresql():
    """The UPDATE task's runs are checked too: every row updated exactly once.

    (The 2 ms task runs with one worker only: its partitions are the test above's.)
    """
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is unset: no PostgreSQL")
    output = _scaling(dict(os.environ), "1")
    sleep = _cells(output, "Scaling with partitions, a task waiting 2 ms per item")
    assert [(cell[0], cell[1]) for cell in sleep] == [("PostgreSQL", "1")]
    update = _cells(output, "Scaling with partitions, one UPDATE per row")
    assert [(cell[0], cell[1], cell[2]) for cell in update] == [
        ("PostgreSQL", "1", "100"),
        ("PostgreSQL", "2", "100"),
    ]
    assert update[0][5] == "1.00"


def test_the_retention_section_prunes_every_old_run_but_the_latest_of_each_task():
    """A small prune (2,000 runs) while the task ticks; no time is asserted."""
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is unset: no PostgreSQL")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--section=retention",
            "--rows=5000",
            "--retention-runs=2000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cells = _cells(result.stdout, "Retention: pruning old runs while a task runs (PostgreSQL)")
    assert [cell[:2] for cell in cells] == [["2,000 runs", "1,990 in 4 batches"]]
    assert "10 old runs left" in result.stdout


def test_the_speed_section_reports_the_rate_of_each_window_on_sqlite():
    """A shortened cap (4 s, windows of 2 s); the rates are printed, no bound is asserted."""
    env = {name: value for name, value in os.environ.items() if name != PG_ENV}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--section=speed",
            "--rows=3000",
            "--repeat=1",
            "--speed-rate=100",
            "--speed-seconds=4",
            "--speed-window=2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### Rate cap set on a running run" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("| SQLite |"))
    cells = row.strip("| ").split(" | ")
    assert cells[1:3] == ["100/s", "4 s"]
    assert int(cells[3]) > 0
