"""How runs read to people: progress, durations, ETA and masked arguments.

One module shared by the dashboard, the JSON view and the CLI, so the three
always say the same thing.
"""

from __future__ import annotations

import math
import typing as t
from datetime import datetime, timezone

from flask import current_app

from . import dryrun, pace
from .exceptions import STATUS_WORDS, status_word
from .i18n import LazyString, lazy_pgettext, ngettext, number
from .i18n import gettext as _
from .i18n import moment as locale_moment
from .masking import masked_arguments, masked_metadata, masked_published
from .models import RunStatus
from .policy import ErrorPolicy
from .published import step_line
from .transitions import COMPLETED, STOPPED

if t.TYPE_CHECKING:
    from flask import Flask

    from .audit import Timeline
    from .models import Event, Failure, Run


#: Each status as people read it: "Running", "実行中" (shared with the error messages).
STATUS_NAMES: t.Final[dict[str, LazyString]] = STATUS_WORDS


def status_name(status: str) -> str:
    """A run's status in the reader's language: "Running", "実行中"."""
    name = STATUS_NAMES.get(str(status))
    return str(name) if name is not None else str(status).replace("_", " ").capitalize()


def status_in_sentence(status: str) -> str:
    """A run's status as a word inside a sentence: "running", "実行中"."""
    return str(status_word(status))


def progress_text(tick_count: int, tick_total: int | None) -> str:
    """ "Processed 4,000 out of 7,000 items (57%)." and its variants."""
    if not tick_total:
        return ngettext("Processed %(num)s item.", "Processed %(num)s items.", tick_count)
    if tick_count > tick_total:
        return ngettext(
            "Processed %(num)s item (expected %(total)s).",
            "Processed %(num)s items (expected %(total)s).",
            tick_count,
            total=number(tick_total),
        )
    percent = math.floor(100 * tick_count / tick_total)
    # Translators: "num" is the total; "count" the items processed so far.
    return ngettext(
        "Processed %(count)s out of %(num)s item (%(percent)s%%).",
        "Processed %(count)s out of %(num)s items (%(percent)s%%).",
        tick_total,
        count=number(tick_count),
        percent=percent,
    )


def percent(run: Run) -> float | None:
    """Progress in percent, or ``None`` when the total is unknown or exceeded."""
    if not run.tick_total or run.tick_count > run.tick_total:
        return 100.0 if run.status == RunStatus.SUCCEEDED else None
    # Rounded down, like progress_text: 99.96% done is not 100% done.
    return math.floor(1000 * run.tick_count / run.tick_total) / 10


def duration(seconds: float | None) -> str:
    """A short human duration: "4s", "3m 05s", "2h 05m", "3d 4h"."""
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        # Translators: a short duration in seconds, "4s".
        return _("%(seconds)ss", seconds=seconds)
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        # Translators: a short duration, "3m 05s"; the seconds always have two digits.
        return _("%(minutes)sm %(seconds)ss", minutes=minutes, seconds=format(seconds, "02d"))
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        # Translators: a short duration, "2h 05m"; the minutes always have two digits.
        return _("%(hours)sh %(minutes)sm", hours=hours, minutes=format(minutes, "02d"))
    days, hours = divmod(hours, 24)
    # Translators: a short duration, "3d 4h".
    return _("%(days)sd %(hours)sh", days=days, hours=hours)


def throughput(run: Run) -> float | None:
    """Items per second while running."""
    if not run.time_running or run.tick_count <= 0:
        return None
    return run.tick_count / run.time_running


def speed_text(run: Run) -> str:
    """``rate cap 200/s, batch size task's own, ticker delay task's own``: the overrides."""
    own = _("task's own")
    # Translators: a rate cap in items per second, "200/s".
    rate = _("%(rate)s/s", rate=format(run.max_rate, "g")) if run.max_rate else _("none")
    size = f"{run.batch_size_override}" if run.batch_size_override else own
    delay = (
        # Translators: a ticker delay in seconds, "0.5s".
        _("%(delay)ss", delay=format(run.ticker_delay_override, "g"))
        if run.ticker_delay_override
        else own
    )
    return _(
        "rate cap %(rate)s, batch size %(size)s, ticker delay %(delay)s",
        rate=rate,
        size=size,
        delay=delay,
    )


def eta_seconds(run: Run) -> float | None:
    """Seconds left at the run's average rate, or at its speed cap when that is slower;
    ``None`` when it cannot be told."""
    if run.status in {s.value for s in COMPLETED}:
        return None
    rate = throughput(run)
    if rate is None or not run.tick_total or run.tick_count >= run.tick_total:
        return None
    if run.max_rate:
        rate = min(rate, run.max_rate)
    return (run.tick_total - run.tick_count) / rate


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was: "5m 00s ago"; "-" for none."""
    if moment is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    return _("%(time)s ago", time=duration((now - moment).total_seconds()))


#: Why a run was interrupted, as people read it (the stored reason is a word of ours).
INTERRUPTION_REASONS: t.Final[dict[str, LazyString]] = {
    "time_slice": lazy_pgettext("interruption", "time slice"),
    "worker_shutdown": lazy_pgettext("interruption", "worker shutdown"),
    "throttle": lazy_pgettext("interruption", "throttle"),
    "connection_lost": lazy_pgettext("interruption", "connection lost"),
    "database_locked": lazy_pgettext("interruption", "database locked"),
    "pause": lazy_pgettext("interruption", "pause"),
    "cancel": lazy_pgettext("interruption", "cancel"),
    "recovery": lazy_pgettext("interruption", "recovery"),
}


def interruption_reason(reason: str | None) -> str:
    """An interruption's reason as people read it: "time slice"; "" for none."""
    if not reason:
        return ""
    known = INTERRUPTION_REASONS.get(reason)
    return str(known) if known is not None else reason.replace("_", " ")


def status_text(run: Run, now: datetime | None = None) -> str:
    """One sentence on where the run stands."""
    status = run.status
    ran = duration(run.time_running)
    eta = eta_seconds(run)
    if status == RunStatus.SCHEDULED:
        due_at = run.scheduled_at
        now = now or datetime.now(timezone.utc)
        if due_at is not None and due_at > now:
            return _(
                "Scheduled for %(time)s (in %(wait)s).",
                time=timestamp(due_at),
                wait=duration((due_at - now).total_seconds()),
            )
        return _("Scheduled for %(time)s; starting shortly.", time=timestamp(due_at))
    if status == RunStatus.ENQUEUED:
        return _("Waiting to start.")
    if status == RunStatus.RUNNING:
        if eta is not None:
            return _(
                "Running for %(time)s; about %(remaining)s remaining.",
                time=ran,
                remaining=duration(eta),
            )
        return _("Running for %(time)s.", time=ran)
    if status == RunStatus.PAUSING:
        return _("Pausing at the next item...")
    if status == RunStatus.PAUSED:
        return _(
            "Ran for %(time)s until paused; %(progress)s",
            time=ran,
            progress=progress_text(run.tick_count, run.tick_total),
        )
    if status == RunStatus.INTERRUPTED:
        reason = interruption_reason(run.interruption_reason)
        if reason:
            return _("Interrupted (%(reason)s); resuming shortly.", reason=reason)
        return _("Interrupted; resuming shortly.")
    if status == RunStatus.CANCELLING:
        return _("Cancelling at the next item...")
    if status == RunStatus.CANCELLED:
        return _("Ran for %(time)s; cancelled %(ago)s.", time=ran, ago=ago(run.ended_at, now))
    if status == RunStatus.SUCCEEDED:
        return _("Ran for %(time)s; finished %(ago)s.", time=ran, ago=ago(run.ended_at, now))
    if status == RunStatus.ERRORED:
        return _("Ran for %(time)s until an error %(ago)s.", time=ran, ago=ago(run.ended_at, now))
    return status


def is_stopped(run: Run) -> bool:
    return run.status in STOPPED


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: How each action of the audit trail reads on a timeline (``pgettext("event", ...)``).
ACTION_TEXT: t.Final[dict[str, LazyString]] = {
    "started": lazy_pgettext("event", "Started"),
    "csv_uploaded": lazy_pgettext("event", "CSV file uploaded"),
    "csv_downloaded": lazy_pgettext("event", "CSV file downloaded"),
    "failures_retried": lazy_pgettext("event", "Failed items retried"),
    "due": lazy_pgettext("event", "Its time came"),
    "began": lazy_pgettext("event", "Began"),
    "carried_on": lazy_pgettext("event", "Carried on"),
    "pause_requested": lazy_pgettext("event", "Pause asked"),
    "paused": lazy_pgettext("event", "Paused"),
    "cancel_requested": lazy_pgettext("event", "Cancel asked"),
    "cancelled": lazy_pgettext("event", "Cancelled"),
    "interrupted": lazy_pgettext("event", "Handed on"),
    "resumed": lazy_pgettext("event", "Resumed"),
    "succeeded": lazy_pgettext("event", "Succeeded"),
    "errored": lazy_pgettext("event", "Errored"),
    "force_paused": lazy_pgettext("event", "Forced to pause"),
    "force_cancelled": lazy_pgettext("event", "Forced to cancel"),
    "recovered": lazy_pgettext("event", "Recovered"),
    "step_changed": lazy_pgettext("event", "New step"),
    "speed_changed": lazy_pgettext("event", "Speed changed"),
}

#: Where an action came from (an event's ``origin``), as people read it.
ORIGIN_TEXT: t.Final[dict[str, LazyString]] = {
    "dashboard": lazy_pgettext("origin", "dashboard"),
    "api": lazy_pgettext("origin", "api"),
    "cli": lazy_pgettext("origin", "cli"),
    "python": lazy_pgettext("origin", "python"),
    "engine": lazy_pgettext("origin", "engine"),
}

#: An event's outcome other than "done", as people read it.
OUTCOME_TEXT: t.Final[dict[str, LazyString]] = {
    "refused": lazy_pgettext("outcome", "refused"),
}


def action_text(action: str) -> str:
    """An action of the audit trail as people read it: "Pause asked"."""
    known = ACTION_TEXT.get(action)
    return str(known) if known is not None else action.replace("_", " ").capitalize()


def _where(origin: str | None, address: str | None) -> str:
    shown = str(ORIGIN_TEXT.get(origin, origin)) if origin else None
    if shown and address:
        # Translators: where an action came from, "dashboard, 10.0.0.7".
        return _("%(origin)s, %(address)s", origin=shown, address=address)
    return shown or address or ""


def event_text(event: Event) -> str:
    """One line of a timeline, such as "Paused by bob (dashboard, 10.0.0.7)"."""
    text = _(
        "%(action)s by %(actor)s (%(where)s)",
        action=action_text(event.action),
        actor=event.actor or _("someone unknown"),
        where=_where(event.origin, event.address),
    )
    if event.outcome != "done":
        outcome = OUTCOME_TEXT.get(event.outcome)
        # Translators: an event's line and its outcome, "Pause asked by bob (cli, host): refused".
        text = _(
            "%(event)s: %(outcome)s",
            event=text,
            outcome=str(outcome) if outcome is not None else event.outcome,
        )
    if event.detail:
        # An interruption's reason is a word of ours ("time_slice"); any other detail is
        # shown as written (a file's name, an error's class, a refusal).
        reason = event.action == "interrupted" and event.outcome == "done"
        detail = interruption_reason(event.detail) if reason else event.detail
        # Translators: an event's line and its detail (a file's name, an error, a reason).
        text = _("%(event)s - %(detail)s", event=text, detail=detail)
    return text


def event_as_dict(event: Event) -> dict[str, t.Any]:
    """An event of the audit trail as JSON-ready data."""
    return {
        "id": event.id,
        "at": _iso(event.created_at),
        "action": event.action,
        "outcome": event.outcome,
        "detail": event.detail,
        "actor": event.actor,
        "origin": event.origin,
        "address": event.address,
    }


def run_as_dict(
    app: Flask, run: Run, now: datetime | None = None, timeline: Timeline | None = None
) -> dict[str, t.Any]:
    """The run as JSON-ready data: what ``status --json`` and ``/runs/<id>.json`` return.

    With ``timeline``, its events too (``events``, oldest first), and how many
    older ones it left out (``events_omitted``).
    """
    iso = _iso
    published = masked_published(app, run)
    data = {
        "id": run.id,
        "task_name": run.task_name,
        "status": run.status,
        "tick_count": run.tick_count,
        "tick_total": run.tick_total,
        "percent": percent(run),
        "progress": progress_text(run.tick_count, run.tick_total),
        "status_text": status_text(run, now),
        "time_running": run.time_running,
        "throughput": throughput(run),
        "eta_seconds": eta_seconds(run),
        "cursor": run.cursor,
        "arguments": masked_arguments(app, run.task_name, run.arguments),
        "metadata": masked_metadata(app, run.metadata_),
        "published": published,
        "step": step_line(published),
        "interruption_reason": run.interruption_reason,
        "job_id": run.job_id,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "scheduled_at": iso(run.scheduled_at),
        "speed": {
            "rate": run.max_rate,
            "batch_size": run.batch_size_override,
            "ticker_delay": run.ticker_delay_override,
        },
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "error": None
        if run.error_class is None
        else {
            "class": run.error_class,
            "message": run.error_message,
            "backtrace": run.backtrace,
            "element": run.errored_element,
        },
        "started_by": run.started_by,
        "error_policy": {
            "policy": run.error_policy,
            "max_failures": run.max_failures,
            "max_failure_rate": run.max_failure_rate,
        },
        "failure_count": run.failure_count or 0,
        "retry_of": run.retry_of_id,
        "dry_run": bool(run.dry_run),
        "changes": run.changes if run.dry_run else None,
        "changes_summary": changes_summary(run) if run.dry_run else None,
        "pace": pace.as_dict(pace.points(run.pace)),
    }
    if timeline is not None:
        data["events"] = [event_as_dict(event) for event in timeline.events]
        data["events_omitted"] = timeline.omitted
    return data


def timestamp(moment: datetime | None) -> str:
    """A moment as people read it in a tooltip: "2024-05-01 13:02:03 UTC"."""
    if moment is None:
        return "-"
    return locale_moment(moment)


def throughput_text(run: Run) -> str | None:
    """ "1,234.5 items/s" (or per minute when slower than one a second), or ``None``."""
    rate = throughput(run)
    if rate is None:
        return None
    # Rounded first as Python rounds a float, so that the decimal stays as it always was.
    if rate >= 1:
        return _("%(rate)s items/s", rate=number(round(rate, 1), digits=1))
    return _("%(rate)s items/min", rate=number(round(rate * 60, 1), digits=1))


def progress_bar(run: Run) -> tuple[int | None, int]:
    """``(value, max)`` of a progress bar; ``value`` is ``None`` when indeterminate.

    The bar is full-scale on the total while the total holds; a run past its
    expected total, or without one, shows an indeterminate bar until it stops.
    """
    within = bool(run.tick_total) and run.tick_count <= (run.tick_total or 0)
    maximum = run.tick_total if within and run.tick_total else max(run.tick_count, 1)
    if within or is_stopped(run):
        return min(run.tick_count, maximum), maximum
    return None, maximum


def changes_summary(run: Run) -> list[str]:
    """What a dry run would change, one line per table and kind (see :func:`.dryrun.summary`)."""
    return dryrun.summary(run.changes)


def failure_as_dict(failure: Failure) -> dict[str, t.Any]:
    """A failure of the ledger as JSON-ready data (``failures --json``, the failures page)."""
    return {
        "id": failure.id,
        "run_id": failure.run_id,
        "item_key": failure.item_key,
        "item": failure.item,
        "error_class": failure.error_class,
        "message": failure.message,
        "backtrace": failure.backtrace,
        "attempt": failure.attempt,
        "status": failure.status,
        "retried_by": failure.retried_by_id,
        "resolved_at": _iso(failure.resolved_at),
        "created_at": _iso(failure.created_at),
    }


def policy_text(run: Run) -> str:
    """``skip, at most 100 failures or 5%``: a run's error policy as people read it."""
    policy = ErrorPolicy(run.error_policy or "stop", run.max_failures, run.max_failure_rate)
    return policy.describe()


#: The columns of a run's failures as CSV (the dashboard's download).
FAILURE_CSV_COLUMNS = (
    "id",
    "item_key",
    "item",
    "error_class",
    "message",
    "attempt",
    "status",
    "retried_by",
    "created_at",
)

#: What a spreadsheet takes for the start of a formula, at the start of a cell.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: t.Any) -> str:
    """A value as a CSV cell a spreadsheet shows as text: a cell that a spreadsheet would
    read as a formula (``=``, ``+``, ``-``, ``@``, a tab or a carriage return first) gets a
    single quote in front."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def failure_csv_row(failure: Failure) -> list[str]:
    """A failure as a row of :data:`FAILURE_CSV_COLUMNS`; keys and items as JSON."""
    import json  # only the failures download needs it

    values = [
        failure.id,
        json.dumps(failure.item_key, ensure_ascii=False, default=str),
        json.dumps(failure.item, ensure_ascii=False, default=str),
        failure.error_class,
        failure.message,
        failure.attempt,
        failure.status,
        failure.retried_by_id,
        _iso(failure.created_at),
    ]
    return [csv_cell(value) for value in values]


def partition_detail(child: Run) -> dict[str, t.Any]:
    """What a partition of a run shows of itself, in the JSON, the CLI and signal payloads."""
    return {
        "index": child.partition,
        "run_id": child.id,
        "status": child.status,
        "tick_count": child.tick_count,
        "tick_total": child.tick_total,
        "failure_count": child.failure_count,
        "time_running": child.time_running,
        "cursor": child.cursor,
        "error_class": child.error_class,
        "updated_at": child.updated_at.isoformat() if child.updated_at else None,
        # Each partition publishes its own mapping (its own task walks its own range).
        "published": masked_published(current_app, child),
    }


def partitions_as_dict(run: Run, children: t.Sequence[Run]) -> dict[str, t.Any]:
    """What the JSON of a run says of its partitions, or of the run a partition belongs to.

    The dashboard's ``/runs/<id>.json`` and ``flask mtasks status --json``
    both use it. A run: ``partition_count`` (what it was asked to be cut
    into, 1 when it is not partitioned) and ``partitions``, each one's
    :func:`partition_detail` (``children``: its partitions once it is cut), and
    then its ``pace``, theirs added up (see :func:`.pace.combined`).
    A partition: its ``partition`` index, ``partition_count`` (as its range
    says), no ``partitions`` of its own, and its run's id as ``parent_id``.
    """
    if run.parent_id is not None:
        of = run.bounds.get("of") if isinstance(run.bounds, dict) else None
        return {
            "partition": run.partition,
            "partition_count": of if isinstance(of, int) and not isinstance(of, bool) else None,
            "partitions": [],
            "parent_id": run.parent_id,
        }
    data: dict[str, t.Any] = {
        "partition_count": int(run.partitions or 1),
        "partitions": [partition_detail(child) for child in children],
    }
    if children:
        data["pace"] = pace.as_dict(pace.combined(pace.points(child.pace) for child in children))
    return data
