"""Item 5: the dashboard at scale, against the same pages with a handful of runs.

The index and a task page are rendered with 10 runs in the table, then with
100,000 (all of one task, so the task page has them all). Each page must
issue the same number of queries at both sizes and render within twice the
time; the time is the best of a few renders, through Flask's test client.
"""

from __future__ import annotations

import time
import typing as t
from datetime import timedelta

import sqlalchemy as sa

from flask_maintenance_tasks.models import runs_table, utcnow

from .harness import MISSED, Bench, Table, Target

SIZES = (10, 100_000)
RENDERS = 5


def _fill(target: Target, task_name: str, count: int) -> None:
    """Replace the runs with ``count`` ended runs of ``task_name`` (and one active run)."""
    from .benchapp import db

    now = utcnow()
    db.session.execute(runs_table.delete())
    rows = []
    for n in range(count):
        stamp = now - timedelta(seconds=count - n)
        rows.append(
            {
                "task_name": task_name,
                "status": "running" if n == count - 1 else "succeeded",
                "tick_count": 100,
                "tick_total": 100,
                "time_running": 1.0,
                "arguments": {},
                "lock_version": 0,
                "created_at": stamp,
                "updated_at": stamp,
                "started_at": stamp,
                "ended_at": None if n == count - 1 else stamp,
            }
        )
        if len(rows) == 10_000:
            db.session.execute(sa.insert(runs_table), rows)
            rows = []
    if rows:
        db.session.execute(sa.insert(runs_table), rows)
    db.session.commit()
    if target.is_postgresql:
        # What autovacuum would soon do after such a bulk insert: fresh planner statistics.
        db.session.execute(sa.text("ANALYZE maintenance_tasks_runs"))
        db.session.commit()


def _measure(target: Target, path: str) -> tuple[int, float]:
    """Queries of one render, and the best render time in seconds."""
    from .benchapp import db

    client = target.app.test_client()
    queries: list[str] = []

    def count(*args: t.Any) -> None:
        queries.append(args[2])

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    best = float("inf")
    for _ in range(RENDERS):
        started = time.perf_counter()
        client.get(path)
        best = min(best, time.perf_counter() - started)
    return len(queries), best


def dashboard(bench: Bench) -> list[Table]:
    rows = []
    for target in bench.targets:
        app = target.app
        app.testing = True  # opens the dashboard, as a debug or test app does
        app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or "benchmarks-only"
        with target.context():
            from flask_maintenance_tasks.state import get_state

            task_name = next(iter(get_state().registry.tasks()))
            prefix = get_state().settings.url_prefix
            pages = {"index": f"{prefix}/", "task page": f"{prefix}/tasks/{task_name}"}
            measured: dict[str, list[tuple[int, float]]] = {page: [] for page in pages}
            for size in SIZES:
                bench.log(f"dashboard on {target.name} with {size:,} runs")
                _fill(target, task_name, size)
                for page, path in pages.items():
                    measured[page].append(_measure(target, path))
            _fill(target, task_name, 0)
        for page, ((q_small, t_small), (q_big, t_big)) in measured.items():
            ratio = t_big / t_small
            met = q_small == q_big and ratio <= 2.0
            rows.append(
                [
                    target.name,
                    page,
                    str(q_small),
                    str(q_big),
                    f"{t_small * 1000:.1f}",
                    f"{t_big * 1000:.1f}",
                    f"{ratio:.2f}",
                    "yes" if met else MISSED,
                ]
            )
    return [
        Table(
            "Dashboard at scale",
            [
                "database",
                "page",
                "queries, 10 runs",
                "queries, 100,000 runs",
                "ms, 10 runs",
                "ms, 100,000 runs",
                "time ratio",
                "same queries, ≤ 2x",
            ],
            rows,
            [
                f"Best of {RENDERS} renders through Flask's test client; the 100,000 runs all "
                "belong to the task shown, whose history is paged by keyset."
            ],
        )
    ]
