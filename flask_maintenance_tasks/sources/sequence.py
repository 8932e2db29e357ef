"""A list or tuple, walked by index."""

from __future__ import annotations

import typing as t

from .base import Cursor, Item, Source

if t.TYPE_CHECKING:
    from ..task import Task


class SequenceSource(Source):
    """``process(item)`` for each element; the cursor is the element's index."""

    kind = "sequence"

    def __init__(self, task: Task, items: t.Sequence[t.Any]) -> None:
        super().__init__(task)
        self.items = items

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        items = self.items
        start = 0 if cursor is None else int(cursor) + 1
        return ((items[i], i) for i in range(start, len(items)))

    def count(self) -> int | None:
        return len(self.items)

    def find(self, failures: t.Sequence[t.Any]) -> list[tuple[t.Any, Item]]:
        items = self.items
        return [
            (failure, items[failure.item_key])
            for failure in failures
            if isinstance(failure.item_key, int) and 0 <= failure.item_key < len(items)
        ]
