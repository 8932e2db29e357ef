"""Everything our worker does to RQ beyond its documented API, in one place.

RQ documents custom worker classes, but not which of their methods one may
override, nor the insides of its scheduler. The worker of ``flask mtasks
worker`` (:mod:`.worker`) needs both. Every such reach lives here: mixins
that override RQ's methods and turn them into hooks of ours, and a patch of
RQ's scheduler applied, through a fork hook, in the scheduler's own process.
Nothing happens at import: when a worker starts, :func:`install` checks that
each internal below is still there (:func:`check`), then registers the fork
hook, once per process. Supported: ``rq>=2.3,<3``.

The RQ internals we rely on (on ``rq.Worker`` and ``rq.SimpleWorker``
unless said otherwise):

- ``bootstrap``: runs before RQ installs its signal handlers; ours note a stop till then.
- ``request_stop``: RQ's SIGTERM/SIGINT handler; we note the request, call ``on_stop_request``.
- ``_stop_requested``: the flag RQ's work loop checks at each turn; we set it.
- ``_start_scheduler``: forks RQ's scheduler; we block stop signals around the fork.
- ``scheduler``: the scheduler being forked, which our fork hook patches in the child.
- ``unsubscribe`` and ``pubsub_thread``: we stop the pub/sub thread before RQ unsubscribes.
- ``should_run_maintenance_tasks`` (a property), ``run_maintenance_tasks``: recovery rides on them.
- ``dequeue_timeout`` (a property): how long an idle worker's BLPOP/BLMOVE waits for a job,
  read at each turn of RQ's work loop and passed on to Redis as it is; we shorten it, below a
  second where Redis takes fractions (6.0 and later). RQ's ``connection_timeout`` (the socket
  timeout it sets once, in ``Worker()``) is ``dequeue_timeout + 10``: ours is never longer than
  RQ's own, and is RQ's own until the worker starts.
- ``get_redis_server_version``: the server's version, which RQ caches on the connection.
- ``rq.Worker.setup_work_horse_signals``: RQ's signal setup in a new horse; ours follows.
- ``rq.Worker.horse_pid`` (a property): the horse a SIGTERM is passed on to.
- ``StopRequested`` (beside ``rq.worker.BaseWorker``): raised by RQ's handler in an idle worker.
- ``rq.scheduler.time``: the global whose ``sleep`` paces the scheduler; replaced in its process.
- ``rq.scheduler.RQScheduler.request_stop``: its stop handler, set from the attribute; wrapped.
- (not checkable) RQ starts its scheduler by forking the worker, so our fork hook runs in it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import math
import os
import select
import signal
import sys
import threading
import time
import types
import typing as t

import redis.exceptions
import rq
import rq.scheduler

from .exceptions import ConfigurationError

if t.TYPE_CHECKING:
    from types import FrameType

    from rq.worker import BaseWorker

    _Worker = BaseWorker
else:
    _Worker = object

#: The RQ versions whose internals this module was written against.
SUPPORTED = "rq>=2.3,<3"


class RQIncompatible(ConfigurationError):
    """The installed RQ lacks an internal our worker relies on (``flask mtasks worker``
    shows it as ``Error: ...``)."""


def rq_version() -> str:
    """The version of the RQ imported (its distribution's, if the module does not say)."""
    version = getattr(rq, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("rq")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _stop_requested_class() -> t.Any:
    """The ``StopRequested`` RQ's work loop catches: defined in the module of ``BaseWorker``
    in RQ 2.3, imported there from ``rq.exceptions`` in later versions."""
    base = getattr(getattr(rq, "worker", None), "BaseWorker", None)
    module = sys.modules.get(getattr(base, "__module__", ""))
    return getattr(module, "StopRequested", None)


def is_stop_request(error: BaseException) -> bool:
    """Whether ``error`` is RQ's way of ending an idle worker's loop on SIGTERM."""
    stop_requested = _stop_requested_class()
    return stop_requested is not None and isinstance(error, stop_requested)


_WORKER_METHODS = ("bootstrap", "request_stop", "_start_scheduler", "teardown", "unsubscribe")
_WORKER_ATTRIBUTES = ("_stop_requested", "scheduler", "pubsub_thread")


def _problems(worker: object | None) -> list[str]:
    problems: list[str] = []

    def expect(where: str, what: str, ok: bool) -> None:
        if not ok:
            problems.append(f"{where} ({what})")

    def method(owner: t.Any, name: str) -> bool:
        return callable(inspect.getattr_static(owner, name, None))

    def a_property(owner: t.Any, name: str) -> bool:
        return isinstance(inspect.getattr_static(owner, name, None), property)

    for cls in (rq.Worker, rq.SimpleWorker):
        for name in (*_WORKER_METHODS, "run_maintenance_tasks", "get_redis_server_version"):
            expect(f"rq.{cls.__name__}.{name}", "a method", method(cls, name))
        for name in ("should_run_maintenance_tasks", "dequeue_timeout", "is_horse"):
            expect(f"rq.{cls.__name__}.{name}", "a property", a_property(cls, name))
    expect(
        "rq.Worker.setup_work_horse_signals",
        "a method",
        method(rq.Worker, "setup_work_horse_signals"),
    )
    expect("rq.Worker.horse_pid", "a property", a_property(rq.Worker, "horse_pid"))
    stop_requested = _stop_requested_class()
    expect(
        "StopRequested beside rq.worker.BaseWorker",
        "an exception class",
        isinstance(stop_requested, type) and issubclass(stop_requested, Exception),
    )
    clock = vars(rq.scheduler).get("time")
    expect(
        "rq.scheduler.time",
        "a module global with sleep()",
        isinstance(clock, types.ModuleType) and callable(getattr(clock, "sleep", None)),
    )
    scheduler_class = getattr(rq.scheduler, "RQScheduler", None)
    expect(
        "rq.scheduler.RQScheduler.request_stop",
        "a method",
        scheduler_class is not None and method(scheduler_class, "request_stop"),
    )
    if worker is not None:
        for name in _WORKER_ATTRIBUTES:
            expect(
                f"{type(worker).__name__}().{name}", "set by RQ's Worker()", hasattr(worker, name)
            )
    return problems


def check(worker: object | None = None) -> None:
    """Raise :class:`RQIncompatible`, naming what is missing, unless RQ has all we rely on.

    With ``worker``, also check the attributes RQ sets on a worker it builds.
    """
    problems = _problems(worker)
    if problems:
        raise RQIncompatible(
            f"The installed RQ {rq_version()} lacks what the worker of flask-maintenance-tasks "
            f"relies on; missing or changed: {', '.join(problems)}. "
            f"Supported: {SUPPORTED}; install a version in that range."
        )


_installed = False
_install_lock = threading.Lock()


def install(worker: object | None = None) -> None:
    """Check RQ's internals (see :func:`check`), then register our fork hook, once."""
    global _installed
    check(worker)
    with _install_lock:
        if not _installed:
            os.register_at_fork(after_in_child=_scheduler_after_fork)
            _installed = True


def installed() -> bool:
    """Whether :func:`install` registered the fork hook in this process."""
    return _installed


# -- RQ's scheduler: a stop request ends its sleep -------------------------------------------

#: The worker forking RQ's scheduler and its thread, while it does; see
#: :meth:`StopsPromptly._start_scheduler`.
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


@contextlib.contextmanager
def _scheduler_fork(worker: object) -> t.Iterator[None]:
    """Around the fork of ``worker``'s scheduler: stop signals wait, and the child is patched.

    A Python-level handler inherited by the forked scheduler could lose a
    signal that arrives during the fork. Stop signals wait, blocked, until the
    fork is done: then this process notes them, and the scheduler gets the
    default action (see :func:`_scheduler_after_fork`, which also patches it).
    """
    global _forking_scheduler
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    _forking_scheduler = (worker, threading.get_ident())
    try:
        yield
    finally:
        _forking_scheduler = None
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


# -- mixins over RQ's worker classes ---------------------------------------------------------


class StopsPromptly(_Worker):
    """Closes gaps between SIGTERM and the exit of an RQ worker; checks RQ at start.

    RQ installs its signal handlers only after announcing that it listens and
    forking its scheduler: a SIGTERM in between would kill the worker outright.
    An idle worker's stop request lives only in an exception, lost if anything
    swallows it. On the way out the worker waits for its scheduler, which
    finishes a second's sleep before it stops (see :func:`_wake_on_stop`). And
    RQ unsubscribes before stopping its pub/sub thread, which, once it has read
    the reply, waits for a next message and holds the exit up for a second.
    And a stop request raised between a command and its reply leaves the
    reply on a pooled connection for the next command to misread.

    :meth:`on_stop_request` runs on the first stop signal RQ handles.
    """

    def on_stop_request(self) -> None:
        """Called on SIGTERM or SIGINT once RQ's handlers are in place, before RQ's own."""

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        install(self)
        return bool(super().work(*args, **kwargs))

    def bootstrap(self, *args: t.Any, **kwargs: t.Any) -> None:
        # Until RQ's handlers replace these, a stop request is only noted: the
        # work loop stops on its first turn.
        signal.signal(signal.SIGTERM, self._stop_before_loop)
        signal.signal(signal.SIGINT, self._stop_before_loop)
        super().bootstrap(*args, **kwargs)

    def _stop_before_loop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.on_stop_request()
        # RQ notes a request only while a job runs; when idle it raises
        # StopRequested from the handler, which code between RQ's loop and the
        # interrupted line may swallow. Noted, the request ends the loop at its
        # next turn all the same.
        self._stop_requested = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def _start_scheduler(self, *args: t.Any, **kwargs: t.Any) -> None:
        with _scheduler_fork(self):
            super()._start_scheduler(*args, **kwargs)

    def teardown(self) -> None:
        if not self.is_horse:
            # RQ raises an idle worker's stop request from its signal handler,
            # anywhere: between sending a command and reading its reply too.
            # redis-py then hands the connection back to its pool with the reply
            # still to come, and the next command on it (RQ's farewell pipeline)
            # reads that reply as its own. Idle connections are closed; the
            # farewell opens a fresh one. The pub/sub thread's is in use, kept.
            self.connection.connection_pool.disconnect(inuse_connections=False)
        super().teardown()  # type: ignore[no-untyped-call]

    def unsubscribe(self) -> None:
        thread = getattr(self, "pubsub_thread", None)
        if thread is not None:
            # Stopped first, the thread ends on the unsubscribe reply itself.
            thread.stop()
        super().unsubscribe()  # type: ignore[no-untyped-call]


class HorseHooks(_Worker):
    """The work horse of a forking RQ worker, through a hook of ours."""

    def in_work_horse(self) -> None:
        """Called in a new horse once RQ has set its signal handlers, before the job runs."""

    def signal_horse(self, signum: int) -> None:
        """Send ``signum`` to the work horse, if one runs (the horse only, not its group)."""
        if self.horse_pid:
            try:
                os.kill(self.horse_pid, signum)
            except ProcessLookupError:
                pass

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()  # type: ignore[no-untyped-call]
        self.in_work_horse()


#: The shortest wait for a job we ask of Redis: an interval shorter still does not
#: make an idle worker spin on Redis.
MIN_DEQUEUE_TIMEOUT = 0.05
#: The first Redis whose BLPOP and BLMOVE take a fractional timeout (5 wants an integer).
FRACTIONAL_TIMEOUTS = (6, 0, 0)


class MaintenanceHook(_Worker):
    """Adds a duty of ours to RQ's maintenance hook.

    An idle worker reaches the hook once per dequeue timeout (RQ's loop sends
    a heartbeat, runs the hook, then waits that long for a job); RQ's own
    maintenance runs when it is due, ours when :meth:`extra_maintenance_due`.

    RQ derives its dequeue timeout from ``worker_ttl`` in whole seconds, at
    least one. When :meth:`extra_maintenance_interval` is shorter, the worker
    waits for a job that long instead (never less than
    :data:`MIN_DEQUEUE_TIMEOUT`), fractions of a second included where Redis
    takes them: so our duty comes round on time even below a second.
    Heartbeats only come more often; RQ's worker key still lives
    ``worker_ttl + 60`` seconds.
    """

    #: Whether Redis takes fractional timeouts; ``None`` until the worker has asked.
    _fractional_timeouts: bool | None = None
    _working = False

    def extra_maintenance_due(self) -> bool:
        return False

    def extra_maintenance_interval(self) -> float | None:
        """Seconds an idle worker may wait for a job before our duty is due; ``None``: RQ's."""
        return None

    def work(self, *args: t.Any, **kwargs: t.Any) -> bool:
        self._working = True
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            self._working = False

    def _takes_fractions(self) -> bool:
        if self._fractional_timeouts is None:
            if not self._working:
                # In ``Worker()``, where RQ sizes its socket timeout on ours: no Redis yet.
                return False
            try:
                version = tuple(self.get_redis_server_version())  # type: ignore[no-untyped-call]
            except redis.exceptions.RedisError:
                return False  # Redis is away: whole seconds until it is back
            self._fractional_timeouts = version >= FRACTIONAL_TIMEOUTS
        return self._fractional_timeouts

    @property
    def dequeue_timeout(self) -> float:  # type: ignore[override]
        longest: int = super().dequeue_timeout  # RQ's, whole seconds
        interval = self.extra_maintenance_interval()
        if interval is None or interval >= longest:
            return longest
        if not self._takes_fractions():
            return max(1, math.ceil(interval))
        return max(MIN_DEQUEUE_TIMEOUT, interval)

    def run_extra_maintenance(self) -> None:
        pass

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return bool(super().should_run_maintenance_tasks) or self.extra_maintenance_due()

    def run_maintenance_tasks(self) -> None:
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        if self.extra_maintenance_due():
            self.run_extra_maintenance()
