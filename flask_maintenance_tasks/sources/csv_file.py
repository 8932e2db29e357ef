"""The rows of a run's CSV file, one at a time or in lists of ``in_batches`` rows."""

from __future__ import annotations

import typing as t

from ..csv import rows as csv_rows
from ..csv import uploads
from ..csv.rows import CSVCollection, CSVRow
from ..exceptions import ConfigurationError
from ..state import get_state
from .base import Cursor, Item, Source

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..models import CSVFile, Run
    from ..task import Task


class CSVSource(Source):
    """``csv_collection(...)``: rows of the file stored with the run."""

    needs_file = True

    def __init__(self, task: Task, spec: CSVCollection) -> None:
        super().__init__(task)
        self.spec = spec
        self.kind = "csv_batches" if spec.in_batches else "csv_rows"

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        run = self.task.run
        if run is None:
            raise ConfigurationError(
                f"{type(self.task).name} reads the CSV file of its run: iterate it in a run "
                "(flask_maintenance_tasks.testing.run_task(name, csv_file=...) in a test)."
            )
        return self._rows(run, cursor)

    def _rows(self, run: Run, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        state = get_state()
        _, stream = uploads.open_for_run(state, run, t.cast("Session", state.db.session))
        with stream:
            yield from csv_rows.iterate(stream, self.spec, cursor)

    def _file(self) -> CSVFile | None:
        run = self.task.run
        return None if run is None else uploads.csv_file_of(get_state(), run)

    def count(self) -> int | None:
        record = self._file()
        return None if record is None else self.spec.rows_count(record.line_count)

    def recount(self, run: Run) -> int | None:
        """A run whose ``in_batches`` changed between two slices goes on from the same row.

        Its total becomes the ticks done plus the batches (or rows) left,
        estimated as its count is.
        """
        if not isinstance(run.cursor, dict) or run.cursor.get("of") == self.spec.in_batches:
            return None
        record = self._file()
        if record is None:
            return None
        return run.tick_count + csv_rows.remaining(self.spec, run.cursor, record.line_count)

    def key(self, item: Item, cursor: Cursor) -> t.Any:
        """A row's number; ``{"first", "last"}`` row numbers for a batch of rows."""
        if isinstance(item, CSVRow):
            return item.number
        if isinstance(item, list) and item and isinstance(item[0], CSVRow):
            return {"first": item[0].number, "last": item[-1].number}
        return cursor

    def find(self, failures: t.Sequence[t.Any]) -> list[tuple[t.Any, Item]]:
        """Read each failed row (or batch) again where the walk stood before it."""
        run = self.task.run
        if run is None or not failures:
            return []
        state = get_state()
        _, stream = uploads.open_for_run(state, run, t.cast("Session", state.db.session))
        found = []
        with stream:
            for failure in failures:
                stream.seek(0)
                first = next(iter(csv_rows.iterate(stream, self.spec, failure.position)), None)
                if first is not None and _first_row(self.key(first[0], None)) == _first_row(
                    failure.item_key
                ):
                    found.append((failure, first[0]))
        return found

    def describe(self, item: Item) -> t.Any:
        if isinstance(item, CSVRow):
            values = {
                str(key)[:100]: value[:200] if isinstance(value, str) else value
                for key, value in list(item.items())[:50]
            }
            return {"class": "CSV row", "row": item.number, "line": item.line, "values": values}
        if isinstance(item, list) and item and isinstance(item[0], CSVRow):
            first, last = item[0], item[-1]
            return {"class": "CSV rows", "rows": [first.number, last.number], "line": first.line}
        return super().describe(item)


def _first_row(key: t.Any) -> t.Any:
    return key.get("first") if isinstance(key, dict) else key
