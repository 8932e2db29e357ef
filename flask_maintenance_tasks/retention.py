"""Retention: ended runs older than a limit are deleted, so the tables stay small for years.

:func:`prune` deletes every run that

- has ended (``succeeded``, ``errored`` or ``cancelled``) more than the limit
  ago (``MAINTENANCE_TASKS_RETENTION``, 90 days by default);
- is not the latest run of its task: a task's latest run is kept whatever its
  status and age, so the dashboard always shows how each task last went;
- is not a partition: a partitioned run goes as a whole family, through its
  parent, and only once none of its partitions is active;
- is not retried by an active or errored run (an errored run may be resumed),
  which still reads its failures.

With a run go its partitions, its failures, its events and its CSV file. A
run that a kept run refers to goes too: the reference is set to ``NULL``
(``retry_of_id`` of a retry, ``retried_by_id`` of a failure), as the foreign
keys' ``ON DELETE SET NULL`` would, so that SQLite without foreign keys and
PostgreSQL end up alike. Events without a run (refused starts) are not
touched.

The runs go in batches of :data:`BATCH_SIZE` parents, each in a short
transaction of its own that selects, counts and deletes: a running task's
ticks never wait longer than one batch for a lock, and the pruning process
holds one batch of ids at a time, however many runs go. On PostgreSQL the
batch locks its runs with ``FOR UPDATE SKIP LOCKED``: a run that an operator
is resuming at that very moment is skipped, not waited for, and a run resumed
before the lock no longer matches. SQLite has no row locks: there a batch
takes the database's write lock before it selects (``BEGIN IMMEDIATE``), so
no resume commits between its choice and its delete. The batches walk the
runs by id, so each run is looked at once per prune.

A CSV file kept by the database storage is deleted in its batch's
transaction; a file kept elsewhere (a directory, object storage) is deleted
after the batch commits, since its storage cannot roll back. A file still
named by a kept run (a run started for real from a pruned dry run shares its
file) is not deleted.

A dry run does the same walk and counts, deleting nothing.

There is no audit event for a prune: events belong to runs, and a prune's
runs are gone. A prune is logged instead, at INFO level.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t
from datetime import datetime, timedelta

import sqlalchemy as sa

from .config import parse_duration
from .csv.storage import DatabaseStorage
from .i18n import gettext as _
from .i18n import moment, ngettext, pgettext
from .models import (
    RunStatus,
    csv_chunks_table,
    csv_files_table,
    events_table,
    failures_table,
    runs_table,
    utcnow,
)
from .store import quiet
from .transitions import ACTIVE, COMPLETED

if t.TYPE_CHECKING:
    from .state import State

logger = logging.getLogger("flask_maintenance_tasks")

#: Runs (with their partitions) deleted per transaction.
BATCH_SIZE = 500


@dataclasses.dataclass(frozen=True)
class Pruned:
    """What :func:`prune` deleted, or would delete in a dry run.

    .. versionadded:: 0.1
    """

    #: Runs deleted (the runs an operator sees; partitions are counted apart).
    runs: int = 0
    #: Partitions deleted with their runs.
    partitions: int = 0
    failures: int = 0
    events: int = 0
    csv_files: int = 0
    #: Transactions it took.
    batches: int = 0
    #: Nothing was deleted: the counts say what would have been.
    dry_run: bool = False
    #: Runs ended before this time were due; ``None`` when retention is off.
    ended_before: datetime | None = None
    #: It stopped after ``max_batches``: more runs may be due.
    more: bool = False

    def __str__(self) -> str:
        if self.ended_before is None:
            return _("Retention is off (MAINTENANCE_TASKS_RETENTION is None): nothing was deleted.")
        parts = [ngettext("%(num)s run", "%(num)s runs", self.runs)]
        if self.partitions:
            parts.append(ngettext("%(num)s partition", "%(num)s partitions", self.partitions))
        parts += [
            ngettext("%(num)s failure", "%(num)s failures", self.failures),
            ngettext("%(num)s event", "%(num)s events", self.events),
            ngettext("%(num)s CSV file", "%(num)s CSV files", self.csv_files),
        ]
        # Translators: what goes between the items of a list ("3 runs, 2 failures").
        what = pgettext("list separator", ", ").join(parts)
        when = moment(self.ended_before)
        if self.dry_run:
            text = _("Would delete %(what)s of runs ended before %(when)s.", what=what, when=when)
        else:
            text = _("Deleted %(what)s of runs ended before %(when)s.", what=what, when=when)
        if self.more:
            text = _("%(text)s More runs may be due: prune again.", text=text)
        return text


def older_than_seconds(state: State, older_than: t.Any = None) -> float | None:
    """The retention in seconds: ``older_than`` if given, else the setting (``None``: off).

    :raises ValueError: ``older_than`` is no positive duration.
    """
    if older_than is None:
        return state.settings.retention
    return parse_duration(older_than)


def prune(
    state: State,
    older_than: t.Any = None,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
) -> Pruned:
    """Delete the ended runs older than ``older_than`` (default: the retention setting).

    :param older_than: a timedelta, seconds, or text such as ``"90d"``.
    :param dry_run: count what would go, deleting nothing.
    :param max_batches: stop after this many batches (``more`` is then
        true: runs may be left).
    :raises ValueError: ``older_than`` is no positive duration.
    """
    seconds = older_than_seconds(state, older_than)
    if seconds is None:
        return Pruned(dry_run=dry_run)
    ended_before = utcnow() - timedelta(seconds=seconds)
    engine = quiet(state.db.engine)
    in_database = isinstance(state.csv_storage, DatabaseStorage)
    pruned = Pruned(dry_run=dry_run, ended_before=ended_before)
    after_id = 0
    with engine.connect() as connection:
        keep = set(connection.scalars(latest_runs()))
    while True:
        if max_batches is not None and pruned.batches >= max_batches:
            pruned = dataclasses.replace(pruned, more=True)
            break
        with engine.begin() as connection:
            batch = _batch(
                connection, ended_before, after_id, batch_size, keep, dry_run, in_database
            )
        if not batch.parents:
            break
        pruned = _added(pruned, batch)
        if not dry_run and not in_database:
            _delete_files(state, batch.orphaned_keys)
        if len(batch.parents) < batch_size:
            break
        after_id = batch.parents[-1]
    if not dry_run and pruned.runs:
        logger.info("%s", pruned)
    return pruned


@dataclasses.dataclass
class _Batch:
    parents: list[int]
    #: The runs deleted (or, in a dry run, that would be).
    runs: int = 0
    partitions: int = 0
    failures: int = 0
    events: int = 0
    csv_files: int = 0
    #: Storage keys no kept run names any more (deleted with the batch, or after it).
    orphaned_keys: list[str] = dataclasses.field(default_factory=list)


def _added(pruned: Pruned, batch: _Batch) -> Pruned:
    """``pruned`` with one more batch counted."""
    return dataclasses.replace(
        pruned,
        runs=pruned.runs + batch.runs,
        partitions=pruned.partitions + batch.partitions,
        failures=pruned.failures + batch.failures,
        events=pruned.events + batch.events,
        csv_files=pruned.csv_files + batch.csv_files,
        batches=pruned.batches + 1,
    )


def latest_runs() -> sa.Select[t.Any]:
    """The id of the latest run (not a partition) of each task, kept whatever its age."""
    runs = runs_table.c
    return sa.select(sa.func.max(runs.id)).where(runs.parent_id.is_(None)).group_by(runs.task_name)


def due_runs(
    ended_before: datetime, after_id: int, limit: int, keep: t.Collection[int] = ()
) -> sa.Select[t.Any]:
    """The ids of the next ``limit`` runs (no partitions) due for deletion after ``after_id``.

    ``keep`` holds the ids of :func:`latest_runs`, read once before the first
    batch: a run started since is newer still, so none of the latest is lost.
    (A correlated "is there a newer run of its task" left the plan to the
    planner's statistics, and stale ones made it scan the task's runs for
    each run: minutes for a batch.)
    """
    runs = runs_table
    partition = runs_table.alias("partition_runs")
    retry = runs_table.alias("retry_runs")
    active = sorted(ACTIVE)
    resumable = sorted(ACTIVE | {RunStatus.ERRORED})
    return (
        sa.select(runs.c.id)
        .where(
            runs.c.id > after_id,
            runs.c.parent_id.is_(None),
            runs.c.status.in_(sorted(COMPLETED)),
            runs.c.ended_at < ended_before,
            runs.c.id.not_in(sorted(keep)),
            ~sa.exists().where(partition.c.parent_id == runs.c.id, partition.c.status.in_(active)),
            # A retry walks its run's failures, which go with the run: keep the run while
            # the retry is active or errored (an errored run may be resumed).
            ~sa.exists().where(retry.c.retry_of_id == runs.c.id, retry.c.status.in_(resumable)),
        )
        .order_by(runs.c.id)
        .limit(limit)
    )


def _batch(
    connection: sa.Connection,
    ended_before: datetime,
    after_id: int,
    size: int,
    keep: t.Collection[int],
    dry_run: bool,
    in_database: bool,
) -> _Batch:
    """Select, count and (unless ``dry_run``) delete one batch, in ``connection``'s transaction."""
    query = due_runs(ended_before, after_id, size, keep)
    if not dry_run:
        # PostgreSQL locks the rows it picks (and checks them again once locked); SQLite
        # knows no row locks, and pysqlite would only begin at the first write: take
        # the write lock first, so that no resume or second pruner commits between
        # the choice and the delete.
        query = query.with_for_update(of=runs_table, skip_locked=True)
        dbapi = connection.connection.dbapi_connection
        if connection.dialect.name == "sqlite" and not getattr(dbapi, "in_transaction", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    parents: list[int] = list(connection.scalars(query))
    if not parents:
        return _Batch(parents)
    runs, failures, events, files = (
        runs_table.c,
        failures_table.c,
        events_table.c,
        csv_files_table.c,
    )
    partitions = list(connection.scalars(sa.select(runs.id).where(runs.parent_id.in_(parents))))
    family = parents + partitions
    keys = sorted(
        set(connection.scalars(sa.select(files.storage_key).where(files.run_id.in_(family))))
    )
    batch = _Batch(parents, runs=len(parents), partitions=len(partitions))
    if dry_run:
        batch.failures = _count(connection, failures_table, failures.run_id.in_(family))
        batch.events = _count(connection, events_table, events.run_id.in_(family))
        batch.csv_files = _count(connection, csv_files_table, files.run_id.in_(family))
        return batch

    connection.execute(
        runs_table.update().where(runs.retry_of_id.in_(family)).values(retry_of_id=None)
    )
    connection.execute(
        failures_table.update().where(failures.retried_by_id.in_(family)).values(retried_by_id=None)
    )
    batch.failures = connection.execute(
        failures_table.delete().where(failures.run_id.in_(family))
    ).rowcount
    batch.events = connection.execute(
        events_table.delete().where(events.run_id.in_(family))
    ).rowcount
    batch.csv_files = connection.execute(
        csv_files_table.delete().where(files.run_id.in_(family))
    ).rowcount
    if keys:
        still_used = set(
            connection.scalars(sa.select(files.storage_key).where(files.storage_key.in_(keys)))
        )
        batch.orphaned_keys = [key for key in keys if key not in still_used]
        if in_database and batch.orphaned_keys:
            connection.execute(
                csv_chunks_table.delete().where(
                    csv_chunks_table.c.storage_key.in_(batch.orphaned_keys)
                )
            )
    if partitions:
        connection.execute(runs_table.delete().where(runs.id.in_(partitions)))
    batch.runs = connection.execute(runs_table.delete().where(runs.id.in_(parents))).rowcount
    return batch


def _count(connection: sa.Connection, table: sa.Table, condition: sa.ColumnElement[bool]) -> int:
    return int(
        connection.scalar(sa.select(sa.func.count()).select_from(table).where(condition)) or 0
    )


def _delete_files(state: State, keys: t.Iterable[str]) -> None:
    for key in keys:
        try:
            state.csv_storage.delete(key)
        except Exception:
            # The run is gone already; a file left over costs space, not correctness.
            logger.exception("Could not delete the CSV file %s of a pruned run", key)
