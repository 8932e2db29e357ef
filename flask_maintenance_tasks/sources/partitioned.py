"""Cutting a collection into partitions, and walking one partition of it.

A partitioned run is cut once, when it first starts, into ranges that do not
overlap and together hold every item: :func:`split` finds them, each as a
:class:`Part`. Each range becomes a partition, a run of its own whose
``bounds`` say where its range ends and whose first cursor says where it
begins; :func:`within` gives the source a partition walks. How a kind of
collection is cut:

* a ``Select`` or ``in_batches``: by keys of the cursor columns, chosen so the
  ranges hold similar numbers of rows (see :meth:`.Keyset.boundaries`);
* a list or tuple: by index;
* a CSV file: by byte offsets where records start, each range knowing the
  number of its first row;
* anything else only through the task's own ``partition_ranges(count)``,
  which returns one JSON value per partition; the partition's walk then reads
  its range from ``self.partition.range`` and stays within it.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

from ..csv import rows as csv_rows
from ..csv import uploads
from ..i18n import gettext as _
from ..state import get_state
from .base import Cursor, Item, Source
from .csv_file import CSVSource
from .records import BatchesSource, RecordsSource
from .sequence import SequenceSource

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..task import Task


@dataclasses.dataclass(frozen=True)
class Partition:
    """Which part of the collection a job of a partitioned run walks (``task.partition``).

    .. versionadded:: 0.2
    """

    #: Its place among the run's partitions, from 0.
    index: int
    #: How many partitions the run has.
    count: int
    #: Its range: what ``partition_ranges`` returned for it, or the engine's
    #: bounds (``{"after": ..., "until": ...}``) for a kind it cuts itself.
    range: t.Any


@dataclasses.dataclass(frozen=True)
class Part:
    """One range of a collection, as the split found it."""

    #: What the partition stores to know its range (``Run.bounds``).
    bounds: dict[str, t.Any]
    #: Where its walk starts: the cursor of the item just before its range.
    cursor: Cursor
    #: Its ticks, when they are known.
    total: int | None


def has_own_ranges(task: Task | type[Task]) -> bool:
    return callable(getattr(task, "partition_ranges", None))


def split_problem(task: Task, source: Source) -> str | None:
    """Why runs of ``task`` cannot be partitioned, or ``None``."""
    if has_own_ranges(task):
        return None
    if isinstance(source, (RecordsSource, BatchesSource)):
        nullable = [key.attribute for key in source.keyset.keys if not key.not_null]
        if nullable:
            return _(
                "%(task)s's cursor column %(columns)s may hold NULL, and rows with a NULL key "
                "belong to no range: declare the column NOT NULL (nullable=False), or use "
                "other cursor_columns.",
                task=type(task).name,
                columns=", ".join(nullable),
            )
        return None
    if isinstance(source, (SequenceSource, CSVSource)):
        return None
    if source.kind == "enumerator":
        kind = _("its own enumerator(cursor)")
    elif source.kind == "once":
        kind = _("no collection")
    else:
        kind = _("a collection of kind %(kind)s", kind=source.kind)
    return _(
        "%(task)s walks %(kind)s, which the engine cannot cut into ranges: define "
        "partition_ranges(self, count) on the task, returning one JSON-safe range per "
        "partition, and read self.partition.range in its walk.",
        task=type(task).name,
        kind=kind,
    )


def split(task: Task, source: Source, parts: int, session: Session) -> list[Part]:
    """Cut the collection of ``task`` into ``parts`` ranges, in order (see the module).

    :raises ValueError: the collection cannot be cut (see :func:`split_problem`),
        or the task's own ranges are not one per partition.
    """
    if has_own_ranges(task):
        ranges = list(task.partition_ranges(parts))  # type: ignore[attr-defined]
        if len(ranges) != parts:
            raise ValueError(
                f"{type(task).name}.partition_ranges({parts}) returned {len(ranges)} ranges; "
                f"it must return one per partition ({parts})."
            )
        return [Part({"range": r}, None, None) for r in ranges]
    if isinstance(source, (RecordsSource, BatchesSource)):
        return _split_keyset(source, parts, session)
    if isinstance(source, SequenceSource):
        return _split_sequence(len(source.items), parts)
    if isinstance(source, CSVSource):
        return _split_csv(task, source, parts)
    raise ValueError(t.cast(str, split_problem(task, source)))


def _split_keyset(
    source: RecordsSource | BatchesSource, parts: int, session: Session
) -> list[Part]:
    keyset = source.keyset
    rows = keyset.count(session)
    if rows == 0:
        # Nothing to cut: the first partition takes whatever comes, the others nothing.
        return [Part({"after": None, "until": None}, None, 0)] + [
            Part({"empty": True}, None, 0) for _ in range(parts - 1)
        ]
    # The place (in key order, from 1) of the last row of each range but the last;
    # with fewer rows than parts, one row per range, then empty ranges after the last row.
    places = [rows * i // parts if rows >= parts else min(i, rows) for i in range(1, parts)]
    keys = keyset.keys_at(session, rows, places)
    of = source.spec.of if isinstance(source, BatchesSource) else 1
    found: list[Part] = []
    after: Cursor = None
    done = 0
    for index in range(parts):
        if index < parts - 1:
            upto = places[index]
            if upto not in keys:
                # Its last row was deleted while the run was being cut: this range is
                # left empty, and the next one starts where this one would have.
                found.append(Part({"empty": True}, None, 0))
                continue
            until = keys[upto]
        else:
            upto, until = rows, None
        found.append(Part({"after": after, "until": until}, after, math.ceil((upto - done) / of)))
        after, done = until, upto
    return found


def _split_sequence(length: int, parts: int) -> list[Part]:
    found = []
    for index in range(parts):
        start, end = length * index // parts, length * (index + 1) // parts
        after = start - 1 if start > 0 else None
        until = end - 1 if index < parts - 1 else None
        found.append(Part({"after": after, "until": until}, after, end - start))
    return found


def _split_csv(task: Task, source: CSVSource, parts: int) -> list[Part]:
    state = get_state()
    run = task.run
    if run is None:
        raise ValueError(f"{type(task).name} reads the CSV file of its run: split it in a run.")
    record, stream = uploads.open_for_run(state, run, t.cast("Session", state.db.session))
    spec = source.spec
    with stream:
        # One pass finds the cuts and the end of the file, so every range's rows are exact.
        targets = [record.size * i // parts for i in range(1, parts)] + [record.size]
        *positions, last = csv_rows.split_positions(stream, spec, targets)
    found = []
    starts: list[t.Any] = [None, *positions]
    ends: list[t.Any] = [*positions, last]
    for index in range(parts):
        start, end = starts[index], ends[index]
        until = None if index == parts - 1 else end["offset"]
        total = csv_rows.count_between(start, end, spec)
        found.append(Part({"after": start, "until": until}, start, total))
    return found


def within(task: Task, source: Source, bounds: t.Mapping[str, t.Any]) -> Source:
    """The source of one partition: ``source`` ending where ``bounds`` say.

    Its start is the partition's first cursor, so only its end is applied
    here. A task cutting its own ranges walks them itself.
    """
    if "range" in bounds:
        return source
    if bounds.get("empty"):
        return _Empty(source)
    until = bounds.get("until")
    if isinstance(source, (RecordsSource, BatchesSource)):
        bounded = t.cast("RecordsSource | BatchesSource", _copy(source))
        bounded.keyset = source.keyset.within(until)
        return bounded
    if isinstance(source, SequenceSource):
        return _SequencePart(source, until)
    if isinstance(source, CSVSource):
        return _CSVPart(source, until)
    raise ValueError(t.cast(str, split_problem(task, source)))


def _copy(source: Source) -> Source:
    copy = object.__new__(type(source))
    copy.__dict__.update(source.__dict__)
    return copy


class _SequencePart(SequenceSource):
    """A list walked from the partition's cursor up to its last index."""

    def __init__(self, whole: SequenceSource, until: t.Any) -> None:
        super().__init__(whole.task, whole.items)
        self.end = len(whole.items) if until is None else min(int(until) + 1, len(whole.items))

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        items = self.items
        start = 0 if cursor is None else int(cursor) + 1
        return ((items[i], i) for i in range(start, self.end))


class _CSVPart(CSVSource):
    """A CSV file read from the partition's cursor up to the byte where the next one starts."""

    def __init__(self, whole: CSVSource, until: t.Any) -> None:
        super().__init__(whole.task, whole.spec)
        self.end = None if until is None else int(until)

    def _rows(self, run: t.Any, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        state = get_state()
        _, stream = uploads.open_for_run(state, run, t.cast("Session", state.db.session))
        with stream:
            yield from csv_rows.iterate(stream, self.spec, cursor, end=self.end)


class _Empty(Source):
    """A partition that was given nothing to walk."""

    def __init__(self, whole: Source) -> None:
        super().__init__(whole.task)
        self.whole = whole
        self.kind = whole.kind

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        return iter(())

    def describe(self, item: Item) -> t.Any:
        return self.whole.describe(item)
