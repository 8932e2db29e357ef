"""The dashboard's half of failures as data: run cards, the failures page, the CSV
download, the "Retry failed items" button and the start form's "On failure" fields.

Runs that fail for real go through Redis and an RQ worker (``drain``); pages of
many failures are written straight into the ledger, as a worker would leave them.
"""

from __future__ import annotations

import csv
import io
import re
import typing as t
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks import ledger
from flask_maintenance_tasks.models import Event, Run, failures_table, runs_table
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, text
from tests.support.records import fresh_run, seed_items, trail
from tests.support.workers import drain
from tests.testapp import Item

SKIP = "SkipBadItemsTask"
TOKEN = "tok-3b1f-very-secret"


@pytest.fixture
def web(app: Flask) -> Dashboard:
    return Dashboard(app)


def make_bad(db: t.Any, *ids: int) -> None:
    db.session.execute(sa.update(Item).where(Item.id.in_(ids)).values(title="bad"))
    db.session.commit()


def fix_all(db: t.Any) -> None:
    db.session.execute(sa.update(Item).where(Item.title == "bad").values(title="fixed"))
    db.session.commit()


def failing_run(app: Flask, db: t.Any, mtasks: t.Any, bad: t.Sequence[int] = (3, 5, 7, 9)) -> int:
    """A finished run of SkipBadItemsTask over ten items, ``bad`` of them failing; its id."""
    seed_items(10)
    make_bad(db, *bad)
    run = mtasks.run(SKIP, {"token": TOKEN})
    drain(app)
    return int(run.id)


def ledger_rows(engine: sa.Engine, run_id: int, rows: list[dict[str, t.Any]]) -> None:
    """Failures of ``run_id`` written straight into the ledger (and counted on the run)."""
    now = datetime.now(timezone.utc)
    values = [
        {
            "run_id": run_id,
            "item_key": n,
            "position": None,
            "item": {"id": n},
            "error_class": "BadItem",
            "message": f"failure {n}",
            "backtrace": ["line 1", "line 2"],
            "attempt": 1,
            "status": "unresolved",
            "created_at": now,
            **row,
        }
        for n, row in enumerate(rows, start=1)
    ]
    with engine.begin() as connection:
        connection.execute(failures_table.insert(), values)
        connection.execute(
            runs_table.update()
            .where(runs_table.c.id == run_id)
            .values(failure_count=runs_table.c.failure_count + len(rows))
        )


def counts(engine: sa.Engine) -> tuple[int, int, int]:
    """Runs, events and failures in the tables."""
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            int(connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (runs_table, Event.__table__, failures_table)
        )


def failure_ids(page: str) -> list[int]:
    return [
        int(n) for n in re.findall(r'<article class="card failure[^"]*" id="failure-(\d+)"', page)
    ]


# -- the run card ------------------------------------------------------------------


def test_the_card_shows_the_policy_the_newest_failures_and_their_links(
    app: Flask, web: Dashboard, db: t.Any, mtasks: t.Any
) -> None:
    run_id = failing_run(app, db, mtasks)

    page = text(web.get(f"/tasks/{SKIP}"))

    card = page[page.index(f'id="run-{run_id}"') :]
    assert "<dt>On failure</dt>" in card and '<dd class="run-policy">skip</dd>' in card
    assert "Failed items: 4" in card
    shown = re.findall(r'data-failure-id="(\d+)"', card)
    assert len(shown) == 3  # the newest three, newest first
    assert "item 9 is bad [FILTERED]" in card and "item 3 is bad" not in card
    assert "BadItem" in card and "&#34;class&#34;: &#34;Item&#34;" in card
    assert f'href="/maintenance_tasks/runs/{run_id}/failures">All 4 failures</a>' in card
    assert f'href="/maintenance_tasks/runs/{run_id}/failures.csv" download>' in card
    assert f'id="run-{run_id}-retry-failures"' in card
    assert TOKEN not in page


def test_a_card_without_failures_shows_none_of_it(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask")
    drain(app)

    page = text(web.get("/tasks/CountItemsTask"))

    assert f'id="run-{run.id}"' in page
    assert "On failure" not in page.split('id="task-runs"')[1]
    assert "Failed items" not in page and "retry-failures" not in page


def test_failure_text_is_escaped_on_the_card_and_the_page(web: Dashboard, db: t.Any) -> None:
    hostile = "<script>alert(1)</script>{{ 7*7 }}"
    run_id = add_run(db.engine, SKIP, "succeeded", error_policy="skip")
    ledger_rows(
        db.engine,
        run_id,
        [{"error_class": hostile, "message": hostile, "item_key": hostile, "item": [hostile]}],
    )

    pages = [
        text(web.get(f"/tasks/{SKIP}")),
        text(web.get(f"/runs/{run_id}/failures")),
        text(web.get(f"/tasks/{SKIP}", htmx=True)),
    ]

    for page in pages:
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- the failures page ----------------------------------------------------------------


def test_the_failures_page_pages_by_id_and_groups_by_class(web: Dashboard, db: t.Any) -> None:
    run_id = add_run(db.engine, SKIP, "succeeded", error_policy="skip", max_failures=500)
    rows = [{"error_class": "BadItem" if n % 3 else "KeyError"} for n in range(120)]
    rows[0]["status"] = "resolved"
    ledger_rows(db.engine, run_id, rows)

    first = text(web.get(f"/runs/{run_id}/failures"))
    ids = failure_ids(first)
    after = re.search(r'href="[^"]*after=(\d+)[^"]*" rel="next"', first)
    assert after and int(after.group(1)) == ids[-1]
    second = text(web.get(f"/runs/{run_id}/failures?after={ids[-1]}"))
    third_after = failure_ids(second)[-1]
    third = text(web.get(f"/runs/{run_id}/failures?after={third_after}"))
    only = text(web.get(f"/runs/{run_id}/failures?class=KeyError"))
    resolved = text(web.get(f"/runs/{run_id}/failures?status=resolved"))

    assert len(ids) == ledger.PAGE_SIZE and ids == sorted(ids)
    assert len(failure_ids(second)) == 50 and failure_ids(second)[0] > ids[-1]
    assert len(failure_ids(third)) == 20 and 'rel="next"' not in third
    assert 'id="failures-total">120<' in first and 'id="failures-unresolved">119<' in first
    assert "skip, at most 500 failures" in first
    # Counts by class, most frequent first, each a filter link.
    assert re.search(r"BadItem</a></td>\s*<td>80</td>\s*<td>80</td>", first)
    assert re.search(r"KeyError</a></td>\s*<td>40</td>\s*<td>39</td>", first)
    assert first.index(">BadItem</a>") < first.index(">KeyError</a>")
    assert f'href="/maintenance_tasks/runs/{run_id}/failures?class=KeyError"' in first
    assert len(failure_ids(only)) == 40 and "<strong>BadItem</strong>" not in only
    assert failure_ids(resolved) == [ids[0]]
    assert "<summary>Backtrace</summary>" in first and "line 1\nline 2" in first
    assert 'id="retry-failures"' in first


def test_the_failures_page_says_which_retry_resolved_an_item(web: Dashboard, db: t.Any) -> None:
    run_id = add_run(db.engine, SKIP, "succeeded")
    retry_id = add_run(db.engine, SKIP, "succeeded", retry_of_id=run_id)
    ledger_rows(
        db.engine,
        run_id,
        [
            {"status": "resolved", "retried_by_id": retry_id},
            {"status": "failed_again", "retried_by_id": retry_id},
        ],
    )

    page = text(web.get(f"/runs/{run_id}/failures"))
    retry_page = text(web.get(f"/runs/{retry_id}/failures"))

    assert (
        f'<dt>Resolved by</dt><dd><a href="/maintenance_tasks/tasks/{SKIP}#run-{retry_id}">' in page
    )
    assert "<dt>Failed again in</dt>" in page
    assert "<dt>Retried in</dt>" in page
    assert f'href="/maintenance_tasks/runs/{run_id}/failures">#{run_id}</a>' in retry_page


@pytest.mark.parametrize(
    "query",
    [
        "after=-1",
        "after=abc",
        "after=1.5",
        "after=" + "9" * 25,
        "after=" + "9" * 19,  # above the largest id: SQLite cannot compare with it
        "after=%EF%BC%91",  # a full-width digit
        "status=nope",
        "status=%00",
        "class=a%00b",
        "class=" + "x" * 300,
    ],
)
def test_bad_failure_queries_are_refused_with_400(web: Dashboard, db: t.Any, query: str) -> None:
    run_id = add_run(db.engine, SKIP, "succeeded")

    page = web.get(f"/runs/{run_id}/failures?{query}")
    download = web.get(f"/runs/{run_id}/failures.csv?{query}")

    assert (page.status_code, download.status_code) == (400, 400)


def test_failures_of_runs_one_may_not_view_are_not_found(
    app_env: dict[str, str], db: t.Any
) -> None:
    def hide_skip(action: str, task_name: str | None, run: t.Any) -> bool:
        return task_name != SKIP

    with make_app(authorize=hide_skip) as app:
        web = Dashboard(app)
        hidden = add_run(db.engine, SKIP, "succeeded")
        ledger_rows(db.engine, hidden, [{"message": "hidden failure"}])
        before = counts(db.engine)

        answers = [
            web.get(f"/runs/{hidden}/failures"),
            web.get(f"/runs/{hidden}/failures.csv"),
            web.get(f"/runs/{hidden + 100}/failures"),
            web.post(f"/runs/{hidden}/retry-failures"),
            web.post(f"/runs/{hidden + 100}/retry-failures"),
        ]

        assert [a.status_code for a in answers] == [404] * 5
        assert f"There is no run #{hidden}." in text(answers[0])
        assert f"There is no run #{hidden}." in text(answers[3])
        assert all("hidden failure" not in text(a) for a in answers)
        assert counts(db.engine) == before


# -- the CSV download ----------------------------------------------------------------


def test_the_csv_holds_every_failure_and_defuses_formulas(web: Dashboard, db: t.Any) -> None:
    run_id = add_run(db.engine, SKIP, "succeeded")
    rows: list[dict[str, t.Any]] = [{} for _ in range(1_203)]
    rows[0] = {"message": '=HYPERLINK("http://evil")', "item_key": -1, "item": {"a": "é"}}
    rows[1] = {"message": "+1", "error_class": "@Err"}
    rows[2] = {"message": "\tx", "status": "resolved"}
    rows[3] = {"message": "\rx"}
    rows[4] = {"message": "plain, with a comma\nand a line"}
    ledger_rows(db.engine, run_id, rows)

    response = web.get(f"/runs/{run_id}/failures.csv")
    table = list(csv.reader(io.StringIO(text(response))))  # read before the next request
    filtered = web.get(f"/runs/{run_id}/failures.csv?class=@Err")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="run-{run_id}-failures.csv"'
    assert table[0] == [
        "id",
        "item_key",
        "item",
        "error_class",
        "message",
        "attempt",
        "status",
        "retried_by",
        "created_at",
    ]
    body = table[1:]
    assert len(body) == 1_203
    ids = [int(row[0]) for row in body]
    assert ids == sorted(ids) and len(set(ids)) == 1_203
    assert body[0][1:5] == ["'-1", '{"a": "é"}', "BadItem", '\'=HYPERLINK("http://evil")']
    assert body[1][3:5] == ["'@Err", "'+1"]
    assert body[2][4] == "'\tx" and body[2][6] == "resolved"
    assert body[3][4] == "'\rx"
    assert body[4][4] == "plain, with a comma\nand a line"
    assert body[5][1] == "6" and body[5][5] == "1" and body[5][7] == ""
    only = list(csv.reader(io.StringIO(text(filtered))))
    assert len(only) == 2 and only[1][3] == "'@Err"


# -- the retry button -----------------------------------------------------------------


def test_retry_failed_items_starts_a_linked_run_that_resolves_them(
    app: Flask, web: Dashboard, db: t.Any, mtasks: t.Any
) -> None:
    run_id = failing_run(app, db, mtasks)
    fix_all(db)

    response = web.post(f"/runs/{run_id}/retry-failures")

    retry = db.session.scalars(sa.select(Run).where(Run.retry_of_id == run_id)).one()
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/tasks/{SKIP}#run-{retry.id}")
    assert ("failures_retried", "done") in [(a, o) for a, o, _ in trail(run_id) + trail(retry.id)]
    page = text(web.get(f"/tasks/{SKIP}"))
    assert f"Run #{retry.id} retries the failed items of run #{run_id}" in page
    drain(app)
    db.session.remove()
    assert fresh_run(retry.id).status == "succeeded"
    page = text(web.get(f"/tasks/{SKIP}"))
    retry_card = page[page.index(f'id="run-{retry.id}"') : page.index(f'id="run-{run_id}"')]
    old_card = page[page.index(f'id="run-{run_id}"') :]
    assert (
        f'class="retry-of" href="/maintenance_tasks/tasks/{SKIP}#run-{run_id}">#{run_id}<'
        in retry_card
    )
    assert (
        f'<dd class="retried-in"><a href="/maintenance_tasks/tasks/{SKIP}#run-{retry.id}">'
        in old_card
    )
    data = web.get(f"/runs/{run_id}.json").get_json()
    assert data["retries"] == [retry.id]
    assert data["failures_url"] == f"/maintenance_tasks/runs/{run_id}/failures"
    assert data["failures_csv_url"] == f"/maintenance_tasks/runs/{run_id}/failures.csv"
    assert web.get(f"/runs/{retry.id}.json").get_json()["retry_of"] == run_id
    resolved = text(web.get(f"/runs/{run_id}/failures?status=resolved"))
    assert len(failure_ids(resolved)) == 4


def test_retry_through_htmx_answers_the_task_region_and_its_message(
    app: Flask, web: Dashboard, db: t.Any, mtasks: t.Any
) -> None:
    run_id = failing_run(app, db, mtasks)

    response = web.post(f"/runs/{run_id}/retry-failures", htmx=True)

    page = text(response)
    assert response.status_code == 200
    assert page.lstrip().startswith('<div id="task-runs"')
    assert "retries the failed items of run" in page and 'hx-swap-oob="true"' in page


def test_retry_refusals_are_messages_and_start_nothing(
    app: Flask, web: Dashboard, db: t.Any, mtasks: t.Any
) -> None:
    seed_items(3)
    clean = mtasks.run(SKIP)
    drain(app)
    active = add_run(db.engine, SKIP, "running", failure_count=2)
    resolved = add_run(db.engine, SKIP, "succeeded")
    ledger_rows(db.engine, resolved, [{"status": "resolved"}])
    runs_before = counts(db.engine)[0]

    answers = {
        run_id: web.post(f"/runs/{run_id}/retry-failures")
        for run_id in (clean.id, active, resolved)
    }
    htmx = web.post(f"/runs/{resolved}/retry-failures", htmx=True)
    page = " ".join(text(answer) for answer in answers.values())

    assert {a.status_code for a in answers.values()} == {409}
    assert counts(db.engine)[0] == runs_before
    assert (
        f"Cannot retry the failures of run #{clean.id}: it has no unresolved failed items." in page
    )
    assert f"Cannot retry the failures of run #{active}: it is running" in page
    assert f"Cannot retry the failures of run #{resolved}" in page
    assert htmx.status_code == 409 and "message-error" in text(htmx)
    assert ("failures_retried", "refused") in [(a, o) for a, o, _ in trail(clean.id)]
    # The button shows only on a stopped run with failures.
    assert f'id="run-{active}-retry-failures"' not in page
    assert f'id="run-{clean.id}-retry-failures"' not in page


@pytest.mark.parametrize("token", [None, "forged", "other"])
def test_retry_without_this_sessions_csrf_token_is_refused_and_writes_nothing(
    app: Flask, web: Dashboard, db: t.Any, mtasks: t.Any, token: str | None
) -> None:
    run_id = failing_run(app, db, mtasks)
    if token == "other":
        token = Dashboard(app).token()  # another session's
    before = counts(db.engine)

    response = web.post(f"/runs/{run_id}/retry-failures", token=token)

    assert response.status_code == 400
    assert counts(db.engine) == before


def test_retry_needs_authorize_to_allow_retry_failures(
    app_env: dict[str, str], db: t.Any, mtasks: t.Any
) -> None:
    asked: list[tuple[str, str | None, int | None]] = []

    def no_retries(action: str, task_name: str | None, run: t.Any) -> bool:
        asked.append((action, task_name, run.id if run is not None else None))
        return action != "retry_failures" or task_name is None

    with make_app(authorize=no_retries) as app:
        web = Dashboard(app)
        run_id = failing_run(app, db, mtasks)
        before = counts(db.engine)

        page = text(web.get(f"/tasks/{SKIP}"))
        failures = text(web.get(f"/runs/{run_id}/failures"))
        response = web.post(f"/runs/{run_id}/retry-failures")

        assert response.status_code == 403
        assert f"You are not allowed to retry_failures {SKIP}." in text(response)
        assert "retry-failures" not in page and 'id="retry-failures"' not in failures
        assert ("retry_failures", SKIP, run_id) in asked
        assert counts(db.engine) == before


# -- the start form --------------------------------------------------------------------


def test_the_start_form_overrides_the_error_policy(app: Flask, web: Dashboard, db: t.Any) -> None:
    form = text(web.get(f"/tasks/{SKIP}"))
    answers = []
    for fields in (
        {"_error_policy": "stop", "_max_failures": "3", "_max_failure_rate": "5%"},
        {"_max_failure_rate": " 2.5 "},
        {"_error_policy": ""},
    ):
        answers.append(web.post(f"/tasks/{SKIP}/runs", fields).status_code)
        drain(app)  # one run of the task at a time

    assert "<legend>On failure</legend>" in form
    assert '<option value="" selected>The task\'s (skip)</option>' in form
    assert 'name="_max_failures"' in form and 'name="_max_failure_rate"' in form
    assert answers == [303, 303, 303]
    db.session.remove()
    runs = list(db.session.scalars(sa.select(Run).where(Run.task_name == SKIP).order_by(Run.id)))
    assert [(r.error_policy, r.max_failures, r.max_failure_rate) for r in runs] == [
        ("stop", 3, 0.05),
        ("skip", None, 0.025),
        ("skip", None, None),
    ]
    page = text(web.get(f"/tasks/{SKIP}"))
    assert "stop, at most 3 failures or 5%" in page


def test_invalid_policy_fields_redisplay_the_form_with_422_and_write_nothing(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    before = counts(db.engine)

    response = web.post(
        f"/tasks/{SKIP}/runs",
        {"_error_policy": "<b>maybe</b>", "_max_failures": "-1", "_max_failure_rate": "500"},
    )
    with_bad_parameter = web.post("/tasks/ParamsTask/runs", {"_max_failures": "x"})

    page = text(response)
    assert response.status_code == 422
    assert "The run was not started: correct the fields below." in page
    assert "Unknown error policy" in page and "<b>maybe" not in page
    assert 'id="policy_max_failures-error">Must be a whole number, 0 or more.<' in page
    assert "Enter a percentage above 0 and at most 100" in page
    assert 'value="500"' in page and 'value="-1"' in page
    assert with_bad_parameter.status_code == 422
    other = text(with_bad_parameter)
    assert 'id="policy_max_failures-error"' in other and "field-error" in other
    assert counts(db.engine) == before
