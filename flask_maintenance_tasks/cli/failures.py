"""The commands about a run's failure ledger: ``failures`` (read it) and ``retry-failures``."""

from __future__ import annotations

import json
import shlex

import click
from flask.cli import with_appcontext

from .. import audit, formatting, i18n, ledger, runner, store
from ..exceptions import RunNotFound
from ..i18n import gettext as _
from ..i18n import lazy_gettext, ngettext
from ..models import Failure, FailureStatus, Run
from ..state import State, get_state
from .changes import status_of
from .errors import catch_errors
from .policy import policy_options
from .runs import _after_enqueue, acting_as, waiting
from .terminal import visible
from .translated import CommandError, command, option

#: The most failures one page may show (``--limit``); the runner reads one more.
MAX_LIMIT = 1_000


@command(
    "failures",
    help=lazy_gettext(
        "Show the failed items of run RUN_ID.\n\n"
        "First how many failed by error class (and how many of those are still "
        "unresolved), then each failure in the order the items were met, at most "
        "--limit of them; --after ID shows the ones after failure ID."
    ),
)
@click.argument("run_id", type=int)
@option("--json", "as_json", is_flag=True, help=lazy_gettext("Print JSON."))
@option(
    "--class",
    "error_class",
    metavar="NAME",
    help=lazy_gettext("Only failures of this error class."),
)
@option(
    "--status",
    "failure_status",
    type=click.Choice([value.value for value in FailureStatus]),
    help=lazy_gettext("Only failures with this status."),
)
@option(
    "--after", type=int, metavar="ID", help=lazy_gettext("Only failures after this failure id.")
)
@option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    metavar="N",
    default=ledger.PAGE_SIZE,
    show_default=True,
    help=lazy_gettext("Show at most this many failures."),
)
@with_appcontext
@catch_errors
def failures_command(
    run_id: int,
    as_json: bool,
    error_class: str | None,
    failure_status: str | None,
    after: int | None,
    limit: int,
) -> None:
    state = get_state()
    run = runner.get_run(state, run_id)
    if run is None:
        raise CommandError(_("Run #%(id)s not found.", id=run_id))
    with store.open_session(state.db) as session:
        by_class = ledger.count_by_class(session, run.id)
        retried_in = [retry.id for retry in ledger.retries_of(session, run.id)]
    # One more than asked: whether there is a next page.
    found = runner.failures(
        state, run.id, error_class=error_class, status=failure_status, after=after, limit=limit + 1
    )
    shown = found[:limit]
    next_after = shown[-1].id if len(found) > limit else None
    if as_json:
        with i18n.english():  # read by programs: English whatever the terminal's language
            data = {
                "run": run.id,
                "failure_count": run.failure_count or 0,
                "by_class": [
                    {"error_class": name, "count": count, "unresolved": unresolved}
                    for name, count, unresolved in by_class
                ],
                "failures": [formatting.failure_as_dict(failure) for failure in shown],
                "next_after": next_after,
            }
            click.echo(json.dumps(data, indent=2))
        return
    _print_summary(run, by_class, retried_in)
    filtered = error_class is not None or failure_status is not None or after is not None
    if not shown:
        click.echo(_("No failures match.") if filtered and by_class else _("No failed items."))
        return
    click.echo(_("Failures:"))
    for failure in shown:
        _print_failure(failure)
    if next_after is not None:
        again = ["flask", "mtasks", "failures", str(run.id)]
        if error_class is not None:
            again += ["--class", error_class]
        if failure_status is not None:
            again += ["--status", failure_status]
        if limit != ledger.PAGE_SIZE:
            again += ["--limit", str(limit)]
        again += ["--after", str(next_after)]
        click.echo(
            _(
                "More failures follow; the next page: %(command)s",
                command=visible(shlex.join(again)),
            )
        )


def _print_summary(run: Run, by_class: list[tuple[str, int, int]], retried_in: list[int]) -> None:
    click.echo(_("Run #%(id)s", id=run.id) + f"  {visible(run.task_name)}  {status_of(run)}")
    click.echo("  " + _("Error policy: %(policy)s", policy=visible(formatting.policy_text(run))))
    count = run.failure_count or 0
    unresolved = sum(row[2] for row in by_class)
    click.echo(
        "  "
        + ngettext(
            "%(num)s failed item, %(unresolved)s unresolved",
            "%(num)s failed items, %(unresolved)s unresolved",
            count,
            unresolved=i18n.number(unresolved),
        )
    )
    if by_class:
        width = max(len(visible(row[0])) for row in by_class)
        for name, total, open_ in by_class:
            counts = _(
                "%(total)s (%(unresolved)s unresolved)",
                total=i18n.number(total),
                unresolved=i18n.number(open_),
            )
            click.echo(f"    {visible(name):<{width}}  {counts}")
    if run.retry_of_id is not None:
        click.echo("  " + _("Retry of #%(id)s", id=run.retry_of_id))
    if retried_in:
        runs = ", ".join(f"#{run_id}" for run_id in retried_in)
        click.echo("  " + _("Retried in %(runs)s", runs=runs))


def _print_failure(failure: Failure) -> None:
    """``#id  attempt N  status  key K  Class: first line of the message``, then the item."""
    message = (failure.message or "").split("\n", 1)[0].rstrip("\r")
    key = json.dumps(failure.item_key)
    error = f"{visible(failure.error_class)}: {visible(message)}"
    line = _(
        "attempt %(attempt)s  %(status)s  key %(key)s  %(error)s",
        attempt=failure.attempt,
        status=visible(failure.status),  # as --status takes it
        key=visible(key),
        error=error,
    )
    click.echo(f"  #{failure.id}  {line}")
    if failure.item is not None:
        click.echo("      " + _("item: %(json)s", json=visible(json.dumps(failure.item))))


@command(
    "retry-failures",
    help=lazy_gettext(
        "Retry the unresolved failed items of run RUN_ID in a new run.\n\n"
        "RUN_ID must have stopped. The new run has the same arguments and, unless "
        "overridden, the same error policy; each item it processes without error is "
        "resolved in RUN_ID's ledger."
    ),
)
@click.argument("run_id", type=int)
@policy_options
@waiting
@acting_as
@with_appcontext
@catch_errors
def retry_failures_command(
    run_id: int,
    error_policy: str | None,
    max_failures: int | None,
    max_failure_rate: float | None,
    wait: bool,
    acting_as: str | None,
) -> None:
    state = get_state()
    pending = _unresolved(state, run_id)
    run = runner.retry_failures(
        state,
        run_id,
        actor=audit.command_line(acting_as),
        error_policy=error_policy,
        max_failures=max_failures,
        max_failure_rate=max_failure_rate,
    )
    click.echo(
        ngettext(
            "Started run #%(id)s retrying %(num)s failed item of run #%(original)s.",
            "Started run #%(id)s retrying %(num)s failed items of run #%(original)s.",
            pending,
            id=run.id,
            original=run_id,
        )
    )
    _after_enqueue(state, run.id, wait)


def _unresolved(state: State, run_id: int) -> int:
    """How many failures of ``run_id`` a retry would walk; the run must exist."""
    with store.open_session(state.db) as session:
        if store.find(session, run_id) is None:
            raise RunNotFound(run_id)
        return ledger.count_unresolved(session, run_id)
