"""A tasks module of 200 generated tasks, for the dashboard's query-count tests."""

from __future__ import annotations

import typing as t

from flask_maintenance_tasks import Task, no_collection

COUNT = 200


def _process(self: Task) -> None:
    pass


def _make(n: int) -> type[Task]:
    namespace: dict[str, t.Any] = {
        "__module__": __name__,
        "collection": no_collection(),
        "process": _process,
    }
    return type(f"Generated{n:03d}Task", (Task,), namespace)


for _n in range(COUNT):
    _task = _make(_n)
    globals()[_task.__name__] = _task

NAMES = [f"Generated{n:03d}Task" for n in range(COUNT)]
