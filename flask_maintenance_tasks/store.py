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
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .exceptions import MaintenanceTasksError, RunNotFound
from .models import CSVFile, Run, RunStatus, runs_table, utcnow
from .transitions import ACTIVE, COMPLETED

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

Decision: t.TypeAlias = "t.Mapping[str, t.Any] | None"

#: Attempts, and the base of the exponential backoff between them (seconds).
ATTEMPTS = 6
BACKOFF = 0.05


class Fenced(Exception):
    """The run was handed to another job; this slice must stop without writing."""


class LostRace(MaintenanceTasksError, RuntimeError):
    """Every attempt found the row changed by someone else in between; try again."""


def open_session(
    db: SQLAlchemy, *, lock_timeout: float | None = None, shorten_only: bool = False
) -> Session:
    """A short-lived session of our own, so actions never commit the caller's work.

    Its statements hide their parameters from the errors they raise (and
    from the engine's log): a failed write of a run would otherwise carry the
    run's arguments, secrets included, into logs and tracebacks.

    With ``lock_timeout`` (seconds), no statement of the session waits longer
    than that for a lock another transaction holds: PostgreSQL's
    ``lock_timeout`` is set for each of its transactions, SQLite's busy
    timeout for as long as it holds its connection. The statement then fails
    with an error for which :func:`busy` is true. Operators' actions and
    recovery use it; workers wait, as their turn always comes. With
    ``shorten_only``, a shorter busy timeout that SQLite's connection has of
    its own (``?timeout=0.2`` in the URL, say) is kept.
    """
    session = Session(bind=quiet(db.engine), expire_on_commit=False)
    if lock_timeout is not None:
        milliseconds = max(1, round(lock_timeout * 1000))
        sa.event.listen(session, "after_begin", _bounded(milliseconds, shorten_only))
    return session


#: Where a connection lent to a bounded session keeps the busy timeout it had.
_OWN_BUSY_TIMEOUT = "flask_maintenance_tasks.busy_timeout"


def _bounded(milliseconds: int, shorten_only: bool) -> t.Callable[..., None]:
    def bound(session: Session, transaction: t.Any, connection: sa.Connection) -> None:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            # Ends with the transaction: nothing to undo.
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
        elif dialect == "sqlite":
            own = connection.info.get(_OWN_BUSY_TIMEOUT)
            if own is None:
                own = int(connection.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0)
            wanted = min(own, milliseconds) if shorten_only else milliseconds
            if wanted != own:
                connection.info[_OWN_BUSY_TIMEOUT] = own
                connection.exec_driver_sql(f"PRAGMA busy_timeout = {wanted}")
                _restore_on_checkin(connection.engine)

    return bound


def _restore_on_checkin(engine: sa.Engine) -> None:
    """Give a connection of ``engine``'s pool its own busy timeout back when it is returned."""
    pool = engine.pool
    if not sa.event.contains(pool, "checkin", _give_busy_timeout_back):
        sa.event.listen(pool, "checkin", _give_busy_timeout_back)


def _give_busy_timeout_back(dbapi_connection: t.Any, record: t.Any) -> None:
    own = record.info.pop(_OWN_BUSY_TIMEOUT, None) if record is not None else None
    if own is not None and dbapi_connection is not None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(own)}")
        finally:
            cursor.close()


def lock_timeout_of(setting: float | None, engine: sa.Engine) -> float:
    """``MAINTENANCE_TASKS_LOCK_TIMEOUT``, or its default on ``engine``'s database."""
    if setting is not None:
        return setting
    return 5.0 if engine.dialect.name == "sqlite" else 2.0


#: PostgreSQL's SQLSTATE for a lock not obtained within ``lock_timeout``.
_LOCK_NOT_AVAILABLE = "55P03"


def busy(error: BaseException) -> bool:
    """The statement gave up waiting for a lock another transaction holds.

    PostgreSQL's ``lock_timeout`` ran out, or SQLite's busy timeout: nothing
    of the statement was applied, and trying again later may succeed.
    """
    if not isinstance(error, sa.exc.OperationalError):
        return False
    code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return code == _LOCK_NOT_AVAILABLE or lock_timed_out(error)


def quiet(engine: sa.Engine) -> sa.Engine:
    """``engine`` sharing its pool and options, with ``hide_parameters`` on."""
    # ``hide_parameters`` is a create_engine() argument; an option engine
    # copies it from its parent at creation, and reads it from itself when it
    # builds an error, so setting it here affects only our statements.
    option_engine = engine.execution_options()
    option_engine.hide_parameters = True
    return option_engine


#: The largest id a run can have (a signed 64-bit column); SQLite cannot even
#: compare with a larger integer, so no query is made for one.
MAX_RUN_ID = 2**63 - 1


def load(session: Session, run_id: int) -> Run:
    run = find(session, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def find(session: Session, run_id: int) -> Run | None:
    """The run with this id, freshly read, or ``None`` (also for an id no run can have)."""
    if not 0 < run_id <= MAX_RUN_ID:
        return None
    return session.get(Run, run_id, populate_existing=True)


def orphans(
    session: Session, statuses: t.Collection[str], not_updated_since: datetime
) -> list[Run]:
    """Runs in one of ``statuses`` whose row has not changed since ``not_updated_since``."""
    return list(
        session.scalars(
            sa.select(Run)
            .where(Run.status.in_(statuses), Run.updated_at <= not_updated_since)
            .order_by(Run.id)
        )
    )


def unsettled_runs(
    session: Session,
    statuses: t.Collection[str],
    stopped: t.Collection[str],
    not_updated_since: datetime,
) -> list[Run]:
    """Cut runs in one of ``statuses`` held by no job, all of whose partitions are in
    ``stopped``, none of them changed since ``not_updated_since``, nor the run.

    No partition's job will settle such a run again: the settle of the last
    one to stop failed (SQLite's lock, a crash between its commit and its
    settle). One query, whatever the number of runs.
    """
    child = sa.orm.aliased(Run)
    still_moving = sa.exists().where(
        child.parent_id == Run.id,
        sa.or_(child.status.not_in(stopped), child.updated_at > not_updated_since),
    )
    return list(
        session.scalars(
            sa.select(Run)
            .where(
                Run.parent_id.is_(None),
                Run.bounds.is_not(None),
                Run.job_id.is_(None),
                Run.status.in_(statuses),
                Run.updated_at <= not_updated_since,
                ~still_moving,
            )
            .order_by(Run.id)
        )
    )


def holder_of(session: Session, exclusive_key: str) -> int | None:
    """The id of the active run holding a task's exclusive key, if any."""
    return session.execute(
        sa.select(runs_table.c.id).where(runs_table.c.exclusive_key == exclusive_key)
    ).scalar()


def csv_file_of(session: Session, run_id: int) -> CSVFile | None:
    """The CSV file record of a run, or ``None`` for a run without one."""
    return session.scalars(sa.select(CSVFile).where(CSVFile.run_id == run_id)).first()


def _columns(values: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    # Attribute names to column names (metadata_ is stored as "metadata").
    return {Run.__mapper__.attrs[k].columns[0].name: v for k, v in values.items()}


def change(
    session: Session,
    run_id: int,
    decide: t.Callable[[Run], Decision],
    *,
    jitter: bool = True,
    written: t.Callable[[Session, Run, t.Mapping[str, t.Any]], None] | None = None,
) -> Run:
    """Apply what ``decide(run)`` returns to the run, guarded by ``lock_version``.

    ``decide`` sees the freshly read run and returns the values to write, or
    ``None`` to leave it as it is; it may raise to refuse. When another writer
    got there first the row is read again and ``decide`` asked again.
    ``written(session, run, values)`` runs after the UPDATE, in its
    transaction, before the commit (the audit trail's row of the change).
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
            if written is not None:
                written(session, run, values)
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
    failures: int = 0,
    changes: t.Any = None,
    parent_id: int | None = None,
    time_running: float | None = None,
    published: dict[str, t.Any] | None = None,
    pace: dict[str, t.Any] | None = None,
) -> bool:
    """Add ticks and time, and move the cursor, if ``job_id`` still holds the run.

    Runs in the caller's transaction (the task's changes commit with it) and
    returns ``False``, writing nothing, when the run was handed to another job.
    A partition (``parent_id``) adds its ticks and failures to its run's in the
    same transaction, and raises the run's time to its own ``time_running``
    when that is longer: the run's row is written first, so every writer
    locks a run before its partitions. ``published`` is what the task published
    with ``self.status`` since the last tick (``None``: nothing), and ``pace``
    the run's series with this tick's point (see :mod:`.pace`; ``None``: as it
    is), both written by the same UPDATE.
    """
    if parent_id is not None and (ticks or failures or time_running is not None):
        parent: dict[str, t.Any] = {"updated_at": utcnow()}
        if ticks:
            parent["tick_count"] = runs_table.c.tick_count + ticks
        if failures:
            parent["failure_count"] = runs_table.c.failure_count + failures
        if time_running is not None:
            parent["time_running"] = sa.case(
                (runs_table.c.time_running < time_running, time_running),
                else_=runs_table.c.time_running,
            )
        session.execute(runs_table.update().where(runs_table.c.id == parent_id).values(**parent))
    values: dict[str, t.Any] = {
        "tick_count": runs_table.c.tick_count + ticks,
        "time_running": runs_table.c.time_running + seconds,
        "updated_at": utcnow(),
    }
    if move_cursor:
        values["cursor"] = cursor if cursor is not None else sa.null()
    if failures:
        values["failure_count"] = runs_table.c.failure_count + failures
    if changes is not None:
        values["changes"] = changes
    if published is not None:
        values["published"] = published
    if pace is not None:
        values["pace"] = pace
    result = session.execute(
        runs_table.update()
        .where(runs_table.c.id == run_id, runs_table.c.job_id == job_id)
        .values(**values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def publish(session: Session, run_id: int, published: dict[str, t.Any]) -> None:
    """Write a task's published status on its run now: one UPDATE (the caller commits)."""
    session.execute(
        runs_table.update().where(runs_table.c.id == run_id).values(published=published)
    )


def partitions_of(session: Session, run_ids: t.Iterable[int]) -> dict[int, list[Run]]:
    """The partitions of each run of ``run_ids`` that has some, in order: one query."""
    ids = list(run_ids)
    found: dict[int, list[Run]] = {}
    if not ids:
        return found
    query = sa.select(Run).where(Run.parent_id.in_(ids)).order_by(Run.parent_id, Run.partition)
    for run in session.scalars(query):
        found.setdefault(t.cast(int, run.parent_id), []).append(run)
    return found


def family_totals(session: Session, parent_id: int) -> tuple[int, int]:
    """A partitioned run's ``(tick_count, failure_count)``, for its partitions' limits."""
    row = session.execute(
        sa.select(runs_table.c.tick_count, runs_table.c.failure_count).where(
            runs_table.c.id == parent_id
        )
    ).first()
    return (0, 0) if row is None else (int(row[0] or 0), int(row[1] or 0))


def share_rate(session: Session, parent_id: int) -> bool:
    """Split a partitioned run's rate cap evenly over its partitions that have not succeeded.

    Each partition's job keeps its own pace, so together they keep the run's;
    once a partition is done, the others take its share. Writes only the
    partitions whose share changed; ``True`` when it wrote any (the caller
    commits). The run's cap is read in the same statement's transaction, so a
    cap changed meanwhile is not overwritten by an older one.
    """
    c = runs_table.c
    cap = session.scalar(sa.select(c.max_rate).where(c.id == parent_id))
    unfinished = sa.and_(c.parent_id == parent_id, c.status != RunStatus.SUCCEEDED.value)
    count = session.scalar(sa.select(sa.func.count()).where(unfinished)) or 0
    share = cap / count if cap and count else None
    differs = (
        c.max_rate.is_not(None)
        if share is None
        else sa.or_(c.max_rate.is_(None), c.max_rate != share)
    )
    written = session.execute(
        sa.update(runs_table)
        .where(unfinished, differs)
        .values(max_rate=share)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return bool(written)


class Status(t.NamedTuple):
    """What a status reload reads of a run: its status, its job and its speed overrides."""

    status: str
    job_id: str | None
    #: The operator's cap in items per second, page size and ticker delay (``None``: unset).
    max_rate: float | None = None
    batch_size: int | None = None
    ticker_delay: float | None = None


def read_status(session: Session, run_id: int) -> Status | None:
    """The run's :class:`Status`: the one SELECT of a status reload."""
    c = runs_table.c
    row = session.execute(
        sa.select(
            c.status, c.job_id, c.max_rate, c.batch_size_override, c.ticker_delay_override
        ).where(c.id == run_id)
    ).first()
    return None if row is None else Status(*row)


# -- what the dashboard and the command line read ---------------------------
#
# Each function is one query, whatever the number of tasks and runs: the pages
# promise a fixed number of queries (tests/test_web_queries.py).


def missing_tables_message(engine: sa.Engine) -> str | None:
    """What to do, when the runs table does not exist in the database of ``engine``.

    ``None`` when it exists, or when the database cannot be reached (then the
    original error says more).
    """
    try:
        if runs_table_exists(engine):
            return None
    except sa.exc.DBAPIError:
        return None
    url = engine.url.render_as_string(hide_password=True)
    return (
        f"The table {runs_table.name} does not exist in {url}. Create it with "
        "`flask mtasks migrations install` then `flask db upgrade` (Flask-Migrate), "
        "or with `db.create_all()` in an app context."
    )


def runs_table_exists(engine: sa.Engine) -> bool:
    """Whether the runs table exists in the database of ``engine``.

    :raises sqlalchemy.exc.DBAPIError: the database cannot be reached.
    """
    return sa.inspect(engine).has_table(runs_table.name)


def active_runs(session: Session, task_name: str | None = None) -> list[Run]:
    """The active runs, of every task or of ``task_name``, newest first."""
    query = sa.select(Run).where(Run.status.in_(sorted(ACTIVE)), Run.parent_id.is_(None))
    if task_name is not None:
        query = query.where(Run.task_name == task_name)
    return list(session.scalars(query.order_by(Run.created_at.desc(), Run.id.desc())))


def run_counts(session: Session) -> list[tuple[str, str, int, int]]:
    """``(task_name, status, runs, failed items)`` for each task and status that has runs.

    One GROUP BY over every run, partitions left out (a partitioned run's
    failures already add up those of its partitions).
    """
    query = (
        sa.select(
            runs_table.c.task_name,
            runs_table.c.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(runs_table.c.failure_count), 0),
        )
        .where(runs_table.c.parent_id.is_(None))
        .group_by(runs_table.c.task_name, runs_table.c.status)
        .order_by(runs_table.c.task_name, runs_table.c.status)
    )
    return [
        (name, status, int(runs), int(failed))
        for name, status, runs, failed in session.execute(query)
    ]


def history_page(
    session: Session,
    task_name: str | None = None,
    *,
    before_id: int | None = None,
    limit: int,
) -> list[Run]:
    """Up to ``limit`` completed runs, of every task or of ``task_name``, newest first.

    A page of the history, keyset on the id: ``before_id`` is the id of the
    last run of the page before (ids grow with creation time). Ask for one run
    more than a page to learn whether another page follows.
    """
    query = sa.select(Run).where(Run.status.in_(sorted(COMPLETED)), Run.parent_id.is_(None))
    if task_name is not None:
        query = query.where(Run.task_name == task_name)
    if before_id is not None:
        query = query.where(Run.id < before_id)
    return list(session.scalars(query.order_by(Run.id.desc()).limit(limit)))


def latest_run_per_task(session: Session, names: t.Iterable[str]) -> dict[str, Run]:
    """The newest run of each task of ``names`` that has one, whatever its status, by name."""
    newest = (
        sa.select(Run.task_name, sa.func.max(Run.id).label("id"))
        .where(Run.task_name.in_(list(names)), Run.parent_id.is_(None))
        .group_by(Run.task_name)
        .subquery()
    )
    runs = session.scalars(sa.select(Run).join(newest, Run.id == newest.c.id))
    return {run.task_name: run for run in runs}


def latest_completed_run_per_task(session: Session) -> list[Run]:
    """The newest completed run of every task name in the table, tasks gone from the code included.

    A GROUP BY would read every run. Instead a recursive query walks the task
    names on the index that starts with ``task_name`` (each step asks for the
    next name up), and for each name takes the greatest id of a completed run
    from the ``(task_name, id)`` index: as many index lookups as there are
    task names.
    """
    runs, other = runs_table.alias("runs_by_name"), runs_table.alias("runs_latest")
    names = sa.select(sa.func.min(runs.c.task_name).label("name")).cte("task_names", recursive=True)
    following = (
        sa.select(sa.func.min(runs.c.task_name))
        .where(runs.c.task_name > names.c.name)
        .scalar_subquery()
    )
    names = names.union_all(sa.select(following).where(names.c.name.is_not(None)))
    latest = (
        sa.select(other.c.id)
        .where(
            other.c.task_name == names.c.name,
            other.c.status.in_(sorted(COMPLETED)),
            other.c.parent_id.is_(None),
        )
        .order_by(other.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    ids = sa.select(latest).where(names.c.name.is_not(None))
    return list(session.scalars(sa.select(Run).where(Run.id.in_(ids))))


def runs_page(
    session: Session,
    *,
    task_name: str | None = None,
    status: str | None = None,
    started_by: str | None = None,
    before_id: int | None = None,
    limit: int,
) -> list[Run]:
    """Up to ``limit`` runs of any status and task, newest first, filtered: one query.

    Keyset on the id like :func:`history_page`; each filter has an index
    that starts with its column and continues with the id (the status index
    is on the status alone, and the few statuses keep its scans short).
    """
    query = sa.select(Run).where(Run.parent_id.is_(None))
    if task_name is not None:
        query = query.where(Run.task_name == task_name)
    if status is not None:
        query = query.where(Run.status == status)
    if started_by is not None:
        query = query.where(Run.started_by == started_by)
    if before_id is not None:
        query = query.where(Run.id < before_id)
    return list(session.scalars(query.order_by(Run.id.desc()).limit(limit)))


def lock_timed_out(error: BaseException) -> bool:
    """SQLite waited its busy timeout for another connection's write lock, in vain.

    Nothing of the statement was applied; trying again later may succeed
    (partitions on SQLite hold the lock in turn, one tick each).
    """
    return isinstance(error, sa.exc.OperationalError) and "database is locked" in str(error.orig)


_T = t.TypeVar("_T")


def retried_on_lock(
    step: t.Callable[[], _T], *, attempts: int = 3, rollback: t.Callable[[], None] | None = None
) -> _T:
    """``step()``, tried again while SQLite's lock stays with others past its busy timeout."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except sa.exc.DBAPIError as error:
            if attempt == attempts or not lock_timed_out(error):
                raise
            if rollback is not None:
                rollback()
    raise AssertionError("unreachable")  # pragma: no cover
