"""Partitioned runs: one run walked by several chains of jobs at once.

A run with ``partitions = K`` is cut, when it first starts, into K ranges of
its collection (see :mod:`.sources.partitioned`). Each range is a
*partition*: a run of its own (``parent_id`` names the run), with its cursor,
counters, job id, lock version and heartbeat, walked by its own chain of
slices through the same state machine and the same loop as any run. The
operator only ever sees and acts on the run:

* its ticks, failures and time are kept up to date by its partitions' ticks
  (in their transactions, see :func:`.store.write_progress`);
* an operator's pause, cancel or resume of the run is carried to its
  partitions, and the run's status follows theirs (:func:`settle`): it
  succeeds once every partition has, pauses or cancels once every partition
  stopped, and errors once a partition errored and the others stopped at
  their last committed tick;
* the task's callbacks and the run's signals are the run's, once each; a
  partition's own changes send none.

:func:`settle` is the one place that decides both directions. It is called
after every change of a partition, after every operator action on a
partitioned run, and by recovery; it is idempotent, so a crash between two
of its steps is mended by its next call.
"""

from __future__ import annotations

import logging
import typing as t

from . import audit, lifecycle, store
from .dryrun import Changes
from .exceptions import InvalidArguments, PartitionErrored
from .i18n import gettext
from .models import Run, RunStatus, utcnow
from .sources import partitioned, source_of
from .transitions import (
    CANCEL,
    CANCEL_REQUEST,
    CARRY_ON,
    ERROR,
    FORCE_CANCEL,
    FORCE_PAUSE,
    PAUSE,
    PAUSE_REQUEST,
    RESUME,
    SUCCEED,
    Transition,
)

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .state import State
    from .task import Task

logger = logging.getLogger("flask_maintenance_tasks")

#: A partition's statuses while some job works on it, or is about to.
WORKING: t.Final = frozenset(
    {
        RunStatus.ENQUEUED,
        RunStatus.RUNNING,
        RunStatus.INTERRUPTED,
        RunStatus.PAUSING,
        RunStatus.CANCELLING,
    }
)

#: What the run's audit trail says when it was cut.
SPLIT = "partitioned"


def resolve(task_class: type[Task], requested: t.Any, maximum: int, *, retry: bool = False) -> int:
    """The partitions of a run about to start: ``requested``, or the task's.

    A whole number may come as text (leading zeros and spaces allowed), as
    the command line and the dashboard's form send it.

    :raises InvalidArguments: not a whole number from 1 to ``maximum``
        (``MAINTENANCE_TASKS_MAX_PARTITIONS``).
    """
    if retry:
        return 1  # a retry walks its failed items by key, in one walk
    value = task_class.partitions if requested is None else requested
    shown = str(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        shown = value.strip().lstrip("0") or "0"
        # More digits than any maximum has are too many, and never given to int(),
        # which refuses more than 4,300 of them.
        value = maximum + 1 if len(shown) > 6 else int(shown)
    if len(shown) > 20:
        shown = f"{shown[:17]}..."
    if isinstance(value, bool) or not isinstance(value, int):
        problem = gettext(
            "must be a whole number from 1 to %(max)s, not %(value)s",
            max=maximum,
            value=_short_repr(value),
        )
    elif value < 1:
        problem = gettext("must be at least 1, not %(value)s", value=value)
    elif value > maximum:
        problem = gettext(
            "%(value)s is more than MAINTENANCE_TASKS_MAX_PARTITIONS allows (%(max)s); "
            "ask for %(max)s or fewer",
            value=shown,
            max=maximum,
        )
    else:
        return value
    raise InvalidArguments(task_class.name, {"partitions": [problem]})


def _short_repr(value: t.Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def check_splittable(task_class: type[Task], arguments: t.Mapping[str, t.Any], count: int) -> None:
    """Refuse, before anything is written, a partitioned run of a task that cannot be cut.

    :raises InvalidArguments: on the ``partitions`` field, saying why and what to do.
    """
    if count <= 1:
        return
    task = task_class(**arguments)
    problem = partitioned.split_problem(task, source_of(task))
    if problem is not None:
        raise InvalidArguments(task_class.name, {"partitions": [problem]})


def is_split(run: Run) -> bool:
    """A partitioned run whose partitions exist (its ``bounds`` list their ranges)."""
    return run.parent_id is None and (run.partitions or 1) > 1 and run.bounds is not None


# -- the first start: cutting the run ----------------------------------------


#: The statuses in which a cut run holding a job id is in the hands of a job of its own.
_HELD_BY_ITS_JOB = frozenset(
    {
        RunStatus.ENQUEUED,
        RunStatus.RUNNING,
        RunStatus.INTERRUPTED,
        RunStatus.PAUSING,
        RunStatus.CANCELLING,
    }
)


def waits_for_its_job(run: Run) -> bool:
    """Whether a cut run is in the hands of a job of its own, not of its partitions.

    After a resume, its job calls ``after_start`` and only then resumes the
    partitions (or settles a pause or cancel asked meanwhile); at the end, the
    caller that claimed it calls ``after_complete``. Meanwhile it holds a job
    id: its partitions have no say, and recovery hands it on as any run (to a
    job that carries on where the one that died stopped).
    """
    return is_split(run) and run.job_id is not None and run.status in _HELD_BY_ITS_JOB


def split(task: Task, source: t.Any, run: Run, session: Session) -> list[partitioned.Part]:
    """The run's ranges, found by queries only (nothing is written)."""
    parts = partitioned.split(task, source, int(run.partitions), session)
    session.rollback()
    return parts


def create(
    state: State,
    session: Session,
    run_id: int,
    holder: str,
    parts: list[partitioned.Part],
) -> list[Run]:
    """Write the partitions of run ``run_id`` while job ``holder`` holds it; return them.

    One transaction: the partitions, the run's summary of its ranges (its
    ``bounds``), and the event. Afterwards no job holds the run itself: its
    partitions' jobs do. :raises store.Fenced: another job holds the run.
    """
    created: list[Run] = []

    def decide(current: Run) -> store.Decision:
        if current.job_id != holder:
            raise store.Fenced()
        return {"bounds": [part.bounds for part in parts], "job_id": None}

    def written(session: Session, run: Run, values: t.Mapping[str, t.Any]) -> None:
        now = utcnow()
        created.clear()
        for index, part in enumerate(parts):
            created.append(
                Run(
                    task_name=run.task_name,
                    status=RunStatus.ENQUEUED,
                    arguments=run.arguments,
                    metadata_=run.metadata_,
                    started_by=run.started_by,
                    job_id=lifecycle.new_job_id(),
                    parent_id=run.id,
                    partition=index,
                    partitions=1,
                    bounds={**part.bounds, "of": len(parts)},
                    cursor=part.cursor,
                    tick_total=part.total,
                    tick_count=0,
                    time_running=0.0,
                    lock_version=0,
                    error_policy=run.error_policy,
                    max_failures=run.max_failures,
                    max_failure_rate=run.max_failure_rate,
                    failure_count=0,
                    dry_run=run.dry_run,
                    # Each partition starts from what the run published before it was
                    # cut (its after_start), then keeps a mapping of its own.
                    published=run.published,
                    # A speed set before the cut (the run was enqueued or scheduled).
                    max_rate=run.max_rate / len(parts) if run.max_rate else None,
                    batch_size_override=run.batch_size_override,
                    ticker_delay_override=run.ticker_delay_override,
                    created_at=now,
                    updated_at=now,
                )
            )
        session.add_all(created)
        session.flush()
        audit.record(
            session,
            run_id=run.id,
            task_name=run.task_name,
            action=SPLIT,
            actor=audit.worker(),
            detail=f"{len(parts)} partitions",
        )

    store.change(session, run_id, decide, jitter=False, written=written)
    for child in created:
        session.expunge(child)
    return created


def enqueue(state: State, children: t.Sequence[Run]) -> None:
    """Enqueue the first job of each partition, in order.

    One that cannot be enqueued waits for recovery, which finds its job
    missing and enqueues it.
    """
    for child in children:
        try:
            state.executor.enqueue(
                child.id, t.cast(str, child.job_id), queue=state.registry.queue_of(child.task_name)
            )
        except Exception:
            logger.exception(
                "Could not enqueue partition %s of run #%s; recovery will",
                child.partition,
                child.parent_id,
            )


# -- changes of a partition, and what they mean for its run ------------------


def follow(
    state: State,
    changed: lifecycle.Changed,
    task: Task | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    """:func:`.lifecycle.follow`, except that a partition's change settles its run instead.

    A partition calls no callback and sends no signal of its own: those
    belong to its run, which :func:`settle` moves when its partitions did.
    """
    run = changed.run
    if run.parent_id is None:
        lifecycle.follow(state, changed, task, error=error)
        return
    if changed.transition is not None:
        settle(state, run.parent_id)


def _wanted(parent: RunStatus, child: RunStatus, sibling_errored: bool) -> Transition | None:
    """The change a partition must make so that it follows its run's status.

    Resuming is not among them: :func:`resume` resumes a run's stopped
    partitions once, when the operator asks. Here a partition erroring after
    that (its collection cannot even be built, say) stops the others, and the
    run errors again instead of being resumed again and again.
    """
    waiting = parent in (RunStatus.ENQUEUED, RunStatus.RUNNING, RunStatus.INTERRUPTED)
    if parent == RunStatus.PAUSING or (sibling_errored and waiting):
        return PAUSE_REQUEST if PAUSE_REQUEST.leaves_from(child) else None
    if parent in (RunStatus.CANCELLING, RunStatus.CANCELLED):
        if CANCEL_REQUEST.leaves_from(child):
            return CANCEL_REQUEST
        return FORCE_CANCEL if child == RunStatus.PAUSED else None
    if parent == RunStatus.PAUSED:
        # The run was forced to pause (it was stuck): its partitions stop too.
        if FORCE_PAUSE.leaves_from(child):
            return FORCE_PAUSE
        return PAUSE_REQUEST if PAUSE_REQUEST.leaves_from(child) else None
    if parent == RunStatus.ERRORED:
        return PAUSE_REQUEST if PAUSE_REQUEST.leaves_from(child) else None
    return None


def resume(state: State, run_id: int, actor: audit.Actor) -> None:
    """Resume every paused or errored partition of a resumed run, each from its own cursor.

    Called by the run's own job, once per resume, while that job still holds
    the run: until it lets go, no settle moves the run on the strength of
    partitions not resumed yet. Should the process die half-way, recovery
    hands the run to another job, which resumes the rest.
    """
    resumed: list[Run] = []
    with store.open_session(state.db) as session:
        children = store.partitions_of(session, [run_id]).get(run_id, [])
        session.rollback()
        for child in children:
            if not RESUME.leaves_from(child.status):
                continue
            changed = lifecycle.change(
                session, child.id, RESUME, actor=actor, given={"job_id": lifecycle.new_job_id()}
            )
            if changed.applied:
                resumed.append(changed.run)
    enqueue(state, resumed)


def settle(
    state: State, run_id: int, actor: audit.Actor | None = None, *, bounded: bool = False
) -> None:
    """Carry the run's status to its partitions, then move the run as its partitions stand.

    Safe to call at any time and from any process, as often as wanted. With
    ``bounded`` (an operator's action, recovery), a row locked past the lock
    timeout fails the settle with an error for which :func:`.store.busy` is
    true, instead of waiting: the next settle does what is left.
    """
    actor = actor or audit.worker()
    opened = lifecycle.bounded_session(state) if bounded else store.open_session(state.db)
    with opened as session:
        parent = store.find(session, run_id)
        if parent is None or not is_split(parent) or waits_for_its_job(parent):
            return
        children = store.partitions_of(session, [run_id]).get(run_id, [])
        _keep_read(session, parent, *children)
        errored = any(child.status == RunStatus.ERRORED for child in children)
        for child in children:
            wanted = _wanted(RunStatus(parent.status), RunStatus(child.status), errored)
            if wanted is None:
                continue
            lifecycle.change(session, child.id, _choose(session, run_id, errored), actor=actor)
        children = store.partitions_of(session, [run_id]).get(run_id, [])
        _keep_read(session, *children)
        if parent.max_rate and any(c.status == RunStatus.SUCCEEDED for c in children):
            _share_rate(session, run_id, parent.max_rate, children)
        if parent.dry_run:
            _merge_changes(session, run_id)
        _derive(state, session, run_id, children, actor)


def _share_rate(session: Session, run_id: int, cap: float, children: list[Run]) -> None:
    """Give the shares of the run's cap held by finished partitions to the others."""
    unfinished = [child for child in children if child.status != RunStatus.SUCCEEDED]
    if unfinished and all(child.max_rate == cap / len(unfinished) for child in unfinished):
        return
    try:
        if store.share_rate(session, run_id):
            session.commit()
        else:
            session.rollback()
    except Exception as error:
        session.rollback()
        if not store.lock_timed_out(error):
            raise
        # SQLite's lock is busy with the other partitions' ticks: the next settle shares it.


def _merge_changes(session: Session, run_id: int) -> None:
    """Write what the dry run would change, its partitions' together.

    The partitions are read within the guarded change of the run: two
    settles racing (two partitions ending together) cannot leave the sum of
    the first, read before the second partition's last tick, over the
    second's. Whichever writes last read the partitions after the other's
    write, or its write is refused and it reads them again.
    """

    def merge(run: Run) -> store.Decision:
        children = store.partitions_of(session, [run_id]).get(run_id, [])
        merged = merged_changes(children)
        if merged is None or merged == run.changes:
            return None
        return {"changes": merged}

    store.change(session, run_id, merge, jitter=False)


def _keep_read(session: Session, *runs: Run) -> None:
    """End the read transaction, keeping the values read.

    A rollback expires what the session holds, and reading one expired run
    again is one query: K of them for each settle, K times over a run.
    Detached first, the runs keep what was read (the next change of one
    of them reads it afresh anyway).
    """
    for run in runs:
        if run in session:
            session.expunge(run)
    session.rollback()


def _choose(session: Session, run_id: int, errored: bool) -> lifecycle.Choice:
    """The change of a partition, decided on its run as it stands now.

    The run is read again for each attempt: a resume may have committed since
    :func:`settle` first read it, and a partition the resume has just started
    again must not be stopped on the strength of the old status (the write
    of a decision made before the resume changed the partition is refused,
    and the decision made again).
    """

    def choose(current: Run) -> Transition | None:
        now = store.read_status(session, run_id)
        if now is None or (now.job_id is not None and now.status in _HELD_BY_ITS_JOB):
            return None
        return _wanted(RunStatus(now.status), RunStatus(current.status), errored)

    return choose


def _derive(
    state: State, session: Session, run_id: int, children: list[Run], actor: audit.Actor
) -> None:
    """Move the run to where its partitions stand, if they moved it anywhere."""
    statuses = {RunStatus(child.status) for child in children}
    working = statuses & WORKING
    if working:
        if RunStatus.RUNNING in statuses:
            # A partition took its job: the run carries on if it was handed on.
            _carry_on(state, session, run_id, actor)
        return
    if statuses == {RunStatus.SUCCEEDED}:
        # (Also a run resumed after its last callback failed: nothing is left to walk.)
        if _carry_on(state, session, run_id, actor):
            _succeed(state, session, run_id, actor)
        return
    failed = [child for child in children if child.status == RunStatus.ERRORED]
    if failed and not _cancelling(session, run_id):
        # (An operator who cancelled the run meanwhile gets it cancelled: the
        # partition's error stays on the partition.)
        _error(state, session, run_id, failed, actor)
        return

    def stop(run: Run) -> Transition | None:
        if waits_for_its_job(run):
            return None  # resumed since the partitions were read: its job has it
        status = RunStatus(run.status)
        if RunStatus.CANCELLED in statuses or status == RunStatus.CANCELLING:
            if status == RunStatus.CANCELLING:
                return CANCEL
            if FORCE_CANCEL.leaves_from(status):
                return FORCE_CANCEL
            return CANCEL_REQUEST if CANCEL_REQUEST.leaves_from(status) else None
        if status == RunStatus.PAUSING:
            return PAUSE
        if status == RunStatus.RUNNING:
            return FORCE_PAUSE
        # Waiting for partitions that will not come (a resume cut short): ask, then settle.
        return PAUSE_REQUEST if PAUSE_REQUEST.leaves_from(status) else None

    for _ in range(2):
        changed = lifecycle.change(session, run_id, stop, actor=actor)
        if changed.transition not in (PAUSE_REQUEST, CANCEL_REQUEST):
            break
    if changed.applied:
        lifecycle.follow(state, changed, lifecycle.task_for(state, changed.run))


def _carry_on(state: State, session: Session, run_id: int, actor: audit.Actor) -> bool:
    """Whether the run is running (carried on if it was handed on).

    A resumed run waits ``enqueued`` for its own job, which starts it again
    (``after_start``, ``run_started``) and only then resumes its partitions:
    until then its partitions leave it as it is.
    """

    def carry_on(run: Run) -> Transition | None:
        if waits_for_its_job(run):
            return None
        return CARRY_ON if run.status == RunStatus.INTERRUPTED else None

    changed = lifecycle.change(session, run_id, carry_on, actor=actor)
    lifecycle.follow(state, changed)
    return changed.run.status == RunStatus.RUNNING


def _cancelling(session: Session, run_id: int) -> bool:
    found = store.read_status(session, run_id)
    session.rollback()
    return found is not None and found[0] == RunStatus.CANCELLING


def _error(
    state: State, session: Session, run_id: int, failed: list[Run], actor: audit.Actor
) -> None:
    """Error the run with the error of the partition that failed first."""
    first = min(failed, key=lambda child: (child.ended_at or utcnow(), child.partition or 0))
    of = (first.bounds or {}).get("of", "?")
    number = (first.partition or 0) + 1
    message = f"Partition {number} of {of} errored: {first.error_message or first.error_class}"
    error = PartitionErrored(message, partition=first.partition or 0, run_id=first.id)

    def fail(current: Run) -> Transition | None:
        if waits_for_its_job(current):
            return None  # resumed since the partitions were read
        return ERROR if ERROR.leaves_from(current.status) else None

    changed = lifecycle.change(
        session,
        run_id,
        fail,
        actor=actor,
        given={
            "error_class": first.error_class or type(error).__name__,
            "error_message": message[:10000],
            "backtrace": first.backtrace,
            "errored_element": first.errored_element,
        },
    )
    if changed.applied:
        lifecycle.follow(state, changed, lifecycle.task_for(state, changed.run), error=error)


def _succeed(state: State, session: Session, run_id: int, actor: audit.Actor) -> None:
    """Every partition succeeded: ``after_complete`` once, then the run succeeds.

    The callback comes before the change, as for any run, so one caller must
    own it: the first to write its token as the run's job id.
    """
    token = lifecycle.new_job_id()
    stale = utcnow().timestamp() - state.settings.stuck_after

    def claim(current: Run) -> store.Decision:
        if not SUCCEED.leaves_from(current.status):
            return None
        if current.job_id is not None and current.updated_at.timestamp() > stale:
            return None  # another caller is finishing it
        return {"job_id": token}

    run = store.change(session, run_id, claim, jitter=False)
    if run.job_id != token:
        return
    task = lifecycle.task_for(state, run)
    try:
        lifecycle.call_back(state, SUCCEED, run, task)
        if run.dry_run:
            state.db.session.rollback()
        else:
            state.db.session.commit()
    except Exception as failure:
        state.db.session.rollback()
        errored = lifecycle.error(session, run_id, failure, actor=actor, fence=token)
        lifecycle.follow(state, errored, task, error=failure)
        return
    # after_complete ran: retried past a busy SQLite lock, not left for a second call.
    changed = store.retried_on_lock(
        lambda: lifecycle.change(session, run_id, SUCCEED, actor=actor, fence=token),
        rollback=session.rollback,
    )
    lifecycle.follow(state, changed, task)


# -- reading -----------------------------------------------------------------


def merged_changes(children: t.Iterable[Run]) -> t.Any:
    """What the partitions of a dry run would change, together."""
    total = Changes(None)
    found = False
    for child in children:
        if child.changes:
            total.add(Changes(child.changes))
            found = True
    return total.as_json() if found else None
