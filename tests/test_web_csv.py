"""CSV tasks in the dashboard: the file field, refusals, and "Download CSV"."""

from __future__ import annotations

import io
import typing as t

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks.models import CSVFile, Run
from tests.support.apps import configure
from tests.support.dashboard import Dashboard, text
from tests.support.records import fresh_run
from tests.support.workers import drain
from tests.testapp import Item

CSV = b"id,title\n1,first\n2,second\n3,<script>alert(1)</script>\n"


def _runs(db: t.Any) -> list[Run]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Run)))


def _files(db: t.Any) -> int:
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(CSVFile)) or 0)


def _upload(dash: Dashboard, content: bytes, name: str = "items.csv") -> t.Any:
    return dash.post(
        "/tasks/ImportItemsTask/runs",
        {"csv_file": (io.BytesIO(content), name), "sleep": "0"},
        content_type="multipart/form-data",
    )


def test_a_csv_task_form_has_a_required_file_field(app):
    page = text(Dashboard(app).get("/tasks/ImportItemsTask"))
    assert 'enctype="multipart/form-data"' in page
    assert '<input type="file" id="csv_file" name="csv_file"' in page
    other = text(Dashboard(app).get("/tasks/CountItemsTask"))
    assert 'type="file"' not in other


def test_uploading_a_file_starts_a_run_that_imports_it(app, db):
    dash = Dashboard(app)
    response = _upload(dash, CSV)
    assert response.status_code == 303
    [run] = _runs(db)
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    titles = list(db.session.scalars(sa.select(Item.title).order_by(Item.id)))
    assert titles == ["first", "second", "<script>alert(1)</script>"]


def test_a_csv_task_without_a_file_is_refused_and_nothing_is_written(app, db):
    response = Dashboard(app).post("/tasks/ImportItemsTask/runs", {"sleep": "0"})
    assert response.status_code == 422
    assert "ImportItemsTask is a CSV task: give it a CSV file" in text(response)
    assert _runs(db) == [] and _files(db) == 0


def test_a_binary_file_is_refused_next_to_the_file_field(app, db):
    response = _upload(Dashboard(app), b"PK\x03\x04\x00\x00binary", name="book.xlsx")
    assert response.status_code == 422
    page = text(response)
    assert 'id="csv_file-error"' in page
    assert "The run was not started: the CSV file was refused." in page
    assert _runs(db) == [] and _files(db) == 0


def test_a_file_above_the_limit_is_refused_with_413(app, db):
    configure(app, max_csv_bytes=20)
    response = _upload(Dashboard(app), CSV)
    assert response.status_code == 413
    assert "The run was not started: the CSV file is too large." in text(response)
    assert _runs(db) == [] and _files(db) == 0


@pytest.mark.both_databases  # PostgreSQL refuses a NUL in text, and text longer than its column
def test_an_odd_file_name_is_kept_as_the_database_can_hold_it(app, db):
    dash = Dashboard(app)
    for task, name in [("RecordRowsTask", "a\x00b.csv"), ("ImportItemsInBatchesTask", "é" * 300)]:
        response = dash.post(
            f"/tasks/{task}/runs",
            {"csv_file": (io.BytesIO(CSV), name)},
            content_type="multipart/form-data",
        )
        assert response.status_code == 303
    db.session.remove()
    kept = list(db.session.scalars(sa.select(CSVFile.original_filename).order_by(CSVFile.id)))
    assert kept[0] == "ab.csv"
    assert kept[1] == "…" + "é" * 254


def test_download_csv_gives_back_the_uploaded_file(app, db):
    dash = Dashboard(app)
    _upload(dash, CSV, name="my items.csv")
    [run] = _runs(db)
    page = text(dash.get("/tasks/ImportItemsTask"))
    assert f'href="/maintenance_tasks/runs/{run.id}/csv" download>Download CSV</a>' in page
    response = dash.get(f"/runs/{run.id}/csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.get_data() == CSV
    assert response.headers["Content-Disposition"].startswith('attachment; filename="')
    assert response.headers["Content-Disposition"].endswith('_ImportItemsTask.csv"')


def test_download_of_a_run_without_a_file_is_404(app, mtasks):
    run = mtasks.run("ListTask")
    assert Dashboard(app).get(f"/runs/{run.id}/csv").status_code == 404
    assert Dashboard(app).get("/runs/999/csv").status_code == 404
