"""The benchmark tasks: each does what its hand-written baseline in ``benchmarks`` does."""

from __future__ import annotations

import time
import typing as t

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, in_batches

from .. import PreviewRow, Row, db


class NoOp100Task(Task):
    """Loads every row, does nothing with it; pages of 100."""

    batch_size = 100

    def collection(self) -> t.Any:
        return sa.select(Row)

    def process(self, row: Row) -> None:
        pass


class NoOp1000Task(NoOp100Task):
    """Same, pages of 1000."""

    batch_size = 1000


class Touch100Task(Task):
    """Changes one ORM attribute of every row; pages of 100."""

    batch_size = 100

    def collection(self) -> t.Any:
        return sa.select(Row)

    def process(self, row: Row) -> None:
        row.counter += 1


class Touch1000Task(Touch100Task):
    """Same, pages of 1000."""

    batch_size = 1000


class TouchPublish100Task(Touch100Task):
    """Same as Touch100Task, and publishes its count and place (``self.status``) at every row."""

    def process(self, row: Row) -> None:
        row.counter += 1
        self.status.update(count=self.status.get("count", 0) + 1, last_id=row.id)


class RowsNoOp1000Task(Task):
    """Reads two columns of every row as rows (no ORM objects), does nothing; pages of 1000."""

    batch_size = 1000
    collection = sa.select(Row.id, Row.title)

    def process(self, row: sa.Row[t.Any]) -> None:
        pass


class SkipNoOp100Task(NoOp100Task):
    """Loads every row, does nothing with it, each item in a savepoint (``skip`` policy)."""

    error_policy = "skip"


class SkipTouch100Task(Touch100Task):
    """Changes one ORM attribute of every row, each item in a savepoint (``skip`` policy).

    With ``upto``, only the rows with ids up to it: a savepoint's statements make each row
    slow enough that a cell walks a part of the table.
    """

    error_policy = "skip"

    class Parameters(pydantic.BaseModel):
        upto: int | None = None

    def collection(self) -> t.Any:
        if self.params.upto is None:
            return sa.select(Row)
        return sa.select(Row).where(Row.id <= self.params.upto)


class UpdateInBatchesTask(Task):
    """One set-based UPDATE per batch of 1000 rows."""

    def collection(self) -> t.Any:
        return in_batches(sa.select(Row), of=1000)

    def process(self, batch: t.Any) -> None:
        db.session.execute(batch.where(sa.update(Row).values(counter=Row.counter + 1)))


class SleepTask(Task):
    """Sleeps a fixed time per row: a task whose items take a known while."""

    class Parameters(pydantic.BaseModel):
        seconds: float = 0.01

    def collection(self) -> t.Any:
        return sa.select(Row)

    def process(self, row: Row) -> None:
        time.sleep(self.params.seconds)


class TickTimesTask(Task):
    """Sleeps a fixed time per row and appends the time of each item to a file.

    Measured by ``benchmarks.retention``: the gaps between two items show how
    long the run's tick commits waited while runs were pruned.
    """

    class Parameters(pydantic.BaseModel):
        path: str
        seconds: float = 0.005

    def collection(self) -> t.Any:
        return sa.select(Row)

    def process(self, row: Row) -> None:
        with open(self.params.path, "a") as times:
            times.write(f"{time.time()}\n")
        time.sleep(self.params.seconds)


class PreviewAllTask(Task):
    """Every row of the large preview table (measured by previews only, never run)."""

    def collection(self) -> t.Any:
        return sa.select(PreviewRow)

    def process(self, row: PreviewRow) -> None:
        pass


class PreviewIndexedTask(PreviewAllTask):
    """The rows of one bucket: a filter on an indexed column, one row in a thousand."""

    def collection(self) -> t.Any:
        return sa.select(PreviewRow).where(PreviewRow.bucket == 7)


class PreviewUnindexedTask(PreviewAllTask):
    """The rows whose note matches a pattern: a filter no index serves, read row by row."""

    def collection(self) -> t.Any:
        return sa.select(PreviewRow).where(PreviewRow.note.like("%7%7%"))


class PreviewCostlyFilterTask(PreviewAllTask):
    """An unindexed filter that costs each row sixteen ``replace`` calls: a slow count."""

    def collection(self) -> t.Any:
        note: t.Any = PreviewRow.note
        digits = zip("12345678", "abcdefgh", strict=True)
        letters = zip("abcdefgh", "ABCDEFGH", strict=True)
        for old, new in [*digits, *letters]:
            note = sa.func.replace(note, old, new)
        return sa.select(PreviewRow).where(note.like("%A%B%C%"))


class ScalingSleepTask(Task):
    """Waits a fixed time on each of the first ``upto`` rows, as for an external call.

    Measured by ``benchmarks.scaling`` with ``partitions`` equal to the number of workers.
    """

    class Parameters(pydantic.BaseModel):
        upto: int
        seconds: float = 0.002

    def collection(self) -> t.Any:
        return sa.select(Row).where(Row.id <= self.params.upto)

    def process(self, row: Row) -> None:
        time.sleep(self.params.seconds)


class ScalingUpdateTask(Task):
    """One UPDATE statement per row of the first ``upto`` rows: a task the database bounds.

    The collection hands ids only (rows, not records), so that each item costs what its
    statement costs.
    """

    class Parameters(pydantic.BaseModel):
        upto: int

    def collection(self) -> t.Any:
        return sa.select(Row.id).where(Row.id <= self.params.upto)

    def process(self, row: sa.Row[t.Any]) -> None:
        db.session.execute(
            sa.update(Row).where(Row.id == row.id).values(counter=Row.counter + 1),
            execution_options={"synchronize_session": False},
        )
