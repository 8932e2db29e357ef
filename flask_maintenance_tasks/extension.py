"""The Flask extension object: options, per-app state, and the Python API."""

from __future__ import annotations

import dataclasses
import logging
import typing as t
from datetime import timedelta

from flask import Flask, current_app

from .exceptions import ConfigurationError

if t.TYPE_CHECKING:
    from flask import Blueprint
    from flask_sqlalchemy import SQLAlchemy

    from .executors import Executor
    from .models import Run
    from .registry import Registry

logger = logging.getLogger("flask_maintenance_tasks")

EXTENSION_KEY = "maintenance_tasks"
CONFIG_PREFIX = "MAINTENANCE_TASKS_"

Authorize = t.Callable[[str, "str | None", "Run | None"], bool]
Seconds = float | int | timedelta


def _seconds(value: t.Any, name: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{CONFIG_PREFIX}{name.upper()} must be a number of seconds or a timedelta, "
            f"not {value!r}."
        )
    if value < 0:
        raise ConfigurationError(f"{CONFIG_PREFIX}{name.upper()} must not be negative.")
    return float(value)


def _positive_int(value: t.Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{CONFIG_PREFIX}{name.upper()} must be a positive integer, not {value!r}."
        )
    return value


def _names(value: t.Any) -> tuple[str, ...]:
    # A lone string is one name: tuple("token") would mask every key holding a "t".
    items = (value,) if isinstance(value, str) else value
    try:
        names = tuple(str(n).lower() for n in items)
    except TypeError:
        names = None
    if names is None or not all(names):
        raise ConfigurationError(
            f"{CONFIG_PREFIX}MASKED_PARAMETERS must be a list of non-empty names, not {value!r}."
        )
    return names


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every option of the extension, resolved for one application.

    Each field is read from ``app.config["MAINTENANCE_TASKS_<FIELD>"]``; a
    keyword of the same (lower-case) name given to ``MaintenanceTasks(...)`` or
    ``init_app(...)`` wins over the config.
    """

    tasks_package: str | None = None
    url_prefix: str = "/maintenance_tasks"
    redis_url: str | None = None
    queue: str = "maintenance_tasks"
    ticker_delay: float = 1.0
    status_reload_frequency: float = 1.0
    max_job_runtime: float = 300.0
    stuck_after: float = 300.0
    recovery_interval: float = 60.0
    poll_interval: float = 2.0
    runs_per_page: int = 20
    masked_parameters: tuple[str, ...] = ("password", "secret", "token")
    error_handler: t.Callable[[BaseException, dict[str, t.Any]], t.Any] | None = None
    metadata: t.Callable[[], t.Any] | None = None
    backtrace_cleaner: t.Callable[[list[str]], list[str]] | None = None
    stale_after: float | None = 30 * 24 * 3600.0
    allow_anonymous: bool = False
    csv_storage: t.Any = "database"
    max_csv_bytes: int = 200 * 1024 * 1024

    _DURATIONS: t.ClassVar[tuple[str, ...]] = (
        "ticker_delay",
        "status_reload_frequency",
        "max_job_runtime",
        "stuck_after",
        "recovery_interval",
        "poll_interval",
    )

    @classmethod
    def resolve(cls, app: Flask, overrides: t.Mapping[str, t.Any]) -> Settings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"Unknown option(s) for MaintenanceTasks: {', '.join(unknown)}")
        values: dict[str, t.Any] = {}
        for name in names:
            key = CONFIG_PREFIX + name.upper()
            if name in overrides:
                values[name] = overrides[name]
            elif key in app.config:
                values[name] = app.config[key]
        for name in cls._DURATIONS:
            if name in values:
                values[name] = _seconds(values[name], name)
        if "stale_after" in values and values["stale_after"] not in (None, False):
            values["stale_after"] = _seconds(values["stale_after"], "stale_after")
        elif "stale_after" in values:
            values["stale_after"] = None
        if "masked_parameters" in values:
            values["masked_parameters"] = _names(values["masked_parameters"])
        if values.get("tasks_package") is None:
            values["tasks_package"] = f"{app.import_name}.maintenance"
        for name in ("runs_per_page", "max_csv_bytes"):
            if name in values:
                values[name] = _positive_int(values[name], name)
        for name in ("error_handler", "metadata", "backtrace_cleaner"):
            if values.get(name) is not None and not callable(values[name]):
                raise ConfigurationError(
                    f"{CONFIG_PREFIX}{name.upper()} must be a callable or None, "
                    f"not {values[name]!r}."
                )
        for name in ("url_prefix", "queue"):
            if name in values and not (isinstance(values[name], str) and values[name]):
                raise ConfigurationError(
                    f"{CONFIG_PREFIX}{name.upper()} must be a non-empty string, "
                    f"not {values[name]!r}."
                )
        if not values.get("url_prefix", "/").startswith("/"):
            raise ConfigurationError(
                f"{CONFIG_PREFIX}URL_PREFIX must start with '/', not {values['url_prefix']!r}."
            )
        if values.get("status_reload_frequency", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}STATUS_RELOAD_FREQUENCY must be positive.")
        if values.get("max_job_runtime", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}MAX_JOB_RUNTIME must be positive.")
        return cls(**values)


@dataclasses.dataclass
class State:
    """What the extension keeps for one app, in ``app.extensions["maintenance_tasks"]``."""

    extension: MaintenanceTasks
    app: Flask
    db: SQLAlchemy
    settings: Settings
    registry: Registry
    executor: Executor
    parent: Blueprint | None = None
    authorize: Authorize | None = None


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
        settings = Settings.resolve(app, {**self._options, **options})

        from . import models
        from .executors import make_executor
        from .registry import Registry

        # Our tables join the app's metadata: db.create_all() creates them and
        # Alembic's autogenerate sees them as already managed.
        for table in models.Base.metadata.sorted_tables:
            if table.name not in db.metadata.tables:
                table.to_metadata(db.metadata)

        state = State(
            extension=self,
            app=app,
            db=db,
            settings=settings,
            registry=Registry(settings.tasks_package or f"{app.import_name}.maintenance"),
            executor=make_executor(app, settings),
            parent=parent,
            authorize=authorize,
        )
        app.extensions[EXTENSION_KEY] = state

        from .cli import mtasks_cli

        if "mtasks" not in app.cli.commands:
            app.cli.add_command(mtasks_cli)

        try:
            from .web import register_dashboard
        except ModuleNotFoundError as exc:
            # The dashboard is optional while it is being built; an import
            # error inside it is a bug and must surface.
            if exc.name != f"{__package__}.web":
                raise
        else:
            register_dashboard(app, state)

        if settings.redis_url is None:
            logger.warning(
                "MAINTENANCE_TASKS_REDIS_URL is not set: runs execute on an in-process executor; "
                "queued runs do not survive a restart of this process."
            )
        if parent is None and authorize is None and not settings.allow_anonymous:
            if not (app.debug or app.testing):
                logger.warning(
                    "The maintenance tasks dashboard is closed: pass parent= or authorize= to "
                    "init_app, or set MAINTENANCE_TASKS_ALLOW_ANONYMOUS = True."
                )

    # -- the Python API ---------------------------------------------------

    def run(
        self,
        name: str,
        arguments: t.Mapping[str, t.Any] | None = None,
        csv_file: t.Any = None,
        metadata: t.Any = None,
    ) -> Run:
        """Start a run of the task ``name`` and return it (status ``enqueued``).

        :param csv_file: the file of a CSV task: a path, a binary file object or
            ``(file name, binary file object)``. It is checked, then stored
            (``MAINTENANCE_TASKS_CSV_STORAGE``) before the run is created.
        :raises TaskNotFound: no such task.
        :raises InvalidArguments: the arguments fail the task's ``Parameters``.
        :raises CSVFileError: a CSV task without a file, a file for another task,
            or a file whose start shows it cannot be read; nothing is written.
        :raises CSVFileTooLarge: beyond ``MAINTENANCE_TASKS_MAX_CSV_BYTES``.
        :raises TaskAlreadyRunning: the task has an active run and forbids concurrent ones.
        :raises EnqueueError: the run was saved but could not be queued; it is ``errored``.
        """
        from . import runner

        return runner.run(get_state(), name, arguments or {}, csv_file=csv_file, metadata=metadata)

    def pause(self, run_id: int) -> Run:
        """Ask a run to pause at its next item (or force a stuck one to ``paused``)."""
        from . import runner

        return runner.pause(get_state(), run_id)

    def resume(self, run_id: int) -> Run:
        """Enqueue a paused or errored run again; it carries on after its cursor."""
        from . import runner

        return runner.resume(get_state(), run_id)

    def cancel(self, run_id: int) -> Run:
        """Ask a run to cancel (immediately if paused or stuck)."""
        from . import runner

        return runner.cancel(get_state(), run_id)

    def get_run(self, run_id: int) -> Run | None:
        """The run with this id, freshly read, or ``None``."""
        from . import runner

        return runner.get_run(get_state(), run_id)


def get_state(app: Flask | None = None) -> State:
    """The extension's state for ``app`` (default: the current app)."""
    if app is None:
        app = t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    try:
        return t.cast(State, app.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError(
            "flask-maintenance-tasks is not registered on this app; call mtasks.init_app(app)."
        ) from None
