"""The JSON API under ``<prefix>/api/``: parity with the Python API and the dashboard, who may
call it, its errors, its pages, CSV starts, masking, and its OpenAPI document (validated, held
against the routes, and fuzzed by Schemathesis).

Runs are started on Redis and run by an in-process RQ worker (``drain``).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
import schemathesis
import sqlalchemy as sa
from flask import Blueprint, Flask, request
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import TestResponse

from flask_maintenance_tasks import formatting
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.models import Event, Run, failures_table
from tests.support.apps import make_app
from tests.support.csv_files import items_csv
from tests.support.dashboard import Dashboard, add_run
from tests.support.records import fresh_run, seed_items
from tests.support.workers import drain
from tests.testapp import Item

API = "/maintenance_tasks/api"
TOKEN = "api-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A client that is not on this machine: the dashboard is closed to it by default.
AWAY = {"REMOTE_ADDR": "203.0.113.9"}
SECRET = "hunter2-never-shown-7f3a"
#: Examples Schemathesis generates for each operation.
FUZZ_EXAMPLES = 12


@pytest.fixture
def api_app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """The test app with the API token configured."""
    with make_app(api_token=TOKEN) as app:
        yield app


@pytest.fixture
def client(api_app: Flask) -> t.Any:
    return api_app.test_client()


def call(client: t.Any, method: str, path: str, **kwargs: t.Any) -> TestResponse:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return t.cast(TestResponse, client.open(API + path, method=method, headers=headers, **kwargs))


def body(response: TestResponse) -> t.Any:
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    return response.get_json()


def events(run_id: int) -> list[tuple[str, str, str]]:
    """The run's audit trail as ``(action, outcome, origin)``, read afresh."""
    from tests.testapp import db

    db.session.remove()
    rows = db.session.execute(
        sa.select(Event.action, Event.outcome, Event.origin)
        .where(Event.run_id == run_id)
        .order_by(Event.id)
    ).all()
    return [(str(a), str(o), str(origin)) for a, o, origin in rows]


def engine_of(app: Flask) -> sa.Engine:
    return t.cast(sa.Engine, app.extensions["sqlalchemy"].engine)


# -- a run deleted while an action reads it ------------------------------------------


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("action", "payload"),
    [("resume", None), ("cancel", None), ("speed", {"rate": 5})],
)
def test_an_action_racing_the_deletion_of_its_run_is_a_404(
    api_app: Flask, client: t.Any, action: str, payload: t.Any
) -> None:
    """A prune deletes the run between the action's read and its write: the answer is
    ``run_not_found``, not a 5xx, and no event is left for a run that is gone."""
    engine = engine_of(api_app)
    run_id = add_run(engine, "CountItemsTask", "paused")
    deleting, done = threading.Event(), threading.Event()

    def delete() -> None:
        with engine.connect() as connection:
            connection.execute(sa.delete(Event).where(Event.run_id == run_id))
            connection.execute(sa.delete(Run).where(Run.id == run_id))
            deleting.set()
            time.sleep(0.5)  # the action reads the run, then waits for the lock
            connection.commit()
        done.set()

    deleter = threading.Thread(target=delete)
    deleter.start()
    try:
        assert deleting.wait(10)
        answer = call(client, "POST", f"/runs/{run_id}/{action}", json=payload)
    finally:
        deleter.join()

    assert done.is_set()
    assert answer.status_code == 404, answer.get_data(as_text=True)
    assert body(answer)["code"] == "run_not_found"
    assert events(run_id) == []


# -- parity with the Python API ----------------------------------------------------


@pytest.mark.both_databases
def test_a_run_started_through_the_api_ends_as_one_started_from_python(
    api_app: Flask, client: t.Any, mtasks: t.Any
) -> None:
    seed_items(4)
    response = call(client, "POST", "/tasks/CountItemsTask/runs", json={"arguments": {}})
    by_api = body(response)["id"]
    drain(api_app)
    by_python = mtasks.run("CountItemsTask").id
    drain(api_app)

    api_run, python_run = fresh_run(by_api), fresh_run(by_python)
    assert response.status_code == 201
    assert response.headers["Location"].endswith(f"{API}/runs/{by_api}")
    assert (api_run.status, api_run.tick_count) == (python_run.status, python_run.tick_count)
    assert api_run.status == "succeeded"
    assert [(a, o) for a, o, _ in events(by_api)] == [(a, o) for a, o, _ in events(by_python)]
    assert events(by_api)[0] == ("started", "done", "api")
    assert events(by_python)[0] == ("started", "done", "python")


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("action", "before", "after", "event"),
    [
        ("pause", "running", "pausing", "pause_requested"),
        ("resume", "paused", "enqueued", "resumed"),
        ("cancel", "running", "cancelling", "cancel_requested"),
        ("cancel", "paused", "cancelled", "force_cancelled"),
    ],
)
def test_each_run_button_through_the_api_does_what_python_does(
    api_app: Flask,
    client: t.Any,
    mtasks: t.Any,
    action: str,
    before: str,
    after: str,
    event: str,
) -> None:
    task = "ConcurrentCountTask"  # two active runs at once
    by_api = add_run(engine_of(api_app), task, before, arguments={"group": 1})
    by_python = add_run(engine_of(api_app), task, before, arguments={"group": 2})

    response = call(client, "POST", f"/runs/{by_api}/{action}")
    getattr(mtasks, action)(by_python)

    assert response.status_code == 200, body(response)
    assert body(response)["status"] == after == fresh_run(by_python).status
    assert fresh_run(by_api).status == after
    assert events(by_api)[-1] == (event, "done", "api")
    assert events(by_python)[-1] == (event, "done", "python")


@pytest.mark.both_databases
def test_pausing_a_stuck_run_through_the_api_forces_it_paused_as_the_dashboard_does(
    api_app: Flask, client: t.Any
) -> None:
    long_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    run_id = add_run(engine_of(api_app), "ListTask", "running", updated_at=long_ago)

    response = call(client, "POST", f"/runs/{run_id}/pause")

    assert (response.status_code, body(response)["status"]) == (200, "paused")
    assert events(run_id)[-1] == ("force_paused", "done", "api")


@pytest.mark.both_databases
def test_retry_and_run_for_real_through_the_api_start_linked_runs(
    api_app: Flask, client: t.Any, db: t.Any
) -> None:
    seed_items(6)
    db.session.execute(sa.update(Item).where(Item.id.in_([2, 4])).values(title="bad"))
    db.session.commit()
    failed = body(call(client, "POST", "/tasks/SkipBadItemsTask/runs", json={}))["id"]
    drain(api_app)
    db.session.execute(sa.update(Item).where(Item.title == "bad").values(title="fixed"))
    db.session.commit()

    retry = call(client, "POST", f"/runs/{failed}/retry-failures")
    dry = body(call(client, "POST", "/tasks/ListTask/runs", json={"dry_run": True}))
    drain(api_app)
    real = call(client, "POST", f"/runs/{dry['id']}/run-for-real")
    drain(api_app)

    assert retry.status_code == 201 and body(retry)["retry_of"] == failed
    assert fresh_run(body(retry)["id"]).status == "succeeded"
    assert dry["dry_run"] is True
    assert real.status_code == 201 and body(real)["dry_run"] is False
    assert fresh_run(body(real)["id"]).status == "succeeded"
    assert ("failures_retried", "done", "api") in events(failed)


def test_a_csv_task_starts_with_its_file_as_a_multipart_form(api_app: Flask, client: t.Any) -> None:
    form = {
        "arguments": json.dumps({"sleep": 0}),
        "max_failures": "3",
        "error_policy": "skip",
        "csv_file": (io.BytesIO(items_csv(3).encode()), "items.csv"),
    }

    response = call(client, "POST", "/tasks/ImportItemsTask/runs", data=form)
    drain(api_app)

    assert response.status_code == 201, body(response)
    assert body(response)["error_policy"] == {
        "policy": "skip",
        "max_failures": 3,
        "max_failure_rate": None,
    }
    assert fresh_run(body(response)["id"]).status == "succeeded"
    assert ("csv_uploaded", "done", "api") in events(body(response)["id"])


def test_a_csv_task_without_its_file_is_refused(client: t.Any) -> None:
    response = call(client, "POST", "/tasks/ImportItemsTask/runs", json={})

    assert response.status_code == 422
    assert body(response)["code"] == "invalid_csv"


def test_a_preview_says_what_a_run_would_walk_and_writes_nothing(client: t.Any, db: t.Any) -> None:
    seed_items(5)
    arguments = {"prefix": "", "limit_group": 100, "token": SECRET}

    response = call(
        client, "POST", "/tasks/PreviewItemsTask/preview", json={"arguments": arguments}
    )

    assert response.status_code == 200, body(response)
    assert body(response)["count"] == 5 and body(response)["count_kind"] == "exact"
    assert SECRET not in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


# -- reading -----------------------------------------------------------------------


def test_tasks_list_their_parameters_schema_with_masked_ones_marked(client: t.Any) -> None:
    response = call(client, "GET", "/tasks")

    tasks = {task["name"]: task for task in body(response)["tasks"]}
    leaky = tasks["LeakyErrorTask"]
    assert leaky["masked"] == ["api_key", "password"]
    assert leaky["parameters"]["properties"]["password"]["x-masked"] is True
    assert leaky["parameters"]["properties"]["api_key"]["x-masked"] is True
    assert "x-masked" not in leaky["parameters"]["properties"]["options"]
    params = tasks["ParamsTask"]["parameters"]["properties"]
    assert params["password"]["x-masked"] is True and "default" not in params["password"]
    assert params["limit"]["default"] == 10 and "x-masked" not in params["limit"]
    assert tasks["ImportItemsTask"]["needs_csv"] is True
    assert tasks["ListTask"]["parameters"] is None
    assert body(call(client, "GET", "/tasks/ListTask"))["name"] == "ListTask"


def names(response: TestResponse) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [task["name"] for task in body(response)["tasks"]]


def test_q_searches_the_tasks_as_the_dashboard_does(client: t.Any) -> None:
    every = names(call(client, "GET", "/tasks"))

    found = names(call(client, "GET", "/tasks", query_string={"q": "skipBAD"}))
    by_page = Dashboard(client.application).get("/?q=skipBAD").get_data(as_text=True)

    assert found and all("skipbad" in name.lower() for name in found)
    assert found == [name for name in every if "skipbad" in name.lower()]
    assert all(name in by_page for name in found)
    assert names(call(client, "GET", "/tasks", query_string={"q": ""})) == every
    assert names(call(client, "GET", "/tasks", query_string={"q": "  "})) == every
    assert body(call(client, "GET", "/tasks", query_string={"q": "NoTaskIsNamedSo"})) == {
        "tasks": []
    }


@pytest.mark.parametrize(
    "q",
    ["<script>alert(1)</script>", "x" * 10_000, "Täsk ☃ 𝔘 \u200b", "%00", "\x00", "' OR 1=1 --"],
)
def test_a_hostile_q_is_only_a_search_that_finds_nothing(client: t.Any, q: str) -> None:
    response = call(client, "GET", "/tasks", query_string={"q": q})

    assert response.status_code == 200
    assert body(response) == {"tasks": []}


@pytest.mark.both_databases
def test_runs_are_listed_newest_first_a_page_at_a_time_and_filtered(
    api_app: Flask, client: t.Any
) -> None:
    engine = engine_of(api_app)
    ids = [add_run(engine, "ListTask", "succeeded") for _ in range(23)]
    other = add_run(engine, "OnceTask", "errored")

    first = body(call(client, "GET", "/runs?task=ListTask"))
    second = body(call(client, "GET", f"/runs?task=ListTask&cursor={first['next_cursor']}"))
    errored = body(call(client, "GET", "/runs?status=errored"))

    assert [run["id"] for run in first["runs"]] == ids[::-1][:20]
    assert [run["id"] for run in second["runs"]] == ids[::-1][20:]
    assert second["next_cursor"] is None
    assert [run["id"] for run in errored["runs"]] == [other]


#: The links of a run's JSON, which lead to the API's routes in the API's answers.
LINKS = ("failures_url", "failures_csv_url", "csv_url", "run_for_real_url", "parent_url")


def test_a_run_reads_as_its_dashboard_json_with_links_to_the_api(
    api_app: Flask, client: t.Any
) -> None:
    run_id = add_run(engine_of(api_app), "ListTask", "succeeded", tick_count=5, tick_total=5)
    web = Dashboard(api_app)

    by_api = body(call(client, "GET", f"/runs/{run_id}"))
    by_dashboard = body(web.get(f"/runs/{run_id}.json"))

    links = {key: by_api.pop(key) for key in LINKS if key in by_api}
    assert by_api == {k: v for k, v in by_dashboard.items() if k not in LINKS}
    assert by_api["percent"] == 100.0 and by_api["partition_count"] == 1
    assert links == {
        "failures_url": f"{API}/runs/{run_id}/failures",
        "failures_csv_url": f"{API}/runs/{run_id}/failures.csv",
    }
    assert by_dashboard["failures_url"] == f"/maintenance_tasks/runs/{run_id}/failures"


def test_the_links_of_a_run_lead_to_api_routes_that_answer(api_app: Flask, client: t.Any) -> None:
    started = call(client, "POST", "/tasks/ImportItemsTask/runs", data=_csv_form(items_csv(2)))
    dry = body(
        call(client, "POST", "/tasks/ListTask/runs", json={"dry_run": True, "partitions": 2})
    )
    drain(api_app)
    imported = body(call(client, "GET", f"/runs/{body(started)['id']}"))
    dry = body(call(client, "GET", f"/runs/{dry['id']}"))
    partition = body(call(client, "GET", f"/runs/{dry['partitions'][0]['run_id']}"))

    assert imported["csv_url"] == f"{API}/runs/{imported['id']}/csv"
    assert "csv_url" not in dry
    assert dry["run_for_real_url"] == f"{API}/runs/{dry['id']}/run-for-real"
    assert partition["parent_url"] == f"{API}/runs/{dry['id']}"
    for url in (imported["csv_url"], imported["failures_url"], imported["failures_csv_url"]):
        assert client.get(url, headers=AUTH).status_code == 200, url
    assert client.get(partition["parent_url"], headers=AUTH).status_code == 200


@pytest.mark.both_databases
def test_a_runs_events_and_failures_are_read_a_page_at_a_time(
    api_app: Flask, client: t.Any, db: t.Any
) -> None:
    seed_items(6)
    db.session.execute(sa.update(Item).where(Item.id.in_([1, 3, 5])).values(title="bad"))
    db.session.commit()
    run_id = body(call(client, "POST", "/tasks/SkipBadItemsTask/runs", json={}))["id"]
    drain(api_app)

    trail = body(call(client, "GET", f"/runs/{run_id}/events"))
    last = body(call(client, "GET", f"/runs/{run_id}/events?limit=1"))
    first = body(call(client, "GET", f"/runs/{run_id}/failures?limit=2"))
    rest = body(call(client, "GET", f"/runs/{run_id}/failures?limit=2&after={first['next_after']}"))

    assert trail["events"][0]["action"] == "started" and trail["events"][0]["origin"] == "api"
    assert trail["events"][-1]["action"] == "succeeded"
    assert last["events"] == trail["events"][-1:]
    assert last["events_omitted"] == len(trail["events"]) - 1
    assert [f["item_key"] for f in first["failures"] + rest["failures"]] == [1, 3, 5]
    assert rest["next_after"] is None


def test_masked_arguments_are_never_in_clear_in_any_answer(api_app: Flask, client: t.Any) -> None:
    arguments = {"api_key": SECRET, "password": SECRET, "options": {"token": SECRET}}
    started = call(client, "POST", "/tasks/LeakyErrorTask/runs", json={"arguments": arguments})
    run_id = body(started)["id"]
    drain(api_app)

    answers = [
        started,
        call(client, "GET", f"/runs/{run_id}"),
        call(client, "GET", f"/runs/{run_id}/events"),
        call(client, "GET", f"/runs/{run_id}/failures"),
        call(client, "GET", "/runs"),
        call(client, "GET", "/tasks/LeakyErrorTask"),
        call(client, "POST", "/tasks/LeakyErrorTask/runs", json={"arguments": {"api_key": 7}}),
        call(client, "POST", f"/runs/{run_id}/pause"),
    ]

    assert fresh_run(run_id).status == "errored"
    assert body(answers[1])["arguments"]["password"] == "[FILTERED]"
    for answer in answers:
        assert SECRET not in answer.get_data(as_text=True)


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "code"),
    [
        ("POST", "/tasks/NoSuchTask/runs", {}, 404, "task_not_found"),
        ("GET", "/tasks/NoSuchTask", None, 404, "task_not_found"),
        ("GET", "/runs/999999", None, 404, "run_not_found"),
        ("POST", "/runs/999999/pause", None, 404, "run_not_found"),
        ("GET", "/runs/abc", None, 404, "not_found"),
        ("GET", "/nothing/here", None, 404, "not_found"),
        ("GET", "/runs/1/pause", None, 405, "method_not_allowed"),
        ("DELETE", "/tasks", None, 405, "method_not_allowed"),
        ("GET", "/runs?status=sleeping", None, 400, "bad_request"),
        ("GET", "/runs?cursor=-1", None, 400, "bad_request"),
        ("POST", "/tasks/ListTask/runs", {"dry_run": "yes"}, 400, "bad_request"),
        ("POST", "/tasks/ListTask/runs", {"colour": 1}, 400, "bad_request"),
        ("POST", "/tasks/ListTask/runs", {"partitions": 0}, 422, "invalid_arguments"),
        ("POST", "/tasks/ListTask/runs", {"at": "2031-01-01T02:00"}, 422, "invalid_arguments"),
        ("POST", "/tasks/ListTask/runs", {"at": 5}, 400, "bad_request"),
        ("POST", "/tasks/ListTask/runs", {"arguments": {"x": 1}}, 422, "invalid_arguments"),
        ("POST", "/tasks/ListTask/runs", {"error_policy": "shrug"}, 422, "invalid_arguments"),
        ("POST", "/tasks/ListTask/runs", {"arguments": {"x": "\x00"}}, 400, "bad_request"),
    ],
)
def test_errors_are_json_with_a_stable_code(
    client: t.Any,
    method: str,
    path: str,
    payload: t.Any,
    status: int,
    code: str,
) -> None:
    kwargs = {} if payload is None else {"json": payload}

    response = call(client, method, path, **kwargs)

    assert (response.status_code, body(response)["code"]) == (status, code)
    assert body(response)["message"]


def test_invalid_arguments_are_told_by_field(client: t.Any, db: t.Any) -> None:
    response = call(
        client,
        "POST",
        "/tasks/WebFormKindsTask/runs",
        json={"arguments": {"note": "n", "ratio": "half", "level": 9}},
    )

    assert (response.status_code, body(response)["code"]) == (422, "invalid_arguments")
    assert set(body(response)["errors"]) == {"ratio", "level"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


@pytest.mark.both_databases
@pytest.mark.parametrize("route", ["runs", "preview"])
@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ('{"note": "\\ud800"}', "note"),
        ('{"note": "x", "limits": {"\\udcff": 1}}', "limits"),
        ('{"note": "x", "tags": [["\\ud800"]]}', "tags"),
    ],
)
def test_a_lone_surrogate_in_the_arguments_is_invalid_and_writes_nothing(
    api_app: Flask, client: t.Any, db: t.Any, route: str, arguments: str, field: str
) -> None:
    data = '{"arguments": ' + arguments + "}"

    response = call(
        client,
        "POST",
        f"/tasks/WebFormKindsTask/{route}",
        data=data,
        headers={"Content-Type": "application/json"},
    )

    assert (response.status_code, body(response)["code"]) == (422, "invalid_arguments")
    assert body(response)["errors"] == {
        field: ["must be text without lone surrogates (it is not valid UTF-8)"]
    }
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0
    assert Dashboard(api_app).get("/tasks/WebFormKindsTask").status_code == 200


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ("NaN", "application/json"),
        ("x=1", "text/plain"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(
    client: t.Any, data: str, content_type: str
) -> None:
    response = call(
        client, "POST", "/tasks/ListTask/runs", data=data, headers={"Content-Type": content_type}
    )

    expected = 415 if content_type == "text/plain" else 400
    assert response.status_code == expected
    assert body(response)["code"] in ("bad_request", "unsupported_media_type")


@pytest.mark.parametrize("chunked", [False, True])
def test_a_json_body_above_the_limit_is_too_large_with_or_without_a_length(
    client: t.Any, db: t.Any, chunked: bool
) -> None:
    data = json.dumps({"arguments": {"items": ["x" * 100] * 2000}}).encode()
    stream = io.BytesIO(data)
    sent: dict[str, t.Any] = {"data": data}
    if chunked:
        sent = {
            "input_stream": stream,
            "headers": {"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
            "environ_overrides": {"wsgi.input_terminated": True},
        }
    else:
        sent["headers"] = {"Content-Type": "application/json"}

    response = call(client, "POST", "/tasks/ListTask/runs", **sent)

    assert (response.status_code, body(response)["code"]) == (413, "payload_too_large")
    assert "65,536 bytes" in body(response)["message"]
    assert stream.tell() < len(data)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


@pytest.mark.parametrize("route", ["runs", "preview"])
def test_a_nul_character_in_the_body_is_refused_saying_so(
    client: t.Any, db: t.Any, route: str
) -> None:
    response = call(client, "POST", f"/tasks/ListTask/{route}", json={"arguments": {"x": "a\x00b"}})

    assert (response.status_code, body(response)["code"]) == (400, "bad_request")
    assert "NUL character" in body(response)["message"]
    assert "not JSON" not in body(response)["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


def test_a_nul_character_in_a_forms_arguments_is_refused_saying_so(client: t.Any) -> None:
    form = {
        "arguments": '{"sleep": "\\u0000"}',
        "csv_file": (io.BytesIO(items_csv(1).encode()), "items.csv"),
    }

    response = call(client, "POST", "/tasks/ImportItemsTask/runs", data=form)

    assert (response.status_code, body(response)["code"]) == (400, "bad_request")
    assert body(response)["errors"] == {"arguments": ["Must not hold a NUL character."]}


def test_a_start_with_two_csv_files_is_refused(client: t.Any, db: t.Any) -> None:
    form = {
        "csv_file": [
            (io.BytesIO(items_csv(2).encode()), "one.csv"),
            (io.BytesIO(items_csv(3).encode()), "two.csv"),
        ],
    }

    response = call(client, "POST", "/tasks/ImportItemsTask/runs", data=form)

    assert (response.status_code, body(response)["code"]) == (400, "bad_request")
    assert "one csv_file" in body(response)["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


def test_a_transition_the_status_does_not_allow_is_refused(api_app: Flask, client: t.Any) -> None:
    run_id = add_run(engine_of(api_app), "ListTask", "succeeded")

    response = call(client, "POST", f"/runs/{run_id}/pause")

    assert (response.status_code, body(response)["code"]) == (409, "invalid_transition")
    assert fresh_run(run_id).status == "succeeded"
    assert events(run_id) == [("pause_requested", "refused", "api")]


def test_a_second_run_of_a_task_already_running_is_refused(client: t.Any, db: t.Any) -> None:
    first = call(client, "POST", "/tasks/ListTask/runs", json={})

    second = call(client, "POST", "/tasks/ListTask/runs", json={})

    assert first.status_code == 201
    assert (second.status_code, body(second)["code"]) == (409, "task_already_running")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1


# -- who may call it ---------------------------------------------------------------


@pytest.fixture
def closed_app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """As in production: TESTING off, no parent, no authorize; the API token set."""
    with make_app(api_token=TOKEN) as app:
        app.config["TESTING"] = False
        yield app


def test_closed_by_default_without_the_token(closed_app: Flask) -> None:
    client = closed_app.test_client()

    read = client.get(API + "/tasks", environ_base=AWAY)
    start = client.post(API + "/tasks/ListTask/runs", json={}, environ_base=AWAY)

    assert (read.status_code, body(read)["code"]) == (403, "forbidden")
    assert (start.status_code, body(start)["code"]) == (403, "forbidden")
    with closed_app.app_context():
        assert (
            closed_app.extensions["sqlalchemy"].session.scalar(
                sa.select(sa.func.count()).select_from(Run)
            )
            == 0
        )


def test_the_token_opens_it_and_a_wrong_token_changes_nothing(closed_app: Flask) -> None:
    client = closed_app.test_client()

    wrong = client.post(
        API + "/tasks/ListTask/runs",
        json={},
        headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"},
        environ_base=AWAY,
    )
    right = client.post(API + "/tasks/ListTask/runs", json={}, headers=AUTH, environ_base=AWAY)

    assert (wrong.status_code, body(wrong)["code"]) == (401, "unauthorized")
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 201
    assert body(right)["id"] == 1  # the refused request inserted nothing


def test_without_a_configured_token_no_bearer_token_opens_it(app_env: dict[str, str]) -> None:
    with make_app() as app:
        app.config["TESTING"] = False
        response = app.test_client().get(API + "/tasks", headers=AUTH, environ_base=AWAY)

    assert (response.status_code, body(response)["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("token", ["short", "has a space in it, 0123456789", 12345678901234567])
def test_a_bad_api_token_is_refused_at_start_up_without_showing_it(
    app_env: dict[str, str], token: t.Any
) -> None:
    with pytest.raises(ConfigurationError, match="MAINTENANCE_TASKS_API_TOKEN") as error:
        with make_app(api_token=token):
            pass

    assert str(token) not in str(error.value)


def test_the_metrics_token_may_not_be_the_api_token(app_env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as error:
        with make_app(api_token=TOKEN, metrics_token=TOKEN):
            pass

    assert "MAINTENANCE_TASKS_METRICS_TOKEN and MAINTENANCE_TASKS_API_TOKEN" in str(error.value)
    assert TOKEN not in str(error.value)
    with make_app(api_token=TOKEN, metrics_token=TOKEN[::-1]) as app:
        assert app.extensions["maintenance_tasks"].settings.metrics_token == TOKEN[::-1]


def test_a_session_needs_the_csrf_token_in_the_header(api_app: Flask, db: t.Any) -> None:
    web = Dashboard(api_app)
    token = web.token()

    without = web.client.post(API + "/tasks/ListTask/runs", json={})
    wrong = web.client.post(
        API + "/tasks/ListTask/runs", json={}, headers={"X-CSRFToken": "forged"}
    )
    read = web.client.get(API + "/tasks")
    right = web.client.post(API + "/tasks/ListTask/runs", json={}, headers={"X-CSRFToken": token})

    assert (without.status_code, body(without)["code"]) == (403, "csrf_failed")
    assert (wrong.status_code, body(wrong)["code"]) == (403, "csrf_failed")
    assert read.status_code == 200
    assert right.status_code == 201
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1


def test_authorize_is_asked_with_the_token_too(app_env: dict[str, str]) -> None:
    asked: list[tuple[str, str | None]] = []

    def read_only(action: str, task_name: str | None, run: t.Any) -> bool:
        asked.append((action, task_name))
        return action == "view"

    with make_app(authorize=read_only, api_token=TOKEN) as app:
        app.config["TESTING"] = False
        run_id = add_run(engine_of(app), "ListTask", "running")
        client = app.test_client()
        listed = client.get(API + "/tasks", headers=AUTH, environ_base=AWAY)
        start = client.post(API + "/tasks/ListTask/runs", json={}, headers=AUTH)
        pause = client.post(API + f"/runs/{run_id}/pause", headers=AUTH)
        status = fresh_run(run_id).status

    assert status == "running"
    assert listed.status_code == 200
    assert (start.status_code, body(start)["code"]) == (403, "forbidden")
    assert (pause.status_code, body(pause)["code"]) == (403, "forbidden")
    assert ("run", "ListTask") in asked and ("pause", None) in asked


def test_under_a_parent_with_a_login_the_token_still_opens_the_api(
    app_env: dict[str, str],
) -> None:
    admin = Blueprint("api_admin", __name__)

    @admin.before_request
    def login_required() -> tuple[str, int]:
        return "log in first", 401

    with make_app(parent=admin, api_token=TOKEN) as app:
        app.register_blueprint(admin, url_prefix="/admin")
        client = app.test_client()
        with_token = client.get("/admin" + API + "/tasks", headers=AUTH, environ_base=AWAY)
        without = client.get("/admin" + API + "/tasks", environ_base=AWAY)

    assert with_token.status_code == 200 and body(with_token)["tasks"]
    assert (without.status_code, without.get_data(as_text=True)) == (401, "log in first")


# -- a run's CSV file, and its failures as CSV ----------------------------------------


def _csv_form(content: str) -> dict[str, t.Any]:
    return {
        "arguments": json.dumps({"sleep": 0}),
        "csv_file": (io.BytesIO(content.encode()), "items.csv"),
    }


def downloads(run_id: int) -> list[tuple[str | None, str]]:
    """The run's ``csv_downloaded`` events, as ``(actor, origin)``."""
    from tests.testapp import db

    db.session.remove()
    rows = db.session.execute(
        sa.select(Event.actor, Event.origin)
        .where(Event.run_id == run_id, Event.action == "csv_downloaded")
        .order_by(Event.id)
    ).all()
    return [(actor, str(origin)) for actor, origin in rows]


def _operator() -> t.Any:
    return {"user": request.headers.get("X-Operator")}


def test_a_runs_csv_file_is_downloaded_as_it_was_given_and_recorded_once(
    app_env: dict[str, str],
) -> None:
    content = items_csv(5, pad=3)
    with make_app(api_token=TOKEN, metadata=_operator) as app:
        client = app.test_client()
        started = call(
            client,
            "POST",
            "/tasks/ImportItemsTask/runs",
            data=_csv_form(content),
            headers={"X-Operator": "ada"},
        )
        run_id = body(started)["id"]

        response = call(client, "GET", f"/runs/{run_id}/csv", headers={"X-Operator": "bob"})
        head = call(client, "HEAD", f"/runs/{run_id}/csv")

        assert response.status_code == 200 and response.mimetype == "text/csv"
        assert response.get_data() == content.encode()
        assert response.headers["Content-Length"] == str(len(content.encode()))
        assert response.headers["Content-Disposition"].startswith('attachment; filename="')
        assert head.status_code == 200 and head.get_data() == b""
        assert downloads(run_id) == [('{"user":"bob"}', "api")]


def test_a_csv_file_that_is_not_there_is_a_json_404(api_app: Flask, client: t.Any) -> None:
    without = add_run(engine_of(api_app), "ListTask", "succeeded")

    no_file = call(client, "GET", f"/runs/{without}/csv")
    no_run = call(client, "GET", "/runs/999999/csv")

    assert (no_file.status_code, body(no_file)["code"]) == (404, "csv_not_found")
    assert (no_run.status_code, body(no_run)["code"]) == (404, "run_not_found")
    assert downloads(without) == []


def test_without_the_token_a_closed_api_gives_no_csv_and_records_nothing(
    closed_app: Flask,
) -> None:
    client = closed_app.test_client()
    content = items_csv(2)
    started = client.post(
        API + "/tasks/ImportItemsTask/runs",
        data=_csv_form(content),
        headers=AUTH,
        environ_base=AWAY,
    )
    run_id = body(started)["id"]
    wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}

    answers = [
        client.get(API + f"/runs/{run_id}/csv", environ_base=AWAY),
        client.get(API + f"/runs/{run_id}/csv", headers=wrong, environ_base=AWAY),
        client.get(API + f"/runs/{run_id}/failures.csv", environ_base=AWAY),
    ]

    assert [(a.status_code, body(a)["code"]) for a in answers] == [
        (403, "forbidden"),
        (401, "unauthorized"),
        (403, "forbidden"),
    ]
    assert all(content not in a.get_data(as_text=True) for a in answers)
    assert downloads(run_id) == []


def _failed_run(api_app: Flask, client: t.Any, db: t.Any) -> int:
    """A finished run of SkipBadItemsTask over six items, items 1, 3 and 5 failing."""
    seed_items(6)
    db.session.execute(sa.update(Item).where(Item.id.in_([1, 3, 5])).values(title="bad"))
    db.session.commit()
    run_id = body(call(client, "POST", "/tasks/SkipBadItemsTask/runs", json={}))["id"]
    drain(api_app)
    return t.cast(int, run_id)


def table(response: TestResponse) -> list[list[str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


@pytest.mark.both_databases
def test_failures_as_csv_hold_one_row_per_failure_and_take_the_filters(
    api_app: Flask, client: t.Any, db: t.Any
) -> None:
    run_id = _failed_run(api_app, client, db)
    with engine_of(api_app).begin() as connection:
        ids = connection.scalars(
            sa.select(failures_table.c.id)
            .where(failures_table.c.run_id == run_id)
            .order_by(failures_table.c.id)
        ).all()
        connection.execute(
            failures_table.update().where(failures_table.c.id == ids[1]).values(status="resolved")
        )
    path = f"/runs/{run_id}/failures.csv"

    every = table(call(client, "GET", path))
    first_id = every[1][0]
    resolved = table(call(client, "GET", path, query_string={"status": "resolved"}))
    of_class = table(call(client, "GET", path, query_string={"class": "BadItem"}))
    other = table(call(client, "GET", path, query_string={"class": "KeyError"}))
    later = table(call(client, "GET", path, query_string={"after": first_id}))
    web = table(Dashboard(api_app).get(f"/runs/{run_id}/failures.csv"))
    response = call(client, "GET", path)

    assert every[0] == list(formatting.FAILURE_CSV_COLUMNS)
    key = formatting.FAILURE_CSV_COLUMNS.index("item_key")
    assert [row[key] for row in every[1:]] == ["1", "3", "5"]
    assert [row[key] for row in resolved[1:]] == ["3"]
    assert of_class == every and other == every[:1]
    assert [row[key] for row in later[1:]] == ["3", "5"]
    assert web == every
    disposition = response.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="run-{run_id}-failures.csv"'
    assert events(run_id)[-1][0] == "succeeded"  # a download of failures records nothing


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("status=sleeping", 400, "bad_request"),
        ("after=-1", 400, "bad_request"),
        ("after=abc", 400, "bad_request"),
        ("class=" + "x" * 300, 400, "bad_request"),
        ("class=%00", 400, "bad_request"),
    ],
)
def test_bad_failure_filters_of_the_csv_are_json_400s(
    api_app: Flask, client: t.Any, query: str, status: int, code: str
) -> None:
    run_id = add_run(engine_of(api_app), "ListTask", "succeeded")

    response = call(client, "GET", f"/runs/{run_id}/failures.csv?{query}")

    assert (response.status_code, body(response)["code"]) == (status, code)


def test_failures_of_an_unknown_run_as_csv_are_a_json_404(client: t.Any) -> None:
    response = call(client, "GET", "/runs/999999/failures.csv")

    assert (response.status_code, body(response)["code"]) == (404, "run_not_found")


# -- the OpenAPI document ----------------------------------------------------------


def test_the_openapi_document_is_valid_openapi_3_1(client: t.Any) -> None:
    document = body(call(client, "GET", "/openapi.json"))

    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": "/maintenance_tasks"}]


def test_every_api_route_is_documented_and_every_documented_one_exists(
    api_app: Flask, client: t.Any
) -> None:
    document = body(call(client, "GET", "/openapi.json"))
    documented = {
        (method.upper(), "/maintenance_tasks" + path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    routed = set()
    for rule in api_app.url_map.iter_rules():
        if not rule.rule.startswith(API + "/") or rule.endpoint.endswith(".api_unmatched"):
            continue
        path = rule.rule.replace("<int:run_id>", "{run_id}").replace("<name>", "{name}")
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routed.add((method, path))

    assert routed == documented


def test_schemathesis_finds_no_server_error_and_every_answer_matches_its_schema(
    api_app: Flask,
) -> None:
    seed_items(3)
    add_run(engine_of(api_app), "ListTask", "succeeded")
    add_run(engine_of(api_app), "ConcurrentCountTask", "paused", arguments={"group": 1})
    schema = schemathesis.openapi.from_wsgi(API + "/openapi.json", api_app, headers=AUTH)
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    ran: list[str] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: t.Any) -> None:
            case.call_and_validate(headers=AUTH, checks=checks)
            ran.append(case.operation.label)

        fuzz()

    print(f"Schemathesis ran {len(ran)} cases on {len(set(ran))} operations:", sorted(set(ran)))
    # Every operation but the document's own, which Schemathesis leaves out.
    assert len(set(ran)) == len(operations) == 16


def test_the_answers_about_real_tasks_and_runs_match_their_schemas(
    api_app: Flask, db: t.Any
) -> None:
    seed_items(4)
    db.session.execute(sa.update(Item).where(Item.id == 2).values(title="bad"))
    db.session.commit()
    schema = schemathesis.openapi.from_wsgi(API + "/openapi.json", api_app, headers=AUTH)
    operations = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
    checks = [response_schema_conformance, status_code_conformance, content_type_conformance]

    def check(label: str, **data: t.Any) -> t.Any:
        response = operations[label].Case(**data).call_and_validate(headers=AUTH, checks=checks)
        return response.json()

    failing = check(
        "POST /api/tasks/{name}/runs",
        path_parameters={"name": "SkipBadItemsTask"},
        body={"arguments": {"token": SECRET}, "max_failures": 3},
        media_type="application/json",
    )["id"]
    dry = check(
        "POST /api/tasks/{name}/runs",
        path_parameters={"name": "ListTask"},
        body={"dry_run": True, "partitions": 2},
        media_type="application/json",
    )["id"]
    drain(api_app)
    check("GET /api/tasks")
    check("GET /api/tasks/{name}", path_parameters={"name": "WebFormKindsTask"})
    for run_id in (failing, dry):
        check("GET /api/runs/{run_id}", path_parameters={"run_id": run_id})
        check("GET /api/runs/{run_id}/events", path_parameters={"run_id": run_id})
        check("GET /api/runs/{run_id}/failures", path_parameters={"run_id": run_id})
    check("GET /api/runs", query={"status": "succeeded"})
    check("GET /api/tasks", query={"q": "task"})
    csv_checks = [status_code_conformance, content_type_conformance]
    case = operations["GET /api/runs/{run_id}/failures.csv"].Case(
        path_parameters={"run_id": failing}
    )
    response = case.call(headers=AUTH)
    case.validate_response(response, checks=csv_checks)
    assert response.status_code == 200 and response.text.count("\n") == 2
    check(
        "POST /api/tasks/{name}/preview",
        path_parameters={"name": "PreviewItemsTask"},
        body={"arguments": {"prefix": ""}},
        media_type="application/json",
    )
    check("POST /api/runs/{run_id}/retry-failures", path_parameters={"run_id": failing})
    real = check("POST /api/runs/{run_id}/run-for-real", path_parameters={"run_id": dry})
    for action in ("pause", "resume", "cancel"):
        check(f"POST /api/runs/{{run_id}}/{action}", path_parameters={"run_id": real["id"]})

    assert fresh_run(real["id"]).status in ("cancelling", "cancelled")


def test_fuzzed_requests_without_the_token_on_a_closed_api_change_nothing(
    closed_app: Flask, db: t.Any
) -> None:
    add_run(engine_of(closed_app), "ConcurrentCountTask", "paused", arguments={"group": 1})
    schema = schemathesis.openapi.from_wsgi(API + "/openapi.json", closed_app, headers=AUTH)
    refused: set[int] = set()
    wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}

    for operation in [result.ok() for result in schema.get_all_operations()]:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES // 2,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: t.Any) -> None:
            for headers in ({}, wrong):
                response = case.call(headers=headers, environ_base=AWAY)
                refused.add(response.status_code)
                case.validate_response(response, checks=[not_a_server_error])

        fuzz()

    db.session.remove()
    assert refused <= {401, 403}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0


def test_a_form_part_with_an_unreadable_name_is_a_bad_request(api_app: Flask) -> None:
    """Found by Schemathesis: werkzeug names a part whose name holds a line break None."""
    web = Dashboard(api_app)
    form = {"line\nbreak": "x"}

    by_api = call(
        web.client, "POST", "/tasks/ListTask/runs", data=form, content_type="multipart/form-data"
    )
    by_page = web.client.post(
        "/maintenance_tasks/tasks/ListTask/runs",
        data=form,
        content_type="multipart/form-data",
        headers={"X-CSRFToken": web.token()},
    )

    assert (by_api.status_code, body(by_api)["code"]) == (400, "bad_request")
    assert by_page.status_code == 303  # the run started; the unknown part is ignored


def test_a_run_started_at_a_set_time_through_the_api_is_scheduled(client: t.Any) -> None:
    from datetime import datetime, timedelta, timezone

    when = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    response = call(client, "POST", "/tasks/ListTask/runs", json={"at": when.isoformat()})
    assert response.status_code == 201, response.get_data(as_text=True)
    run = body(response)
    assert run["status"] == "scheduled"
    assert datetime.fromisoformat(run["scheduled_at"]) == when
    assert events(run["id"])[0][2] == "api"
