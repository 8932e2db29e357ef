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
import select
import signal
import threading
import time
import types
import typing as t

from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested

from .job import shutdown_requested
from .recovery import recover
from .state import get_state

if t.TYPE_CHECKING:
    from types import FrameType

    from flask import Flask
    from rq.job import Job
    from rq.queue import Queue

logger = logging.getLogger("flask_maintenance_tasks")

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
        try:
            with self.app.app_context():
                recover(get_state(self.app))
        except StopRequested:
            # RQ's SIGTERM handler raises this in an idle worker: it must reach RQ's loop,
            # or the worker would forget it was asked to stop.
            raise
        except Exception:
            # A database or Redis outage must not take the worker down.
            logger.exception("Recovery of orphaned runs failed; trying again later")


#: The worker forking RQ's scheduler and its thread, while it does; see
#: :meth:`_StopsPromptly._start_scheduler`.
_forking_scheduler: tuple[t.Any, int] | None = None
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class _WakeableTime(types.ModuleType):
    """``time`` as RQ's scheduler process sees it: a stop request cuts ``sleep`` short."""

    def __init__(self, wake_fd: int) -> None:
        super().__init__("time")
        self._wake_fd = wake_fd

    def sleep(self, seconds: float) -> None:
        select.select([self._wake_fd], [], [], seconds)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(time, name)


def _wake_on_stop(scheduler: t.Any) -> None:
    """Let a stop request end the sleep of RQ's scheduler between its rounds.

    The scheduler notes the request and finishes its sleep (a second) before it
    stops, and the worker waits for it before exiting. Here, in the scheduler's
    own process, its sleep waits on a pipe that its stop handler writes to.
    """
    import rq.scheduler

    read, write = os.pipe()
    os.set_blocking(write, False)
    setattr(rq.scheduler, "time", _WakeableTime(read))  # noqa: B010 (a module's global)
    stop = scheduler.request_stop

    def request_stop(signum: int | None = None, frame: FrameType | None = None) -> None:
        stop(signum, frame)
        try:
            os.write(write, b"!")
        except BlockingIOError:
            pass

    # RQ installs the handler from the attribute, after this.
    scheduler.request_stop = request_stop


def _scheduler_after_fork() -> None:
    forking = _forking_scheduler
    if forking is None or forking[1] != threading.get_ident():
        return  # a fork of something else (another thread's, the work horse)
    scheduler = getattr(forking[0], "scheduler", None)
    if scheduler is not None:
        _wake_on_stop(scheduler)
    # The scheduler sets its own handlers later; until then a stop signal
    # acts as it would on a fresh process, then arrives if it is pending.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


os.register_at_fork(after_in_child=_scheduler_after_fork)


class _StopsPromptly:
    """Closes gaps between SIGTERM and the exit of an RQ worker.

    RQ installs its signal handlers only after announcing that it listens and
    forking its scheduler: a SIGTERM in between would kill the worker outright.
    An idle worker's stop request lives only in an exception, lost if anything
    swallows it. On the way out the worker waits for its scheduler, which
    finishes a second's sleep before it stops (see :func:`_wake_on_stop`). And
    RQ unsubscribes before stopping its pub/sub thread, which, once it has read
    the reply, waits for a next message and holds the exit up for a second.
    """

    _stop_requested: bool

    def bootstrap(self, *args: t.Any, **kwargs: t.Any) -> None:
        # Until RQ's handlers replace these, a stop request is only noted: the
        # work loop stops on its first turn.
        signal.signal(signal.SIGTERM, self._stop_before_loop)
        signal.signal(signal.SIGINT, self._stop_before_loop)
        super().bootstrap(*args, **kwargs)  # type: ignore[misc]

    def _stop_before_loop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        # RQ notes a request only while a job runs; when idle it raises
        # StopRequested from the handler, which code between RQ's loop and the
        # interrupted line may swallow. Noted, the request ends the loop at its
        # next turn all the same.
        self._stop_requested = True
        super().request_stop(signum, frame)  # type: ignore[misc]

    def _start_scheduler(self, *args: t.Any, **kwargs: t.Any) -> None:
        # A Python-level handler inherited by the forked scheduler could lose a
        # signal that arrives during the fork. Stop signals wait, blocked,
        # until the fork is done: then this process notes them, and the
        # scheduler gets the default action (see _scheduler_after_fork).
        global _forking_scheduler
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        _forking_scheduler = (self, threading.get_ident())
        try:
            super()._start_scheduler(*args, **kwargs)  # type: ignore[misc]
        finally:
            _forking_scheduler = None
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def unsubscribe(self) -> None:
        thread = getattr(self, "pubsub_thread", None)
        if thread is not None:
            # Stopped first, the thread ends on the unsubscribe reply itself.
            thread.stop()
        super().unsubscribe()  # type: ignore[misc]


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


class MaintenanceWorker(_StopsPromptly, _Recovering, Worker):
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
            with self.app.app_context():
                for engine in get_state(self.app).db.engines.values():
                    engine.dispose(close=False)
        super().main_work_horse(job, queue)


class MaintenanceSimpleWorker(_StopsPromptly, _Recovering, SimpleWorker):
    """Runs jobs in its own process (tests, platforms without fork); same SIGTERM handling."""

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        shutdown_requested.set()
        super().request_stop(signum, frame)

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        shutdown_requested.clear()
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            shutdown_requested.clear()
