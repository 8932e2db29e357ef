"""Knowing before running: ``preview`` a run's scope, and ``run-for-real`` after a dry run.

``run --dry-run`` itself lives with ``run`` in :mod:`.runs`; what a dry run
would change is shown by ``status`` (see :mod:`.changes`).
"""

from __future__ import annotations

import json
import typing as t

import click
from flask.cli import with_appcontext

from .. import audit, i18n, masking, runner
from .. import preview as previews
from ..i18n import gettext as _
from ..i18n import lazy_gettext
from ..state import State, get_state
from .errors import catch_errors
from .runs import (
    _after_enqueue,
    _parse_arguments,
    acting_as,
    arguments_option,
    partition_count,
    partitions_option,
    waiting,
)
from .terminal import visible
from .translated import command, option

if t.TYPE_CHECKING:
    from ..task import Task


class InvalidArgumentsUsage(click.ClickException):
    """Arguments the task's ``Parameters`` refuse: a mistake in the command line (exit 2)."""

    exit_code = 2


@command(
    "run-for-real",
    help=lazy_gettext(
        "Start a normal run with the arguments of dry run RUN_ID, which must have succeeded.\n\n"
        "The new run keeps the dry run's error policy, partitions and CSV file; "
        "--partitions K cuts it into K partitions instead."
    ),
)
@click.argument("run_id", type=int)
@partitions_option
@waiting
@acting_as
@with_appcontext
@catch_errors
def run_for_real_command(
    run_id: int, partitions_asked: str | None, wait: bool, acting_as: str | None
) -> None:
    state = get_state()
    run = runner.run_for_real(
        state,
        run_id,
        actor=audit.command_line(acting_as),
        partitions=partition_count(partitions_asked),
    )
    click.echo(
        _(
            "Started run #%(id)s of %(task)s for real, with the arguments of dry run #%(dry)s.",
            id=run.id,
            task=visible(run.task_name),
            dry=run_id,
        )
    )
    _after_enqueue(state, run.id, wait)


@command(
    "preview",
    help=lazy_gettext(
        "Show what a run of task NAME would walk, writing nothing.\n\n"
        "The arguments are checked, the items counted (each statement cut off after "
        "MAINTENANCE_TASKS_PREVIEW_TIMEOUT seconds), the first ten shown, and the "
        "SQL of the first page given. Arguments the task refuses exit with 2."
    ),
)
@click.argument("name")
@arguments_option
@option("--json", "as_json", is_flag=True, help=lazy_gettext("Print JSON."))
@with_appcontext
@catch_errors
def preview_command(name: str, pairs: tuple[str, ...], as_json: bool) -> None:
    state = get_state()
    task_class = state.registry.get(name)
    arguments = _parse_arguments(task_class, pairs, state.settings.masked_parameters)
    if as_json:
        with i18n.english():  # read by programs: English whatever the terminal's language
            found = previews.preview(state, name, arguments)
            click.echo(json.dumps(found.as_dict(), indent=2, default=str))
        if not found.valid:
            raise click.exceptions.Exit(2)
        return
    found = previews.preview(state, name, arguments)
    if not found.valid:
        raise InvalidArgumentsUsage(_errors_text(found))
    _print_preview(state, task_class, arguments, found)


def _errors_text(found: previews.Preview) -> str:
    """``Invalid arguments for NAME:`` then one line per field and message."""
    lines = [_("Invalid arguments for %(task)s:", task=visible(found.task_name))]
    for field, messages in found.errors.items():
        for message in messages:
            lines.append(f"  {visible(field)}: {visible(message)}")
    return "\n".join(lines)


def _parameters(state: State, task_class: type[Task], arguments: dict[str, t.Any]) -> t.Any:
    """The validated parameters, defaults included, masked as a run's arguments are."""
    masked = state.settings.masked_parameters
    params = task_class.dump_arguments(task_class.validate_arguments(arguments))
    shown = masking.mask(params, task_class, masked)
    return masking.scrub_tree(shown, masking.secret_values(arguments, task_class, masked))


def _print_preview(
    state: State, task_class: type[Task], arguments: dict[str, t.Any], found: previews.Preview
) -> None:
    click.echo(_("Preview of %(task)s", task=visible(found.task_name)))
    parameters = _parameters(state, task_class, arguments)
    if parameters:
        click.echo("  " + _("Parameters: %(json)s", json=_json(parameters)))
    click.echo("  " + _("Items: %(count)s", count=visible(found.count_text())))
    for note in found.notes:
        click.echo(f"    {visible(note)}")
    if found.items:
        count = len(found.items)
        if count > 1:
            click.echo("  " + _("First %(count)s items:", count=count))
        else:
            click.echo("  " + _("First item:"))
        for item in found.items:
            click.echo(f"    {_json(item)}")
    if found.sql:
        click.echo("  " + _("SQL of the first page:"))
        for line in found.sql.splitlines():
            click.echo(f"    {visible(line.rstrip())}")


def _json(value: t.Any) -> str:
    return visible(json.dumps(value, ensure_ascii=False, default=str))
