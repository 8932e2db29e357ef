"""The Prometheus endpoint, ``<prefix>/metrics``: the runs and the workers as monitoring sees them.

Each scrape reads the runs table with two queries, however many runs there
are (runs and failed items counted by task and status; the active runs), and
asks RQ for its workers' heartbeats when tasks run on RQ. Partitions are parts
of their run, never runs of their own. Arguments are never exposed, masked or
not: a run is its id, its task and its status.

Who may scrape: whoever may view the dashboard (its guard, ``authorize``
asked for ``"view"``), or a scraper sending ``MAINTENANCE_TASKS_METRICS_TOKEN``
as its bearer token. A scraper cannot log in, so the token must open the
endpoint even under a ``parent`` whose hook asks for a login: the token is
checked in a URL value preprocessor, which Flask runs before any
``before_request`` hook (the app's and the parent's included), and a scrape
with the right token is answered there.
"""

from __future__ import annotations

import typing as t
import weakref
from datetime import datetime, timezone

from flask import Flask, Response, abort, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import formatting, store
from ..executors import RQExecutor
from ..models import RunStatus
from ..state import get_state
from .guards import METRICS_ENDPOINT, bearer_token_accepted, blueprint, endpoint_name

if t.TYPE_CHECKING:
    from prometheus_client import Metric

    from ..models import Run
    from ..state import State

#: The labels of every metric about one active run.
RUN_LABELS = ["run_id", "task", "status"]

#: One registry per app, so that two apps in a process (or two tests) never share metrics.
_registries: weakref.WeakKeyDictionary[Flask, CollectorRegistry] = weakref.WeakKeyDictionary()


class RunsCollector(Collector):
    """What a scrape reports, read afresh for the current app at each scrape."""

    def collect(self) -> t.Iterable[Metric]:
        state = get_state()
        now = datetime.now(timezone.utc)
        with store.open_session(state.db) as session:
            counts = store.run_counts(session)
            active = store.active_runs(session)
        yield from _counted(list(state.registry.tasks()), counts)
        yield from _active(active, now)
        yield from _workers(state, now)


def _counted(tasks: list[str], counts: list[tuple[str, str, int, int]]) -> t.Iterator[Metric]:
    """Runs by task and status, failed items by task.

    Every task of the code has a series for every status from the start, at
    zero until a run gets there: a rule comparing with the value of a while ago
    then sees a task's first errored run too.
    """
    runs = GaugeMetricFamily(
        "maintenance_tasks_runs",
        "Runs of each task in each status (partitions are parts of their run).",
        labels=["task", "status"],
    )
    by_status = {(name, str(status)): 0 for name in tasks for status in RunStatus}
    failed = dict.fromkeys(tasks, 0)
    for task_name, status, count, failed_items in counts:
        by_status[task_name, status] = count
        failed[task_name] = failed.get(task_name, 0) + failed_items
    for (task_name, status), count in sorted(by_status.items()):
        runs.add_metric([task_name, status], count)
    yield runs
    failures = GaugeMetricFamily(
        "maintenance_tasks_failed_items",
        "Items recorded in the failure ledger, over every run of each task.",
        labels=["task"],
    )
    for task_name, count in sorted(failed.items()):
        failures.add_metric([task_name], count)
    yield failures


def _active(active: list[Run], now: datetime) -> t.Iterator[Metric]:
    processed = _run_gauge("items_processed", "Items the active run has processed.")
    expected = _run_gauge("items_expected", "Items the active run was counted to process.")
    rate = _run_gauge(
        "throughput_items_per_second", "Items per second of running time, on average."
    )
    eta = _run_gauge("eta_seconds", "Seconds the active run needs at its average rate.")
    since = _run_gauge(
        "seconds_since_last_tick",
        "Seconds since the active run's row was last written (a tick, or a change of status).",
    )
    for run in active:
        labels = [str(run.id), run.task_name, run.status]
        processed.add_metric(labels, run.tick_count)
        if run.tick_total is not None:
            expected.add_metric(labels, run.tick_total)
        throughput = formatting.throughput(run)
        if throughput is not None:
            rate.add_metric(labels, throughput)
        seconds_left = formatting.eta_seconds(run)
        if seconds_left is not None:
            eta.add_metric(labels, seconds_left)
        if run.status != RunStatus.SCHEDULED:  # waiting for its time, not for a tick
            since.add_metric(labels, max(0.0, (now - run.updated_at).total_seconds()))
    yield from (processed, expected, rate, eta, since)


def _run_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"maintenance_tasks_run_{name}", documentation, labels=RUN_LABELS)


def _workers(state: State, now: datetime) -> t.Iterator[Metric]:
    """RQ's workers on our queue and the tasks' own; nothing when tasks do not run on RQ or
    Redis cannot say."""
    executor = state.executor
    if not isinstance(executor, RQExecutor):
        return
    own = [task.queue for task in state.registry.tasks().values() if task.queue]
    heartbeats = executor.worker_heartbeats(queues=own)
    if heartbeats is None:
        return
    yield GaugeMetricFamily(
        "maintenance_tasks_workers",
        "RQ workers registered on the maintenance tasks queues (the app's and the tasks' own).",
        value=len(heartbeats),
    )
    since = GaugeMetricFamily(
        "maintenance_tasks_worker_seconds_since_heartbeat",
        "Seconds since each RQ worker's last heartbeat.",
        labels=["worker"],
    )
    for name, heartbeat in sorted(heartbeats.items()):
        if heartbeat is not None:
            since.add_metric([name], max(0.0, (now - heartbeat).total_seconds()))
    yield since


def registry_of(app: Flask) -> CollectorRegistry:
    """The app's own registry, holding its :class:`RunsCollector` (made at the first scrape)."""
    registry = _registries.get(app)
    if registry is None:
        registry = CollectorRegistry()
        registry.register(RunsCollector())
        _registries[app] = registry
    return registry


def _scrape() -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return Response(generate_latest(registry_of(app)), content_type=CONTENT_TYPE_LATEST)


@blueprint.get("/metrics")
def metrics() -> Response:
    """The metrics in Prometheus' text format."""
    return _scrape()


@blueprint.url_value_preprocessor
def _scrape_with_token(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
    if endpoint_name() != METRICS_ENDPOINT:
        return
    if bearer_token_accepted(get_state().settings.metrics_token):
        # Answered here, before the hooks: a response raised from a URL value
        # preprocessor ends the request, and the after_request hooks still run.
        abort(_scrape())
