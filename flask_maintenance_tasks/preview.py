"""A preview of a run before it starts: its parameters checked, its items counted and shown.

:func:`preview` never writes and costs a bounded number of statements,
each one cut off after ``MAINTENANCE_TASKS_PREVIEW_TIMEOUT`` seconds,
however large the tables: at most three to count (the exact count; past the
timeout a count bounded at :data:`COUNT_BOUND` items; past that too, on
PostgreSQL, the planner's estimate), and one for the first items.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import typing as t

import sqlalchemy as sa

from . import masking, sources
from .dryrun import NoCommit
from .exceptions import InvalidArguments
from .i18n import gettext as _
from .i18n import ngettext, number
from .sources import BatchesSource, OnceSource, RecordsSource, SequenceSource
from .task import Task

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .state import State

#: Items a preview shows.
FIRST_ITEMS = 10
#: A count that takes too long is redone up to this many items.
COUNT_BOUND = 100_000
#: The most statements a preview sends, savepoints and the timeout's SET included.
MAX_STATEMENTS = 16

EXACT = "exact"
AT_LEAST = "at_least"
ESTIMATE = "estimate"
UNKNOWN = "unknown"


class TimedOut(Exception):
    """A statement of the preview ran past its timeout."""


class Refused(Exception):
    """The database refused a statement of the preview; its text is the preview's note."""


@dataclasses.dataclass
class Preview:
    """What a run of a task with these arguments would walk (see :func:`preview`)."""

    task_name: str
    #: The arguments as given, masked.
    arguments: dict[str, t.Any]
    #: Field errors of invalid arguments (then nothing else was looked at).
    errors: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: How many items; see :attr:`count_kind`.
    count: int | None = None
    #: ``exact``, ``at_least`` (a bounded count: more than :attr:`count`),
    #: ``estimate`` (the database planner's) or ``unknown``.
    count_kind: str = UNKNOWN
    #: The first items, described and masked as the failure ledger does.
    items: list[t.Any] = dataclasses.field(default_factory=list)
    #: The SQL of the first page of a ``Select`` collection.
    sql: str | None = None
    #: Why the count or the items could not be found, for people.
    notes: list[str] = dataclasses.field(default_factory=list)
    #: The task reads a CSV file given when the run starts.
    needs_file: bool = False
    #: Statements the preview sent (at most :data:`MAX_STATEMENTS`).
    statements: int = 0

    @property
    def valid(self) -> bool:
        return not self.errors

    def count_text(self) -> str:
        """``1,234 items``, ``more than 100,000 items``, ``about 5,000,000 items``..."""
        if self.count is None:
            return _("an unknown number of items")
        if self.count_kind == AT_LEAST:
            return _("more than %(num)s items", num=number(self.count))
        if self.count_kind == ESTIMATE:
            return ngettext(
                "about %(num)s item (the database's estimate)",
                "about %(num)s items (the database's estimate)",
                self.count,
            )
        return ngettext("%(num)s item", "%(num)s items", self.count)

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "task_name": self.task_name,
            "arguments": self.arguments,
            "valid": self.valid,
            "errors": self.errors,
            "count": self.count,
            "count_kind": self.count_kind,
            "count_text": self.count_text(),
            "items": self.items,
            "sql": self.sql,
            "notes": self.notes,
            "needs_file": self.needs_file,
        }


def preview(
    state: State, name: str, arguments: t.Mapping[str, t.Any], *, timeout: float | None = None
) -> Preview:
    """Look at what a run of task ``name`` with ``arguments`` would walk, writing nothing.

    :raises TaskNotFound: no such task. Invalid arguments are no error: the
        preview carries their messages in :attr:`Preview.errors`.
    """
    task_class = state.registry.get(name)
    masked_names = state.settings.masked_parameters
    shown = masking.mask(dict(arguments), task_class, masked_names)
    result = Preview(task_class.name, shown if isinstance(shown, dict) else {})
    try:
        task_class.validate_arguments(arguments)
        task = task_class(**arguments)
    except InvalidArguments as invalid:
        result.errors = invalid.errors
        return result
    secrets = masking.secret_values(dict(arguments), task_class, masked_names)
    session = t.cast("Session", state.db.session())  # the scoped session's own
    limit = timeout if timeout is not None else state.settings.preview_timeout
    # Everything happens in a savepoint of the caller's session, rolled back at the end:
    # the caller's own work stays as it was, and so does the transaction's timeout.
    callers = session.in_transaction()
    connection = session.connection()
    raw = connection.connection.dbapi_connection
    if connection.dialect.name == "sqlite" and not getattr(raw, "in_transaction", True):
        # pysqlite opens no transaction before a SAVEPOINT, whose RELEASE would then
        # commit whatever the task wrote.
        connection.exec_driver_sql("BEGIN")
    outer = session.begin_nested()
    try:
        with NoCommit(t.cast(sa.Engine, session.get_bind()), who="The preview's task"):
            with _Bounded(session, limit) as bounded:
                try:
                    _look(task, result, bounded)
                except Refused as refused:
                    result.notes.append(str(refused))
                result.statements = bounded.statements
    finally:
        if outer.is_active and callers:
            outer.rollback()
        else:  # nothing of the caller's to keep, or the task ended the transaction itself
            session.rollback()
    result.items = [
        masking.scrub_tree(masking.mask(item, task_class, masked_names), secrets)
        for item in result.items
    ]
    return result


def _described(error: BaseException) -> str:
    """``KeyError: 'x'``: an exception's class and message, as a note quotes it."""
    return f"{type(error).__name__}: {error}"


def _look(task: Task, result: Preview, bounded: _Bounded) -> None:
    arguments = type(task).dump_arguments(task.params)
    if sources.needs_file(type(task), arguments):
        result.needs_file = True
        result.notes.append(_("A CSV task: its items are the rows of the file given at the start."))
        return
    try:
        source = sources.source_of(task)
    except Exception as error:
        result.notes.append(
            _(
                "The collection could not be built: %(error)s",
                error=_described(error),
            )
        )
        return
    if isinstance(source, (RecordsSource, BatchesSource)):
        _look_at_select(source, result, bounded)
    elif isinstance(source, SequenceSource):
        result.count, result.count_kind = len(source.items), EXACT
        result.items = [source.describe(item) for item in source.items[:FIRST_ITEMS]]
    elif isinstance(source, OnceSource):
        result.count, result.count_kind = 1, EXACT
        result.notes.append(_("No collection: process() is called once."))
    else:
        _look_at_enumerator(task, source, result, bounded)


def _look_at_select(
    source: RecordsSource | BatchesSource, result: Preview, bounded: _Bounded
) -> None:
    keyset = source.keyset
    select = keyset.select
    of = source.spec.of if isinstance(source, BatchesSource) else None
    size = of or max(int(type(source.task).batch_size), 1)
    first_page = keyset.order(select).limit(size)
    result.sql = _sql(first_page, bounded.session)
    rows = _count(select, bounded, result)
    if of is not None and rows is not None:
        result.count = -(-rows // of)  # batches
        result.notes.append(
            _(
                "Counted in batches of %(of)s rows (%(rows)s rows).",
                of=number(of),
                rows=number(rows),
            )
        )
    try:
        first = keyset.order(select).limit(FIRST_ITEMS)
        if keyset.of_rows:  # rows of a Select of columns, described as the source does
            rows = bounded.run(lambda: bounded.session.execute(first).all())
            result.items = [source.describe(row) for row in rows]
        else:  # records, also of in_batches: the first rows, not the first batch
            records = bounded.run(lambda: bounded.session.scalars(first).all())
            result.items = [RecordsSource.describe(source, record) for record in records]
    except TimedOut:
        result.notes.append(_("The first items took longer than the preview's timeout."))


def _count(select: sa.Select[t.Any], bounded: _Bounded, result: Preview) -> int | None:
    """Count the rows of ``select``: exactly, else up to the bound, else by estimate."""
    session = bounded.session
    exact = sa.select(sa.func.count()).select_from(select.subquery())
    try:
        result.count = int(bounded.run(lambda: session.execute(exact).scalar_one()))
        result.count_kind = EXACT
        return result.count
    except TimedOut:
        pass
    capped = sa.select(sa.func.count()).select_from(select.limit(COUNT_BOUND + 1).subquery())
    try:
        counted = int(bounded.run(lambda: session.execute(capped).scalar_one()))
    except TimedOut:
        counted = None
    if counted is not None and counted <= COUNT_BOUND:
        result.count, result.count_kind = counted, EXACT  # quicker the second time
        return counted
    estimate = _estimate(select, bounded)
    if estimate is not None and (counted is None or estimate > COUNT_BOUND):
        result.count, result.count_kind = estimate, ESTIMATE
        result.notes.append(
            _("Counting took longer than the preview's timeout: this is the planner's estimate.")
        )
        return estimate
    if counted is not None:
        result.count, result.count_kind = COUNT_BOUND, AT_LEAST
        result.notes.append(
            _(
                "Counting took longer than the preview's timeout: there are more than "
                "%(num)s items.",
                num=number(COUNT_BOUND),
            )
        )
        return None
    result.notes.append(_("Counting took longer than the preview's timeout."))
    return None


def _estimate(select: sa.Select[t.Any], bounded: _Bounded) -> int | None:
    """The planner's estimate of the rows of ``select`` (PostgreSQL only)."""
    session = bounded.session
    if session.get_bind().dialect.name != "postgresql":
        return None
    compiled = select.compile(dialect=session.get_bind().dialect)
    try:
        plan = bounded.run(
            lambda: (
                session.connection()
                .exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params)
                .scalar_one()
            )
        )
    except TimedOut:
        return None
    try:
        return int(plan[0]["Plan"]["Plan Rows"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _look_at_enumerator(task: Task, source: t.Any, result: Preview, bounded: _Bounded) -> None:
    try:
        items = bounded.run(lambda: list(itertools.islice(source.iterate(None), FIRST_ITEMS)))
        result.items = [source.describe(item) for item, _ in items]
    except TimedOut:
        result.notes.append(_("The first items took longer than the preview's timeout."))
    except Exception as error:
        result.notes.append(
            _(
                "The first items could not be read: %(error)s",
                error=_described(error),
            )
        )
    if type(task).count is Task.count:
        result.notes.append(_("A collection of its own: its size is unknown until the run ends."))
        return
    try:
        counted = bounded.run(task.count)
    except TimedOut:
        result.notes.append(_("The task's count() took longer than the preview's timeout."))
        return
    except Exception as error:
        result.notes.append(_("The task's count() failed: %(error)s", error=_described(error)))
        return
    if isinstance(counted, int) and not isinstance(counted, bool):
        result.count, result.count_kind = counted, EXACT


def _sql(statement: sa.Select[t.Any], session: Session) -> str:
    dialect = session.get_bind().dialect
    try:
        return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    except Exception:
        return str(statement.compile(dialect=dialect))


class _Bounded:
    """Runs statements of one session, each cut off after ``timeout`` seconds, and counts them.

    On PostgreSQL through ``statement_timeout`` for the transaction; on
    SQLite through the connection's progress handler, which interrupts a
    statement past its deadline.
    """

    def __init__(self, session: Session, timeout: float) -> None:
        self.session = session
        self.timeout = timeout
        self.statements = 0
        self.deadline = 0.0
        self._dbapi: t.Any = None

    def __enter__(self) -> _Bounded:
        connection = self.session.connection()
        name = connection.dialect.name
        sa.event.listen(connection, "before_cursor_execute", self._counted)
        self._connection = connection
        if name == "postgresql":
            milliseconds = max(int(self.timeout * 1000), 1)
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
        elif name == "sqlite":
            self._dbapi = connection.connection.dbapi_connection
            self._dbapi.set_progress_handler(self._past_deadline, 10_000)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self._connection, "before_cursor_execute", self._counted)
        if self._dbapi is not None:
            self._dbapi.set_progress_handler(None, 0)

    def _counted(self, *args: t.Any) -> None:
        self.statements += 1

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0

    def run(self, work: t.Callable[[], t.Any]) -> t.Any:
        """``work()``; :class:`TimedOut` when one of its statements ran out of time."""
        self.deadline = time.monotonic() + self.timeout
        savepoint = self.session.begin_nested()
        try:
            value = work()
        except sa.exc.DBAPIError as error:
            if savepoint.is_active:
                savepoint.rollback()
            if _timed_out(error):
                raise TimedOut() from error
            # A value the database cannot take (a NUL byte on PostgreSQL, a pattern too
            # long for SQLite): what the preview says, not an error of the page.
            raise Refused(
                _(
                    "The database refused a statement of the preview: %(error)s.",
                    error=type(error.orig).__name__,
                )
            ) from error
        savepoint.rollback()
        return value


def _timed_out(error: sa.exc.DBAPIError) -> bool:
    if getattr(getattr(error, "orig", None), "sqlstate", None) == "57014":  # query_canceled
        return True
    return "interrupted" in str(error.orig).lower() or "statement timeout" in str(error).lower()
