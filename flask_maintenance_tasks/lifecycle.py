"""Applies the state machine to run rows: the write, then the callback and the signal.

:mod:`~flask_maintenance_tasks.transitions` says what each change is;
this module carries one out. :func:`change` writes it under optimistic locking
(re-deciding on the fresh row after a lost race) and, for a job, only while
that job still holds the run. :func:`follow` then calls the task's callback
with the transition's error policy and sends its signal. The job, the runner
and recovery all change runs this way, and only this way.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t
import uuid

from . import audit, i18n, store
from .dryrun import NoCommit, own_write
from .exceptions import MaintenanceTasksError, message_of
from .formatting import partition_detail
from .i18n import english
from .masking import masked_arguments, masked_metadata, masked_published
from .models import Run, RunStatus, utcnow
from .published import TaskStatus, step_line
from .state import get_state
from .transitions import ERROR, OnCallbackError, Transition

if t.TYPE_CHECKING:
    from blinker import NamedSignal
    from flask import Flask
    from sqlalchemy.orm import Session

    from .state import State
    from .task import Task

logger = logging.getLogger("flask_maintenance_tasks")

#: Chooses the change for the run as freshly read: a transition, or ``None`` for none.
Choice = t.Callable[[Run], "Transition | None"]


@dataclasses.dataclass(frozen=True)
class Changed:
    """The run after :func:`change`, and the transition written (``None``: nothing was)."""

    run: Run
    transition: Transition | None

    @property
    def applied(self) -> bool:
        return self.transition is not None


def bounded_session(state: State) -> Session:
    """A session of our own whose statements wait for a locked row only so long.

    For operators' actions and recovery: past ``MAINTENANCE_TASKS_LOCK_TIMEOUT``
    a statement fails with an error for which :func:`.store.busy` is true,
    instead of waiting for as long as another transaction holds the run.
    """
    setting = state.settings.lock_timeout
    timeout = store.lock_timeout_of(setting, state.db.engine)
    # The default never lengthens a shorter busy timeout SQLite was given.
    return store.open_session(state.db, lock_timeout=timeout, shorten_only=setting is None)


def change(
    session: Session,
    run_id: int,
    choose: Transition | Choice,
    *,
    actor: audit.Actor,
    fence: str | None = None,
    given: t.Mapping[str, t.Any] | None = None,
    jitter: bool = True,
) -> Changed:
    """Write the chosen transition on run ``run_id`` and commit.

    ``choose`` is a transition, applied when the run's status is one of its
    sources, or a function choosing one from the run as read (it may raise
    :class:`~flask_maintenance_tasks.InvalidTransition` to refuse). With
    ``fence``, nothing is written unless the run's ``job_id`` is ``fence``.
    ``given`` holds the values the transitions take from the caller; each
    transition takes the ones it declares. The change's event, done by
    ``actor``, is written in the same transaction.

    :raises RunNotFound: no such run.
    """
    decider = _Decider(choose, fence, given or {})

    def written(session: Session, run: Run, values: t.Mapping[str, t.Any]) -> None:
        transition = decider.chosen
        if transition is None or transition.event is None:
            return
        audit.record(
            session,
            run_id=run_id,
            task_name=run.task_name,
            action=transition.event,
            actor=actor,
            detail=_detail(values),
        )

    run = store.change(session, run_id, decider, jitter=jitter, written=written)
    return Changed(run, decider.chosen)


def _detail(values: t.Mapping[str, t.Any]) -> str | None:
    """What an event says besides its action: the error's class, or why the run stopped."""
    if values.get("error_class"):
        return str(values["error_class"])
    reason = values.get("interruption_reason")
    return str(reason) if reason else None


class _Decider:
    """Decides the values of a change on each fresh read; remembers the transition chosen."""

    def __init__(
        self, choose: Transition | Choice, fence: str | None, given: t.Mapping[str, t.Any]
    ) -> None:
        self.choose = choose
        self.fence = fence
        self.given = given
        self.chosen: Transition | None = None

    def __call__(self, current: Run) -> store.Decision:
        self.chosen = None
        if self.fence is not None and current.job_id != self.fence:
            return None
        if isinstance(self.choose, Transition):
            transition = self.choose if self.choose.leaves_from(current.status) else None
        else:
            transition = self.choose(current)
        if transition is None:
            return None
        self.chosen = transition
        own = {name: value for name, value in self.given.items() if name in transition.given}
        return transition.values(current, utcnow(), own)


def new_job_id() -> str:
    """A fresh job id: the token that fences a run to one job slice."""
    return uuid.uuid4().hex


def error(
    session: Session,
    run_id: int,
    failure: BaseException,
    *,
    actor: audit.Actor,
    message: str | None = None,
    fence: str | None = None,
    backtrace: list[str] | None = None,
    element: t.Any = None,
) -> Changed:
    """Record ``failure`` on the run and end it (:data:`~.transitions.ERROR`).

    ``message`` replaces the failure's own text (scrubbed of secrets, say).

    Not applied when the run moved on meanwhile: another job holds it
    (``fence``), or it already ended.
    """
    if message is None:
        with i18n.english():  # stored, and read by everyone: in English
            message = message_of(failure)
    return change(
        session,
        run_id,
        ERROR,
        actor=actor,
        fence=fence,
        jitter=False,
        given={
            "error_class": type(failure).__name__,
            "error_message": message[:10000],
            "backtrace": backtrace,
            "errored_element": element,
        },
    )


def task_for(state: State, run: Run) -> Task | None:
    """An instance of the run's task with its stored arguments, or ``None`` if it is gone."""
    try:
        task = state.registry.get(run.task_name)(**(run.arguments or {}))
    except MaintenanceTasksError:
        return None
    task.run = run
    task.metadata = run.metadata_
    task.dry_run = bool(run.dry_run)
    attach_status(state, task, run)
    return task


def attach_status(state: State, task: Task, run: Run) -> None:
    """Give ``task`` the status its run last committed, writable at once with ``now=True``."""
    db, run_id = state.db, run.id

    def write_now(published: dict[str, t.Any], step_changed: bool) -> bool:
        if _holds_sqlite(db):
            # SQLite's one writer (or a reader that keeps others from committing) is the
            # transaction under way on this thread: a second one would wait for ever.
            return False
        # A session of its own: the tick's transaction must commit only with its cursor.
        # (A dry run keeps its status as it keeps its progress.)
        with store.open_session(db) as session, own_write():
            store.publish(session, run_id, published)
            if step_changed:
                record_step(session, run, published)
            session.commit()
        return True

    task.status = TaskStatus(
        run.published if isinstance(run.published, dict) else None,
        max_bytes=state.settings.max_status_bytes,
        writer=write_now,
    )


def _holds_sqlite(db: t.Any) -> bool:
    """Whether the app's session has an SQLite transaction open (it may hold the lock)."""
    if db.engine.dialect.name != "sqlite":
        return False
    session = db.session()
    if not session.in_transaction():
        return False
    raw = session.connection().connection.dbapi_connection
    return bool(getattr(raw, "in_transaction", True))


def record_step(session: Session, run: Run, published: t.Mapping[str, t.Any]) -> None:
    """The audit trail's line for a new step, on the run an operator sees (the caller commits)."""
    with english():  # stored: read by everyone, whatever their language
        detail = step_line(published)
    audit.record(
        session,
        run_id=run.parent_id or run.id,
        task_name=run.task_name,
        action=audit.STEP_CHANGED,
        actor=audit.worker(),
        detail=detail,
    )


def _write_published(state: State, run: Run, task: Task) -> None:
    """What a callback published, written when it returns: one statement, only if it did."""
    published = task.status.pending()
    if published is None:
        return
    session = t.cast("Session", state.db.session())
    store.publish(session, run.id, published)
    if task.status.step_changed:
        record_step(session, run, published)
    session.commit()
    task.status.written()


def call_back(
    state: State,
    transition: Transition,
    run: Run,
    task: Task | None,
    error: BaseException | None = None,
) -> None:
    """Call the transition's callback on ``task`` with its error policy.

    Under :attr:`OnCallbackError.FAIL` the callback's exception is raised to
    the caller, whose job it is to error the run.
    """
    callback = transition.callback
    if callback is None or task is None or run.parent_id is not None:
        return  # a partition's callbacks are its run's, called once for the run
    task.run = run
    if run.dry_run:
        # A dry run's callbacks write nothing either: no commit, and their writes undone.
        callback = _dry(callback, state)
    if transition.on_callback_error is OnCallbackError.FAIL:
        callback(task, error)
        _write_published(state, run, task)
        return
    try:
        callback(task, error)
        _write_published(state, run, task)
    except Exception as failure:
        name = callback.__name__.lstrip("_")
        logger.exception("%s.%s failed for run #%s", run.task_name, name, run.id)
        if transition.on_callback_error is OnCallbackError.REPORT:
            report_error(state, failure, run, None)


def _dry(
    callback: t.Callable[[Task, BaseException | None], None], state: State
) -> t.Callable[[Task, BaseException | None], None]:
    def guarded(task: Task, error: BaseException | None) -> None:
        session = state.db.session
        try:
            with NoCommit(state.db.engine, who=f"{callback.__name__.strip('_')}()"):
                callback(task, error)
        finally:
            session.rollback()

    return guarded


def follow(
    state: State,
    changed: Changed,
    task: Task | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    """What follows a written change: its callback (unless it came first), then its signal."""
    transition = changed.transition
    if transition is None:
        return
    if not transition.callback_first:
        call_back(state, transition, changed.run, task, error)
    if transition.signal is not None:
        announce(transition.signal, state.app, changed.run)


def payload(app: Flask, run: Run) -> dict[str, t.Any]:
    """What signal receivers get as ``payload=``: the run's facts, arguments masked."""
    data: dict[str, t.Any] = {
        "task_name": run.task_name,
        "run_id": run.id,
        "job_id": run.job_id,
        "arguments": masked_arguments(app, run.task_name, run.arguments),
        "metadata": masked_metadata(app, run.metadata_),
        "published": masked_published(app, run),
        "time_running": run.time_running,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
    }
    if (run.partitions or 1) > 1:
        data["partitions"] = _partitions(run)
    if run.status == RunStatus.ERRORED:
        data["error"] = {
            "class": run.error_class,
            "message": run.error_message,
            "backtrace": run.backtrace,
        }
    return data


def _partitions(run: Run) -> list[dict[str, t.Any]]:
    """Each partition of a partitioned run, as the JSON shows it (``[]`` before the cut)."""
    state = get_state()
    with store.open_session(state.db) as session:
        children = store.partitions_of(session, [run.id]).get(run.id, [])
    return [partition_detail(child) for child in children]


def announce(signal: NamedSignal, app: Flask, run: Run) -> None:
    """Send ``signal`` to each receiver in turn; a failing receiver is logged and skipped."""
    if not signal.receivers:
        return
    data = payload(app, run)
    for receiver in signal.receivers_for(app):
        try:
            receiver(app, run=run, payload=data)
        except Exception:
            logger.exception("A receiver of %s failed for run #%s", signal.name, run.id)


def report_error(state: State, error: BaseException, run: Run | None, element: t.Any) -> None:
    """Hand an error to ``MAINTENANCE_TASKS_ERROR_HANDLER``, if the app set one."""
    handler = state.settings.error_handler
    if handler is None:
        return
    context = {
        "task_name": run.task_name if run else None,
        "run_id": run.id if run else None,
        "started_at": run.started_at if run else None,
        "ended_at": run.ended_at if run else None,
        "tick_count": run.tick_count if run else None,
        "errored_element": element,
        "source": "maintenance-tasks",
    }
    try:
        handler(error, context)
    except Exception:
        logger.exception("MAINTENANCE_TASKS_ERROR_HANDLER failed")
