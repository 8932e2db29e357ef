"""``perform_run``: one job slice of a run, from claiming it to handing it on.

A slice loads its run, checks that it still holds it (the run's ``job_id`` is
its fencing token), claims it with a token of its own, and hands the walk over
the items to :class:`~flask_maintenance_tasks.iteration.Iteration`. How the
walk ended decides the run's next status, through the state machine: done
(``succeeded``), an operator's stop (``paused``, ``cancelled``), a hand-over
(``interrupted``, and the next slice enqueued), a failure (``errored``), or a
lost database connection (handed on a second later).
"""

from __future__ import annotations

import functools
import logging
import os
import time
import traceback
import typing as t
from datetime import datetime

import sqlalchemy as sa
from flask import Flask, has_app_context
from flask.cli import ScriptInfo

from . import audit, dryrun, i18n, ledger, lifecycle, masking, pace, partitions, signals, store
from .exceptions import message_of
from .iteration import Iteration
from .models import Run, RunStatus, utcnow
from .policy import ErrorPolicy
from .sources import RecordsSource, Source, partitioned, source_of
from .state import State, get_state
from .store import Fenced
from .transitions import (
    CARRY_ON,
    DELAYED_REASONS,
    DUE,
    INTERRUPT,
    OPERATOR_STOPS,
    REQUEUE,
    REQUEUED_REASONS,
    START,
    STARTABLE,
    STOP_REQUESTED,
    SUCCEED,
    Transition,
    settling,
)

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .task import Task

logger = logging.getLogger("flask_maintenance_tasks")

_PACKAGE_DIR = __file__.rsplit("/", 1)[0]

#: Seconds before the next slice after a lost database connection.
CONNECTION_RETRY_DELAY = 1.0


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
        # A run's error, its failures and its audit trail are stored and read by
        # everyone: in English, whatever the language of the worker's locale.
        with i18n.english():
            _Slice(state, session, run_id, job_id).perform()
    finally:
        session.expire_on_commit = expire
        state.db.session.remove()


def _if_still(transition: Transition, waiting: Transition) -> t.Callable[[Run], Transition | None]:
    """Choose ``transition`` while the run is still in a status ``waiting`` leaves from."""

    def choose(current: Run) -> Transition | None:
        return transition if waiting.leaves_from(current.status) else None

    return choose


def clean_backtrace(state: State, error: BaseException) -> list[str]:
    """The error's frames outside this package, through ``MAINTENANCE_TASKS_BACKTRACE_CLEANER``."""
    frames = [
        f"{frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(_PACKAGE_DIR)
    ]
    cleaner = state.settings.backtrace_cleaner
    return list(cleaner(frames)) if cleaner is not None else frames


class _Slice:
    """One job's turn at a run."""

    def __init__(self, state: State, session: Session, run_id: int, job_id: str) -> None:
        self.state = state
        self.session = session
        self.run_id = run_id
        self.job_id = job_id
        self.task: Task | None = None
        self.source: Source | None = None
        #: The item being processed when an error happened.
        self.element: t.Any = None
        #: Seconds to wait before the next slice (a throttle's backoff, a retry).
        self.backoff = 0.0
        #: Who the audit trail says made this slice's changes.
        self.actor = audit.worker()
        #: The run's secret argument values, scrubbed from its error message.
        self.secrets: list[str] = []
        #: The run's task, whose queue its next slices go to.
        self.task_name: str | None = None
        #: Why the run was last handed on or stopped, as the slice found it (the
        #: claim clears it): its pace marks what came before its next point.
        self.after: str | None = None

    def perform(self) -> None:
        run = store.find(self.session, self.run_id)
        if run is None:
            logger.warning(
                "Run #%s no longer exists; job %s does nothing.", self.run_id, self.job_id
            )
            return
        if run.job_id != self.job_id:
            logger.info("Job %s no longer holds run #%s; it stops.", self.job_id, self.run_id)
            return
        self.secrets = self._secrets(run)
        self.task_name = run.task_name
        self.after = run.interruption_reason
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
            elif store.lock_timed_out(error):
                self._connection_lost(error, reason="database_locked")
            else:
                self._errored(error)
        except Exception as error:
            self._errored(error)
        except BaseException as error:
            # An interpreter's exit stops the job as it is (recovery takes the run on);
            # any other BaseException a task raises (a cancelled coroutine, a timeout of
            # its own) is an error of the run, not a reason to leave it running.
            if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            self._errored(error)

    # -- changes of the run ------------------------------------------------

    def _change(
        self,
        choose: t.Callable[[Run], Transition | None],
        given: t.Mapping[str, t.Any] | None = None,
    ) -> lifecycle.Changed:
        """Apply the transition ``choose`` picks, as long as this slice holds the run."""

        def held(current: Run) -> Transition | None:
            if current.job_id != self.job_id:
                raise Fenced()
            return choose(current)

        return lifecycle.change(
            self.session, self.run_id, held, actor=self.actor, given=given, jitter=False
        )

    def _perform(self, run: Run) -> None:
        if DUE.leaves_from(run.status):
            due = self._due(run)
            if due is None:
                return
            run = due
        if partitions.waits_for_its_job(run):
            self._restart(run)
            return
        if partitions.is_split(run):
            # A late or repeated job of a run that is already cut: its partitions' jobs do
            # the work; all it can usefully do is settle the run.
            partitions.settle(self.state, self.run_id)
            return
        if run.status in STOP_REQUESTED:
            self._settle_stop()
            return
        if run.status not in STARTABLE:
            logger.info("Run #%s is %s; job %s does nothing.", self.run_id, run.status, self.job_id)
            return

        task = self._task_of(run)
        if run.parent_id is not None:
            # Before the collection is built: a task cut by its own
            # partition_ranges() reads its range there.
            bounds = run.bounds or {}
            task.partition = partitioned.Partition(
                index=run.partition or 0,
                count=int(bounds.get("of") or 1),
                range=bounds.get("range", bounds),
            )
        self.source = source = source_of(task)
        splitting = run.parent_id is None and (run.partitions or 1) > 1
        parts: list[partitioned.Part] = []
        if run.parent_id is not None:
            self.source = source = partitioned.within(task, source, run.bounds or {})
        elif splitting:
            parts = partitions.split(task, source, run, self.session)
        # Count once, when the run first starts: a resumed run keeps its total,
        # which a collection filtered on "still to do" would otherwise shrink
        # under the items already counted in tick_count. Only a CSV task whose
        # batch size changed since its cursor was saved gets a new total.
        first_start = (
            run.status == RunStatus.ENQUEUED and run.tick_count == 0 and run.cursor is None
        )
        if run.parent_id is not None:
            first_start, total = False, None  # counted when its run was cut
        elif splitting and all(part.total is not None for part in parts):
            total = sum(t.cast(int, part.total) for part in parts)
        elif not first_start:
            total = source.recount(run)
        elif run.retry_of_id is not None:
            total = source.count()  # the failures retried, whatever the task counts
        else:
            total = task.count()
        self.session.rollback()

        claim = lifecycle.new_job_id()
        given: dict[str, t.Any] = {"job_id": claim}
        if first_start or total is not None:
            given["tick_total"] = total

        changed = self._change(_claim, given)
        if changed.transition not in (START, CARRY_ON):
            self._after_stop(changed)
            return
        self.job_id = claim
        run = changed.run
        task.run = run
        partitions.follow(self.state, changed, task)
        if run.dry_run:
            self.session.rollback()  # after_start's writes would not happen either
        if splitting:
            self._split(parts)
            return
        self._iterate(task, source, run)

    def _due(self, run: Run) -> Run | None:
        """The job of a scheduled run: make the run ``enqueued`` once its time has come.

        The job then takes it as any first job would. A job early by this
        worker's clock (another host's scheduler ran ahead) hands the run to
        a new job due at the run's time instead; ``None`` then.
        """
        due_at = t.cast(datetime, run.scheduled_at)
        if due_at > utcnow():
            next_job = lifecycle.new_job_id()
            changed = self._change(_if_still(REQUEUE, DUE), {"job_id": next_job})
            if changed.applied:
                logger.info("Run #%s is due at %s: its job waits until then.", run.id, due_at)
                self.state.executor.enqueue(
                    self.run_id, next_job, at=due_at, queue=self._queue(run.task_name)
                )
            return None
        changed = self._change(_if_still(DUE, DUE))
        if not changed.applied:
            return None
        partitions.follow(self.state, changed)
        return changed.run

    def _task_of(self, run: Run) -> Task:
        """The run's task, built with its arguments, for this slice."""
        task = self.state.registry.get(run.task_name)(**(run.arguments or {}))
        task.metadata = run.metadata_
        task.dry_run = bool(run.dry_run)
        task.run = run  # a CSV source counts and reads the run's file
        lifecycle.attach_status(self.state, task, run)
        self.task = task
        return task

    def _restart(self, run: Run) -> None:
        """Start a resumed cut run again (``after_start``), then resume its partitions.

        As for any run, ``after_start`` comes before any item: if it raises,
        the run errors and its partitions stay as they were.
        """
        task = self._task_of(run)
        claim = lifecycle.new_job_id()

        # Started again after a resume; carried on when a restart was cut short
        # after its start (its after_start already ran).
        changed = self._change(_claim, {"job_id": claim})
        if changed.transition not in (START, CARRY_ON):
            self._after_stop(changed)
            return
        self.job_id = claim
        task.run = changed.run
        partitions.follow(self.state, changed, task)
        if changed.run.dry_run:
            self.session.rollback()  # after_start's writes would not happen either
        else:
            self.session.commit()

        # The partitions are resumed while this job still holds the run, so that no
        # settle (a late job of a partition, recovery) can take the run for one whose
        # resume came to nothing and pause it again. Safe to repeat: each stopped
        # partition is resumed once.
        store.retried_on_lock(lambda: partitions.resume(self.state, self.run_id, self.actor))

        def release(current: Run) -> store.Decision:
            # No job holds a cut run: its partitions' jobs carry it, and a pause or
            # cancel asked meanwhile reaches them through the settle below.
            if current.job_id != claim:
                raise Fenced()
            return {"job_id": None} if partitions.waits_for_its_job(current) else None

        store.change(self.session, self.run_id, release, jitter=False)
        store.retried_on_lock(lambda: partitions.settle(self.state, self.run_id, self.actor))

    def _split(self, parts: list[partitioned.Part]) -> None:
        """Write the run's partitions and enqueue a job for each: they take it from here."""
        self.session.commit()
        children = partitions.create(self.state, self.session, self.run_id, self.job_id, parts)
        logger.info("Run #%s is cut into %s partitions.", self.run_id, len(children))
        partitions.enqueue(self.state, children)
        # An operator may have paused or cancelled the run while it was being cut.
        partitions.settle(self.state, self.run_id)

    def _iterate(self, task: Task, source: Source, run: Run) -> None:
        """Walk the run's items from its cursor, its pace carried on from its row."""
        if run.batch_size_override and isinstance(source, RecordsSource):
            # A walk's pages keep their size: an operator's change starts with a slice.
            source.page_size = run.batch_size_override
        iteration = Iteration(
            self.session,
            self.state.settings,
            self.run_id,
            self.job_id,
            task,
            source,
            report=lambda error, item: lifecycle.report_error(
                self.state, error, run, source.describe(item)
            ),
            policy=ErrorPolicy(run.error_policy, run.max_failures, run.max_failure_rate),
            record=functools.partial(self._failure, run, source),
            failed=functools.partial(self._announce_failures, run),
            done=(
                store.family_totals(self.session, run.parent_id)
                if run.parent_id is not None
                else (run.tick_count or 0, run.failure_count or 0)
            ),
            capture=dryrun.Capture(self.session, self._mask_value) if run.dry_run else None,
            changes=dryrun.Changes(run.changes) if run.dry_run else None,
            parent_id=run.parent_id,
            time_running=run.time_running or 0.0,
            speed=store.Status(
                run.status,
                run.job_id,
                run.max_rate,
                run.batch_size_override,
                run.ticker_delay_override,
            ),
            pace=pace.Series(run.pace, after=self.after),
        )
        try:
            if iteration.capture is not None:
                with iteration.capture:
                    reason = iteration.run(run.cursor)
            else:
                reason = iteration.run(run.cursor)
        except BaseException:
            self.element = iteration.failed_item
            raise
        self.backoff = iteration.backoff
        if reason is None:
            self._completed(task)
        else:
            self._stopped(reason)

    # -- failed items -----------------------------------------------------

    def _failure(
        self,
        run: Run,
        source: Source,
        item: t.Any,
        before: t.Any,
        cursor: t.Any,
        error: BaseException,
    ) -> dict[str, t.Any]:
        """The ledger row of a failed item: its key, masked description and scrubbed error."""
        key, position, attempt = source.failure_of(item, before, cursor)
        return ledger.row(
            run_id=self.run_id,
            key=key,
            kind=source.kind,
            position=position,
            item=self._masked(source.describe(item)),
            error=error,
            message=masking.scrub(message_of(error), self.secrets),
            backtrace=clean_backtrace(self.state, error),
            attempt=attempt,
        )

    def _mask_value(self, column: str, value: t.Any) -> t.Any:
        """A value of a dry run's sample of changes, masked as an argument of that name."""
        task_class = type(self.task) if self.task is not None else None
        masked = masking.mask({column: value}, task_class, self.state.settings.masked_parameters)
        return masking.scrub_tree(masked[column], self.secrets)

    def _masked(self, description: t.Any) -> t.Any:
        task_class = type(self.task) if self.task is not None else None
        masked = masking.mask(description, task_class, self.state.settings.masked_parameters)
        return masking.scrub_tree(masked, self.secrets)

    def _announce_failures(
        self, run: Run, failures: list[tuple[dict[str, t.Any], BaseException]]
    ) -> None:
        """``item_failed`` for each failure of a committed tick."""
        receivers = signals.item_failed.receivers
        if not receivers:
            return
        for values, error in failures:
            for receiver in signals.item_failed.receivers_for(self.state.app):
                try:
                    receiver(self.state.app, run=run, item=values["item"], error=error)
                except Exception:
                    logger.exception("A receiver of item-failed failed for run #%s", run.id)

    # -- endings ----------------------------------------------------------

    def _settle_stop(self) -> None:
        """The run was asked to stop before this slice began: stop it."""
        self._after_stop(self._change(lambda current: settling(current.status)))

    def _after_stop(self, changed: lifecycle.Changed) -> None:
        # A stop settled before this slice built its task still calls
        # after_pause / after_cancel: build the task for them.
        task = self.task
        if task is None and changed.applied:
            task = lifecycle.task_for(self.state, changed.run)
        partitions.follow(self.state, changed, task)
        if changed.applied and partitions.is_split(changed.run):
            partitions.settle(self.state, self.run_id)  # its partitions stop too

    def _stopped(self, reason: str) -> None:
        """Settle an operator's stop, or hand the run on to a next slice."""
        next_job = lifecycle.new_job_id()

        def stop(current: Run) -> Transition | None:
            if INTERRUPT.leaves_from(current.status) and reason not in OPERATOR_STOPS:
                return INTERRUPT
            if reason in REQUEUED_REASONS and REQUEUE.leaves_from(current.status):
                return REQUEUE  # it failed before taking the run
            return settling(current.status)

        changed = self._change(stop, {"job_id": next_job, "interruption_reason": reason})
        if changed.transition not in (INTERRUPT, REQUEUE):
            self._after_stop(changed)
            return
        delay = self.backoff if reason in DELAYED_REASONS else 0.0
        if changed.run.parent_id is not None:
            # A partition: its next slice first. Settling its run may fail or
            # wait (SQLite's lock, a crash), which must neither leave the
            # partition without a job nor error it; the run's next settle
            # (any partition's next change, recovery) brings it up to date.
            self._enqueue_next(next_job, delay)
            self._settle_run(changed)
            return
        try:
            partitions.follow(self.state, changed, self.task)
        except Exception as error:
            self._errored(error, fence=next_job)
            return
        self._enqueue_next(next_job, delay)

    def _enqueue_next(self, next_job: str, delay: float) -> None:
        try:
            self.state.executor.enqueue(
                self.run_id, next_job, delay=delay, queue=self._queue(self.task_name)
            )
        except Exception:
            # The run is safely interrupted at its cursor; recovery enqueues
            # the next slice once the queue is reachable again.
            logger.exception("Could not enqueue the next slice of run #%s", self.run_id)

    def _settle_run(self, changed: lifecycle.Changed) -> None:
        """Settle the run of a partition that changed, leaving a failure to the next settle."""
        try:
            partitions.follow(self.state, changed, self.task)
        except Exception:
            logger.exception(
                "Run #%s could not follow its partition #%s yet; its next settle will",
                changed.run.parent_id,
                self.run_id,
            )

    def _completed(self, task: Task) -> None:
        run = t.cast(Run, task.run)
        lifecycle.call_back(self.state, SUCCEED, run, task)
        if run.dry_run:
            self.session.rollback()  # a dry run keeps nothing after_complete wrote
        else:
            self.session.commit()  # whatever after_complete wrote

        def succeed(current: Run) -> Transition:
            if not SUCCEED.leaves_from(current.status):
                raise Fenced()
            return SUCCEED

        # after_complete ran: a lock timeout now must not hand the run on, whose
        # next slice would find nothing left and call after_complete again.
        changed = store.retried_on_lock(
            lambda: self._change(succeed), rollback=self.session.rollback
        )
        if changed.run.parent_id is not None:
            # The partition is done, whatever becomes of this settle: should it
            # fail, recovery settles the run once its heartbeat is old.
            self._settle_run(changed)
            return
        partitions.follow(self.state, changed, task)

    def _connection_lost(self, error: BaseException, reason: str = "connection_lost") -> None:
        """The database connection died, or SQLite's lock was not had in time: hand the run on.

        The tick in progress was rolled back, so nothing of it was applied;
        the next slice retries it from the saved cursor a second later. The
        second is waited here, before the hand-over, and the next slice is
        queued at once: a delayed job would wait for RQ's scheduler, which
        the same outage (Redis's) may have killed. If the database cannot
        be reached at all, the run stays as it is and recovery carries it
        on later.
        """
        logger.warning("Run #%s: %s (%s); handed on", self.run_id, error, reason)
        self.session.rollback()
        time.sleep(CONNECTION_RETRY_DELAY)
        self.backoff = 0.0
        # Handing on writes too: on a busy SQLite file it may wait in vain
        # for the lock as the tick did. Try again, a little later each time,
        # before leaving the run to recovery, which only comes after
        # stuck_after: the job ends, and RQ's "finished" says nothing of it.
        attempts = 10 if reason == "database_locked" else 1
        for attempt in range(1, attempts + 1):
            try:
                self._stopped(reason)
            except Fenced:
                return
            except sa.exc.DBAPIError as again:
                self.session.rollback()
                if attempt < attempts and store.lock_timed_out(again):
                    time.sleep(0.05 * attempt)
                    continue
                logger.exception("Run #%s could not be handed on; recovery will", self.run_id)
            except Exception:
                logger.exception("Run #%s could not be handed on; recovery will", self.run_id)
            return

    def _queue(self, task_name: str | None) -> str | None:
        """The queue of the run's task (its next slices go there too); ``None``: the app's."""
        return self.state.registry.queue_of(task_name) if task_name else None

    def _secrets(self, run: Run) -> list[str]:
        try:
            task_class: type[Task] | None = self.state.registry.get(run.task_name)
        except Exception:
            # (A tasks package that fails to import: the slice errors the run
            # with that error when it looks the task up again.)
            task_class = None
        masked = self.state.settings.masked_parameters
        return masking.secret_values(run.arguments, task_class, masked)

    def _errored(self, error: BaseException, *, fence: str | None = None) -> None:
        self.session.rollback()
        if self.task is not None:
            # What the undone tick published goes with it; after_error may publish more.
            self.task.status.revert()
        # A task that replaced the app's session (db.session.remove()) left another
        # one open, maybe holding SQLite's write lock: end its transaction too.
        self.state.db.session.rollback()
        element = self.source.describe(self.element) if self.source is not None else None
        message = masking.scrub(message_of(error), self.secrets)
        logger.error("Run #%s errored: %s: %s", self.run_id, type(error).__name__, message)
        changed = lifecycle.error(
            self.session,
            self.run_id,
            error,
            message=message,
            actor=self.actor,
            fence=fence or self.job_id,
            backtrace=clean_backtrace(self.state, error),
            element=element,
        )
        transition, run = changed.transition, changed.run
        if transition is None:
            return
        if run.parent_id is not None:
            # A partition's error is its run's: reported once here, then the run
            # stops its other partitions and errors when they have stopped.
            lifecycle.report_error(self.state, error, run, element)
            partitions.settle(self.state, run.parent_id)
            return
        lifecycle.call_back(self.state, transition, run, self.task, error)
        lifecycle.report_error(self.state, error, run, element)
        if transition.signal is not None:
            lifecycle.announce(transition.signal, self.state.app, run)


def _claim(current: Run) -> Transition:
    """How a job takes a run with a token of its own: started, carried on, or a stop settled.

    A duplicate delivery of the same job then finds the run claimed, and stops.
    """
    stop = settling(current.status)
    if stop is not None:
        return stop
    for transition in (START, CARRY_ON):
        if transition.leaves_from(current.status):
            return transition
    raise Fenced()
