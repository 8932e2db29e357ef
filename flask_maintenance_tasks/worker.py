"""The RQ worker of ``flask mtasks worker``: SIGTERM means "stop at the next item".

RQ runs each job in a work horse, a child in its own process group that never
hears the signals sent to the worker. So the worker forwards SIGTERM to its
horse, and the horse turns SIGTERM into a flag that the iteration loop reads
between items: the tick is committed, the run becomes ``interrupted``, the
next slice is enqueued, and the worker exits 0. A SIGTERM sent to the whole
process group (or cgroup) reaches the horse directly, to the same effect.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import typing as t

from rq import SimpleWorker, Worker

if t.TYPE_CHECKING:
    from types import FrameType

    from flask import Flask
    from rq.job import Job
    from rq.queue import Queue

logger = logging.getLogger("flask_maintenance_tasks")

#: Set when this process was asked to shut down; read by the loop between items.
shutdown_requested = threading.Event()


def _request_shutdown(signum: int, frame: FrameType | None) -> None:
    shutdown_requested.set()


class MaintenanceWorker(Worker):
    """An RQ worker (forking a horse per job) that interrupts runs cleanly on SIGTERM."""

    app: Flask | None = None

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            try:
                os.kill(self.horse_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        shutdown_requested.clear()
        signal.signal(signal.SIGTERM, _request_shutdown)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        # Connections inherited from the parent must not be used by the child.
        if self.app is not None:
            from .extension import get_state

            with self.app.app_context():
                for engine in get_state(self.app).db.engines.values():
                    engine.dispose(close=False)
        super().main_work_horse(job, queue)


class MaintenanceSimpleWorker(SimpleWorker):
    """Runs jobs in its own process (tests, platforms without fork); same SIGTERM handling."""

    app: Flask | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        shutdown_requested.set()
        super().request_stop(signum, frame)

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        shutdown_requested.clear()
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            shutdown_requested.clear()
