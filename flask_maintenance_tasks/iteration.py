"""The loop of a job slice: items, ticks, throttles and status reloads.

:class:`Iteration` walks a task's source from the run's cursor and calls
``process`` on each item. Between items only, it commits a tick when one is
due (see :class:`~flask_maintenance_tasks.ticker.Ticker`), checks the task's
throttles once per tick, re-reads the run's status every status-reload period,
and watches the end of the time slice and the worker's shutdown flag. It
returns why it stopped; the job decides what that means for the run.
"""

from __future__ import annotations

import threading
import time
import typing as t

from . import store
from .models import RunStatus
from .sources import NO_ITEM
from .store import Fenced
from .ticker import Ticker
from .transitions import STOP_REQUESTED

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .config import Settings
    from .sources import Source
    from .task import Task

#: Set when this process was asked to shut down (the worker's SIGTERM); the
#: loop reads it between items and hands the run on.
shutdown_requested = threading.Event()


class Iteration:
    """One slice's walk over a source, committing ticks as it goes."""

    def __init__(
        self,
        session: Session,
        settings: Settings,
        run_id: int,
        job_id: str,
        task: Task,
        source: Source,
        report: t.Callable[[BaseException, t.Any], None],
    ) -> None:
        self.session = session
        self.run_id = run_id
        self.job_id = job_id
        self.task = task
        self.source = source
        self.report = report
        self.reload_every = task.status_reload_frequency or settings.status_reload_frequency
        self.max_runtime = settings.max_job_runtime
        self.ticker = Ticker(session, run_id, job_id, settings.ticker_delay)
        #: Seconds to wait before the next slice, set when a throttle fires.
        self.backoff = 0.0
        #: The item whose ``process`` raised, when one did.
        self.failed_item: t.Any = None

    def run(self, cursor: t.Any) -> str | None:
        """Process items after ``cursor``; return why the slice stopped, ``None`` when done.

        The reasons are ``"pause"``, ``"cancel"`` (an operator asked),
        ``"time_slice"``, ``"worker_shutdown"`` and ``"throttle"``. The last
        tick is committed before returning. An exception of ``process`` is
        raised after a rollback to the last tick, with the item in
        :attr:`failed_item`; :class:`~flask_maintenance_tasks.store.Fenced`
        means another job holds the run.
        """
        task, ticker = self.task, self.ticker
        start = time.monotonic()
        slice_end = start + self.max_runtime
        reload_every = self.reload_every
        next_reload = start + reload_every
        throttles = task.throttles
        process = task.process
        no_item = NO_ITEM
        report_on = tuple(task.report_on)
        stopping = shutdown_requested.is_set
        clock = time.monotonic
        next_check = min(ticker.due_at, next_reload, slice_end)
        # The loop below runs once per item: it keeps its counts in locals and
        # hands them to the ticker only when a tick is due.
        ticks = 0
        position: t.Any = None
        reason: str | None = self._throttled()
        items: t.Iterator[tuple[t.Any, t.Any]] | None = None
        try:
            if reason is not None:
                return reason
            items = self.source.iterate(cursor)
            for item, item_cursor in items:
                if stopping():
                    reason = "worker_shutdown"
                    break
                now = clock()
                if now >= next_check:
                    if now >= ticker.due_at:
                        ticker.flush(ticks, position)
                        ticks = 0
                        if throttles:
                            reason = self._throttled()
                            if reason is not None:
                                break
                    if now >= next_reload:
                        reason = self._reload()
                        if reason is not None:
                            break
                        next_reload = now + reload_every
                    if now >= slice_end:
                        reason = "time_slice"
                        break
                    next_check = min(ticker.due_at, next_reload, slice_end)
                try:
                    if item is no_item:
                        process()
                    else:
                        process(item)
                except report_on as error:
                    self.report(error, item)
                except BaseException:
                    # Only an error of process() names an item; one between items
                    # (a page, a CSV row that does not parse, a tick) names none.
                    self.failed_item = item
                    raise
                ticks += 1
                position = item_cursor
        except BaseException:
            self.session.rollback()
            raise
        finally:
            # Let the source release what it holds open (a CSV file) now.
            close = getattr(items, "close", None)
            if close is not None:
                close()
        ticker.flush(ticks, position)
        return reason

    def _throttled(self) -> str | None:
        for throttle in self.task.throttles:
            if throttle.condition(self.task):
                self.backoff = throttle.backoff_seconds()
                return "throttle"
        return None

    def _reload(self) -> str | None:
        """Re-read the run's status: ``"pause"`` or ``"cancel"`` when asked to stop."""
        found = store.read_status(self.session, self.run_id)
        if found is None or found[1] != self.job_id:
            raise Fenced()
        status = found[0]
        if status in STOP_REQUESTED:
            return "pause" if status == RunStatus.PAUSING else "cancel"
        if status != RunStatus.RUNNING:
            raise Fenced()
        return None
