"""Both CSV storages, fed by ``flask mtasks run --csv`` in a real subprocess."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import csv_download
from flask_maintenance_tasks.models import CSVFile, csv_chunks_table
from tests.support.apps import FAST
from tests.support.csv_files import items_csv, table_counts, write
from tests.support.records import counters, fresh_run
from tests.support.workers import WorkerProcesses, drain
from tests.testapp import db

# The database storage keeps the file in chunk rows: both databases. The
# directory storage keeps only a record in the database: SQLite is enough.
pytestmark = pytest.mark.parametrize(
    ("storage", "database_url"),
    [("database", "sqlite"), ("database", "postgresql"), ("directory", "sqlite")],
    indirect=True,
)

LIMIT = 50_000


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


@pytest.fixture
def settings(storage: str, tmp_path: Path) -> dict[str, t.Any]:
    value = storage if storage == "database" else str(tmp_path / "csv-files")
    return {**FAST, "csv_storage": value, "max_csv_bytes": LIMIT}


def stored_files(settings: dict[str, t.Any]) -> list[str]:
    """The files in the directory storage, or the keys in the database storage."""
    if settings["csv_storage"] == "database":
        db.session.remove()
        keys = db.session.scalars(sa.select(csv_chunks_table.c.storage_key).distinct())
        return sorted(keys)
    directory = Path(settings["csv_storage"])
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def started(result: t.Any) -> int:
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def test_cli_run_with_a_path_stores_the_file_and_every_worker_reads_it(
    app, workers: WorkerProcesses, tmp_path, settings
):
    content = items_csv(300).encode()
    run_id = started(
        workers.cli("run", "ImportItemsTask", "--csv", str(write(tmp_path, "i.csv", content)))
    )
    drain(app)

    run = fresh_run(run_id)
    assert run.status == "succeeded"
    assert run.tick_count == run.tick_total == 300
    assert counters() == [1] * 300
    record = db.session.scalars(sa.select(CSVFile)).one()
    assert record.original_filename == "i.csv"
    assert (record.size, record.line_count) == (len(content), 301)
    if settings["csv_storage"] == "database":
        assert stored_files(settings) == [record.storage_key]
        assert record.storage_key.endswith(record.filename)
    else:
        assert stored_files(settings) == [record.filename] == [record.storage_key]
    assert re.fullmatch(r"\d{8}T\d{6}Z_ImportItemsTask\.csv", record.filename)
    download = csv_download(run)
    assert download is not None and b"".join(download.chunks) == content


def test_cli_run_with_standard_input_imports_what_was_piped(app, workers, settings):
    run_id = started(
        workers.cli("run", "ImportItemsTask", "--csv", "-", input=items_csv(40).encode())
    )
    drain(app)
    assert fresh_run(run_id).status == "succeeded"
    assert counters() == [1] * 40
    assert db.session.scalars(sa.select(CSVFile.original_filename)).one() == "stdin.csv"


def test_cli_refuses_too_large_standard_input_and_stores_nothing(app, workers, settings):
    result = workers.cli("run", "ImportItemsTask", "--csv", "-", input=items_csv(5000).encode())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: stdin.csv is too large: the limit is {LIMIT:,} bytes "
        "(MAINTENANCE_TASKS_MAX_CSV_BYTES) and the file has more than that."
    )
    assert table_counts() == (0, 0, 0)
    assert stored_files(settings) == []
