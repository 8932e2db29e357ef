"""The loop of a job slice: items, ticks, throttles and status reloads.

:class:`Iteration` walks a task's source from the run's cursor and calls
``process`` on each item. Between items only, it commits a tick when one is
due (see :class:`~flask_maintenance_tasks.ticker.Ticker`), checks the task's
throttles once per tick, re-reads the run's status every status-reload period,
and watches the end of the time slice and the worker's shutdown flag. It
returns why it stopped; the job decides what that means for the run.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t

import sqlalchemy as sa

from . import audit, ledger, store
from .dryrun import Capture, Changes
from .exceptions import DryRunCommit, InvalidStatus, SessionRolledBack, TooManyFailures
from .i18n import english
from .models import RunStatus
from .pace import Series
from .policy import ErrorPolicy
from .published import step_line
from .sources import NO_ITEM
from .store import Fenced
from .ticker import Ticker
from .transitions import STOP_REQUESTED

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .config import Settings
    from .sources import Source
    from .task import Task

#: Builds the ledger row of a failed item: ``(item, cursor before it, its cursor, error)``.
Recorder = t.Callable[[t.Any, t.Any, t.Any, BaseException], dict[str, t.Any]]

#: Longest sleep of a run under a rate cap between two looks at the shutdown flag.
_PACE_STEP = 0.05
#: Seconds of work a capped run may catch up after a stall (a slow item, a slow tick):
#: beyond that, the time lost is lost, so no 10-second window gets a burst.
_PACE_SLACK = 0.2

#: Set when this process was asked to shut down (the worker's SIGTERM); the
#: loop reads it between items and hands the run on.
shutdown_requested = threading.Event()


#: Seconds a partition on SQLite lets go of the write lock between two ticks: longer
#: than the longest pause (100 ms) of SQLite's own wait for a busy lock. At most a
#: quarter of the ticker's delay, so that a short tick is not mostly a wait.
LOCK_TURN = 0.12


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
        *,
        policy: ErrorPolicy | None = None,
        record: Recorder | None = None,
        failed: t.Callable[[list[tuple[dict[str, t.Any], BaseException]]], None] | None = None,
        done: tuple[int, int] = (0, 0),
        capture: Capture | None = None,
        changes: Changes | None = None,
        parent_id: int | None = None,
        time_running: float = 0.0,
        speed: store.Status | None = None,
        pace: Series | None = None,
    ) -> None:
        self.session = session
        #: A partition's run: its totals count towards the error policy's limits.
        self.parent_id = parent_id
        self.run_id = run_id
        self.job_id = job_id
        self.task = task
        self.source = source
        self.report = report
        self.reload_every = task.status_reload_frequency or settings.status_reload_frequency
        self.max_runtime = settings.max_job_runtime
        self.ticker = Ticker(
            session,
            run_id,
            job_id,
            settings.ticker_delay,
            parent_id=parent_id,
            time_running=time_running,
            pace=pace,
        )
        #: The operator's cap in items per second (``None``: none), see :meth:`_apply`.
        self.rate: float | None = None
        self.default_delay = settings.ticker_delay
        if speed is not None:
            self._apply(speed)
        #: Seconds to wait before the next slice, set when a throttle fires.
        self.backoff = 0.0
        #: The item whose ``process`` raised, when one did.
        self.failed_item: t.Any = None
        self.policy = policy or ErrorPolicy()
        self.record = record
        #: Told of the failures of each tick once it is committed (the signal).
        self.failed = failed
        #: Ticks and failures of the run before this slice, then committed by it.
        self.ticks_done, self.failures_done = done
        #: A partition under a limit on failures shares the count with the others:
        #: each failure commits its tick at once and reads the run's totals again,
        #: so that K partitions together pass the limit by at most K - 1 failures.
        limited = self.policy.max_failures is not None or self.policy.max_failure_rate is not None
        self.shares_failures = parent_id is not None and limited
        #: The failures of the tick in progress: their rows, errors and cursors.
        self.pending: list[tuple[dict[str, t.Any], BaseException, t.Any]] = []
        #: A retry's walk tells the ledger what became of the failures it passed.
        self.ticked = getattr(source, "ticked", None)
        #: The cursor of the last committed tick.
        self.committed_cursor: t.Any = None
        #: A dry run: each tick runs in a SAVEPOINT, rolled back at its end.
        self.capture = capture
        #: What the dry run would change, its earlier slices included.
        self.changes = changes if changes is not None else Changes()
        self.tick_savepoint: t.Any = None
        #: The task rolled the session back while items were processed (see :meth:`_check`).
        self.rolled_back = False
        # pysqlite opens no transaction before a SAVEPOINT, which then is the
        # transaction, and its RELEASE would commit the item on its own.
        sqlite = session.get_bind().dialect.name == "sqlite"
        self.begin_first = (self.policy.skips or capture is not None or parent_id is not None) and (
            sqlite
        )
        # Partitions write side by side from several processes. On SQLite a
        # transaction that reads, then writes after another one committed, fails
        # at once ("database is locked") instead of waiting: each tick of a
        # partition takes the write lock first, and waits its turn for it.
        self.begin_statement = "BEGIN IMMEDIATE" if parent_id is not None else "BEGIN"

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
        flush = self._flush
        self.committed_cursor = cursor
        start = time.monotonic()
        slice_end = start + self.max_runtime
        reload_every = self.reload_every
        next_reload = start + reload_every
        throttles = task.throttles
        process = task.process
        no_item = NO_ITEM
        report_on = tuple(task.report_on)
        # What an item may raise and the run still goes on: report_on errors,
        # and under the skip policy any error, its writes undone by a savepoint.
        caught: tuple[type[BaseException], ...] = report_on
        if self.policy.skips:
            caught = (Exception, *report_on)
            process = self._savepointed(process)
        position = cursor
        stopping = shutdown_requested.is_set
        clock = time.monotonic
        next_check = min(ticker.due_at, next_reload, slice_end)
        sleep = time.sleep
        # The earliest the next item may start under the cap.
        rate, pace_due = self.rate, start
        if rate is not None:
            next_check = 0.0
        # The loop below runs once per item: it keeps its counts in locals and
        # hands them to the ticker only when a tick is due.
        ticks = 0
        reason: str | None = self._throttled()
        items: t.Iterator[tuple[t.Any, t.Any]] | None = None
        sa.event.listen(self.session, "after_soft_rollback", self._soft_rollback)
        try:
            if reason is not None:
                if task.status.dirty:
                    flush(0, cursor)  # what the throttle's condition published
                return reason
            self._begin()
            items = self.source.iterate(cursor)
            for item, item_cursor in items:
                if stopping():
                    reason = "worker_shutdown"
                    break
                now = clock()
                if now >= next_check:
                    # Under a rate cap this runs before every item, and waits for its
                    # turn in short sleeps that still tick, reload and notice a stop.
                    while True:
                        if now >= ticker.due_at:
                            flush(ticks, position)
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
                            if self.rate != rate:
                                rate, pace_due = self.rate, now
                        if now >= slice_end:
                            reason = "time_slice"
                            break
                        if rate is None or now >= pace_due:
                            break
                        wait = max(0.0, min(pace_due - now, ticker.due_at - now, _PACE_STEP))
                        sleep(wait)
                        ticker.pace.waited += wait  # the tick's point is marked throttled
                        if stopping():
                            reason = "worker_shutdown"
                            break
                        now = clock()
                    if reason is not None:
                        break
                    if rate is None:
                        next_check = min(ticker.due_at, next_reload, slice_end)
                    else:
                        pace_due = max(pace_due, now - _PACE_SLACK) + 1.0 / rate
                        next_check = 0.0
                try:
                    if item is no_item:
                        process()
                    else:
                        process(item)
                except caught as error:
                    self._failed(error, item, position, item_cursor, ticks)
                    if self.shares_failures and self.pending:
                        # Commit this tick with its failure before the next item.
                        next_check = ticker.due_at = 0.0
                except BaseException as error:
                    # Only an error of process() names an item; one between items
                    # (a page, a CSV row that does not parse, a tick) names none.
                    self.failed_item = item
                    if isinstance(error, DryRunCommit):
                        raise self._named(error, item) from None
                    raise
                ticks += 1
                position = item_cursor
        except BaseException:
            self.session.rollback()
            raise
        finally:
            sa.event.remove(self.session, "after_soft_rollback", self._soft_rollback)
            # Let the source release what it holds open (a CSV file) now.
            close = getattr(items, "close", None)
            if close is not None:
                close()
        flush(ticks, position)
        return reason

    # -- failed items ----------------------------------------------------

    def _savepointed(self, process: t.Callable[..., None]) -> t.Callable[..., None]:
        """``process`` inside a SAVEPOINT: an error undoes exactly the item's own writes."""
        begin_nested = self.session.begin_nested
        capture = self.capture
        if capture is None:

            def guarded(*item: t.Any) -> None:
                with begin_nested():
                    process(*item)

            return guarded

        mark, drop_since = capture.mark, capture.drop_since

        def guarded_dry(*item: t.Any) -> None:
            seen = mark()
            savepoint = begin_nested()
            try:
                process(*item)
            except BaseException:
                if savepoint.is_active:
                    savepoint.rollback()
                drop_since(seen)  # its writes were undone: they would not happen
                raise
            # Releasing the savepoint is no commit of the task's: let it through
            # (what it flushes is still counted).
            capture.releasing = True
            try:
                savepoint.commit()
            finally:
                capture.releasing = False

        return guarded_dry

    def _begin(self) -> None:
        """Open the tick's transaction: a BEGIN before its first SAVEPOINT (SQLite only),
        and the SAVEPOINT that holds a dry run's tick."""
        if self.begin_first:
            connection = self.session.connection()
            if not getattr(connection.connection.dbapi_connection, "in_transaction", True):
                connection.exec_driver_sql(self.begin_statement)
        if self.capture is not None:
            self.tick_savepoint = self.session.begin_nested()

    def _soft_rollback(self, session: Session, previous: t.Any) -> None:
        if not previous.nested:  # the tick's own transaction, not an item's savepoint
            self.rolled_back = True

    def _check(self) -> None:
        """Refuse to go on once the task rolled the tick's transaction back.

        The writes of the tick's earlier items went with it: committing the
        tick would move the cursor past items whose work is lost. The run
        stops at its last committed item instead, and a resume does them again.
        """
        if not self.rolled_back:
            return
        if self.capture is not None:
            raise DryRunCommit(
                "process() rolled the session back during a dry run, which would let its "
                "later writes be committed; nothing was written. Use a savepoint "
                "(db.session.begin_nested()) to undo part of an item's work."
            )
        raise SessionRolledBack(
            "process() rolled the session back, undoing the writes of the items before it in "
            "this tick; the run stops at its last committed item, and resuming it processes "
            "them again. Use a savepoint (db.session.begin_nested()) to undo part of an "
            "item's work."
        )

    def _named(self, error: DryRunCommit, item: t.Any) -> DryRunCommit:
        """The refused commit, naming the item whose ``process`` asked for it."""
        described = json.dumps(self.source.describe(item), default=str)[:500]
        return DryRunCommit(f"Item {described}: {error}")

    def _failed(
        self, error: BaseException, item: t.Any, before: t.Any, cursor: t.Any, ticks: int
    ) -> None:
        """Record a failed item the run goes on after; error the run past its limits."""
        if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
            self.failed_item = item
            raise error  # the connection is gone: the slice hands the run on
        if isinstance(error, DryRunCommit):
            self.failed_item = item
            raise self._named(error, item) from None
        if isinstance(error, InvalidStatus):
            self.failed_item = item
            raise error  # a mistake of the task's code, not of the item: the run errors
        if self.rolled_back:
            self.failed_item = item
            self._check()
        if isinstance(error, tuple(self.task.report_on)):
            self.report(error, item)
        if self.record is None:
            return
        self.pending.append((self.record(item, before, cursor, error), error, cursor))
        if self.shares_failures:
            # The other partitions' failures so far (each commits its own at once).
            self.ticks_done, self.failures_done = store.family_totals(
                self.session, t.cast(int, self.parent_id)
            )
            passed = self.policy.passed(self.failures_done, self.ticks_done + ticks)
            if passed is not None:
                # Others took the run past its limit: stop before this item, which
                # a resume tries again, rather than add a failure past the limit.
                self.pending.pop()
                self._flush(ticks, before)
                self.failed_item = item
                raise TooManyFailures(
                    passed, failures=self.failures_done, processed=self.ticks_done
                ) from error
        failures = self.failures_done + len(self.pending)
        processed = self.ticks_done + ticks + 1
        message = self.policy.passed(failures, processed)
        if message is None:
            return
        # The failed items so far, this one included, are kept: the run stops after them.
        self._flush(ticks + 1, cursor)
        self.failed_item = item
        raise TooManyFailures(message, failures=failures, processed=processed) from error

    def _flush(self, ticks: int, cursor: t.Any) -> None:
        """Commit a tick: its items, its failures and what a retry learnt of its ledger.

        A dry run's tick is rolled back to its savepoint first: only the
        progress, the failures and what the tick would have changed commit.
        """
        self._check()
        pending = self.pending
        capture = self.capture
        changes = None
        if capture is not None:
            self.session.flush()  # what is still pending would be written by the commit
            self.changes.add(capture.tick())
            changes = self.changes.as_json()
            self.tick_savepoint.rollback()
            capture.committing = True
        try:
            if pending or self.ticked is not None:
                ledger.insert(self.session, [values for values, _, _ in pending])
                if self.ticked is not None and ticks:
                    again = [at for _, _, at in pending]
                    self.ticked(self.session, self.committed_cursor, cursor, again)
            status = self.task.status
            published = status.pending()
            if published is not None and status.step_changed:
                # The trail tells of a new step (not of every update), with the tick,
                # in English as everything stored.
                with english():
                    detail = step_line(published)
                audit.record(
                    self.session,
                    run_id=self.parent_id or self.run_id,
                    task_name=self.task.name,
                    action=audit.STEP_CHANGED,
                    actor=audit.worker(),
                    detail=detail,
                )
            self.ticker.flush(
                ticks, cursor, failures=len(pending), changes=changes, published=published
            )
            if published is not None:
                status.written()
        finally:
            if capture is not None:
                capture.committing = False
        self.ticks_done += ticks
        self.failures_done += len(pending)
        if ticks:
            self.committed_cursor = cursor
        self.pending = []
        if self.begin_statement == "BEGIN IMMEDIATE":
            # SQLite's lock goes to whoever asks at the right moment, and a
            # partition asks again at once: leave the others (an operator's
            # pause, another partition) a turn at it before taking it again.
            time.sleep(min(LOCK_TURN, self.ticker.delay / 4))
        self._begin()
        if pending and self.shares_failures:
            # What the other partitions failed meanwhile counts too.
            self.ticks_done, self.failures_done = store.family_totals(
                self.session, t.cast(int, self.parent_id)
            )
        if pending and self.failed is not None:
            self.failed([(values, error) for values, error, _ in pending])

    def _throttled(self) -> str | None:
        for throttle in self.task.throttles:
            if throttle.condition(self.task):
                self.backoff = throttle.backoff_seconds()
                return "throttle"
        return None

    def _apply(self, speed: store.Status) -> None:
        """Take the operator's speed overrides: the cap, and the ticker's delay at once.

        The page size is the source's, read when a slice starts its walk: it
        changes from the next slice.
        """
        self.rate = speed.max_rate if speed.max_rate else None
        delay = speed.ticker_delay or self.default_delay
        if delay != self.ticker.delay:
            self.ticker.set_delay(delay)

    def _reload(self) -> str | None:
        """Re-read the run's status: ``"pause"`` or ``"cancel"`` when asked to stop.

        The same SELECT reads the operator's speed overrides, applied at once.
        """
        found = store.read_status(self.session, self.run_id)
        if found is None or found.job_id != self.job_id:
            raise Fenced()
        status = found.status
        self._apply(found)
        if self.shares_failures:
            # The limits on failures count the whole run's items, its other partitions' too.
            ticks, failures = store.family_totals(self.session, t.cast(int, self.parent_id))
            self.ticks_done, self.failures_done = ticks, failures
        if status in STOP_REQUESTED:
            return "pause" if status == RunStatus.PAUSING else "cancel"
        if status != RunStatus.RUNNING:
            raise Fenced()
        return None
