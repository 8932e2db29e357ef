"""The errors users of the extension can catch.

Every error raised by the runner is a :class:`MaintenanceTasksError`, and is
raised before anything is written, except :class:`EnqueueError`, which leaves
the run ``errored`` with its cause so that nothing stays ``enqueued`` forever.

Their messages are translated when they are turned into text (``str(error)``),
in the language of that moment: the reader's in a request or a command, English
where the message is stored (a run's error, an audit event) or read by programs.
"""

from __future__ import annotations

import typing as t

from .i18n import LazyString, current_locale, lazy_gettext, lazy_pgettext, number

#: A message: plain text, or text translated when it is read.
Message: t.TypeAlias = str | LazyString


class Word:
    """A word quoted in a message: as it is in English, translated in other languages.

    For the status or the action an English sentence spells in lower case
    ("Cannot pause a succeeded run."), which another language names its own way.
    """

    __slots__ = ("english", "translated")

    def __init__(self, english: str, translated: object | None) -> None:
        self.english = english
        self.translated = translated

    def __str__(self) -> str:
        if self.translated is None or current_locale() == "en":
            return self.english
        return str(self.translated)


#: The statuses as a sentence names them in another language (same messages as
#: :data:`flask_maintenance_tasks.formatting.STATUS_NAMES`).
STATUS_WORDS: t.Final[dict[str, LazyString]] = {
    "scheduled": lazy_pgettext("status", "Scheduled"),
    "enqueued": lazy_pgettext("status", "Enqueued"),
    "running": lazy_pgettext("status", "Running"),
    "pausing": lazy_pgettext("status", "Pausing"),
    "paused": lazy_pgettext("status", "Paused"),
    "interrupted": lazy_pgettext("status", "Interrupted"),
    "cancelling": lazy_pgettext("status", "Cancelling"),
    "cancelled": lazy_pgettext("status", "Cancelled"),
    "succeeded": lazy_pgettext("status", "Succeeded"),
    "errored": lazy_pgettext("status", "Errored"),
}

#: The actions a status may refuse, as "Cannot ... a paused run." names them.
ACTION_WORDS: t.Final[dict[str, LazyString]] = {
    "start": lazy_pgettext("refused action", "start"),
    "carry on": lazy_pgettext("refused action", "carry on"),
    "progress": lazy_pgettext("refused action", "progress"),
    "pause": lazy_pgettext("refused action", "pause"),
    "cancel": lazy_pgettext("refused action", "cancel"),
    "interrupt": lazy_pgettext("refused action", "interrupt"),
    "resume": lazy_pgettext("refused action", "resume"),
    "succeed": lazy_pgettext("refused action", "succeed"),
    "error": lazy_pgettext("refused action", "error"),
    "recover": lazy_pgettext("refused action", "recover"),
    "requeue": lazy_pgettext("refused action", "requeue"),
    "set the speed of": lazy_pgettext("refused action", "set the speed of"),
}


def status_word(status: str) -> Word:
    """``status`` as a sentence quotes it: ``succeeded`` in English, 成功 in Japanese."""
    return Word(str(status), STATUS_WORDS.get(str(status)))


class MaintenanceTasksError(Exception):
    """Base class of every error raised by flask-maintenance-tasks."""


class LazyNumber:
    """A number as the language of the moment writes it (``4,000``), when it is read."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __str__(self) -> str:
        return number(self.value)


def message_of(error: BaseException) -> str:
    """``str(error)``, or a stand-in when the exception cannot say what it is."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} whose message could not be read>"


class TaskNotFound(MaintenanceTasksError, LookupError):
    """No task of that name exists in the tasks package."""

    def __init__(self, name: str, detail: Message | None = None) -> None:
        self.name = name
        message: Message
        if detail:
            message = lazy_gettext(
                "Task %(name)s not found. %(detail)s", name=repr(name), detail=detail
            )
        else:
            message = lazy_gettext("Task %(name)s not found.", name=repr(name))
        super().__init__(message)


class RunNotFound(MaintenanceTasksError, LookupError):
    """No run has that id (it never existed, or was deleted, by a prune say).

    .. versionadded:: 0.2
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(lazy_gettext("Run #%(id)s not found.", id=run_id))


class RunBusy(MaintenanceTasksError):
    """The run's row stayed locked by another transaction past the lock timeout.

    A worker is writing the run at that moment (a work horse frozen between
    its progress and its commit holds it for as long as it is frozen). The
    action gave up after ``MAINTENANCE_TASKS_LOCK_TIMEOUT`` seconds instead
    of waiting, and changed nothing: asking again later is safe. For a start
    refused so, :attr:`run_id` is ``None`` and :attr:`task_name` says which
    task's active run held the way.

    .. versionadded:: 0.2
    """

    def __init__(self, run_id: int | None, task_name: str | None = None) -> None:
        #: The id of the busy run; ``None`` for a start that met its task's active run.
        self.run_id = run_id
        #: The task of a start refused so; ``None`` for an action on a run.
        self.task_name = task_name
        if run_id is not None:
            message = lazy_gettext(
                "Run #%(id)s is busy: a worker is writing it right now. "
                "Nothing was changed; try again in a moment.",
                id=run_id,
            )
        else:
            message = lazy_gettext(
                "%(task)s is busy: a worker is writing its active run right now. "
                "Nothing was changed; try again in a moment.",
                task=task_name,
            )
        super().__init__(message)


class InvalidArguments(MaintenanceTasksError, ValueError):
    """The arguments given to a task do not satisfy its ``Parameters``.

    :attr:`errors` maps each offending field (``"__root__"`` for errors not
    tied to one field) to its messages.
    """

    def __init__(self, task_name: Message, errors: dict[str, list[str]]) -> None:
        self.task_name = task_name
        self.errors = errors
        details = "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())
        super().__init__(
            lazy_gettext(
                "Invalid arguments for %(task)s: %(details)s", task=task_name, details=details
            )
        )


class InvalidTransition(MaintenanceTasksError):
    """The run is in a status that does not allow the requested action."""

    def __init__(self, action: str, status: str, run_id: int | None = None) -> None:
        self.action = action
        self.status = status
        self.run_id = run_id
        words = {"action": Word(action, ACTION_WORDS.get(action)), "status": status_word(status)}
        if status[:1] in "aeiou":
            message = lazy_gettext("Cannot %(action)s an %(status)s run.", **words)
        else:
            message = lazy_gettext("Cannot %(action)s a %(status)s run.", **words)
        super().__init__(message)


class TaskAlreadyRunning(MaintenanceTasksError):
    """The task already has an active run and does not allow concurrent runs."""

    def __init__(self, task_name: str, run_id: int | None = None) -> None:
        self.task_name = task_name
        self.run_id = run_id
        if run_id is not None:
            message = lazy_gettext(
                "%(task)s already has an active run (run #%(id)s); wait for it to end, "
                "cancel it, or set allow_concurrent_runs = True on the task.",
                task=task_name,
                id=run_id,
            )
        else:
            message = lazy_gettext(
                "%(task)s already has an active run; wait for it to end, cancel it, "
                "or set allow_concurrent_runs = True on the task.",
                task=task_name,
            )
        super().__init__(message)


class EnqueueError(MaintenanceTasksError):
    """The run was saved but its job could not be handed to the executor.

    The run is ``errored`` with the underlying cause; resume it once the queue
    is reachable again.
    """

    def __init__(self, run_id: int, cause: BaseException) -> None:
        self.run_id = run_id
        self.cause = cause
        super().__init__(
            lazy_gettext(
                "The job of run #%(id)s could not be enqueued: %(cause)s", id=run_id, cause=cause
            )
        )


class ConfigurationError(MaintenanceTasksError):
    """The extension, or a task definition, is set up wrongly."""


class CSVFileError(MaintenanceTasksError, ValueError):
    """A CSV file was missing, unexpected, unreadable or malformed.

    Raised by ``run`` before anything is written when the file cannot be
    used (a CSV task without a file, a file for a task that takes none, an
    empty, binary or wrongly encoded file, a missing required column, a
    ragged row among the first ones). A problem found further into the file
    while the run reads it errors the run with this class; :attr:`row` and
    :attr:`line` then say where (both 1-based: ``row`` counts data rows,
    ``line`` counts lines of the file, the header being line 1).
    """

    def __init__(
        self, message: Message, *, row: int | None = None, line: int | None = None
    ) -> None:
        self.row = row
        self.line = line
        super().__init__(message)


class CSVFileTooLarge(CSVFileError):
    """The CSV file is larger than ``MAINTENANCE_TASKS_MAX_CSV_BYTES``; nothing was stored.

    A web front end answers it with status 413. :attr:`size` is the file's
    size in bytes, or ``None`` when it was read from a stream and only known
    to exceed :attr:`limit`.
    """

    def __init__(self, filename: str, limit: int, size: int | None = None) -> None:
        self.filename = filename
        self.limit = limit
        self.size = size
        message: Message
        if size is not None:
            message = lazy_gettext(
                "%(file)s is too large: the limit is %(limit)s bytes "
                "(MAINTENANCE_TASKS_MAX_CSV_BYTES) and the file has %(size)s bytes.",
                file=filename,
                limit=LazyNumber(limit),
                size=LazyNumber(size),
            )
        else:
            message = lazy_gettext(
                "%(file)s is too large: the limit is %(limit)s bytes "
                "(MAINTENANCE_TASKS_MAX_CSV_BYTES) and the file has more than that.",
                file=filename,
                limit=LazyNumber(limit),
            )
        super().__init__(message)


class TooManyFailures(MaintenanceTasksError):
    """A run under the ``skip`` error policy passed its failure limit; it is ``errored``.

    The run's error is this exception: :attr:`failures` items failed out of
    :attr:`processed`, more than ``max_failures`` or ``max_failure_rate``
    allow. Every failed item, the last one included, is in the run's ledger.
    """

    def __init__(self, message: str, *, failures: int, processed: int) -> None:
        self.failures = failures
        self.processed = processed
        super().__init__(message)


class DryRunCommit(MaintenanceTasksError):
    """A task committed the session during a dry run; the commit was stopped before it happened.

    The dry run errors with this class, naming the item whose ``process``
    asked for the commit; nothing was written.
    """


class SessionRolledBack(MaintenanceTasksError):
    """A task rolled the session back while a tick was in progress.

    The writes of the tick's earlier items were undone with it, so the run
    errors at its last committed item instead of moving on without them;
    resuming it processes those items again.
    """


class InvalidStatus(MaintenanceTasksError, ValueError):
    """A task published a status value that cannot be kept: not JSON, or past the size limit.

    Raised by ``self.status`` in the task, where the value is given; it errors
    the run whatever the task's error policy, with a message naming the key.
    ``key`` is the offending key.

    .. versionadded:: 0.2
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class CannotRetry(MaintenanceTasksError):
    """A run's failed items cannot be retried: there are none, or its task cannot find them.

    Raised by ``retry_failures`` before anything is written.
    """

    def __init__(self, run_id: int, reason: Message) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(
            lazy_gettext(
                "Cannot retry the failures of run #%(id)s: %(reason)s", id=run_id, reason=reason
            )
        )


__all__: t.Final = [
    "CSVFileError",
    "CSVFileTooLarge",
    "CannotRetry",
    "ConfigurationError",
    "DryRunCommit",
    "EnqueueError",
    "InvalidArguments",
    "InvalidStatus",
    "InvalidTransition",
    "MaintenanceTasksError",
    "RunNotFound",
    "SessionRolledBack",
    "TaskAlreadyRunning",
    "TaskNotFound",
    "TooManyFailures",
]


class PartitionErrored(MaintenanceTasksError):
    """A partition of a run errored: the run's error, naming the partition.

    ``after_error`` of a partitioned run receives it; the run's ``error_class``
    and backtrace are the partition's own error's.

    .. versionadded:: 0.2
    """

    def __init__(self, message: str, *, partition: int, run_id: int) -> None:
        super().__init__(message)
        #: The partition's place among the run's partitions, from 0.
        self.partition = partition
        #: The id of the partition's own run.
        self.run_id = run_id
