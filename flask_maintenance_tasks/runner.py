"""Starts, pauses, resumes and cancels runs, the one way every front end acts.

The dashboard, the CLI and the Python API all call these functions. Each one
either does all it says or raises a :class:`MaintenanceTasksError` having
written nothing (except :class:`EnqueueError`, see there).
"""

from __future__ import annotations

import logging
import typing as t
import uuid

import sqlalchemy as sa

from . import signals, sources, store
from .csv import storage as csv_storage
from .exceptions import (
    CSVFileError,
    EnqueueError,
    InvalidTransition,
    MaintenanceTasksError,
    TaskAlreadyRunning,
)
from .models import Run, RunStatus, runs_table, utcnow
from .transitions import ACTIVE, can_transition, is_stuck

if t.TYPE_CHECKING:
    from .state import State
    from .task import Task

logger = logging.getLogger("flask_maintenance_tasks")
S = RunStatus


def new_job_id() -> str:
    return uuid.uuid4().hex


def run(
    state: State,
    name: str,
    arguments: t.Mapping[str, t.Any],
    *,
    csv_file: t.Any = None,
    metadata: t.Any = None,
) -> Run:
    task_class = state.registry.get(name)
    params = task_class.validate_arguments(arguments)
    upload = _csv_upload(state, task_class, arguments, csv_file)
    try:
        return _create(state, task_class, params, metadata, upload)
    except EnqueueError:
        raise  # the run was saved with its file, and can be resumed
    except BaseException:
        if upload is not None:
            _discard(state, upload)
        raise


def _discard(state: State, upload: csv_storage.StoredUpload) -> None:
    try:
        csv_storage.discard(state, upload)
    except Exception:
        logger.exception("Could not delete the stored CSV file %s", upload.storage_key)


def _csv_upload(
    state: State, task_class: type[Task], arguments: t.Mapping[str, t.Any], csv_file: t.Any
) -> csv_storage.StoredUpload | None:
    """Check and store the run's CSV file, if its task is a CSV task; refuse a mismatch."""
    spec = sources.csv_spec(task_class, arguments)
    name = task_class.name
    if spec is None:
        if csv_file is not None:
            raise CSVFileError(
                f"{name} is not a CSV task: it takes no CSV file. Start it without one."
            )
        return None
    if csv_file is None:
        raise CSVFileError(
            f"{name} is a CSV task: give it a CSV file (csv_file= in Python, --csv PATH or "
            "--csv - for standard input on the command line, the file field in the dashboard)."
        )
    # Refuse before copying a large file when the answer is already known.
    if not task_class.allow_concurrent_runs:
        with store.open_session(state.db) as session:
            _raise_if_already_running(session, task_class)
    return csv_storage.store_upload(state, name, spec, csv_file)


def _create(
    state: State,
    task_class: type[Task],
    params: t.Any,
    metadata: t.Any,
    upload: csv_storage.StoredUpload | None,
) -> Run:
    job_id = new_job_id()
    now = utcnow()
    run = Run(
        task_name=task_class.name,
        status=S.ENQUEUED.value,
        arguments=task_class.dump_arguments(params),
        metadata_=metadata,
        job_id=job_id,
        exclusive_key=None if task_class.allow_concurrent_runs else task_class.name,
        tick_count=0,
        time_running=0.0,
        lock_version=0,
        created_at=now,
        updated_at=now,
    )
    with store.open_session(state.db) as session:
        session.add(run)
        if upload is not None:
            record = upload.record()
            record.run = run
            session.add(record)
        try:
            session.commit()
        except sa.exc.IntegrityError:
            session.rollback()
            _raise_if_already_running(session, task_class)
            raise
        _enqueue(state, session, run, job_id)
        return run


def _raise_if_already_running(session: sa.orm.Session, task_class: type[Task]) -> None:
    """After a failed write: if the task's exclusive key is taken, say so."""
    if task_class.allow_concurrent_runs:
        return
    run_id = session.execute(
        sa.select(runs_table.c.id).where(runs_table.c.exclusive_key == task_class.name)
    ).scalar()
    if run_id is not None:
        raise TaskAlreadyRunning(task_class.name, run_id) from None


def _enqueue(state: State, session: sa.orm.Session, run: Run, job_id: str) -> None:
    """Hand the committed run to the executor; on failure the run is ``errored``."""
    try:
        state.executor.enqueue(run.id, job_id)
    except Exception as exc:
        logger.exception("Could not enqueue run #%s", run.id)
        errored = mark_errored(state, session, run.id, exc, only_job_id=job_id)
        if errored is not None:
            signals.send(signals.run_errored, state.app, errored)
        raise EnqueueError(run.id, exc) from exc
    signals.send(signals.run_enqueued, state.app, run)


def mark_errored(
    state: State,
    session: sa.orm.Session,
    run_id: int,
    error: BaseException,
    *,
    only_job_id: str | None = None,
    backtrace: list[str] | None = None,
    element: t.Any = None,
) -> Run | None:
    """Record ``error`` on the run and end it; ``None`` if the run moved on meanwhile."""
    now = utcnow()
    applied = False

    def decide(current: Run) -> store.Decision:
        nonlocal applied
        applied = False
        if only_job_id is not None and current.job_id != only_job_id:
            return None
        if current.status == S.ERRORED.value or not can_transition(current.status, S.ERRORED):
            return None
        applied = True
        return {
            "status": S.ERRORED.value,
            "error_class": type(error).__name__,
            "error_message": str(error)[:10000],
            "backtrace": backtrace,
            "errored_element": element,
            "ended_at": now,
            "started_at": current.started_at or now,
            "exclusive_key": None,
        }

    result = store.change(session, run_id, decide, jitter=False)
    return result if applied else None


def get_run(state: State, run_id: int) -> Run | None:
    with store.open_session(state.db) as session:
        return session.get(Run, run_id)


def _load_or_raise(session: sa.orm.Session, run_id: int) -> Run:
    try:
        return store.load(session, run_id)
    except store.RunNotFound:
        raise MaintenanceTasksError(f"Run #{run_id} not found.") from None


def _task_for(state: State, run: Run) -> Task | None:
    """An instance of the run's task with its stored arguments, or ``None`` if it is gone."""
    try:
        task_class = state.registry.get(run.task_name)
        task = task_class(**(run.arguments or {}))
    except MaintenanceTasksError:
        return None
    task.run = run
    task.metadata = run.metadata_
    return task


def _callback(state: State, run: Run, name: str) -> None:
    """Fire a callback for a status an operator forced; a failure is reported, not raised."""
    task = _task_for(state, run)
    if task is None:
        return
    try:
        getattr(task, name)()
    except Exception as exc:
        logger.exception("%s.%s failed for run #%s", run.task_name, name, run.id)
        report_error(state, exc, run, None)


def report_error(state: State, error: BaseException, run: Run | None, element: t.Any) -> None:
    """Hand an error to ``MAINTENANCE_TASKS_ERROR_HANDLER`` (or the log)."""
    handler = state.settings.error_handler
    context = {
        "task_name": run.task_name if run else None,
        "run_id": run.id if run else None,
        "started_at": run.started_at if run else None,
        "ended_at": run.ended_at if run else None,
        "tick_count": run.tick_count if run else None,
        "errored_element": element,
        "source": "maintenance-tasks",
    }
    if handler is None:
        return
    try:
        handler(error, context)
    except Exception:
        logger.exception("MAINTENANCE_TASKS_ERROR_HANDLER failed")


def _forced_pause() -> dict[str, t.Any]:
    """Values that pause a stuck run at once; its job, if alive, is fenced off."""
    return {"status": S.PAUSED.value, "job_id": None, "interruption_reason": "pause"}


def _forced_cancel() -> dict[str, t.Any]:
    """Values that cancel a run at once; its job, if alive, is fenced off."""
    return {
        "status": S.CANCELLED.value,
        "ended_at": utcnow(),
        "job_id": None,
        "exclusive_key": None,
        "interruption_reason": "cancel",
    }


def _after_forced(state: State, run: Run) -> None:
    if run.status == S.PAUSED.value:
        _callback(state, run, "after_pause")
        signals.send(signals.run_paused, state.app, run)
    else:
        _callback(state, run, "after_cancel")
        signals.send(signals.run_cancelled, state.app, run)


def settle_stuck(state: State, run_id: int, status: str, job_id: str | None) -> Run | None:
    """Force a stuck ``pausing`` / ``cancelling`` run to ``paused`` / ``cancelled``.

    Applies only if the run still has ``status`` and ``job_id`` and is still
    stuck; returns the settled run, or ``None`` when it moved on meanwhile.
    """
    applied = False

    def decide(current: Run) -> store.Decision:
        nonlocal applied
        applied = False
        if current.status != status or current.job_id != job_id:
            return None
        if not is_stuck(current.status, current.updated_at, utcnow(), state.settings.stuck_after):
            return None
        applied = True
        return _forced_pause() if status == S.PAUSING.value else _forced_cancel()

    with store.open_session(state.db) as session:
        run = store.change(session, run_id, decide)
    if not applied:
        return None
    _after_forced(state, run)
    return run


def pause(state: State, run_id: int) -> Run:
    now = utcnow()
    forced = False

    def decide(current: Run) -> store.Decision:
        nonlocal forced
        status = S(current.status)
        stuck = is_stuck(status, current.updated_at, now, state.settings.stuck_after)
        if stuck and status in (S.PAUSING, S.RUNNING):
            forced = True
            return _forced_pause()
        forced = False
        if status == S.PAUSING:
            return None
        if not can_transition(status, S.PAUSING):
            raise InvalidTransition("pause", status.value, run_id)
        return {"status": S.PAUSING.value}

    with store.open_session(state.db) as session:
        _load_or_raise(session, run_id)
        result = store.change(session, run_id, decide)
    if forced:
        _after_forced(state, result)
    return result


def cancel(state: State, run_id: int) -> Run:
    now = utcnow()
    immediate = False

    def decide(current: Run) -> store.Decision:
        nonlocal immediate
        status = S(current.status)
        stuck = is_stuck(status, current.updated_at, now, state.settings.stuck_after)
        if status == S.PAUSED or stuck:
            immediate = True
            return _forced_cancel()
        immediate = False
        if status == S.CANCELLING:
            return None
        if not can_transition(status, S.CANCELLING):
            raise InvalidTransition("cancel", status.value, run_id)
        return {"status": S.CANCELLING.value}

    with store.open_session(state.db) as session:
        _load_or_raise(session, run_id)
        result = store.change(session, run_id, decide)
    if immediate:
        _after_forced(state, result)
    return result


def resume(state: State, run_id: int) -> Run:
    job_id = new_job_id()

    with store.open_session(state.db) as session:
        current = _load_or_raise(session, run_id)
        task_class = state.registry.get(current.task_name)

        def decide(current: Run) -> store.Decision:
            if current.status not in (S.PAUSED.value, S.ERRORED.value):
                raise InvalidTransition("resume", current.status, run_id)
            return {
                "status": S.ENQUEUED.value,
                "job_id": job_id,
                "interruption_reason": None,
                "ended_at": None,
                # The error was dealt with: a resumed run shows none.
                "error_class": None,
                "error_message": None,
                "backtrace": None,
                "errored_element": None,
                "exclusive_key": None if task_class.allow_concurrent_runs else task_class.name,
            }

        try:
            result = store.change(session, run_id, decide)
        except sa.exc.IntegrityError:
            session.rollback()
            _raise_if_already_running(session, task_class)
            raise
        _enqueue(state, session, result, job_id)
        return result


def active_runs(state: State, task_name: str | None = None) -> list[Run]:
    with store.open_session(state.db) as session:
        query = sa.select(Run).where(Run.status.in_([s.value for s in ACTIVE]))
        if task_name is not None:
            query = query.where(Run.task_name == task_name)
        return list(session.scalars(query.order_by(Run.created_at.desc(), Run.id.desc())))
