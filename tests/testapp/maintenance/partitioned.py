"""Tasks whose runs are cut into partitions."""

from __future__ import annotations

import time
import typing as t

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, in_batches

from .. import Item, db, flag
from .kinds import EVENTS


class PartitionedCountTask(Task):
    """Adds one to every item's counter, four partitions by default; may fail on a title."""

    partitions = 4

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0
        fail_on: str | None = None
        fail_every: int | None = None

    def collection(self) -> t.Any:
        if flag("partitioned-broken") == "yes":
            raise RuntimeError("the collection is broken")
        return sa.select(Item)

    def after_start(self) -> None:
        if flag("partitioned-start-fails") == "yes":
            raise RuntimeError("after_start refuses")

    def after_complete(self) -> None:
        if flag("partitioned-complete-fails") == "yes":
            raise RuntimeError("after_complete refuses")
        EVENTS.append(("completed", self.run.id if self.run else None, None))

    def process(self, item: Item) -> None:
        if self.params.sleep:
            time.sleep(self.params.sleep)
        if self.params.fail_on is not None and item.title == self.params.fail_on:
            raise ValueError(f"cannot process item {item.id}: its title is {item.title!r}")
        if self.params.fail_every and item.id % self.params.fail_every == 0:
            raise ValueError(f"item {item.id} fails, as every {self.params.fail_every}th does")
        item.counter += 1


class PartitionedBatchesTask(Task):
    """One UPDATE per batch of three items, cut into three partitions."""

    partitions = 3

    def collection(self) -> t.Any:
        return in_batches(sa.select(Item), of=3)

    def process(self, batch: t.Any) -> None:
        db.session.execute(batch.where(sa.update(Item).values(counter=Item.counter + 1)))


class PartitionedListTask(Task):
    """A list of 23 numbers, cut by index."""

    partitions = 5
    collection = list(range(100, 123))

    def process(self, number: int) -> None:
        EVENTS.append(("list", number, self.partition.index if self.partition else None))


class RangedSquaresTask(Task):
    """A custom enumerator that cuts its own ranges: squares of 1 to 20."""

    partitions = 3

    def partition_ranges(self, count: int) -> list[list[int]]:
        edges = [1 + 20 * i // count for i in range(count + 1)]
        return [[edges[i], edges[i + 1]] for i in range(count)]

    def enumerator(self, cursor: int | None) -> t.Iterator[tuple[int, int]]:
        low, high = self.partition.range if self.partition else (1, 21)
        for n in range(low if cursor is None else cursor + 1, high):
            yield n * n, n

    def process(self, square: int) -> None:
        EVENTS.append(("square", square))


class ParityCutTask(Task):
    """A list cut by the task itself: even numbers in one partition, odd in the other."""

    partitions = 2

    def partition_ranges(self, count: int) -> list[int]:
        return list(range(count))

    def collection(self) -> t.Any:
        numbers = range(1, 11)
        if self.partition is None:
            return list(numbers)
        return [n for n in numbers if n % self.partition.count == self.partition.range]

    def process(self, number: int) -> None:
        EVENTS.append(("ranged", number, self.partition.index if self.partition else None))


class UncuttableTask(Task):
    """A custom enumerator with no ranges of its own."""

    def enumerator(self, cursor: int | None) -> t.Iterator[tuple[int, int]]:
        yield from ((n, n) for n in range(0 if cursor is None else cursor + 1, 3))

    def process(self, number: int) -> None:
        EVENTS.append(number)


class LockOnCompleteTask(Task):
    """Its after_complete leaves SQLite's write lock to another connection for a while."""

    partitions = 2
    collection = [1, 2, 3, 4]

    def process(self, number: int) -> None:
        pass

    def after_complete(self) -> None:
        import sqlite3
        import threading

        EVENTS.append(("completed", self.run.id if self.run else None, None))
        held = threading.Event()
        path = str(db.engine.url.database)

        def hold() -> None:
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(0.8)
            connection.execute("ROLLBACK")
            connection.close()

        threading.Thread(target=hold, daemon=True).start()
        held.wait(5)
