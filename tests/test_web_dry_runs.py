"""The dashboard's half of dry runs and previews: the "Dry run" button, dry runs marked on
every page, what a dry run would change on its card, "Run for real", and the preview panel.

Dry runs go through Redis and an RQ worker (``drain``); a dry run whose sample holds
hostile values is written as a worker would leave it.
"""

from __future__ import annotations

import hashlib
import re
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks.models import Event, failures_table, runs_table
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, text
from tests.support.records import fresh_run, seed_items
from tests.support.workers import drain
from tests.testapp import Flag, Item

MIXED = "DryRunMixedTask"
ITEMS = "PreviewItemsTask"
SECRET = "tok-9c2e-preview-secret"
HOSTILE = "<script>alert('x')</script> \"quoted\" \x01\x1b end"


@pytest.fixture
def web(app: Flask) -> Dashboard:
    return Dashboard(app)


def seed_mixed(db: t.Any, count: int) -> None:
    seed_items(count)
    db.session.add_all(Flag(name=f"seed-{n}", value="s") for n in range(5, count + 1, 5))
    db.session.commit()


def counts(engine: sa.Engine) -> tuple[int, int, int]:
    """Runs, events and failures in the tables."""
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            int(connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (runs_table, Event.__table__, failures_table)
        )


def checksum(engine: sa.Engine) -> str:
    """Every row of every table, hashed: equal checksums, nothing written."""
    digest = hashlib.sha256()
    with engine.connect() as connection:
        meta = sa.MetaData()
        meta.reflect(bind=connection)
        for name in sorted(meta.tables):
            table = meta.tables[name]
            rows = connection.execute(sa.select(table)).all()
            digest.update(name.encode() + repr(sorted(map(repr, rows))).encode())
    return digest.hexdigest()


def card_of(page: str, run_id: int) -> str:
    start = page.rindex("<article", 0, page.index(f'id="run-{run_id}"'))
    end = page.find("</article>", start)
    return page[start:end]


def dry_run(app: Flask, web: Dashboard, name: str = MIXED, **fields: str) -> int:
    """Press "Dry run" on the task page and let a worker finish it; the run's id."""
    response = web.post(f"/tasks/{name}/runs", {**fields, "_dry_run": "1"})
    assert response.status_code == 303, text(response)
    run_id = int(response.headers["Location"].rsplit("run-", 1)[1])
    drain(app)
    return run_id


# -- the button and the markers ----------------------------------------------------


def test_the_task_page_has_a_dry_run_button_beside_run(web: Dashboard) -> None:
    page = text(web.get(f"/tasks/{MIXED}"))

    form = page[page.index('id="run-form"') : page.index("</form>", page.index('id="run-form"'))]
    assert 'id="run-submit"' in form
    assert re.search(r'<button type="submit" class="btn" id="dry-run-submit" name="_dry_run"', form)
    assert form.index('id="run-submit"') < form.index('id="dry-run-submit"')


def test_dry_run_button_starts_a_dry_run_marked_everywhere_with_what_it_would_change(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    seed_mixed(db, 20)
    response = web.post(f"/tasks/{MIXED}/runs", {"_dry_run": "1"})
    run_id = int(response.headers["Location"].rsplit("run-", 1)[1])
    assert f"Dry run #{run_id} of {MIXED} is enqueued." in text(web.get(f"/tasks/{MIXED}"))
    drain(app)

    run = fresh_run(run_id)
    assert run.dry_run and run.status == "succeeded"
    task_page = text(web.get(f"/tasks/{MIXED}"))
    card = card_of(task_page, run_id)
    index = text(web.get("/"))
    runs = text(web.get("/runs"))
    data = web.get(f"/runs/{run_id}.json").get_json()

    dry_tag = '<span class="tag tag-dry-run" title="Rolled back: this run changes nothing">Dry run'
    assert dry_tag in card and "run-dry" in card
    assert dry_tag in card_of(index, run_id)
    row = runs[runs.index(f'id="runs-row-{run_id}"') :]
    assert dry_tag in row[: row.index("</tr>")]
    assert "What it would change</h3>" in card
    # 20 ORM updates and 2 Core ones (items 7 and 14): rows by statement, as the engine counts
    assert "Would update 22 rows of items: counter, group, title" in card
    assert "Would insert 2 rows of flags" in card and "Would delete 4 rows of flags" in card
    assert "so far" not in card
    assert f'id="run-{run_id}-changes"' in card and "First changes (10)" in card
    assert "&#34;item-1&#34;" in card and "&#34;new-1&#34;" in card
    assert f'id="run-{run_id}-run-for-real"' in card
    assert data["dry_run"] is True and data["changes_summary"][0].startswith("Would ")
    assert data["run_for_real_url"] == f"/maintenance_tasks/runs/{run_id}/run-for-real"
    with db.engine.connect() as connection:
        titles = connection.scalars(sa.select(Item.title).order_by(Item.id)).all()
    assert titles == [f"item-{n}" for n in range(1, 21)]


def test_a_running_dry_run_says_so_far_and_offers_no_run_for_real(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    changes = {"tables": {"posts": {"inserted": 0, "updated": 3, "deleted": 0}}, "sample": []}
    running = add_run(db.engine, MIXED, "running", dry_run=True, changes=changes)
    empty = add_run(db.engine, MIXED, "enqueued", dry_run=True)
    errored = add_run(db.engine, MIXED, "errored", dry_run=True, changes=changes)

    page = text(web.get(f"/tasks/{MIXED}"))

    card = card_of(page, running)
    assert "What it would change so far</h3>" in card
    assert "Would update 3 rows of posts so far" in card
    assert "run-for-real" not in card
    assert "Nothing counted yet." in card_of(page, empty)
    assert "(up to where it stopped)" in card_of(page, errored)
    assert "run-for-real" not in card_of(page, errored)
    assert '"run_for_real_url"' not in text(web.get(f"/runs/{errored}.json"))


def test_the_sample_of_changes_is_escaped_whatever_it_holds(
    web: Dashboard, db: t.Any, mtasks: t.Any
) -> None:
    sample = [
        {"table": "<b>t</b>", "key": HOSTILE, "column": 'c"<i>', "before": HOSTILE, "after": 1},
        {
            "table": "items",
            "key": [1, "<x>"],
            "column": "token",
            "before": None,
            "after": "[FILTERED]",
        },
    ]
    changes = {"tables": {"<b>t</b>": {"updated": 1, "columns": ["<i>"]}}, "sample": sample}
    run_id = add_run(db.engine, MIXED, "succeeded", dry_run=True, changes=changes)

    page = text(web.get(f"/tasks/{MIXED}"))
    failures = text(web.get(f"/runs/{run_id}/failures"))

    card = card_of(page, run_id)
    assert "<script>" not in page and "<b>t</b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in card
    assert "\\u0001\\u001b" in card  # control characters, as JSON escapes
    assert "Would update 1 row of &lt;b&gt;t&lt;/b&gt;: &lt;i&gt;" in card
    assert "&#34;[FILTERED]&#34;" in card
    assert "Failed items of dry run #" in failures and "tag-dry-run" in failures


# -- run for real --------------------------------------------------------------------


def test_run_for_real_starts_a_normal_run_with_the_same_arguments(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    seed_items(5)
    dry = dry_run(app, web, ITEMS, prefix="item-", limit_group="5", token=SECRET)

    response = web.post(f"/runs/{dry}/run-for-real")

    assert response.status_code == 303
    real_id = int(response.headers["Location"].rsplit("run-", 1)[1])
    page = text(web.get(f"/tasks/{ITEMS}"))
    assert f"Run #{real_id} of {ITEMS} does for real what dry run #{dry} did" in page
    real = fresh_run(real_id)
    assert not real.dry_run and real.arguments["limit_group"] == 5
    drain(app)
    assert fresh_run(real_id).status == "succeeded"
    with db.engine.connect() as connection:
        assert connection.scalars(sa.select(Item.counter)).all() == [1] * 5
    assert SECRET not in page


def test_run_for_real_through_htmx_answers_the_region_and_a_message(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    seed_items(3)
    dry = dry_run(app, web, MIXED)

    response = web.post(f"/runs/{dry}/run-for-real", htmx=True)

    body = text(response)
    assert response.status_code == 200
    assert body.startswith('<div id="task-runs"') or 'id="task-runs"' in body[:200]
    assert 'hx-swap-oob="true"' in body and "does for real what dry run" in body


def test_run_for_real_refusals_are_messages_and_write_nothing_new(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    real = add_run(db.engine, MIXED, "succeeded")
    running = add_run(db.engine, MIXED, "running", dry_run=True)
    gone = add_run(db.engine, "NoSuchTaskAnyMore", "succeeded", dry_run=True)

    answers, pages = {}, {}
    for run_id in (real, running, gone):
        before = counts(db.engine)[0]
        response = web.post(f"/runs/{run_id}/run-for-real")
        answers[run_id] = (response.status_code, counts(db.engine)[0] - before)
        pages[run_id] = text(response)

    # 409 Conflict, as the API answers, with the task page saying why.
    assert all(status == 409 and added == 0 for status, added in answers.values()), answers
    assert f"Run #{real} is not a dry run." in pages[real]
    assert f"Run #{running} is a running dry run" in pages[running]
    assert "NoSuchTaskAnyMore" in pages[gone]
    assert web.post("/runs/99999/run-for-real").status_code == 404


def test_run_for_real_needs_the_csrf_token_and_the_run_action(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    dry = add_run(db.engine, MIXED, "succeeded", dry_run=True)
    before = counts(db.engine)

    missing = web.post(f"/runs/{dry}/run-for-real", token=False)
    forged = web.post(f"/runs/{dry}/run-for-real", token="forged")
    assert missing.status_code == forged.status_code == 400
    assert counts(db.engine) == before

    asked: list[tuple[str, str | None]] = []

    def no_runs(action: str, task_name: str | None, run: t.Any) -> bool:
        asked.append((action, task_name))
        return action != "run" or task_name is None

    with make_app(authorize=no_runs) as other:
        refused = Dashboard(other)
        dry = add_run(db.engine, MIXED, "succeeded", dry_run=True)
        before = counts(db.engine)
        page = text(refused.get(f"/tasks/{MIXED}"))
        response = refused.post(f"/runs/{dry}/run-for-real")
        dry_start = refused.post(f"/tasks/{MIXED}/runs", {"_dry_run": "1"})
        assert counts(db.engine) == before
    assert response.status_code == 403 and dry_start.status_code == 403
    assert ("run", MIXED) in asked
    assert "run-for-real" not in card_of(page, dry)


# -- the preview panel -----------------------------------------------------------------


def test_the_task_page_loads_the_preview_and_refreshes_it_as_the_form_changes(
    web: Dashboard,
) -> None:
    page = text(web.get(f"/tasks/{ITEMS}"))

    region = page[page.index('id="preview-region"') :]
    region = region[: region.index(">")]
    assert f'hx-get="/maintenance_tasks/tasks/{ITEMS}/preview"' in region
    assert 'hx-trigger="load, input changed delay:500ms from:#run-form' in region
    assert 'hx-include="#run-form"' in region
    # Neither the token nor the secret field travel in the preview's URL.
    assert 'hx-params="not csrf_token,csv_file,_dry_run,' in region and ",token" in region


def test_the_preview_counts_describes_and_shows_the_sql(web: Dashboard, db: t.Any) -> None:
    seed_items(15)
    before = checksum(db.engine), counts(db.engine)

    fragment = text(web.get(f"/tasks/{ITEMS}/preview?prefix=item-1&limit_group=5", htmx=True))
    whole = web.get(f"/tasks/{ITEMS}/preview?prefix=item-&token={SECRET}")

    assert fragment.strip().startswith('<section class="card preview" id="preview"')
    assert "A run would walk <strong>7 items</strong>." in fragment  # item-1, item-10..15
    assert fragment.count("<li><code>") == 7
    assert '<details class="preview-sql" id="preview-sql">' in fragment
    assert "LIMIT" in fragment and "item-1" in fragment
    assert whole.status_code == 200 and "<h1>Preview of PreviewItemsTask</h1>" in text(whole)
    assert "15 items" in text(whole) and SECRET not in text(whole)
    assert (checksum(db.engine), counts(db.engine)) == before


def test_an_invalid_preview_lists_the_messages_of_each_field(web: Dashboard) -> None:
    response = web.get(f"/tasks/{ITEMS}/preview?limit_group=-3", htmx=True)
    garbage = web.get(f"/tasks/{ITEMS}/preview?limit_group=x&prefix=a%00b", htmx=True)

    body = text(response)
    assert response.status_code == 200
    assert 'id="preview-invalid"' in body
    assert (
        '<li data-field="limit_group"><a href="#param-limit_group"><code>limit_group</code>' in body
    )
    assert "greater than or equal to 0" in body
    # ...and under the field itself, swapped in out of band; the valid fields' slots are emptied.
    assert (
        '<p class="field-error" id="param-limit_group-preview-error" hx-swap-oob="true">'
        "Input should be greater than or equal to 0</p>" in body
    )
    assert (
        '<p class="field-error" id="param-prefix-preview-error" hx-swap-oob="true" hidden>' in body
    )
    assert garbage.status_code == 200
    assert "NUL character" in text(garbage) and 'data-field="limit_group"' in text(garbage)


def test_a_preview_of_a_csv_task_says_the_count_comes_from_the_file(web: Dashboard) -> None:
    body = text(web.get("/tasks/RecordRowsTask/preview", htmx=True))
    assert "the count comes from the file" in body


@pytest.mark.parametrize(
    "query",
    [
        "prefix=" + "a" * 70_000,
        "limit_group=" + "9" * 5000,
        "limit_group=" + str(2**70),
        "%ZZ=%FF&prefix=%C3",
        "prefix=%00",
    ],
)
def test_garbage_previews_are_never_a_server_error(web: Dashboard, query: str) -> None:
    response = web.get(f"/tasks/{ITEMS}/preview?{query}", htmx=True)
    assert response.status_code in (200, 400), text(response)[:500]


def test_the_preview_of_an_unknown_or_hidden_task_answers_as_its_page(
    web: Dashboard, db: t.Any
) -> None:
    assert web.get("/tasks/NoSuchTask/preview").status_code == 404

    def hide_items(action: str, task_name: str | None, run: t.Any) -> bool:
        return task_name != ITEMS

    with make_app(authorize=hide_items) as other:
        hidden = Dashboard(other)
        page = hidden.get(f"/tasks/{ITEMS}")
        preview = hidden.get(f"/tasks/{ITEMS}/preview", htmx=True)
    assert page.status_code == preview.status_code == 403


def test_a_preview_without_its_secret_field_still_counts(web: Dashboard, db: t.Any) -> None:
    """The page never sends a secret field with the preview: the count does without it."""
    seed_items(2)
    body = text(web.get("/tasks/SkipBadItemsTask/preview", htmx=True))
    assert "A run would walk <strong>2 items</strong>." in body
