"""Section 3: the statements the framework issues, per 1,000 items.

A ``before_cursor_execute`` listener on the app's engine sees every statement of a run, from
the ``run`` call to the worker's exit. Statements naming ``maintenance_tasks_runs`` are the
framework's; the rest are the collection's (its pages, and the count when the run starts) and
the task's own. The framework's are split into those of the loop (one progress UPDATE per tick,
one status SELECT per reload: they grow with the run's duration) and those of the run's start
and end (a constant).
"""

from __future__ import annotations

import dataclasses

from .harness import MISSED, Bench, Table, Target, number

#: At most this many framework statements per 1,000 items.
TARGET_PER_1000 = 2.0

#: (what the task does, its name, rows per item)
TASKS = [
    ("no-op, batch 100", "NoOp100Task", 1),
    ("one ORM attribute, batch 100", "Touch100Task", 1),
    ("one ORM attribute, batch 1000", "Touch1000Task", 1),
    ("one ORM attribute and `self.status` per item, batch 100", "TouchPublish100Task", 1),
    ("UPDATE per batch of 1000 (`in_batches`)", "UpdateInBatchesTask", 1000),
]

_TICK = "UPDATE maintenance_tasks_runs SET tick_count="
#: The status reload (store.read_status): its status, job and speed overrides.
_RELOAD = "SELECT maintenance_tasks_runs.status, maintenance_tasks_runs.job_id, "


@dataclasses.dataclass
class Counts:
    ticks: int = 0
    reloads: int = 0
    lifecycle: int = 0
    collection: int = 0
    task: int = 0

    def framework(self) -> int:
        return self.ticks + self.reloads + self.lifecycle

    def count(self, statement: str) -> None:
        if "maintenance_tasks_runs" in statement:
            if statement.startswith(_TICK):
                self.ticks += 1
            elif statement.startswith(_RELOAD):
                self.reloads += 1
            else:
                self.lifecycle += 1
        elif statement.lstrip().upper().startswith("SELECT"):
            self.collection += 1
        else:
            self.task += 1


def measure(target: Target, task: str) -> tuple[Counts, float, int]:
    """Counts of one run of ``task``, its duration, and its items."""
    counts = Counts()
    timing, run = target.run_task(task, statements=counts.count)
    return counts, timing.wall, run.tick_count


def statements(bench: Bench) -> list[Table]:
    rows = []
    for target in bench.targets:
        for label, task, rows_per_item in TASKS:
            target.settle()
            counts, seconds, items = measure(target, task)
            bench.log(f"{target.name} {task}: {counts} in {seconds:.2f}s, {items} items")
            per_item = 1000 * counts.framework() / items
            per_row = 1000 * counts.framework() / (items * rows_per_item)
            rows.append(
                [
                    target.name,
                    label,
                    f"{items:,}",
                    f"{seconds:.1f}",
                    str(counts.collection),
                    str(counts.task),
                    f"{counts.ticks} + {counts.reloads}",
                    str(counts.lifecycle),
                    number(per_item) if per_item >= 0.01 else f"{per_item:.3f}",
                    number(per_row) if per_row >= 0.01 else f"{per_row:.3f}",
                    "yes" if per_row <= TARGET_PER_1000 else MISSED,
                ]
            )
    return [
        Table(
            "Statements per 1,000 items",
            [
                "database",
                "task",
                "items",
                "seconds",
                "pages + count",
                "task's own",
                "framework: ticks + reloads",
                "framework: start and end",
                "framework per 1,000 items",
                "framework per 1,000 rows",
                f"≤ {TARGET_PER_1000:g} per 1,000 rows",
            ],
            rows,
            [
                f"One run of each task over {bench.rows:,} rows at default settings (a tick and a "
                "status reload at most once per second each). The framework's statements are those "
                "touching `maintenance_tasks_runs`, from the `run` call to the end of the run: the "
                "loop's progress UPDATEs and status SELECTs, and a constant number at the start "
                "(the insert, the job's reads of the run, the claim) and at the end (the last "
                "tick, the status change). The task's own statements are the ORM's flushes of "
                "changed rows, one executemany before each page query.",
                "An `in_batches` item is a batch of 1,000 rows: its 200 items take well under two "
                "seconds, so the constant start and end statements dominate its per-item figure; "
                "per row it issues the fewest.",
            ],
        )
    ]
