"""The interface every kind of collection answers, and how an item is described."""

from __future__ import annotations

import json
import typing as t

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from ..models import Run
    from ..task import Task

Item = t.Any
Cursor = t.Any

#: Longest description of an item kept (on an errored run, in the failure ledger).
DESCRIPTION_LIMIT = 2000


class Source:
    """What a run walks: the items of one task's collection, in a fixed order.

    There is one subclass per kind of collection. Every caller that needs to
    know about a collection (the job, the runner, the CLI, the dashboard) asks
    its source, so they cannot disagree. Iteration always starts *after* a
    saved cursor, so a resumed or re-sliced run never repeats a committed item.
    """

    #: A run of the task must be given a CSV file.
    needs_file: t.ClassVar[bool] = False
    #: What kind of collection it walks: the failure ledger stores it with each key.
    kind: str = "collection"

    def __init__(self, task: Task) -> None:
        self.task = task

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        """``(item, cursor)`` pairs starting after ``cursor`` (``None``: from the start)."""
        raise NotImplementedError

    def count(self) -> int | None:
        """The ticks of the whole collection, counted when a run starts; ``None``: unknown."""
        return None

    def recount(self, run: Run) -> int | None:
        """A new total for a run resumed with items of another size; ``None`` when unchanged."""
        return None

    def key(self, item: Item, cursor: Cursor) -> t.Any:
        """What finds ``item`` again for a retry (stored in the failure ledger): its cursor."""
        return cursor

    def failure_of(self, item: Item, before: Cursor, cursor: Cursor) -> tuple[t.Any, t.Any, int]:
        """The ledger's ``(item_key, position, attempt)`` of a failed item.

        ``before`` is the cursor just before the item, ``cursor`` the item's own.
        """
        return self.key(item, cursor), before, 1

    def cannot_find(self) -> str | None:
        """Why a retry could not find this source's items again by key, or ``None``."""
        return None

    def find(self, failures: t.Sequence[t.Any]) -> list[tuple[t.Any, Item]]:
        """The items of ``failures`` (ledger rows: ``item_key``, ``position``), in their order.

        A failure whose item is no longer in the collection is left out.
        """
        raise NotImplementedError

    def describe(self, item: Item) -> t.Any:
        """A JSON-safe description of ``item``, stored on the run when processing it failed."""
        if item is None:
            return None
        try:
            mapper = sa.inspect(item, raiseerr=False)
        except Exception:
            mapper = None
        if mapper is not None and hasattr(mapper, "identity"):
            identity = mapper.identity
            key = identity[0] if identity and len(identity) == 1 else list(identity or ())
            return {"class": type(item).__name__, "id": key}
        try:
            text = json.dumps(item)
        except (TypeError, ValueError):
            return repr(item)[:DESCRIPTION_LIMIT]
        return item if len(text) <= DESCRIPTION_LIMIT else text[:DESCRIPTION_LIMIT] + " [...]"
