"""Sources over a ``Select``: records or rows one at a time, or batches of primary keys."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import math
import typing as t
import uuid

from sqlalchemy.sql import Select

from ..exceptions import ConfigurationError
from ..state import get_state
from .base import DESCRIPTION_LIMIT, Cursor, Item, Source
from .keyset import Batch, Keyset, cursor_text

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..task import Task


def _session() -> Session:
    return t.cast("Session", get_state().db.session)


@dataclasses.dataclass(frozen=True)
class InBatches:
    """A ``Select`` handed to ``process`` in batches; see :func:`in_batches`."""

    select: Select[t.Any]
    of: int = 1000


def in_batches(select: Select[t.Any], of: int = 1000) -> InBatches:
    """Hand ``process`` a :class:`Batch` of up to ``of`` rows of ``select`` at a time.

    Progress counts batches. Use the batch to run one set-based statement::

        def process(self, batch):
            db.session.execute(batch.where(sa.update(Post).values(flag=True)))

    .. versionadded:: 0.1
    """
    if of < 1:
        raise ConfigurationError(f"in_batches(of={of!r}): the batch size must be at least 1.")
    return InBatches(select, of)


class RecordsSource(Source):
    """A ``Select`` of one entity: ``process(record)``, ``batch_size`` records per query."""

    kind = "records"
    #: The operator's page size (see :doc:`/speed-control`), else the task's ``batch_size``.
    page_size: int | None = None

    def __init__(self, task: Task, select: Select[t.Any]) -> None:
        super().__init__(task)
        self.keyset = Keyset(task, select, "collection", rows=True)

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        size = max(int(self.page_size or type(self.task).batch_size), 1)
        return self.keyset.records(_session(), cursor, size)

    def count(self) -> int | None:
        return self.keyset.count(_session())

    def find(self, failures: t.Sequence[t.Any]) -> list[tuple[t.Any, Item]]:
        """The failed records, found again in one query by their cursor columns."""
        found = self.keyset.find_records(_session(), [f.item_key for f in failures])
        return [
            (failure, found[text])
            for failure in failures
            if (text := cursor_text(failure.item_key)) in found
        ]


class RowsSource(RecordsSource):
    """A ``Select`` of columns: ``process(row)`` with :class:`sqlalchemy.Row` tuples.

    Paginated like records, without loading ORM objects: a row's cursor columns
    must be among its selected columns.
    """

    kind = "rows"

    def describe(self, item: Item) -> t.Any:
        """The row as a dict of its columns, values made JSON-safe and long ones cut."""
        mapping = getattr(item, "_mapping", None)
        if mapping is None:
            return super().describe(item)
        described = {str(key): _json_safe(value) for key, value in mapping.items()}
        if len(json.dumps(described)) <= DESCRIPTION_LIMIT:
            return described
        # Too long: cut the values, never the names (masking goes by the names).
        share = max(DESCRIPTION_LIMIT // max(len(described), 1) - 20, 8)
        return {
            key: value[:share] + " [...]"
            if isinstance(value, str) and len(value) > share
            else value
            for key, value in described.items()
        }


def _json_safe(value: t.Any) -> t.Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, dt.timedelta)):
        return str(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)[:DESCRIPTION_LIMIT]
    return value


class BatchesSource(Source):
    """``in_batches(select, of=N)``: ``process(batch)`` with up to N primary keys."""

    kind = "batches"

    def __init__(self, task: Task, spec: InBatches) -> None:
        super().__init__(task)
        self.spec = spec
        self.keyset = Keyset(task, spec.select, "in_batches(select)", rows=False)

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        return self.keyset.batches(_session(), cursor, self.spec.of)

    def count(self) -> int | None:
        return math.ceil(self.keyset.count(_session()) / self.spec.of)

    def key(self, item: Item, cursor: Cursor) -> t.Any:
        """The cursors of the batch's first and last rows."""
        if isinstance(item, Batch):
            return {"first": item.first, "last": item.last}
        return cursor

    def find(self, failures: t.Sequence[t.Any]) -> list[tuple[t.Any, Item]]:
        """Each failed batch again: the rows now between its first and last cursors."""
        found = []
        session = _session()
        for failure in failures:
            key = failure.item_key
            if not isinstance(key, dict):
                continue
            batch = self.keyset.batch_between(session, key.get("first"), key.get("last"))
            if batch is not None:
                found.append((failure, batch))
        return found

    def describe(self, item: Item) -> t.Any:
        if isinstance(item, Batch):
            return {
                "class": "Batch",
                "ids": [i if not isinstance(i, tuple) else list(i) for i in item.ids[:50]],
            }
        return super().describe(item)
