"""Carries on runs that no job holds any more, without an operator.

A worker killed with SIGKILL, a lost machine or a flushed Redis leave a run
``enqueued``, ``running`` or ``interrupted`` with nobody working on it. Its
heartbeat (``updated_at``, touched by every tick) then grows old. Once it is
older than ``MAINTENANCE_TASKS_STUCK_AFTER`` and the run's job is not waiting
in a queue, :func:`recover` gives the run a new job id and enqueues that job:
the run carries on from its cursor. A ``pausing`` or ``cancelling`` run that
old is settled to ``paused`` or ``cancelled``, as an operator forcing it would.

Every hand-over is fenced: it applies only if the run still has the job id
and heartbeat that were seen, under optimistic locking. Two recoverers at
once therefore hand a run on once, and a job that was only frozen finds a
different job id at its next tick and stops without writing.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t
from datetime import timedelta

import sqlalchemy as sa

from . import runner, signals, store
from .models import Run, RunStatus, utcnow

if t.TYPE_CHECKING:
    from .state import State

logger = logging.getLogger("flask_maintenance_tasks")
S = RunStatus

#: Statuses in which some job should be holding the run.
HELD: t.Final = (S.ENQUEUED, S.RUNNING, S.INTERRUPTED, S.PAUSING, S.CANCELLING)


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
        if self.status in (S.PAUSED.value, S.CANCELLED.value):
            return f"Run #{self.run_id} ({self.task_name}) was stuck {self.was}: now {self.status}."
        return f"Run #{self.run_id} ({self.task_name}) had no live job: handed to a new job."


def orphan_candidates(state: State) -> list[Run]:
    """Runs that should be held by a job but have not been heard of for too long."""
    limit = utcnow() - timedelta(seconds=state.settings.stuck_after)
    with store.open_session(state.db) as session:
        return list(
            session.scalars(
                sa.select(Run)
                .where(Run.status.in_([s.value for s in HELD]), Run.updated_at <= limit)
                .order_by(Run.id)
            )
        )


def recover(state: State) -> list[Recovery]:
    """Hand on every orphaned run and settle every stuck pause or cancel, once."""
    done = []
    for run in orphan_candidates(state):
        if run.status not in (S.PAUSING.value, S.CANCELLING.value) and run.job_id:
            if state.executor.is_waiting(run.job_id):
                continue
        try:
            outcome = _recover_one(state, run)
        except Exception:
            logger.exception("Could not recover run #%s", run.id)
            continue
        if outcome is not None:
            logger.warning("%s", outcome)
            done.append(outcome)
    return done


def _recover_one(state: State, seen: Run) -> Recovery | None:
    if seen.status in (S.PAUSING.value, S.CANCELLING.value):
        settled = runner.settle_stuck(state, seen.id, seen.status, seen.job_id)
        if settled is None:
            return None
        return Recovery(seen.id, seen.task_name, seen.status, settled.status)

    job_id = runner.new_job_id()
    limit = utcnow() - timedelta(seconds=state.settings.stuck_after)
    applied = False

    def decide(current: Run) -> store.Decision:
        nonlocal applied
        applied = False
        unchanged = (
            current.status == seen.status
            and current.job_id == seen.job_id
            and current.updated_at <= limit
        )
        if not unchanged:
            return None
        applied = True
        values: dict[str, t.Any] = {"job_id": job_id, "interruption_reason": "recovery"}
        if current.status == S.RUNNING.value:
            values["status"] = S.INTERRUPTED.value
        return values

    with store.open_session(state.db) as session:
        run = store.change(session, seen.id, decide)
    if not applied:
        return None
    if seen.status == S.RUNNING.value:
        signals.send(signals.run_interrupted, state.app, run)
    try:
        state.executor.enqueue(run.id, job_id)
    except Exception:
        # The run keeps its new job id and a fresh heartbeat: the next
        # recovery pass tries again once the queue is back.
        logger.exception("Could not enqueue the recovered run #%s; will retry", run.id)
    return Recovery(run.id, run.task_name, seen.status, run.status)
