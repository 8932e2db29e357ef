"""Carries on runs that no job holds any more, without an operator.

A worker killed with SIGKILL, a lost machine or a flushed Redis leave a run
``enqueued``, ``running`` or ``interrupted`` with nobody working on it. Its
heartbeat (``updated_at``, touched by every tick) then grows old. Once it is
older than ``MAINTENANCE_TASKS_STUCK_AFTER`` and the run's job is not waiting
in a queue, :func:`recover` gives the run a new job id and enqueues that job:
the run carries on from its cursor. A ``pausing`` or ``cancelling`` run that
old is settled to ``paused`` or ``cancelled``, as an operator forcing it would.

A run that waits for its job (``enqueued``, ``interrupted``, ``pausing``,
``cancelling``) has no heartbeat to tell that the job is dead. Recovery asks
the executor instead: when RQ says the run's job failed, was stopped or
canceled, or forgets it, the run is recovered without waiting for the stuck
limit (a job that failed outside our runner, in an ``rq worker`` without
``FLASK_APP`` say, would otherwise hold the task for the whole of it). Only
after a short grace, though: a job hands its run on by committing the next
job's id and then enqueuing that job, and in between RQ does not know the job
yet. A ``running`` run proves it is alive by its heartbeat alone.

A ``scheduled`` run has neither heartbeat nor deadline until its time: its job
waits in RQ's scheduled registry, in Redis, which outlives any worker. When
RQ forgets that job (Redis flushed or restarted without persistence) or says
it failed, recovery gives the run a new job: due at the run's time when that
is still to come, at once when it has passed. So it does when the run is
still ``scheduled`` ``MAINTENANCE_TASKS_STUCK_AFTER`` after its time (and
after its last hand-over): no scheduler moved its job (a killed worker's
scheduler holds RQ's lock for a minute, and the survivors take it over only
every ten). The run stays ``scheduled`` until a job takes it, and each
hand-over changes its job id, so it is never started twice.

A job due later (a slice delayed by a throttle or a backoff, a scheduled
run's start) waits in RQ's scheduled registry until RQ's scheduler, in some
worker, moves it to the queue. That scheduler can be gone for long: a Redis
outage kills it and the worker does not start it again, a killed worker's lock
lasts a minute. So a run whose job is still in the schedule more than one
recovery interval (plus :data:`OVERDUE_SLACK`) after its due time is handed to
a new job at once, and the old one is taken out of the schedule: a delayed
slice starts within its delay plus one recovery interval whatever happened to
RQ's scheduler.

Every hand-over is fenced: it applies only if the run still has the job id
and heartbeat that were seen, under optimistic locking. Two recoverers at
once therefore hand a run on once, and a job that was only frozen finds a
different job id at its next tick and stops without writing.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t
from datetime import datetime, timedelta

import sqlalchemy as sa

from . import audit, lifecycle, partitions, store
from .exceptions import status_word
from .i18n import gettext as _
from .models import Run, RunStatus, utcnow
from .transitions import (
    FORCE_CANCEL,
    FORCE_PAUSE,
    HELD,
    RECOVER,
    RECOVER_RUNNING,
    RECOVER_SCHEDULED,
    RUNNING,
    STOP_REQUESTED,
    STOPPED,
    WAITING_FOR_TIME,
    Transition,
)

if t.TYPE_CHECKING:
    from .state import State

logger = logging.getLogger("flask_maintenance_tasks")


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What :func:`recover` did to one run."""

    run_id: int
    task_name: str
    #: The status the run had.
    was: str
    #: The status it has now.
    status: str

    def __str__(self) -> str:
        if self.status in STOPPED:
            return _(
                "Run #%(id)s (%(task)s) was stuck %(was)s: now %(status)s.",
                id=self.run_id,
                task=self.task_name,
                was=status_word(self.was),
                status=status_word(self.status),
            )
        return _(
            "Run #%(id)s (%(task)s) had no live job: handed to a new job.",
            id=self.run_id,
            task=self.task_name,
        )


#: The statuses of a run that waits for its job rather than proving by ticks that it runs.
WAITING_FOR_JOB: t.Final = HELD - {RUNNING}

#: Seconds, beyond one recovery interval, a job may stay in RQ's schedule after its
#: due time: its scheduler moves due jobs every second, to the whole second.
OVERDUE_SLACK: t.Final = 2.0

#: Seconds a run's job may be unknown to the executor after the run last changed:
#: the time between committing a new job id and enqueuing that job.
HAND_OVER_GRACE: t.Final = 3.0


def _hand_over_limit(state: State, now: datetime) -> datetime:
    """Runs changed after this may still be between committing a job id and enqueuing it."""
    return now - timedelta(seconds=min(HAND_OVER_GRACE, state.settings.stuck_after))


def orphan_candidates(state: State) -> list[Run]:
    """Runs that should be held by a job but have not been heard of for too long."""
    limit = utcnow() - timedelta(seconds=state.settings.stuck_after)
    with store.open_session(state.db) as session:
        return store.orphans(session, HELD, limit)


def _waiting_for_job(state: State, besides: t.Collection[int]) -> list[Run]:
    """Runs with a job id that wait for that job, past the hand-over grace."""
    with store.open_session(state.db) as session:
        waiting = store.orphans(session, WAITING_FOR_JOB, _hand_over_limit(state, utcnow()))
    return [run for run in waiting if run.id not in besides and run.job_id]


def dead_job_candidates(
    state: State, besides: t.Collection[int] = (), waiting: list[Run] | None = None
) -> list[Run]:
    """Runs waiting for a job the executor knows is dead, however fresh their heartbeat
    (among ``waiting``, when the caller read them already)."""
    if waiting is None:
        waiting = _waiting_for_job(state, besides)
    return [run for run in waiting if state.executor.is_dead(t.cast(str, run.job_id))]


def _is_overdue(state: State, job_id: str) -> bool:
    """Whether the job still waits in the schedule a recovery interval (and the slack)
    after its due time: no scheduler moves it."""
    due = state.executor.overdue_since(job_id)
    slack = timedelta(seconds=state.settings.recovery_interval + OVERDUE_SLACK)
    return due is not None and due + slack <= utcnow()


def overdue_candidates(
    state: State, besides: t.Collection[int] = (), waiting: list[Run] | None = None
) -> list[Run]:
    """Runs waiting for a delayed job that nothing moved to the queue in time."""
    if waiting is None:
        waiting = _waiting_for_job(state, besides)
    return [run for run in waiting if _is_overdue(state, t.cast(str, run.job_id))]


def unsettled_candidates(state: State) -> list[Run]:
    """Cut runs whose partitions have all stopped (or ended) a while ago, and which did
    not follow them: the last partition's settle failed. Recovery settles them at its
    next pass rather than when they would count as stuck."""
    limit = _hand_over_limit(state, utcnow())
    with store.open_session(state.db) as session:
        return store.unsettled_runs(session, HELD, STOPPED, limit)


def lost_schedule_candidates(state: State) -> list[Run]:
    """Scheduled runs whose job the executor knows is dead (gone from Redis, or failed),
    or is overdue in the schedule, or that no job took for the stuck limit after their
    time and their last hand-over."""
    now = utcnow()
    limit = now - timedelta(seconds=state.settings.stuck_after)
    with store.open_session(state.db) as session:
        scheduled = store.orphans(session, WAITING_FOR_TIME, now)

    handed_over = _hand_over_limit(state, now)

    def overdue(run: Run) -> bool:
        return run.scheduled_at is not None and max(run.scheduled_at, run.updated_at) <= limit

    def dead(run: Run) -> bool:
        return run.updated_at <= handed_over and state.executor.is_dead(t.cast(str, run.job_id))

    def late(run: Run) -> bool:
        return _is_overdue(state, t.cast(str, run.job_id))

    return [run for run in scheduled if run.job_id and (overdue(run) or dead(run) or late(run))]


def recover(state: State, *, log: bool = True) -> list[Recovery]:
    """Hand on every orphaned run and settle every stuck pause or cancel, once.

    Each recovery is logged as a warning, unless ``log`` is false (the
    ``recover`` command prints them itself).
    """
    done: list[Recovery] = []
    stuck = orphan_candidates(state)
    # One read of the runs waiting for their job serves both checks.
    waiting = _waiting_for_job(state, ())
    stuck_ids = {run.id for run in stuck}
    dead = dead_job_candidates(state, waiting=[r for r in waiting if r.id not in stuck_ids])
    dead_ids = {run.id for run in dead}
    # A stuck run whose delayed job is overdue is no less stuck: its job only looks waiting.
    late = overdue_candidates(state, waiting=[r for r in waiting if r.id not in dead_ids])
    late_ids = {run.id for run in late}
    candidates = [(run, False) for run in stuck if run.id not in late_ids]
    candidates += [(run, True) for run in dead + late]
    for run, job_dead in candidates:
        if partitions.is_split(run) and not partitions.waits_for_its_job(run):
            # No job holds a cut run: its partitions are recovered one by one, and
            # the run itself only needs to follow them.
            try:
                partitions.settle(state, run.id, audit.recovery(), bounded=True)
            except Exception as error:
                _could_not(error, "Could not settle the partitioned run #%s", run.id)
            continue
        if not job_dead and run.status not in STOP_REQUESTED and run.job_id:
            if state.executor.is_waiting(run.job_id):
                continue
        try:
            outcome = _recover_one(state, run, heard_until=run.updated_at if job_dead else None)
        except Exception as error:
            _could_not(error, "Could not recover run #%s", run.id)
            continue
        _handed_on(state, run, outcome, done, log)
    settled = {run.id for run, _ in candidates}
    for run in unsettled_candidates(state):
        if run.id in settled:
            continue
        try:
            partitions.settle(state, run.id, audit.recovery(), bounded=True)
        except Exception as error:
            _could_not(error, "Could not settle the partitioned run #%s", run.id)
    for run in lost_schedule_candidates(state):
        try:
            outcome = _reschedule(state, run)
        except Exception as error:
            _could_not(error, "Could not recover the scheduled run #%s", run.id)
            continue
        _handed_on(state, run, outcome, done, log)
    return done


def _could_not(error: Exception, message: str, run_id: int) -> None:
    """Log why a run was not recovered in this pass; the next pass tries again."""
    if isinstance(error, sa.exc.DBAPIError) and store.busy(error):
        # Another transaction holds the run's row (a work horse frozen before its
        # commit, say): waiting for it would hold up every other run's recovery.
        logger.warning(
            "Run #%s is busy: another transaction holds its row past the lock timeout; "
            "recovery comes back to it at its next pass.",
            run_id,
        )
        return
    logger.exception(message, run_id)


def _handed_on(
    state: State, seen: Run, outcome: Recovery | None, done: list[Recovery], log: bool
) -> None:
    """Note a hand-over, and take the job it superseded out of the schedule."""
    if outcome is None:
        return
    if log:
        logger.warning("%s", outcome)
    done.append(outcome)
    if not seen.job_id:
        return
    try:
        state.executor.unschedule(seen.job_id)
    except Exception:
        # Best effort: the run's new job id already keeps the old job from writing.
        logger.warning(
            "Could not unschedule job %s of run #%s", seen.job_id, seen.id, exc_info=True
        )


def _reschedule(state: State, seen: Run) -> Recovery | None:
    """Give a scheduled run whose job was lost a new one, due at the run's time."""
    job_id = lifecycle.new_job_id()

    def unchanged(current: Run) -> Transition | None:
        same = current.status == seen.status and current.job_id == seen.job_id
        return RECOVER_SCHEDULED if same else None

    with lifecycle.bounded_session(state) as session:
        changed = lifecycle.change(
            session, seen.id, unchanged, actor=audit.recovery(), given={"job_id": job_id}
        )
    if not changed.applied:
        return None
    due_at = seen.scheduled_at
    try:
        state.executor.enqueue(
            seen.id,
            job_id,
            at=due_at if due_at and due_at > utcnow() else None,
            queue=state.registry.queue_of(seen.task_name),
        )
    except Exception:
        # The new job id marks the job as gone again: the next pass retries.
        logger.exception("Could not enqueue the recovered scheduled run #%s; will retry", seen.id)
    return Recovery(seen.id, seen.task_name, seen.status, changed.run.status)


def _if_unchanged(
    state: State,
    seen: Run,
    transition: Transition,
    given: t.Mapping[str, t.Any] | None = None,
    heard_until: datetime | None = None,
) -> lifecycle.Changed:
    """Apply ``transition`` only if the run is still as recovery saw it.

    Same status, same job, and still not heard of (since ``heard_until``, or
    for the stuck limit): a run that moved on meanwhile (its job woke up, an
    operator acted, another recoverer won) is left alone.
    """
    limit = heard_until or utcnow() - timedelta(seconds=state.settings.stuck_after)

    def unchanged(current: Run) -> Transition | None:
        same = (
            current.status == seen.status
            and current.job_id == seen.job_id
            and current.updated_at <= limit
        )
        return transition if same else None

    with lifecycle.bounded_session(state) as session:
        return lifecycle.change(session, seen.id, unchanged, actor=audit.recovery(), given=given)


def _recover_one(state: State, seen: Run, heard_until: datetime | None = None) -> Recovery | None:
    if seen.status in STOP_REQUESTED:
        # A stop nobody carries out: settle it as an operator forcing it would.
        forced = FORCE_PAUSE if seen.status == RunStatus.PAUSING else FORCE_CANCEL
        changed = _if_unchanged(state, seen, forced, heard_until=heard_until)
        if not changed.applied:
            return None
        partitions.follow(state, changed, lifecycle.task_for(state, changed.run))
        if partitions.is_split(changed.run):
            partitions.settle(state, seen.id, audit.recovery(), bounded=True)  # they stop too
        return Recovery(seen.id, seen.task_name, seen.status, changed.run.status)

    job_id = lifecycle.new_job_id()
    handover = RECOVER_RUNNING if seen.status == RunStatus.RUNNING else RECOVER
    changed = _if_unchanged(state, seen, handover, {"job_id": job_id}, heard_until)
    if not changed.applied:
        return None
    run = changed.run
    if run.parent_id is None:
        partitions.follow(state, changed)
        _enqueue(state, run, job_id)
    else:
        # A partition: its new job first. Settling its run may fail (SQLite's
        # lock, a crash) and is mended by the next settle; the partition must
        # not wait for another recovery pass meanwhile.
        _enqueue(state, run, job_id)
        try:
            partitions.follow(state, changed)
        except Exception:
            logger.exception(
                "Run #%s could not follow its recovered partition #%s yet; its next settle will",
                run.parent_id,
                run.id,
            )
    return Recovery(run.id, run.task_name, seen.status, run.status)


def _enqueue(state: State, run: Run, job_id: str) -> None:
    try:
        state.executor.enqueue(run.id, job_id, queue=state.registry.queue_of(run.task_name))
    except Exception:
        # The run keeps its new job id and a fresh heartbeat: the next
        # recovery pass tries again once the queue is back.
        logger.exception("Could not enqueue the recovered run #%s; will retry", run.id)
