"""``prune``: delete the runs that retention no longer keeps (see :mod:`..retention`)."""

from __future__ import annotations

import typing as t

import click
from flask.cli import with_appcontext

from .. import retention
from ..config import parse_duration
from ..i18n import lazy_gettext
from ..state import get_state
from .errors import catch_errors
from .terminal import visible
from .translated import command, option

if t.TYPE_CHECKING:
    _ParamType = click.ParamType[t.Any]  # generic from click 8.2 on
else:
    _ParamType = click.ParamType


class _Duration(_ParamType):
    """A positive duration: ``90d``, ``12h``, ``30m``, ``45s`` or seconds."""

    name = "duration"

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return parse_duration(value)
        except ValueError as error:
            self.fail(visible(error), param, ctx)


@command(
    "prune",
    help=lazy_gettext(
        "Delete ended runs older than the retention, with their failures, events and CSV "
        "files.\n\n"
        "The latest run of each task is always kept, and so is every active run. "
        "Runs go in batches, each its own short transaction."
    ),
)
@option(
    "--older-than",
    type=_Duration(),
    metavar="DURATION",
    help=lazy_gettext(
        "Delete runs ended longer ago than this: 90d, 12h, 30m or seconds "
        "(default: MAINTENANCE_TASKS_RETENTION)."
    ),
)
@option(
    "--dry-run", is_flag=True, help=lazy_gettext("Count what would be deleted; delete nothing.")
)
@with_appcontext
@catch_errors
def prune_command(older_than: float | None, dry_run: bool) -> None:
    click.echo(retention.prune(get_state(), older_than, dry_run=dry_run))
