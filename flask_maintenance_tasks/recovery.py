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
canceled, or forgets it, the run is recovered at once, however fresh its
heartbeat (a job that failed outside our runner, in an ``rq worker`` without
``FLASK_APP`` say, would otherwise hold the task for the whole stuck limit).
A ``running`` run proves it is alive by its heartbeat alone.

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

from . import audit, lifecycle, store
from .models import Run, RunStatus, utcnow
from .transitions import (
    FORCE_CANCEL,
    FORCE_PAUSE,
    HELD,
    RECOVER,
    RECOVER_RUNNING,
    RUNNING,
    STOP_REQUESTED,
    STOPPED,
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
            return f"Run #{self.run_id} ({self.task_name}) was stuck {self.was}: now {self.status}."
        return f"Run #{self.run_id} ({self.task_name}) had no live job: handed to a new job."


#: The statuses of a run that waits for its job rather than proving by ticks that it runs.
WAITING_FOR_JOB: t.Final = HELD - {RUNNING}


def orphan_candidates(state: State) -> list[Run]:
    """Runs that should be held by a job but have not been heard of for too long."""
    limit = utcnow() - timedelta(seconds=state.settings.stuck_after)
    with store.open_session(state.db) as session:
        return store.orphans(session, HELD, limit)


def dead_job_candidates(state: State, besides: t.Collection[int] = ()) -> list[Run]:
    """Runs waiting for a job the executor knows is dead, however fresh their heartbeat."""
    with store.open_session(state.db) as session:
        waiting = store.orphans(session, WAITING_FOR_JOB, utcnow())
    return [
        run
        for run in waiting
        if run.id not in besides and run.job_id and state.executor.is_dead(run.job_id)
    ]


def recover(state: State, *, log: bool = True) -> list[Recovery]:
    """Hand on every orphaned run and settle every stuck pause or cancel, once.

    Each recovery is logged as a warning, unless ``log`` is false (the
    ``recover`` command prints them itself).
    """
    done = []
    stuck = orphan_candidates(state)
    dead = dead_job_candidates(state, besides={run.id for run in stuck})
    candidates = [(run, False) for run in stuck] + [(run, True) for run in dead]
    for run, job_dead in candidates:
        if not job_dead and run.status not in STOP_REQUESTED and run.job_id:
            if state.executor.is_waiting(run.job_id):
                continue
        try:
            outcome = _recover_one(state, run, heard_until=run.updated_at if job_dead else None)
        except Exception:
            logger.exception("Could not recover run #%s", run.id)
            continue
        if outcome is not None:
            if log:
                logger.warning("%s", outcome)
            done.append(outcome)
    return done


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

    with store.open_session(state.db) as session:
        return lifecycle.change(session, seen.id, unchanged, actor=audit.recovery(), given=given)


def _recover_one(state: State, seen: Run, heard_until: datetime | None = None) -> Recovery | None:
    if seen.status in STOP_REQUESTED:
        # A stop nobody carries out: settle it as an operator forcing it would.
        forced = FORCE_PAUSE if seen.status == RunStatus.PAUSING else FORCE_CANCEL
        changed = _if_unchanged(state, seen, forced, heard_until=heard_until)
        if not changed.applied:
            return None
        lifecycle.follow(state, changed, lifecycle.task_for(state, changed.run))
        return Recovery(seen.id, seen.task_name, seen.status, changed.run.status)

    job_id = lifecycle.new_job_id()
    handover = RECOVER_RUNNING if seen.status == RunStatus.RUNNING else RECOVER
    changed = _if_unchanged(state, seen, handover, {"job_id": job_id}, heard_until)
    if not changed.applied:
        return None
    lifecycle.follow(state, changed)
    run = changed.run
    try:
        state.executor.enqueue(run.id, job_id)
    except Exception:
        # The run keeps its new job id and a fresh heartbeat: the next
        # recovery pass tries again once the queue is back.
        logger.exception("Could not enqueue the recovered run #%s; will retry", run.id)
    return Recovery(run.id, run.task_name, seen.status, run.status)
