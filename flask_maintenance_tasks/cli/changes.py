"""How the commands show a dry run: its mark, what it would change, and the way to run it for real.

What a dry run would change is read from the run (see
:mod:`flask_maintenance_tasks.dryrun`): a line per table and kind, then a
sample of the first changes, whose values the engine masked already. Table
names, keys and values come from the database: all of it goes through
:func:`.terminal.visible`.
"""

from __future__ import annotations

import json
import typing as t

import click

from .. import formatting
from ..i18n import gettext as _
from ..i18n import lazy_gettext
from ..models import Run, RunStatus
from .terminal import visible
from .translated import status

#: What follows a dry run's status wherever a run is shown.
DRY_RUN_MARK = lazy_gettext(" (dry run)")


def status_of(run: Run) -> str:
    """The run's status, escaped, followed by ``(dry run)`` for a dry run."""
    return status(run.status) + (str(DRY_RUN_MARK) if run.dry_run else "")


def value_text(value: t.Any) -> str:
    """A key or value of the sample as JSON (a string quoted, ``null`` for none), escaped."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = str(value)
    return visible(text)


def sample_line(change: t.Mapping[str, t.Any]) -> str:
    """``items, key 1, title: "item-1" -> "new-1"``."""
    return _(
        "%(table)s, key %(key)s, %(column)s: %(before)s -> %(after)s",
        table=visible(change.get("table")),
        key=value_text(change.get("key")),
        column=visible(change.get("column")),
        before=value_text(change.get("before")),
        after=value_text(change.get("after")),
    )


def run_for_real_hint(run: Run) -> str:
    return _("To make these changes: flask mtasks run-for-real %(id)s", id=run.id)


def summary_lines(run: Run) -> list[str]:
    """What the dry run would change, one escaped line per table and kind."""
    return [visible(line) for line in formatting.changes_summary(run)]


def print_changes(run: Run) -> None:
    """The dry-run section of ``status RUN_ID``: counts, the sample and, once it
    succeeded, how to run it for real. Nothing for a normal run."""
    if not run.dry_run:
        return
    succeeded = run.status == RunStatus.SUCCEEDED
    click.echo("  " + _("Dry run: every tick is rolled back; nothing is written."))
    click.echo(
        "  " + (_("What it would change:") if succeeded else _("What it would change so far:"))
    )
    for line in summary_lines(run):
        click.echo(f"    {line}")
    sample = (run.changes or {}).get("sample") if isinstance(run.changes, dict) else None
    if sample:
        click.echo("  " + _("First changes:"))
        for change in sample:
            if isinstance(change, dict):
                click.echo(f"    {sample_line(change)}")
    if succeeded:
        click.echo(f"  {run_for_real_hint(run)}")


def report_outcome(run: Run) -> None:
    """After following a succeeded dry run: what it would change, on stderr with the bar."""
    if not run.dry_run or run.status != RunStatus.SUCCEEDED:
        return
    for line in summary_lines(run):
        click.echo(line, err=True)
    click.echo(run_for_real_hint(run), err=True)
