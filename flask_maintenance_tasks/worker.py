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
import time
import typing as t

from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested

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


class _Recovering:
    """Runs :func:`~flask_maintenance_tasks.recovery.recover` every ``recovery_interval`` s.

    It rides on RQ's maintenance hook, which an idle worker reaches at least
    once per dequeue timeout; ``recovering_worker`` sets that timeout to the
    interval.
    """

    app: Flask | None = None
    recovery_interval: float = 60.0
    _next_recovery: float = 0.0

    @property
    def should_run_maintenance_tasks(self) -> bool:
        rq_due = super().should_run_maintenance_tasks  # type: ignore[misc]
        return bool(rq_due) or time.monotonic() >= self._next_recovery

    def run_maintenance_tasks(self) -> None:
        if super().should_run_maintenance_tasks:  # type: ignore[misc]
            super().run_maintenance_tasks()  # type: ignore[misc]
        if time.monotonic() >= self._next_recovery:
            self._next_recovery = time.monotonic() + self.recovery_interval
            self.recover()

    def recover(self) -> None:
        if self.app is None:
            return
        from .extension import get_state
        from .recovery import recover

        try:
            with self.app.app_context():
                recover(get_state(self.app))
        except StopRequested:
            raise  # SIGTERM arrived during recovery: let RQ shut down
        except Exception:
            # A database or Redis outage must not take the worker down.
            logger.exception("Recovery of orphaned runs failed; trying again later")


def recovering_worker(
    worker_class: type[MaintenanceWorker | MaintenanceSimpleWorker],
    queues: list[Queue],
    app: Flask,
    recovery_interval: float,
    **kwargs: t.Any,
) -> MaintenanceWorker | MaintenanceSimpleWorker:
    """A worker of ``worker_class`` that recovers orphaned runs of ``app``.

    Its dequeue timeout (RQ's ``worker_ttl`` less 15 s) is set to the
    recovery interval, so that an idle worker wakes up in time to recover.
    """
    worker = worker_class(queues, worker_ttl=max(int(recovery_interval) + 15, 16), **kwargs)
    worker.app = app
    worker.recovery_interval = recovery_interval
    return worker


class MaintenanceWorker(_Recovering, Worker):
    """An RQ worker (forking a horse per job) that interrupts runs cleanly on SIGTERM."""

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self.horse_pid:
            try:
                os.kill(self.horse_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()  # type: ignore[no-untyped-call]
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


class MaintenanceSimpleWorker(_Recovering, SimpleWorker):
    """Runs jobs in its own process (tests, platforms without fork); same SIGTERM handling."""

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        shutdown_requested.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        shutdown_requested.clear()
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            shutdown_requested.clear()
