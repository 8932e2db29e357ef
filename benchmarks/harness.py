"""What every section shares: the benchmark app on each database, runs taken through the real
path, and the Markdown tables the sections return."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa

from flask_maintenance_tasks import signals
from flask_maintenance_tasks.worker import MaintenanceSimpleWorker

from .benchapp import DATABASE_ENV, REDIS_ENV, Row, create_app, db, mtasks

if t.TYPE_CHECKING:
    from flask import Flask

    from flask_maintenance_tasks.models import Run


#: How a table's last column marks a target that was not met.
MISSED = "**no**"


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds (of this process) of one measurement, or clocks read now.

    CPU time is less disturbed by other processes on a busy machine than wall time; it leaves
    out the database server's work, which is the same for the framework and a hand-written
    loop, so a ratio of CPU times can only make the framework look worse.
    """

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Timing:
        return cls(time.perf_counter(), time.process_time())

    def __sub__(self, other: Timing) -> Timing:
        return Timing(self.wall - other.wall, self.cpu - other.cpu)

    @classmethod
    def of(cls, function: t.Callable[[], t.Any]) -> tuple[Timing, t.Any]:
        """How long ``function()`` took, and what it returned."""
        start = cls.now()
        value = function()
        return cls.now() - start, value


@dataclasses.dataclass
class Table:
    """One section's result: a Markdown table with a title and notes under it."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = dataclasses.field(default_factory=list)

    def missed(self) -> bool:
        """Whether a row marks a target as not met."""
        return any(MISSED in row for row in self.rows)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        aligns = ["---"] + ["---:"] * (len(self.headers) - 1)
        lines.append("|" + "|".join(aligns) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines)


class Target:
    """The benchmark app on one database, with ``rows`` rows seeded in its table."""

    def __init__(self, name: str, url: str, redis_url: str, rows: int) -> None:
        self.name = name
        self.url = url
        self.redis_url = redis_url
        self.rows = rows
        self.app: Flask = create_app(url, redis_url)
        with self.context():
            db.create_all()
            chunk = 10_000
            for start in range(1, rows + 1, chunk):
                numbers = range(start, min(start + chunk, rows + 1))
                db.session.execute(
                    sa.insert(Row), [{"title": f"row-{n}", "counter": 0} for n in numbers]
                )
            db.session.commit()
        self.settle()

    @property
    def is_postgresql(self) -> bool:
        return self.url.startswith("postgresql")

    @contextlib.contextmanager
    def context(self) -> t.Iterator[None]:
        with self.app.app_context():
            try:
                yield
            finally:
                db.session.remove()

    def env(self) -> dict[str, str]:
        """The environment of a ``flask mtasks worker`` subprocess on this app."""
        return {
            **os.environ,
            DATABASE_ENV: self.url,
            REDIS_ENV: self.redis_url,
            "FLASK_APP": "benchmarks.benchapp:create_app",
            "PYTHONUNBUFFERED": "1",
        }

    def settle(self) -> None:
        """Leave the table as every measurement finds it: on PostgreSQL, vacuumed and analysed."""
        if not self.is_postgresql:
            return
        with self.context():
            engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                connection.execute(sa.text("VACUUM ANALYZE bench_rows"))
                connection.execute(sa.text("VACUUM ANALYZE maintenance_tasks_runs"))

    def drain(self) -> None:
        """Run every queued job in this process, with a real RQ worker in burst mode."""
        executor = mtasks_executor()
        worker = MaintenanceSimpleWorker([executor.queue()], connection=executor.connection)
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")

    def run_task(
        self,
        name: str,
        arguments: dict[str, t.Any] | None = None,
        statements: t.Callable[[str], None] | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[Timing, Run]:
        """Run task ``name`` to the end through RQ; how long it took, and the finished run.

        The time runs from the ``run`` call to the ``run_succeeded`` signal, sent once the
        run's last write is committed. It leaves out what RQ does after the job returns (a
        burst worker's exit alone waits up to a second for its pub/sub thread), which a
        long-lived worker never pays per run. ``statements``, if given, is called with the SQL
        of each statement the app's engine runs meanwhile.
        """
        ended: list[Timing] = []

        def succeeded(app: Flask, **data: t.Any) -> None:
            ended.append(Timing.now())

        def executing(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
            assert statements is not None
            statements(statement)

        with self.context():
            engine = db.engine
            signals.run_succeeded.connect(succeeded, self.app)
            if statements is not None:
                sa.event.listen(engine, "before_cursor_execute", executing)
            try:
                start = Timing.now()
                run = mtasks.run(name, arguments, dry_run=dry_run)
                self.drain()
            finally:
                signals.run_succeeded.disconnect(succeeded, self.app)
                if statements is not None:
                    sa.event.remove(engine, "before_cursor_execute", executing)
            finished = mtasks.get_run(run.id)
        if finished is None or finished.status != "succeeded" or not ended:
            status = None if finished is None else (finished.status, finished.error_message)
            raise RuntimeError(f"{name} did not succeed on {self.name}: {status}")
        return ended[0] - start, finished

    def close(self) -> None:
        with self.app.app_context():
            for engine in db.engines.values():
                engine.dispose()


def mtasks_executor() -> t.Any:
    from flask_maintenance_tasks.state import get_state

    return get_state().executor


@dataclasses.dataclass
class Bench:
    """What a section is given: the targets (one per database), Redis, and the run's knobs."""

    targets: list[Target]
    redis_url: str
    rows: int
    repeat: int
    directory: Path
    log: t.Callable[[str], None]
    #: Rows of the large table the preview section fills.
    preview_rows: int = 5_000_000
    #: Items of the scaling section's I/O-bound task, and its worker counts.
    scaling_items: int = 20_000
    scaling_workers: tuple[int, ...] = (1, 2, 4, 8)
    #: Rows of the scaling section's database-bound task, and its worker counts.
    scaling_update_rows: int = 40_000
    scaling_update_workers: tuple[int, ...] = (1, 2, 4)
    #: Old runs the retention section prunes.
    retention_runs: int = 100_000
    #: The speed section's rate cap (items per second) and how long it measures it.
    speed_rate: float = 200.0
    speed_seconds: float = 30.0
    speed_window: float = 10.0


@dataclasses.dataclass
class Samples:
    """Rates (per second) of repeated measurements of the same thing, by wall and CPU time.

    ``best`` is the fastest: noise from other processes only ever slows a run down.
    """

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

    def add(self, units: int, timing: Timing) -> None:
        self.wall.append(units / timing.wall)
        self.cpu.append(units / timing.cpu)

    def best(self) -> float:
        return max(self.wall)

    def best_cpu(self) -> float:
        return max(self.cpu)


def interleaved(
    repeat: int, units: int, first: t.Callable[[], Timing], second: t.Callable[[], Timing]
) -> tuple[Samples, Samples]:
    """Measure ``first`` and ``second`` ``repeat`` times each, alternating which goes first."""
    a, b = Samples(), Samples()
    for i in range(repeat):
        if i % 2 == 0:
            a.add(units, first())
            b.add(units, second())
        else:
            b.add(units, second())
            a.add(units, first())
    return a, b


def number(value: float) -> str:
    """A figure with thousands separators and no false precision."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
