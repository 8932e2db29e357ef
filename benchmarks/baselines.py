"""Hand-written loops doing what the benchmark tasks do, the way one would write them without
the framework: keyset pagination on the primary key, a commit about once per second.

They are what the framework is measured against, so they are written to be fast: the session
keeps loaded rows across commits (as the framework's job does), and the clock is read once per
page, not per row.
"""

from __future__ import annotations

import time
import typing as t

import sqlalchemy as sa

from .benchapp import Row

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Seconds between commits, as the framework's default ticker delay.
COMMIT_EVERY = 1.0


def each_row(session: Session, batch_size: int, work: t.Callable[[Row], None]) -> int:
    """Call ``work(row)`` on every row, ``batch_size`` rows per query; returns the rows seen."""
    expire = session.expire_on_commit
    session.expire_on_commit = False
    try:
        done = 0
        last: int | None = None
        commit_at = time.monotonic() + COMMIT_EVERY
        while True:
            query = sa.select(Row).order_by(Row.id).limit(batch_size)
            if last is not None:
                query = query.where(Row.id > last)
            page = session.scalars(query).all()
            for row in page:
                work(row)
            done += len(page)
            if time.monotonic() >= commit_at:
                session.commit()
                commit_at = time.monotonic() + COMMIT_EVERY
            if len(page) < batch_size:
                break
            last = page[-1].id
        session.commit()
        return done
    finally:
        session.expire_on_commit = expire


def each_column_row(session: Session, batch_size: int) -> int:
    """Read ``id`` and ``title`` of every row as Core rows, ``batch_size`` per query, and do
    nothing with them; returns the rows seen."""
    done = 0
    last: int | None = None
    commit_at = time.monotonic() + COMMIT_EVERY
    columns = sa.select(Row.id, Row.title).order_by(Row.id).limit(batch_size)
    while True:
        query = columns if last is None else columns.where(Row.id > last)
        page = session.execute(query).all()
        for row in page:
            nothing(row)
        done += len(page)
        if time.monotonic() >= commit_at:
            session.commit()
            commit_at = time.monotonic() + COMMIT_EVERY
        if len(page) < batch_size:
            break
        last = page[-1].id
    session.commit()
    return done


def each_row_savepointed(
    session: Session, batch_size: int, work: t.Callable[[Row], None], upto: int | None = None
) -> int:
    """:func:`each_row` with each ``work(row)`` in a SAVEPOINT, as the ``skip`` policy runs it.

    With ``upto``, only the rows with ids up to it.

    An error would roll back to the savepoint, undoing that row's writes only. No row fails
    here: this is the price of the savepoints alone. On SQLite a ``BEGIN`` is sent at the
    start of each transaction, as the framework does: pysqlite opens none before a
    ``SAVEPOINT``, which would then be the transaction, and its ``RELEASE`` would commit.
    """
    begin_first = session.get_bind().dialect.name == "sqlite"

    def begin() -> None:
        if begin_first:
            connection = session.connection()
            if not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
                connection.exec_driver_sql("BEGIN")

    expire = session.expire_on_commit
    session.expire_on_commit = False
    begin_nested = session.begin_nested
    try:
        done = 0
        last: int | None = None
        commit_at = time.monotonic() + COMMIT_EVERY
        begin()
        while True:
            query = sa.select(Row).order_by(Row.id).limit(batch_size)
            if upto is not None:
                query = query.where(Row.id <= upto)
            if last is not None:
                query = query.where(Row.id > last)
            page = session.scalars(query).all()
            for row in page:
                with begin_nested():
                    work(row)
            done += len(page)
            if time.monotonic() >= commit_at:
                session.commit()
                begin()
                commit_at = time.monotonic() + COMMIT_EVERY
            if len(page) < batch_size:
                break
            last = page[-1].id
        session.commit()
        return done
    finally:
        session.expire_on_commit = expire


def nothing(row: Row) -> None:
    pass


def touch(row: Row) -> None:
    row.counter += 1


def update_in_batches(session: Session, batch_size: int) -> int:
    """One ``UPDATE ... WHERE id IN (...)`` per batch of ids; returns the rows seen."""
    done = 0
    last: int | None = None
    commit_at = time.monotonic() + COMMIT_EVERY
    while True:
        query = sa.select(Row.id).order_by(Row.id).limit(batch_size)
        if last is not None:
            query = query.where(Row.id > last)
        ids = session.scalars(query).all()
        if not ids:
            break
        session.execute(sa.update(Row).where(Row.id.in_(ids)).values(counter=Row.counter + 1))
        done += len(ids)
        if time.monotonic() >= commit_at:
            session.commit()
            commit_at = time.monotonic() + COMMIT_EVERY
        if len(ids) < batch_size:
            break
        last = ids[-1]
    session.commit()
    return done
