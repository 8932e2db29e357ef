"""Blinker signals sent when a run changes status; the sender is the app.

Receivers get ``run=`` (the :class:`~flask_maintenance_tasks.Run`) and
``payload=``, a dict with ``task_name``, ``run_id``, ``job_id``, masked
``arguments``, ``metadata``, ``time_running``, ``started_at``, ``ended_at``,
and for errors ``error={"class", "message", "backtrace"}``. A receiver that
raises is logged and never breaks the run.
"""

from __future__ import annotations

import logging
import typing as t

from blinker import NamedSignal, Namespace

from .masking import masked_arguments

if t.TYPE_CHECKING:
    from flask import Flask

    from .models import Run

logger = logging.getLogger("flask_maintenance_tasks")

_signals = Namespace()

run_enqueued: NamedSignal = _signals.signal("run-enqueued")
run_started: NamedSignal = _signals.signal("run-started")
run_paused: NamedSignal = _signals.signal("run-paused")
run_interrupted: NamedSignal = _signals.signal("run-interrupted")
run_cancelled: NamedSignal = _signals.signal("run-cancelled")
run_succeeded: NamedSignal = _signals.signal("run-succeeded")
run_errored: NamedSignal = _signals.signal("run-errored")

BY_STATUS: t.Final[dict[str, NamedSignal]] = {
    "enqueued": run_enqueued,
    "running": run_started,
    "paused": run_paused,
    "interrupted": run_interrupted,
    "cancelled": run_cancelled,
    "succeeded": run_succeeded,
    "errored": run_errored,
}


def payload(app: Flask, run: Run) -> dict[str, t.Any]:
    data: dict[str, t.Any] = {
        "task_name": run.task_name,
        "run_id": run.id,
        "job_id": run.job_id,
        "arguments": masked_arguments(app, run.task_name, run.arguments),
        "metadata": run.metadata_,
        "time_running": run.time_running,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
    }
    if run.status == "errored":
        data["error"] = {
            "class": run.error_class,
            "message": run.error_message,
            "backtrace": run.backtrace,
        }
    return data


def send(signal: NamedSignal, app: Flask, run: Run) -> None:
    """Send ``signal`` to each receiver in turn; a failing receiver is logged and skipped."""
    if not signal.receivers:
        return
    data = payload(app, run)
    for receiver in signal.receivers_for(app):
        try:
            receiver(app, run=run, payload=data)
        except Exception:
            logger.exception("A receiver of %s failed for run #%s", signal.name, run.id)
