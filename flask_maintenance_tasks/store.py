"""Reads and writes of run rows: optimistic locking and fenced progress writes.

Status changes go through :func:`change`, which retries on a lost race and
re-decides on the fresh row, so two writers never silently overwrite each
other. Progress goes through :func:`write_progress`, a single UPDATE fenced on
the job id, committed together with the task's own changes.
"""

from __future__ import annotations

import random
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .exceptions import MaintenanceTasksError
from .models import Run, runs_table, utcnow

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

Decision: t.TypeAlias = "t.Mapping[str, t.Any] | None"

#: Attempts, and the base of the exponential backoff between them (seconds).
ATTEMPTS = 6
BACKOFF = 0.05


class RunNotFound(LookupError):
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(f"Run #{run_id} not found.")


class LostRace(MaintenanceTasksError, RuntimeError):
    """Every attempt found the row changed by someone else in between; try again."""


def open_session(db: SQLAlchemy) -> Session:
    """A short-lived session of our own, so actions never commit the caller's work."""
    return Session(bind=db.engine, expire_on_commit=False)


def load(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        raise RunNotFound(run_id)
    return run


def _columns(values: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    # Attribute names to column names (metadata_ is stored as "metadata").
    return {Run.__mapper__.attrs[k].columns[0].name: v for k, v in values.items()}


def change(
    session: Session, run_id: int, decide: t.Callable[[Run], Decision], *, jitter: bool = True
) -> Run:
    """Apply what ``decide(run)`` returns to the run, guarded by ``lock_version``.

    ``decide`` sees the freshly read run and returns the values to write, or
    ``None`` to leave it as it is; it may raise to refuse. When another writer
    got there first the row is read again and ``decide`` asked again.
    """
    for attempt in range(ATTEMPTS):
        run = load(session, run_id)
        values = decide(run)
        if values is None:
            # Detach first: a rollback would expire what was just read.
            session.expunge(run)
            session.rollback()
            return run
        values = {**values, "updated_at": utcnow()}
        result = session.execute(
            runs_table.update()
            .where(runs_table.c.id == run_id, runs_table.c.lock_version == run.lock_version)
            .values(lock_version=run.lock_version + 1, **_columns(values))
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            session.commit()
            return load(session, run_id)
        session.rollback()
        delay = BACKOFF * (2**attempt)
        time.sleep(delay * random.uniform(0.75, 1.25) if jitter else delay)
    raise LostRace(f"Run #{run_id} kept changing under us; try again.")


def write_progress(
    session: Session,
    run_id: int,
    job_id: str,
    *,
    ticks: int,
    seconds: float,
    cursor: t.Any,
    move_cursor: bool,
) -> bool:
    """Add ticks and time, and move the cursor, if ``job_id`` still holds the run.

    Runs in the caller's transaction (the task's changes commit with it) and
    returns ``False``, writing nothing, when the run was handed to another job.
    """
    values: dict[str, t.Any] = {
        "tick_count": runs_table.c.tick_count + ticks,
        "time_running": runs_table.c.time_running + seconds,
        "updated_at": utcnow(),
    }
    if move_cursor:
        values["cursor"] = cursor if cursor is not None else sa.null()
    result = session.execute(
        runs_table.update()
        .where(runs_table.c.id == run_id, runs_table.c.job_id == job_id)
        .values(**values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def read_status(session: Session, run_id: int) -> tuple[str, str | None] | None:
    """The run's ``(status, job_id)``: the one SELECT of a status reload."""
    row = session.execute(
        sa.select(runs_table.c.status, runs_table.c.job_id).where(runs_table.c.id == run_id)
    ).first()
    return None if row is None else (row[0], row[1])
