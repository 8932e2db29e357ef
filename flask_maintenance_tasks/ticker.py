"""Progress persistence: at most one write (and commit) per ticker delay."""

from __future__ import annotations

import time
import typing as t

from . import store

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session


class Fenced(Exception):
    """The run was handed to another job; this slice must stop without writing."""


class Ticker:
    """Counts processed items and commits them with the run's position.

    One :meth:`flush` is one transaction: the task's pending changes in the
    session, and the run's cursor, ``tick_count`` and ``time_running``. So a
    crash repeats at most the items since the last flush, and those were
    rolled back with it.
    """

    def __init__(self, session: Session, run_id: int, job_id: str, delay: float) -> None:
        self.session = session
        self.run_id = run_id
        self.job_id = job_id
        self.delay = delay
        self.pending = 0
        self.cursor: t.Any = None
        self.moved = False
        self._last = time.monotonic()
        #: When the next flush is due (``time.monotonic()`` scale).
        self.due_at = self._last + delay

    def tick(self, cursor: t.Any) -> None:
        self.pending += 1
        self.cursor = cursor
        self.moved = True

    def flush(self) -> None:
        """Commit pending ticks, time and cursor with the task's changes; raise :class:`Fenced`."""
        now = time.monotonic()
        written = store.write_progress(
            self.session,
            self.run_id,
            self.job_id,
            ticks=self.pending,
            seconds=now - self._last,
            cursor=self.cursor,
            move_cursor=self.moved,
        )
        if not written:
            self.session.rollback()
            raise Fenced()
        self.session.commit()
        self.pending = 0
        self.moved = False
        self._last = now
        self.due_at = now + self.delay

    def discard(self) -> None:
        """Forget the uncommitted ticks (their changes were rolled back)."""
        self.pending = 0
        self.moved = False
