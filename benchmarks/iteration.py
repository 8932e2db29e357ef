"""Sections 1 and 2: rows per second of the framework against hand-written loops.

Each cell runs a benchmark task to the end through the real path (``mtasks.run``, RQ on a
private Redis, a worker in burst mode, every setting at its default) and the matching
hand-written loop of :mod:`benchmarks.baselines` on the same rows, interleaved and repeated.
The framework's time runs from the ``run`` call to the worker's exit, so it includes
enqueueing, counting the collection, and every status write.
"""

from __future__ import annotations

import dataclasses
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


def _per_row(work: t.Callable[[t.Any], None]) -> t.Callable[[t.Any, int], int]:
    return lambda session, batch_size: baselines.each_row(session, batch_size, work)


ITERATION_CELLS = [
    Cell("no-op", 100, "NoOp100Task", _per_row(baselines.nothing)),
    Cell("no-op", 1000, "NoOp1000Task", _per_row(baselines.nothing)),
    Cell("one ORM attribute", 100, "Touch100Task", _per_row(baselines.touch)),
    Cell("one ORM attribute", 1000, "Touch1000Task", _per_row(baselines.touch)),
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

    def ratio(self) -> float:
        return self.ours.best() / self.baseline.best()

    def cpu_ratio(self) -> float:
        return self.ours.best_cpu() / self.baseline.best_cpu()

    def paired(self) -> list[float]:
        return [o / b for o, b in zip(self.ours.wall, self.baseline.wall, strict=True)]


def measure(bench: Bench, target: Target, cell: Cell) -> Result:
    rows = target.rows

    def ours() -> Timing:
        target.settle()
        timing, run = target.run_task(cell.task)
        if run.tick_count != run.tick_total:
            raise RuntimeError(f"{cell.task}: {run.tick_count} ticks of {run.tick_total}")
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
    return Result(target, cell, a, b)


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
