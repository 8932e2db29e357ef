"""One decorator turns the errors a user can act on into a clean command failure."""

from __future__ import annotations

import functools
import typing as t

import sqlalchemy as sa

from .. import store
from ..exceptions import MaintenanceTasksError
from ..state import get_state
from .terminal import visible
from .translated import CommandError

P = t.ParamSpec("P")
R = t.TypeVar("R")


def catch_errors(command: t.Callable[P, R]) -> t.Callable[P, R]:
    """Make ``command`` fail with ``Error: ...`` on stderr and exit status 1 on a user's mistake.

    The message is in the reader's language (the error's message is
    translated as it is turned into text), and so is the word ``Error``.

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
            raise CommandError(visible(error)) from None
        try:
            return command(*args, **kwargs)
        except MaintenanceTasksError as error:
            raise CommandError(visible(error)) from None
        except sa.exc.DBAPIError:
            message = store.missing_tables_message(state.db.engine)
            if message is None:
                raise
            raise CommandError(visible(message)) from None

    return translated
