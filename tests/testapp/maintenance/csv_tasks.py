"""CSV tasks of the test app: imports into the items table, and tasks that record rows."""

from __future__ import annotations

import time
import typing as t

import pydantic

from flask_maintenance_tasks import Task, csv_collection

from .. import Item, db
from .kinds import EVENTS


def _upsert(row: t.Mapping[str, str]) -> None:
    """Create the item of ``row["id"]``, or update it; ``counter`` counts the imports."""
    item = db.session.get(Item, int(row["id"]))
    if item is None:
        db.session.add(Item(id=int(row["id"]), title=row["title"], group=0, counter=1))
    else:
        item.title = row["title"]
        item.counter += 1


class ImportItemsTask(Task):
    """Creates or updates items by id, one row at a time."""

    collection = csv_collection(required_headers=("id", "title"))

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0

    def process(self, row: dict[str, str]) -> None:
        _upsert(row)
        if self.params.sleep:
            time.sleep(self.params.sleep)


class ImportItemsInBatchesTask(Task):
    """Creates or updates items by id, ten rows at a time; records each batch's rows."""

    collection = csv_collection(in_batches=10, required_headers=("id", "title"))

    def process(self, rows: list[t.Any]) -> None:
        for row in rows:
            _upsert(row)
        EVENTS.append([row.number for row in rows])


class RecordRowsTask(Task):
    """Records every row it gets, with its number and line, as a plain dict."""

    collection = csv_collection()

    def process(self, row: t.Any) -> None:
        EVENTS.append({"row": row.number, "line": row.line, **row})


class SemicolonLatin1Task(Task):
    """A European spreadsheet export: ``;`` between values, latin-1 text, comments, padding."""

    collection = csv_collection(delimiter=";", encoding="latin-1", skip_lines=r"^#", strip=True)

    def process(self, row: t.Any) -> None:
        EVENTS.append(dict(row))


class CSVByMethodTask(Task):
    """Declares its CSV collection in a ``collection()`` method, delimiter as a parameter."""

    class Parameters(pydantic.BaseModel):
        delimiter: str = ","

    def collection(self) -> t.Any:
        return csv_collection(delimiter=self.params.delimiter)

    def process(self, row: t.Any) -> None:
        EVENTS.append(dict(row))


class ImportItemsByMethodTask(Task):
    """A CSV task whose ``collection()`` method returns the CSV collection (no class attribute)."""

    def collection(self) -> t.Any:
        return csv_collection(required_headers=("id", "title"))

    def process(self, row: dict[str, str]) -> None:
        _upsert(row)
