"""Dry runs: what a run's ticks would write, counted before the database rolls it back.

A dry run processes every item for real inside a SAVEPOINT that spans the
tick; the tick ends by rolling back to it, and only the run's progress is
committed. While the slice iterates, a :class:`Capture` listens to the
session and its connection:

- every INSERT, UPDATE and DELETE on the session's connection (ORM flushes
  and Core statements alike) adds its row count to its table, and an UPDATE
  its columns;
- each ORM flush gives the first changes of attributes, before and after
  (the sample), masked like arguments;
- a commit asked for by the task is refused before it happens
  (:class:`DryRunCommit`), so a dry run never writes.

The counts of a tick join the run's :class:`Changes` when the tick's
progress is committed, so a tick replayed after a crash is counted once.
"""

from __future__ import annotations

import contextlib
import re
import threading
import typing as t

import sqlalchemy as sa

from .exceptions import DryRunCommit
from .i18n import gettext as _
from .i18n import ngettext

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Changes kept as a sample of what a dry run would do.
SAMPLE = 10
#: Longest value shown in the sample.
VALUE_LIMIT = 200
#: Our own tables: what the engine writes is not what the task would change.
OWN_PREFIX = "maintenance_tasks_"
_KINDS = ("inserted", "updated", "deleted")
#: The verb and table of DML written as SQL text.
_TEXT_DML = re.compile(
    r"\b(insert\s+(?:or\s+\w+\s+)?into|update|delete\s+from)\s+([\w.\"`\[\]]+)",
    re.IGNORECASE,
)
#: SQL text that may write: what starts with a verb that writes, or with a CTE.
_WRITES = re.compile(r"^\s*(with|insert|update|delete|replace|upsert)\b", re.IGNORECASE)
#: Comments of SQL text, left out before looking for its verb (it may follow a CTE).
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)


#: SQL text that ends the transaction: a dry run must never send it.
_TEXT_COMMIT = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(commit|end)\b", re.IGNORECASE | re.DOTALL)

COMMIT_REFUSED = (
    "committed the session during a dry run; the commit was stopped and nothing was "
    "written. A dry run needs every write in the tick's transaction: remove the commit "
    "(the engine commits each tick)."
)


_own_writes = threading.local()


@contextlib.contextmanager
def own_write() -> t.Iterator[None]:
    """Let the engine's own commit through a dry run's guard, in this thread, for the block.

    For writes of the engine's that are no change of the task's, such as the status
    a task publishes with ``now=True`` in a session of its own.
    """
    _own_writes.active = True
    try:
        yield
    finally:
        _own_writes.active = False


class NoCommit:
    """Refuses, in this thread, every commit on ``engine``'s connections: a dry run's guard.

    It listens at the connection's level, where a commit of the session, of its
    connection, and ``COMMIT`` sent as SQL all pass, before the database sees
    them; a savepoint's release is no commit and passes. ``allowed()`` lets the
    engine's own commits (a tick's progress) through.
    """

    def __init__(
        self,
        engine: sa.Engine,
        allowed: t.Callable[[], bool] = lambda: False,
        who: str = "process()",
    ) -> None:
        self.engine = engine
        self.allowed = allowed
        self.who = who
        self.thread = threading.get_ident()

    def __enter__(self) -> NoCommit:
        sa.event.listen(self.engine, "commit", self._commit)
        sa.event.listen(self.engine, "before_cursor_execute", self._statement)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "commit", self._commit)
        sa.event.remove(self.engine, "before_cursor_execute", self._statement)

    def _ours(self) -> bool:
        return (
            threading.get_ident() != self.thread
            or self.allowed()
            or getattr(_own_writes, "active", False)
        )

    def _commit(self, connection: sa.Connection) -> None:
        if not self._ours():
            raise DryRunCommit(f"{self.who} " + COMMIT_REFUSED)

    def _statement(
        self, connection: sa.Connection, cursor: t.Any, statement: str, *_: t.Any
    ) -> None:
        if not self._ours() and _TEXT_COMMIT.match(statement):
            raise DryRunCommit(f"{self.who} sent COMMIT as SQL: it " + COMMIT_REFUSED)


class Changes:
    """What a dry run would change: rows inserted, updated and deleted per table, the
    columns updated, and a sample of the first changes."""

    def __init__(self, stored: t.Any = None) -> None:
        self.tables: dict[str, dict[str, t.Any]] = {}
        self.sample: list[dict[str, t.Any]] = []
        if isinstance(stored, dict):
            for name, counts in (stored.get("tables") or {}).items():
                if isinstance(counts, dict):
                    table = self.table(str(name))
                    for kind in _KINDS:
                        table[kind] += int(counts.get(kind) or 0)
                    table["columns"].update(map(str, counts.get("columns") or ()))
            self.sample = [s for s in stored.get("sample") or () if isinstance(s, dict)][:SAMPLE]

    def table(self, name: str) -> dict[str, t.Any]:
        found = self.tables.get(name)
        if found is None:
            found = {"inserted": 0, "updated": 0, "deleted": 0, "columns": set()}
            self.tables[name] = found
        return found

    def add(self, other: Changes) -> None:
        for name, counts in other.tables.items():
            table = self.table(name)
            for kind in _KINDS:
                table[kind] += counts[kind]
            table["columns"].update(counts["columns"])
        room = SAMPLE - len(self.sample)
        if room > 0:
            self.sample.extend(other.sample[:room])

    def __bool__(self) -> bool:
        return bool(self.tables or self.sample)

    def as_json(self) -> dict[str, t.Any]:
        return {
            "tables": {
                name: {**{k: counts[k] for k in _KINDS}, "columns": sorted(counts["columns"])}
                for name, counts in sorted(self.tables.items())
            },
            "sample": list(self.sample),
        }


def summary(stored: t.Any) -> list[str]:
    """``Would update 12,345 rows of posts: title, slug``, one line per table and kind."""
    changes = Changes(stored)
    lines = []
    for name, counts in sorted(changes.tables.items()):
        for kind in _KINDS:
            count = counts[kind]
            if not count:
                continue
            line = _would(kind, count, name)
            if kind == "updated" and counts["columns"]:
                # Translators: a line of a dry run's summary and the columns it would update.
                line = _(
                    "%(line)s: %(columns)s", line=line, columns=", ".join(sorted(counts["columns"]))
                )
            lines.append(line)
    return lines or [_("Would change nothing in the database")]


def _would(kind: str, count: int, table: str) -> str:
    """ "Would insert 3 rows of posts": what a dry run would do to ``table``."""
    if kind == "inserted":
        return ngettext(
            "Would insert %(num)s row of %(table)s",
            "Would insert %(num)s rows of %(table)s",
            count,
            table=table,
        )
    if kind == "updated":
        return ngettext(
            "Would update %(num)s row of %(table)s",
            "Would update %(num)s rows of %(table)s",
            count,
            table=table,
        )
    return ngettext(
        "Would delete %(num)s row of %(table)s",
        "Would delete %(num)s rows of %(table)s",
        count,
        table=table,
    )


def _shown(value: t.Any) -> t.Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT] + " [...]"


class Capture:
    """Counts what one session writes while a dry run's slice iterates (see the module).

    ``mask(column, value)`` hides masked values in the sample. Use as a
    context manager around the slice's iteration; :meth:`tick` hands over
    the tick's changes when its progress is committed, :meth:`mark` and
    :meth:`drop_since` forget an item whose writes were undone.
    """

    def __init__(self, session: Session, mask: t.Callable[[str, t.Any], t.Any]) -> None:
        self.session = session
        self.engine = t.cast(sa.Engine, session.get_bind())
        self.mask = mask
        self.thread = threading.get_ident()
        self.pending = Changes()
        self.log: list[tuple[str, str, int, tuple[str, ...]]] = []
        self.sampled: list[dict[str, t.Any]] = []
        #: Our own commit of a tick's progress is let through, and not counted.
        self.committing = False
        #: The release of an item's savepoint (counted; no commit, so nothing to let through).
        self.releasing = False

    def __enter__(self) -> Capture:
        sa.event.listen(self.engine, "after_cursor_execute", self._executed)
        sa.event.listen(self.session, "before_flush", self._flushing)
        self.guard = NoCommit(self.engine, lambda: self.committing)
        self.guard.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "after_cursor_execute", self._executed)
        sa.event.remove(self.session, "before_flush", self._flushing)
        self.guard.__exit__(*exc)

    # -- what the listeners see -------------------------------------------

    def _executed(
        self,
        connection: sa.Connection,
        cursor: t.Any,
        statement: str,
        parameters: t.Any,
        context: t.Any,
        executemany: bool,
    ) -> None:
        if threading.get_ident() != self.thread or self.committing:
            return
        kind, table, columns = _dml(context, statement)
        if kind is None or table is None or table.startswith(OWN_PREFIX):
            return
        rowcount = getattr(cursor, "rowcount", -1)
        if (rowcount is None or rowcount < 0) and connection.dialect.name == "sqlite":
            # pysqlite counts no rows for SQL text starting with WITH; SQLite itself does.
            raw = connection.connection.dbapi_connection
            if raw is not None:
                rowcount = raw.execute("SELECT changes()").fetchone()[0]
        self.log.append((table, kind, max(int(rowcount or 0), 0), columns))

    def _flushing(self, session: Session, flush_context: t.Any, instances: t.Any) -> None:
        if len(self.sampled) >= SAMPLE:
            return
        for instance in _in_key_order(session.dirty):
            state = sa.inspect(instance)
            mapper = state.mapper
            table = getattr(mapper.persist_selectable, "name", type(instance).__name__)
            if table.startswith(OWN_PREFIX):
                continue
            # The key is masked as any value is: a key column may be named "token".
            key = [
                self.mask(column.name, value)
                for column, value in zip(mapper.primary_key, state.identity or (), strict=False)
            ]
            shown_key = key[0] if len(key) == 1 else key
            for attribute in mapper.column_attrs:
                history = state.attrs[attribute.key].history
                if not history.has_changes():
                    continue
                before = history.deleted[0] if history.deleted else None
                after = history.added[0] if history.added else None
                column = attribute.columns[0].name
                self.sampled.append(
                    {
                        "table": table,
                        "key": _shown(shown_key),
                        "column": column,
                        "before": _shown(self.mask(column, before)),
                        "after": _shown(self.mask(column, after)),
                    }
                )
                if len(self.sampled) >= SAMPLE:
                    return

    # -- ticks and items --------------------------------------------------

    def mark(self) -> tuple[int, int]:
        return len(self.log), len(self.sampled)

    def drop_since(self, mark: tuple[int, int]) -> None:
        """Forget what was seen since ``mark``: the item's writes were undone."""
        del self.log[mark[0] :]
        del self.sampled[mark[1] :]

    def tick(self) -> Changes:
        """The changes seen since the last tick, and start counting afresh."""
        changes = Changes()
        for table, kind, rows, columns in self.log:
            counts = changes.table(table)
            counts[kind] += rows
            if kind == "updated":
                counts["columns"].update(columns)
        changes.sample = self.sampled[:SAMPLE]
        self.log = []
        self.sampled = []
        return changes


def _in_key_order(instances: t.Iterable[t.Any]) -> list[t.Any]:
    """Changed instances in the order a reader expects: by class, then identity."""

    def key(instance: t.Any) -> tuple[str, str, t.Any]:
        identity = sa.inspect(instance).identity or ()
        return (type(instance).__name__, type(identity[0]).__name__ if identity else "", identity)

    listed = list(instances)
    try:
        return sorted(listed, key=key)
    except TypeError:  # identities that do not compare
        return listed


def _dml(context: t.Any, statement: str) -> tuple[str | None, str | None, tuple[str, ...]]:
    """The kind (``inserted``...), table and updated columns of a statement, if it writes."""
    compiled = getattr(context, "compiled", None)
    construct = getattr(compiled, "statement", None)
    table = getattr(construct, "table", None)
    if context.isinsert or context.isupdate or context.isdelete:
        kind = "inserted" if context.isinsert else "updated" if context.isupdate else "deleted"
        name = getattr(table, "name", None)
        columns: tuple[str, ...] = ()
        if kind == "updated" and table is not None:
            keys = set(getattr(compiled, "column_keys", None) or ())
            values = getattr(construct, "_values", None) or {}
            keys.update(getattr(k, "key", k) for k in values)
            columns = tuple(c.name for c in table.columns if c.key in keys)
        return kind, name, columns
    if construct is not None and not isinstance(construct, sa.TextClause):
        return None, None, ()  # a SELECT built with SQLAlchemy
    text = _COMMENTS.sub(" ", statement)
    if not _WRITES.match(text):
        return None, None, ()
    match = _TEXT_DML.search(text)
    if match is None:
        return None, None, ()
    verb = match.group(1).split()[0].lower()
    kind = {"insert": "inserted", "update": "updated", "delete": "deleted"}[verb]
    table = match.group(2).rsplit(".", 1)[-1]  # without its schema, as a Core table's name
    return kind, table.strip('"`[]'), ()
