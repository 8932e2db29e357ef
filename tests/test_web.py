"""The dashboard's pages, fragments and actions, through Flask's test client."""

from __future__ import annotations

import re
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from flask import Flask, request

from flask_maintenance_tasks import Run, formatting
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, field_tag, insert_runs, text
from tests.support.records import fresh_run, seed_items
from tests.support.workers import drain
from tests.testapp.maintenance.web_tasks import HOSTILE

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


@pytest.fixture
def web(app: Flask) -> Dashboard:
    return Dashboard(app)


def runs_of(db: SQLAlchemy, name: str) -> list[Run]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Run).where(Run.task_name == name).order_by(Run.id)))


def days_ago(days: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days)


# -- index ------------------------------------------------------------------


def test_index_lists_tasks_without_runs_as_new(web: Dashboard) -> None:
    response = web.get("/")

    page = text(response)
    assert response.status_code == 200
    assert "New tasks" in page
    assert 'href="/maintenance_tasks/tasks/CountItemsTask"' in page
    assert 'href="/maintenance_tasks/tasks/nested.FixInvoicesTask"' in page
    assert "Active runs" not in page


@pytest.mark.both_databases  # the latest run of each task: a recursive CTE
def test_index_shows_an_active_run_and_polls_until_it_ends(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask")

    during = text(web.get("/"))
    drain(app)
    after = text(web.get("/"))

    assert "Active runs" in during and f'id="run-{run.id}"' in during
    assert "data-poll" in during and 'hx-trigger="every 2000ms, mtasks-refresh"' in during
    assert "Active runs" not in after and "Completed tasks" in after
    assert "data-poll" not in after
    assert "Processed 3 out of 3 items (100%)." in after


def test_index_fragment_is_the_refreshed_region_only(web: Dashboard, mtasks: t.Any) -> None:
    mtasks.run("ListTask")

    fragment = text(web.get("/", htmx=True))

    assert fragment.lstrip().startswith('<div id="tasks-region"')
    assert "<html" not in fragment and "<form" not in fragment
    assert "data-poll" in fragment


def test_index_filter_keeps_matching_task_names(web: Dashboard) -> None:
    page = text(web.get("/?q=count"))

    assert ">CountItemsTask<" in page and ">CountByGroupTask<" in page
    assert ">ListTask<" not in page
    assert 'value="count"' in page


@pytest.mark.both_databases  # the latest run of each task: a recursive CTE
def test_index_flags_a_task_whose_last_success_is_old(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    ended = days_ago(40)
    add_run(db.engine, "ListTask", "succeeded", ended_at=ended, created_at=ended)
    add_run(db.engine, "OnceTask", "succeeded", ended_at=days_ago(1), created_at=days_ago(1))

    page = text(web.get("/"))

    listed = page.split('data-task-name="ListTask"')[1].split('data-task-name="')[0]
    once = page.split('data-task-name="OnceTask"')[1].split('data-task-name="')[0]
    assert "Consider deleting it" in listed
    assert "Consider deleting it" not in once


# -- task page: the form ----------------------------------------------------


def test_task_page_generates_a_field_for_each_parameter_kind(web: Dashboard) -> None:
    params = text(web.get("/tasks/ParamsTask"))
    kinds = text(web.get("/tasks/WebFormKindsTask"))

    assert 'type="text"' in field_tag(params, "content")
    assert re.search(r'for="param-content"><code>content</code> <span class="required">', params)
    assert 'type="number"' in field_tag(params, "limit") and 'value="10"' in field_tag(
        params, "limit"
    )
    assert field_tag(params, "mode").startswith("<select")
    assert '<option value="careful" selected>careful</option>' in params
    assert '<option value="red" selected>red</option>' in params
    assert 'type="checkbox"' in field_tag(params, "enabled")
    assert "checked" not in field_tag(params, "enabled")
    assert 'type="date"' in field_tag(params, "since")
    assert 'type="password"' in field_tag(params, "api_token")
    assert 'type="password"' in field_tag(params, "password")
    assert 'step="any"' in field_tag(kinds, "ratio")
    assert 'type="datetime-local"' in field_tag(kinds, "at") and "Timezone: UTC." in kinds
    assert 'type="time"' in field_tag(kinds, "at_time")
    assert field_tag(kinds, "strict").startswith("<select")
    assert (
        field_tag(kinds, "level").startswith("<select") and '<option value="2" selected>' in kinds
    )
    assert field_tag(kinds, "limits").startswith("<textarea")
    assert "What this run is for." in kinds
    for name in ("content", "limit", "mode", "enabled", "since", "api_token", "ratio", "tags"):
        page = kinds if name in ("ratio", "tags") else params
        assert f'<label for="param-{name}"' in page or f'for="param-{name}">' in page


def test_task_page_prefills_the_form_from_the_query_string_but_never_a_secret(
    web: Dashboard,
) -> None:
    page = text(
        web.get("/tasks/ParamsTask?content=hello&limit=7&enabled=true&mode=fast&api_token=leak1")
    )

    assert 'value="hello"' in field_tag(page, "content")
    assert 'value="7"' in field_tag(page, "limit")
    assert "checked" in field_tag(page, "enabled")
    assert '<option value="fast" selected>fast</option>' in page
    assert "leak1" not in page


def test_task_page_shows_the_highlighted_source_of_the_task(web: Dashboard) -> None:
    page = text(web.get("/tasks/CountItemsTask"))

    assert "Source code" in page and "counting.py" in page
    assert '<span class="k">class</span>' in page
    assert '<span class="nc">CountItemsTask</span>' in page


# -- starting a run ---------------------------------------------------------


def test_starting_a_run_from_the_form_stores_its_arguments_and_redirects(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    response = web.post(
        "/tasks/ParamsTask/runs",
        {
            "content": "from the form",
            "limit": "3",
            "mode": "fast",
            "enabled": "true",
            "ids": "1, 2,3",
            "colour": "blue",
            "since": "2024-05-01",
            "api_token": "tok",
        },
    )

    [run] = runs_of(db, "ParamsTask")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/maintenance_tasks/tasks/ParamsTask#run-{run.id}"
    assert run.status == "enqueued"
    assert run.arguments == {
        "content": "from the form",
        "mode": "fast",
        "limit": 3,
        "ids": [1, 2, 3],
        "enabled": True,
        "colour": "blue",
        "since": "2024-05-01",
        "api_token": "tok",
        "password": None,
    }
    page = text(web.get("/tasks/ParamsTask"))
    assert f"Run #{run.id} of ParamsTask is enqueued." in page


def test_a_run_started_from_the_dashboard_records_the_metadata(
    app_env: dict[str, str],
) -> None:
    with make_app(metadata=lambda: {"operator": request.headers.get("X-Operator")}) as app:
        web = Dashboard(app)
        web.post("/tasks/ListTask/runs", headers={"X-Operator": "ada@example.com"})

        [run] = runs_of(app.extensions["sqlalchemy"], "ListTask")
        assert run.metadata_ == {"operator": "ada@example.com"}
        page = text(web.get("/tasks/ListTask"))
        assert "Metadata" in page and "ada@example.com" in page


def test_invalid_parameters_keep_the_typed_values_and_show_the_errors(
    web: Dashboard, db: t.Any
) -> None:
    response = web.post(
        "/tasks/ParamsTask/runs",
        {
            "content": "",
            "limit": "many",
            "mode": "fast",
            "ids": "1, x",
            "since": "2024-02-03",
            "api_token": "typed-secret",
            "password": "hunter2",
        },
    )

    page = text(response)
    assert response.status_code == 422
    assert runs_of(db, "ParamsTask") == []
    assert "The run was not started" in page
    assert 'value="many"' in field_tag(page, "limit")
    assert 'aria-invalid="true"' in field_tag(page, "limit")
    assert "valid integer" in page
    assert "Field required" in page
    assert 'value="1, x"' in field_tag(page, "ids")
    assert 'value="2024-02-03"' in field_tag(page, "since")
    assert '<option value="fast" selected>fast</option>' in page
    assert "checked" not in field_tag(page, "enabled")
    assert "typed-secret" not in page and "hunter2" not in page


def test_a_second_run_of_a_running_task_is_refused_with_the_reason(
    web: Dashboard, mtasks: t.Any, db: t.Any
) -> None:
    first = mtasks.run("CountItemsTask")

    response = web.post("/tasks/CountItemsTask/runs", {"sleep": "0.5"})

    assert response.status_code == 409
    assert f"CountItemsTask already has an active run (run #{first.id})" in text(response)
    assert 'value="0.5"' in field_tag(text(response), "sleep")
    assert len(runs_of(db, "CountItemsTask")) == 1


# -- controlling runs -------------------------------------------------------


def test_pause_resume_and_cancel_with_plain_forms(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    seed_items(5)
    run = mtasks.run("CountItemsTask")
    base = f"/tasks/CountItemsTask/runs/{run.id}"

    paused = web.post(f"{base}/pause")
    assert paused.status_code == 303
    assert paused.headers["Location"].endswith(f"/tasks/CountItemsTask#run-{run.id}")
    assert fresh_run(run.id).status == "pausing"
    assert f"Run #{run.id} will pause at its next item." in text(web.get("/tasks/CountItemsTask"))
    drain(app)
    assert fresh_run(run.id).status == "paused"

    web.post(f"{base}/resume")
    assert fresh_run(run.id).status == "enqueued"
    web.post(f"{base}/cancel")
    assert fresh_run(run.id).status == "cancelling"
    drain(app)

    assert fresh_run(run.id).status == "cancelled"
    page = text(web.get("/tasks/CountItemsTask"))
    assert f'id="run-{run.id}"' in page and "Cancelled" in page


def test_an_action_through_htmx_returns_the_runs_region_and_its_message(
    web: Dashboard, mtasks: t.Any
) -> None:
    run = mtasks.run("CountItemsTask")

    response = web.post(f"/tasks/CountItemsTask/runs/{run.id}/pause", htmx=True)

    body = text(response)
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="task-runs"')
    assert '<div id="messages" class="messages" hx-swap-oob="true">' in body
    assert f"Run #{run.id} will pause at its next item." in body
    assert "Pausing…" in body
    assert fresh_run(run.id).status == "pausing"


def test_an_action_the_status_forbids_shows_why_and_changes_nothing(
    web: Dashboard, db: t.Any
) -> None:
    run_id = add_run(db.engine, "ListTask", "succeeded", ended_at=days_ago(0))
    before = fresh_run(run_id)

    response = web.post(f"/tasks/ListTask/runs/{run_id}/pause")

    after = fresh_run(run_id)
    # 409 Conflict, as the API answers, with the task page saying why (no redirect).
    assert response.status_code == 409
    assert "Retry-After" not in response.headers
    assert "Cannot pause a succeeded run." in text(response)
    through_htmx = web.post(f"/tasks/ListTask/runs/{run_id}/pause", htmx=True)
    assert through_htmx.status_code == 409
    assert "Cannot pause a succeeded run." in text(through_htmx)
    assert (after.status, after.lock_version, after.updated_at) == (
        before.status,
        before.lock_version,
        before.updated_at,
    )


def test_a_stuck_run_offers_force_pause_and_force_cancel(web: Dashboard, db: t.Any) -> None:
    run_id = add_run(db.engine, "ListTask", "pausing", updated_at=days_ago(1))

    page = text(web.get("/tasks/ListTask"))
    web.post(f"/tasks/ListTask/runs/{run_id}/cancel")

    assert ">Stuck<" in page
    assert f'id="run-{run_id}-pause" class="btn btn-force"' in page and ">Force pause<" in page
    assert ">Force cancel<" in page
    assert fresh_run(run_id).status == "cancelled"


@pytest.mark.parametrize(
    ("status", "buttons"),
    [
        ("enqueued", ["pause", "cancel"]),
        ("running", ["pause", "cancel"]),
        ("interrupted", ["pause", "cancel"]),
        ("pausing", ["cancel"]),
        ("paused", ["resume", "cancel"]),
        ("cancelling", []),
        ("errored", ["resume"]),
        ("succeeded", []),
        ("cancelled", []),
    ],
)
def test_a_run_card_offers_the_actions_its_status_allows(
    web: Dashboard, db: t.Any, status: str, buttons: list[str]
) -> None:
    run_id = add_run(db.engine, "ListTask", status)

    page = text(web.get("/tasks/ListTask"))

    found = re.findall(rf'id="run-{run_id}-(pause|resume|cancel)"', page)
    assert found == buttons


def test_a_deleted_tasks_runs_stay_visible_and_cancellable(web: Dashboard, db: t.Any) -> None:
    run_id = add_run(db.engine, "GoneTask", "paused", arguments={"note": "old"})

    page = text(web.get("/tasks/GoneTask"))
    index = text(web.get("/"))
    response = web.post(f"/tasks/GoneTask/runs/{run_id}/cancel")

    assert "This task no longer exists in the code." in page
    assert '<form method="post" action="/maintenance_tasks/tasks/GoneTask/runs"' not in page
    resume = re.search(rf'<button[^>]*id="run-{run_id}-resume"[^>]*>', page)
    assert resume and "disabled" in resume.group(0)
    cancel = re.search(rf'<button[^>]*id="run-{run_id}-cancel"[^>]*>', page)
    assert cancel and "disabled" not in cancel.group(0)
    assert f'id="run-{run_id}"' in index
    assert response.status_code == 303
    assert fresh_run(run_id).status == "cancelled"


def test_unknown_tasks_and_runs_are_not_found(web: Dashboard, db: t.Any) -> None:
    other = add_run(db.engine, "OnceTask", "paused")

    assert web.get("/tasks/NoSuchTask").status_code == 404
    assert web.post("/tasks/NoSuchTask/runs").status_code == 404
    assert web.post("/tasks/ListTask/runs/999999/pause").status_code == 404
    assert web.post(f"/tasks/ListTask/runs/{other}/cancel").status_code == 404
    missing = web.get("/runs/999999.json")
    assert missing.status_code == 404 and missing.is_json
    assert fresh_run(other).status == "paused"


@pytest.mark.both_databases  # PostgreSQL refuses a NUL in text, even in a query
def test_a_task_name_holding_a_nul_character_is_not_found(web: Dashboard) -> None:
    assert web.get("/tasks/ListTask%00").status_code == 404
    assert web.get("/tasks/%00?cursor=5").status_code == 404


# -- run cards ----------------------------------------------------------------


def test_a_run_card_shows_progress_throughput_and_time_left(web: Dashboard, db: t.Any) -> None:
    run_id = add_run(
        db.engine,
        "CountItemsTask",
        "running",
        tick_count=4000,
        tick_total=7000,
        time_running=200.0,
        started_at=days_ago(0.01),
        arguments={"sleep": 0.0},
        interruption_reason="time_slice",
    )

    page = text(web.get("/tasks/CountItemsTask"))

    assert f'<progress id="run-{run_id}-progress" max="7000" value="4000"' in page
    assert "Processed 4,000 out of 7,000 items (57%)." in page
    assert "Running for 3m 20s; about 2m 30s remaining." in page
    assert "20.0 items/s" in page
    assert "time slice" in page


def test_an_errored_run_shows_its_error_backtrace_and_failing_item(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    run = mtasks.run("WebHostileErrorTask", {"message": "the second item is bad"})
    drain(app)

    page = text(web.get("/tasks/WebHostileErrorTask"))

    assert fresh_run(run.id).status == "errored"
    assert "<strong>ValueError</strong>" in page
    assert "the second item is bad" in page
    assert "Backtrace" in page and "web_tasks.py" in page
    assert "While processing: <code>2</code>" in page
    assert f'id="run-{run.id}-resume"' in page


def test_run_again_link_carries_the_arguments_but_not_the_secrets(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    mtasks.run("ParamsTask", {"content": "again", "limit": 4, "ids": [5, 6], "api_token": "tok-9"})
    drain(app)

    page = text(web.get("/tasks/ParamsTask"))

    link = re.search(r'href="([^"]+)">Run again with these parameters', page)
    assert link
    url = link.group(1).replace("&amp;", "&")
    assert "content=again" in url and "limit=4" in url and "ids=5,+6" in url.replace("%2C", ",")
    assert "tok-9" not in url and "api_token" not in url
    prefilled = text(web.client.get(url))
    assert 'value="again"' in field_tag(prefilled, "content")
    assert 'value="5, 6"' in field_tag(prefilled, "ids")


def test_history_is_paginated_by_keyset(web: Dashboard, db: t.Any) -> None:
    insert_runs(db.engine, 45, ["ListTask"])
    ids = [r.id for r in runs_of(db, "ListTask")][::-1]

    first = text(web.get("/tasks/ListTask"))
    older = re.search(r'href="/maintenance_tasks/tasks/ListTask\?cursor=(\d+)" rel="next"', first)
    assert older and int(older.group(1)) == ids[19]
    second = text(web.get(f"/tasks/ListTask?cursor={ids[19]}"))
    third = text(web.get(f"/tasks/ListTask?cursor={ids[39]}"))

    def shown(page: str) -> list[int]:
        return [int(n) for n in re.findall(r'<article class="run [^"]*" id="run-(\d+)"', page)]

    assert shown(first) == ids[:20]
    assert shown(second) == ids[20:40]
    assert shown(third) == ids[40:]
    assert 'rel="next"' not in third and "Newest runs" in third


def test_the_task_fragment_polls_only_while_a_run_is_active(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    run = mtasks.run("ListTask")

    during = text(web.get("/tasks/ListTask", htmx=True))
    drain(app)
    after = text(web.get("/tasks/ListTask", htmx=True))

    assert during.lstrip().startswith('<div id="task-runs" class="region" hx-get=')
    assert (
        "data-poll" in during and '<form method="post" action="/maintenance_tasks/tasks/' in during
    )
    assert 'class="run-form"' not in during
    assert after.lstrip().startswith('<div id="task-runs" class="region">')
    assert "data-poll" not in after and f'id="run-{run.id}"' in after


# -- JSON ---------------------------------------------------------------------


def test_run_json_says_what_the_page_and_the_cli_say(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    run = mtasks.run("ParamsTask", {"content": "x", "api_token": "tok-json", "password": "pw"})
    drain(app)

    response = web.get(f"/runs/{run.id}.json")

    data = response.get_json()
    assert response.status_code == 200
    events = data.pop("events")
    assert data.pop("events_omitted") == 0
    assert data.pop("failures_url") == f"/maintenance_tasks/runs/{run.id}/failures"
    assert data.pop("failures_csv_url") == f"/maintenance_tasks/runs/{run.id}/failures.csv"
    assert data.pop("retries") == []
    assert data.pop("partitions") == [] and data.pop("partition_count") == 1
    assert data == formatting.run_as_dict(app, fresh_run(run.id))
    assert [event["action"] for event in events] == ["started", "began", "succeeded"]
    assert data["status"] == "succeeded" and data["progress"] == "Processed 1 out of 1 item (100%)."
    assert data["arguments"]["api_token"] == "[FILTERED]"
    assert data["arguments"]["password"] == "[FILTERED]"
    assert "tok-json" not in response.get_data(as_text=True)


def test_hostile_text_in_arguments_and_errors_is_escaped(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    mtasks.run("WebHostileErrorTask", metadata={"who": HOSTILE})
    drain(app)

    pages = [
        text(web.get("/tasks/WebHostileErrorTask")),
        text(web.get("/")),
        text(web.get("/tasks/WebHostileErrorTask", htmx=True)),
        text(web.get("/tasks/WebHostileErrorTask?message=" + HOSTILE)),
    ]

    for page in pages:
        assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in pages[0]
    assert pages[0].count("&lt;script&gt;") >= 3  # argument, metadata, error message


def test_every_kind_of_field_is_parsed_into_the_arguments(web: Dashboard, db: t.Any) -> None:
    response = web.post(
        "/tasks/WebFormKindsTask/runs",
        {
            "note": "kinds",
            "ratio": "0.25",
            "level": "3",
            "at": "2024-05-01T10:30",
            "at_time": "08:15",
            "strict": "false",
            "tags": "a, b ,,c",
            "limits": '{"x": 1}',
            "credentials": '{"user": "ada", "key": "k-1"}',
        },
    )

    [run] = runs_of(db, "WebFormKindsTask")
    assert response.status_code == 303
    assert run.arguments == {
        "note": "kinds",
        "ratio": 0.25,
        "level": 3,
        "at": "2024-05-01T10:30:00",
        "at_time": "08:15:00",
        "strict": False,
        "tags": ["a", "b", "c"],
        "limits": {"x": 1},
        "credentials": {"user": "ada", "key": "k-1"},
    }


def test_a_field_that_is_not_json_is_reported_with_the_other_mistakes(
    web: Dashboard, db: t.Any
) -> None:
    response = web.post("/tasks/WebFormKindsTask/runs", {"note": "", "limits": "{x: 1"})

    assert response.status_code == 422
    assert "Enter a valid JSON value" in text(response)
    assert 'aria-invalid="true"' in field_tag(text(response), "note")  # told at the same time
    assert 'name="limits"' in text(response) and "{x: 1</textarea>" in text(response)
    assert runs_of(db, "WebFormKindsTask") == []


def test_a_json_number_of_too_many_digits_is_reported_as_invalid_json(
    web: Dashboard, db: t.Any
) -> None:
    too_long = "9" * 5000  # beyond the digits Python converts to an int
    response = web.post(
        "/tasks/WebFormKindsTask/runs", {"note": "n", "limits": f'{{"a": {too_long}}}'}
    )

    assert response.status_code == 422
    assert "Enter a valid JSON value (A number has too many digits)." in text(response)
    assert runs_of(db, "WebFormKindsTask") == []


@pytest.mark.parametrize(
    ("status", "count", "total", "bar"),
    [
        ("running", 4000, 7000, (4000, 7000)),
        ("running", 8000, 7000, (None, 8000)),  # past its total: indeterminate
        ("running", 5, None, (None, 5)),
        ("succeeded", 8000, 7000, (8000, 8000)),
        ("enqueued", 0, None, (None, 1)),
    ],
)
def test_the_progress_bar_is_indeterminate_when_the_total_does_not_hold(
    status: str, count: int, total: int | None, bar: tuple[int | None, int]
) -> None:
    run = Run(task_name="T", status=status, tick_count=count, tick_total=total)

    assert formatting.progress_bar(run) == bar


@pytest.mark.both_databases  # each driver says "no such table" its own way
@pytest.mark.parametrize("path", ["/", "/tasks/ListTask", "/runs", "/runs/1.json"])
def test_without_the_runs_table_a_page_says_how_to_create_it(
    web: Dashboard, db: t.Any, path: str
) -> None:
    db.session.remove()
    db.metadata.drop_all(db.engine)

    response = web.get(path)

    assert response.status_code == 500
    page = text(response)
    assert "The table maintenance_tasks_runs does not exist in " in page
    assert "flask mtasks migrations install" in page and "db.create_all()" in page
    assert "Traceback" not in page
