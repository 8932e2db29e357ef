"""The errors users of the extension can catch.

Every error raised by the runner is a :class:`MaintenanceTasksError`, and is
raised before anything is written, except :class:`EnqueueError`, which leaves
the run ``errored`` with its cause so that nothing stays ``enqueued`` forever.
"""

from __future__ import annotations

import typing as t


class MaintenanceTasksError(Exception):
    """Base class of every error raised by flask-maintenance-tasks."""


class TaskNotFound(MaintenanceTasksError, LookupError):
    """No task of that name exists in the tasks package."""

    def __init__(self, name: str, detail: str | None = None) -> None:
        self.name = name
        message = f"Task {name!r} not found."
        if detail:
            message = f"{message} {detail}"
        super().__init__(message)


class InvalidArguments(MaintenanceTasksError, ValueError):
    """The arguments given to a task do not satisfy its ``Parameters``.

    :attr:`errors` maps each offending field (``"__root__"`` for errors not
    tied to one field) to its messages.
    """

    def __init__(self, task_name: str, errors: dict[str, list[str]]) -> None:
        self.task_name = task_name
        self.errors = errors
        details = "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())
        super().__init__(f"Invalid arguments for {task_name}: {details}")


class InvalidTransition(MaintenanceTasksError):
    """The run is in a status that does not allow the requested action."""

    def __init__(self, action: str, status: str, run_id: int | None = None) -> None:
        self.action = action
        self.status = status
        self.run_id = run_id
        article = "an" if status[:1] in "aeiou" else "a"
        super().__init__(f"Cannot {action} {article} {status} run.")


class TaskAlreadyRunning(MaintenanceTasksError):
    """The task already has an active run and does not allow concurrent runs."""

    def __init__(self, task_name: str, run_id: int | None = None) -> None:
        self.task_name = task_name
        self.run_id = run_id
        which = f" (run #{run_id})" if run_id is not None else ""
        super().__init__(
            f"{task_name} already has an active run{which}; wait for it to end, cancel it, "
            "or set allow_concurrent_runs = True on the task."
        )


class EnqueueError(MaintenanceTasksError):
    """The run was saved but its job could not be handed to the executor.

    The run is ``errored`` with the underlying cause; resume it once the queue
    is reachable again.
    """

    def __init__(self, run_id: int, cause: BaseException) -> None:
        self.run_id = run_id
        self.cause = cause
        super().__init__(f"The job of run #{run_id} could not be enqueued: {cause}")


class ConfigurationError(MaintenanceTasksError):
    """The extension, or a task definition, is set up wrongly."""


__all__: t.Final = [
    "ConfigurationError",
    "EnqueueError",
    "InvalidArguments",
    "InvalidTransition",
    "MaintenanceTasksError",
    "TaskAlreadyRunning",
    "TaskNotFound",
]
