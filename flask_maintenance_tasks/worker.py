"""The RQ worker of ``flask mtasks worker``: SIGTERM means "stop at the next item".

RQ runs each job in a work horse, a child in its own process group that never
hears the signals sent to the worker. So the worker forwards SIGTERM to its
horse, and the horse turns SIGTERM into a flag that the iteration loop reads
between items: the tick is committed, the run becomes ``interrupted``, the
next slice is enqueued, and the worker exits 0. A SIGTERM sent to the whole
process group (or cgroup) reaches the horse directly, to the same effect.

An idle worker also recovers orphaned runs, every ``recovery_interval`` seconds,
and prunes old runs (see :mod:`.retention`) every ``prune_interval`` seconds.

What this takes from RQ beyond its documented API (hooks into its signal
handling, its horse and its maintenance, a prompt stop of its scheduler) lives
in :mod:`._rq`, which checks and installs it when a worker starts.
"""

from __future__ import annotations

import logging
import math
import signal
import time
import typing as t

from rq import SimpleWorker, Worker

from . import _rq
from .iteration import shutdown_requested
from .recovery import recover
from .retention import prune
from .state import get_state

if t.TYPE_CHECKING:
    from types import FrameType

    from flask import Flask
    from rq.queue import Queue

logger = logging.getLogger("flask_maintenance_tasks")

#: Batches of old runs a worker prunes in one maintenance pass (see :mod:`.retention`).
PRUNE_BATCHES = 20
#: Seconds early a recovery or prune may come: a wait for a job of the interval
#: that Redis ends a millisecond short of our clock must not cost a second wait.
EARLY_BY = 0.02


def _request_shutdown(signum: int, frame: FrameType | None) -> None:
    shutdown_requested.set()


class _Recovering(_rq.MaintenanceHook):
    """Runs :func:`~flask_maintenance_tasks.recovery.recover` every ``recovery_interval`` s,
    and :func:`~flask_maintenance_tasks.retention.prune` every ``prune_interval`` s.

    It rides on RQ's maintenance hook, which an idle worker reaches once per
    dequeue timeout: that timeout is the shorter of the two intervals (see
    :class:`._rq.MaintenanceHook`, fractions of a second included), so an
    idle worker recovers every ``recovery_interval`` seconds, plus the time a
    pass takes. A prune takes at most :data:`PRUNE_BATCHES` batches at
    a time, so that a worker facing a large backlog (retention just turned
    on) keeps taking jobs in between: it prunes again at its next pass.
    """

    app: Flask | None = None
    recovery_interval: float = 60.0
    prune_interval: float = 3600.0
    _next_recovery: float = 0.0
    _next_prune: float = 0.0

    def extra_maintenance_interval(self) -> float:
        return min(self.recovery_interval, self.prune_interval)

    def _due(self, at: float) -> bool:
        # Redis may end a wait of the interval a hair before our clock says it is up.
        return time.monotonic() + EARLY_BY >= at

    def extra_maintenance_due(self) -> bool:
        return self._due(self._next_recovery) or self._due(self._next_prune)

    def run_extra_maintenance(self) -> None:
        if self._due(self._next_recovery):
            self._next_recovery = time.monotonic() + self.recovery_interval
            logger.debug("Recovery pass")
            self.recover()
        if self._due(self._next_prune):
            more = self.prune()
            self._next_prune = time.monotonic() + (0.0 if more else self.prune_interval)

    def prune(self) -> bool:
        """Prune up to :data:`PRUNE_BATCHES` batches; whether runs were left for the next pass."""
        if self.app is None:
            return False
        try:
            with self.app.app_context():
                return prune(get_state(self.app), max_batches=PRUNE_BATCHES).more
        except Exception as error:
            if _rq.is_stop_request(error):
                raise
            logger.exception("Pruning old runs failed; trying again later")
            return False

    def recover(self) -> None:
        if self.app is None:
            return
        try:
            with self.app.app_context():
                recover(get_state(self.app))
        except Exception as error:
            if _rq.is_stop_request(error):
                # RQ's SIGTERM handler raises this in an idle worker: it must reach RQ's loop,
                # or the worker would forget it was asked to stop.
                raise
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

    RQ's dequeue timeout (its ``worker_ttl`` less 15 s, whole seconds) is
    sized to cover the recovery interval, which the worker then waits for a
    job instead, fractions of a second included (see
    :class:`._rq.MaintenanceHook`): an idle worker wakes up in time to recover.
    RQ's internals are checked, and our patches installed, when it starts.
    """
    worker_ttl = max(math.ceil(recovery_interval) + 15, 16)
    worker = worker_class(queues, worker_ttl=worker_ttl, **kwargs)
    worker.app = app
    _discover_tasks(app)
    worker.recovery_interval = recovery_interval
    worker.prune_interval = get_state(app).settings.prune_interval
    return worker


def _discover_tasks(app: Flask) -> None:
    """Import the app's tasks once, in the worker, before it forks any horse.

    Each horse is a fork of the worker: it finds the tasks already imported
    instead of walking and importing the tasks package for every job, which
    costs more than a short slice itself. A package that fails to import is
    left for the jobs, which error their runs with its message.
    """
    try:
        with app.app_context():
            get_state(app).registry.tasks()
    except Exception:
        logger.warning("The tasks could not be imported; each job will try again", exc_info=True)


class MaintenanceWorker(_rq.StopsPromptly, _rq.HorseHooks, _Recovering, Worker):
    """An RQ worker (forking a horse per job) that interrupts runs cleanly on SIGTERM."""

    def on_stop_request(self) -> None:
        # RQ never passes the worker's SIGTERM on to the horse (its own process group).
        self.signal_horse(signal.SIGTERM)

    def in_work_horse(self) -> None:
        shutdown_requested.clear()
        signal.signal(signal.SIGTERM, _request_shutdown)
        # Connections inherited from the parent must not be used by the child.
        if self.app is not None:
            with self.app.app_context():
                for engine in get_state(self.app).db.engines.values():
                    engine.dispose(close=False)


class MaintenanceSimpleWorker(_rq.StopsPromptly, _Recovering, SimpleWorker):
    """Runs jobs in its own process (tests, platforms without fork); same SIGTERM handling."""

    def on_stop_request(self) -> None:
        shutdown_requested.set()

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        shutdown_requested.clear()
        try:
            return super().work(*args, **kwargs)
        finally:
            shutdown_requested.clear()
