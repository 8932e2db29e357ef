"""One decorator turns the errors a user can act on into a clean command failure."""

from __future__ import annotations

import functools
import typing as t

import click
import sqlalchemy as sa

from .. import store
from ..exceptions import MaintenanceTasksError
from ..models import runs_table
from ..state import get_state
from .terminal import visible

P = t.ParamSpec("P")
R = t.TypeVar("R")


def catch_errors(command: t.Callable[P, R]) -> t.Callable[P, R]:
    """Make ``command`` fail with ``Error: ...`` on stderr and exit status 1 on a user's mistake.

    The mistakes are: the extension not registered on the app; any
    :class:`~flask_maintenance_tasks.MaintenanceTasksError` (its message says
    what to do); and a database error whose cause is that the runs table does
    not exist, the usual first-time mistake. Any other error keeps its
    traceback, which is what one needs to debug it.

    Every message goes through :func:`.terminal.visible`: it may quote a task
    name, an argument or an error message that came from elsewhere (the
    commands do the same for the errors they raise themselves).
    """

    @functools.wraps(command)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            state = get_state()
        except RuntimeError as error:
            raise click.ClickException(visible(error)) from None
        try:
            return command(*args, **kwargs)
        except MaintenanceTasksError as error:
            raise click.ClickException(visible(error)) from None
        except sa.exc.DBAPIError:
            engine = state.db.engine
            if not _runs_table_missing(engine):
                raise
            url = visible(engine.url.render_as_string(hide_password=True))
            raise click.ClickException(
                f"The table {runs_table.name} does not exist in {url}. Create it with "
                "`flask mtasks migrations install` then `flask db upgrade` (Flask-Migrate), "
                "or with `db.create_all()` in an app context."
            ) from None

    return translated


def _runs_table_missing(engine: sa.Engine) -> bool:
    try:
        return not store.runs_table_exists(engine)
    except sa.exc.DBAPIError:
        # The database itself is unreachable: the original error says more.
        return False
