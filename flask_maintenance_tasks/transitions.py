"""The one table of allowed status changes, the status groups, and the stuck rule."""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta

from .exceptions import InvalidTransition
from .models import RunStatus

S = RunStatus

#: Allowed changes of status. Creating a run (always ``enqueued``) is not a change.
ALLOWED: t.Final[dict[RunStatus, frozenset[RunStatus]]] = {
    S.ENQUEUED: frozenset({S.RUNNING, S.PAUSING, S.CANCELLING, S.ERRORED}),
    # running -> paused / cancelled only when an operator forces a stuck run.
    S.RUNNING: frozenset(
        {S.SUCCEEDED, S.PAUSING, S.PAUSED, S.CANCELLING, S.CANCELLED, S.INTERRUPTED, S.ERRORED}
    ),
    S.PAUSING: frozenset({S.PAUSED, S.CANCELLING, S.CANCELLED, S.SUCCEEDED, S.ERRORED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.SUCCEEDED, S.ERRORED}),
    S.PAUSED: frozenset({S.ENQUEUED, S.CANCELLED}),
    S.INTERRUPTED: frozenset({S.RUNNING, S.PAUSING, S.CANCELLING, S.ERRORED}),
    S.ERRORED: frozenset({S.ENQUEUED}),
    S.SUCCEEDED: frozenset(),
    S.CANCELLED: frozenset(),
}

#: A job may be working on the run, or the run waits to be resumed.
ACTIVE: t.Final = frozenset(
    {S.ENQUEUED, S.RUNNING, S.PAUSING, S.PAUSED, S.INTERRUPTED, S.CANCELLING}
)
#: The run is over.
COMPLETED: t.Final = frozenset({S.SUCCEEDED, S.ERRORED, S.CANCELLED})
#: A job working on the run must stop before its next item.
STOPPING: t.Final = frozenset({S.PAUSING, S.CANCELLING, S.CANCELLED})
#: No job should be working on the run.
STOPPED: t.Final = frozenset({S.PAUSED}) | COMPLETED
#: Statuses the stuck rule applies to: a job should be holding the run.
STUCKABLE: t.Final = frozenset({S.PAUSING, S.CANCELLING, S.RUNNING})


def can_transition(current: RunStatus | str, new: RunStatus | str) -> bool:
    current, new = RunStatus(current), RunStatus(new)
    return current == new or new in ALLOWED[current]


def check(
    action: str, current: RunStatus | str, new: RunStatus | str, run_id: int | None = None
) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> new`` is allowed."""
    if not can_transition(current, new):
        raise InvalidTransition(action, RunStatus(current).value, run_id)


def is_stuck(
    status: RunStatus | str, updated_at: datetime | None, now: datetime, stuck_after: float
) -> bool:
    """A pausing, cancelling or running run not updated for ``stuck_after`` seconds is stuck.

    A live job writes progress at least once per ticker delay and reloads the
    status regularly, so a run it holds is never this old.
    """
    if RunStatus(status) not in STUCKABLE or updated_at is None:
        return False
    return updated_at <= now - timedelta(seconds=stuck_after)
