"""A task's own ``enumerator(cursor)``: it yields ``(item, cursor)`` pairs itself."""

from __future__ import annotations

import json
import typing as t

from ..i18n import gettext as _
from .base import Cursor, Item, Source


class EnumeratorSource(Source):
    """Items and cursors from ``task.enumerator(cursor)``; the count is the task's own."""

    kind = "enumerator"

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        return iter(self.task.enumerator(cursor))  # type: ignore[attr-defined]

    def cannot_find(self) -> str | None:
        if callable(getattr(self.task, "lookup", None)):
            return None
        return _(
            "%(task)s walks its own enumerator(cursor), which cannot look items up by key: "
            "define lookup(self, keys) on the task, returning (key, item) pairs for the keys "
            "it still finds, to retry its failed items.",
            task=type(self.task).name,
        )

    def find(self, failures: t.Sequence[t.Any]) -> list[tuple[t.Any, Item]]:
        """Ask the task's ``lookup(keys)`` for the items; keys are the cursors it yielded."""
        keys = [failure.item_key for failure in failures]
        found = {_hashable(key): item for key, item in self.task.lookup(keys)}  # type: ignore[attr-defined]
        return [
            (failure, found[_hashable(failure.item_key)])
            for failure in failures
            if _hashable(failure.item_key) in found
        ]


def _hashable(key: t.Any) -> str:
    return json.dumps(key, sort_keys=True, default=str)
