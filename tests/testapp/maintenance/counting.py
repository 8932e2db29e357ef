"""Tasks that count how often each row is processed, for the guarantees."""

from __future__ import annotations

import time
import typing as t

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, in_batches, throttle_on

from .. import Item, db, flag


class CountItemsTask(Task):
    """Adds one to ``counter`` of every item, optionally slowly, optionally failing."""

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0
        #: The title of an item that makes ``process`` raise.
        fail_on: str | None = None

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        if self.params.fail_on is not None and item.title == self.params.fail_on:
            raise ValueError(f"cannot process item {item.id}: its title is {item.title!r}")
        item.counter += 1
        if self.params.sleep:
            time.sleep(self.params.sleep)


class CountItemsInBatchesTask(Task):
    """One set-based UPDATE per batch of items."""

    class Parameters(pydantic.BaseModel):
        of: int = 10
        sleep: float = 0.0

    def collection(self) -> t.Any:
        return in_batches(sa.select(Item), of=self.params.of)

    def process(self, batch: t.Any) -> None:
        db.session.execute(batch.where(sa.update(Item).values(counter=Item.counter + 1)))
        if self.params.sleep:
            time.sleep(self.params.sleep)


class CountByGroupTask(Task):
    """Keyset over (group, id): a two-column cursor."""

    cursor_columns = ("group", "id")
    batch_size = 7

    def collection(self) -> t.Any:
        return sa.select(Item).where(Item.title != "skip")

    def process(self, item: Item) -> None:
        item.counter += 1


class ThrottledCountTask(Task):
    """Backs off while the ``busy`` flag is set."""

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        item.counter += 1
        if self.params.sleep:
            time.sleep(self.params.sleep)

    @throttle_on(backoff=1)
    def database_is_busy(self) -> bool:
        return flag("busy") == "yes"


class ConcurrentCountTask(Task):
    """May have several active runs at once."""

    allow_concurrent_runs = True

    class Parameters(pydantic.BaseModel):
        group: int

    def collection(self) -> t.Any:
        return sa.select(Item).where(Item.group == self.params.group)

    def process(self, item: Item) -> None:
        item.counter += 1


#: The Redis key :class:`FreezesBeforeCommitTask` sets while its commit is held.
FROZEN_KEY = "mtasks-tests:frozen-before-commit"


class FreezesBeforeCommitTask(Task):
    """Adds one to each item's counter; its first tick's commit waits ``freeze`` seconds.

    The wait comes after the tick's progress was written, in the same
    transaction: the run's row stays locked (on SQLite, the database's write
    lock stays taken) as by a work horse frozen between its UPDATE and its
    COMMIT. While it waits, :data:`FROZEN_KEY` is set in the executor's Redis.
    """

    class Parameters(pydantic.BaseModel):
        freeze: float = 4.0
        sleep: float = 0.0

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        item.counter += 1
        time.sleep(self.params.sleep)
        if getattr(self, "_frozen", False):
            return
        self._frozen = True
        freeze = self.params.freeze

        def hold(session: t.Any) -> None:
            from flask_maintenance_tasks.state import get_state

            redis = get_state().executor.connection  # type: ignore[attr-defined]
            redis.set(FROZEN_KEY, "1", ex=max(1, int(freeze) + 5))
            try:
                time.sleep(freeze)
            finally:
                redis.delete(FROZEN_KEY)

        sa.event.listen(db.session, "before_commit", hold, once=True)
