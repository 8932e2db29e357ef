"""Registering the extension: options, per-app state, executors and start-up warnings."""

from __future__ import annotations

import logging
import typing as t
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Blueprint, Flask
from flask_sqlalchemy import SQLAlchemy

from flask_maintenance_tasks import MaintenanceTasks
from flask_maintenance_tasks.config import Settings
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.executors import InProcessExecutor, RQExecutor
from flask_maintenance_tasks.state import State, get_state

IN_PROCESS_WARNING = "MAINTENANCE_TASKS_REDIS_URL is not set"
CLOSED_WARNING = "The maintenance tasks dashboard is closed"


@pytest.fixture
def make_app(tmp_path: Path) -> t.Callable[..., Flask]:
    """A bare Flask app with Flask-SQLAlchemy on SQLite, before our extension."""

    def make(name: str = "unit_ext_app", with_db: bool = True, **config: t.Any) -> Flask:
        app = Flask(name)
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / (name + '.db')}"
        app.config.update(config)
        if with_db:
            SQLAlchemy().init_app(app)
        return app

    return make


def settings_of(app: Flask) -> Settings:
    return get_state(app).settings


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_maintenance_tasks" and r.levelno == logging.WARNING
    ]


# -- options -------------------------------------------------------------------------


def test_options_default_to_the_documented_values(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()

    MaintenanceTasks(app)

    assert settings_of(app) == Settings(
        tasks_package="unit_ext_app.maintenance",
        url_prefix="/maintenance_tasks",
        redis_url=None,
        queue="maintenance_tasks",
        ticker_delay=1.0,
        status_reload_frequency=1.0,
        max_job_runtime=300.0,
        stuck_after=300.0,
        poll_interval=2.0,
        runs_per_page=20,
        masked_parameters=("password", "secret", "token"),
        error_handler=None,
        metadata=None,
        backtrace_cleaner=None,
        stale_after=30 * 24 * 3600.0,
        allow_anonymous=False,
        csv_storage="database",
        max_csv_bytes=200 * 1024 * 1024,
    )
    assert get_state(app).registry.package == "unit_ext_app.maintenance"


def test_app_config_keys_set_the_options(make_app: t.Callable[..., Flask]) -> None:
    def handler(error: BaseException, context: dict[str, t.Any]) -> None:
        pass

    app = make_app(
        MAINTENANCE_TASKS_TASKS_PACKAGE="myapp.jobs",
        MAINTENANCE_TASKS_URL_PREFIX="/admin/tasks",
        MAINTENANCE_TASKS_QUEUE="slow",
        MAINTENANCE_TASKS_TICKER_DELAY=0.5,
        MAINTENANCE_TASKS_RUNS_PER_PAGE=5,
        MAINTENANCE_TASKS_MASKED_PARAMETERS=["PIN", "iban"],
        MAINTENANCE_TASKS_ERROR_HANDLER=handler,
        MAINTENANCE_TASKS_ALLOW_ANONYMOUS=True,
    )

    MaintenanceTasks(app)

    settings = settings_of(app)
    assert (settings.tasks_package, settings.url_prefix, settings.queue) == (
        "myapp.jobs",
        "/admin/tasks",
        "slow",
    )
    assert (settings.ticker_delay, settings.runs_per_page) == (0.5, 5)
    assert settings.masked_parameters == ("pin", "iban")
    assert settings.error_handler is handler
    assert settings.allow_anonymous is True
    assert get_state(app).registry.package == "myapp.jobs"


def test_keyword_wins_over_app_config(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(MAINTENANCE_TASKS_QUEUE="from_config", MAINTENANCE_TASKS_POLL_INTERVAL=9)

    MaintenanceTasks().init_app(app, queue="from_keyword")

    assert (settings_of(app).queue, settings_of(app).poll_interval) == ("from_keyword", 9.0)


def test_init_app_keyword_wins_over_constructor_keyword(make_app: t.Callable[..., Flask]) -> None:
    mtasks = MaintenanceTasks(queue="from_constructor", runs_per_page=7)
    first, second = make_app("unit_first"), make_app("unit_second", MAINTENANCE_TASKS_QUEUE="cfg")

    mtasks.init_app(first)
    mtasks.init_app(second, queue="from_init_app")

    assert (settings_of(first).queue, settings_of(first).runs_per_page) == ("from_constructor", 7)
    assert (settings_of(second).queue, settings_of(second).runs_per_page) == ("from_init_app", 7)


@pytest.mark.parametrize(
    "name", ["ticker_delay", "status_reload_frequency", "max_job_runtime", "stuck_after"]
)
def test_time_values_accept_a_timedelta(make_app: t.Callable[..., Flask], name: str) -> None:
    app = make_app(**{f"MAINTENANCE_TASKS_{name.upper()}": timedelta(minutes=2, seconds=3)})

    MaintenanceTasks(app, poll_interval=timedelta(milliseconds=500))

    assert getattr(settings_of(app), name) == 123.0
    assert settings_of(app).poll_interval == 0.5


def test_stale_after_accepts_a_timedelta_and_false_turns_it_off(
    make_app: t.Callable[..., Flask],
) -> None:
    two_days, off = make_app("unit_two_days"), make_app("unit_off")

    MaintenanceTasks(two_days, stale_after=timedelta(days=2))
    MaintenanceTasks(off, stale_after=False)

    assert (settings_of(two_days).stale_after, settings_of(off).stale_after) == (172800.0, None)


def test_a_single_masked_name_is_one_name_not_its_letters(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(MAINTENANCE_TASKS_MASKED_PARAMETERS="Token")

    MaintenanceTasks(app)

    assert settings_of(app).masked_parameters == ("token",)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("ticker_delay", "1s", "TICKER_DELAY must be a number of seconds or a timedelta"),
        ("ticker_delay", True, "TICKER_DELAY must be a number of seconds or a timedelta"),
        ("stuck_after", -1, "STUCK_AFTER must not be negative"),
        ("stuck_after", timedelta(seconds=-1), "STUCK_AFTER must not be negative"),
        ("stale_after", "30d", "STALE_AFTER must be a number of seconds"),
        ("status_reload_frequency", 0, "STATUS_RELOAD_FREQUENCY must be positive"),
        ("max_job_runtime", 0, "MAX_JOB_RUNTIME must be positive"),
        ("runs_per_page", 0, "RUNS_PER_PAGE must be a positive integer"),
        ("runs_per_page", "20", "RUNS_PER_PAGE must be a positive integer"),
        ("max_csv_bytes", 1.5, "MAX_CSV_BYTES must be a positive integer"),
        ("masked_parameters", 3, "MASKED_PARAMETERS must be a list of non-empty names"),
        ("masked_parameters", ["token", ""], "MASKED_PARAMETERS must be a list of non-empty"),
        ("error_handler", "myapp.report", "ERROR_HANDLER must be a callable or None"),
        ("metadata", {"by": "me"}, "METADATA must be a callable or None"),
        ("url_prefix", "admin", "URL_PREFIX must start with '/'"),
        ("queue", "", "QUEUE must be a non-empty string"),
        # the CSV storage is built at init_app, not at the first upload
        ("csv_storage", 42, "CSV_STORAGE must be 'database', a directory path or an object"),
        ("csv_storage", "", "CSV_STORAGE must be 'database', a directory path or an object"),
        ("csv_storage", object(), "CSV_STORAGE must be 'database', a directory path or an"),
    ],
)
def test_bad_option_values_are_refused_naming_the_config_key(
    make_app: t.Callable[..., Flask], option: str, value: t.Any, message: str
) -> None:
    by_config = make_app("unit_by_config", **{f"MAINTENANCE_TASKS_{option.upper()}": value})
    by_keyword = make_app("unit_by_keyword")

    with pytest.raises(ConfigurationError, match=f"^MAINTENANCE_TASKS_{message}"):
        MaintenanceTasks(by_config)
    with pytest.raises(ConfigurationError, match=f"^MAINTENANCE_TASKS_{message}"):
        MaintenanceTasks().init_app(by_keyword, **{option: value})
    assert "maintenance_tasks" not in by_config.extensions


def test_unknown_keyword_is_a_type_error(make_app: t.Callable[..., Flask]) -> None:
    with pytest.raises(TypeError, match="Unknown option.*: redis, tick_delay"):
        MaintenanceTasks(make_app(), tick_delay=1, redis="redis://")


# -- state -----------------------------------------------------------------------------


def test_state_lives_in_app_extensions(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    authorize = lambda action, task_name, run: True  # noqa: E731
    mtasks = MaintenanceTasks()

    mtasks.init_app(app, authorize=authorize)

    state = app.extensions["maintenance_tasks"]
    assert isinstance(state, State)
    assert (state.extension, state.app, state.db) == (mtasks, app, app.extensions["sqlalchemy"])
    assert (state.parent, state.authorize) == (None, authorize)
    assert get_state(app) is state
    with app.app_context():
        assert get_state() is state


def test_the_extension_object_never_stores_an_app(make_app: t.Callable[..., Flask]) -> None:
    first, second = make_app("unit_first"), make_app("unit_second")
    mtasks = MaintenanceTasks()

    mtasks.init_app(first, queue="first")
    mtasks.init_app(second, queue="second")

    assert not [value for value in vars(mtasks).values() if isinstance(value, Flask)]
    with second.app_context():
        assert get_state().settings.queue == "second"
    with first.app_context():
        assert get_state().settings.queue == "first"


def test_constructor_with_an_app_and_a_db_registers_on_the_app(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(with_db=False)
    db = SQLAlchemy()

    MaintenanceTasks(app, db=db, queue="eager")

    assert (get_state(app).db, settings_of(app).queue) == (db, "eager")


def test_db_and_parent_given_to_the_constructor_serve_each_init_app(
    make_app: t.Callable[..., Flask],
) -> None:
    db = SQLAlchemy()
    parent = Blueprint("admin", __name__, url_prefix="/admin")
    mtasks = MaintenanceTasks(db=db, parent=parent)
    app = make_app(with_db=False)

    mtasks.init_app(app)

    assert (get_state(app).db, get_state(app).parent) == (db, parent)


def test_runs_table_joins_the_apps_metadata(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()

    MaintenanceTasks(app)

    assert "maintenance_tasks_runs" in app.extensions["sqlalchemy"].metadata.tables


def test_registering_twice_on_one_app_raises(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    MaintenanceTasks(app, queue="first")

    with pytest.raises(RuntimeError, match="already registered on this app"):
        MaintenanceTasks().init_app(app, queue="second")

    assert settings_of(app).queue == "first"


def test_app_without_flask_sqlalchemy_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"needs Flask-SQLAlchemy: call db.init_app\(app\)"):
        MaintenanceTasks(Flask("unit_no_db"))


def test_unregistered_app_has_no_state(make_app: t.Callable[..., Flask]) -> None:
    with pytest.raises(RuntimeError, match="not registered on this app"):
        get_state(make_app())


def test_the_mtasks_command_group_is_added(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()

    MaintenanceTasks(app)

    assert "mtasks" in app.cli.commands


# -- executors and start-up warnings ---------------------------------------------------


def test_without_a_redis_url_runs_use_the_in_process_executor_and_a_warning_says_so(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TESTING=True)

    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        MaintenanceTasks(app)

    assert isinstance(get_state(app).executor, InProcessExecutor)
    assert len([w for w in warnings_of(caplog) if w.startswith(IN_PROCESS_WARNING)]) == 1


def test_with_a_redis_url_runs_go_to_rq(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TESTING=True, MAINTENANCE_TASKS_REDIS_URL="redis://127.0.0.1:1/0")

    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        MaintenanceTasks(app, queue="slow")

    executor = get_state(app).executor
    assert isinstance(executor, RQExecutor)
    assert (executor.redis_url, executor.queue_name) == ("redis://127.0.0.1:1/0", "slow")
    assert [w for w in warnings_of(caplog) if w.startswith(IN_PROCESS_WARNING)] == []


def test_dashboard_closed_by_default_is_announced_once_at_start_up(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(MAINTENANCE_TASKS_REDIS_URL="redis://127.0.0.1:1/0")

    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        MaintenanceTasks(app)

    [warning] = warnings_of(caplog)
    assert warning.startswith(CLOSED_WARNING)
    assert "parent=" in warning and "authorize=" in warning
    assert "MAINTENANCE_TASKS_ALLOW_ANONYMOUS" in warning


@pytest.mark.parametrize(
    ("config", "keywords"),
    [
        ({"MAINTENANCE_TASKS_ALLOW_ANONYMOUS": True}, {}),
        ({}, {"authorize": lambda action, task_name, run: True}),
        ({}, {"parent": Blueprint("admin", __name__)}),
        ({"DEBUG": True}, {"parent": Blueprint("admin", __name__)}),
    ],
)
def test_dashboard_access_configured_gives_no_warning(
    make_app: t.Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
    config: dict[str, t.Any],
    keywords: dict[str, t.Any],
) -> None:
    app = make_app(MAINTENANCE_TASKS_REDIS_URL="redis://127.0.0.1:1/0", **config)

    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        MaintenanceTasks().init_app(app, **keywords)

    assert warnings_of(caplog) == []


@pytest.mark.parametrize(
    ("config", "switch"), [({"TESTING": True}, "testing"), ({"DEBUG": True}, "debug")]
)
def test_a_dashboard_opened_by_debug_or_testing_is_announced_at_start_up(
    make_app: t.Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
    config: dict[str, t.Any],
    switch: str,
) -> None:
    app = make_app(MAINTENANCE_TASKS_REDIS_URL="redis://127.0.0.1:1/0", **config)

    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        MaintenanceTasks().init_app(app)

    [warning] = warnings_of(caplog)
    assert not warning.startswith(CLOSED_WARNING)
    assert f"app.{switch} is on" in warning and "from this machine" in warning
    assert "parent=" in warning and "authorize=" in warning


# -- misspelt options ------------------------------------------------------------------


def test_a_misspelt_option_is_named_with_the_closest_one_at_start_up(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(
        MAINTENANCE_TASK_REDIS_URL="redis://127.0.0.1:6379/0",
        MAINTENANCE_TASKS_TICKR_DELAY=2,
        MAINTENANCE_TASKS_SOMETHING_ELSE_ENTIRELY=1,
        MAINTENANCE_WINDOW="sunday",  # not ours: another prefix
    )

    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        MaintenanceTasks(app)

    warned = [w for w in warnings_of(caplog) if "is not a flask-maintenance-tasks option" in w]
    assert warned == [
        "app.config['MAINTENANCE_TASKS_SOMETHING_ELSE_ENTIRELY'] is not a "
        "flask-maintenance-tasks option.",
        "app.config['MAINTENANCE_TASKS_TICKR_DELAY'] is not a flask-maintenance-tasks option; "
        "did you mean MAINTENANCE_TASKS_TICKER_DELAY?",
        "app.config['MAINTENANCE_TASK_REDIS_URL'] is not a flask-maintenance-tasks option; "
        "did you mean MAINTENANCE_TASKS_REDIS_URL?",
    ]
    assert settings_of(app).ticker_delay == 1.0


def test_known_options_raise_no_such_warning(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(MAINTENANCE_TASKS_TICKER_DELAY=2, MAINTENANCE_TASKS_RUNS_PER_PAGE=5)
    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        MaintenanceTasks(app)
    assert not [w for w in warnings_of(caplog) if "not a flask-maintenance-tasks option" in w]
