"""Tasks of the unit tests: misdeclared collections and failing callbacks."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from flask_maintenance_tasks import Task

from .. import Item
from .kinds import EVENTS


class UnitOrderedItemsTask(Task):
    """Its Select carries ORDER BY, which keyset pagination cannot honour."""

    def collection(self) -> t.Any:
        return sa.select(Item).order_by(Item.title)

    def process(self, item: Item) -> None:
        item.counter += 1


class UnitFailingStartTask(Task):
    """``after_start`` raises: the run errors before the first item."""

    collection = [1, 2]

    def process(self, n: int) -> None:
        EVENTS.append(("process", n))

    def after_start(self) -> None:
        raise RuntimeError("after_start went wrong")


class UnitFailingAfterErrorTask(Task):
    """``process`` raises, then so does ``after_error``."""

    collection = [1]

    def process(self, n: int) -> None:
        raise ValueError(f"cannot process {n}")

    def after_error(self, error: BaseException) -> None:
        EVENTS.append(("after_error", str(error)))
        raise RuntimeError("after_error went wrong too")
