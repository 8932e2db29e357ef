"""A reduced run of the CSV benchmark, so that the script keeps working."""

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
