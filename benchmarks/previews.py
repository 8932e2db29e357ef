"""The preview section: what a preview costs on a table of 5,000,000 rows.

Issue 12: "A preview costs at most a bounded number of statements, each under the timeout,
whatever the table's size". The section fills ``bench_preview_rows`` (once per database,
reused when it already holds the rows asked for) by one set-based INSERT: ``generate_series``
on PostgreSQL, a recursive CTE on SQLite. It then previews three tasks at the default
``MAINTENANCE_TASKS_PREVIEW_TIMEOUT``: the whole table, a selective filter on an indexed
column, a filter no index serves, whose count has to read every row, and one that also costs
each row some work, so that counting takes longer than the timeout. Two more rows give
the whole table and the unindexed filter a timeout so short that the count must fall back
on the bound (or, on PostgreSQL, the planner's estimate).

Each statement the engine sends is timed by a pair of cursor listeners (a statement cut off
by the timeout ends in ``handle_error``). The target: at most
:data:`flask_maintenance_tasks.preview.MAX_STATEMENTS` statements, none of them longer than
the timeout plus :data:`MARGIN`.
"""

from __future__ import annotations

import dataclasses
import time
import typing as t

import sqlalchemy as sa

from flask_maintenance_tasks import preview as previews
from flask_maintenance_tasks.state import get_state

from .benchapp import PreviewRow, db
from .harness import MISSED, Bench, Table, Target

#: Rows of the preview table.
PREVIEW_ROWS = 5_000_000
#: What a statement may take past the timeout: the database notices it between steps.
MARGIN = 0.25
#: A timeout short enough that counting the large table runs past it.
SHORT_TIMEOUT = 0.05
INDEX = "ix_bench_preview_rows_bucket"


@dataclasses.dataclass(frozen=True)
class Cell:
    what: str
    task: str
    #: Seconds; ``None`` for the app's setting (2 s by default).
    timeout: float | None = None


PREVIEW_CELLS = [
    Cell("whole table", "PreviewAllTask"),
    Cell("indexed filter (1 row in 1,000)", "PreviewIndexedTask"),
    Cell("unindexed filter (LIKE on text)", "PreviewUnindexedTask"),
    Cell("unindexed, costly filter (16 × replace)", "PreviewCostlyFilterTask"),
    Cell("whole table", "PreviewAllTask", SHORT_TIMEOUT),
    Cell("unindexed filter (LIKE on text)", "PreviewUnindexedTask", SHORT_TIMEOUT),
]


def fill(target: Target, rows: int, log: t.Callable[[str], None]) -> None:
    """Give ``bench_preview_rows`` rows 1 to ``rows``, unless it already holds exactly them."""
    with target.context():
        engine = db.engine
        PreviewRow.__table__.create(engine, checkfirst=True)
        with engine.connect() as connection:
            found = connection.execute(sa.select(sa.func.count(), sa.func.max(PreviewRow.id))).one()
        if tuple(found) == (rows, rows):
            log(f"{target.name}: bench_preview_rows holds {rows:,} rows already")
            return
        log(f"{target.name}: filling bench_preview_rows with {rows:,} rows")
        start = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP INDEX IF EXISTS {INDEX}"))
            connection.execute(sa.delete(PreviewRow))
            columns = "id, bucket, amount, note"
            values = "g, g % 1000, (g * 7919{}) % 1000003, 'note-' || g"
            values = values.format("::bigint" if target.is_postgresql else "")
            if target.is_postgresql:
                connection.execute(
                    sa.text(
                        f"INSERT INTO bench_preview_rows ({columns}) "
                        f"SELECT {values} FROM generate_series(1, :rows) AS g"
                    ),
                    {"rows": rows},
                )
            else:
                connection.execute(
                    sa.text(
                        "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s "
                        f"WHERE g < :rows) INSERT INTO bench_preview_rows ({columns}) "
                        f"SELECT {values} FROM s"
                    ),
                    {"rows": rows},
                )
            connection.execute(sa.text(f"CREATE INDEX {INDEX} ON bench_preview_rows (bucket)"))
        if target.is_postgresql:
            autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
            with autocommit.connect() as connection:
                connection.execute(sa.text("VACUUM ANALYZE bench_preview_rows"))
        else:
            with engine.begin() as connection:
                connection.execute(sa.text("ANALYZE bench_preview_rows"))
        log(f"{target.name}: filled in {time.perf_counter() - start:.1f} s")


class Timer:
    """The time of each statement an engine runs, errors (a timeout) included."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.times: list[float] = []
        self.statements: list[str] = []
        self._started: float | None = None

    def __enter__(self) -> Timer:
        sa.event.listen(self.engine, "before_cursor_execute", self._before)
        sa.event.listen(self.engine, "after_cursor_execute", self._after)
        sa.event.listen(self.engine, "handle_error", self._error)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._before)
        sa.event.remove(self.engine, "after_cursor_execute", self._after)
        sa.event.remove(self.engine, "handle_error", self._error)

    def _before(self, conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        self.statements.append(statement)
        self._started = time.perf_counter()

    def _ended(self) -> None:
        if self._started is not None:
            self.times.append(time.perf_counter() - self._started)
            self._started = None

    def _after(self, *args: t.Any) -> None:
        self._ended()

    def _error(self, context: t.Any) -> None:
        self._ended()


@dataclasses.dataclass
class Result:
    target: Target
    cell: Cell
    found: previews.Preview
    timeout: float
    times: list[float]
    sent: int
    total: float

    def within(self) -> bool:
        return (
            self.found.statements <= previews.MAX_STATEMENTS
            and self.sent <= previews.MAX_STATEMENTS
            and max(self.times, default=0.0) <= self.timeout + MARGIN
        )


def measure(target: Target, cell: Cell, log: t.Callable[[str], None]) -> Result:
    with target.context():
        state = get_state()
        timeout = cell.timeout if cell.timeout is not None else state.settings.preview_timeout
        with Timer(db.engine) as timer:
            start = time.perf_counter()
            found = previews.preview(state, cell.task, {}, timeout=cell.timeout)
            total = time.perf_counter() - start
    if not found.valid or len(found.items) != previews.FIRST_ITEMS:
        raise RuntimeError(f"{cell.task} on {target.name}: {found.as_dict()}")
    slowest = max(range(len(timer.times)), key=timer.times.__getitem__, default=None)
    log(
        f"{target.name} {cell.task} (timeout {timeout} s): {found.count_text()}, "
        f"{found.statements} statements, times {[round(s, 3) for s in timer.times]}"
        + ("" if slowest is None else f", slowest: {timer.statements[slowest][:120]!r}")
    )
    return Result(target, cell, found, timeout, timer.times, len(timer.times), total)


def preview(bench: Bench) -> list[Table]:
    rows_wanted = bench.preview_rows
    for target in bench.targets:
        fill(target, rows_wanted, bench.log)
    results = [
        measure(target, cell, bench.log) for target in bench.targets for cell in PREVIEW_CELLS
    ]
    rows = []
    for r in results:
        rows.append(
            [
                r.target.name,
                r.cell.what,
                f"{r.timeout:g} s",
                r.found.count_text(),
                r.found.count_kind,
                str(r.found.statements),
                f"{max(r.times, default=0.0):.3f} s",
                f"{r.total:.3f} s",
                "yes" if r.within() else MISSED,
            ]
        )
    return [
        Table(
            f"Previews of a {rows_wanted:,}-row table",
            [
                "database",
                "collection",
                "timeout",
                "count shown",
                "count kind",
                "statements",
                "slowest statement",
                "whole preview",
                f"≤ {previews.MAX_STATEMENTS} statements, each ≤ timeout + {MARGIN:g} s",
            ],
            rows,
            [
                "One preview of each task (`preview.preview`), with the app's timeout (2 s by "
                f"default) and then {SHORT_TIMEOUT:g} s, counted in statements (the "
                "preview's own count, which the cursor listeners agree with) and timed "
                "statement by statement; the first ten items were read in every case.",
            ],
        )
    ]
