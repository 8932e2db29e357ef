"""Sections 1 to 3: rows per second of the framework against hand-written loops.

Each cell runs a benchmark task to the end through the real path (``mtasks.run``, RQ on a
private Redis, a worker in burst mode, every setting at its default) and the matching
hand-written loop of :mod:`benchmarks.baselines` on the same rows, interleaved and repeated.
The framework's time runs from the ``run`` call to the worker's exit, so it includes
enqueueing, counting the collection, and every status write.
"""

from __future__ import annotations

import dataclasses
import statistics
import typing as t

from . import baselines
from .benchapp import db
from .harness import MISSED, Bench, Samples, Table, Target, Timing, interleaved, number

#: The framework must reach this share of the hand-written loop's rows per second.
TARGET_RATIO = 0.90


@dataclasses.dataclass(frozen=True)
class Cell:
    work: str
    batch_size: int
    task: str
    baseline: t.Callable[[t.Any, int], int]
    #: Walk only the rows with ids up to this (the task's ``upto`` argument), not the table.
    rows: int | None = None

    def units(self, target: Target) -> int:
        return target.rows if self.rows is None else min(self.rows, target.rows)


def _per_row(work: t.Callable[[t.Any], None]) -> t.Callable[[t.Any, int], int]:
    return lambda session, batch_size: baselines.each_row(session, batch_size, work)


ITERATION_CELLS = [
    Cell("no-op", 100, "NoOp100Task", _per_row(baselines.nothing)),
    Cell("no-op", 1000, "NoOp1000Task", _per_row(baselines.nothing)),
    Cell("one ORM attribute", 100, "Touch100Task", _per_row(baselines.touch)),
    Cell("one ORM attribute", 1000, "Touch1000Task", _per_row(baselines.touch)),
]

#: A ``Select`` of two columns, rows handed to ``process`` without ORM objects, against a
#: hand-written loop of Core rows over the same columns.
ROWS_CELLS = [
    Cell("no-op, rows of 2 columns", 1000, "RowsNoOp1000Task", baselines.each_column_row),
]

#: Rows the ``skip`` cell with one ORM attribute walks: each row costs a SAVEPOINT, an UPDATE
#: and a RELEASE, some thirty times the work of a row without savepoints.
SKIP_TOUCH_ROWS = 20_000


def _savepointed(
    work: t.Callable[[t.Any], None], upto: int | None = None
) -> t.Callable[[t.Any, int], int]:
    return lambda session, batch_size: baselines.each_row_savepointed(
        session, batch_size, work, upto
    )


#: The ``skip`` error policy when no item fails: what its savepoint per item costs, against a
#: hand-written loop that wraps each row's work in a savepoint the same way.
SKIP_CELLS = [
    Cell("no-op", 100, "SkipNoOp100Task", _savepointed(baselines.nothing)),
    Cell(
        "one ORM attribute",
        100,
        "SkipTouch100Task",
        _savepointed(baselines.touch, SKIP_TOUCH_ROWS),
        rows=SKIP_TOUCH_ROWS,
    ),
]

SET_BASED_CELLS = [
    Cell("UPDATE per batch", 1000, "UpdateInBatchesTask", baselines.update_in_batches),
]


@dataclasses.dataclass
class Result:
    target: Target
    cell: Cell
    ours: Samples
    baseline: Samples
    rows: int

    def ratio(self) -> float:
        return self.ours.best() / self.baseline.best()

    def cpu_ratio(self) -> float:
        return self.ours.best_cpu() / self.baseline.best_cpu()

    def paired(self) -> list[float]:
        return [o / b for o, b in zip(self.ours.wall, self.baseline.wall, strict=True)]


def measure(bench: Bench, target: Target, cell: Cell) -> Result:
    rows = cell.units(target)
    arguments = None if cell.rows is None else {"upto": cell.rows}

    def ours() -> Timing:
        target.settle()
        timing, run = target.run_task(cell.task, arguments)
        if run.tick_count != run.tick_total:
            raise RuntimeError(f"{cell.task}: {run.tick_count} ticks of {run.tick_total}")
        if run.failure_count:
            raise RuntimeError(f"{cell.task}: {run.failure_count} items failed")
        return timing

    def baseline() -> Timing:
        target.settle()
        with target.context():
            timing, seen = Timing.of(lambda: cell.baseline(db.session(), cell.batch_size))
        if seen != rows:
            raise RuntimeError(f"the hand-written loop saw {seen} rows of {rows}")
        return timing

    a, b = interleaved(bench.repeat, rows, ours, baseline)
    bench.log(
        f"{target.name} {cell.task}: rows/s ours {[round(v) for v in a.wall]}, "
        f"hand-written {[round(v) for v in b.wall]}; by CPU time ours "
        f"{[round(v) for v in a.cpu]}, hand-written {[round(v) for v in b.cpu]}"
    )
    return Result(target, cell, a, b, rows)


def _table(bench: Bench, title: str, results: list[Result], intro: str) -> Table:
    rows = []
    for r in results:
        paired = r.paired()
        rows.append(
            [
                r.target.name,
                r.cell.work,
                str(r.cell.batch_size),
                number(r.ours.best()),
                number(r.baseline.best()),
                f"{r.ratio():.2f}",
                f"{min(paired):.2f}–{max(paired):.2f}",
                f"{r.cpu_ratio():.2f}",
                "yes" if r.ratio() >= TARGET_RATIO else MISSED,
            ]
        )
    return Table(
        title,
        [
            "database",
            "work per row",
            "batch",
            "framework rows/s",
            "hand-written rows/s",
            "ratio",
            "paired ratios",
            "ratio by CPU time",
            f"≥ {TARGET_RATIO:.2f}",
        ],
        rows,
        [
            intro,
            f"Rows/s are the best of {bench.repeat} interleaved runs over {bench.rows:,} rows; "
            "the ratio divides the two bests, and *paired ratios* is the range of ratios "
            "between runs made back to back, a measure of the noise. The *ratio by CPU time* "
            "divides the best rates by this process's CPU time instead, which other jobs on "
            "the machine disturb less; it leaves out the database server's work, the same "
            "on both sides, so if anything it makes the framework look slower.",
        ],
    )


def warm_up(target: Target) -> None:
    """One untimed run of each side, so that no cell pays for first imports and compiles."""
    target.run_task("NoOp1000Task")
    with target.context():
        baselines.each_row(db.session(), 1000, baselines.nothing)


def iteration(bench: Bench) -> list[Table]:
    for target in bench.targets:
        warm_up(target)
    results = [measure(bench, target, cell) for target in bench.targets for cell in ITERATION_CELLS]
    return [
        _table(
            bench,
            "Iteration overhead",
            results,
            "A task through RQ and a burst worker at default settings, against a hand-written "
            "keyset loop over the same rows with the same batch size and a commit per second.",
        )
    ]


def rows(bench: Bench) -> list[Table]:
    for target in bench.targets:
        target.run_task("RowsNoOp1000Task")
        with target.context():
            baselines.each_column_row(db.session(), 1000)
    results = [measure(bench, target, cell) for target in bench.targets for cell in ROWS_CELLS]
    table = _table(
        bench,
        "Row collections",
        results,
        "A task whose collection is `sa.select(Row.id, Row.title)`, handed rows "
        "(`sqlalchemy.Row`), not records, through RQ and a burst worker at default "
        "settings. Against a hand-written keyset loop of `session.execute()` over the "
        "same two columns, `WHERE id > last ORDER BY id LIMIT 1000`, a commit per second.",
    )
    # A run of either side lasts about half a second: one slow run elsewhere on the machine
    # moves a best a lot. The median of the ratios of runs made back to back moves less, and
    # is the one held to the target here.
    table.headers.insert(-1, "median paired ratio")
    for row, result in zip(table.rows, results, strict=True):
        median = statistics.median(result.paired())
        row.insert(-1, f"{median:.2f}")
        row[-1] = "yes" if median >= TARGET_RATIO else MISSED
    table.notes.append(
        "Here the target column judges the *median paired ratio*: each side's run takes about "
        "half a second, so that one run slowed by another job moves a best much more."
    )
    return [table]


def set_based(bench: Bench) -> list[Table]:
    results = [measure(bench, target, cell) for target in bench.targets for cell in SET_BASED_CELLS]
    return [
        _table(
            bench,
            "Set-based batches",
            results,
            "An `in_batches(..., of=1000)` task running one `UPDATE ... WHERE id IN (...)` per "
            "batch, against the same statements in a hand-written keyset loop.",
        )
    ]


def skip_policy(bench: Bench) -> list[Table]:
    for target in bench.targets:
        target.run_task("SkipNoOp100Task")
        with target.context():
            baselines.each_row_savepointed(db.session(), 100, baselines.nothing)
    results = [measure(bench, target, cell) for target in bench.targets for cell in SKIP_CELLS]
    return [
        _table(
            bench,
            "Skip policy, no failures",
            results,
            'A task with `error_policy = "skip"`, which runs each item in a SAVEPOINT, through '
            "RQ and a burst worker at default settings; no item fails. Against the hand-written "
            "keyset loop of the first table with each row's work in `session.begin_nested()` "
            "(on SQLite, a `BEGIN` first in each transaction, as the framework sends). The cell "
            f"with one ORM attribute walks the first {SKIP_TOUCH_ROWS:,} rows only: each of its "
            "rows costs a SAVEPOINT, an UPDATE and a RELEASE.",
        )
    ]
