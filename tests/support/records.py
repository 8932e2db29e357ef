"""The test app's rows: items seeded for a task to walk, counters and runs read back."""

from __future__ import annotations

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
