"""Starts, pauses, resumes and cancels runs, the one way every front end acts.

The dashboard, the CLI and the Python API all call these functions. Each one
either does all it says or raises a :class:`MaintenanceTasksError` having
written nothing (except :class:`EnqueueError`, see there).
"""

from __future__ import annotations

import contextlib
import logging
import math
import typing as t
from datetime import datetime

import sqlalchemy as sa

from . import audit, i18n, ledger, lifecycle, partitions, scheduling, signals, sources, store
from .csv import uploads
from .exceptions import (
    CannotRetry,
    CSVFileError,
    EnqueueError,
    InvalidArguments,
    InvalidTransition,
    MaintenanceTasksError,
    RunBusy,
    RunNotFound,
    TaskAlreadyRunning,
    TaskNotFound,
    status_word,
)
from .i18n import gettext as _
from .i18n import lazy_gettext
from .models import CSVFile, Failure, FailureStatus, Run, RunStatus, runs_table, utcnow
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
    partitions: t.Any = None,
    at: t.Any = None,
) -> Run:
    """Create a run of task ``name`` and enqueue its first job.

    ``actor`` is who the audit trail says started it (the OS user of a Python
    call by default). A start refused for a task that exists leaves a
    ``refused`` event with the reason. ``error_policy``, ``max_failures`` and
    ``max_failure_rate`` override the task's (``None`` keeps it). A
    ``dry_run`` rolls back every tick and records what it would change; it
    does not hold the task's exclusive key. ``partitions`` overrides the
    task's number of partitions (from 1 to ``MAINTENANCE_TASKS_MAX_PARTITIONS``).
    With ``at`` (see :mod:`.scheduling`) the run is created ``scheduled`` and
    its job waits in RQ's scheduler until then.
    """
    actor = actor or audit.python()
    task_class = state.registry.get(name)
    try:
        due = _due_time(state, task_class, at)
        params = task_class.validate_arguments(arguments)
        policy = ErrorPolicy.resolve(
            task_class,
            error_policy=error_policy,
            max_failures=max_failures,
            max_failure_rate=max_failure_rate,
        )
        count = _partitions(state, task_class, arguments, partitions)
        upload = _csv_upload(state, task_class, arguments, csv_file)
    except MaintenanceTasksError as refusal:
        _refused(state, None, name, audit.STARTED, actor, refusal)
        raise
    try:
        return _create(
            state,
            task_class,
            params,
            metadata,
            upload,
            actor,
            policy,
            dry_run=bool(dry_run),
            partitions=count,
            at=due,
        )
    except EnqueueError:
        raise  # the run was saved with its file, and can be resumed
    except BaseException as failure:
        if upload is not None:
            _discard(state, upload)
        if isinstance(failure, MaintenanceTasksError):
            _refused(state, None, name, audit.STARTED, actor, failure)
        raise


def _due_time(state: State, task_class: type[Task], at: t.Any) -> datetime | None:
    """The checked time of a run started ``at`` a set time; refused without a durable queue."""
    due = scheduling.due_time(task_class.name, at, utcnow())
    if due is not None and not state.executor.keeps_schedules:
        raise InvalidArguments(
            task_class.name,
            {
                "at": [
                    _(
                        "a run at a set time needs RQ (set MAINTENANCE_TASKS_REDIS_URL): the "
                        "in-process executor would lose it on the next restart"
                    )
                ]
            },
        )
    return due


def _partitions(
    state: State, task_class: type[Task], arguments: t.Mapping[str, t.Any], requested: t.Any
) -> int:
    """The run's partitions, checked: a number in range, of a collection that can be cut."""
    count = partitions.resolve(task_class, requested, state.settings.max_partitions)
    if count > 1:
        try:
            partitions.check_splittable(task_class, arguments, count)
        except MaintenanceTasksError:
            raise
        except Exception as error:
            # The collection could not even be built: the run would error at once.
            raise InvalidArguments(
                task_class.name,
                {
                    "partitions": [
                        _("its collection could not be built to be cut (%(error)s)", error=error)
                    ]
                },
            ) from None
    return count


def _refused(
    state: State,
    run_id: int | None,
    task_name: str,
    action: str,
    actor: audit.Actor,
    refusal: MaintenanceTasksError,
) -> None:
    """Leave a ``refused`` event saying why; the trail never fails the action's answer."""
    if isinstance(refusal, (TaskNotFound, RunNotFound, RunBusy)):
        # No name that exists nowhere gets into the trail; a run deleted
        # meanwhile (a prune) can have no event; and a busy run's row is the
        # very thing an event would have to wait for (nothing was asked of it
        # that its status refused: asked again, the action may well be done).
        return
    if isinstance(refusal, InvalidArguments):
        # Field names only: a message may quote the value, and the value may be secret.
        detail = "Invalid arguments: " + ", ".join(sorted(refusal.errors))
    else:
        with i18n.english():  # the trail is stored: English, whoever reads it later
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


@contextlib.contextmanager
def _busy_is_refused(run_id: int | None, task_name: str | None = None) -> t.Iterator[None]:
    """Turn a wait for a locked row cut short by the lock timeout into :class:`RunBusy`.

    The statement that gave up was not applied, and the transaction is
    rolled back as the error leaves the session: nothing was changed.
    """
    try:
        yield
    except sa.exc.DBAPIError as error:
        if store.busy(error):
            raise RunBusy(run_id, task_name) from error
        raise


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
                lazy_gettext(
                    "%(task)s is not a CSV task: it takes no CSV file. Start it without one.",
                    task=name,
                )
            )
        return None
    if csv_file is None:
        raise CSVFileError(
            lazy_gettext(
                "%(task)s is a CSV task: give it a CSV file (csv_file= in Python, --csv PATH or "
                "--csv - for standard input on the command line, the file field in the "
                "dashboard).",
                task=name,
            )
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
    partitions: int = 1,
    at: datetime | None = None,
) -> Run:
    job_id = lifecycle.new_job_id()
    now = utcnow()
    exclusive = not (task_class.allow_concurrent_runs or dry_run)
    run = Run(
        partitions=partitions,
        dry_run=dry_run,
        error_policy=policy.name,
        max_failures=policy.max_failures,
        max_failure_rate=policy.max_failure_rate,
        failure_count=0,
        retry_of_id=retry_of.id if retry_of is not None else None,
        task_name=task_class.name,
        status=RunStatus.ENQUEUED if at is None else RunStatus.SCHEDULED,
        scheduled_at=at,
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
    with lifecycle.bounded_session(state) as session, _busy_is_refused(None, task_class.name):
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
            detail=_start_detail(retry_of, dry_run, partitions, at),
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


def _start_detail(
    retry_of: Run | None, dry_run: bool, partitions: int = 1, at: datetime | None = None
) -> str | None:
    parts = ["dry run"] if dry_run else []
    if at is not None:
        parts.append(f"scheduled for {at.isoformat(timespec='seconds')}")
    if partitions > 1:
        parts.append(f"{partitions} partitions")
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
    """Hand the committed run to the executor; on failure the run is ``errored``.

    A scheduled run's job waits for the run's time; ``run_enqueued`` is sent
    when that time comes (see ``DUE``).
    """
    scheduled = run.status == RunStatus.SCHEDULED
    try:
        state.executor.enqueue(
            run.id,
            job_id,
            at=run.scheduled_at if scheduled else None,
            queue=state.registry.queue_of(run.task_name),
        )
    except Exception as exc:
        logger.exception("Could not enqueue run #%s", run.id)
        errored = lifecycle.error(session, run.id, exc, actor=actor, fence=job_id)
        lifecycle.follow(state, errored, error=exc)
        raise EnqueueError(run.id, exc) from exc
    if not scheduled:
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
            message = lazy_gettext(
                "Cannot retry the failures of run #%(id)s: %(reason)s", id=run_id, reason=missing
            )
            raise MaintenanceTasksError(message) from None
        if original.status not in STOPPED:
            raise CannotRetry(
                run_id,
                lazy_gettext(
                    "it is %(status)s; retry its failures once it has stopped.",
                    status=status_word(original.status),
                ),
            )
        if retrying:
            raise CannotRetry(
                run_id,
                lazy_gettext(
                    "run #%(id)s is retrying them already; wait for it to stop.", id=retrying[0]
                ),
            )
        if unresolved == 0:
            raise CannotRetry(run_id, lazy_gettext("it has no unresolved failed items."))
        params = task_class.validate_arguments(original.arguments or {})
        problem: str | i18n.LazyString | None
        try:
            problem = sources.retry_problem(task_class(**(original.arguments or {})), kinds)
        except MaintenanceTasksError:
            raise
        except Exception as error:
            cause = f"{type(error).__name__}: {error}"
            problem = lazy_gettext("its collection could not be built (%(error)s)", error=cause)
        if problem is not None:
            raise CannotRetry(run_id, problem)
        if sources.needs_file(task_class, original.arguments) and shared_file is None:
            raise CannotRetry(run_id, lazy_gettext("its CSV file is gone."))
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
        raise MaintenanceTasksError(
            lazy_gettext(
                "Unknown failure status %(status)s: choose %(choices)s.",
                status=repr(status),
                choices=choices,
            )
        )
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
    state: State,
    run_id: int,
    *,
    metadata: t.Any = None,
    actor: audit.Actor | None = None,
    partitions: t.Any = None,
) -> Run:
    """Start a normal run with the arguments, error policy, partitions and CSV file of a
    succeeded dry run.

    ``partitions`` overrides the dry run's number of partitions (``None`` keeps it).

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
            raise MaintenanceTasksError(lazy_gettext("Run #%(id)s is not a dry run.", id=run_id))
        if dry.status != RunStatus.SUCCEEDED:
            if str(dry.status)[:1] in "aeiou":
                message = lazy_gettext(
                    "Run #%(id)s is an %(status)s dry run: run for real only after a "
                    "dry run that succeeded.",
                    id=run_id,
                    status=status_word(dry.status),
                )
            else:
                message = lazy_gettext(
                    "Run #%(id)s is a %(status)s dry run: run for real only after a "
                    "dry run that succeeded.",
                    id=run_id,
                    status=status_word(dry.status),
                )
            raise MaintenanceTasksError(message)
        try:
            task_class = state.registry.get(dry.task_name)
        except TaskNotFound as missing:
            raise MaintenanceTasksError(
                lazy_gettext("Cannot run #%(id)s for real: %(reason)s", id=run_id, reason=missing)
            ) from None
        params = task_class.validate_arguments(dry.arguments or {})
        if sources.needs_file(task_class, dry.arguments) and shared_file is None:
            raise MaintenanceTasksError(
                lazy_gettext("Cannot run #%(id)s for real: its CSV file is gone.", id=run_id)
            )
        policy = ErrorPolicy.resolve(
            task_class,
            error_policy=dry.error_policy,
            max_failures=dry.max_failures,
            max_failure_rate=dry.max_failure_rate,
        )
        requested = dry.partitions if partitions is None else partitions
        count = _partitions(state, task_class, dry.arguments or {}, requested)
    except MaintenanceTasksError as refusal:
        _refused(state, run_id, dry.task_name, audit.STARTED, actor, refusal)
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
            shared_file=shared_file,
            partitions=count,
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
    """The run an operator acts on; a partition is refused: its run is acted on instead."""
    run = store.load(session, run_id)
    if run.parent_id is not None:
        raise MaintenanceTasksError(
            lazy_gettext(
                "Run #%(id)s is partition %(number)s of run #%(parent)s: act on run #%(parent)s, "
                "which pauses, resumes or cancels all its partitions.",
                id=run_id,
                number=(run.partition or 0) + 1,
                parent=run.parent_id,
            )
        )
    return run


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
    with lifecycle.bounded_session(state) as session, _busy_is_refused(run_id):
        current = _load_or_raise(session, run_id)
        task_name = current.task_name  # (the row may be gone after a rollback)
        try:
            changed = lifecycle.change(session, run_id, _forced_or(request, state), actor=actor)
        except MaintenanceTasksError as refusal:
            _refused(state, run_id, task_name, t.cast(str, request.event), actor, refusal)
            raise
    if changed.transition is not request:
        lifecycle.follow(state, changed, lifecycle.task_for(state, changed.run))
    if partitions.is_split(changed.run):
        try:
            partitions.settle(state, run_id, actor, bounded=True)
        except sa.exc.DBAPIError as error:
            if not store.busy(error):
                raise
            # The run's own change is made; its partitions follow at the next
            # settle (any partition's next change, or recovery).
            logger.warning("Run #%s: its partitions follow later (%s)", run_id, error.orig)
        return get_run(state, run_id) or changed.run
    return changed.run


def pause(state: State, run_id: int, *, actor: audit.Actor | None = None) -> Run:
    return _stop(state, run_id, PAUSE_REQUEST, actor)


def cancel(state: State, run_id: int, *, actor: audit.Actor | None = None) -> Run:
    return _stop(state, run_id, CANCEL_REQUEST, actor)


def resume(state: State, run_id: int, *, actor: audit.Actor | None = None) -> Run:
    actor = actor or audit.python()
    job_id: str | None = lifecycle.new_job_id()

    with lifecycle.bounded_session(state) as session, _busy_is_refused(run_id):
        current = _load_or_raise(session, run_id)
        task_name = current.task_name  # (the row may be gone after a rollback)
        try:
            task_class = state.registry.get(task_name)
        except TaskNotFound as missing:
            # The run exists, so its task's name may be told.
            refusal = MaintenanceTasksError(f"Cannot resume: {missing}")
            _refused(state, run_id, task_name, "resumed", actor, refusal)
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
                _refused(state, run_id, task_name, "resumed", actor, refusal)
                raise
            raise
        except MaintenanceTasksError as refusal:
            _refused(state, run_id, task_name, "resumed", actor, refusal)
            raise
        # A cut run too: its job starts it again, then resumes its partitions.
        _enqueue(state, session, changed.run, t.cast(str, job_id), actor)
        return changed.run


#: The fields of :func:`set_speed`: the argument, the run's column, and its bounds.
SPEED_FIELDS: t.Final = ("rate", "batch_size", "ticker_delay")
_SPEED_COLUMNS: t.Final = {
    "rate": "max_rate",
    "batch_size": "batch_size_override",
    "ticker_delay": "ticker_delay_override",
}
#: Largest page size an operator may set.
MAX_BATCH_SIZE: t.Final = 100_000


def _speed_value(field: str, value: t.Any, longest_delay: float) -> float | int:
    """``value`` of a speed field, checked; raises :class:`ValueError` with the message."""
    if isinstance(value, bool):
        raise ValueError(_("must be a number"))
    if field == "batch_size":
        try:
            number = int(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(_("must be a whole number")) from None
        if isinstance(value, float) and value != number:
            raise ValueError(_("must be a whole number"))
        if not 1 <= number <= MAX_BATCH_SIZE:
            raise ValueError(_("must be from 1 to %(max)s", max=MAX_BATCH_SIZE))
        return number
    try:
        real = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(_("must be a number")) from None
    if not math.isfinite(real) or real <= 0:
        raise ValueError(_("must be a number greater than 0"))
    if field == "ticker_delay" and real > longest_delay:
        # A run whose ticks are further apart would look stuck, and be handed on.
        seconds = f"{longest_delay:g}"
        raise ValueError(
            _(
                "must be at most %(seconds)s seconds (half of MAINTENANCE_TASKS_STUCK_AFTER)",
                seconds=seconds,
            )
        )
    return real


def _speed_changes(
    values: t.Mapping[str, t.Any], reset: t.Iterable[str], longest_delay: float
) -> tuple[dict[str, t.Any], dict[str, list[str]]]:
    """The columns to write and the errors by field (names only in the trail)."""
    changes: dict[str, t.Any] = {}
    errors: dict[str, list[str]] = {}
    reset = set(reset)
    for name in sorted(reset - set(SPEED_FIELDS)):
        errors.setdefault("reset", []).append(_("unknown field %(name)s", name=repr(name)))
    for field in SPEED_FIELDS:
        value = values.get(field)
        if field in reset:
            if value is not None:
                errors.setdefault(field, []).append(_("cannot be both set and reset"))
            changes[_SPEED_COLUMNS[field]] = None
        elif value is not None:
            try:
                changes[_SPEED_COLUMNS[field]] = _speed_value(field, value, longest_delay)
            except ValueError as error:
                errors.setdefault(field, []).append(str(error))
    if not changes and not errors:
        errors["__root__"] = [_("give a rate, a batch size or a ticker delay to set (or reset)")]
    return changes, errors


def set_speed(
    state: State,
    run_id: int,
    *,
    rate: t.Any = None,
    batch_size: t.Any = None,
    ticker_delay: t.Any = None,
    reset: t.Iterable[str] = (),
    actor: audit.Actor | None = None,
) -> Run:
    """Change an active run's speed without pausing it; see :doc:`/speed-control`.

    ``None`` leaves a value as it is; ``reset`` names the fields that go back
    to the task's own (no cap for ``"rate"``). The run and its partitions are
    written in one transaction with a ``speed_changed`` event; their jobs take
    the values at their next status reload.
    """
    actor = actor or audit.python()
    with lifecycle.bounded_session(state) as session, _busy_is_refused(run_id):
        current = _load_or_raise(session, run_id)
        task_name = current.task_name  # (the row may be gone after a rollback)
        changes, errors = _speed_changes(
            {"rate": rate, "batch_size": batch_size, "ticker_delay": ticker_delay},
            reset,
            state.settings.stuck_after / 2,
        )
        try:
            if errors:
                raise InvalidArguments(lazy_gettext("the speed of run #%(id)s", id=run_id), errors)
            written = session.execute(
                sa.update(runs_table)
                .where(
                    runs_table.c.id == run_id, runs_table.c.status.in_([s.value for s in ACTIVE])
                )
                .values(**changes)
            ).rowcount  # type: ignore[attr-defined]
            if not written:
                session.rollback()
                status = store.read_status(session, run_id)
                if status is None:
                    raise RunNotFound(run_id)  # deleted meanwhile (a prune)
                raise InvalidTransition("set the speed of", str(status.status), run_id)
        except MaintenanceTasksError as refusal:
            _refused(state, run_id, task_name, audit.SPEED_CHANGED, actor, refusal)
            raise
        session.execute(
            sa.update(runs_table).where(runs_table.c.parent_id == run_id).values(**changes)
        )
        if "max_rate" in changes:
            store.share_rate(session, run_id)
        audit.record(
            session,
            run_id=run_id,
            task_name=task_name,
            action=audit.SPEED_CHANGED,
            actor=actor,
            detail=_speed_detail(changes),
        )
        session.commit()
    return get_run(state, run_id) or current


def _speed_detail(changes: t.Mapping[str, t.Any]) -> str:
    """``rate=200/s, batch_size=task's own``: what the event says was set."""
    units = {"rate": "/s", "batch_size": "", "ticker_delay": "s"}
    parts = []
    for field in SPEED_FIELDS:
        column = _SPEED_COLUMNS[field]
        if column in changes:
            value = changes[column]
            parts.append(
                f"{field}={value:g}{units[field]}" if value is not None else f"{field}=task's own"
            )
    return ", ".join(parts)
