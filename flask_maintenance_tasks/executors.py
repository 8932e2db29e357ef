"""Where run jobs execute: RQ in production, a thread pool in development.

``perform_run`` knows nothing of either; an executor only has to call
``run_job(run_id, job_id)`` in the app, now or after a delay.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

if t.TYPE_CHECKING:
    from flask import Flask

    from .config import Settings

#: What an executor calls, inside the app: ``perform(run_id, job_id)``.
Perform = t.Callable[[int, str], None]

logger = logging.getLogger("flask_maintenance_tasks")

JOB_FUNCTION = "flask_maintenance_tasks.job.run_job"


class Executor(t.Protocol):
    #: Whether a job due later survives a restart of this process (see :meth:`enqueue`'s ``at``).
    keeps_schedules: bool

    def enqueue(
        self,
        run_id: int,
        job_id: str,
        *,
        delay: float = 0.0,
        at: datetime | None = None,
        queue: str | None = None,
    ) -> None:
        """Have ``run_job(run_id, job_id)`` called, after ``delay`` seconds or at ``at``.

        ``queue`` is the task's own queue (:attr:`Task.queue`); ``None``: the app's.
        """

    def is_waiting(self, job_id: str) -> bool:
        """Whether a job with this id waits its turn: queued or scheduled, not started.

        Recovery leaves alone a run whose job is waiting, however long the
        queue; a started job proves it is alive by the run's heartbeat instead.
        """

    def is_dead(self, job_id: str) -> bool:
        """Whether the job with this id is known never to run (again).

        Failed, stopped, canceled or gone: recovery hands on a run whose job is
        dead without waiting for ``MAINTENANCE_TASKS_STUCK_AFTER``. ``False``
        when the executor cannot tell.
        """

    def overdue_since(self, job_id: str) -> datetime | None:
        """When the job with this id is due, while it still waits for its time.

        ``None`` once it left the schedule (queued, started, gone) or when the
        executor cannot tell. Recovery hands on a run whose job is still
        waiting well after that time: nothing moved it.
        """

    def unschedule(self, job_id: str) -> None:
        """Take the job with this id out of the schedule, if it still waits there.

        Best effort: the run's new job id is what keeps a superseded job from writing.
        """


#: About how long a worker's Redis commands keep trying through an outage (see
#: :meth:`RQExecutor.worker_connection`): waits of 0.2, 0.4 and 0.8 s, then a second.
WORKER_RETRY_SECONDS = 12.4


def worker_retry() -> Retry:
    """The retry policy of a worker's Redis connection: :data:`WORKER_RETRY_SECONDS` in all."""
    # A lost or refused connection, or a Redis still loading its data, is tried again;
    # a timeout is not: a server silent for longer than RQ's socket timeout is not
    # coming back soon, and RQ's worker quits on it, as it should.
    return Retry(
        ExponentialBackoff(cap=1.0, base=0.1), retries=14, supported_errors=(RedisConnectionError,)
    )


class RQExecutor:
    """Enqueues slices on an RQ queue; delayed slices go through RQ's scheduler."""

    #: A job due later waits in RQ's scheduled registry, in Redis: no worker holds it.
    keeps_schedules = True

    def __init__(self, redis_url: str, queue_name: str, max_job_runtime: float) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        # RQ kills a job that outlives its timeout; a slice hands on after
        # max_job_runtime, so leave ample room for one slow last item.
        self.job_timeout = int(max(3600.0, 4 * max_job_runtime))
        self._local = threading.local()

    @property
    def connection(self) -> Redis:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = Redis.from_url(self.redis_url)
            self._local.connection = connection
        return connection

    def queue(self, name: str | None = None, connection: Redis | None = None) -> Queue:
        return Queue(name or self.queue_name, connection=connection or self.connection)

    def worker_connection(self) -> Redis:
        """A Redis connection for a worker process, whose commands ride out a short outage.

        RQ's worker retries a lost connection only while it waits for a job;
        anywhere else (watching its work horse, a job's bookkeeping, its
        heartbeat after a job) the error ends the worker. So a Redis restart, a
        failover or a network blip would take down every worker busy at that
        moment. On this connection each command tries again for about
        :data:`WORKER_RETRY_SECONDS` before it gives up, as redis-py's retries
        allow (the connection's own default gives up after a second or two).
        """
        return Redis.from_url(self.redis_url, retry=worker_retry())

    def enqueue(
        self,
        run_id: int,
        job_id: str,
        *,
        delay: float = 0.0,
        at: datetime | None = None,
        queue: str | None = None,
    ) -> None:
        rq_queue = self.queue(queue)
        options: dict[str, t.Any] = {
            "job_id": job_id,
            "job_timeout": self.job_timeout,
            "result_ttl": 600,
            "failure_ttl": 7 * 24 * 3600,
            "description": f"maintenance task run #{run_id}",
        }
        if at is not None:
            rq_queue.enqueue_at(at, JOB_FUNCTION, run_id, job_id, **options)
        elif delay > 0:
            rq_queue.enqueue_in(timedelta(seconds=delay), JOB_FUNCTION, run_id, job_id, **options)
        else:
            rq_queue.enqueue(JOB_FUNCTION, run_id, job_id, **options)

    def is_waiting(self, job_id: str) -> bool:
        """Scheduled, deferred, or queued *and still in its queue*.

        A worker killed between taking the job off the queue and starting it
        leaves the job ``queued`` in no queue (in RQ's intermediate queue,
        which RQ cleans up only at its maintenance, every ten minutes): that
        job waits for nothing, and its run must be recovered once stale. Should
        a live worker be starting it at that very moment, the hand-over is
        fenced: the job then finds another job id on its run and stops.
        """
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return False
        status = job.get_status()
        if status == JobStatus.QUEUED:
            return self.queue(job.origin).get_job_position(job_id) is not None
        return status in (JobStatus.SCHEDULED, JobStatus.DEFERRED)

    def is_dead(self, job_id: str) -> bool:
        """Failed, stopped or canceled in RQ, or gone from Redis.

        A job that is queued, scheduled, deferred or started is alive; one that
        finished has left its run in a final status or handed it to a new job.
        """
        try:
            status = Job.fetch(job_id, connection=self.connection).get_status()
        except NoSuchJobError:
            return True
        return status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)

    def _queue_of(self, job_id: str) -> Queue:
        """The queue the job was put on (a task may have its own), or the app's."""
        try:
            origin = Job.fetch(job_id, connection=self.connection).origin
        except NoSuchJobError:
            origin = None
        return self.queue(origin or None)

    def overdue_since(self, job_id: str) -> datetime | None:
        """The job's score in its queue's scheduled registry, while it is there (whole seconds)."""
        registry = self._queue_of(job_id).scheduled_job_registry
        score = self.connection.zscore(registry.key, job_id)
        return None if score is None else datetime.fromtimestamp(score, timezone.utc)

    def unschedule(self, job_id: str) -> None:
        """Delete the job if it still waits in RQ's scheduled registry.

        A scheduler moving it at the same moment may still queue it: it then
        finds its run handed to another job and stops without writing.
        """
        registry = self._queue_of(job_id).scheduled_job_registry
        if self.connection.zrem(registry.key, job_id):
            try:
                Job.fetch(job_id, connection=self.connection).delete()
            except NoSuchJobError:
                pass

    def worker_heartbeats(
        self, timeout: float = 2.0, queues: t.Iterable[str] = ()
    ) -> dict[str, datetime | None] | None:
        """The last heartbeat of each RQ worker on our queue or on one of ``queues``, by name.

        ``None`` when Redis cannot say within ``timeout`` seconds: a connection
        of its own, with timeouts, so that an unreachable Redis slows a metrics
        scrape by at most that much.
        """
        connection = Redis.from_url(
            self.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            found: dict[str, datetime | None] = {}
            for name in dict.fromkeys([self.queue_name, *queues]):
                queue = Queue(name, connection=connection)
                for worker in Worker.all(connection=connection, queue=queue):
                    found[worker.name] = worker.last_heartbeat
            return found
        except (RedisError, OSError):
            return None
        finally:
            connection.close()

    def worker_count(self, queue: str | None = None) -> int | None:
        """How many RQ workers listen on ``queue`` (default: the app's); ``None`` while Redis
        cannot say."""
        try:
            return int(Worker.count(connection=self.connection, queue=self.queue(queue)))
        except RedisError:
            return None


class InProcessExecutor:
    """Runs slices on threads of this process: zero set-up, nothing survives a restart."""

    #: A timer of this process: it dies with it (so runs at a set time are refused).
    keeps_schedules = False

    def __init__(self, app: Flask, perform: Perform, max_workers: int = 4) -> None:
        self.app = app
        self._perform_run = perform
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="mtasks")
        self._pending: set[Future[None] | threading.Timer] = set()
        self._waiting: set[str] = set()
        self._lock = threading.Lock()

    def _perform(self, run_id: int, job_id: str) -> None:
        with self._lock:
            self._waiting.discard(job_id)
        try:
            with self.app.app_context():
                self._perform_run(run_id, job_id)
        except Exception:
            logger.exception("Run #%s failed in the in-process executor", run_id)

    def _submit(self, run_id: int, job_id: str) -> None:
        future = self._pool.submit(self._perform, run_id, job_id)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, item: t.Any) -> None:
        with self._lock:
            self._pending.discard(item)

    def enqueue(
        self,
        run_id: int,
        job_id: str,
        *,
        delay: float = 0.0,
        at: datetime | None = None,
        queue: str | None = None,
    ) -> None:
        # One pool runs every queue's jobs: a task's queue makes no difference here.
        if at is not None:
            delay = max(delay, (at - datetime.now(timezone.utc)).total_seconds())
        with self._lock:
            self._waiting.add(job_id)
        if delay <= 0:
            self._submit(run_id, job_id)
            return
        timer = threading.Timer(delay, self._timer_fired, args=(run_id, job_id))
        timer.daemon = True
        with self._lock:
            self._pending.add(timer)
        timer.start()

    def _timer_fired(self, run_id: int, job_id: str) -> None:
        current = threading.current_thread()
        self._forget(current)
        self._submit(run_id, job_id)

    def is_waiting(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._waiting

    def is_dead(self, job_id: str) -> bool:
        # A job of another process (a web server, a command) cannot be seen from here.
        return False

    def overdue_since(self, job_id: str) -> datetime | None:
        # A timer of this process fires on time or dies with the process.
        return None

    def unschedule(self, job_id: str) -> None:
        pass

    def join(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued or running; ``False`` on timeout (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return True
            for item in pending:
                if isinstance(item, Future):
                    try:
                        item.result(timeout=max(0.0, deadline - time.monotonic()))
                    except Exception:
                        pass
                else:
                    item.join(timeout=max(0.0, deadline - time.monotonic()))
        return False


def make_executor(app: Flask, settings: Settings, perform: Perform) -> Executor:
    """RQ when ``MAINTENANCE_TASKS_REDIS_URL`` is set, else threads calling ``perform``."""
    if settings.redis_url:
        return RQExecutor(settings.redis_url, settings.queue, settings.max_job_runtime)
    return InProcessExecutor(app, perform)
