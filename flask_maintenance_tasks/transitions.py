"""The run's state machine: every change of a run's status, defined once.

A :class:`Transition` says which statuses a run may leave from, which status it
reaches, what else is written on the row in the same UPDATE, which task
callback follows and which signal is sent. The job, the runner and recovery
apply these definitions (see :mod:`~flask_maintenance_tasks.lifecycle`); no
other module lists statuses. The groups below (``ACTIVE``, ``STOP_REQUESTED``,
...) are derived from the same definitions or named here once, each with the
question it answers.

Values in ``writes`` are constants, :data:`NOW` (the time of the change), or a
function of the run as it was read, called at the change.
"""

from __future__ import annotations

import dataclasses
import enum
import typing as t
from datetime import datetime, timedelta

from blinker import NamedSignal

from . import signals
from .exceptions import InvalidTransition
from .models import RunStatus

if t.TYPE_CHECKING:
    from .models import Run
    from .task import Task

SCHEDULED = RunStatus.SCHEDULED
ENQUEUED = RunStatus.ENQUEUED
RUNNING = RunStatus.RUNNING
PAUSING = RunStatus.PAUSING
PAUSED = RunStatus.PAUSED
INTERRUPTED = RunStatus.INTERRUPTED
CANCELLING = RunStatus.CANCELLING
CANCELLED = RunStatus.CANCELLED
SUCCEEDED = RunStatus.SUCCEEDED
ERRORED = RunStatus.ERRORED


class _Now:
    def __repr__(self) -> str:
        return "NOW"


#: Stands for the time of the change in :attr:`Transition.writes`.
NOW: t.Final = _Now()


class OnCallbackError(enum.Enum):
    """What an exception raised by a transition's callback does."""

    #: It errors the run (the callback is part of the run's work).
    FAIL = "fail"
    #: It is reported to the error handler and logged; the status stays.
    REPORT = "report"
    #: It is logged and otherwise ignored (``after_error``).
    LOG = "log"


Callback = t.Callable[["Task", "BaseException | None"], None]


# The task callbacks, called by the lifecycle once a change is written.


def _after_start(task: Task, error: BaseException | None) -> None:
    task.after_start()


def _after_pause(task: Task, error: BaseException | None) -> None:
    task.after_pause()


def _after_cancel(task: Task, error: BaseException | None) -> None:
    task.after_cancel()


def _after_interrupt(task: Task, error: BaseException | None) -> None:
    task.after_interrupt()


def _after_complete(task: Task, error: BaseException | None) -> None:
    task.after_complete()


def _after_error(task: Task, error: BaseException | None) -> None:
    task.after_error(t.cast(BaseException, error))


@dataclasses.dataclass(frozen=True)
class Transition:
    """One kind of status change of a run."""

    #: The verb, as operators and error messages say it ("pause", "cancel", ...).
    name: str
    #: Statuses the run may be in for the change to apply.
    sources: frozenset[RunStatus]
    #: The status it reaches; ``None`` keeps the status (a progress write, a recovery).
    target: RunStatus | None
    #: Columns written with the status, besides ``updated_at`` and ``lock_version``.
    writes: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)
    #: Columns whose values the caller may give (job ids, reasons, errors).
    given: frozenset[str] = frozenset()
    #: The task callback that follows the change.
    callback: Callback | None = None
    on_callback_error: OnCallbackError = OnCallbackError.REPORT
    #: The callback runs before the change is written (``after_complete``).
    callback_first: bool = False
    #: The signal sent once the change is committed.
    signal: NamedSignal | None = None
    #: The action its row in the audit trail records (``None``: no row, as for progress).
    event: str | None = None

    def leaves_from(self, status: RunStatus | str) -> bool:
        return RunStatus(status) in self.sources

    def check(self, status: RunStatus | str, run_id: int | None = None) -> None:
        """Raise :class:`InvalidTransition` unless the change applies to ``status``."""
        if not self.leaves_from(status):
            raise InvalidTransition(self.name, RunStatus(status).value, run_id)

    def values(self, run: Run, now: datetime, given: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
        """Everything the change writes on ``run`` (as read), with the caller's ``given`` values."""
        unknown = set(given) - self.given
        if unknown:
            raise TypeError(
                f"Transition {self.name!r} takes {sorted(self.given)}, not {sorted(unknown)}"
            )
        values: dict[str, t.Any] = {}
        if self.target is not None:
            values["status"] = self.target
        for name, value in self.writes.items():
            if value is NOW:
                value = now
            elif callable(value):
                value = value(run, now)
            values[name] = value
        values.update(given)
        return values


# -- the transitions -------------------------------------------------------

#: The job of a scheduled run finds its time come: the run waits its turn as any
#: run just started (its job goes on to take it at once, see ``job``).
DUE = Transition(
    "start",
    frozenset({SCHEDULED}),
    ENQUEUED,
    signal=signals.run_enqueued,
    event="due",
)
#: A job takes an enqueued run for the first time.
START = Transition(
    "start",
    frozenset({ENQUEUED}),
    RUNNING,
    writes={"started_at": NOW, "ended_at": None, "interruption_reason": None},
    given=frozenset({"job_id", "tick_total"}),
    callback=_after_start,
    on_callback_error=OnCallbackError.FAIL,
    signal=signals.run_started,
    event="began",
)
#: A job takes on a run that an earlier slice handed on (or, for a partitioned
#: run, resumed: the first of its partitions to take a job carries it on).
CARRY_ON = Transition(
    "carry on",
    frozenset({ENQUEUED, INTERRUPTED, RUNNING}),
    RUNNING,
    writes={"interruption_reason": None},
    given=frozenset({"job_id", "tick_total"}),
    event="carried_on",
)
#: The job's progress write (one UPDATE per tick, fenced on the job id; see ``store``).
PROGRESS = Transition("progress", frozenset({RUNNING, PAUSING, CANCELLING}), None)
#: An operator asks a run to pause at its next item.
PAUSE_REQUEST = Transition(
    "pause", frozenset({ENQUEUED, RUNNING, INTERRUPTED}), PAUSING, event="pause_requested"
)
#: The job noticed the pause request and stopped.
PAUSE = Transition(
    "pause",
    frozenset({PAUSING}),
    PAUSED,
    writes={"interruption_reason": "pause"},
    callback=_after_pause,
    signal=signals.run_paused,
    event="paused",
)
#: An operator asks a run to cancel at its next item.
CANCEL_REQUEST = Transition(
    "cancel",
    frozenset({ENQUEUED, RUNNING, PAUSING, INTERRUPTED}),
    CANCELLING,
    event="cancel_requested",
)
#: The job noticed the cancel request and stopped.
CANCEL = Transition(
    "cancel",
    frozenset({CANCELLING}),
    CANCELLED,
    writes={"ended_at": NOW, "exclusive_key": None, "interruption_reason": "cancel"},
    callback=_after_cancel,
    signal=signals.run_cancelled,
    event="cancelled",
)
#: A slice hands the run on (time slice, worker shutdown, throttle, lost connection).
INTERRUPT = Transition(
    "interrupt",
    frozenset({RUNNING}),
    INTERRUPTED,
    given=frozenset({"job_id", "interruption_reason"}),
    callback=_after_interrupt,
    on_callback_error=OnCallbackError.FAIL,
    signal=signals.run_interrupted,
    event="interrupted",
)
#: An operator resumes a paused or errored run: it is enqueued again, its error cleared.
RESUME = Transition(
    "resume",
    frozenset({PAUSED, ERRORED}),
    ENQUEUED,
    writes={
        "interruption_reason": None,
        "ended_at": None,
        "error_class": None,
        "error_message": None,
        "backtrace": None,
        "errored_element": None,
    },
    given=frozenset({"job_id", "exclusive_key"}),
    signal=signals.run_enqueued,
    event="resumed",
)
#: The collection is exhausted (a pause or cancel asked meanwhile comes too late).
SUCCEED = Transition(
    "succeed",
    frozenset({RUNNING, PAUSING, CANCELLING}),
    SUCCEEDED,
    writes={"ended_at": NOW, "exclusive_key": None, "interruption_reason": None},
    callback=_after_complete,
    on_callback_error=OnCallbackError.FAIL,
    callback_first=True,
    signal=signals.run_succeeded,
    event="succeeded",
)
#: The run failed (in its job, or when it could not be enqueued).
ERROR = Transition(
    "error",
    frozenset({SCHEDULED, ENQUEUED, RUNNING, PAUSING, CANCELLING, INTERRUPTED}),
    ERRORED,
    writes={
        "ended_at": NOW,
        "started_at": lambda run, now: run.started_at or now,
        "exclusive_key": None,
    },
    given=frozenset({"error_class", "error_message", "backtrace", "errored_element"}),
    callback=_after_error,
    on_callback_error=OnCallbackError.LOG,
    signal=signals.run_errored,
    event="errored",
)
#: An operator pauses a stuck run at once; its job, if alive, is fenced off.
FORCE_PAUSE = Transition(
    "pause",
    frozenset({PAUSING, RUNNING}),
    PAUSED,
    writes={"job_id": None, "interruption_reason": "pause"},
    callback=_after_pause,
    signal=signals.run_paused,
    event="force_paused",
)
#: An operator cancels a paused, scheduled or stuck run at once; its job, if
#: alive (a scheduled run's job waits in RQ's scheduler), is fenced off.
FORCE_CANCEL = Transition(
    "cancel",
    frozenset({SCHEDULED, PAUSED, PAUSING, CANCELLING, RUNNING}),
    CANCELLED,
    writes={
        "ended_at": NOW,
        "job_id": None,
        "exclusive_key": None,
        "interruption_reason": "cancel",
    },
    callback=_after_cancel,
    signal=signals.run_cancelled,
    event="force_cancelled",
)
#: Recovery hands a waiting run whose job was lost to a new job.
RECOVER = Transition(
    "recover",
    frozenset({ENQUEUED, INTERRUPTED}),
    None,
    writes={"interruption_reason": "recovery"},
    given=frozenset({"job_id"}),
    event="recovered",
)
#: Recovery gives a scheduled run whose job was lost (Redis flushed) a new job,
#: due at the run's time; the run stays scheduled until that job takes it.
RECOVER_SCHEDULED = Transition(
    "recover",
    frozenset({SCHEDULED}),
    None,
    given=frozenset({"job_id"}),
    event="recovered",
)
#: Recovery hands a running run whose job died to a new job.
RECOVER_RUNNING = Transition(
    "recover",
    frozenset({RUNNING}),
    INTERRUPTED,
    writes={"interruption_reason": "recovery"},
    given=frozenset({"job_id"}),
    signal=signals.run_interrupted,
    event="recovered",
)

#: A job that could not take its waiting run (the database was gone, or SQLite's
#: lock busy) hands it to a new job, a moment later.
REQUEUE = Transition(
    "requeue",
    frozenset({SCHEDULED, ENQUEUED, INTERRUPTED}),
    None,
    given=frozenset({"job_id", "interruption_reason"}),
)

#: Every transition but the creation of a run (``enqueued``, or ``scheduled`` when
#: started with a time; see ``runner``).
TRANSITIONS: t.Final[tuple[Transition, ...]] = (
    DUE,
    START,
    CARRY_ON,
    PROGRESS,
    PAUSE_REQUEST,
    PAUSE,
    CANCEL_REQUEST,
    CANCEL,
    INTERRUPT,
    RESUME,
    SUCCEED,
    ERROR,
    FORCE_PAUSE,
    FORCE_CANCEL,
    RECOVER,
    RECOVER_SCHEDULED,
    RECOVER_RUNNING,
    REQUEUE,
)

#: Allowed changes of status, derived from :data:`TRANSITIONS`.
ALLOWED: t.Final[dict[RunStatus, frozenset[RunStatus]]] = {
    status: frozenset(
        tr.target
        for tr in TRANSITIONS
        if status in tr.sources and tr.target is not None and tr.target != status
    )
    for status in RunStatus
}

#: The signal sent when a run reaches each status (statuses without one are absent).
SIGNAL_OF: t.Final[dict[RunStatus, NamedSignal]] = {
    tr.target: tr.signal for tr in TRANSITIONS if tr.target is not None and tr.signal is not None
}

# -- status groups ----------------------------------------------------------

#: The run is over: nothing leaves these statuses but a resume of an errored run.
COMPLETED: t.Final = frozenset({SUCCEEDED, ERRORED, CANCELLED})
#: A job may be working on the run, or the run waits to be resumed.
ACTIVE: t.Final = frozenset(RunStatus) - COMPLETED
#: An operator asked the run to stop; its job stops before its next item.
STOP_REQUESTED: t.Final = frozenset({PAUSING, CANCELLING})
#: A job may take the run and iterate it.
STARTABLE: t.Final = START.sources | CARRY_ON.sources
#: No job should be working on the run.
STOPPED: t.Final = frozenset({PAUSED}) | COMPLETED
#: Statuses the stuck rule applies to: a job should be holding the run.
STUCKABLE: t.Final = frozenset({PAUSING, CANCELLING, RUNNING})
#: Some job should be holding the run; recovery looks after these.
HELD: t.Final = frozenset({ENQUEUED, RUNNING, INTERRUPTED, PAUSING, CANCELLING})
#: The run waits for its time; its job sits in RQ's scheduler (recovery checks it is there).
WAITING_FOR_TIME: t.Final = frozenset({SCHEDULED})
#: Interruption reasons that mean "an operator stopped it", not "hand it on".
OPERATOR_STOPS: t.Final = frozenset({"pause", "cancel"})
#: Interruption reasons after which the next slice waits (the throttle's backoff, a retry).
DELAYED_REASONS: t.Final = frozenset({"throttle", "connection_lost", "database_locked"})
#: Reasons a job may hand on a run it could not even take (see ``REQUEUE``).
REQUEUED_REASONS: t.Final = frozenset({"connection_lost", "database_locked"})


def settling(status: RunStatus | str) -> Transition | None:
    """How a job ends a stop that an operator asked for: ``PAUSE`` or ``CANCEL``, else ``None``."""
    status = RunStatus(status)
    if status == PAUSING:
        return PAUSE
    if status == CANCELLING:
        return CANCEL
    return None


def can_transition(current: RunStatus | str, new: RunStatus | str) -> bool:
    current, new = RunStatus(current), RunStatus(new)
    return current == new or new in ALLOWED[current]


def is_stuck(
    status: RunStatus | str, updated_at: datetime | None, now: datetime, stuck_after: float
) -> bool:
    """A pausing, cancelling or running run not updated for ``stuck_after`` seconds is stuck.

    A live job writes progress at least once per ticker delay and reloads the
    status regularly, so a run it holds is never this old.
    """
    if RunStatus(status) not in STUCKABLE or updated_at is None:
        return False
    return updated_at <= now - timedelta(seconds=stuck_after)
