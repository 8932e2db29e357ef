"""A retry run's collection: exactly the unresolved failed items of another run.

The walk goes through the failure ledger of the retried run in id order (the
order its items were met), a page at a time, and asks the task's own source
to find each page's items again by key: one query per page for a ``Select``.
Its cursor is the id of the last failure walked past. At each tick it tells
the ledger what became of the failures it walked past: resolved, failed
again (the new failure is on the retry run), or gone from the collection.
"""

from __future__ import annotations

import typing as t

from .. import ledger
from ..models import FailureStatus
from ..state import get_state
from .base import Cursor, Item, Source

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..task import Task

#: Failures read from the ledger per page.
PAGE = 100


class RetrySource(Source):
    """The failed items of run ``retried``, found again through ``inner``."""

    def __init__(self, task: Task, inner: Source, retried: int, retry: int) -> None:
        super().__init__(task)
        self.inner = inner
        self.needs_file = inner.needs_file  # type: ignore[misc]
        self.kind = inner.kind
        self.retried = retried
        self.retry = retry
        #: What the ledger said of the failures of the pages read so far, by id.
        self._failures: dict[int, t.Any] = {}

    def _session(self) -> Session:
        return t.cast("Session", get_state().db.session)

    def iterate(self, cursor: Cursor) -> t.Iterator[tuple[Item, Cursor]]:
        after = cursor if isinstance(cursor, int) else None
        session = self._session()
        while True:
            page = ledger.unresolved_page(session, self.retried, after, PAGE)
            if not page:
                return
            found = self.inner.find(page)
            seen = {failure.id for failure, _ in found}
            # Gone from the collection: said so in this tick's transaction.
            gone = [failure.id for failure in page if failure.id not in seen]
            ledger.mark(session, gone, FailureStatus.GONE, self.retry)
            self._failures = {failure.id: failure for failure in page}
            for failure, item in found:
                yield item, failure.id
            if len(page) < PAGE:
                return
            after = page[-1].id

    def count(self) -> int | None:
        return ledger.count_unresolved(self._session(), self.retried)

    def key(self, item: Item, cursor: Cursor) -> t.Any:
        return self._failures[cursor].item_key

    def failure_of(self, item: Item, before: Cursor, cursor: Cursor) -> tuple[t.Any, t.Any, int]:
        """The retried failure's key and position, one attempt later."""
        failure = self._failures[cursor]
        return failure.item_key, failure.position, int(failure.attempt or 1) + 1

    def describe(self, item: Item) -> t.Any:
        return self.inner.describe(item)

    def ticked(
        self, session: Session, after: Cursor, upto: Cursor, failed_again: list[Cursor]
    ) -> None:
        """In the tick's transaction: the failures walked past in ``(after, upto]``."""
        ledger.mark(session, failed_again, FailureStatus.FAILED_AGAIN, self.retry)
        if isinstance(upto, int):
            ledger.resolve_between(
                session, self.retried, after if isinstance(after, int) else None, upto, self.retry
            )
