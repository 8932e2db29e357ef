"""The test app's rows: items seeded for a task to walk, counters and runs read back,
and snapshots of the extension's tables to compare and restore."""

from __future__ import annotations

import contextlib
import threading
import typing as t

import sqlalchemy as sa


def seed_items(count: int, **fields: t.Any) -> None:
    """Insert ``count`` items titled ``item-<n>``; ``fields`` override columns."""
    from tests.testapp import Item, db

    db.session.execute(
        sa.insert(Item),
        [
            {"title": f"item-{n}", "group": n % 3, "counter": 0, **fields}
            for n in range(1, count + 1)
        ],
    )
    db.session.commit()


def counters() -> list[int]:
    """Every item's counter, in id order, read on a fresh session."""
    from tests.testapp import Item, db

    db.session.remove()
    return list(db.session.scalars(sa.select(Item.counter).order_by(Item.id)))


def fresh_run(run_id: int) -> t.Any:
    """The run as stored now."""
    from tests.testapp import mtasks

    return mtasks.get_run(run_id)


def age(*run_ids: int, seconds: float) -> None:
    """Move the last change of these runs (and of their partitions) ``seconds`` into the past."""
    from datetime import timedelta

    from flask_maintenance_tasks.models import runs_table, utcnow
    from tests.testapp import db

    c = runs_table.c
    with db.engine.begin() as connection:
        connection.execute(
            runs_table.update()
            .where(sa.or_(c.id.in_(run_ids), c.parent_id.in_(run_ids)))
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def trail(run_id: int) -> list[tuple[str, str, str | None]]:
    """The run's audit trail as ``(action, outcome, actor)``, oldest first, read afresh."""
    from flask_maintenance_tasks.models import Event
    from tests.testapp import db

    db.session.remove()
    rows = db.session.execute(
        sa.select(Event.action, Event.outcome, Event.actor)
        .where(Event.run_id == run_id)
        .order_by(Event.id)
    ).all()
    return [tuple(row) for row in rows]


def assert_trail_agrees(run_id: int) -> None:
    """Replaying the run's ``done`` events from its first status (``enqueued``, or
    ``scheduled`` for a run started at a set time) ends in the run's status."""
    from flask_maintenance_tasks.transitions import TRANSITIONS

    status = "enqueued" if fresh_run(run_id).scheduled_at is None else "scheduled"
    # (Some events change no status: a CSV downloaded, a run cut, a speed set.)
    changes_status = {tr.event for tr in TRANSITIONS} - {"started"}
    for action, outcome, _ in trail(run_id):
        if outcome != "done" or action not in changes_status:
            continue
        applied = [tr for tr in TRANSITIONS if tr.event == action and tr.leaves_from(status)]
        assert applied, (run_id, action, status, trail(run_id))
        status = (applied[0].target or status).__str__()
    run = fresh_run(run_id)
    assert status == run.status, (run_id, run.status, trail(run_id))


#: The extension's tables as :func:`snapshot` saw them: each table's rows, in key order.
Snapshot = dict[str, list[dict[str, t.Any]]]


def snapshot(engine: sa.Engine) -> Snapshot:
    """Every row of every table of the extension (``flask_maintenance_tasks.models.Base``)."""
    from flask_maintenance_tasks.models import Base

    with engine.connect() as connection:
        return {
            table.name: [
                dict(row)
                for row in connection.execute(
                    sa.select(table).order_by(*table.primary_key.columns)
                ).mappings()
            ]
            for table in Base.metadata.sorted_tables
        }


def restore(engine: sa.Engine, saved: Snapshot) -> None:
    """Put the extension's tables back as :func:`snapshot` saw them (ids included)."""
    from flask_maintenance_tasks.models import Base

    tables = Base.metadata.sorted_tables
    with engine.begin() as connection:
        for table in reversed(tables):
            connection.execute(table.delete())
        for table in tables:
            if saved[table.name]:
                connection.execute(table.insert(), saved[table.name])


@contextlib.contextmanager
def row_held(engine: sa.Engine, run_id: int, longest: float = 10.0) -> t.Iterator[None]:
    """Hold the run's row lock (SQLite: the write lock) in another transaction.

    A thread holds it until the block ends, or for ``longest`` seconds: an
    action that waited for it would then fail its time bound, not hang.
    """
    from flask_maintenance_tasks.models import runs_table

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.connect() as connection:
            connection.execute(
                sa.update(runs_table)
                .where(runs_table.c.id == run_id)
                .values(lock_version=runs_table.c.lock_version)
            )
            held.set()
            release.wait(longest)
            connection.rollback()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10), "the row could not be locked"
    try:
        yield
    finally:
        release.set()
        holder.join(10)
