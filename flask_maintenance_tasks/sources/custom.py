"""A task's own ``enumerator(cursor)``: it yields ``(item, cursor)`` pairs itself."""

from __future__ import annotations

import typing as t

from .base import Cursor, Item, Source


class EnumeratorSource(Source):
    """Items and cursors from ``task.enumerator(cursor)``; the count is the task's own."""

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        return iter(self.task.enumerator(cursor))  # type: ignore[attr-defined]
