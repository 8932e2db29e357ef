"""What each dashboard page shows, read with a fixed number of queries.

The index reads the active runs and the latest completed run of every task,
then the newest events of the runs it shows: three queries, whatever the
number of tasks or runs. A task page reads its active runs, one page of its
history (keyset on the id) and their events: three queries. The runs page
reads one page of runs across tasks: one query. When some run shown has
failed items, a page reads two more queries for all its cards: their newest
failures, and the runs that retried them (:func:`with_failures`). A run's
failures page reads the run, its counts by error class, one page of its
failures and the runs that retried it: four queries.
Everything else a page shows comes from the task registry and from
:mod:`flask_maintenance_tasks.formatting`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing as t
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import url_for

from .. import (
    audit,
    docstrings,
    dryrun,
    formatting,
    ledger,
    masking,
    pace,
    partitions,
    sources,
    store,
)
from ..exceptions import MaintenanceTasksError
from ..i18n import LazyString, lazy_pgettext, number, pgettext
from ..i18n import gettext as _
from ..models import Failure, FailureStatus, Run, RunStatus, runs_table, utcnow
from ..policy import ErrorPolicy
from ..published import facts as published_facts
from ..published import step_line
from ..sources import NoCollection
from ..sources.partitioned import has_own_ranges
from ..transitions import ACTIVE, PAUSE_REQUEST, STOPPED, is_stuck
from . import forms
from .guards import RETRY_FAILURES, is_allowed
from .sparkline import Sparkline, draw

if t.TYPE_CHECKING:
    from markupsafe import Markup
    from sqlalchemy.orm import Session

    from ..state import State
    from ..task import Task


@dataclasses.dataclass(frozen=True)
class Action:
    """A button of a run card; ``action`` is ``None`` for a disabled status indicator."""

    action: str | None
    label: str
    enabled: bool = True
    #: "danger" for cancel, "force" for the stuck-run variants.
    variant: str = "plain"


@dataclasses.dataclass
class RunCard:
    """A run as its card shows it."""

    run: Run
    task_exists: bool
    arguments: t.Any
    stuck: bool
    actions: list[Action]
    run_again_url: str | None = None
    open: bool = True
    #: Where to download the run's CSV file (runs of CSV tasks only).
    csv_url: str | None = None
    #: The run's metadata, masked names filtered.
    metadata: t.Any = None
    #: The run's newest events (see :func:`with_timelines`).
    timeline: audit.Timeline | None = None
    #: The run's error policy as people read it, when it is not the plain default.
    policy: str | None = None
    #: The run's newest failed items (see :func:`with_failures`).
    failures: list[Failure] = dataclasses.field(default_factory=list)
    #: Ids of the runs that retried this run's failed items, newest first.
    retried_in: list[int] = dataclasses.field(default_factory=list)
    #: Where the "Retry failed items" button posts, when the card shows it.
    retry_url: str | None = None
    #: Where the "Run for real" button of a succeeded dry run posts, when the card shows it.
    run_for_real_url: str | None = None
    #: The partitions of a partitioned run, in order (see :func:`with_partitions`).
    partitions: list[PartitionBar] = dataclasses.field(default_factory=list)
    #: What the task published (``self.status``), masked names filtered.
    published: t.Any = None

    @property
    def step(self) -> str | None:
        """ "Step 2 of 3: re-indexing", when the task published a step."""
        return step_line(self.published)

    @property
    def published_facts(self) -> list[tuple[str, t.Any]]:
        """The published keys and values the card lists, the step's keys left out."""
        return sorted(published_facts(self.published).items())

    @property
    def changes(self) -> t.Any:
        """What a dry run would change: its partitions' together, fresher than the run's own
        (which is brought up to date only as they settle), else the run's."""
        if not self.run.dry_run:
            return None
        if self.partitions:
            merged = partitions.merged_changes(bar.run for bar in self.partitions)
            if merged is not None:
                return merged
        return self.run.changes

    @property
    def changes_lines(self) -> list[str]:
        """What a dry run would change, one line per table and kind (none for a real run)."""
        if not self.run.dry_run:
            return []
        changes = self.changes
        if not changes and self.is_active:
            return []  # nothing counted yet: the card says so
        return dryrun.summary(changes)

    @property
    def changes_sample(self) -> list[dict[str, t.Any]]:
        """The first changes a dry run would make (table, key, column, before, after)."""
        changes = self.changes
        sample = changes.get("sample") if isinstance(changes, dict) else None
        return [s for s in sample if isinstance(s, dict)] if isinstance(sample, list) else []

    @property
    def failure_count(self) -> int:
        return self.run.failure_count or 0

    @functools.cached_property
    def pace_points(self) -> list[pace.Point]:
        """The run's recent throughput: its partitions' added up (see :func:`with_partitions`),
        else its own."""
        if self.partitions:
            return pace.combined(pace.points(bar.run.pace) for bar in self.partitions)
        return pace.points(self.run.pace)

    @functools.cached_property
    def sparkline(self) -> Sparkline | None:
        """The picture of :attr:`pace_points`, or ``None`` before the run's first tick."""
        return draw(self.pace_points)

    @property
    def progress(self) -> tuple[int | None, int]:
        return formatting.progress_bar(self.run)

    @property
    def percent(self) -> float | None:
        return formatting.percent(self.run)

    @property
    def progress_text(self) -> str:
        return formatting.progress_text(self.run.tick_count, self.run.tick_total)

    @property
    def status_text(self) -> str:
        return formatting.status_text(self.run)

    @property
    def time_running(self) -> str:
        return formatting.duration(self.run.time_running)

    @property
    def throughput(self) -> str | None:
        return formatting.throughput_text(self.run)

    @property
    def eta(self) -> str | None:
        seconds = formatting.eta_seconds(self.run)
        return None if seconds is None else formatting.duration(seconds)

    @property
    def is_active(self) -> bool:
        return self.run.status in ACTIVE

    @property
    def last_stop(self) -> str:
        """Why the run last stopped ("time slice"), in the reader's language."""
        return formatting.interruption_reason(self.run.interruption_reason)

    @property
    def partition_count(self) -> int:
        """The partitions the run is cut into (or will be, when it starts); 1 when it is not."""
        return int(self.run.partitions or 1) if self.run.parent_id is None else 1


@dataclasses.dataclass(frozen=True)
class PartitionBar:
    """One partition of a run, as the small bar under its run's progress shows it."""

    run: Run

    @property
    def index(self) -> int:
        return int(self.run.partition or 0)

    @property
    def number(self) -> int:
        """Its place as people count: 1 for the first."""
        return self.index + 1

    @property
    def status(self) -> str:
        return str(self.run.status)

    @property
    def progress(self) -> tuple[int | None, int]:
        return formatting.progress_bar(self.run)

    @property
    def progress_text(self) -> str:
        """Short, for a small bar: "120 / 400", or "120" while the total is unknown."""
        count, total = self.run.tick_count or 0, self.run.tick_total
        return number(count) if total is None else f"{number(count)} / {number(total)}"

    @property
    def failure_count(self) -> int:
        return self.run.failure_count or 0


def partition_problem(task: type[Task] | None) -> str | None:
    """Why the run form offers no "Partitions" field for ``task``, or ``None`` when it does.

    Read from the class alone: a custom enumerator without ``partition_ranges``,
    or no collection, can never be cut. A ``collection()`` method is only known
    once called with a run's arguments; the runner checks it when the form is
    sent, and its refusal shows under the field.
    """
    if task is None or has_own_ranges(task):
        return None
    if sources.has_enumerator(task):
        return _("Its runs walk its own enumerator(cursor), which cannot be cut into partitions.")
    collection = getattr(task, "collection", None)
    if collection is None or isinstance(collection, NoCollection):
        return _("It has no collection to cut into partitions.")
    return None


def actions_for(run: Run, *, task_exists: bool, stuck: bool) -> list[Action]:
    """The buttons a run's status allows (see the transitions table and the stuck rule)."""
    status = run.status
    # Buttons: pgettext("button", ...), a verb, not the status of the same spelling.
    force_cancel = pgettext("button", "Force cancel")
    force_pause = pgettext("button", "Force pause")
    cancel = Action(
        "cancel", force_cancel if stuck else pgettext("button", "Cancel"), variant="danger"
    )
    if status in PAUSE_REQUEST.sources:
        pause_label = force_pause if stuck else pgettext("button", "Pause")
        return [Action("pause", pause_label, enabled=task_exists), cancel]
    if status == RunStatus.SCHEDULED:
        # Nothing to pause before it starts: it is called off, or left to start.
        return [Action("cancel", pgettext("button", "Cancel"), variant="danger")]
    if status == RunStatus.PAUSING:
        actions = [Action(None, _("Pausing…"), enabled=False)]
        if stuck:
            actions.append(Action("pause", force_pause, enabled=task_exists, variant="force"))
        return [*actions, cancel]
    if status == RunStatus.CANCELLING:
        return [cancel] if stuck else [Action(None, _("Cancelling…"), enabled=False)]
    resume = pgettext("button", "Resume")
    if status == RunStatus.PAUSED:
        return [Action("resume", resume, enabled=task_exists), cancel]
    if status == RunStatus.ERRORED:
        return [Action("resume", resume, enabled=task_exists)]
    return []


class Cards:
    """Builds run cards for one request: task lookups and permissions asked once each."""

    def __init__(self, state: State, now: datetime | None = None) -> None:
        self.state = state
        self.now = now or utcnow()
        self._tasks = state.registry.tasks()
        self._fields: dict[str, list[forms.FormField]] = {}
        self._allowed: dict[tuple[str, str | None, int | None], bool] = {}
        self._csv: dict[str, bool] = {}

    def task(self, name: str) -> type[Task] | None:
        return self._tasks.get(name)

    def is_csv(self, task: type[Task] | None) -> bool:
        """:func:`is_csv_task`, asked once per task: a task's ``collection()`` may query."""
        if task is None:
            return False
        if task.name not in self._csv:
            self._csv[task.name] = is_csv_task(task)
        return self._csv[task.name]

    def fields(self, task: type[Task]) -> list[forms.FormField]:
        if task.name not in self._fields:
            self._fields[task.name] = forms.fields_for(task, self.state.settings.masked_parameters)
        return self._fields[task.name]

    def allowed(self, action: str, task_name: str | None, run: Run | None = None) -> bool:
        key = (action, task_name, run.id if run is not None else None)
        if key not in self._allowed:
            self._allowed[key] = is_allowed(action, task_name, run)
        return self._allowed[key]

    def card(self, run: Run, *, with_actions: bool = True, open: bool = True) -> RunCard:
        task = self.task(run.task_name)
        stuck = is_stuck(run.status, run.updated_at, self.now, self.state.settings.stuck_after)
        actions = []
        if with_actions:
            actions = [
                a
                for a in actions_for(run, task_exists=task is not None, stuck=stuck)
                if a.action is None or self.allowed(a.action, run.task_name, run)
            ]
        again = None
        if with_actions and task is not None and self.allowed("run", task.name):
            masked = self.state.settings.masked_parameters
            withheld = masking.secret_arguments(run.arguments, task, masked)
            query = forms.run_again_query(self.fields(task), run.arguments, withheld)
            if run.partitions and run.partitions != task.partitions and not run.retry_of_id:
                query[forms.PARTITIONS_FIELD] = str(run.partitions)
            again = url_for(".task", name=task.name, **query) + "#new-run"
        retry = None
        if with_actions and self.can_retry(run, task):
            retry = url_for(".retry_failures", run_id=run.id)
        for_real = None
        if with_actions and self.can_run_for_real(run, task):
            for_real = url_for(".run_for_real", run_id=run.id)
        return RunCard(
            run=run,
            task_exists=task is not None,
            arguments=masking.mask(run.arguments, task, self.state.settings.masked_parameters),
            metadata=masking.mask(run.metadata_, None, self.state.settings.masked_parameters),
            published=masking.masked_published(self.state.app, run),
            stuck=stuck,
            actions=actions,
            run_again_url=again,
            open=open,
            csv_url=url_for(".run_csv", run_id=run.id) if self.is_csv(task) else None,
            policy=policy_text(run),
            retry_url=retry,
            run_for_real_url=for_real,
        )

    def can_run_for_real(self, run: Run, task: type[Task] | None) -> bool:
        """Whether to offer "Run for real": a succeeded dry run of a task that exists, which
        ``authorize`` lets this request run (the ``"run"`` action, as the start form asks)."""
        return (
            task is not None
            and bool(run.dry_run)
            and run.status == RunStatus.SUCCEEDED
            and self.allowed("run", run.task_name, run)
        )

    def can_retry(self, run: Run, task: type[Task] | None) -> bool:
        """Whether to offer "Retry failed items": a stopped run with failures, of a task that
        exists, which ``authorize`` lets this request retry. The runner refuses the rest (all
        its failures resolved already, say)."""
        return (
            task is not None
            and bool(run.failure_count)
            and run.status in STOPPED
            and self.allowed(RETRY_FAILURES, run.task_name, run)
        )


def policy_text(run: Run) -> str | None:
    """The run's error policy as people read it, or ``None`` for the plain default (stop)."""
    if (run.error_policy or "stop") == "stop" and run.max_failures is None:
        if run.max_failure_rate is None:
            return None
    return formatting.policy_text(run)


#: Events a run card shows; the run's JSON and ``flask mtasks status`` show more.
CARD_EVENTS = 10


def with_timelines(session: Session, cards: t.Iterable[RunCard]) -> None:
    """Give each card its run's newest events: one query for all the cards."""
    cards = list(cards)
    found = audit.timelines(session, [card.run.id for card in cards], CARD_EVENTS)
    for card in cards:
        card.timeline = found.get(card.run.id, audit.Timeline([]))


def with_partitions(session: Session, cards: t.Iterable[RunCard]) -> None:
    """Give each card of a partitioned run its partitions: one query for all the cards.

    None when no card's run has been cut yet.
    """
    split = {card.run.id: card for card in cards if partitions.is_split(card.run)}
    if not split:
        return
    found = store.partitions_of(session, list(split))
    for run_id, card in split.items():
        card.partitions = [PartitionBar(child) for child in found.get(run_id, [])]


def with_failures(session: Session, cards: t.Iterable[RunCard]) -> None:
    """Give each card with failed items its newest failures and the runs that retried it.

    Two queries for all the cards, and none when no card's run has failed
    items: only such a run can have been retried.
    """
    failing = {card.run.id: card for card in cards if card.failure_count}
    if not failing:
        return
    latest = ledger.latest(session, list(failing))
    columns = runs_table.c
    retries = session.execute(
        sa.select(columns.id, columns.retry_of_id)
        .where(columns.retry_of_id.in_(list(failing)))
        .order_by(columns.id.desc())
    ).all()
    for run_id, card in failing.items():
        card.failures = latest.get(run_id, [])
    for retry_id, retried_id in retries:
        failing[retried_id].retried_in.append(retry_id)


@dataclasses.dataclass
class TaskEntry:
    """A task on the index, with the run its card shows."""

    name: str
    card: RunCard | None = None
    stale: str | None = None
    #: The first paragraph of the task's docstring, as plain text.
    summary: str = ""


@dataclasses.dataclass
class IndexPage:
    active: list[RunCard]
    new: list[TaskEntry]
    completed: list[TaskEntry]
    #: Tasks gone from the code whose runs remain, by name.
    deleted: list[TaskEntry]
    has_tasks: bool

    @property
    def polling(self) -> bool:
        return bool(self.active)


def matches_query(name: str, query: str) -> bool:
    """Whether a task named ``name`` answers the search ``query``: a substring of the name,
    case aside; an empty query matches every task."""
    return not query or query.casefold() in name.casefold()


def index_page(state: State, query: str = "") -> IndexPage:
    cards = Cards(state)
    with store.open_session(state.db) as session:
        active = store.active_runs(session)
        latest = store.latest_completed_run_per_task(session)

    def visible(name: str) -> bool:
        return matches_query(name, query) and cards.allowed("view", name)

    tasks = state.registry.tasks()
    busy = {run.task_name for run in active}
    seen = busy | {run.task_name for run in latest}
    page = IndexPage(
        active=[cards.card(r, with_actions=False) for r in active if visible(r.task_name)],
        new=[
            TaskEntry(name, summary=docstrings.summary(tasks[name].__doc__))
            for name in tasks
            if name not in seen and visible(name)
        ],
        completed=[],
        deleted=[],
        has_tasks=bool(tasks),
    )
    for run in sorted(latest, key=lambda r: (r.created_at, r.id), reverse=True):
        if run.task_name in busy or not visible(run.task_name):
            continue
        entry = TaskEntry(run.task_name, cards.card(run, with_actions=False, open=False))
        if run.task_name not in tasks:
            page.deleted.append(entry)
            continue
        entry.stale = _stale(state, run, cards.now)
        entry.summary = docstrings.summary(tasks[run.task_name].__doc__)
        page.completed.append(entry)
    shown = [*page.active, *(e.card for e in [*page.completed, *page.deleted] if e.card)]
    with store.open_session(state.db) as session:
        with_timelines(session, shown)
        with_failures(session, shown)
        with_partitions(session, shown)
    return page


def _stale(state: State, run: Run, now: datetime) -> str | None:
    limit = state.settings.stale_after
    if limit is None or run.status != RunStatus.SUCCEEDED or run.ended_at is None:
        return None
    if run.ended_at > now - timedelta(seconds=limit):
        return None
    return _(
        "This task last succeeded %(time)s. Consider deleting it: it may have done its job.",
        time=formatting.ago(run.ended_at, now),
    )


def is_csv_task(task: type[Task] | None) -> bool:
    """Whether the task declares ``collection = csv_collection(...)`` (every run has a file)."""
    return task is not None and sources.needs_file(task)


@dataclasses.dataclass
class TaskPage:
    name: str
    task: type[Task] | None
    fields: list[forms.FormField]
    active: list[RunCard]
    history: list[RunCard]
    cursor: int | None
    next_cursor: int | None
    can_run: bool
    source: tuple[str, Markup] | None = None
    #: The task reads a CSV file: its form has a file field.
    csv: bool = False
    #: The most partitions a run may ask for (``MAINTENANCE_TASKS_MAX_PARTITIONS``).
    max_partitions: int = 1

    @property
    def partition_problem(self) -> str | None:
        """Why the form has no "Partitions" field (see :func:`partition_problem`)."""
        return partition_problem(self.task)

    @property
    def deleted(self) -> bool:
        return self.task is None

    @property
    def default_policy(self) -> str:
        """The task's own error policy, which a run keeps unless its form overrides it."""
        return ErrorPolicy.of_task(self.task).describe() if self.task is not None else "stop"

    @property
    def polling(self) -> bool:
        return bool(self.active)


class NoSuchTask(MaintenanceTasksError):
    """Neither a task of that name nor any run of it exists."""


def task_page(state: State, name: str, cursor: int | None = None) -> TaskPage:
    """The task's page; :class:`NoSuchTask` when there is neither the task nor a run of it."""
    if "\x00" in name:
        # No run has such a name (PostgreSQL keeps no NUL in text), and asking
        # PostgreSQL for one is an error.
        raise NoSuchTask(f"No task named {name!r}, and no run of one.")
    cards = Cards(state)
    task = cards.task(name)
    per_page = state.settings.runs_per_page
    with store.open_session(state.db) as session:
        active = store.active_runs(session, name)
        # One run more than a page tells whether another page follows.
        history = store.history_page(session, name, before_id=cursor, limit=per_page + 1)
        if task is None and not active and not history and cursor is None:
            raise NoSuchTask(f"No task named {name!r}, and no run of one.")
        next_cursor = history[per_page - 1].id if len(history) > per_page else None
        page = TaskPage(
            name=name,
            task=task,
            fields=cards.fields(task) if task is not None else [],
            active=[cards.card(r) for r in active],
            # The newest ended run is open: its outcome (an error, say) is what people look for.
            history=[cards.card(r, open=n == 0) for n, r in enumerate(history[:per_page])],
            cursor=cursor,
            next_cursor=next_cursor,
            can_run=task is not None and cards.allowed("run", name),
            csv=cards.is_csv(task),
            max_partitions=state.settings.max_partitions,
        )
        with_timelines(session, [*page.active, *page.history])
        with_failures(session, [*page.active, *page.history])
        with_partitions(session, [*page.active, *page.history])
    return page


@dataclasses.dataclass(frozen=True)
class RunFilters:
    """What the runs page is narrowed to; ``None`` leaves a filter out."""

    task: str | None = None
    status: str | None = None
    who: str | None = None

    def query(self) -> dict[str, str]:
        """The filters as query-string arguments (for the pager's links)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass
class RunsPage:
    """A page of every task's runs, newest first."""

    filters: RunFilters
    runs: list[Run]
    cursor: int | None
    next_cursor: int | None
    #: Task names to offer in the task filter: the registry's.
    task_names: list[str]
    statuses: list[str]


def runs_page(state: State, filters: RunFilters, cursor: int | None = None) -> RunsPage:
    """A page of runs across tasks with ``filters``: one query, whatever the number of runs.

    Runs of a task that ``authorize`` does not let this request view are left
    out of the page (so a page may hold fewer runs than the page size).
    """
    cards = Cards(state)
    per_page = state.settings.runs_per_page
    with store.open_session(state.db) as session:
        found = store.runs_page(
            session,
            task_name=filters.task,
            status=filters.status,
            started_by=filters.who,
            before_id=cursor,
            limit=per_page + 1,
        )
    next_cursor = found[per_page - 1].id if len(found) > per_page else None
    return RunsPage(
        filters=filters,
        runs=[run for run in found[:per_page] if cards.allowed("view", run.task_name, run)],
        cursor=cursor,
        next_cursor=next_cursor,
        task_names=sorted(state.registry.tasks()),
        statuses=[status.value for status in RunStatus],
    )


@dataclasses.dataclass(frozen=True)
class FailureFilters:
    """What a failures page is narrowed to, and where it starts; ``None`` leaves one out."""

    error_class: str | None = None
    status: str | None = None
    #: Failures after this id (keyset pages, oldest first).
    after: int | None = None

    def query(self, **changes: t.Any) -> dict[str, t.Any]:
        """The filters as query-string arguments, with ``changes`` (``None`` drops one)."""
        query = {"class": self.error_class, "status": self.status, "after": self.after}
        query.update(changes)
        return {k: v for k, v in query.items() if v is not None}


@dataclasses.dataclass
class FailuresPage:
    """A page of a run's failed items, with the counts of each error class."""

    card: RunCard
    filters: FailureFilters
    failures: list[Failure]
    #: ``(error class, failures, unresolved)``, most frequent first.
    classes: list[tuple[str, int, int]]
    next_after: int | None
    statuses: list[str]

    @property
    def run(self) -> Run:
        return self.card.run

    @staticmethod
    def status_name(status: str) -> str:
        """A failed item's status in the reader's language ("failed again")."""
        return failure_status_name(status)

    @property
    def total(self) -> int:
        return sum(count for _, count, _ in self.classes)

    @property
    def unresolved(self) -> int:
        return sum(unresolved for _, _, unresolved in self.classes)


#: Where a failed item stands (:class:`FailureStatus`), as people read it.
FAILURE_STATUS_NAMES: t.Final[dict[str, LazyString]] = {
    "unresolved": lazy_pgettext("failure status", "unresolved"),
    "resolved": lazy_pgettext("failure status", "resolved"),
    "failed_again": lazy_pgettext("failure status", "failed again"),
    "gone": lazy_pgettext("failure status", "gone"),
}


def failure_status_name(status: str) -> str:
    """A failed item's status in the reader's language; another word as it is, underscores
    as spaces."""
    name = FAILURE_STATUS_NAMES.get(str(status))
    return str(name) if name is not None else str(status).replace("_", " ")


def failures_page(state: State, run: Run, filters: FailureFilters) -> FailuresPage:
    """One page of the failed items of ``run`` (already read, and viewable): three queries."""
    cards = Cards(state)
    card = cards.card(run, with_actions=False)
    size = ledger.PAGE_SIZE
    with store.open_session(state.db) as session:
        classes = ledger.count_by_class(session, run.id)
        found = ledger.page(
            session,
            run.id,
            after=filters.after,
            error_class=filters.error_class,
            status=filters.status,
            limit=size + 1,
        )
        card.retried_in = [retry.id for retry in ledger.retries_of(session, run.id)]
    if cards.can_retry(run, cards.task(run.task_name)):
        card.retry_url = url_for(".retry_failures", run_id=run.id)
    return FailuresPage(
        card=card,
        filters=filters,
        failures=found[:size],
        classes=classes,
        next_after=found[size - 1].id if len(found) > size else None,
        statuses=[status.value for status in FailureStatus],
    )
