"""The benchmark's CSV tasks; each records the memory and timings of its work horse."""

from __future__ import annotations

import json
import os
import time
import typing as t

import sqlalchemy as sa

from flask_maintenance_tasks import Task, csv_collection

from .. import ImportedRow, db

HEADERS = ("id", "title", "author", "content", "score")


def _memory(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class _Measured(Task):
    """Records, for its run: the resident memory when the slice starts iterating, the
    first row it processes and when, and the peak resident memory at the end."""

    def _record(self, event: str, **values: t.Any) -> None:
        values.update(
            event=event,
            run_id=self.run.id if self.run else None,
            pid=os.getpid(),
            wall=time.time(),
            rss=_memory("VmRSS"),
            hwm=_memory("VmHWM"),
        )
        with open(os.environ["CSV_BENCH_RESULTS"], "a") as results:
            results.write(json.dumps(values) + "\n")

    def after_start(self) -> None:
        from rq import get_current_job

        job = get_current_job()
        started = job.started_at.timestamp() if job and job.started_at else None
        self._first_row_seen = False
        self._record("start", job_started=started)

    def after_complete(self) -> None:
        self._record("complete")

    def _first(self, number: int) -> None:
        self._first_row_seen = True
        self._record("first_row", row=number)


class ImportRowsTask(_Measured):
    """Reads every row, one at a time, and checks its numbers."""

    collection = csv_collection(required_headers=HEADERS)

    def process(self, row: t.Any) -> None:
        if not self._first_row_seen:
            self._first(row.number)
        int(row["id"])
        int(row["score"])


class ImportRowsInBatchesTask(_Measured):
    """Inserts the rows into ``imported_rows``, one INSERT of 1,000 rows per batch."""

    collection = csv_collection(in_batches=1000, required_headers=HEADERS)

    def process(self, rows: list[t.Any]) -> None:
        if not self._first_row_seen:
            self._first(rows[0].number)
        db.session.execute(
            sa.insert(ImportedRow),
            [
                {
                    "id": int(row["id"]),
                    "title": row["title"],
                    "author": row["author"],
                    "content": row["content"],
                    "score": int(row["score"]),
                }
                for row in rows
            ],
        )
