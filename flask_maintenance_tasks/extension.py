"""The Flask extension object: it wires the layers together and is the Python API.

This is the only module that knows every part: configuration, state, the
engine, the command line and the dashboard. Nothing imports it but the
package's ``__init__``.
"""

from __future__ import annotations

import logging
import typing as t
from datetime import datetime

import click
from flask import Blueprint, Flask
from flask_sqlalchemy import SQLAlchemy

from . import audit, models, preview, retention, runner
from .cli import mtasks_cli
from .config import CONFIG_PREFIX, Settings, short_retention_warning
from .csv.storage import build_storage
from .executors import make_executor
from .job import perform_run
from .models import Failure, Run
from .preview import Preview
from .registry import Registry
from .retention import Pruned
from .state import EXTENSION_KEY, Authorize, State, get_state
from .web import register_dashboard

logger = logging.getLogger("flask_maintenance_tasks")


def _serving() -> bool:
    """Whether the app is loaded to serve (``flask run``, a WSGI server), not for a command.

    The start-up warnings are for whoever runs the server; every ``flask``
    command loads the app too, and repeating them there is noise.
    """
    context = click.get_current_context(silent=True)
    return context is None or context.info_name == "run"


class MaintenanceTasks:
    """The flask-maintenance-tasks extension.

    Register it like any Flask extension, directly or with an app factory::

        mtasks = MaintenanceTasks()
        mtasks.init_app(app, db=db)

    The object never stores the app; everything it needs lives in
    ``app.extensions["maintenance_tasks"]``, so one object can serve several
    apps. The Python API (:meth:`run`, :meth:`pause`, ...) acts on the current
    app.

    :param app: the app to register on right away.
    :param db: the app's ``SQLAlchemy`` object; defaults to
        ``app.extensions["sqlalchemy"]``.
    :param parent: see :meth:`init_app`.
    :param authorize: see :meth:`init_app`.
    :param options: any option of :class:`Settings`, lower-case.

    Everything given here is a default for each later :meth:`init_app`, which
    may override it.
    """

    def __init__(
        self,
        app: Flask | None = None,
        db: SQLAlchemy | None = None,
        *,
        parent: Blueprint | None = None,
        authorize: Authorize | None = None,
        **options: t.Any,
    ) -> None:
        self._db = db
        self._parent = parent
        self._authorize = authorize
        self._options = options
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        db: SQLAlchemy | None = None,
        *,
        parent: Blueprint | None = None,
        authorize: Authorize | None = None,
        **options: t.Any,
    ) -> None:
        """Register the extension on ``app``.

        :param parent: a host blueprint under which the dashboard is nested, so
            that the parent's ``before_request`` hooks guard every dashboard route.
        :param authorize: ``authorize(action, task_name, run) -> bool``, asked in
            the request for every dashboard view and action.
        :raises RuntimeError: if the extension is already registered on ``app``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flask-maintenance-tasks is already registered on this app; call init_app once."
            )
        db = db if db is not None else self._db
        parent = parent if parent is not None else self._parent
        authorize = authorize if authorize is not None else self._authorize
        if db is None:
            db = app.extensions.get("sqlalchemy")
            if db is None:
                raise RuntimeError(
                    "flask-maintenance-tasks needs Flask-SQLAlchemy: call db.init_app(app) "
                    "before mtasks.init_app(app), or pass db=."
                )
        overrides = {**self._options, **options}
        settings = Settings.resolve(app.config, overrides, import_name=app.import_name)
        for key, closest in Settings.unknown_keys(app.config):
            hint = f"; did you mean {closest}?" if closest else "."
            logger.warning("app.config[%r] is not a flask-maintenance-tasks option%s", key, hint)
        # Said by every command too: workers and `flask mtasks prune` are the ones that delete.
        given = overrides.get("retention", app.config.get(CONFIG_PREFIX + "RETENTION"))
        short = short_retention_warning(settings.retention, given)
        if short is not None:
            logger.warning(short)

        # Our tables join the app's metadata: db.create_all() creates them and
        # Alembic's autogenerate sees them as already managed.
        models.copy_tables(db.metadata)

        state = State(
            extension=self,
            app=app,
            db=db,
            settings=settings,
            registry=Registry(settings.tasks_package or f"{app.import_name}.maintenance"),
            executor=make_executor(app, settings, perform_run),
            csv_storage=build_storage(settings.csv_storage, app.instance_path, lambda: db.engine),
            parent=parent,
            authorize=authorize,
        )
        app.extensions[EXTENSION_KEY] = state

        if "mtasks" not in app.cli.commands:
            app.cli.add_command(mtasks_cli)

        register_dashboard(app, state, warn=_serving())

        if settings.redis_url is None and _serving():
            logger.warning(
                "MAINTENANCE_TASKS_REDIS_URL is not set: runs execute on an in-process executor; "
                "queued runs do not survive a restart of this process."
            )

    # -- the Python API ---------------------------------------------------

    def run(
        self,
        name: str,
        arguments: t.Mapping[str, t.Any] | None = None,
        csv_file: t.Any = None,
        metadata: t.Any = None,
        *,
        actor: str | None = None,
        error_policy: str | None = None,
        max_failures: int | None = None,
        max_failure_rate: float | None = None,
        dry_run: bool = False,
        partitions: int | None = None,
        at: datetime | None = None,
    ) -> Run:
        """Start a run of the task ``name`` and return it (status ``enqueued``,
        or ``scheduled`` with ``at``).

        :param csv_file: the file of a CSV task: a path, a binary file object or
            ``(file name, binary file object)``. It is checked, then stored
            (``MAINTENANCE_TASKS_CSV_STORAGE``) before the run is created.
        :param actor: who the audit trail says started the run; the OS user
            running this process by default. The same holds for
            :meth:`pause`, :meth:`resume` and :meth:`cancel`.
        :param error_policy: ``"stop"`` or ``"skip"``, for this run instead of
            the task's ``error_policy``; ``max_failures`` and
            ``max_failure_rate`` likewise override the task's limits.
        :param dry_run: process every item, roll every tick back, and record
            what the run would change (``Run.changes``); a dry run does not
            count as the task's active run.
        :param partitions: cut the collection into this many ranges, each walked
            by its own jobs at the same time, instead of the task's
            ``partitions`` (see :doc:`/partitions`).
        :param at: start the run at this moment instead of now: a timezone-aware
            :class:`~datetime.datetime` (or ISO 8601 text with an offset), in the
            future and at most a year ahead. The run is ``scheduled`` until
            then, counts as the task's active run and can be cancelled; its job
            waits in RQ's scheduler, so RQ is required (see :doc:`/scheduled-runs`).
        :raises TaskNotFound: no such task.
        :raises InvalidArguments: the arguments fail the task's ``Parameters``,
            ``partitions`` is out of range or the collection cannot be cut, or
            ``at`` is refused (no time zone, past, too far, or no Redis).
        :raises CSVFileError: a CSV task without a file, a file for another task,
            or a file whose start shows it cannot be read; nothing is written.
        :raises CSVFileTooLarge: beyond ``MAINTENANCE_TASKS_MAX_CSV_BYTES``.
        :raises TaskAlreadyRunning: the task has an active run and forbids concurrent ones.
        :raises EnqueueError: the run was saved but could not be queued; it is ``errored``.
        """
        return runner.run(
            get_state(),
            name,
            arguments or {},
            csv_file=csv_file,
            metadata=metadata,
            actor=audit.python(actor),
            error_policy=error_policy,
            max_failures=max_failures,
            max_failure_rate=max_failure_rate,
            dry_run=dry_run,
            partitions=partitions,
            at=at,
        )

    def retry_failures(
        self,
        run_id: int,
        *,
        metadata: t.Any = None,
        actor: str | None = None,
        error_policy: str | None = None,
        max_failures: int | None = None,
        max_failure_rate: float | None = None,
    ) -> Run:
        """Start a run over the unresolved failed items of run ``run_id`` and return it.

        The new run has the same task and arguments, walks exactly those
        items (found again by key, in key order) and keeps the retried run's
        error policy unless told otherwise. Items that now succeed are marked
        resolved in the ledger; items that fail again are recorded on the new
        run, whose ``retry_of_id`` is ``run_id``.

        :raises CannotRetry: the run is still active, has no unresolved
            failure, or its task cannot find items by key.
        :raises MaintenanceTasksError: no such run, or its task is gone.
        """
        return runner.retry_failures(
            get_state(),
            run_id,
            metadata=metadata,
            actor=audit.python(actor),
            error_policy=error_policy,
            max_failures=max_failures,
            max_failure_rate=max_failure_rate,
        )

    def run_for_real(
        self,
        run_id: int,
        *,
        metadata: t.Any = None,
        actor: str | None = None,
        partitions: int | None = None,
    ) -> Run:
        """Start a normal run with the arguments, error policy, file and partitions of a
        succeeded dry run.

        ``partitions`` cuts it into another number of partitions than the dry run's.

        :raises MaintenanceTasksError: no such run, not a succeeded dry run, or its task is gone.
        :raises InvalidArguments: ``partitions`` is not a number the task may be cut into.
        :raises TaskAlreadyRunning: the task has an active run and forbids concurrent ones.
        """
        return runner.run_for_real(
            get_state(), run_id, metadata=metadata, actor=audit.python(actor), partitions=partitions
        )

    def preview(
        self, name: str, arguments: t.Mapping[str, t.Any] | None = None, **keywords: t.Any
    ) -> Preview:
        """What a run of ``name`` with these arguments would walk; nothing is written.

        The arguments are validated (their messages are in ``errors``, no
        exception), the items counted with each statement cut off after
        ``MAINTENANCE_TASKS_PREVIEW_TIMEOUT`` seconds, the first ten items
        described, and for a ``Select`` the SQL of the first page given.
        Arguments may be a mapping, keywords, or both.

        :raises TaskNotFound: no such task.
        """
        return preview.preview(get_state(), name, {**(arguments or {}), **keywords})

    def failures(
        self,
        run_id: int,
        *,
        error_class: str | None = None,
        status: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[Failure]:
        """The failed items of run ``run_id`` in the order they were met.

        :param error_class: only failures of this exception class name.
        :param status: only ``unresolved``, ``resolved``, ``failed_again`` or ``gone`` ones.
        :param after: the id of the last failure of the previous page.
        """
        return runner.failures(
            get_state(), run_id, error_class=error_class, status=status, after=after, limit=limit
        )

    def pause(self, run_id: int, *, actor: str | None = None) -> Run:
        """Ask a run to pause at its next item (or force a stuck one to ``paused``)."""
        return runner.pause(get_state(), run_id, actor=audit.python(actor))

    def resume(self, run_id: int, *, actor: str | None = None) -> Run:
        """Enqueue a paused or errored run again; it carries on after its cursor."""
        return runner.resume(get_state(), run_id, actor=audit.python(actor))

    def cancel(self, run_id: int, *, actor: str | None = None) -> Run:
        """Ask a run to cancel (immediately if paused or stuck)."""
        return runner.cancel(get_state(), run_id, actor=audit.python(actor))

    def set_speed(
        self,
        run_id: int,
        *,
        rate: float | None = None,
        batch_size: int | None = None,
        ticker_delay: float | None = None,
        reset: t.Iterable[str] = (),
        actor: str | None = None,
    ) -> Run:
        """Cap an active run's speed, or change its batch size or ticker delay, live.

        :param rate: the most items per second the run processes (greater than 0),
            shared equally by its partitions.
        :param batch_size: records fetched per query (from 1 to 100,000), from
            the job's next slice.
        :param ticker_delay: seconds between two progress commits (greater than 0, at
            most half of ``MAINTENANCE_TASKS_STUCK_AFTER``).
        :param reset: the fields (``"rate"``, ``"batch_size"``, ``"ticker_delay"``)
            that go back to the task's own; ``None`` leaves a field as it is.
        :raises InvalidArguments: a value is out of range; nothing was changed.
        :raises InvalidTransition: the run has ended.

        The job takes the new values at its next status reload, without
        pausing; the change is a ``speed_changed`` event. See :doc:`/speed-control`.

        .. versionadded:: 0.2
        """
        return runner.set_speed(
            get_state(),
            run_id,
            rate=rate,
            batch_size=batch_size,
            ticker_delay=ticker_delay,
            reset=reset,
            actor=audit.python(actor),
        )

    def prune(self, older_than: t.Any = None, *, dry_run: bool = False) -> Pruned:
        """Delete the ended runs older than ``older_than``, with all that belongs to them.

        The latest run of each task, active runs and runs an active retry
        reads are kept; see :doc:`/retention`. The runs go in batches, each
        its own short transaction.

        :param older_than: a :class:`~datetime.timedelta`, a number of
            seconds, or text such as ``"90d"``, ``"12h"`` or ``"30m"``;
            default ``MAINTENANCE_TASKS_RETENTION`` (when that is ``None``,
            nothing is deleted).
        :param dry_run: count what would be deleted, deleting nothing.
        :raises ValueError: ``older_than`` is not a positive duration.

        .. versionadded:: 0.1
        """
        return retention.prune(get_state(), older_than, dry_run=dry_run)

    def get_run(self, run_id: int) -> Run | None:
        """The run with this id, freshly read, or ``None``."""
        return runner.get_run(get_state(), run_id)
