"""The failure ledger: the failed items of runs, written and read.

A job slice records each failed item as a row built by :func:`row`, and
:func:`insert` writes the rows of a tick in that tick's transaction. The
pages and the command line read the ledger through the functions below,
each one query.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from .models import Failure, FailureStatus, Run, failures_table, runs_table, utcnow

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Longest message kept for a failure (the rest is cut, with a mark).
MAX_MESSAGE = 10_000
#: A failures page (dashboard, ``flask mtasks failures``) shows at most this many.
PAGE_SIZE = 50
#: Failures shown on a run's card.
CARD_FAILURES = 3


def row(
    *,
    run_id: int,
    key: t.Any,
    kind: str,
    position: t.Any,
    item: t.Any,
    error: BaseException,
    message: str,
    backtrace: list[str],
    attempt: int,
) -> dict[str, t.Any]:
    """The values of a failure row (``message`` already scrubbed, ``item`` already masked)."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " [...]"
    return {
        "run_id": run_id,
        "item_key": key,
        "kind": kind,
        "position": position,
        "item": item,
        "error_class": type(error).__name__[:255],
        "message": message.replace("\x00", ""),
        "backtrace": backtrace,
        "attempt": attempt,
        "status": FailureStatus.UNRESOLVED.value,
        "created_at": utcnow(),
    }


def insert(session: Session, rows: list[dict[str, t.Any]]) -> None:
    """Write ``rows`` in the session's transaction: one statement for them all."""
    if rows:
        session.execute(failures_table.insert(), rows)


def _of(run_id: int) -> sa.ColumnElement[bool]:
    """The failures of run ``run_id``: its own and, for a partitioned run, its partitions'."""
    family = sa.select(runs_table.c.id).where(
        sa.or_(runs_table.c.id == run_id, runs_table.c.parent_id == run_id)
    )
    return failures_table.c.run_id.in_(family)


def mark(session: Session, ids: t.Sequence[int], status: FailureStatus, retried_by: int) -> None:
    """Set the status of the failures ``ids``, as seen by the retry run ``retried_by``."""
    if ids:
        session.execute(
            failures_table.update()
            .where(failures_table.c.id.in_(list(ids)))
            .values(status=status.value, retried_by_id=retried_by, resolved_at=utcnow())
        )


def resolve_between(
    session: Session, run_id: int, after: int | None, upto: int, retried_by: int
) -> None:
    """Mark resolved the unresolved failures of ``run_id`` with ids in ``(after, upto]``.

    A retry run walks the failures of its run in id order; at each tick, the
    ones it walked past without marking them otherwise were processed
    without error.
    """
    condition = [
        _of(run_id),
        failures_table.c.status == FailureStatus.UNRESOLVED.value,
        failures_table.c.id <= upto,
    ]
    if after is not None:
        condition.append(failures_table.c.id > after)
    session.execute(
        failures_table.update()
        .where(*condition)
        .values(status=FailureStatus.RESOLVED.value, retried_by_id=retried_by, resolved_at=utcnow())
    )


def unresolved_page(session: Session, run_id: int, after: int | None, limit: int) -> list[t.Any]:
    """The next unresolved failures of ``run_id`` after id ``after``, in id order."""
    columns = failures_table.c
    statement = (
        sa.select(columns.id, columns.item_key, columns.position, columns.attempt)
        .where(_of(run_id), columns.status == FailureStatus.UNRESOLVED.value)
        .order_by(columns.id)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(columns.id > after)
    return list(session.execute(statement).all())


def unresolved_kinds(session: Session, run_id: int) -> set[str]:
    """The kinds of collection the unresolved failures of ``run_id`` were met in."""
    columns = failures_table.c
    statement = (
        sa.select(columns.kind)
        .where(_of(run_id), columns.status == FailureStatus.UNRESOLVED.value)
        .distinct()
    )
    return {kind for kind in session.scalars(statement) if kind is not None}


def count_unresolved(session: Session, run_id: int) -> int:
    columns = failures_table.c
    return int(
        session.execute(
            sa.select(sa.func.count()).where(
                _of(run_id), columns.status == FailureStatus.UNRESOLVED.value
            )
        ).scalar_one()
    )


def page(
    session: Session,
    run_id: int,
    *,
    after: int | None = None,
    error_class: str | None = None,
    status: str | None = None,
    limit: int = PAGE_SIZE,
) -> list[Failure]:
    """Failures of ``run_id`` after id ``after``, oldest first (the order of the items)."""
    statement = sa.select(Failure).where(_of(run_id))
    if after is not None:
        statement = statement.where(Failure.id > after)
    if error_class is not None:
        statement = statement.where(Failure.error_class == error_class)
    if status is not None:
        statement = statement.where(Failure.status == status)
    return list(session.scalars(statement.order_by(Failure.id).limit(limit)).all())


def count_by_class(session: Session, run_id: int) -> list[tuple[str, int, int]]:
    """``(error class, failures, unresolved)`` of ``run_id``, most frequent first."""
    columns = failures_table.c
    unresolved = sa.func.sum(
        sa.case((columns.status == FailureStatus.UNRESOLVED.value, 1), else_=0)
    )
    statement = (
        sa.select(columns.error_class, sa.func.count(), unresolved)
        .where(_of(run_id))
        .group_by(columns.error_class)
        .order_by(sa.func.count().desc(), columns.error_class)
    )
    rows = session.execute(statement).all()
    return [(name, int(count), int(unresolved or 0)) for name, count, unresolved in rows]


def latest(
    session: Session, run_ids: t.Collection[int], limit: int = CARD_FAILURES
) -> dict[int, list[Failure]]:
    """The ``limit`` newest failures of each run in ``run_ids``: one query for them all."""
    if not run_ids:
        return {}
    # A partition's failures are its run's.
    owner = sa.func.coalesce(runs_table.c.parent_id, runs_table.c.id)
    ids = list(run_ids)
    number = (
        sa.func.row_number().over(partition_by=owner, order_by=Failure.id.desc()).label("number")
    )
    ranked = (
        sa.select(Failure.id.label("failure_id"), owner.label("owner"), number)
        .join(runs_table, runs_table.c.id == Failure.run_id)
        .where(sa.or_(runs_table.c.id.in_(ids), runs_table.c.parent_id.in_(ids)))
        .subquery()
    )
    statement = (
        sa.select(Failure, ranked.c.owner)
        .join(ranked, ranked.c.failure_id == Failure.id)
        .where(ranked.c.number <= limit)
        .order_by(ranked.c.owner, Failure.id.desc())
    )
    found: dict[int, list[Failure]] = {}
    for failure, owner_id in session.execute(statement):
        found.setdefault(int(owner_id), []).append(failure)
    return found


def retries_of(session: Session, run_id: int) -> list[Run]:
    """The runs that retried the failures of ``run_id``, newest first."""
    statement = (
        sa.select(Run).where(runs_table.c.retry_of_id == run_id).order_by(Run.id.desc()).limit(20)
    )
    return list(session.scalars(statement).all())
