"""Keyset pagination over a ``Select``, and the cursor values it stores.

The ``Select`` is of one ORM entity (its pages are records) or of columns (its
pages are rows, :class:`sqlalchemy.Row`). A page is one query ordered by the
cursor columns, with a row-value comparison on the last position seen; a
cursor is the JSON form of those columns' values (a single value, or a list
for several columns).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import itertools
import json
import operator
import typing as t
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import ColumnProperty, InstrumentedAttribute, Mapper
from sqlalchemy.orm.util import AliasedInsp
from sqlalchemy.sql import Select

from ..exceptions import ConfigurationError
from .base import Cursor, Item

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..task import Task


class Batch:
    """Up to ``of`` rows of an ``in_batches`` collection, by primary key."""

    def __init__(
        self,
        entity: type[t.Any],
        primary_key: t.Sequence[sa.ColumnElement[t.Any]],
        ids: list[t.Any],
    ):
        self.entity = entity
        self._pk = list(primary_key)
        #: The primary keys of the batch (tuples for a composite key).
        self.ids = ids
        #: The cursors of its first and last rows (what the failure ledger keeps of it).
        self.first: Cursor = None
        self.last: Cursor = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"<Batch of {len(self.ids)} {self.entity.__name__}>"

    def condition(self) -> sa.ColumnElement[bool]:
        """``primary key IN (ids)``."""
        if len(self._pk) == 1:
            return self._pk[0].in_(self.ids)
        return sa.tuple_(*self._pk).in_(self.ids)

    def select(self) -> Select[t.Any]:
        """A ``SELECT`` of the batch's records."""
        return sa.select(self.entity).where(self.condition())

    def where(self, statement: t.Any) -> t.Any:
        """Restrict an ``UPDATE``, ``DELETE`` or ``SELECT`` to the batch."""
        return statement.where(self.condition())


def _encode(value: t.Any) -> t.Any:
    if value is None:
        raise ValueError(
            "Cursor position cannot contain NULL values; choose non-null cursor_columns."
        )
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    return value


def _decode(value: t.Any, python_type: type[t.Any] | None) -> t.Any:
    if value is None or python_type is None or isinstance(value, python_type):
        return value
    if python_type is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if python_type is dt.date:
        return dt.date.fromisoformat(value)
    if python_type is dt.time:
        return dt.time.fromisoformat(value)
    if python_type in (decimal.Decimal, uuid.UUID):
        return python_type(value)
    return value


#: Python types whose values are stored in a cursor as they are.
_JSON_NATIVE = (int, str, float, bool)


@dataclasses.dataclass(frozen=True)
class _Key:
    expression: sa.ColumnElement[t.Any] | InstrumentedAttribute[t.Any]
    attribute: str
    python_type: type[t.Any] | None
    #: The column cannot hold NULL (a primary key, or declared ``nullable=False``).
    not_null: bool = False
    #: Where the column is in the rows of a ``Select`` of columns (``None``: records).
    position: int | None = None

    @property
    def stored_as_is(self) -> bool:
        """Its values go into a cursor unchanged, and are never NULL: no per-row check needed."""
        return self.not_null and self.python_type in _JSON_NATIVE


def selects_columns(select: t.Any) -> bool:
    """Whether ``select`` is a ``Select`` of columns (rows), not of ORM entities (records)."""
    if not isinstance(select, Select):
        return False
    return not any(_is_entity(d.get("expr")) for d in select.column_descriptions)


def _is_entity(expression: t.Any) -> bool:
    if isinstance(expression, type):
        return True
    return isinstance(sa.inspect(expression, raiseerr=False), (Mapper, AliasedInsp))


def _python_type(column: t.Any) -> type[t.Any] | None:
    try:
        return t.cast(type, column.type.python_type)
    except (NotImplementedError, AttributeError):
        return None


class Keyset:
    """Keyset pagination over a ``Select`` of one ORM entity."""

    def __init__(self, task: Task, select: Select[t.Any], what: str, *, rows: bool) -> None:
        name = type(task).name
        if not isinstance(select, Select):
            raise ConfigurationError(f"{name}: {what} must be an SQLAlchemy Select.")
        if select._order_by_clauses:
            raise ConfigurationError(
                f"{name}#collection cannot use ORDER BY: rows are ordered by cursor_columns "
                "(default: the primary key). Remove .order_by() and set cursor_columns instead."
            )
        if select._limit_clause is not None or select._offset_clause is not None:
            raise ConfigurationError(
                f"{name}#collection cannot use LIMIT or OFFSET: the collection is paginated "
                "by keyset."
            )
        descriptions = select.column_descriptions
        #: Pages are rows of columns, not records: a ``Select`` of columns, item by item.
        self.of_rows = rows and selects_columns(select)
        if self.of_rows:
            self.select = select
            first = descriptions[0].get("entity") if descriptions else None
            #: The entity of the first column, if any (pages are rows all the same).
            self.entity: t.Any = first if isinstance(first, type) else None
            self.primary_key = []
            self.keys = self._row_keys(name, select, type(task).cursor_columns)
            return
        entity = descriptions[0].get("entity") if len(descriptions) == 1 else None
        if not isinstance(entity, type):
            raise ConfigurationError(
                f"{name}#collection must select exactly one ORM entity, e.g. sa.select(Post), "
                "or columns, e.g. sa.select(Post.id, Post.title)."
            )
        self.select = select
        self.entity = entity
        mapper: Mapper[t.Any] = sa.inspect(self.entity)
        self.primary_key = list(mapper.primary_key)
        self.keys = self._keys(name, mapper, type(task).cursor_columns)

    def _keys(
        self, name: str, mapper: Mapper[t.Any], columns: t.Sequence[t.Any] | None
    ) -> list[_Key]:
        if not columns:
            return [
                _Key(col, mapper.get_property_by_column(col).key, _python_type(col), True)
                for col in mapper.primary_key
            ]
        keys = []
        for column in columns:
            if isinstance(column, str):
                attr = getattr(self.entity, column, None)
                if not isinstance(attr, InstrumentedAttribute) or not isinstance(
                    attr.property, ColumnProperty
                ):
                    raise ConfigurationError(
                        f"{name}.cursor_columns: {column!r} is not a mapped column of "
                        f"{self.entity.__name__}."
                    )
                column = attr
            if (
                not isinstance(column, InstrumentedAttribute)
                or not isinstance(column.property, ColumnProperty)
                or not isinstance(column.class_, type)
                or not issubclass(self.entity, column.class_)
            ):
                raise ConfigurationError(
                    f"{name}.cursor_columns must hold column names or mapped column attributes "
                    f"of {self.entity.__name__}, not {column!r}."
                )
            expression = t.cast("sa.ColumnElement[t.Any]", column)
            prop_column = column.property.columns[0]
            not_null = not getattr(prop_column, "nullable", True)
            keys.append(_Key(expression, column.key, _python_type(prop_column), not_null))
        return keys

    def _row_keys(
        self, name: str, select: Select[t.Any], columns: t.Sequence[t.Any] | None
    ) -> list[_Key]:
        """The keys of a ``Select`` of columns, each found among the selected columns.

        The default is the primary key of the one table the select reads from; a select
        reading from several tables (a join) must name its cursor columns, unique together.
        """
        selected = list(select.selected_columns)
        if not columns:
            froms = select.get_final_froms()
            if not froms:
                raise ConfigurationError(
                    f"{name}#collection must select exactly one ORM entity, e.g. "
                    "sa.select(Post), or columns of a table, e.g. sa.select(Post.id, Post.title)."
                )
            if len(froms) != 1 or isinstance(froms[0], sa.Join):
                raise ConfigurationError(
                    f"{name}#collection selects from several tables: set {name}.cursor_columns "
                    "to selected columns that are unique together in its rows, e.g. the "
                    "primary key of the table with one row per result row."
                )
            wanted: list[t.Any] = list(froms[0].primary_key)
            if not wanted:
                raise ConfigurationError(
                    f"{name}#collection reads from {froms[0]} which has no primary key: "
                    f"set {name}.cursor_columns."
                )
        else:
            wanted = list(columns)
        keys, missing = [], []
        for column in wanted:
            position = _position(name, selected, column)
            if position is None:
                missing.append(_column_name(column))
                continue
            found = selected[position]
            expression = found.element if isinstance(found, sa.Label) else found
            not_null = getattr(expression, "nullable", True) is False
            keys.append(
                _Key(expression, str(found.key), _python_type(expression), not_null, position)
            )
        if missing:
            given = "cursor_columns" if columns else "cursor_columns (default: the primary key)"
            raise ConfigurationError(
                f"{name}#collection must select its {given}; missing: {', '.join(missing)}. "
                "Add them to the select."
            )
        return keys

    def cursor_of(self, row: t.Any) -> Cursor:
        if self.of_rows:
            values = [_encode(row[key.position]) for key in self.keys]
        else:
            values = [_encode(getattr(row, key.attribute)) for key in self.keys]
        return values[0] if len(values) == 1 else values

    def _page_cursors(self) -> t.Callable[[t.Sequence[t.Any]], list[Cursor]]:
        """A function giving the cursors of a page of records, in one pass over the page.

        The cursors are read when the page arrives, before ``process`` sees a record, so a
        task changing a cursor column cannot move its own position. Where every key column is
        a non-null int, str, float or bool, the values need neither encoding nor a NULL check,
        and one C-level pass reads them.
        """
        if self.of_rows:
            return self._row_page_cursors()
        if len(self.keys) == 1 and self.keys[0].stored_as_is:
            name = self.keys[0].attribute

            def read_one(page: t.Sequence[t.Any]) -> list[Cursor]:
                try:
                    # What the attribute would return, read without its descriptor.
                    return [record.__dict__[name] for record in page]
                except KeyError:  # deferred or expired: the attribute loads it
                    return [getattr(record, name) for record in page]

            return read_one
        if all(key.stored_as_is for key in self.keys):
            read = operator.attrgetter(*(key.attribute for key in self.keys))
            return lambda page: list(map(read, page))
        cursor_of = self.cursor_of
        return lambda page: [cursor_of(record) for record in page]

    def _row_page_cursors(self) -> t.Callable[[t.Sequence[t.Any]], list[Cursor]]:
        """:meth:`_page_cursors` for rows: the key values taken by position from each row."""
        if all(key.stored_as_is for key in self.keys):
            # One C-level pass; several keys give tuples, stored as JSON lists.
            read = operator.itemgetter(*(t.cast(int, key.position) for key in self.keys))
            return lambda page: list(map(read, page))
        cursor_of = self.cursor_of
        return lambda page: [cursor_of(row) for row in page]

    def _row_fetcher(self, session: Session) -> t.Callable[[Select[t.Any]], t.Any]:
        """Run a page of rows on the session's connection, as Core: ``Session.execute`` would
        hand each row through the ORM's loading, a Python call per row for nothing, since
        rows of columns carry no ORM objects.

        What ``Session.execute`` does first is kept: the autoflush of pending changes, and
        the engine the session would choose for the select (its entity, its tables).
        """
        bind: dict[str, t.Any] = {"clause": self.select}
        if self.entity is not None:
            bind["mapper"] = sa.inspect(self.entity)

        def fetch(statement: Select[t.Any]) -> t.Any:
            if session.autoflush:
                session.flush()
            return session.connection(bind_arguments=bind).execute(statement)

        return fetch

    def after(self, statement: Select[t.Any], cursor: Cursor) -> Select[t.Any]:
        if cursor is None:
            return statement
        values = list(cursor) if isinstance(cursor, (list, tuple)) else [cursor]
        if len(values) != len(self.keys):
            raise ValueError(
                f"The saved cursor {cursor!r} does not match cursor_columns "
                f"({len(self.keys)} column(s)); was cursor_columns changed during the run?"
            )
        decoded = [_decode(v, k.python_type) for v, k in zip(values, self.keys, strict=True)]
        if len(self.keys) == 1:
            return statement.where(self.keys[0].expression > decoded[0])
        return statement.where(sa.tuple_(*(k.expression for k in self.keys)) > sa.tuple_(*decoded))

    def order(self, statement: Select[t.Any]) -> Select[t.Any]:
        return statement.order_by(*(k.expression for k in self.keys))

    def count(self, session: Session) -> int:
        subquery = self.select.subquery()
        return int(session.execute(sa.select(sa.func.count()).select_from(subquery)).scalar_one())

    def records(
        self, session: Session, cursor: Cursor, size: int
    ) -> t.Iterator[tuple[Item, Cursor]]:
        # Chaining the pages' zips leaves no Python frame between the loop and a record.
        return itertools.chain.from_iterable(self._pages(session, cursor, size))

    def _pages(
        self, session: Session, cursor: Cursor, size: int
    ) -> t.Iterator[t.Iterator[tuple[Item, Cursor]]]:
        page_cursors = self._page_cursors()
        fetch = self._row_fetcher(session) if self.of_rows else session.scalars
        # Ordered and limited once: a page adds only its WHERE (half the statement building).
        first_page = self.order(self.select).limit(size)
        while True:
            page = fetch(self.after(first_page, cursor)).all()
            if not page:
                return
            cursors = page_cursors(page)
            yield zip(page, cursors, strict=True)
            if len(page) < size:
                return
            cursor = cursors[-1]

    def batches(
        self, session: Session, cursor: Cursor, size: int
    ) -> t.Iterator[tuple[Batch, Cursor]]:
        # Select the cursor columns, then the primary key columns that are not
        # among them (by default the primary key is the cursor: one column).
        key_columns = [_column_of(k.expression) for k in self.keys]
        columns: list[t.Any] = [k.expression for k in self.keys]
        pk_at = []
        for column in self.primary_key:
            found = [i for i, key in enumerate(key_columns) if key is column]
            if found:
                pk_at.append(found[0])
            else:
                pk_at.append(len(columns))
                columns.append(column)
        n_keys = len(self.keys)
        base = self.select.with_only_columns(*columns, maintain_column_froms=True)
        # The batch's condition names the mapped attributes, not the table's columns: only
        # then can an ORM UPDATE of the batch synchronise the session by evaluating it, where
        # it would otherwise fetch every changed key back (RETURNING) to do so.
        mapper: Mapper[t.Any] = sa.inspect(self.entity)
        pk_attributes = [
            getattr(self.entity, mapper.get_property_by_column(column).key)
            for column in self.primary_key
        ]
        while True:
            statement = self.order(self.after(base, cursor)).limit(size)
            if len(columns) == 1:
                ids: list[t.Any] = list(session.scalars(statement).all())
                if not ids:
                    return
                first, cursor = _encode(ids[0]), _encode(ids[-1])
            else:
                rows = session.execute(statement).all()
                if not rows:
                    return
                if len(pk_at) == 1:
                    ids = [row[pk_at[0]] for row in rows]
                else:
                    ids = [tuple(row[i] for i in pk_at) for row in rows]
                last = [_encode(v) for v in rows[-1][:n_keys]]
                cursor = last[0] if n_keys == 1 else last
                head = [_encode(v) for v in rows[0][:n_keys]]
                first = head[0] if n_keys == 1 else head
            batch = Batch(self.entity, pk_attributes, ids)
            batch.first, batch.last = first, cursor
            yield batch, cursor
            if len(ids) < size:
                return

    def _decoded(self, cursor: Cursor) -> list[t.Any] | None:
        """A stored cursor's values, decoded; ``None`` when it does not fit the key columns."""
        values = list(cursor) if isinstance(cursor, (list, tuple)) else [cursor]
        if len(values) != len(self.keys) or any(v is None for v in values):
            return None
        try:
            return [_decode(v, k.python_type) for v, k in zip(values, self.keys, strict=True)]
        except (TypeError, ValueError, decimal.InvalidOperation):
            return None

    def _key_expression(self) -> t.Any:
        if len(self.keys) == 1:
            return self.keys[0].expression
        return sa.tuple_(*(k.expression for k in self.keys))

    def find_records(self, session: Session, cursors: t.Sequence[Cursor]) -> dict[str, Item]:
        """The records of the collection at these cursors (one query), by :func:`cursor_text`."""
        values = [v for v in map(self._decoded, cursors) if v is not None]
        if not values:
            return {}
        if len(self.keys) == 1:
            condition = self.keys[0].expression.in_([v[0] for v in values])
        else:
            condition = self._key_expression().in_([sa.tuple_(*v) for v in values])
        fetch = session.execute if self.of_rows else session.scalars
        records = fetch(self.order(self.select.where(condition))).all()
        return {cursor_text(self.cursor_of(record)): record for record in records}

    def batch_between(self, session: Session, first: Cursor, last: Cursor) -> Batch | None:
        """The rows of the collection from cursor ``first`` to ``last``, both included."""
        low, high = self._decoded(first), self._decoded(last)
        if low is None or high is None:
            return None
        key = self._key_expression()
        if len(self.keys) == 1:
            condition = sa.and_(key >= low[0], key <= high[0])
        else:
            condition = sa.and_(key >= sa.tuple_(*low), key <= sa.tuple_(*high))
        mapper: Mapper[t.Any] = sa.inspect(self.entity)
        pk_attributes = [
            getattr(self.entity, mapper.get_property_by_column(column).key)
            for column in self.primary_key
        ]
        statement = self.order(
            self.select.with_only_columns(*pk_attributes, maintain_column_froms=True).where(
                condition
            )
        )
        rows = session.execute(statement).all()
        if not rows:
            return None
        ids = [row[0] if len(pk_attributes) == 1 else tuple(row) for row in rows]
        batch = Batch(self.entity, pk_attributes, ids)
        batch.first, batch.last = first, last
        return batch

    # -- partitions ----------------------------------------------------------

    def keys_at(self, session: Session, rows: int, places: t.Sequence[int]) -> dict[int, Cursor]:
        """The cursors of the rows at ``places`` in key order (from 1), by place.

        One statement whatever the size: ``percentile_disc`` on PostgreSQL for
        a one-column key, a window over the key order elsewhere (an index walk
        where an index covers the key). ``rows`` is the collection's count.
        """
        wanted = sorted({place for place in places if 1 <= place <= rows})
        if not wanted:
            return {}
        columns = [key.expression for key in self.keys]
        inner = self.select.with_only_columns(*columns, maintain_column_froms=True).subquery()
        keyed = list(inner.c)
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql" and len(keyed) == 1:
            # The value at place p: the first whose cumulative share reaches (p - 1/2) / rows.
            shares = [(place - 0.5) / rows for place in wanted]
            quantiles = sa.func.percentile_disc(
                sa.literal(shares, sa.ARRAY(sa.Float))
            ).within_group(keyed[0])
            values = session.execute(sa.select(quantiles)).scalar_one()
            found = [[value] for value in values]
            places = list(wanted)
        else:
            place = sa.func.row_number().over(order_by=keyed).label("place")
            numbered = sa.select(*keyed, place).subquery()
            rows_found = session.execute(
                sa.select(*numbered.c)
                .where(numbered.c.place.in_(wanted))
                .order_by(numbered.c.place)
            ).all()
            # Rows deleted since the count leave some places out: the caller does without them.
            found = [list(row)[: len(keyed)] for row in rows_found]
            places = [int(row[-1]) for row in rows_found]
        cursors = [
            _encode(values[0]) if len(values) == 1 else [_encode(v) for v in values]
            for values in found
        ]
        return dict(zip(places, cursors, strict=True))

    def within(self, until: Cursor) -> Keyset:
        """This keyset, its rows ending at key ``until`` (included); ``None``: no end."""
        if until is None:
            return self
        values = self._decoded(until)
        if values is None:
            raise ValueError(
                f"The partition's end {until!r} does not match cursor_columns "
                f"({len(self.keys)} column(s)); was cursor_columns changed during the run?"
            )
        bounded = copy.copy(self)
        if len(self.keys) == 1:
            condition = self.keys[0].expression <= values[0]
        else:
            condition = self._key_expression() <= sa.tuple_(*values)
        bounded.select = self.select.where(condition)
        return bounded


def cursor_text(cursor: Cursor) -> str:
    """A cursor as text, to compare the JSON stored in the ledger with a record's."""
    return json.dumps(cursor, default=str)


def _position(name: str, selected: list[t.Any], column: t.Any) -> int | None:
    """Where ``column`` (a name, a mapped attribute, a column) is among ``selected``."""
    if isinstance(column, str):
        for position, candidate in enumerate(selected):
            if candidate.key == column:
                return position
        return None
    element = column.__clause_element__() if hasattr(column, "__clause_element__") else column
    if not isinstance(element, sa.ColumnElement):
        raise ConfigurationError(
            f"{name}.cursor_columns must hold column names or columns of the collection's "
            f"select, not {column!r}."
        )
    for position, candidate in enumerate(selected):
        if candidate is element or candidate.shares_lineage(element):
            return position
    return None


def _column_name(column: t.Any) -> str:
    if isinstance(column, str):
        return repr(column)
    table = getattr(_column_of(column), "table", None)
    key = getattr(column, "key", None) or str(column)
    table_name = getattr(table, "name", None)
    return f"{table_name}.{key}" if table_name else str(key)


def _column_of(expression: t.Any) -> t.Any:
    """The table column behind a mapped attribute (or the column itself)."""
    prop = getattr(expression, "property", None)
    return prop.columns[0] if prop is not None and hasattr(prop, "columns") else expression
