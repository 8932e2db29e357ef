"""The audit trail: who did what to which run, when, from where, and with what outcome.

Every operator action (start, pause, resume, cancel, a CSV download) and every
change of a run's status leaves one row in ``maintenance_tasks_events``. A
status change writes its row in the transaction of the change itself (see
:func:`flask_maintenance_tasks.lifecycle.change`), so the trail and the run
never disagree; an action that is turned down leaves a ``refused`` row with
the reason. Rows are never updated. No masked value is ever written: the
actor comes from ``MAINTENANCE_TASKS_METADATA`` with masked names filtered,
and a refusal's reason names invalid fields, not their values.

Progress writes leave no event: the trail costs no statement per item.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
import typing as t

import sqlalchemy as sa

from .masking import mask
from .models import Event, events_table, utcnow

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: The outcomes of an event.
DONE = "done"
REFUSED = "refused"

#: Where an action came from.
DASHBOARD = "dashboard"
#: The JSON API under ``<prefix>/api/``.
API = "api"
CLI = "cli"
PYTHON = "python"
ENGINE = "engine"

#: Actions that are not changes of status (those are named by their transition).
STARTED = "started"
CSV_UPLOADED = "csv_uploaded"
CSV_DOWNLOADED = "csv_downloaded"
#: A retry of the run's failed items was started (the detail names its run).
FAILURES_RETRIED = "failures_retried"
#: An operator changed a run's speed (the detail lists the new values).
SPEED_CHANGED = "speed_changed"
#: A task published a new ``step`` (the detail is its step line); see :mod:`.published`.
STEP_CHANGED = "step_changed"

#: Longest actor, address and detail kept (the columns' sizes; details are cut).
_SHORT = 255
_DETAIL = 2000


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who acts, and from where: what each event records besides the action."""

    #: The operator (``None`` when the app cannot tell), ``worker`` or ``recovery``.
    who: str | None
    #: ``dashboard``, ``api``, ``cli``, ``python`` or ``engine``.
    origin: str
    #: The client's address for the dashboard; the machine's name otherwise.
    address: str | None = None

    def __post_init__(self) -> None:
        # As the columns can hold them, whoever built the actor.
        for name in ("who", "address"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _clean(str(value), _SHORT))


def _clean(text: str, size: int) -> str:
    """``text`` as a column can hold it: without NUL (PostgreSQL refuses it), cut to ``size``."""
    return text.replace("\x00", "")[:size]


def os_user() -> str:
    """The name of the user running this process (its uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def host() -> str:
    return socket.gethostname()


def who_of(value: t.Any, masked: t.Iterable[str]) -> str | None:
    """The text an event records as "who" for a ``MAINTENANCE_TASKS_METADATA`` value.

    A string is kept as it is; any other JSON value is written as compact
    JSON with every masked name filtered; ``None`` stays ``None``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        masked_value = mask(value, None, masked)
        try:
            text = json.dumps(masked_value, sort_keys=True, separators=(",", ":"), default=str)
        except TypeError:  # keys that do not sort together (1 and "a")
            text = json.dumps(masked_value, separators=(",", ":"), default=str)
    return _clean(text, _SHORT)


def command_line(acting_as: str | None = None) -> Actor:
    """The actor of a ``flask mtasks`` command: the OS user, or ``--as NAME (user)``."""
    user = os_user()
    who = f"{acting_as} ({user})" if acting_as else user
    return Actor(who, CLI, host())


def python(who: str | None = None) -> Actor:
    """The actor of a call of the Python API: ``who``, else the OS user."""
    return Actor(who or os_user(), PYTHON, host())


def worker() -> Actor:
    return Actor("worker", ENGINE, host())


def recovery() -> Actor:
    return Actor("recovery", ENGINE, host())


def record(
    session: Session,
    *,
    run_id: int | None,
    task_name: str,
    action: str,
    actor: Actor,
    outcome: str = DONE,
    detail: str | None = None,
) -> None:
    """Add one event in the session's transaction (the caller commits)."""
    session.execute(
        events_table.insert().values(
            run_id=run_id,
            task_name=task_name,
            action=action,
            outcome=outcome,
            detail=_clean(detail, _DETAIL) if detail else None,
            actor=actor.who,
            origin=actor.origin,
            address=actor.address,
            created_at=utcnow(),
        )
    )


@dataclasses.dataclass(frozen=True)
class Timeline:
    """The newest events of a run, oldest first, and how many older ones were left out."""

    events: list[Event]
    omitted: int = 0


def timelines(session: Session, run_ids: t.Collection[int], limit: int) -> dict[int, Timeline]:
    """The last ``limit`` events of each run of ``run_ids``: one query for any number of runs."""
    if not run_ids:
        return {}
    number = (
        sa.func.row_number()
        .over(partition_by=Event.run_id, order_by=Event.id.desc())
        .label("number")
    )
    total = sa.func.count().over(partition_by=Event.run_id).label("total")
    ranked = sa.select(Event.id, number, total).where(Event.run_id.in_(sorted(run_ids))).subquery()
    rows = session.execute(
        sa.select(Event, ranked.c.total)
        .join(ranked, Event.id == ranked.c.id)
        .where(ranked.c.number <= limit)
        .order_by(Event.run_id, Event.id)
    ).all()
    found: dict[int, Timeline] = {}
    for event, count in rows:
        run_id = t.cast(int, event.run_id)
        if run_id not in found:
            found[run_id] = Timeline([], max(count - limit, 0))
        found[run_id].events.append(event)
    return found


def timeline(session: Session, run_id: int, limit: int) -> Timeline:
    """The last ``limit`` events of run ``run_id``, oldest first."""
    return timelines(session, [run_id], limit).get(run_id, Timeline([]))


__all__ = [
    "API",
    "CLI",
    "CSV_DOWNLOADED",
    "CSV_UPLOADED",
    "DASHBOARD",
    "DONE",
    "ENGINE",
    "PYTHON",
    "REFUSED",
    "STARTED",
    "STEP_CHANGED",
    "Actor",
    "Timeline",
    "command_line",
    "python",
    "record",
    "recovery",
    "timeline",
    "timelines",
    "who_of",
    "worker",
]
