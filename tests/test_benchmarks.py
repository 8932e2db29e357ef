"""Reduced runs of the benchmarks, so that the scripts keep working."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_the_csv_import_benchmark_runs_on_a_small_file_and_reports_both_limits():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.csv_import", "--rows", "5000", "--resume-at", "4500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| CSV file | 5,000 rows" in result.stdout
    assert "run resumed at row 4,500: job start to first processed row" in result.stdout
    assert (
        "Command: `python -m benchmarks.csv_import --rows 5000 --resume-at 4500`" in result.stdout
    )
    assert "Both limits held" in result.stdout


def test_the_skip_policy_cells_run_on_a_small_table_and_report_a_ratio_per_database():
    """Both sides of each cell walk every row (each side checks its count); no time is asserted."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--section", "skip", "--rows", "2000", "--repeat=1"],
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
            "2000",
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
    assert [cell[8] for cell in cells] == ["0", "2,000"]
