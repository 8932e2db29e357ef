"""The Prometheus endpoint, ``<prefix>/metrics``: what it reports, who may scrape it, its cost."""

from __future__ import annotations

import hmac
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
from flask import Blueprint, Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue, Worker
from werkzeug.test import TestResponse

from flask_maintenance_tasks.exceptions import ConfigurationError
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, count_queries, insert_runs, text
from tests.support.records import fresh_run, seed_items
from tests.support.waiting import wait_until

TOKEN = "s3cret-metrics-token-0123456789"
#: A client that is not on this machine: the dashboard is closed to it by default.
AWAY = {"REMOTE_ADDR": "203.0.113.9"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(response: TestResponse) -> Samples:
    """Every sample of a scrape, by name and sorted labels, as Prometheus' parser reads it."""
    assert response.status_code == 200, text(response)
    found: Samples = {}
    for family in text_string_to_metric_families(text(response)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


def scrape(app: Flask, **kwargs: t.Any) -> TestResponse:
    return Dashboard(app).get("/metrics", **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def closed_app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """The test app as in production (TESTING off, no parent, no authorize), with a token."""
    with make_app(metrics_token=TOKEN) as app:
        app.config["TESTING"] = False
        yield app


# -- what a scrape reports ----------------------------------------------------


@pytest.mark.both_databases
def test_a_scrape_counts_runs_by_task_and_status_and_reports_each_active_run(app: Flask) -> None:
    engine = app.extensions["sqlalchemy"].engine
    insert_runs(engine, 6, ["ListTask", "NoCollectionTask"], ["succeeded", "errored"])
    add_run(engine, "ListTask", "errored", failure_count=3)
    ten_minutes_ago = datetime.now(timezone.utc) - timedelta(minutes=10)
    running = add_run(
        engine,
        "ListTask",
        "running",
        tick_count=40,
        tick_total=100,
        time_running=20.0,
        updated_at=ten_minutes_ago,
    )
    add_run(engine, "ListTask", "running", parent_id=running, partition=0, tick_count=40)

    response = scrape(app)
    found = samples(response)

    assert response.content_type.startswith("text/plain")
    run = (("run_id", str(running)), ("status", "running"), ("task", "ListTask"))

    def runs(task: str, status: str) -> float:
        return found[("maintenance_tasks_runs", (("status", status), ("task", task)))]

    # insert_runs alternates tasks and statuses: ListTask's runs all succeeded.
    assert runs("ListTask", "succeeded") == 3 and runs("NoCollectionTask", "errored") == 3
    assert runs("ListTask", "errored") == 1
    # Every task of the code has every status, at zero until a run gets there; a task
    # gone from the code (NoCollectionTask is none of the test app's) only what it has.
    assert runs("ListTask", "paused") == runs("CountItemsTask", "errored") == 0
    gone = ("maintenance_tasks_runs", (("status", "succeeded"), ("task", "NoCollectionTask")))
    assert gone not in found
    assert found[("maintenance_tasks_failed_items", (("task", "CountItemsTask"),))] == 0
    assert runs("ListTask", "running") == 1  # its partition is no run of its own
    assert found[("maintenance_tasks_failed_items", (("task", "ListTask"),))] == 3
    assert found[("maintenance_tasks_failed_items", (("task", "NoCollectionTask"),))] == 0
    assert found[("maintenance_tasks_run_items_processed", run)] == 40
    assert found[("maintenance_tasks_run_items_expected", run)] == 100
    assert found[("maintenance_tasks_run_throughput_items_per_second", run)] == 2.0
    assert found[("maintenance_tasks_run_eta_seconds", run)] == 30.0
    assert 600 <= found[("maintenance_tasks_run_seconds_since_last_tick", run)] < 900
    # Only the active run has per-run series: the finished ones and the partition have none.
    per_run = [labels for name, labels in found if name == "maintenance_tasks_run_items_processed"]
    assert per_run == [run]


def test_a_run_without_a_count_or_a_rate_has_no_expected_items_rate_or_eta(app: Flask) -> None:
    engine = app.extensions["sqlalchemy"].engine
    enqueued = add_run(engine, "ListTask", "enqueued")

    found = samples(scrape(app))

    run = (("run_id", str(enqueued)), ("status", "enqueued"), ("task", "ListTask"))
    assert found[("maintenance_tasks_run_items_processed", run)] == 0
    assert found[("maintenance_tasks_run_seconds_since_last_tick", run)] < 60
    for name in ("items_expected", "throughput_items_per_second", "eta_seconds"):
        assert (f"maintenance_tasks_run_{name}", run) not in found


def test_a_scheduled_run_is_reported_without_seconds_since_a_tick(app: Flask) -> None:
    """It waits for its time, not for a tick: a stuck alert must not see it grow for days."""
    engine = app.extensions["sqlalchemy"].engine
    scheduled = add_run(
        engine, "ListTask", "scheduled", updated_at=datetime.now(timezone.utc) - timedelta(days=3)
    )

    found = samples(scrape(app))

    run = (("run_id", str(scheduled)), ("status", "scheduled"), ("task", "ListTask"))
    assert found[("maintenance_tasks_run_items_processed", run)] == 0
    assert ("maintenance_tasks_run_seconds_since_last_tick", run) not in found


def test_arguments_never_appear_in_a_scrape_and_labels_are_escaped(app: Flask) -> None:
    engine = app.extensions["sqlalchemy"].engine
    arguments = {"password": "hunter2-password", "content": "plain-argument-value"}
    add_run(engine, "ListTask", "running", arguments=arguments)
    awkward = 'Odd"Task\\with\nnewline'
    add_run(engine, awkward, "paused")

    response = scrape(app)
    body = text(response)

    assert "hunter2-password" not in body and "plain-argument-value" not in body
    assert 'task="Odd\\"Task\\\\with\\nnewline"' in body
    found = samples(response)
    assert found[("maintenance_tasks_runs", (("status", "paused"), ("task", awkward)))] == 1


# -- what a scrape costs ------------------------------------------------------


@pytest.mark.both_databases
def test_a_scrape_costs_as_many_queries_with_300_runs_as_with_3(app: Flask) -> None:
    engine = app.extensions["sqlalchemy"].engine

    def queries() -> int:
        with count_queries(engine) as statements:
            samples(scrape(app))
        return len(statements)

    def add(count: int) -> None:
        insert_runs(engine, count, ["ListTask", "NoCollectionTask"], ["succeeded", "errored"])
        for n in range(count):
            run_id = add_run(engine, "ListTask", "running", tick_count=n, tick_total=count)
            add_run(engine, "ListTask", "running", parent_id=run_id, partition=0)

    scrape(app)  # connects once: dialect set-up queries are not the scrape's
    add(3)
    few = queries()
    add(297)
    many = queries()

    assert few == many == 2  # the counts by task and status, and the active runs


# -- workers ------------------------------------------------------------------


def test_workers_of_a_tasks_own_queue_are_counted(app: Flask, redis_url: str) -> None:
    connection = Redis.from_url(redis_url)
    slow = Worker([Queue("slow", connection=connection)], connection=connection, name="slow-one")
    slow.register_birth()
    try:
        found = samples(scrape(app))
    finally:
        slow.register_death()
        connection.close()
    assert found[("maintenance_tasks_workers", ())] == 1  # SlowQueueTask's queue


def test_registered_rq_workers_report_their_heartbeats(app: Flask, redis_url: str) -> None:
    connection = Redis.from_url(redis_url)
    queue = Queue(app.extensions["maintenance_tasks"].settings.queue, connection=connection)
    worker = Worker([queue], connection=connection, name="metrics-test-worker")
    worker.register_birth()
    Worker([Queue("another-queue", connection=connection)], connection=connection).register_birth()
    try:
        found = samples(scrape(app))
    finally:
        worker.register_death()
        connection.close()

    assert found[("maintenance_tasks_workers", ())] == 1  # not the one on another queue
    seconds = found[
        ("maintenance_tasks_worker_seconds_since_heartbeat", (("worker", "metrics-test-worker"),))
    ]
    assert 0 <= seconds < 60


@pytest.mark.slow
@pytest.mark.both_databases
def test_a_run_on_a_worker_process_is_followed_then_counted_once_it_ends(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(40)
    workers.start()
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.05})
    labels = (("run_id", str(run.id)), ("status", "running"), ("task", "CountItemsTask"))

    def moving() -> Samples | None:
        found = samples(scrape(app))
        processed = found.get(("maintenance_tasks_run_items_processed", labels), 0)
        return found if 0 < processed < 40 else None

    during = wait_until(moving, 30, "the run to be seen moving")
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 30, "the run to succeed")
    after = samples(scrape(app))

    assert during[("maintenance_tasks_run_items_expected", labels)] == 40
    assert during[("maintenance_tasks_run_seconds_since_last_tick", labels)] < 10
    assert during[("maintenance_tasks_workers", ())] == 1
    (heartbeat,) = [v for (n, _), v in during.items() if n.endswith("since_heartbeat")]
    assert 0 <= heartbeat < 70  # a worker beats at least once per recovery interval (60 s)
    succeeded = (("status", "succeeded"), ("task", "CountItemsTask"))
    assert after[("maintenance_tasks_runs", succeeded)] == 1
    assert not [n for n, _ in after if n.startswith("maintenance_tasks_run_")]


def test_with_no_worker_the_count_is_zero(app: Flask) -> None:
    found = samples(scrape(app))

    assert found[("maintenance_tasks_workers", ())] == 0


def test_without_redis_a_scrape_answers_without_worker_metrics(inprocess_app: Flask) -> None:
    add_run(inprocess_app.extensions["sqlalchemy"].engine, "ListTask", "running")

    found = samples(scrape(inprocess_app))

    assert not {n for n in names(found) if n.startswith("maintenance_tasks_worker")}
    assert ("maintenance_tasks_runs", (("status", "running"), ("task", "ListTask"))) in found


def test_with_redis_unreachable_a_scrape_answers_without_worker_metrics(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTASKS_TEST_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens
    with make_app() as app:
        add_run(app.extensions["sqlalchemy"].engine, "ListTask", "succeeded")

        found = samples(scrape(app))

    assert not {n for n in names(found) if n.startswith("maintenance_tasks_worker")}
    assert found[("maintenance_tasks_runs", (("status", "succeeded"), ("task", "ListTask")))] == 1


def test_each_app_has_its_own_registry_and_the_default_one_stays_empty(
    app: Flask, app_env: dict[str, str]
) -> None:
    first = scrape(app)
    with make_app(url_prefix="/other") as other:
        second = Dashboard(other, prefix="/other").get("/metrics")
    again = scrape(app)

    assert first.status_code == second.status_code == again.status_code == 200
    assert "maintenance_tasks_" not in generate_latest(REGISTRY).decode()


# -- who may scrape -----------------------------------------------------------


def test_closed_by_default_a_scrape_is_refused_with_how_to_open_it(app_env: dict[str, str]) -> None:
    with make_app() as app:
        app.config["TESTING"] = False
        add_run(app.extensions["sqlalchemy"].engine, "ListTask", "running")

        response = scrape(app, environ_base=AWAY)
        with_a_token = scrape(app, environ_base=AWAY, headers=bearer(TOKEN))

    assert response.status_code == with_a_token.status_code == 403
    assert "maintenance_tasks_" not in text(response)
    assert "authorize=" in text(response)


def test_the_right_bearer_token_opens_a_closed_endpoint(closed_app: Flask) -> None:
    add_run(closed_app.extensions["sqlalchemy"].engine, "ListTask", "running")

    response = scrape(closed_app, environ_base=AWAY, headers=bearer(TOKEN))

    assert "maintenance_tasks_runs" in names(samples(response))
    assert response.headers["Content-Security-Policy"]  # the after_request hooks ran


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        "Bearer wrong",
        f"Bearer {TOKEN.upper()}",
    ],
)
def test_a_wrong_or_absent_token_is_a_401_that_tells_nothing(
    closed_app: Flask, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = scrape(closed_app, environ_base=AWAY, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in text(response) and TOKEN[:8] not in text(response)
    assert "maintenance_tasks_runs" not in text(response)


def test_the_token_is_compared_in_constant_time(
    closed_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return constant_time(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    right = scrape(closed_app, environ_base=AWAY, headers=bearer(TOKEN))
    wrong = scrape(closed_app, environ_base=AWAY, headers=bearer("not-the-token"))

    assert (right.status_code, wrong.status_code) == (200, 401)
    assert compared == [(TOKEN.encode(), TOKEN.encode()), (b"not-the-token", TOKEN.encode())]


def test_authorize_decides_for_a_scrape_without_a_token(app_env: dict[str, str]) -> None:
    asked: list[tuple[str, str | None]] = []

    def only_views(action: str, task_name: str | None, run: t.Any) -> bool:
        asked.append((action, task_name))
        return action == "view"

    with make_app(authorize=only_views) as app:
        allowed = scrape(app, environ_base=AWAY)
    with make_app(authorize=lambda action, task_name, run: False) as app:
        refused = scrape(app, environ_base=AWAY)

    assert allowed.status_code == 200 and asked == [("view", None)]
    assert refused.status_code == 403 and "maintenance_tasks_" not in text(refused)


def test_under_a_parent_with_a_login_the_token_still_opens_the_endpoint(
    app_env: dict[str, str],
) -> None:
    admin = Blueprint("metrics_admin", __name__)

    @admin.before_request
    def login_required() -> tuple[str, int]:
        return "log in first", 401

    with make_app(parent=admin, metrics_token=TOKEN) as app:
        add_run(app.extensions["sqlalchemy"].engine, "ListTask", "running")
        app.register_blueprint(admin, url_prefix="/admin")
        web = Dashboard(app, prefix="/admin/maintenance_tasks")
        with_token = web.get("/metrics", environ_base=AWAY, headers=bearer(TOKEN))
        without = web.get("/metrics", environ_base=AWAY)
        dashboard = web.get("/", environ_base=AWAY, headers=bearer(TOKEN))

    assert "maintenance_tasks_runs" in names(samples(with_token))
    assert (without.status_code, text(without)) == (401, "log in first")
    assert (dashboard.status_code, text(dashboard)) == (401, "log in first")  # metrics only


def test_only_get_and_head_are_answered(app: Flask) -> None:
    web = Dashboard(app)

    assert web.client.head(web.url("/metrics")).status_code == 200
    assert web.client.post(web.url("/metrics")).status_code == 405


@pytest.mark.parametrize(
    "token",
    ["short", "", "with a space in it....", "ünïcödé-token-0123456789", 12345678901234567890],
)
def test_a_bad_metrics_token_is_refused_at_start_up_without_showing_it(
    app_env: dict[str, str], token: t.Any
) -> None:
    with pytest.raises(ConfigurationError, match="MAINTENANCE_TASKS_METRICS_TOKEN") as error:
        with make_app(metrics_token=token):
            pass

    if token:
        assert str(token) not in str(error.value)


def test_the_token_is_not_in_the_settings_repr(closed_app: Flask) -> None:
    assert TOKEN not in repr(closed_app.extensions["maintenance_tasks"].settings)


# -- inputs nobody thought of --------------------------------------------------

HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    authorization=st.one_of(
        st.none(),
        HEADER_TEXT,
        HEADER_TEXT.map(lambda s: f"Bearer {s}"),
        st.sampled_from([f"Bearer {TOKEN}", f"bearer  {TOKEN} ", f"BEARER {TOKEN}"]),
    ),
    suffix=st.one_of(
        st.just(""), st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), max_size=20)
    ),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]),
)
def test_no_header_or_path_makes_a_scrape_fail_with_a_5xx(
    closed_app: Flask, authorization: str | None, suffix: str, method: str
) -> None:
    web = Dashboard(closed_app)
    headers = {} if authorization is None else {"Authorization": authorization}

    response = web.client.open(
        web.url("/metrics" + suffix), method=method, headers=headers, environ_base=AWAY
    )

    assert response.status_code < 500, text(response)
    if response.status_code == 200:
        assert suffix.partition("?")[0].partition("#")[0] == "" and method in ("GET", "HEAD")
        assert (authorization or "").strip().partition(" ")[2].strip() == TOKEN
