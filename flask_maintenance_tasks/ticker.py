"""Progress persistence: at most one write (and commit) per ticker delay."""

from __future__ import annotations

import time
import typing as t

from . import store
from .pace import Series
from .store import Fenced

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session


class Ticker:
    """Commits the items processed since its last flush with the run's position.

    One :meth:`flush` is one transaction: the task's pending changes in the
    session, and the run's cursor, ``tick_count``, ``time_running`` and pace
    (see :mod:`.pace`). So a crash repeats at most the items since the last
    flush, and those were rolled back with it.
    """

    def __init__(
        self,
        session: Session,
        run_id: int,
        job_id: str,
        delay: float,
        *,
        parent_id: int | None = None,
        time_running: float = 0.0,
        pace: Series | None = None,
    ) -> None:
        self.session = session
        #: The run's recent throughput, a point added by each flush that counts items.
        self.pace = pace if pace is not None else Series()
        #: A partition's run, which each flush also counts in.
        self.parent_id = parent_id
        #: The run's seconds of work, its earlier slices included.
        self.time_running = time_running
        self.run_id = run_id
        self.job_id = job_id
        self.delay = delay
        self._last = time.monotonic()
        #: When the next flush is due (``time.monotonic()`` scale).
        self.due_at = self._last + delay

    def flush(
        self,
        ticks: int,
        cursor: t.Any,
        *,
        failures: int = 0,
        changes: t.Any = None,
        published: dict[str, t.Any] | None = None,
    ) -> None:
        """Commit ``ticks`` more items, the time and ``cursor`` with the task's changes.

        The iteration loop counts items itself and calls this once a tick is due (or when it
        stops), with the number processed since the last flush and the cursor of the last
        one; with no item processed the cursor stays as it is. ``failures`` is how many
        failed items the caller recorded in the ledger in this transaction, ``changes``
        what a dry run would have changed so far, ``published`` what the task published
        since the last flush (see :mod:`.published`). Raises :class:`Fenced`.
        """
        now = time.monotonic()
        seconds = now - self._last
        series = self.pace.tick(time.time(), seconds, ticks)
        written = store.write_progress(
            self.session,
            self.run_id,
            self.job_id,
            ticks=ticks,
            seconds=seconds,
            cursor=cursor,
            move_cursor=ticks > 0,
            failures=failures,
            changes=changes,
            published=published,
            pace=series,
            parent_id=self.parent_id,
            time_running=self.time_running + seconds if self.parent_id is not None else None,
        )
        if not written:
            self.session.rollback()
            raise Fenced()
        self.session.commit()
        self.pace.written()
        self.time_running += seconds
        self._last = now
        self.due_at = now + self.delay

    def set_delay(self, delay: float) -> None:
        """Wait ``delay`` seconds between flushes from the last one on (an operator's change)."""
        self.delay = delay
        self.due_at = self._last + delay
