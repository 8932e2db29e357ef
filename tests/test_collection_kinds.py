"""One answer to "what kind of collection is this", whoever asks.

The runner, the dashboard and the CLI once decided it each in their own way
and disagreed: a task whose ``collection()`` method returns
``csv_collection(...)`` was refused by the runner without a file while the
dashboard showed it no file field. Now all of them ask the task's source.
"""

from __future__ import annotations

import io
import typing as t

import pydantic
import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import CSVFileError, Task, csv_collection, in_batches, no_collection
from flask_maintenance_tasks.models import Run
from flask_maintenance_tasks.sources import (
    BatchesSource,
    CSVSource,
    EnumeratorSource,
    OnceSource,
    RecordsSource,
    RowsSource,
    SequenceSource,
    needs_file,
    source_of,
)
from tests.support.dashboard import Dashboard, text
from tests.support.records import fresh_run
from tests.support.workers import drain
from tests.testapp import Item
from tests.testapp.maintenance import csv_tasks, kinds

CSV = b"id,title\n1,first\n2,second\n"


def test_a_csv_collection_returned_by_the_method_needs_a_file() -> None:
    assert needs_file(csv_tasks.ImportItemsByMethodTask)
    assert needs_file(csv_tasks.ImportItemsTask)
    assert not needs_file(kinds.ListTask)


def test_the_dashboard_shows_a_file_field_for_a_csv_collection_from_the_method(app: t.Any) -> None:
    page = text(Dashboard(app).get("/tasks/ImportItemsByMethodTask"))

    assert '<input type="file" id="csv_file" name="csv_file"' in page


def test_the_runner_refuses_that_task_without_a_file_and_writes_nothing(
    app: t.Any, mtasks: t.Any, db: t.Any
) -> None:
    with pytest.raises(CSVFileError, match="is a CSV task: give it a CSV file"):
        mtasks.run("ImportItemsByMethodTask")

    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


def test_the_dashboard_runs_that_task_with_the_uploaded_file(app: t.Any, db: t.Any) -> None:
    response = Dashboard(app).post(
        "/tasks/ImportItemsByMethodTask/runs",
        {"csv_file": (io.BytesIO(CSV), "items.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    [run] = list(db.session.scalars(sa.select(Run)))
    drain(app)

    assert fresh_run(run.id).status == "succeeded"
    assert list(db.session.scalars(sa.select(Item.title).order_by(Item.id))) == ["first", "second"]


class _Params(Task):
    """A CSV task only when asked for one: the method decides from the parameters."""

    class Parameters(pydantic.BaseModel):
        from_file: bool

    def collection(self) -> t.Any:
        return csv_collection() if self.params.from_file else [1, 2]

    def process(self, item: t.Any) -> None:
        pass


def test_a_method_deciding_from_parameters_is_asked_with_the_runs_arguments() -> None:
    assert needs_file(_Params, {"from_file": True})
    assert not needs_file(_Params, {"from_file": False})
    # Without arguments (the form, before anything is typed) a required parameter is
    # missing: the method cannot answer, and no file field is shown.
    assert not needs_file(_Params)


class _Enumerated(Task):
    collection = csv_collection()

    def enumerator(self, cursor: t.Any) -> t.Iterator[tuple[int, int]]:
        yield 1, 1


@pytest.mark.parametrize(
    ("task", "kind"),
    [
        (kinds.ListTask(), SequenceSource),
        (_Enumerated(), EnumeratorSource),
        (csv_tasks.ImportItemsTask(), CSVSource),
        (csv_tasks.ImportItemsByMethodTask(), CSVSource),
    ],
)
def test_each_kind_of_collection_has_its_source(task: Task, kind: type) -> None:
    assert type(source_of(task)) is kind


def test_select_in_batches_and_no_collection_have_their_sources(app: t.Any) -> None:
    class Records(Task):
        def collection(self) -> t.Any:
            return sa.select(Item)

    class Rows(Task):
        collection = sa.select(Item.id, Item.title)

    class Batches(Task):
        def collection(self) -> t.Any:
            return in_batches(sa.select(Item), of=10)

    class Once(Task):
        collection = no_collection()

    assert type(source_of(Records())) is RecordsSource
    assert type(source_of(Rows())) is RowsSource
    assert type(source_of(Batches())) is BatchesSource
    assert type(source_of(Once())) is OnceSource
    # A task with an enumerator needs no file, whatever its collection says.
    assert not needs_file(_Enumerated)
