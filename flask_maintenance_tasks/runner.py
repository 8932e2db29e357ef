"""Starts, pauses, resumes and cancels runs, the one way every front end acts.

The dashboard, the CLI and the Python API all call these functions. Each one
either does all it says or raises a :class:`MaintenanceTasksError` having
written nothing (except :class:`EnqueueError`, see there).
"""

from __future__ import annotations

import logging
import typing as t

import sqlalchemy as sa

from . import audit, ledger, lifecycle, signals, sources, store
from .csv import uploads
from .exceptions import (
    CannotRetry,
    CSVFileError,
    EnqueueError,
    InvalidArguments,
    MaintenanceTasksError,
    TaskAlreadyRunning,
    TaskNotFound,
)
from .models import CSVFile, Failure, FailureStatus, Run, RunStatus, utcnow
from .policy import ErrorPolicy
from .transitions import (
    ACTIVE,
    CANCEL_REQUEST,
    FORCE_CANCEL,
    FORCE_PAUSE,
    PAUSE_REQUEST,
    RESUME,
    STOPPED,
    STUCKABLE,
    Transition,
    is_stuck,
)

if t.TYPE_CHECKING:
    from .state import State
    from .task import Task

logger = logging.getLogger("flask_maintenance_tasks")


def run(
    state: State,
    name: str,
    arguments: t.Mapping[str, t.Any],
    *,
    csv_file: t.Any = None,
    metadata: t.Any = None,
    actor: audit.Actor | None = None,
    error_policy: t.Any = None,
    max_failures: t.Any = None,
    max_failure_rate: t.Any = None,
    dry_run: bool = False,
) -> Run:
    """Create a run of task ``name`` and enqueue its first job.

    ``actor`` is who the audit trail says started it (the OS user of a Python
    call by default). A start refused for a task that exists leaves a
    ``refused`` event with the reason. ``error_policy``, ``max_failures`` and
    ``max_failure_rate`` override the task's (``None`` keeps it). A
    ``dry_run`` rolls back every tick and records what it would change; it
    does not hold the task's exclusive key.
    """
    actor = actor or audit.python()
    task_class = state.registry.get(name)
    try:
        params = task_class.validate_arguments(arguments)
        policy = ErrorPolicy.resolve(
            task_class,
            error_policy=error_policy,
            max_failures=max_failures,
            max_failure_rate=max_failure_rate,
        )
        upload = _csv_upload(state, task_class, arguments, csv_file)
    except MaintenanceTasksError as refusal:
        _refused(state, None, name, audit.STARTED, actor, refusal)
        raise
    try:
        return _create(
            state, task_class, params, metadata, upload, actor, policy, dry_run=bool(dry_run)
        )
    except EnqueueError:
        raise  # the run was saved with its file, and can be resumed
    except BaseException as failure:
        if upload is not None:
            _discard(state, upload)
        if isinstance(failure, MaintenanceTasksError):
            _refused(state, None, name, audit.STARTED, actor, failure)
        raise


def _refused(
    state: State,
    run_id: int | None,
    task_name: str,
    action: str,
    actor: audit.Actor,
    refusal: MaintenanceTasksError,
) -> None:
    """Leave a ``refused`` event saying why; the trail never fails the action's answer."""
    if isinstance(refusal, TaskNotFound):
        return  # no name that exists nowhere gets into the trail
    if isinstance(refusal, InvalidArguments):
        # Field names only: a message may quote the value, and the value may be secret.
        detail = "Invalid arguments: " + ", ".join(sorted(refusal.errors))
    else:
        detail = str(refusal)
    try:
        with store.open_session(state.db) as session:
            audit.record(
                session,
                run_id=run_id,
                task_name=task_name,
                action=action,
                actor=actor,
                outcome=audit.REFUSED,
                detail=detail,
            )
            session.commit()
    except Exception:
        logger.exception("Could not record the refused %s of %s", action, task_name)


def _discard(state: State, upload: uploads.StoredUpload) -> None:
    try:
        uploads.discard(state, upload)
    except Exception:
        logger.exception("Could not delete the stored CSV file %s", upload.storage_key)


def _csv_upload(
    state: State, task_class: type[Task], arguments: t.Mapping[str, t.Any], csv_file: t.Any
) -> uploads.StoredUpload | None:
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
    return uploads.store_upload(state, name, spec, csv_file)


def _create(
    state: State,
    task_class: type[Task],
    params: t.Any,
    metadata: t.Any,
    upload: uploads.StoredUpload | None,
    actor: audit.Actor,
    policy: ErrorPolicy,
    *,
    retry_of: Run | None = None,
    shared_file: CSVFile | None = None,
    dry_run: bool = False,
) -> Run:
    job_id = lifecycle.new_job_id()
    now = utcnow()
    exclusive = not (task_class.allow_concurrent_runs or dry_run)
    run = Run(
        dry_run=dry_run,
        error_policy=policy.name,
        max_failures=policy.max_failures,
        max_failure_rate=policy.max_failure_rate,
        failure_count=0,
        retry_of_id=retry_of.id if retry_of is not None else None,
        task_name=task_class.name,
        status=RunStatus.ENQUEUED,
        arguments=task_class.dump_arguments(params),
        metadata_=metadata,
        started_by=actor.who,
        job_id=job_id,
        exclusive_key=task_class.name if exclusive else None,
        tick_count=0,
        time_running=0.0,
        lock_version=0,
        created_at=now,
        updated_at=now,
    )
    with store.open_session(state.db) as session:
        session.add(run)
        try:
            session.flush()
        except sa.exc.IntegrityError:
            session.rollback()
            _raise_if_already_running(session, task_class)
            raise
        # The run, its file and their events: one transaction.
        audit.record(
            session,
            run_id=run.id,
            task_name=run.task_name,
            action=audit.STARTED,
            actor=actor,
            detail=_start_detail(retry_of, dry_run),
        )
        if retry_of is not None:
            audit.record(
                session,
                run_id=retry_of.id,
                task_name=retry_of.task_name,
                action=audit.FAILURES_RETRIED,
                actor=actor,
                detail=f"in run #{run.id}",
            )
        if shared_file is not None:
            # The retry reads the same stored bytes as the run it retries.
            session.add(
                CSVFile(
                    run_id=run.id,
                    storage_key=shared_file.storage_key,
                    filename=shared_file.filename,
                    original_filename=shared_file.original_filename,
                    size=shared_file.size,
                    line_count=shared_file.line_count,
                    created_at=now,
                )
            )
        if upload is not None:
            record = upload.record()
            record.run = run
            session.add(record)
            audit.record(
                session,
                run_id=run.id,
                task_name=run.task_name,
                action=audit.CSV_UPLOADED,
                actor=actor,
                detail=record.original_filename or record.filename,
            )
        session.commit()
        _enqueue(state, session, run, job_id, actor)
        return run


def _start_detail(retry_of: Run | None, dry_run: bool) -> str | None:
    parts = ["dry run"] if dry_run else []
    if retry_of is not None:
        parts.append(f"retry of the failures of run #{retry_of.id}")
    return "; ".join(parts) or None


def _raise_if_already_running(session: sa.orm.Session, task_class: type[Task]) -> None:
    """After a failed write: if the task's exclusive key is taken, say so."""
    if task_class.allow_concurrent_runs:
        return
    run_id = store.holder_of(session, task_class.name)
    if run_id is not None:
        raise TaskAlreadyRunning(task_class.name, run_id) from None


def _enqueue(
    state: State, session: sa.orm.Session, run: Run, job_id: str, actor: audit.Actor
) -> None:
    """Hand the committed run to the executor; on failure the run is ``errored``."""
    try:
        state.executor.enqueue(run.id, job_id)
    except Exception as exc:
        logger.exception("Could not enqueue run #%s", run.id)
        errored = lifecycle.error(session, run.id, exc, actor=actor, fence=job_id)
        lifecycle.follow(state, errored, error=exc)
        raise EnqueueError(run.id, exc) from exc
    lifecycle.announce(signals.run_enqueued, state.app, run)


def retry_failures(
    state: State,
    run_id: int,
    *,
    metadata: t.Any = None,
    actor: audit.Actor | None = None,
    error_policy: t.Any = None,
    max_failures: t.Any = None,
    max_failure_rate: t.Any = None,
) -> Run:
    """Start a run of the same task and arguments over the unresolved failures of ``run_id``.

    The new run walks exactly those items, found again by key in key order,
    under the retried run's error policy unless overridden. It is linked to
    the retried run (``retry_of_id``) and reads the same CSV file.

    :raises MaintenanceTasksError: no such run, or its task no longer exists.
    :raises CannotRetry: the run has no unresolved failure, or its task
        cannot find items by key; nothing is written.
    """
    actor = actor or audit.python()
    with store.open_session(state.db) as session:
        original = _load_or_raise(session, run_id)
        shared_file = store.csv_file_of(session, run_id)
        unresolved = ledger.count_unresolved(session, run_id)
        kinds = ledger.unresolved_kinds(session, run_id)
        retrying = [run.id for run in ledger.retries_of(session, run_id) if run.status in ACTIVE]
    try:
        try:
            task_class = state.registry.get(original.task_name)
        except TaskNotFound as missing:
            message = f"Cannot retry the failures of run #{run_id}: {missing}"
            raise MaintenanceTasksError(message) from None
        if original.status not in STOPPED:
            raise CannotRetry(
                run_id, f"it is {original.status}; retry its failures once it has stopped."
            )
        if retrying:
            raise CannotRetry(
                run_id, f"run #{retrying[0]} is retrying them already; wait for it to stop."
            )
        if unresolved == 0:
            raise CannotRetry(run_id, "it has no unresolved failed items.")
        params = task_class.validate_arguments(original.arguments or {})
        try:
            problem = sources.retry_problem(task_class(**(original.arguments or {})), kinds)
        except MaintenanceTasksError:
            raise
        except Exception as error:
            problem = f"its collection could not be built ({type(error).__name__}: {error})"
        if problem is not None:
            raise CannotRetry(run_id, problem)
        if sources.needs_file(task_class, original.arguments) and shared_file is None:
            raise CannotRetry(run_id, "its CSV file is gone.")
        policy = ErrorPolicy.resolve(
            task_class,
            error_policy=original.error_policy if error_policy is None else error_policy,
            max_failures=original.max_failures if max_failures is None else max_failures,
            max_failure_rate=(
                original.max_failure_rate if max_failure_rate is None else max_failure_rate
            ),
        )
    except MaintenanceTasksError as refusal:
        _refused(state, run_id, original.task_name, audit.FAILURES_RETRIED, actor, refusal)
        raise
    try:
        return _create(
            state,
            task_class,
            params,
            metadata,
            None,
            actor,
            policy,
            retry_of=original,
            shared_file=shared_file,
            dry_run=bool(original.dry_run),
        )
    except EnqueueError:
        raise
    except MaintenanceTasksError as refusal:
        _refused(state, run_id, original.task_name, audit.FAILURES_RETRIED, actor, refusal)
        raise


def failures(
    state: State,
    run_id: int,
    *,
    error_class: str | None = None,
    status: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[Failure]:
    """A page of the failure ledger of ``run_id``, in the order the items were met."""
    if status is not None and status not in {s.value for s in FailureStatus}:
        choices = ", ".join(s.value for s in FailureStatus)
        raise MaintenanceTasksError(f"Unknown failure status {status!r}: choose {choices}.")
    with store.open_session(state.db) as session:
        return ledger.page(
            session,
            run_id,
            after=after,
            error_class=error_class,
            status=status,
            limit=max(1, min(int(limit), 10_000)),
        )


def run_for_real(
    state: State, run_id: int, *, metadata: t.Any = None, actor: audit.Actor | None = None
) -> Run:
    """Start a normal run with the arguments, error policy and CSV file of a succeeded dry run.

    :raises MaintenanceTasksError: no such run, it is no dry run or has not
        succeeded, or its task is gone; nothing is written.
    :raises TaskAlreadyRunning: as for any start.
    """
    actor = actor or audit.python()
    with store.open_session(state.db) as session:
        dry = _load_or_raise(session, run_id)
        shared_file = store.csv_file_of(session, run_id)
    try:
        if not dry.dry_run:
            raise MaintenanceTasksError(f"Run #{run_id} is not a dry run.")
        if dry.status != RunStatus.SUCCEEDED:
            article = "an" if str(dry.status)[:1] in "aeiou" else "a"
            raise MaintenanceTasksError(
                f"Run #{run_id} is {article} {dry.status} dry run: run for real only after a "
                "dry run that succeeded."
            )
        try:
            task_class = state.registry.get(dry.task_name)
        except TaskNotFound as missing:
            raise MaintenanceTasksError(f"Cannot run #{run_id} for real: {missing}") from None
        params = task_class.validate_arguments(dry.arguments or {})
        if sources.needs_file(task_class, dry.arguments) and shared_file is None:
            raise MaintenanceTasksError(f"Cannot run #{run_id} for real: its CSV file is gone.")
        policy = ErrorPolicy.resolve(
            task_class,
            error_policy=dry.error_policy,
            max_failures=dry.max_failures,
            max_failure_rate=dry.max_failure_rate,
        )
    except MaintenanceTasksError as refusal:
        _refused(state, run_id, dry.task_name, audit.STARTED, actor, refusal)
        raise
    try:
        return _create(
            state, task_class, params, metadata, None, actor, policy, shared_file=shared_file
        )
    except EnqueueError:
        raise
    except MaintenanceTasksError as refusal:
        _refused(state, None, dry.task_name, audit.STARTED, actor, refusal)
        raise


def get_run(state: State, run_id: int) -> Run | None:
    """The run with this id, freshly read, or ``None``."""
    with store.open_session(state.db) as session:
        return store.find(session, run_id)


def _load_or_raise(session: sa.orm.Session, run_id: int) -> Run:
    try:
        return store.load(session, run_id)
    except store.RunNotFound:
        raise MaintenanceTasksError(f"Run #{run_id} not found.") from None


def _forced_or(request: Transition, state: State) -> lifecycle.Choice:
    """Choose ``request``, or the forced stop an operator's click means for this run.

    Pausing a stuck running or pausing run pauses it at once; cancelling a
    paused or stuck run cancels it at once. Asking again for a stop already
    asked changes nothing; any other status refuses.
    """
    forced = FORCE_PAUSE if request is PAUSE_REQUEST else FORCE_CANCEL

    def choose(current: Run) -> Transition | None:
        stuck = is_stuck(current.status, current.updated_at, utcnow(), state.settings.stuck_after)
        if forced.leaves_from(current.status) and (stuck or current.status not in STUCKABLE):
            return forced
        if current.status == request.target:
            return None
        request.check(current.status, current.id)
        return request

    return choose


def _stop(state: State, run_id: int, request: Transition, actor: audit.Actor | None) -> Run:
    actor = actor or audit.python()
    with store.open_session(state.db) as session:
        current = _load_or_raise(session, run_id)
        try:
            changed = lifecycle.change(session, run_id, _forced_or(request, state), actor=actor)
        except MaintenanceTasksError as refusal:
            _refused(state, run_id, current.task_name, t.cast(str, request.event), actor, refusal)
            raise
    if changed.transition is not request:
        lifecycle.follow(state, changed, lifecycle.task_for(state, changed.run))
    return changed.run


def pause(state: State, run_id: int, *, actor: audit.Actor | None = None) -> Run:
    return _stop(state, run_id, PAUSE_REQUEST, actor)


def cancel(state: State, run_id: int, *, actor: audit.Actor | None = None) -> Run:
    return _stop(state, run_id, CANCEL_REQUEST, actor)


def resume(state: State, run_id: int, *, actor: audit.Actor | None = None) -> Run:
    actor = actor or audit.python()
    job_id = lifecycle.new_job_id()

    with store.open_session(state.db) as session:
        current = _load_or_raise(session, run_id)
        try:
            task_class = state.registry.get(current.task_name)
        except TaskNotFound as missing:
            # The run exists, so its task's name may be told.
            refusal = MaintenanceTasksError(f"Cannot resume: {missing}")
            _refused(state, run_id, current.task_name, "resumed", actor, refusal)
            raise
        exclusive = not (task_class.allow_concurrent_runs or current.dry_run)
        exclusive_key = task_class.name if exclusive else None

        def choose(current: Run) -> Transition:
            RESUME.check(current.status, run_id)
            return RESUME

        try:
            changed = lifecycle.change(
                session,
                run_id,
                choose,
                actor=actor,
                given={"job_id": job_id, "exclusive_key": exclusive_key},
            )
        except sa.exc.IntegrityError:
            session.rollback()
            try:
                _raise_if_already_running(session, task_class)
            except TaskAlreadyRunning as refusal:
                _refused(state, run_id, current.task_name, "resumed", actor, refusal)
                raise
            raise
        except MaintenanceTasksError as refusal:
            _refused(state, run_id, current.task_name, "resumed", actor, refusal)
            raise
        _enqueue(state, session, changed.run, job_id, actor)
        return changed.run
