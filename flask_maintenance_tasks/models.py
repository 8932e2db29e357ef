"""The run record: one row per run of a task, the single source of truth.

Redis only carries the next job; everything an operator sees and everything a
worker needs to carry on lives on this row.
"""

from __future__ import annotations

import enum
import typing as t
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class RunStatus(str, enum.Enum):
    """The status of a run; values are the lower-case names stored in the table."""

    SCHEDULED = "scheduled"
    ENQUEUED = "enqueued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    ERRORED = "errored"

    def __str__(self) -> str:
        return self.value


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database, SQLite included."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: JSON that stores Python ``None`` as SQL NULL.
_JSON = sa.JSON(none_as_null=True)
#: BIGINT where it autoincrements; SQLite only autoincrements INTEGER primary keys.
_BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the extension's own tables.

    Its tables are copied into the application's ``db.metadata`` by
    ``init_app`` (see :func:`copy_tables`) so that ``db.create_all()`` creates
    them and Alembic's autogenerate sees them as the application's own.
    """

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )


class Run(Base):
    """One run of a task: its status, position, progress, timings and outcome."""

    __tablename__ = "maintenance_tasks_runs"
    __table_args__ = (
        sa.Index(
            "ix_maintenance_tasks_runs_task_status_created", "task_name", "status", "created_at"
        ),
        # The dashboard's reads stay quick however many runs pile up: a task's
        # newest runs by id, and the few active runs among all.
        sa.Index("ix_maintenance_tasks_runs_task_id", "task_name", "id"),
        sa.Index("ix_maintenance_tasks_runs_status_id", "status", "id"),
        # The runs page filters by who started a run, newest first.
        sa.Index("ix_maintenance_tasks_runs_started_by_id", "started_by", "id"),
        # A partitioned run reads its partitions by parent, in their order.
        sa.Index("ix_maintenance_tasks_runs_parent_id_partition", "parent_id", "partition"),
    )

    id: Mapped[int] = mapped_column(_BigIntPK, primary_key=True, autoincrement=True)
    task_name: Mapped[str] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(16), default=RunStatus.ENQUEUED.value)
    #: Items (or batches) processed, accumulated across slices and resumes.
    tick_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Expected total, counted once when the run starts; ``None`` when unknown.
    tick_total: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: Seconds spent iterating, summed over every slice.
    time_running: Mapped[float] = mapped_column(sa.Float, default=0.0)
    #: Position of the last committed item (JSON); ``None`` before the first tick.
    cursor: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    arguments: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    metadata_: Mapped[t.Any] = mapped_column("metadata", _JSON, nullable=True)
    #: Who started the run, as its ``started`` event says (see :mod:`.audit`).
    started_by: Mapped[str | None] = mapped_column(sa.String(255))
    #: Id of the job slice allowed to work on this run (fencing token).
    job_id: Mapped[str | None] = mapped_column(sa.String(64))
    #: Why the run was last handed on or stopped: ``pause``, ``cancel``,
    #: ``time_slice``, ``worker_shutdown``, ``throttle`` or ``recovery``.
    interruption_reason: Mapped[str | None] = mapped_column(sa.String(32))
    #: Equals ``task_name`` while the run is active and the task forbids
    #: concurrent runs; a unique index then makes a second active run impossible.
    exclusive_key: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    #: When a run started with ``at=`` is due; ``None`` for a run started at once.
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    error_class: Mapped[str | None] = mapped_column(sa.String(255))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    backtrace: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    #: A JSON-safe description of the item being processed when the run errored.
    errored_element: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    lock_version: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: ``stop`` or ``skip``: what a failing item does to this run (see :mod:`.policy`).
    error_policy: Mapped[str] = mapped_column(sa.String(8), default="stop", server_default="stop")
    #: The run's limits on failed items; ``None``: no limit.
    max_failures: Mapped[int | None] = mapped_column(sa.BigInteger)
    max_failure_rate: Mapped[float | None] = mapped_column(sa.Float)
    #: Items recorded in the failure ledger, committed with the ticks that recorded them.
    failure_count: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    #: A dry run: every tick's writes are rolled back, and only its progress is kept.
    dry_run: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    #: What a dry run would change: ``{"tables": {...}, "sample": [...]}`` (see :mod:`.dryrun`).
    changes: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    #: The run whose failed items this run retries.
    retry_of_id: Mapped[int | None] = mapped_column(
        _BigIntPK, sa.ForeignKey("maintenance_tasks_runs.id", ondelete="SET NULL"), index=True
    )

    #: Partitions the run is cut into (1: one walk, as always); on a partition, 1.
    partitions: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    #: A partition's run: the run it is a part of; ``None`` on every run an operator sees.
    parent_id: Mapped[int | None] = mapped_column(
        _BigIntPK,
        sa.ForeignKey(
            "maintenance_tasks_runs.id",
            ondelete="CASCADE",
            name="fk_maintenance_tasks_runs_parent_id",
        ),
        nullable=True,
    )
    #: A partition's place among its run's partitions, from 0.
    partition: Mapped[int | None] = mapped_column(sa.Integer)
    #: A partition's range (JSON, see :mod:`.partitions`); on a split run, its boundaries.
    bounds: Mapped[t.Any] = mapped_column(_JSON, nullable=True)

    #: An operator's speed overrides (see :doc:`/speed-control`), read at each status
    #: reload; ``None``: the task's own. The cap in items per second,
    max_rate: Mapped[float | None] = mapped_column(sa.Float)
    #: the records fetched per query,
    batch_size_override: Mapped[int | None] = mapped_column(sa.Integer)
    #: and the seconds between two ticks.
    ticker_delay_override: Mapped[float | None] = mapped_column(sa.Float)
    #: What the task published with ``self.status`` (a JSON object), as of its last
    #: committed tick; ``None`` until it publishes anything. ``status`` is the run's
    #: place in the state machine; this is the task's own word (see :doc:`/task-status`).
    published: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    #: The run's recent throughput, one point per tick, the last few hundred (compact
    #: JSON, see :mod:`~flask_maintenance_tasks.pace`), written with each tick's
    #: UPDATE; ``None`` before its first tick, and on a partitioned run (its
    #: partitions keep theirs).
    pace: Mapped[t.Any] = mapped_column(_JSON, nullable=True)

    @property
    def is_partition(self) -> bool:
        """This run is one partition of another run."""
        return self.parent_id is not None

    @property
    def run_status(self) -> RunStatus:
        return RunStatus(self.status)

    def __repr__(self) -> str:
        return f"<Run #{self.id} {self.task_name} {self.status}>"


#: The runs table, for Core statements that must not touch ORM state.
runs_table: sa.Table = t.cast(sa.Table, Run.__table__)


class CSVFile(Base):
    """The CSV file of a run of a CSV task: where it is stored and what it holds.

    One row per run of a CSV task, written in the same transaction as the run.
    The bytes themselves live in the configured storage under
    :attr:`storage_key` (``MAINTENANCE_TASKS_CSV_STORAGE``); this row is the
    link from the run to them, whatever the storage.
    """

    __tablename__ = "maintenance_tasks_csv_files"

    id: Mapped[int] = mapped_column(_BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        _BigIntPK, sa.ForeignKey(Run.id, ondelete="CASCADE"), unique=True
    )
    #: What the storage's ``save`` returned; its ``open`` takes it back.
    storage_key: Mapped[str] = mapped_column(sa.String(1024))
    #: ``<UTC timestamp>_<task name>.csv``: the name of a download.
    filename: Mapped[str] = mapped_column(sa.String(255))
    #: The name the file had when it was given (``stdin.csv`` from standard input).
    original_filename: Mapped[str | None] = mapped_column(sa.String(255))
    #: Bytes, as stored.
    size: Mapped[int] = mapped_column(sa.BigInteger)
    #: Lines, counted at upload: newlines, plus one if the last line has none.
    line_count: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    run: Mapped[Run] = relationship(Run)

    def __repr__(self) -> str:
        return f"<CSVFile {self.filename} of run #{self.run_id}>"


#: The CSV files table, for Core statements that delete runs (see :mod:`.retention`).
csv_files_table: sa.Table = t.cast(sa.Table, CSVFile.__table__)


class Event(Base):
    """One line of the audit trail: an operator's action on a run, or a change of its status.

    Rows are only ever added. A status change and its event are written in
    the same transaction, so the trail and the run always agree. A refused
    start has no run, hence ``run_id`` may be ``NULL``.
    """

    __tablename__ = "maintenance_tasks_events"
    __table_args__ = (sa.Index("ix_maintenance_tasks_events_run_id_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(_BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(
        _BigIntPK, sa.ForeignKey(Run.id, ondelete="CASCADE"), nullable=True
    )
    task_name: Mapped[str] = mapped_column(sa.String(255))
    #: What happened, as a past participle: ``started``, ``paused``, ``csv_downloaded``...
    action: Mapped[str] = mapped_column(sa.String(32))
    #: ``done``, or ``refused`` when the action was asked for and turned down.
    outcome: Mapped[str] = mapped_column(sa.String(16), default="done")
    #: Why it was refused, why the run was interrupted, the error's class, the file's name.
    detail: Mapped[str | None] = mapped_column(sa.Text)
    #: Who: the operator (``MAINTENANCE_TASKS_METADATA``, the OS user), ``worker`` or ``recovery``.
    actor: Mapped[str | None] = mapped_column(sa.String(255))
    #: Where from: ``dashboard``, ``cli``, ``python`` or ``engine``.
    origin: Mapped[str] = mapped_column(sa.String(16))
    #: The remote address of a dashboard request; the host of a command or worker.
    address: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<Event #{self.id} {self.action} {self.outcome} of run #{self.run_id}>"


#: The events table, for Core inserts inside a status change's transaction.
events_table: sa.Table = t.cast(sa.Table, Event.__table__)


class FailureStatus(str, enum.Enum):
    """Where a failed item stands; values are stored in the failures table."""

    #: Not retried yet (or its retry stopped before reaching it).
    UNRESOLVED = "unresolved"
    #: A retry processed the item without error.
    RESOLVED = "resolved"
    #: A retry failed on it again: the new failure is on the retry's run.
    FAILED_AGAIN = "failed_again"
    #: A retry no longer found the item in the collection.
    GONE = "gone"

    def __str__(self) -> str:
        return self.value


class Failure(Base):
    """One failed item of a run: the run's failure ledger.

    Written in the transaction of the tick that skipped the item (or reported
    its ``report_on`` error), so the ledger and the run's progress always
    agree. ``item_key`` finds the item again for a retry; ``item`` describes
    it for people, masked as arguments are.
    """

    __tablename__ = "maintenance_tasks_failures"
    __table_args__ = (
        sa.Index("ix_maintenance_tasks_failures_run_id_id", "run_id", "id"),
        sa.Index("ix_maintenance_tasks_failures_run_id_error_class", "run_id", "error_class"),
        sa.Index("ix_maintenance_tasks_failures_run_id_status", "run_id", "status"),
        # Deleting a run (see :mod:`.retention`) clears the failures it retried.
        sa.Index("ix_maintenance_tasks_failures_retried_by_id", "retried_by_id"),
    )

    id: Mapped[int] = mapped_column(_BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(_BigIntPK, sa.ForeignKey(Run.id, ondelete="CASCADE"))
    #: What finds the item again: the cursor columns' values of a record, the
    #: index in a sequence, a CSV row's number; ``{"first", "last"}`` for a batch.
    item_key: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    #: The kind of collection the key belongs to (``records``, ``rows``, ``sequence``,
    #: ``csv_rows``...):
    #: a retry refuses keys of another kind than the task's collection has now.
    kind: Mapped[str | None] = mapped_column(sa.String(16))
    #: Where the walk stood just before the item (a retry of a CSV row seeks there).
    position: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    #: A JSON description of the item, masked.
    item: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    error_class: Mapped[str] = mapped_column(sa.String(255))
    message: Mapped[str | None] = mapped_column(sa.Text)
    backtrace: Mapped[t.Any] = mapped_column(_JSON, nullable=True)
    #: 1 on the run that first met the item, 2 on its first retry, and so on.
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1)
    status: Mapped[str] = mapped_column(sa.String(16), default=FailureStatus.UNRESOLVED.value)
    #: The retry run that resolved the item, failed on it again, or missed it.
    retried_by_id: Mapped[int | None] = mapped_column(
        _BigIntPK,
        # Named by hand: the convention's name is longer than PostgreSQL's 63 characters.
        sa.ForeignKey(Run.id, ondelete="SET NULL", name="fk_maintenance_tasks_failures_retried_by"),
        nullable=True,
    )
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<Failure #{self.id} of run #{self.run_id}: {self.error_class}>"


#: The failures table, for Core statements inside a tick's transaction.
failures_table: sa.Table = t.cast(sa.Table, Failure.__table__)


#: The bytes of CSV files kept by the database storage, in chunks. A chunk
#: row holds the bytes from ``start_byte`` on, so a read at any offset fetches
#: the one chunk holding it (a keyed lookup on the primary key).
csv_chunks_table: sa.Table = sa.Table(
    "maintenance_tasks_csv_chunks",
    Base.metadata,
    sa.Column("storage_key", sa.String(255), primary_key=True),
    sa.Column("start_byte", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def copy_tables(metadata: sa.MetaData) -> None:
    """Copy the extension's tables into an application's ``metadata``.

    The copies are what ``db.create_all()`` creates and what Alembic's
    autogenerate writes into a revision; the extension's own statements use
    the tables of :class:`Base`. Autogenerate writes a type from outside
    SQLAlchemy as ``module.Class()`` without importing its module, so in the
    copies a :class:`UTCDateTime` column has the type it stores,
    ``DateTime(timezone=True)``: the revision then names plain SQLAlchemy
    types only, and creates the same columns on every database. A copied
    ``unique=True`` constraint keeps the name our naming convention gave it,
    whatever the application's convention, as in the extension's revisions.
    A table the application already has is left as it is.
    """
    for table in Base.metadata.sorted_tables:
        if table.name in metadata.tables:
            continue
        copy = table.to_metadata(metadata)
        for column in copy.columns:
            if isinstance(column.type, UTCDateTime):
                column.type = sa.DateTime(timezone=True)
        named = {
            tuple(constraint.columns.keys()): constraint.name
            for constraint in table.constraints
            if isinstance(constraint, sa.UniqueConstraint)
        }
        for constraint in copy.constraints:
            if isinstance(constraint, sa.UniqueConstraint):
                constraint.name = named[tuple(constraint.columns.keys())]
