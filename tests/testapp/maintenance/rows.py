"""Tasks over a ``Select`` of columns: ``process`` gets rows, not records.

Each writes with a Core ``UPDATE`` by the row's id, as a task without ORM
objects would; ``title == "bad"`` makes an item fail where the task says so.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from flask_maintenance_tasks import Task

from .. import Item, db

items = t.cast(sa.Table, Item.__table__)


def bump(item_id: int) -> None:
    db.session.execute(
        sa.update(Item).where(Item.id == item_id).values(counter=Item.counter + 1),
        execution_options={"synchronize_session": False},
    )


class RowsCountTask(Task):
    """Mapped attributes of one entity; the cursor is the default, the primary key."""

    batch_size = 7
    collection = sa.select(Item.id, Item.title)

    def process(self, row: sa.Row[t.Any]) -> None:
        bump(row.id)


class RowsByGroupTask(Task):
    """A two-column cursor whose leading column repeats (``group`` is the id modulo 3)."""

    batch_size = 4
    cursor_columns = (Item.group, Item.id)
    collection = sa.select(Item.title, Item.group, Item.id)

    def process(self, row: sa.Row[t.Any]) -> None:
        bump(row.id)


class CoreRowsTask(Task):
    """Core table columns, the cursor named."""

    batch_size = 5
    cursor_columns = ("id",)
    collection = sa.select(items.c.id, items.c.title).where(items.c.group != 1)

    def process(self, row: sa.Row[t.Any]) -> None:
        bump(row.id)


class SkipBadRowItemsTask(Task):
    """Skips the rows titled ``bad``, after writing (the write is undone with the row)."""

    error_policy = "skip"
    batch_size = 10
    collection = sa.select(Item.id, Item.title, Item.group)

    def process(self, row: sa.Row[t.Any]) -> None:
        bump(row.id)
        title = db.session.scalar(sa.select(Item.title).where(Item.id == row.id))
        if title == "bad":
            raise ValueError(f"row {row.id} is bad")


class RowsWithSecretTask(Task):
    """A column whose label is a masked name: its values never show."""

    collection = sa.select(Item.id, Item.title.label("secret_title"))

    def process(self, row: sa.Row[t.Any]) -> None:
        pass
