"""The dashboard's messages and refusals in Japanese through the test client, English by
default, and the JSON of runs and the API in English whatever the reader asks for."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from markupsafe import escape
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.test import TestResponse

from flask_maintenance_tasks import i18n
from flask_maintenance_tasks.exceptions import MaintenanceTasksError
from flask_maintenance_tasks.web import views
from flask_maintenance_tasks.web.guards import CLOSED
from tests.support.apps import make_app
from tests.support.dashboard import Dashboard, add_run, text
from tests.support.records import fresh_run, seed_items

pytestmark = pytest.mark.skipif(not i18n.babel_available(), reason="needs the i18n extra")

JA = {"Accept-Language": "ja,en-US;q=0.7"}
API_TOKEN = "api-token-for-the-i18n-tests-0123456789"


class Reader:
    """The dashboard as a reader of one language sees it; each request in an app context of
    its own, as served requests are (the language is kept in ``g``)."""

    def __init__(self, app: Flask, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.web = Dashboard(app)
        self.headers = headers or {}

    def get(self, path: str, **kwargs: t.Any) -> TestResponse:
        with self.app.app_context():
            return self.web.get(
                path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
            )

    def post(
        self, path: str, data: dict[str, t.Any] | None = None, **kwargs: t.Any
    ) -> TestResponse:
        with self.app.app_context():
            self.web.token()
        with self.app.app_context():
            headers = {**self.headers, **kwargs.pop("headers", {})}
            return self.web.post(path, data, headers=headers, **kwargs)


@pytest.fixture
def ja(app: Flask) -> Reader:
    return Reader(app, JA)


@pytest.fixture
def en(app: Flask) -> Reader:
    return Reader(app)


def refusal_of(app: Flask, action: t.Callable[[], t.Any]) -> str:
    """What the engine says, in Japanese, when it refuses ``action`` (its own words, from
    the exceptions it raises)."""
    with app.app_context(), app.test_request_context("/", headers=JA):
        with pytest.raises(MaintenanceTasksError) as refused:
            action()
    return str(refused.value)


# -- messages of actions --------------------------------------------------------------


def test_a_pause_is_told_in_japanese(ja: Reader, mtasks: t.Any) -> None:
    run = mtasks.run("CountItemsTask")

    response = ja.post(f"/tasks/CountItemsTask/runs/{run.id}/pause", htmx=True)

    body = text(response)
    assert response.status_code == 200
    assert f"実行 #{run.id} は次の件で一時停止します。" in body
    assert fresh_run(run.id).status == "pausing"


def test_a_start_is_told_in_japanese_and_in_english(ja: Reader, en: Reader, db: t.Any) -> None:
    seed_items(2)

    started = ja.post("/tasks/CountItemsTask/runs")
    page = text(ja.get("/tasks/CountItemsTask"))
    first = int(started.headers["Location"].rsplit("run-", 1)[1])
    in_english = en.post("/tasks/ListTask/runs")
    english_page = text(en.get("/tasks/ListTask"))
    second = int(in_english.headers["Location"].rsplit("run-", 1)[1])

    assert (started.status_code, in_english.status_code) == (303, 303)
    assert f"CountItemsTask の実行 #{first} をキューに追加しました。" in page
    assert '<html lang="ja">' in page
    assert f"Run #{second} of ListTask is enqueued." in english_page
    assert '<html lang="en">' in english_page


def test_a_refused_action_in_the_wrong_state_is_told_in_japanese_and_changes_nothing(
    app: Flask, ja: Reader, en: Reader, db: t.Any, mtasks: t.Any
) -> None:
    run_id = add_run(db.engine, "ListTask", "succeeded")
    said = refusal_of(app, lambda: mtasks.pause(run_id))

    refused = ja.post(f"/tasks/ListTask/runs/{run_id}/pause")
    page = text(refused)
    through_htmx = text(ja.post(f"/tasks/ListTask/runs/{run_id}/pause", htmx=True))
    in_english = en.post(f"/tasks/ListTask/runs/{run_id}/pause")

    assert refused.status_code == 409
    assert str(escape(said)) in page
    assert str(escape(said)) in through_htmx
    assert '<html lang="ja">' in page
    assert "Cannot pause a succeeded run." in text(in_english)
    assert in_english.status_code == 409
    assert fresh_run(run_id).status == "succeeded"


def test_a_run_of_another_task_is_refused_in_japanese(ja: Reader, en: Reader, db: t.Any) -> None:
    run_id = add_run(db.engine, "ListTask", "paused")

    japanese = ja.post(f"/tasks/CountItemsTask/runs/{run_id}/resume")
    english = en.post(f"/tasks/CountItemsTask/runs/{run_id}/resume")

    assert (japanese.status_code, english.status_code) == (404, 404)
    assert "404 見つかりません" in text(japanese)
    assert f"CountItemsTask の実行 #{run_id} はありません。" in text(japanese)
    assert f"There is no run #{run_id} of CountItemsTask." in text(english)
    assert "404 Not Found" in text(english)
    assert fresh_run(run_id).status == "paused"


# -- refusals of the guards and error pages -------------------------------------------


def test_a_forged_post_without_csrf_is_refused_in_japanese(
    ja: Reader, en: Reader, mtasks: t.Any
) -> None:
    run = mtasks.run("CountItemsTask")
    pause = f"/tasks/CountItemsTask/runs/{run.id}/pause"

    missing = ja.post(pause, token=None)
    forged = ja.post(pause, token="forged-token")
    english = en.post(pause, token=None)

    assert [r.status_code for r in (missing, forged, english)] == [400] * 3
    assert "400 不正なリクエスト" in text(missing)
    assert "CSRF トークンがありません。ページを再読み込みして、もう一度お試しください。" in text(
        missing
    )
    assert "CSRF トークンが無効です。ページを再読み込みして、もう一度お試しください。" in text(
        forged
    )
    assert "The CSRF token is missing. Reload the page and try again." in text(english)
    assert "400 Bad Request" in text(english)
    assert fresh_run(run.id).status == "enqueued"


def test_the_closed_dashboard_speaks_the_readers_language_and_its_json_english(
    app_env: dict[str, str], db: t.Any
) -> None:
    with make_app() as closed:
        closed.config["TESTING"] = False
        reader = Reader(closed, JA)
        run_id = add_run(db.engine, "ListTask", "paused")

        page = reader.get("/")
        data = reader.get(f"/runs/{run_id}.json")

    assert page.status_code == 403
    assert page.headers["Content-Language"] == "ja"
    assert '<html lang="ja">' in text(page)
    assert data.status_code == 403
    assert data.get_json() == {"error": "Forbidden", "detail": CLOSED}


def test_a_missing_secret_key_is_told_in_japanese(app: Flask) -> None:
    app.config["SECRET_KEY"] = None
    app.secret_key = None

    with app.app_context():
        japanese = app.test_client().get("/maintenance_tasks/", headers=JA)
    with app.app_context():
        english = app.test_client().get("/maintenance_tasks/")

    assert (japanese.status_code, english.status_code) == (500, 500)
    assert "ダッシュボードにはアプリの SECRET_KEY が必要です。" in text(japanese)
    assert "500 サーバー内部エラー" in text(japanese)
    assert "The dashboard needs the app&#39;s SECRET_KEY" in text(english)


def test_error_pages_in_japanese(ja: Reader, en: Reader) -> None:
    no_task = ja.get("/tasks/NoSuchTask")
    bad_cursor = ja.get("/tasks/ListTask?cursor=x")
    bad_status = ja.get("/runs?status=nope")

    assert str(escape("'NoSuchTask' という名前のタスクも、その実行もありません。")) in text(no_task)
    assert "カーソルには、古い実行へのリンクにあるような実行の ID を指定してください。" in text(
        bad_cursor
    )
    assert str(escape("ステータス 'nope' はありません。")) in text(bad_status)
    assert "There is no status &#39;nope&#39;." in text(en.get("/runs?status=nope"))


@pytest.mark.parametrize(
    ("error", "japanese"),
    [
        (NotFound(), "リクエストされた URL はサーバー上に見つかりませんでした。"),
        (MethodNotAllowed(), "このメソッドは、リクエストされた URL では使用できません。"),
        (NotFound("There is no run #3."), "There is no run #3."),
    ],
)
def test_werkzeugs_own_words_on_error_pages(
    app: Flask, error: HTTPException, japanese: str
) -> None:
    with app.app_context(), app.test_request_context("/", headers=JA):
        title, detail = views._error_words(error)
    with app.app_context(), app.test_request_context("/"):
        assert views._error_words(error) == (error.name, error.description)
    assert title in {"見つかりません", "許可されていないメソッド"}
    assert detail is not None and detail.startswith(japanese)


def test_page_titles_in_japanese(ja: Reader, en: Reader, db: t.Any) -> None:
    run_id = add_run(db.engine, "ListTask", "succeeded")

    assert "<title>すべての実行 - " in text(ja.get("/runs"))
    assert f"<title>実行 #{run_id} の失敗 - " in text(ja.get(f"/runs/{run_id}/failures"))
    assert "<title>All runs - " in text(en.get("/runs"))
    assert f"<title>Failures of run #{run_id} - " in text(en.get(f"/runs/{run_id}/failures"))


# -- what programs read stays English -------------------------------------------------


def test_the_json_of_a_run_stays_english_with_accept_language_ja(ja: Reader, db: t.Any) -> None:
    run_id = add_run(
        db.engine, "ListTask", "running", tick_count=4000, tick_total=7000, time_running=10.0
    )

    data = ja.get(f"/runs/{run_id}.json").get_json()
    missing = ja.get("/runs/999999.json")

    assert data["progress"] == "Processed 4,000 out of 7,000 items (57%)."
    assert data["status_text"].startswith("Running for 10s")
    assert missing.get_json() == {"error": "Not Found", "detail": "There is no run #999999."}


def test_the_api_stays_english_with_accept_language_ja(ja: Reader, db: t.Any) -> None:
    run_id = add_run(
        db.engine, "ListTask", "running", tick_count=4000, tick_total=7000, time_running=10.0
    )

    data = ja.get(f"/api/runs/{run_id}").get_json()
    missing = ja.get("/api/runs/999999").get_json()

    assert data["progress"] == "Processed 4,000 out of 7,000 items (57%)."
    assert data["status_text"].startswith("Running for 10s")
    assert missing["code"] == "run_not_found"
    assert missing["message"] == "There is no run #999999."


def test_the_api_answered_with_its_token_stays_english(app_env: dict[str, str], db: t.Any) -> None:
    with make_app(api_token=API_TOKEN) as app:
        run_id = add_run(
            db.engine, "ListTask", "running", tick_count=4000, tick_total=7000, time_running=10.0
        )
        # From another machine: only the token opens the API, answered before any hook.
        headers = {**JA, "Authorization": f"Bearer {API_TOKEN}"}
        away = {"REMOTE_ADDR": "203.0.113.9"}
        client = app.test_client()
        with app.app_context():
            data = client.get(
                f"/maintenance_tasks/api/runs/{run_id}", headers=headers, environ_base=away
            )
        with app.app_context():
            refused = client.post(
                f"/maintenance_tasks/api/runs/{run_id}/resume", headers=headers, environ_base=away
            )

    assert data.status_code == 200, data.get_data(as_text=True)
    assert data.get_json()["status_text"].startswith("Running for 10s")
    assert data.headers.get("Content-Language") is None
    assert refused.get_json()["message"] == "Cannot resume a running run."


def test_an_engine_message_in_a_form_ends_as_its_language_ends_a_sentence(
    ja: Reader, en: Reader
) -> None:
    """The form adds a full stop to the engine's messages: "。" in Japanese, not "."."""
    form = {"_partitions": "999"}
    japanese = text(ja.post("/tasks/PartitionedCountTask/runs", form))
    english = text(en.post("/tasks/PartitionedCountTask/runs", form))
    assert "MAINTENANCE_TASKS_MAX_PARTITIONS" in japanese
    assert "以下を指定してください。" in japanese
    assert "以下を指定してください." not in japanese
    assert "ask for 16 or fewer." in english
