"""The commands about runs: list, run (and follow), status, pause, resume, cancel, set."""

from __future__ import annotations

import json
import sys
import time
import typing as t
from pathlib import Path

import click
from flask.cli import with_appcontext

from .. import (
    audit,
    docstrings,
    formatting,
    i18n,
    ledger,
    masking,
    pace,
    parameters,
    partitions,
    runner,
    store,
)
from ..csv.uploads import csv_file_of
from ..executors import InProcessExecutor, RQExecutor
from ..i18n import gettext as _
from ..i18n import lazy_gettext, ngettext
from ..models import Run, RunStatus
from ..published import facts as published_facts
from ..published import step_line
from ..state import State, get_state
from ..transitions import STOPPED
from .changes import print_changes, report_outcome, status_of
from .errors import catch_errors
from .policy import policy_options
from .terminal import visible
from .translated import CommandError, command, option, status

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..task import Task

#: How many completed runs ``status`` lists after the active ones.
LATEST_RUNS = 10
#: How many of a run's newest events ``status RUN_ID`` shows.
TIMELINE_EVENTS = 200

#: Seconds a run may stay ``enqueued`` on RQ before following it asks RQ whether
#: any worker listens on the queue (and asks again as often until one does).
NO_WORKER_HINT_AFTER = 3.0

#: What ``run`` and ``resume`` say before following a run of the in-process executor.
IN_PROCESS_NOTE = lazy_gettext(
    "no MAINTENANCE_TASKS_REDIS_URL: the run executes in this process; "
    "the command returns when it ends"
)

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def waiting(command: F) -> F:
    """``--wait``: follow the run with a progress bar; fail unless it succeeds."""
    return option(
        "--wait",
        is_flag=True,
        help=lazy_gettext("Follow the run until it ends; fail unless it succeeds."),
    )(command)


def partitions_option(command: F) -> F:
    """``--partitions K``: cut the run into K partitions instead of the task's number.

    The value reaches the runner as typed (a whole number read as one), so
    that every mistake, a word as much as a number out of range, gets the
    engine's message and fails as the task's invalid arguments do.
    """
    return option(
        "--partitions",
        "partitions_asked",
        metavar="K",
        help=lazy_gettext(
            "Cut the run into K partitions, walked side by side by several workers "
            "(default: the task's partitions)."
        ),
    )(command)


def partition_count(text: str | None) -> int | str | None:
    """``--partitions`` as given: a whole number as an ``int``, anything else as typed."""
    if text is None:
        return None
    digits = text.strip().removeprefix("-")
    if digits.isascii() and digits.isdigit() and len(digits.lstrip("0")) <= _PARTITION_DIGITS:
        number = int(digits.lstrip("0") or "0")  # (int() refuses more than 4,300 digits)
        return -number if text.strip().startswith("-") else number
    return text


#: Digits past which ``--partitions`` is not read as a number: no maximum is that large.
_PARTITION_DIGITS = 6


def acting_as(command: F) -> F:
    """``--as NAME``: who the audit trail says acted, besides the OS user."""
    return option(
        "--as",
        "acting_as",
        metavar="NAME",
        help=lazy_gettext("Who you act for, recorded in the run's audit trail with your OS user."),
    )(command)


@command("list", help=lazy_gettext("List the tasks with the status of each one's latest run."))
@option(
    "--long",
    "-l",
    "long",
    is_flag=True,
    help=lazy_gettext("Also print the first paragraph of each task's description, under its name."),
)
@with_appcontext
@catch_errors
def list_command(long: bool) -> None:
    state = get_state()
    tasks = state.registry.tasks()
    if not tasks:
        click.echo(_("No tasks found in %(package)s.", package=visible(state.registry.package)))
        return
    with store.open_session(state.db) as session:
        latest = store.latest_run_per_task(session, tasks)
    width = max(len(visible(name)) for name in tasks)
    for name in tasks:
        run = latest.get(name)
        if run is None:
            latest_text = _("new")
        elif run.dry_run:
            latest_text = _("%(status)s (dry run #%(id)s)", status=status(run.status), id=run.id)
        else:
            latest_text = _("%(status)s (run #%(id)s)", status=status(run.status), id=run.id)
        queue = tasks[name].queue
        own = "  " + _("(queue %(queue)s)", queue=visible(queue)) if queue else ""
        click.echo(f"{visible(name):<{width}}  {latest_text}{own}")
        summary = docstrings.summary(tasks[name].__doc__) if long else ""
        if summary:
            click.echo(f"    {visible(summary)}")


@command(
    "show",
    help=lazy_gettext(
        "Show task NAME: its description, its parameters and its latest run.\n\n"
        "The description is the task's docstring, its reStructuredText markup taken out."
    ),
)
@click.argument("name")
@with_appcontext
@catch_errors
def show_command(name: str) -> None:
    state = get_state()
    task = state.registry.get(name)
    click.echo(visible(name))
    text = docstrings.plain_text(task.__doc__)
    if text:
        click.echo()
        for line in text.splitlines():
            click.echo(visible(line))
    fields = getattr(getattr(task, "Parameters", None), "model_fields", None) or {}
    if fields:
        click.echo()
        names = ", ".join(visible(field) for field in fields)
        click.echo(_("Parameters: %(names)s", names=names))
    with store.open_session(state.db) as session:
        run = store.latest_run_per_task(session, [name]).get(name)
    click.echo()
    if run is None:
        click.echo(_("Latest run: none (new)"))
    elif run.dry_run:
        click.echo(
            _("Latest run: dry run #%(id)s, %(status)s", id=run.id, status=status(run.status))
        )
    else:
        click.echo(_("Latest run: run #%(id)s, %(status)s", id=run.id, status=status(run.status)))


#: ``--arg KEY=VALUE``, repeatable: a task's parameters (``run`` and ``dry-run``).
arguments_option = option(
    "--arg",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help=lazy_gettext("A parameter (repeatable)."),
)


@command(
    "run",
    help=lazy_gettext(
        "Start a run of task NAME and print its id.\n\n"
        "--error-policy, --max-failures and --max-failure-rate override the task's "
        "error policy for this run. --dry-run starts a dry run: the database rolls "
        "back what it writes, and `flask mtasks status RUN_ID` says what it would "
        "have changed. --partitions K cuts the run into K partitions, from 1 to "
        "MAINTENANCE_TASKS_MAX_PARTITIONS, instead of the task's own number. "
        "--at WHEN schedules the run: it is `scheduled` (and holds the task) until "
        "then, when a worker's RQ scheduler starts it; `flask mtasks cancel RUN_ID` "
        "calls it off."
    ),
)
@click.argument("name")
@arguments_option
@option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    metavar="PATH",
    help=lazy_gettext("A CSV file for a CSV task; - reads stdin."),
)
@policy_options
@option(
    "--dry-run",
    is_flag=True,
    help=lazy_gettext(
        "Process every item and roll each tick back: count what the run would change."
    ),
)
@partitions_option
@option(
    "--at",
    "at",
    metavar="WHEN",
    help=lazy_gettext(
        "Start the run at this time instead of now: ISO 8601 with its time zone, "
        "such as 2026-12-01T02:00+00:00 (needs RQ)."
    ),
)
@waiting
@acting_as
@with_appcontext
@catch_errors
def run_command(
    name: str,
    pairs: tuple[str, ...],
    csv_path: str | None,
    error_policy: str | None,
    max_failures: int | None,
    max_failure_rate: float | None,
    dry_run: bool,
    partitions_asked: str | None,
    at: str | None,
    wait: bool,
    acting_as: str | None,
) -> None:
    state = get_state()
    arguments = _parse_arguments(state.registry.get(name), pairs, state.settings.masked_parameters)
    csv_file: t.Any = None
    if csv_path == "-":
        csv_file = ("stdin.csv", click.open_file("-", "rb"))
    elif csv_path is not None:
        csv_file = Path(csv_path)
    run = runner.run(
        state,
        name,
        arguments,
        csv_file=csv_file,
        actor=audit.command_line(acting_as),
        error_policy=error_policy,
        max_failures=max_failures,
        max_failure_rate=max_failure_rate,
        dry_run=dry_run,
        partitions=partition_count(partitions_asked),
        at=at,
    )
    click.echo(run.id)
    if run.status == RunStatus.SCHEDULED:
        click.echo(
            _(
                "Run #%(id)s is scheduled for %(moment)s; "
                "`flask mtasks cancel %(id)s` calls it off.",
                id=run.id,
                moment=formatting.timestamp(run.scheduled_at),
            ),
            err=True,
        )
    if run.dry_run:
        click.echo(
            _(
                "Run #%(id)s is a dry run: every tick is rolled back, nothing is written; "
                "`flask mtasks status %(id)s` says what it would change.",
                id=run.id,
            ),
            err=True,
        )
    _after_enqueue(state, run.id, wait)


def _after_enqueue(state: State, run_id: int, wait: bool) -> None:
    """Follow the run just enqueued if asked, or if it executes in this process anyway.

    The in-process executor's threads keep the process alive until the run
    ends: say so, and show its progress meanwhile. Only ``--wait`` makes a run
    that did not succeed fail the command. A dry run that succeeded ends with
    what it would change.
    """
    in_process = isinstance(state.executor, InProcessExecutor)
    if in_process:
        click.echo(str(IN_PROCESS_NOTE), err=True)
    if wait or in_process:
        run = _follow(state, run_id, fail=wait)
        report_outcome(run)


def _parse_arguments(
    task_class: type[Task], pairs: tuple[str, ...], masked: t.Iterable[str] = ()
) -> dict[str, t.Any]:
    """``KEY=VALUE`` pairs to arguments (see :mod:`flask_maintenance_tasks.parameters`).

    A list parameter may also be given by repeating its key (``ids=1 ids=2``),
    and a JSON parameter whose text is not JSON is given as text, for the
    model to say what it expected. The model does the rest of the conversion.
    A pair that is not ``KEY=VALUE`` is quoted in the error unless it mentions
    one of the ``masked`` names: then its value may well be a secret.
    """
    given: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            if masking.mentions_masked_name(pair, task_class, masked):
                message = _("An argument naming a masked parameter is not KEY=VALUE.")
            else:
                message = _("%(pair)s is not KEY=VALUE.", pair=visible(repr(pair)))
            raise click.BadParameter(message, param_hint="--arg")
        given.setdefault(key, []).append(value)
    described = parameters.parameters_of(task_class)
    arguments: dict[str, t.Any] = {}
    for key, values in given.items():
        try:
            arguments[key] = _argument(described.get(key), key, values)
        except parameters.NestedTooDeep:
            message = _(
                "%(key)s: nested deeper than %(depth)s levels.",
                key=visible(key),
                depth=parameters.MAX_DEPTH,
            )
            raise click.BadParameter(message, param_hint="--arg") from None
    return arguments


def _argument(parameter: parameters.Parameter | None, key: str, values: list[str]) -> t.Any:
    """The argument ``key`` given as ``values`` (see :func:`_parse_arguments`)."""
    if parameter is not None and parameter.shape == "list":
        return [item for value in values for item in parameters.split_many(value)]
    if len(values) > 1:
        raise click.BadParameter(
            _(
                "%(key)s is given %(count)s times but takes one value.",
                key=visible(key),
                count=len(values),
            ),
            param_hint="--arg",
        )
    if parameter is None:
        return values[0]  # the task reports an unknown parameter
    try:
        return parameters.from_text(parameter, values[0])
    except parameters.NestedTooDeep:
        raise
    except json.JSONDecodeError:
        return values[0]


def _follow(state: State, run_id: int, fail: bool = True) -> Run:
    """Draw a progress bar on stderr until the run stops; exit 1 unless it succeeded.

    On a terminal the bar is redrawn in place; otherwise (a log, CI) a line is
    written when the progress changes, at most every two seconds. A run that
    stays ``enqueued`` on RQ with no worker listening on its queue gets a hint,
    once. With ``fail=False`` a run that did not succeed is only reported.
    """
    tty = sys.stderr.isatty()
    last_line = ""
    last_print = 0.0
    executor = state.executor
    rq_executor = executor if isinstance(executor, RQExecutor) else None
    rq_executor_name = ""
    if rq_executor is not None:
        first = runner.get_run(state, run_id)
        own = state.registry.queue_of(first.task_name) if first is not None else None
        rq_executor_name = own or rq_executor.queue_name
    ask_workers_at = time.monotonic() + NO_WORKER_HINT_AFTER
    try:
        while True:
            run = runner.get_run(state, run_id)
            if run is None:
                raise CommandError(_("Run #%(id)s disappeared.", id=run_id))
            line = _bar(run)
            now = time.monotonic()
            if rq_executor and run.status == RunStatus.ENQUEUED and now >= ask_workers_at:
                ask_workers_at = now + NO_WORKER_HINT_AFTER
                if rq_executor.worker_count(rq_executor_name) == 0:
                    rq_executor = None  # once
                    if tty and last_line:
                        click.echo(err=True)
                        last_line = ""
                    click.echo(_no_worker_hint(rq_executor_name, state.settings.queue), err=True)
            if tty:
                click.echo("\r" + line.ljust(len(last_line)), err=True, nl=False)
            elif line != last_line and (now - last_print >= 2 or run.status in STOPPED):
                click.echo(line, err=True)
                last_print = now
            last_line = line
            if run.status in STOPPED:
                break
            time.sleep(0.25)
    except KeyboardInterrupt:
        raise CommandError(
            _(
                "Stopped following run #%(id)s; it carries on (`flask mtasks status %(id)s`).",
                id=run_id,
            )
        ) from None
    finally:
        if tty:
            click.echo(err=True)
    if run.status != RunStatus.SUCCEEDED:
        if run.error_class:
            outcome = _(
                "Run #%(id)s ended %(status)s: %(error)s",
                id=run.id,
                status=status(run.status),
                error=visible(f"{run.error_class}: {run.error_message}"),
            )
        else:
            outcome = _("Run #%(id)s ended %(status)s", id=run.id, status=status(run.status))
        if fail:
            raise CommandError(outcome)
        click.echo(outcome, err=True)
    return run


def _no_worker_hint(queue: str, default: str | None = None) -> str:
    flag = f" --queue {visible(queue)}" if default is not None and queue != default else ""
    return _(
        "No worker listens on queue %(queue)s; the run stays enqueued until one does. "
        "Start one with `flask mtasks worker%(option)s`.",
        queue=visible(queue),
        option=flag,
    )


def _bar(run: Run, width: int = 30) -> str:
    pct = formatting.percent(run)
    if pct is None:
        bar = "?" * width if run.tick_count == 0 else "~" * width
    else:
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
    progress = formatting.progress_text(run.tick_count, run.tick_total)
    return f"[{bar}] {status(run.status):<11} {progress}"


@command("status", help=lazy_gettext("Show run RUN_ID, or the active and latest runs."))
@click.argument("run_id", type=int, required=False)
@option("--json", "as_json", is_flag=True, help=lazy_gettext("Print JSON."))
@with_appcontext
@catch_errors
def status_command(run_id: int | None, as_json: bool) -> None:
    state = get_state()
    if run_id is not None:
        _show_run(state, run_id, as_json)
    else:
        _show_runs(state, as_json)


def _show_run(state: State, run_id: int, as_json: bool) -> None:
    run = runner.get_run(state, run_id)
    if run is None:
        raise CommandError(_("Run #%(id)s not found.", id=run_id))
    with store.open_session(state.db) as session:
        timeline = audit.timeline(session, run.id, TIMELINE_EVENTS)
        retried_in = [retry.id for retry in ledger.retries_of(session, run.id)]
        children = _partitions_of(session, run)
    if as_json:
        with i18n.english():  # read by programs: English whatever the terminal's language
            data = formatting.run_as_dict(state.app, run, timeline=timeline)
            data["retried_in"] = retried_in
            data.update(formatting.partitions_as_dict(run, children))
            click.echo(json.dumps(data, indent=2))
    else:
        _print_run(state, run, children)
        print_changes(run)
        _print_failures(run, retried_in)
        _print_timeline(timeline)


def _partitions_of(session: Session, run: Run) -> list[Run]:
    """The partitions of a run that was cut, in order; none for any other run (no query)."""
    if not partitions.is_split(run):
        return []
    return store.partitions_of(session, [run.id]).get(run.id, [])


def _print_parent(run: Run) -> None:
    """Which run a partition is part of, and that the operator acts on that run."""
    if run.parent_id is None:
        return
    number = (run.partition or 0) + 1
    of = formatting.partitions_as_dict(run, [])["partition_count"] or "?"
    click.echo(
        "  "
        + _(
            "Partition %(number)s of %(of)s of run #%(parent)s: "
            "`flask mtasks status %(parent)s` shows the whole run, "
            "and pause, resume and cancel act on it.",
            number=number,
            of=of,
            parent=run.parent_id,
        )
    )


def _print_partitions(run: Run, children: list[Run]) -> None:
    """Where a partitioned run's partitions stand, one line each, or that it will be cut."""
    count = int(run.partitions or 1)
    if run.parent_id is not None or count <= 1:
        return
    if not children:
        if run.status in STOPPED:
            click.echo(
                "  "
                + _("Asked for %(count)s partitions; it stopped before it was cut.", count=count)
            )
        else:
            click.echo(
                "  " + _("Will be cut into %(count)s partitions when it starts.", count=count)
            )
        return
    click.echo("  " + _("Partitions (%(count)s):", count=len(children)))
    width = len(str(max(child.id for child in children)))
    for child in children:
        detail = formatting.partition_detail(child)
        click.echo(f"    {_partition_line(detail, len(children), width)}")


def _partition_line(detail: dict[str, t.Any], count: int, width: int) -> str:
    """``1/4  #13  running     120 / 250 (48%)  2 failed  ValueError``."""
    number = f"{(detail['index'] or 0) + 1}/{count}"
    ticks, total = detail["tick_count"] or 0, detail["tick_total"]
    if total:
        shown = min(100, 100 * ticks // total)
        progress = f"{i18n.number(ticks)} / {i18n.number(total)} ({shown}%)"
    else:
        progress = i18n.number(ticks)
    line = (
        f"{number:>{len(str(count)) * 2 + 1}}  #{detail['run_id']:<{width}}  "
        f"{status(detail['status']):<11} {progress}"
    )
    failures = detail["failure_count"] or 0
    if failures:
        line += "  " + _("%(count)s failed", count=i18n.number(failures))
    if detail["error_class"]:
        line += f"  {visible(detail['error_class'])}"
    return line


def _print_failures(run: Run, retried_in: list[int]) -> None:
    """The run's error policy unless plain stop, its failed items, and the retries it is part of."""
    policy = formatting.policy_text(run)
    if policy != "stop":
        click.echo("  " + _("Error policy: %(policy)s", policy=visible(policy)))
    count = run.failure_count or 0
    if count:
        click.echo(
            "  "
            + ngettext(
                "%(num)s failed item; see `flask mtasks failures %(id)s`",
                "%(num)s failed items; see `flask mtasks failures %(id)s`",
                count,
                id=run.id,
            )
        )
    if run.retry_of_id is not None:
        click.echo("  " + _("Retry of #%(id)s", id=run.retry_of_id))
    if retried_in:
        runs = ", ".join(f"#{run_id}" for run_id in retried_in)
        click.echo("  " + _("Retried in %(runs)s", runs=runs))


def _print_timeline(timeline: audit.Timeline) -> None:
    """The run's audit trail, oldest first."""
    if not timeline.events:
        return
    click.echo("  " + _("History:"))
    if timeline.omitted:
        omitted = timeline.omitted
        click.echo("    " + _("(%(count)s earlier events not shown)", count=omitted))
    for event in timeline.events:
        moment = formatting.timestamp(event.created_at)
        click.echo(f"    {moment}  {visible(formatting.event_text(event))}")


def _show_runs(state: State, as_json: bool) -> None:
    with store.open_session(state.db) as session:
        active = store.active_runs(session)
        latest = store.history_page(session, limit=LATEST_RUNS)
    if as_json:
        with i18n.english():  # read by programs: English whatever the terminal's language
            data = {
                "active": [formatting.run_as_dict(state.app, r) for r in active],
                "latest": [formatting.run_as_dict(state.app, r) for r in latest],
            }
            click.echo(json.dumps(data, indent=2))
        return
    click.echo(_("Active runs:") if active else _("No active runs."))
    for run in active:
        click.echo(f"  {_summary(run)}")
    if latest:
        click.echo(_("Latest runs:"))
        for run in latest:
            click.echo(f"  {_summary(run)}")


def _summary(run: Run) -> str:
    count = int(run.partitions or 1)
    cut = "  " + _("(%(count)s partitions)", count=count) if count > 1 else ""
    if run.status == RunStatus.SCHEDULED:
        cut += "  " + _("(for %(moment)s)", moment=formatting.timestamp(run.scheduled_at))
    step = step_line(masking.masked_published(get_state().app, run))
    if step:
        cut += f"  {visible(step)}"
    return (
        f"#{run.id:<6} {visible(run.task_name)}  {status_of(run)}  "
        f"{formatting.progress_text(run.tick_count, run.tick_total)}{cut}"
    )


def _print_run(state: State, run: Run, children: list[Run]) -> None:
    data = formatting.run_as_dict(state.app, run)
    click.echo(_("Run #%(id)s", id=run.id) + f"  {visible(run.task_name)}  {status_of(run)}")
    _print_parent(run)
    if data["step"]:
        click.echo(f"  {visible(data['step'])}")
    click.echo(f"  {data['progress']}")
    click.echo(f"  {visible(data['status_text'])}")
    # A cut run's pace is its partitions' added up, as its card draws it.
    found = (
        pace.combined(pace.points(child.pace) for child in children)
        if children
        else pace.points(run.pace)
    )
    said = pace.describe(found)
    if said is not None:
        click.echo(f"  {said}")
    _print_partitions(run, children)
    if data["arguments"]:
        click.echo("  " + _("Arguments: %(json)s", json=json.dumps(data["arguments"])))
    if data["metadata"] is not None:
        click.echo("  " + _("Metadata: %(json)s", json=json.dumps(data["metadata"])))
    facts = published_facts(data["published"])
    if facts:
        click.echo("  " + _("Published:"))
        for key, value in sorted(facts.items()):
            shown = value if isinstance(value, str) else json.dumps(value)
            click.echo(f"    {visible(key)}: {visible(shown)}")
    csv_file = csv_file_of(state, run)
    if csv_file is not None:
        original = csv_file.original_filename
        values = {
            "file": visible(csv_file.filename),
            "size": i18n.number(csv_file.size),
            "original": visible(original),
        }
        if original:
            line = _("CSV file: %(file)s (%(size)s bytes, given as %(original)s)", **values)
        else:
            line = _("CSV file: %(file)s (%(size)s bytes)", **values)
        click.echo(f"  {line}")
    if not children:  # each partition of a cut run has a cursor of its own
        click.echo("  " + _("Cursor: %(json)s", json=json.dumps(run.cursor)))
    if run.interruption_reason:
        reason = visible(formatting.interruption_reason(run.interruption_reason))
        click.echo("  " + _("Last interruption: %(reason)s", reason=reason))
    if run.error_class:
        error = f"{visible(run.error_class)}: {visible(run.error_message)}"
        click.echo("  " + _("Error: %(error)s", error=error))
        if run.errored_element is not None:
            click.echo("  " + _("Failing item: %(json)s", json=json.dumps(run.errored_element)))
        if run.backtrace:
            click.echo("  " + _("Backtrace:"))
            for frame in run.backtrace:
                click.echo(f"    {visible(frame)}")


def _control(act: t.Callable[..., Run], run_id: int, acting_as: str | None) -> Run:
    run = act(get_state(), run_id, actor=audit.command_line(acting_as))
    click.echo(_("Run #%(id)s is %(status)s.", id=run.id, status=status(run.status)))
    return run


@command("pause", help=lazy_gettext("Pause run RUN_ID at its next item (force a stuck one)."))
@click.argument("run_id", type=int)
@acting_as
@with_appcontext
@catch_errors
def pause_command(run_id: int, acting_as: str | None) -> None:
    _control(runner.pause, run_id, acting_as)


@command("resume", help=lazy_gettext("Resume paused or errored run RUN_ID from its cursor."))
@click.argument("run_id", type=int)
@waiting
@acting_as
@with_appcontext
@catch_errors
def resume_command(run_id: int, wait: bool, acting_as: str | None) -> None:
    run = _control(runner.resume, run_id, acting_as)
    _after_enqueue(get_state(), run.id, wait)


@command("cancel", help=lazy_gettext("Cancel run RUN_ID (at once if paused or stuck)."))
@click.argument("run_id", type=int)
@acting_as
@with_appcontext
@catch_errors
def cancel_command(run_id: int, acting_as: str | None) -> None:
    _control(runner.cancel, run_id, acting_as)


@command(
    "set",
    help=lazy_gettext(
        "Change the speed of active run RUN_ID without pausing it.\n\n"
        "Its job takes the new values at its next status reload."
    ),
)
@click.argument("run_id", type=int)
@option("--rate", metavar="N", help=lazy_gettext("Cap the run at N items per second (N > 0)."))
@option(
    "--batch-size",
    metavar="N",
    help=lazy_gettext("Fetch N records per query, from the next slice."),
)
@option(
    "--ticker-delay", metavar="S", help=lazy_gettext("Commit progress every S seconds (S > 0).")
)
@option(
    "--reset",
    multiple=True,
    type=click.Choice(runner.SPEED_FIELDS),
    help=lazy_gettext("Give a field back to the task (rate: no cap). Repeat for several."),
)
@acting_as
@with_appcontext
@catch_errors
def set_command(
    run_id: int,
    rate: str | None,
    batch_size: str | None,
    ticker_delay: str | None,
    reset: tuple[str, ...],
    acting_as: str | None,
) -> None:
    if rate is None and batch_size is None and ticker_delay is None and not reset:
        raise click.UsageError(
            _("Give at least one of --rate, --batch-size, --ticker-delay or --reset.")
        )
    run = runner.set_speed(
        get_state(),
        run_id,
        rate=rate,
        batch_size=batch_size,
        ticker_delay=ticker_delay,
        reset=reset,
        actor=audit.command_line(acting_as),
    )
    click.echo(_("Run #%(id)s: %(speed)s.", id=run.id, speed=visible(formatting.speed_text(run))))
