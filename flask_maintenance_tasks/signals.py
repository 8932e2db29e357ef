"""Blinker signals sent when a run changes status, or an item fails; the sender is the app.

Receivers get ``run=`` (the :class:`~flask_maintenance_tasks.Run`) and
``payload=``, a dict with ``task_name``, ``run_id``, ``job_id``, masked
``arguments``, ``metadata``, ``time_running``, ``started_at``, ``ended_at``,
and for errors ``error={"class", "message", "backtrace"}``. A receiver that
raises is logged and never breaks the run.

The payload is built and the signals are sent by
:mod:`~flask_maintenance_tasks.lifecycle`, as each status change follows from
the state machine.
"""

from __future__ import annotations

from blinker import NamedSignal, Namespace

_signals = Namespace()

run_enqueued: NamedSignal = _signals.signal("run-enqueued")
run_started: NamedSignal = _signals.signal("run-started")
run_paused: NamedSignal = _signals.signal("run-paused")
run_interrupted: NamedSignal = _signals.signal("run-interrupted")
run_cancelled: NamedSignal = _signals.signal("run-cancelled")
run_succeeded: NamedSignal = _signals.signal("run-succeeded")
run_errored: NamedSignal = _signals.signal("run-errored")

#: Sent for each failed item recorded in a run's failure ledger, once the
#: tick that recorded it is committed. Receivers get ``run=`` (the run, as
#: the slice last read it), ``item=`` (the item's masked description),
#: ``error=`` (the exception) and ``failure_id=`` (its row in the ledger).
item_failed: NamedSignal = _signals.signal("item-failed")
