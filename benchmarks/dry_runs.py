"""The dry-run section: rows per second of a dry run against a normal run of the same task.

A dry run processes every item for real inside a SAVEPOINT that spans the tick, counts what
the task's statements write, and rolls the tick back; only the progress and the counts commit.
Its baseline is not a hand-written loop but the normal run of the same task (issue 12: "a dry
run of the no-op and one-attribute tasks at batch 100 reaches at least 0.90 of the normal
run's rows per second"). Both go through the real path (``mtasks.run``, RQ, a burst worker,
default settings), interleaved and repeated like the other speed cells.

After each dry run the section checks that it changed nothing (the sum of the column the
task touches is what it was) and that ``Run.changes`` counts every row it would update.
"""

from __future__ import annotations

import dataclasses
import typing as t

import sqlalchemy as sa

from .benchapp import Row, db
from .harness import MISSED, Bench, Samples, Table, Target, Timing, interleaved, number

#: A dry run must reach this share of the normal run's rows per second.
TARGET_RATIO = 0.90
TABLE = "bench_rows"


@dataclasses.dataclass(frozen=True)
class Cell:
    work: str
    batch_size: int
    task: str
    #: Whether the task updates each row (``Run.changes`` must then count them all).
    updates: bool


DRY_RUN_CELLS = [
    Cell("no-op", 100, "NoOp100Task", updates=False),
    Cell("one ORM attribute", 100, "Touch100Task", updates=True),
]


@dataclasses.dataclass
class Result:
    target: Target
    cell: Cell
    dry: Samples
    normal: Samples
    counted: int

    def ratio(self) -> float:
        return self.dry.best() / self.normal.best()

    def cpu_ratio(self) -> float:
        return self.dry.best_cpu() / self.normal.best_cpu()

    def paired(self) -> list[float]:
        return [d / n for d, n in zip(self.dry.wall, self.normal.wall, strict=True)]


def _checksum(target: Target) -> tuple[int, int]:
    """The rows of the table and the sum of the column the tasks touch."""
    with target.context():
        count, total = db.session.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Row.counter), 0))
        ).one()
    return int(count), int(total)


def _updated(changes: t.Any) -> dict[str, t.Any]:
    """What ``Run.changes`` says of the benchmark table (nothing when it would not change)."""
    tables = (changes or {}).get("tables") or {}
    return tables.get(TABLE) or {}


def measure(bench: Bench, target: Target, cell: Cell) -> Result:
    rows = target.rows
    counted: list[int] = []

    def checked(run: t.Any) -> None:
        if run.tick_count != run.tick_total:
            raise RuntimeError(f"{cell.task}: {run.tick_count} ticks of {run.tick_total}")
        if run.failure_count:
            raise RuntimeError(f"{cell.task}: {run.failure_count} items failed")

    def dry() -> Timing:
        target.settle()
        before = _checksum(target)
        timing, run = target.run_task(cell.task, dry_run=True)
        checked(run)
        after = _checksum(target)
        if after != before:
            raise RuntimeError(f"dry run of {cell.task} changed {TABLE}: {before} -> {after}")
        if not run.dry_run:
            raise RuntimeError(f"run {run.id} of {cell.task} is not a dry run")
        table = _updated(run.changes)
        updated = int(table.get("updated") or 0)
        expected = {"inserted": 0, "updated": rows if cell.updates else 0, "deleted": 0}
        found = {kind: int(table.get(kind) or 0) for kind in expected}
        if found != expected:
            raise RuntimeError(f"dry run of {cell.task} counted {found}, expected {expected}")
        if cell.updates and table.get("columns") != ["counter"]:
            raise RuntimeError(f"dry run of {cell.task} names columns {table.get('columns')}")
        counted.append(updated)
        return timing

    def normal() -> Timing:
        target.settle()
        timing, run = target.run_task(cell.task)
        checked(run)
        if run.dry_run or run.changes:
            raise RuntimeError(f"normal run {run.id} of {cell.task} recorded a dry run's changes")
        return timing

    a, b = interleaved(bench.repeat, rows, dry, normal)
    bench.log(
        f"{target.name} {cell.task}: rows/s dry {[round(v) for v in a.wall]}, "
        f"normal {[round(v) for v in b.wall]}; by CPU time dry {[round(v) for v in a.cpu]}, "
        f"normal {[round(v) for v in b.cpu]}"
    )
    return Result(target, cell, a, b, counted[-1])


def warm_up(target: Target) -> None:
    """One untimed run of each kind, so that no cell pays for first imports and compiles."""
    target.run_task("NoOp100Task", dry_run=True)
    target.run_task("NoOp100Task")


def dry_run(bench: Bench) -> list[Table]:
    for target in bench.targets:
        warm_up(target)
    results = [measure(bench, target, cell) for target in bench.targets for cell in DRY_RUN_CELLS]
    rows = []
    for r in results:
        paired = r.paired()
        rows.append(
            [
                r.target.name,
                r.cell.work,
                str(r.cell.batch_size),
                number(r.dry.best()),
                number(r.normal.best()),
                f"{r.ratio():.2f}",
                f"{min(paired):.2f}–{max(paired):.2f}",
                f"{r.cpu_ratio():.2f}",
                f"{r.counted:,}",
                "yes" if r.ratio() >= TARGET_RATIO else MISSED,
            ]
        )
    return [
        Table(
            "Dry runs",
            [
                "database",
                "work per row",
                "batch",
                "dry run rows/s",
                "normal run rows/s",
                "ratio",
                "paired ratios",
                "ratio by CPU time",
                "rows counted as updated",
                f"≥ {TARGET_RATIO:.2f}",
            ],
            rows,
            [
                "A dry run of a task (each tick in a SAVEPOINT rolled back at its end, its "
                "writes counted) against a normal run of the same task, both through RQ and a "
                "burst worker at default settings. After every dry run the table was checked "
                "unchanged (its rows and the sum of the touched column) and `Run.changes` "
                "checked to count every row the task would update, and no other.",
                f"Rows/s are the best of {bench.repeat} interleaved runs over {bench.rows:,} "
                "rows; the ratio divides the two bests, *paired ratios* is the range of the "
                "ratios of runs made back to back, and the *ratio by CPU time* divides the best "
                "rates by this process's CPU time instead.",
            ],
        )
    ]
