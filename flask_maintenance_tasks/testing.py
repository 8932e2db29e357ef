"""Helpers for testing maintenance tasks, and a pytest plugin exposing them.

Run a task to the end inside the test, on the test's own app and database,
with no queue and no worker::

    from flask_maintenance_tasks.testing import run_task, run_task_interrupted

    def test_backfill(app):
        with app.app_context():
            run = run_task("BackfillWordCountTask")
        assert run.status == "succeeded"

The run returned holds what the task published with ``self.status``
(``run.published``), to assert on as on its progress::

    assert run_task("BackfillWordCountTask").published["skipped"] == 0

:func:`run_task_interrupted` stops the run after every item (or after items
picked at random from a seed) and resumes it from its cursor until it ends:
a task that passes with it is resumable, and, when it writes through the
app's session, applies each change once.

The pytest plugin (installed with the package) offers the same as the
fixtures ``mtasks_run`` and ``mtasks_run_interrupted``; they use the
project's ``app`` fixture and push its app context when none is active.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections
import contextlib
import random
import typing as t

from . import runner
from .iteration import shutdown_requested
from .job import perform_run
from .state import State, get_state

if t.TYPE_CHECKING:
    from datetime import datetime

    from flask import Flask

    from .models import Run
    from .task import Task

__all__ = ["resume_task", "retry_task_failures", "run_task", "run_task_interrupted"]

#: A run needing more slices than this is taken to be stuck (a throttle that
#: never lets go, say) and the helper fails instead of looping for ever.
MAX_SLICES = 100_000


class _SynchronousExecutor:
    """Collects the jobs a run asks for, so the test can perform them in turn."""

    #: The test performs every job at once: a run at a set time is refused here.
    keeps_schedules = False

    def __init__(self) -> None:
        self.jobs: collections.deque[tuple[int, str]] = collections.deque()

    def enqueue(
        self,
        run_id: int,
        job_id: str,
        *,
        delay: float = 0.0,
        at: datetime | None = None,
        queue: str | None = None,
    ) -> None:
        # Delays (throttle backoffs) are not waited for in a test.
        self.jobs.append((run_id, job_id))

    def is_waiting(self, job_id: str) -> bool:
        return any(job == job_id for _, job in self.jobs)

    def is_dead(self, job_id: str) -> bool:
        return False

    def overdue_since(self, job_id: str) -> datetime | None:
        return None

    def unschedule(self, job_id: str) -> None:
        pass


@contextlib.contextmanager
def _synchronous(state: State) -> t.Iterator[_SynchronousExecutor]:
    executor = _SynchronousExecutor()
    previous = state.executor
    state.executor = executor
    try:
        yield executor
    finally:
        state.executor = previous


@contextlib.contextmanager
def _interrupting(task_class: type[Task], stop_now: t.Callable[[], bool]) -> t.Iterator[None]:
    """Make the run stop (as on a worker shutdown) after the items ``stop_now`` picks."""
    own = "process" in vars(task_class)
    original = task_class.process

    def process(self: Task, *args: t.Any) -> None:
        original(self, *args)
        if stop_now():
            shutdown_requested.set()

    task_class.process = process  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own:
            task_class.process = original  # type: ignore[method-assign]
        else:
            del task_class.process
        shutdown_requested.clear()


def _perform_all(
    state: State, executor: _SynchronousExecutor, run_id: int, max_slices: int = MAX_SLICES
) -> Run:
    slices = 0
    while executor.jobs:
        slices += 1
        if slices > max_slices:
            raise RuntimeError(
                f"Run #{run_id} did not end after {max_slices:,} slices: does the task "
                "start again from the beginning when resumed, or is a throttle stuck on?"
            )
        job_run, job_id = executor.jobs.popleft()
        shutdown_requested.clear()
        perform_run(job_run, job_id)
    shutdown_requested.clear()
    run = runner.get_run(state, run_id)
    assert run is not None
    return run


def run_task(
    name: str,
    arguments: t.Mapping[str, t.Any] | None = None,
    *,
    metadata: t.Any = None,
    csv_file: t.Any = None,
    error_policy: str | None = None,
    max_failures: int | None = None,
    max_failure_rate: float | None = None,
    dry_run: bool = False,
    partitions: int | None = None,
) -> Run:
    """Start a run of task ``name`` in the current app and perform it to its end.

    The run goes through the same runner and iteration loop as in production,
    on the current thread; time slices and throttle backoffs are performed
    at once. Returns the finished run, whatever its status. A CSV task takes
    its file as ``mtasks.run`` does: ``csv_file=`` a path, a binary file
    object or ``(file name, file object)``. ``error_policy``,
    ``max_failures`` and ``max_failure_rate`` override the task's, and
    ``dry_run=True`` makes it a dry run, and ``partitions=`` cuts it, as for
    ``mtasks.run`` (the partitions' jobs then run one after the other).

    :raises TaskNotFound, InvalidArguments, TaskAlreadyRunning, CSVFileError:
        as ``mtasks.run``.
    """
    state = get_state()
    with _synchronous(state) as executor:
        run = runner.run(
            state,
            name,
            arguments or {},
            metadata=metadata,
            csv_file=csv_file,
            error_policy=error_policy,
            max_failures=max_failures,
            max_failure_rate=max_failure_rate,
            dry_run=dry_run,
            partitions=partitions,
        )
        return _perform_all(state, executor, run.id)


def retry_task_failures(run_id: int, *, error_policy: str | None = None) -> Run:
    """Retry the unresolved failed items of run ``run_id`` and perform the retry to its end.

    Returns the new run. Its failures, if items fail again, are in its own
    ledger; the retried run's failures are marked resolved, failed again or
    gone.

    :raises CannotRetry: as ``mtasks.retry_failures``.
    """
    state = get_state()
    with _synchronous(state) as executor:
        run = runner.retry_failures(state, run_id, error_policy=error_policy)
        return _perform_all(state, executor, run.id)


def resume_task(run_id: int) -> Run:
    """Resume a paused or errored run in the current app and perform it to its end.

    :raises InvalidTransition: the run is neither paused nor errored.
    """
    state = get_state()
    with _synchronous(state) as executor:
        runner.resume(state, run_id)
        return _perform_all(state, executor, run_id)


def run_task_interrupted(
    name: str,
    arguments: t.Mapping[str, t.Any] | None = None,
    *,
    every: int = 1,
    seed: int | None = None,
    probability: float = 0.3,
    metadata: t.Any = None,
    max_slices: int = MAX_SLICES,
    csv_file: t.Any = None,
    error_policy: str | None = None,
    dry_run: bool = False,
) -> Run:
    """Like :func:`run_task`, but interrupt the run again and again until it ends.

    By default the run is interrupted after every item (``every=1``) or every
    ``every`` items. With ``seed``, it is instead interrupted after each item
    with ``probability``, from a random generator seeded with ``seed`` (the
    same seed gives the same interruptions). Each interruption commits the
    tick, marks the run ``interrupted`` and resumes it from its cursor, as a
    worker shutdown does. A run still going after ``max_slices`` slices
    raises :class:`RuntimeError`: the task probably does not resume from its
    cursor. ``csv_file`` is the file of a CSV task, ``error_policy``
    overrides the task's and ``dry_run`` makes it a dry run, as for
    :func:`run_task`.
    """
    if every < 1:
        raise ValueError("every must be at least 1")
    state = get_state()
    task_class = state.registry.get(name)
    if seed is not None:
        generator = random.Random(seed)

        def stop_now() -> bool:
            return generator.random() < probability
    else:
        count = 0

        def stop_now() -> bool:
            nonlocal count
            count += 1
            return count % every == 0

    with _synchronous(state) as executor, _interrupting(task_class, stop_now):
        run = runner.run(
            state,
            name,
            arguments or {},
            metadata=metadata,
            csv_file=csv_file,
            error_policy=error_policy,
            dry_run=dry_run,
        )
        return _perform_all(state, executor, run.id, max_slices)


# -- the pytest plugin ------------------------------------------------------

try:
    import pytest as _pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    _pytest = None  # type: ignore[assignment]


def _in_app(app: Flask, helper: t.Callable[..., Run]) -> t.Callable[..., Run]:
    """``helper`` called in ``app``, pushing its context when none is active."""
    from flask import has_app_context

    def run(name: str, arguments: t.Mapping[str, t.Any] | None = None, **kwargs: t.Any) -> Run:
        if has_app_context():
            return helper(name, arguments, **kwargs)
        with app.app_context():
            return helper(name, arguments, **kwargs)

    return run


if _pytest is not None:

    @_pytest.fixture
    def mtasks_run(app: Flask) -> t.Callable[..., Run]:
        """:func:`run_task` in the app of the project's ``app`` fixture."""
        return _in_app(app, run_task)

    @_pytest.fixture
    def mtasks_run_interrupted(app: Flask) -> t.Callable[..., Run]:
        """:func:`run_task_interrupted` in the app of the project's ``app`` fixture."""
        return _in_app(app, run_task_interrupted)
