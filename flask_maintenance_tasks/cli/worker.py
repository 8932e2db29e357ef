"""The commands that keep runs going: the RQ worker, and recovery on demand."""

from __future__ import annotations

import logging

import click
from flask import current_app
from flask.cli import with_appcontext

from .. import i18n
from ..executors import RQExecutor
from ..i18n import gettext as _
from ..i18n import lazy_gettext
from ..recovery import recover
from ..state import get_state
from ..worker import MaintenanceSimpleWorker, MaintenanceWorker, recovering_worker
from .errors import catch_errors
from .terminal import visible
from .translated import CommandError, command, option


@command(
    "worker",
    help=lazy_gettext("Run an RQ worker inside the app; SIGTERM stops the running task cleanly."),
)
@option("--burst", is_flag=True, help=lazy_gettext("Exit once the queue is empty."))
@option(
    "--queue",
    "queue_names",
    multiple=True,
    help=lazy_gettext(
        "Queue to listen on, repeatable, in order of priority (default: the configured one)."
    ),
)
@option(
    "--no-fork",
    is_flag=True,
    help=lazy_gettext("Run jobs in the worker process (no work horse)."),
)
@with_appcontext
@catch_errors
def worker_command(burst: bool, queue_names: tuple[str, ...], no_fork: bool) -> None:
    state = get_state()
    executor = state.executor
    if not isinstance(executor, RQExecutor):
        raise CommandError(
            _(
                "MAINTENANCE_TASKS_REDIS_URL is not set in app.config, so there is no queue to "
                "work on. The extension reads app.config only, not the environment: set "
                'app.config["MAINTENANCE_TASKS_REDIS_URL"], or load environment variables with '
                "app.config.from_prefixed_env() (FLASK_MAINTENANCE_TASKS_REDIS_URL)."
            )
        )
    _log_to_stderr()
    # Its own connection, whose commands ride out a short Redis outage.
    connection = executor.worker_connection()
    worker = recovering_worker(
        MaintenanceSimpleWorker if no_fork else MaintenanceWorker,
        [executor.queue(name, connection) for name in queue_names or (None,)],
        current_app._get_current_object(),  # type: ignore[attr-defined]
        state.settings.recovery_interval,
        connection=connection,
    )
    # What a worker writes is stored (a run's error, the audit trail) and logged
    # for operators: English, whatever the language of the terminal it runs in.
    with i18n.english():
        worker.work(burst=burst, with_scheduler=True)


def _log_to_stderr() -> None:
    """Show the extension's log lines beside RQ's, unless the app set up logging."""
    logger = logging.getLogger("flask_maintenance_tasks")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@command(
    "recover",
    help=lazy_gettext(
        "Carry on runs whose job vanished, and settle stuck pauses and cancels, once.\n\n"
        "Workers started with `flask mtasks worker` do this on their own every "
        "MAINTENANCE_TASKS_RECOVERY_INTERVAL seconds."
    ),
)
@with_appcontext
@catch_errors
def recover_command() -> None:
    with i18n.english():  # what recovery writes (errors, the audit trail) is stored
        recovered = recover(get_state(), log=False)
    for recovery in recovered:
        click.echo(visible(recovery))
    if not recovered:
        click.echo(_("Nothing to recover."))
