"""A task without a collection: ``process()`` is called once, with no argument."""

from __future__ import annotations

import dataclasses
import typing as t

from .base import Cursor, Item, Source


class _NoItem:
    """Stands for the absent item of a collection-less task."""

    def __repr__(self) -> str:
        return "<no item>"


#: The "item" handed over for a collection-less task: ``process()`` gets no argument.
NO_ITEM: t.Final = _NoItem()


@dataclasses.dataclass(frozen=True)
class NoCollection:
    """Marker for a task whose ``process()`` runs once, with no argument."""


def no_collection() -> NoCollection:
    """Declare a collection-less task: ``collection = no_collection()``.

    .. versionadded:: 0.1
    """
    return NoCollection()


class OnceSource(Source):
    """One tick: the absent item, at cursor 0."""

    kind = "once"

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        return iter([(NO_ITEM, 0)]) if cursor is None else iter(())

    def count(self) -> int | None:
        return 1

    def describe(self, item: Item) -> t.Any:
        return None if item is NO_ITEM else super().describe(item)

    def key(self, item: Item, cursor: Cursor) -> t.Any:
        return None

    def find(self, failures: t.Sequence[t.Any]) -> list[tuple[t.Any, Item]]:
        return [(failure, NO_ITEM) for failure in failures]
