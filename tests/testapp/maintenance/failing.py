"""Tasks whose items fail, for the error policies, the failure ledger and retries.

An item is bad when its title is ``bad`` (or, for sequences, when the number
is a multiple of ``every``). Each task writes before it raises, so that a test
can check those partial writes were undone.
"""

from __future__ import annotations

import time
import typing as t

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, csv_collection, in_batches

from .. import Flag, Item, db
from .kinds import EVENTS


class BadItem(ValueError):
    """What a bad item raises."""


class SkipBadItemsTask(Task):
    """Adds one to every item's counter; a bad item raises after its write is flushed."""

    error_policy = "skip"

    class Parameters(pydantic.BaseModel):
        token: pydantic.SecretStr | None = None

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        item.counter += 1
        db.session.flush()  # the partial write is in the database when it raises
        if item.title == "bad":
            token = self.params.token.get_secret_value() if self.params.token else ""
            raise BadItem(f"item {item.id} is bad {token}".strip())


class StopOnBadItemsTask(SkipBadItemsTask):
    """The same, under the default policy."""

    error_policy = "stop"


class LimitedSkipTask(SkipBadItemsTask):
    """At most two failed items."""

    max_failures = 2


class ReportBadItemsTask(Task):
    """Stop policy, but a bad item's error is reported and the run goes on."""

    report_on = (BadItem,)

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        if item.title == "bad":
            raise BadItem(f"item {item.id} is bad")
        item.counter += 1


class SkipBadBatchesTask(Task):
    """One UPDATE per batch of ten; a batch holding a bad item raises after it."""

    error_policy = "skip"

    def collection(self) -> t.Any:
        return in_batches(sa.select(Item), of=10)

    def process(self, batch: t.Any) -> None:
        db.session.execute(batch.where(sa.update(Item).values(counter=Item.counter + 1)))
        bad = db.session.scalar(
            batch.where(sa.select(sa.func.count()).select_from(Item).where(Item.title == "bad"))
        )
        if bad:
            raise BadItem(f"{bad} bad item(s) in {batch!r}")


class SkipBadNumbersTask(Task):
    """A list of numbers; multiples of the ``every`` flag's value fail."""

    error_policy = "skip"
    collection = list(range(1, 31))

    def process(self, number: int) -> None:
        every = int((db.session.get(Flag, "every") or Flag(value="7")).value or 0)
        if every and number % every == 0:
            raise BadItem(f"{number} is a multiple of {every}")
        EVENTS.append(number)


class SkipBadRowsTask(Task):
    """CSV rows upserted into items; a row titled ``bad`` fails unless the ``fixed`` flag is set."""

    error_policy = "skip"
    collection = csv_collection(required_headers=("id", "title"))

    def process(self, row: t.Any) -> None:
        _import(row)


class SkipBadRowBatchesTask(Task):
    """The same in batches of five rows."""

    error_policy = "skip"
    collection = csv_collection(in_batches=5, required_headers=("id", "title"))

    def process(self, rows: list[t.Any]) -> None:
        for row in rows:
            _import(row)


def _import(row: t.Any) -> None:
    db.session.add(Item(id=int(row["id"]), title=row["title"], group=0, counter=1))
    db.session.flush()
    if row["title"] == "bad" and db.session.get(Flag, "fixed") is None:
        raise BadItem(f"row {row.number} is bad (password {row.get('password', '')})")


class SkipWalkingTask(Task):
    """Its own enumerator over the items, and no way to look one up by key."""

    error_policy = "skip"

    def enumerator(self, cursor: t.Any) -> t.Iterator[tuple[t.Any, t.Any]]:
        statement = sa.select(Item).order_by(Item.id)
        if cursor is not None:
            statement = statement.where(Item.id > cursor)
        for item in db.session.scalars(statement):
            yield item, item.id

    def process(self, item: Item) -> None:
        item.counter += 1
        db.session.flush()
        if item.title == "bad":
            raise BadItem(f"item {item.id} is bad")


class SkipWalkingWithLookupTask(SkipWalkingTask):
    """The same, able to find items again by key."""

    def lookup(self, keys: list[t.Any]) -> t.Iterator[tuple[t.Any, t.Any]]:
        for item in db.session.scalars(sa.select(Item).where(Item.id.in_(keys))):
            yield item.id, item


class DryRunMixedTask(Task):
    """Updates every item (ORM), inserts a flag every tenth item (ORM), deletes a seeded
    flag every fifth item and bumps a group every seventh (Core statements)."""

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        if self.params.sleep:
            time.sleep(self.params.sleep)
        EVENTS.append(("dry" if self.dry_run else "real", item.id))
        item.counter += 1
        item.title = f"new-{item.id}"
        if item.id % 10 == 0:
            db.session.add(Flag(name=f"made-{item.id}", value="x"))
        if item.id % 5 == 0:
            db.session.execute(sa.delete(Flag).where(Flag.name == f"seed-{item.id}"))
        if item.id % 7 == 0:
            db.session.execute(sa.update(Item).where(Item.id == item.id).values(group=99))


class CommittingTask(Task):
    """Commits the session itself, which a dry run must refuse."""

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        item.counter += 1
        if item.id == 3:
            db.session.commit()


class PreviewItemsTask(Task):
    """Items whose title starts with a prefix; a secret token never shows."""

    class Parameters(pydantic.BaseModel):
        prefix: str = "item-"
        limit_group: int = pydantic.Field(default=3, ge=0)
        token: pydantic.SecretStr | None = None

    def collection(self) -> t.Any:
        return sa.select(Item).where(
            Item.title.startswith(self.params.prefix), Item.group < self.params.limit_group
        )

    def process(self, item: Item) -> None:
        item.counter += 1


class PreviewBatchesTask(Task):
    def collection(self) -> t.Any:
        return in_batches(sa.select(Item), of=25)

    def process(self, batch: t.Any) -> None:
        pass


class PreviewSlowTask(Task):
    """Its filter calls ``mtasks_slow(id)``, which a test defines to take a while per row."""

    def collection(self) -> t.Any:
        return sa.select(Item).where(sa.func.mtasks_slow(Item.id) == Item.id)

    def process(self, item: Item) -> None:
        pass


class SlowSkipBadItemsTask(SkipBadItemsTask):
    """:class:`SkipBadItemsTask` sleeping after each item's write, so that a tick is in flight.

    For the fault tests: a worker killed meanwhile leaves a flushed, uncommitted
    write in an open savepoint, and failed items in an uncommitted tick.
    """

    class Parameters(pydantic.BaseModel):
        token: pydantic.SecretStr | None = None
        sleep: float = 0.0

    def process(self, item: Item) -> None:
        item.counter += 1
        db.session.flush()
        if self.params.sleep:
            time.sleep(self.params.sleep)
        if item.title == "bad":
            raise BadItem(f"item {item.id} is bad")


class SkipBadByGroupTask(SkipBadItemsTask):
    """Keyset over (group, id): a retry finds items by a two-column key."""

    cursor_columns = ("group", "id")
    batch_size = 7


class RollingBackTask(Task):
    """Rolls the session back itself in the middle of its items, then writes again."""

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        if item.id == 3:
            db.session.rollback()
        item.counter += 1


class RollbackThenRaiseTask(SkipBadItemsTask):
    """Recovers from an error by rolling the whole session back, then raises: loses the tick."""

    def process(self, item: Item) -> None:
        item.counter += 1
        db.session.flush()
        if item.title == "bad":
            db.session.rollback()
            raise BadItem(f"item {item.id} is bad")


class Unprintable(ValueError):
    def __str__(self) -> str:
        raise RuntimeError("no message")


class Halt(BaseException):
    """Not an Exception: a task's own way to stop everything."""


class OddErrorsTask(Task):
    """Raises what its ``kind`` says on the item titled ``bad``."""

    class Parameters(pydantic.BaseModel):
        kind: str = "unprintable"

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        if item.title == "bad":
            raise Unprintable() if self.params.kind == "unprintable" else Halt("halt")
        item.counter += 1


class DryRunEdgesTask(Task):
    """What a dry run must survive or refuse, chosen by ``how``."""

    class Parameters(pydantic.BaseModel):
        how: str = "nested"

    def collection(self) -> t.Any:
        return sa.select(Item)

    def after_start(self) -> None:
        if self.params.how == "commit_in_after_start":
            db.session.add(Flag(name="started", value="x"))
            db.session.commit()

    def process(self, item: Item) -> None:
        how = self.params.how
        if how == "nested":
            with db.session.begin_nested():
                item.counter += 1
        elif how == "connection_commit" and item.id == 2:
            item.counter += 1
            db.session.flush()
            db.session.connection().commit()
        elif how == "text_commit" and item.id == 2:
            db.session.execute(sa.text("COMMIT"))
        elif how == "text_dml":
            db.session.execute(
                sa.text("/* a comment */ UPDATE items SET counter = counter + 1 WHERE id = :id"),
                {"id": item.id},
            )
            db.session.execute(
                sa.text(
                    "WITH chosen AS (SELECT id FROM items WHERE id = :id) "
                    "UPDATE items SET title = 'x' WHERE id IN (SELECT id FROM chosen)"
                ),
                {"id": item.id},
            )


class WritingCollectionTask(Task):
    """A collection() that writes and commits: a preview must not let it."""

    def collection(self) -> t.Any:
        db.session.add(Flag(name="from-preview", value="x"))
        db.session.commit()
        return sa.select(Item)

    def process(self, item: Item) -> None:
        pass
