"""``perform_run``: one job slice of a run, the iteration loop.

A slice loads its run, checks that it still holds it (the run's ``job_id`` is
its fencing token), marks it running and iterates from the saved cursor.
Between items only, it notices what asks it to stop: a pause or cancel seen
on a status reload, the end of its time slice, a worker shutdown, a throttle.
Every stop first commits the last tick.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import traceback
import typing as t

import sqlalchemy as sa
from flask import Flask, has_app_context

from . import runner, signals, sources, store
from .csv.rows import CSVRow
from .state import State, get_state
from .models import Run, RunStatus, utcnow
from .ticker import Fenced, Ticker

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .task import Task

logger = logging.getLogger("flask_maintenance_tasks")
S = RunStatus

_PACKAGE_DIR = __file__.rsplit("/", 1)[0]

#: Seconds before the next slice after a lost database connection.
CONNECTION_RETRY_DELAY = 1.0

#: Set when this process was asked to shut down (the worker's SIGTERM); the
#: loop reads it between items and hands the run on.
shutdown_requested = threading.Event()


def run_job(run_id: int, job_id: str) -> None:
    """The RQ job function: perform a slice inside the app.

    ``flask mtasks worker`` provides the app context; a plain ``rq worker``
    gets the app from ``FLASK_APP`` as the ``flask`` command would.
    """
    if has_app_context():
        perform_run(run_id, job_id)
        return
    with _app_for_plain_workers().app_context():
        perform_run(run_id, job_id)


@functools.lru_cache(maxsize=1)
def _app_for_plain_workers() -> Flask:
    """The app named by ``FLASK_APP``, loaded once per worker process."""
    from flask.cli import ScriptInfo

    path = os.environ.get("FLASK_APP")
    if not path:
        raise RuntimeError(
            "A maintenance task job ran outside an app: set FLASK_APP for `rq worker`, "
            "or use `flask mtasks worker`."
        )
    return ScriptInfo(app_import_path=path).load_app()


def perform_run(run_id: int, job_id: str) -> None:
    """Perform one slice of run ``run_id`` as job ``job_id``, in the current app."""
    state = get_state()
    session = t.cast("Session", state.db.session())
    expire = session.expire_on_commit
    # Items of a fetched page must stay loaded across tick commits, or each
    # one would be re-read: that would be a query per item.
    session.expire_on_commit = False
    try:
        _Slice(state, session, run_id, job_id).perform()
    finally:
        session.expire_on_commit = expire
        state.db.session.remove()


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def describe_element(item: t.Any) -> t.Any:
    """A JSON-safe description of the item being processed when an error happened."""
    if item is sources.NO_ITEM or item is None:
        return None
    try:
        mapper = sa.inspect(item, raiseerr=False)
    except Exception:
        mapper = None
    if mapper is not None and hasattr(mapper, "identity"):
        identity = mapper.identity
        key = identity[0] if identity and len(identity) == 1 else list(identity or ())
        return {"class": type(item).__name__, "id": key}
    if isinstance(item, CSVRow):
        return _describe_csv_row(item)
    if isinstance(item, list) and item and isinstance(item[0], CSVRow):
        first, last = item[0], item[-1]
        return {"class": "CSV rows", "rows": [first.number, last.number], "line": first.line}
    if isinstance(item, sources.Batch):
        return {
            "class": "Batch",
            "ids": [i if not isinstance(i, tuple) else list(i) for i in item.ids[:50]],
        }
    try:
        json.dumps(item)
        return item
    except (TypeError, ValueError):
        return repr(item)[:1000]


def _describe_csv_row(row: CSVRow) -> dict[str, t.Any]:
    values = {
        str(key)[:100]: value[:200] if isinstance(value, str) else value
        for key, value in list(row.items())[:50]
    }
    return {"class": "CSV row", "row": row.number, "line": row.line, "values": values}


def clean_backtrace(state: State, error: BaseException) -> list[str]:
    frames = [
        f"{frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(_PACKAGE_DIR)
    ]
    cleaner = state.settings.backtrace_cleaner
    return list(cleaner(frames)) if cleaner is not None else frames


class _Slice:
    def __init__(self, state: State, session: Session, run_id: int, job_id: str) -> None:
        self.state = state
        self.settings = state.settings
        self.session = session
        self.run_id = run_id
        self.job_id = job_id
        self.task: Task | None = None
        self.element: t.Any = None
        #: Seconds to wait before the next slice, set when a throttle fires.
        self.backoff = 0.0

    # -- status writes ----------------------------------------------------

    def _holds(self, run: Run) -> bool:
        return run.job_id == self.job_id

    def _settle_stop(self, run: Run) -> tuple[store.Decision, str | None]:
        """Values ending a pause or cancel the slice has noticed, and the callback to fire."""
        if run.status == S.PAUSING.value:
            return {"status": S.PAUSED.value, "interruption_reason": "pause"}, "after_pause"
        if run.status == S.CANCELLING.value:
            return {
                "status": S.CANCELLED.value,
                "ended_at": utcnow(),
                "exclusive_key": None,
                "interruption_reason": "cancel",
            }, "after_cancel"
        return None, None

    def _change(self, decide: t.Callable[[Run], store.Decision]) -> Run:
        return store.change(self.session, self.run_id, decide, jitter=False)

    # -- the slice --------------------------------------------------------

    def perform(self) -> None:
        run = self.session.get(Run, self.run_id, populate_existing=True)
        if run is None:
            logger.warning(
                "Run #%s no longer exists; job %s does nothing.", self.run_id, self.job_id
            )
            return
        if not self._holds(run):
            logger.info("Job %s no longer holds run #%s; it stops.", self.job_id, self.run_id)
            return
        self.session.rollback()
        try:
            self._perform(run)
        except Fenced:
            logger.info(
                "Run #%s was handed on; job %s stops without writing.", self.run_id, self.job_id
            )
        except sa.exc.DBAPIError as error:
            if error.connection_invalidated:
                self._connection_lost(error)
            else:
                self._errored(error)
        except Exception as error:
            self._errored(error)

    def _connection_lost(self, error: BaseException) -> None:
        """The database connection died: hand the run on instead of failing it.

        The tick in progress died with the connection, so nothing of it was
        applied; the next slice retries it from the saved cursor. If the
        database cannot be reached at all, the run stays as it is and
        recovery carries it on later.
        """
        logger.warning("Run #%s lost its database connection: %s", self.run_id, error)
        self.session.rollback()
        self.backoff = CONNECTION_RETRY_DELAY
        try:
            self._interrupted("connection_lost")
        except Fenced:
            pass
        except Exception:
            logger.exception("Run #%s could not be handed on; recovery will", self.run_id)

    def _perform(self, run: Run) -> None:
        if run.status in (S.PAUSING.value, S.CANCELLING.value):
            self._stop_at_start()
            return
        if run.status not in (S.ENQUEUED.value, S.INTERRUPTED.value, S.RUNNING.value):
            logger.info("Run #%s is %s; job %s does nothing.", self.run_id, run.status, self.job_id)
            return
        fresh = run.status == S.ENQUEUED.value

        task = self.state.registry.get(run.task_name)(**(run.arguments or {}))
        task.metadata = run.metadata_
        task.run = run  # a CSV collection counts and reads the run's file
        self.task = task
        # Count once, when the run first starts: a resumed run keeps its total,
        # which a collection filtered on "still to do" would otherwise shrink
        # under the items already counted in tick_count. Only a CSV task whose
        # batch size changed since its cursor was saved gets a new total.
        first_start = fresh and run.tick_count == 0 and run.cursor is None
        total = task.count() if first_start else sources.recount(task, run)
        self.session.rollback()

        started = utcnow()
        stop_now = False
        claim = runner.new_job_id()

        def mark_running(current: Run) -> store.Decision:
            nonlocal stop_now
            stop_now = False
            if not self._holds(current):
                raise Fenced()
            if current.status in (S.PAUSING.value, S.CANCELLING.value):
                stop_now = True
                return None
            if current.status not in (S.ENQUEUED.value, S.INTERRUPTED.value, S.RUNNING.value):
                raise Fenced()
            # Claim the run with a token of this execution: a duplicate
            # delivery of the same job then finds the run claimed, and stops.
            values: dict[str, t.Any] = {
                "status": S.RUNNING.value,
                "interruption_reason": None,
                "job_id": claim,
            }
            if current.status == S.ENQUEUED.value:
                values.update(started_at=started, ended_at=None)
                if first_start:
                    values["tick_total"] = total
            if not first_start and total is not None:
                values["tick_total"] = total
            return values

        run = self._change(mark_running)
        if stop_now:
            self._stop_at_start()
            return
        self.job_id = claim
        task.run = run
        if fresh:
            task.after_start()
            signals.send(signals.run_started, self.state.app, run)
        self._iterate(task, run)

    def _stop_at_start(self) -> None:
        callback: list[str | None] = [None]

        def decide(current: Run) -> store.Decision:
            if not self._holds(current):
                raise Fenced()
            values, callback[0] = self._settle_stop(current)
            return values

        run = self._change(decide)
        self._after_stop(run, callback[0])

    def _iterate(self, task: Task, run: Run) -> None:
        settings = self.settings
        reload_every = task.status_reload_frequency or settings.status_reload_frequency
        ticker = Ticker(self.session, self.run_id, self.job_id, settings.ticker_delay)
        start = time.monotonic()
        slice_end = start + settings.max_job_runtime
        next_reload = start + reload_every
        throttles = task.throttles
        process = task.process
        no_item = sources.NO_ITEM
        report_on = tuple(task.report_on)
        stopping = shutdown_requested.is_set
        clock = time.monotonic
        next_check = min(ticker.due_at, next_reload, slice_end)
        # The loop below runs once per item: it keeps its counts in locals and
        # hands them to the ticker only when a tick is due.
        ticks = 0
        cursor: t.Any = None
        items: t.Iterator[tuple[t.Any, t.Any]] | None = None
        try:
            self._check_throttles(task)
            items = sources.iterate(task, run.cursor)
            for item, position in items:
                if stopping():
                    raise _Stop("worker_shutdown")
                now = clock()
                if now >= next_check:
                    if now >= ticker.due_at:
                        ticker.flush(ticks, cursor)
                        ticks = 0
                        if throttles:
                            self._check_throttles(task)
                    if now >= next_reload:
                        self._reload()
                        next_reload = now + reload_every
                    if now >= slice_end:
                        raise _Stop("time_slice")
                    next_check = min(ticker.due_at, next_reload, slice_end)
                try:
                    if item is no_item:
                        process()
                    else:
                        process(item)
                except report_on as error:
                    runner.report_error(self.state, error, run, describe_element(item))
                except BaseException:
                    # Only an error of process() names an item; one between items
                    # (a page, a CSV row that does not parse, a tick) names none.
                    self.element = item
                    raise
                ticks += 1
                cursor = position
        except _Stop as stop:
            ticker.flush(ticks, cursor)
            self._interrupted(stop.reason)
            return
        except BaseException:
            self.session.rollback()
            raise
        finally:
            # Let the collection release what it holds open (a CSV file) now.
            close = getattr(items, "close", None)
            if close is not None:
                close()
        ticker.flush(ticks, cursor)
        self._completed(task)

    def _check_throttles(self, task: Task) -> None:
        for throttle in task.throttles:
            if getattr(task, throttle.method_name)():
                self.backoff = throttle.backoff_seconds()
                raise _Stop("throttle")

    def _reload(self) -> None:
        found = store.read_status(self.session, self.run_id)
        if found is None or found[1] != self.job_id:
            raise Fenced()
        status = found[0]
        if status in (S.PAUSING.value, S.CANCELLING.value):
            raise _Stop("pause" if status == S.PAUSING.value else "cancel")
        if status != S.RUNNING.value:
            raise Fenced()

    # -- endings ----------------------------------------------------------

    def _interrupted(self, reason: str) -> None:
        next_job = runner.new_job_id()
        callback: list[str | None] = [None]

        def decide(current: Run) -> store.Decision:
            if not self._holds(current):
                raise Fenced()
            if current.status == S.RUNNING.value and reason not in ("pause", "cancel"):
                callback[0] = "after_interrupt"
                return {
                    "status": S.INTERRUPTED.value,
                    "job_id": next_job,
                    "interruption_reason": reason,
                }
            values, callback[0] = self._settle_stop(current)
            return values

        run = self._change(decide)
        if callback[0] != "after_interrupt":
            self._after_stop(run, callback[0])
            return
        if self.task is not None:
            self.task.run = run
            try:
                self.task.after_interrupt()
            except Exception as error:
                self._errored(error, job_id=next_job)
                return
        signals.send(signals.run_interrupted, self.state.app, run)
        delay = self.backoff if reason in ("throttle", "connection_lost") else 0.0
        try:
            self.state.executor.enqueue(self.run_id, next_job, delay=delay)
        except Exception:
            # The run is safely interrupted at its cursor; recovery enqueues
            # the next slice once the queue is reachable again.
            logger.exception("Could not enqueue the next slice of run #%s", self.run_id)

    def _after_stop(self, run: Run, callback: str | None) -> None:
        if callback is None:
            return
        if self.task is not None:
            self.task.run = run
            try:
                getattr(self.task, callback)()
            except Exception as error:
                logger.exception("%s.%s failed for run #%s", run.task_name, callback, run.id)
                runner.report_error(self.state, error, run, None)
        signal = signals.run_paused if run.status == S.PAUSED.value else signals.run_cancelled
        signals.send(signal, self.state.app, run)

    def _completed(self, task: Task) -> None:
        task.after_complete()
        self.session.commit()  # whatever after_complete wrote

        def decide(current: Run) -> store.Decision:
            if not self._holds(current):
                raise Fenced()
            if current.status not in (S.RUNNING.value, S.PAUSING.value, S.CANCELLING.value):
                raise Fenced()
            return {
                "status": S.SUCCEEDED.value,
                "ended_at": utcnow(),
                "exclusive_key": None,
                "interruption_reason": None,
            }

        run = self._change(decide)
        signals.send(signals.run_succeeded, self.state.app, run)

    def _errored(self, error: BaseException, *, job_id: str | None = None) -> None:
        self.session.rollback()
        element = describe_element(self.element)
        logger.error("Run #%s errored: %s: %s", self.run_id, type(error).__name__, error)
        run = runner.mark_errored(
            self.state,
            self.session,
            self.run_id,
            error,
            only_job_id=job_id or self.job_id,
            backtrace=clean_backtrace(self.state, error),
            element=element,
        )
        if run is None:
            return
        if self.task is not None:
            self.task.run = run
            try:
                self.task.after_error(error)
            except Exception:
                logger.exception("%s.after_error failed for run #%s", run.task_name, run.id)
        runner.report_error(self.state, error, run, element)
        signals.send(signals.run_errored, self.state.app, run)
