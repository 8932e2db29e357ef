"""Who may use the dashboard, CSRF, the Content-Security-Policy, escaping and masking."""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import re
import typing as t
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Blueprint, Flask, request
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from flask_maintenance_tasks.exceptions import InvalidArguments, MaintenanceTasksError
from flask_maintenance_tasks.models import Run
from flask_maintenance_tasks.web import CONTENT_SECURITY_POLICY
from tests.support.apps import configure, make_app
from tests.support.dashboard import Dashboard, add_run, field_tag, text
from tests.support.records import fresh_run
from tests.support.workers import drain

STATIC = Path(__file__).resolve().parent.parent / "flask_maintenance_tasks/web/static"
VENDOR = STATIC.parent / "vendor"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


@pytest.fixture
def web(app: Flask) -> Dashboard:
    return Dashboard(app)


def every_route(run_id: int) -> list[tuple[str, str]]:
    """One request of each dashboard route: (method, path under the prefix)."""
    return [
        ("GET", "/"),
        ("GET", "/tasks/ListTask"),
        ("GET", "/tasks/ListTask?cursor=5"),
        ("POST", "/tasks/ListTask/runs"),
        ("POST", f"/tasks/ListTask/runs/{run_id}/pause"),
        ("POST", f"/tasks/ListTask/runs/{run_id}/resume"),
        ("POST", f"/tasks/ListTask/runs/{run_id}/cancel"),
        ("GET", f"/runs/{run_id}.json"),
    ]


def request_all(web: Dashboard, run_id: int, *, htmx: bool = False) -> dict[str, int]:
    """Status of each route, each asked as a page and, with ``htmx``, as a fragment too."""
    statuses = {}
    for method, path in every_route(run_id):
        headers = {"HX-Request": "true"} if htmx else {}
        response = web.client.open(
            web.url(path), method=method, headers=headers, data={"csrf_token": "x"}
        )
        statuses[f"{method} {path}"] = response.status_code
    return statuses


# -- closed by default ------------------------------------------------------


@pytest.fixture
def closed_app(app_env: dict[str, str]) -> t.Iterator[Flask]:
    """The test app as in production: TESTING off, no parent, no authorize."""
    with make_app() as app:
        app.config["TESTING"] = False
        yield app


def test_without_auth_every_route_answers_403_with_how_to_open_it(
    closed_app: Flask, db: t.Any
) -> None:
    web = Dashboard(closed_app)
    run_id = add_run(db.engine, "ListTask", "paused")

    statuses = request_all(web, run_id) | {
        f"htmx {k}": v for k, v in request_all(web, run_id, htmx=True).items()
    }
    page = text(web.get("/"))

    assert set(statuses.values()) == {403}, statuses
    assert "The maintenance tasks dashboard is closed" in page
    assert "MAINTENANCE_TASKS_ALLOW_ANONYMOUS" in page and "authorize=" in page
    assert "ALLOW_ANONYMOUS" in web.get(f"/runs/{run_id}.json").get_json()["detail"]
    assert fresh_run(run_id).status == "paused"
    stylesheet = web.get("/static/maintenance_tasks/dashboard.css")
    stylesheet.close()
    assert stylesheet.status_code == 200


def test_allow_anonymous_or_debug_opens_the_dashboard(closed_app: Flask) -> None:
    web = Dashboard(closed_app)

    closed = web.get("/").status_code
    closed_app.debug = True
    in_debug = web.get("/").status_code

    assert (closed, in_debug) == (403, 200)


def test_the_allow_anonymous_setting_opens_the_dashboard(
    app_env: dict[str, str],
) -> None:
    with make_app(allow_anonymous=True) as app:
        app.config["TESTING"] = False
        web = Dashboard(app)
        assert web.get("/").status_code == 200
        assert web.get("/", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200


@pytest.mark.parametrize("switch", ["debug", "testing"])
def test_debug_or_testing_opens_the_dashboard_only_to_this_machine_without_a_proxy(
    closed_app: Flask, switch: str
) -> None:
    setattr(closed_app, switch, True)
    web = Dashboard(closed_app)

    def status(address: str, **headers: str) -> int:
        environ = {"REMOTE_ADDR": address}
        return web.client.get(web.url("/"), environ_base=environ, headers=headers).status_code

    opened = [status("127.0.0.1"), status("127.8.9.10"), status("::1"), status("::ffff:127.0.0.1")]
    refused = [
        status("203.0.113.9"),
        status("10.0.0.2"),
        status("::ffff:203.0.113.9"),
        status("127.0.0.1", **{"X-Forwarded-For": "203.0.113.9"}),
        status("127.0.0.1", Forwarded="for=203.0.113.9"),
        status("127.0.0.1", **{"X-Real-IP": "203.0.113.9"}),
        status("::1", **{"X-Forwarded-For": "127.0.0.1"}),
    ]

    assert opened == [200] * 4
    assert refused == [403] * 7
    page = text(web.get("/", environ_base={"REMOTE_ADDR": "203.0.113.9"}))
    assert "same machine" in page and "X-Forwarded-For" in page


def test_debug_switched_on_after_init_app_is_logged_once_at_the_first_request(
    app_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from tests import testapp

    app = Flask("debug_later")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", SECRET_KEY="s")
    testapp.db.init_app(app)
    with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
        testapp.mtasks.init_app(app, tasks_package="tests.testapp.maintenance")
        with app.app_context():
            testapp.db.create_all()
        app.debug = True
        statuses = [app.test_client().get("/maintenance_tasks/").status_code for _ in range(3)]

    opened = [r for r in caplog.records if "open without any login" in r.getMessage()]
    assert statuses == [200] * 3
    assert len(opened) == 1 and "app.debug is on" in opened[0].getMessage()
    with app.app_context():
        testapp.db.engine.dispose()


def test_a_closed_dashboard_is_logged_once_at_start_up(
    app_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from tests import testapp

    app = Flask("closed")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    testapp.db.init_app(app)
    testapp.mtasks.init_app(app, tasks_package="tests.testapp.maintenance")

    closed = [r for r in caplog.records if "dashboard is closed" in r.getMessage()]
    assert len(closed) == 1
    with app.app_context():
        testapp.db.engine.dispose()


# -- authorize --------------------------------------------------------------


def test_authorize_is_asked_for_every_view_and_action(app_env: dict[str, str], db: t.Any) -> None:
    asked: list[tuple[str, str | None, int | None]] = []

    def authorize(action: str, task_name: str | None, run: t.Any) -> bool:
        asked.append((action, task_name, run.id if run is not None else None))
        return action != "cancel"

    with make_app(authorize=authorize) as app:
        app.config["TESTING"] = False
        web = Dashboard(app)
        run_id = add_run(db.engine, "ListTask", "paused")
        web.token()
        asked.clear()

        page = text(web.get("/tasks/ListTask"))
        cancel = web.post(f"/tasks/ListTask/runs/{run_id}/cancel")
        json_view = web.get(f"/runs/{run_id}.json")
        web.get("/")
        web.post("/tasks/ListTask/runs")

        assert ("view", "ListTask", None) in asked
        assert ("cancel", "ListTask", run_id) in asked
        assert ("view", "ListTask", run_id) in asked
        assert ("view", None, None) in asked
        assert ("run", "ListTask", None) in asked
        assert cancel.status_code == 403
        assert json_view.status_code == 200
        assert fresh_run(run_id).status == "paused"
        assert f'id="run-{run_id}-resume"' in page
        assert f'id="run-{run_id}-cancel"' not in page


def test_authorize_can_make_an_operator_read_only(app_env: dict[str, str], db: t.Any) -> None:
    def read_only(action: str, task_name: str | None, run: t.Any) -> bool:
        return action == "view"

    with make_app(authorize=read_only) as app:
        web = Dashboard(app)
        run_id = add_run(db.engine, "ListTask", "paused")

        page = text(web.get("/tasks/ListTask"))
        started = web.post("/tasks/ListTask/runs")
        resumed = web.post(f"/tasks/ListTask/runs/{run_id}/resume")

        assert "You may not start this task." in page
        assert re.search(r'id="run-submit" disabled', page)
        assert "<button" in page and f'id="run-{run_id}-resume"' not in page
        assert (started.status_code, resumed.status_code) == (403, 403)
        assert "You are not allowed to resume ListTask." in text(resumed)
        assert fresh_run(run_id).status == "paused"


def test_a_refused_user_gets_the_same_answer_for_tasks_and_runs_that_exist_or_not(
    app_env: dict[str, str], db: t.Any
) -> None:
    def only_views_of_a_run(action: str, task_name: str | None, run: t.Any) -> bool:
        return action == "view" and run is None and task_name != "ListTask"

    with make_app(authorize=only_views_of_a_run) as app:
        app.config["TESTING"] = False
        web = Dashboard(app)
        run_id = add_run(db.engine, "ListTask", "paused")
        missing = run_id + 1000

        start = [
            web.post(f"/tasks/{name}/runs", token="x").status_code
            for name in ("ListTask", "Missing")
        ]
        cancel = [
            web.post(f"/tasks/ListTask/runs/{n}/cancel", token="x").status_code
            for n in (run_id, missing)
        ]
        shown = [web.get(path).status_code for path in ("/tasks/ListTask", "/tasks/Missing")]
        as_json = [web.get(f"/runs/{n}.json") for n in (run_id, missing)]
        as_csv = [web.get(f"/runs/{n}/csv") for n in (run_id, missing)]

        assert start == [403, 403] and cancel == [403, 403]
        assert shown == [403, 404]  # the task page is "view" of that task: refused
        assert [r.status_code for r in as_json + as_csv] == [404] * 4
        details = [re.sub(r"#\d+", "#N", r.get_json()["detail"]) for r in as_json]
        assert details[0] == details[1] == "There is no run #N."
        csv_pages = [re.sub(r"#\d+", "#N", text(r)) for r in as_csv]
        assert csv_pages[0] == csv_pages[1]
        assert fresh_run(run_id).status == "paused"


def test_starting_or_controlling_a_run_also_needs_view(app_env: dict[str, str], db: t.Any) -> None:
    may_view = {"now": True}
    asked: list[tuple[str, str | None]] = []

    def act_without_view(action: str, task_name: str | None, run: t.Any) -> bool:
        asked.append((action, task_name))
        return action != "view" or may_view["now"]

    with make_app(authorize=act_without_view) as app:
        app.config["TESTING"] = False
        web = Dashboard(app)
        run_id = add_run(db.engine, "ListTask", "paused", arguments={"note": "private"})
        web.token()
        may_view["now"] = False
        asked.clear()

        invalid = web.post("/tasks/ParamsTask/runs", {"limit": "x"})
        resumed = web.post(f"/tasks/ListTask/runs/{run_id}/resume", htmx=True)

        assert (invalid.status_code, resumed.status_code) == (403, 403)
        assert "private" not in text(invalid) + text(resumed)
        assert ("view", "ParamsTask") in asked and ("view", "ListTask") in asked
        assert fresh_run(run_id).status == "paused"


# -- the size of a request's body -------------------------------------------


class WatchedBody(io.BytesIO):
    """A request body that remembers whether anyone read from it."""

    touched = False

    def read(self, *args: t.Any) -> bytes:
        self.touched = True
        return super().read(*args)

    def readinto(self, buffer: t.Any) -> int:
        self.touched = True
        return super().readinto(buffer)

    def readline(self, *args: t.Any) -> bytes:
        self.touched = True
        return super().readline(*args)


def post_body(
    web: Dashboard, path: str, body: WatchedBody, content_type: str, **kwargs: t.Any
) -> t.Any:
    return web.client.post(web.url(path), input_stream=body, content_type=content_type, **kwargs)


FORM = "application/x-www-form-urlencoded"


def csv_file(content: bytes) -> FileStorage:
    return FileStorage(io.BytesIO(content), filename="items.csv", content_type="text/csv")


def test_a_request_that_authorize_refuses_is_answered_before_its_body_is_read(
    app_env: dict[str, str], db: t.Any
) -> None:
    with make_app(authorize=lambda action, task_name, run: action == "view") as app:
        web = Dashboard(app)
        run_id = add_run(db.engine, "ListTask", "paused")
        bodies = [WatchedBody(b"csrf_token=x&" + b"a" * 100) for _ in range(2)]

        started = post_body(web, "/tasks/ListTask/runs", bodies[0], FORM)
        paused = post_body(web, f"/tasks/ListTask/runs/{run_id}/pause", bodies[1], FORM)

        assert (started.status_code, paused.status_code) == (403, 403)
        assert [body.touched for body in bodies] == [False, False]
        assert fresh_run(run_id).status == "paused"


def test_a_body_above_the_form_limit_is_refused_with_413_before_it_is_read(
    web: Dashboard, db: t.Any
) -> None:
    run_id = add_run(db.engine, "ListTask", "paused")
    body = WatchedBody(f"csrf_token={web.token()}&".encode() + b"a" * (64 * 1024))

    response = post_body(web, f"/tasks/ListTask/runs/{run_id}/pause", body, FORM)

    assert response.status_code == 413
    assert "MAINTENANCE_TASKS_MAX_FORM_BYTES" in text(response)
    assert body.touched is False
    assert fresh_run(run_id).status == "paused"


def test_a_body_without_a_length_stops_being_read_at_the_limit(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    configure(app, max_form_bytes=1000)
    run_id = add_run(db.engine, "ListTask", "paused")
    body = io.BytesIO(f"csrf_token={web.token()}&note=".encode() + b"a" * 5000)

    response = web.client.post(
        web.url(f"/tasks/ListTask/runs/{run_id}/pause"),
        input_stream=body,
        content_type=FORM,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 413
    assert "1,000 bytes" in text(response)
    assert body.tell() < 5000
    assert fresh_run(run_id).status == "paused"


def test_a_csv_task_accepts_its_file_but_no_field_above_the_form_limit(
    app: Flask, web: Dashboard, db: t.Any
) -> None:
    configure(app, max_csv_bytes=300_000, max_form_bytes=1000)
    # Larger than the chunks werkzeug reads a multipart body in.
    rows = b"id,title\n" + b"".join(b"%d,t\n" % n for n in range(30_000))
    token = web.token()

    def start(sleep: str, content: bytes) -> t.Any:
        data = {"csv_file": csv_file(content), "sleep": sleep, "csrf_token": token}
        boundary, body = encode_multipart(data)
        return post_body(
            web,
            "/tasks/ImportItemsTask/runs",
            WatchedBody(body),
            f"multipart/form-data; boundary={boundary}",
        )

    big_field = start("0" * 2000, b"id,title\n1,a\n")
    boundary, too_big = encode_multipart({"csv_file": csv_file(b"x" * 302_000)})
    big_file = WatchedBody(too_big)
    refused_file = post_body(
        web, "/tasks/ImportItemsTask/runs", big_file, f"multipart/form-data; boundary={boundary}"
    )
    accepted = start("0", rows)

    assert big_field.status_code == 413
    assert refused_file.status_code == 413 and big_file.touched is False
    assert accepted.status_code == 303
    db.session.remove()
    assert [run.task_name for run in db.session.scalars(sa.select(Run))] == ["ImportItemsTask"]


# -- bad input ----------------------------------------------------------------

BEYOND_64_BITS = 2**64 + 1


@pytest.mark.both_databases
def test_a_run_id_or_a_cursor_beyond_64_bits_is_answered_with_a_4xx(
    web: Dashboard, mtasks: t.Any, db: t.Any
) -> None:
    run_id = add_run(db.engine, "ListTask", "running")
    huge = BEYOND_64_BITS

    missing = [
        web.get(f"/runs/{huge}.json"),
        web.get(f"/runs/{huge}/csv"),
        web.get(f"/runs/{'9' * 5000}.json"),
        web.post(f"/tasks/ListTask/runs/{huge}/pause"),
        web.post(f"/tasks/ListTask/runs/{huge}/cancel", htmx=True),
    ]
    cursors = {
        cursor: web.get(f"/tasks/ListTask?cursor={cursor}").status_code
        for cursor in (str(huge), "9" * 5000, "0", "-1", "abc", "1.5", "٣")
    }
    fragment = web.post(f"/tasks/ListTask/runs/{run_id}/pause?cursor={huge}", htmx=True)

    assert [r.status_code for r in missing] == [404] * 5
    assert f"There is no run #{huge}." == missing[0].get_json()["detail"]
    assert set(cursors.values()) == {400}, cursors
    assert "The cursor must be the id of a run" in text(web.get(f"/tasks/ListTask?cursor={huge}"))
    assert web.get("/tasks/ListTask?cursor=").status_code == 200
    assert fragment.status_code == 400
    assert mtasks.get_run(huge) is None
    with pytest.raises(MaintenanceTasksError, match=f"Run #{huge} not found."):
        mtasks.cancel(huge)
    assert fresh_run(run_id).status == "running"


def test_json_nested_too_deep_is_a_field_error_wherever_it_comes_from(
    web: Dashboard, mtasks: t.Any, db: t.Any
) -> None:
    parsed_too_deep = '{"a": ' + "[" * 100 + "]" * 100 + "}"  # JSON reads it, storing would not
    beyond_the_parser = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    deep_value: list[t.Any] = []
    for _ in range(5000):
        deep_value = [deep_value]

    posted = [
        web.post("/tasks/WebNestedSecretsTask/runs", {"options": parsed_too_deep}),
        web.post("/tasks/WebNestedSecretsTask/runs", {"options": beyond_the_parser}),
        web.post("/tasks/ParamsTask/runs", {"content": "x", "ids": "[" * 5000 + "]" * 5000}),
    ]
    prefilled = web.get("/tasks/WebNestedSecretsTask", query_string={"options": beyond_the_parser})
    with pytest.raises(InvalidArguments) as raised:
        mtasks.run("WebNestedSecretsTask", {"options": {"a": deep_value}})
    accepted = web.post(
        "/tasks/WebNestedSecretsTask/runs", {"options": '{"a": ' + "[" * 60 + "]" * 60 + "}"}
    )

    assert [r.status_code for r in posted] == [422] * 3
    for response in posted:
        assert "nested deeper than 64 levels" in text(response)
    assert prefilled.status_code == 200
    assert raised.value.errors == {"options": ["nested deeper than 64 levels"]}
    assert accepted.status_code == 303
    db.session.remove()
    assert [run.task_name for run in db.session.scalars(sa.select(Run))] == ["WebNestedSecretsTask"]


# -- a parent blueprint -----------------------------------------------------


def test_a_rejecting_parent_blueprint_guards_every_route(
    app_env: dict[str, str], db: t.Any
) -> None:
    admin = Blueprint("admin", __name__)

    @admin.before_request
    def login_required() -> tuple[str, int]:
        return "log in first", 401

    with make_app(parent=admin) as app:
        app.config["TESTING"] = False
        app.register_blueprint(admin, url_prefix="/admin")
        web = Dashboard(app, prefix="/admin/maintenance_tasks")
        run_id = add_run(db.engine, "ListTask", "paused")

        statuses = request_all(web, run_id) | {
            f"htmx {k}": v for k, v in request_all(web, run_id, htmx=True).items()
        }

        assert set(statuses.values()) == {401}, statuses
        assert web.client.get("/maintenance_tasks/").status_code == 404
        assert fresh_run(run_id).status == "paused"


def test_an_accepting_parent_opens_the_dashboard_under_its_prefix(
    app_env: dict[str, str],
) -> None:
    admin = Blueprint("admin_ok", __name__)
    seen: list[str] = []

    @admin.before_request
    def note() -> None:
        seen.append("parent")

    with make_app(parent=admin) as app:
        app.config["TESTING"] = False
        app.register_blueprint(admin, url_prefix="/admin")
        web = Dashboard(app, prefix="/admin/maintenance_tasks")

        page = web.get("/")

        assert page.status_code == 200 and seen == ["parent"]
        assert 'href="/admin/maintenance_tasks/tasks/ListTask"' in text(page)
        assert web.post("/tasks/ListTask/runs").status_code == 303


def test_a_parent_without_a_request_hook_keeps_the_dashboard_closed(
    app_env: dict[str, str], db: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin = Blueprint("admin_unguarded", __name__)

    with make_app(parent=admin) as app:
        app.config["TESTING"] = False
        app.register_blueprint(admin, url_prefix="/admin")
        web = Dashboard(app, prefix="/admin/maintenance_tasks")
        run_id = add_run(db.engine, "ListTask", "paused")

        with caplog.at_level(logging.WARNING, logger="flask_maintenance_tasks"):
            statuses = request_all(web, run_id) | {
                f"htmx {k}": v for k, v in request_all(web, run_id, htmx=True).items()
            }
        page = text(web.get("/"))

        assert set(statuses.values()) == {403}, statuses
        assert "The maintenance tasks dashboard is closed" in page
        assert "<code>admin_unguarded</code>" in page and "before_request" in page
        assert fresh_run(run_id).status == "paused"
        unguarded = [r for r in caplog.records if "has a before_request hook" in r.getMessage()]
        assert len(unguarded) == 1


@pytest.mark.parametrize("where", ["app", "grandparent"])
def test_a_request_hook_of_the_app_or_of_an_outer_blueprint_opens_a_nested_dashboard(
    app_env: dict[str, str], where: str
) -> None:
    site = Blueprint(f"site_{where}", __name__)
    admin = Blueprint(f"admin_{where}", __name__)
    seen: list[str] = []

    def note() -> None:
        seen.append(request.blueprints[0])

    with make_app(parent=admin) as app:
        app.config["TESTING"] = False
        site.register_blueprint(admin, url_prefix="/admin")
        if where == "app":
            app.before_request(note)
        else:
            site.before_request(note)
        app.register_blueprint(site, url_prefix="/site")
        web = Dashboard(app, prefix="/site/admin/maintenance_tasks")

        page = web.get("/")

        assert page.status_code == 200
        assert seen == [f"site_{where}.admin_{where}.maintenance_tasks"]


def test_nesting_under_a_parent_already_registered_says_what_to_do(
    app_env: dict[str, str],
) -> None:
    from tests import testapp

    admin = Blueprint("admin_late", __name__)
    app = Flask("late")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    app.register_blueprint(admin, url_prefix="/admin")
    testapp.db.init_app(app)

    with pytest.raises(RuntimeError, match="before app.register_blueprint"):
        testapp.mtasks.init_app(app, parent=admin)
    with app.app_context():
        testapp.db.engine.dispose()


# -- CSRF -------------------------------------------------------------------


def test_a_post_without_a_valid_csrf_token_is_refused_with_400(
    web: Dashboard, mtasks: t.Any, db: t.Any
) -> None:
    run = mtasks.run("CountItemsTask")
    pause = f"/tasks/CountItemsTask/runs/{run.id}/pause"
    web.token()

    missing = web.post(pause, token=None)
    forged = web.post(pause, token="forged-token")
    start = web.post("/tasks/ListTask/runs", token=None)
    from_another_session = Dashboard(web.app).post(pause, token=web.token())

    assert [r.status_code for r in (missing, forged, start, from_another_session)] == [400] * 4
    assert "CSRF token is missing" in text(missing)
    assert fresh_run(run.id).status == "enqueued"
    assert web.post(pause, htmx=True).status_code == 200  # the token in X-CSRFToken
    assert fresh_run(run.id).status == "pausing"


def test_every_action_form_carries_the_csrf_token(web: Dashboard, db: t.Any) -> None:
    run_id = add_run(db.engine, "ListTask", "paused")

    page = text(web.get("/tasks/ListTask"))

    forms = re.findall(r"<form method=\"post\".*?</form>", page, re.S)
    assert len(forms) == 3  # the run form, resume, cancel
    for form in forms:
        assert f'name="csrf_token" value="{web.token()}"' in form
    headers = re.search(r"<body hx-headers='([^']+)'", page)
    assert headers and json.loads(headers.group(1)) == {"X-CSRFToken": web.token()}
    assert f"/runs/{run_id}/resume" in page


# -- headers and markup -----------------------------------------------------


class _InlineFinder(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style":
            self.problems.append("<style>")
        if tag == "script" and "src" not in names:
            self.problems.append("inline <script>")
        if "style" in names:
            self.problems.append(f"style= on <{tag}>")
        self.problems.extend(f"{n}= on <{tag}>" for n in names if n.startswith("on"))
        self.problems.extend(f"{n} on <{tag}>" for n in names if n.startswith("hx-on"))


def test_pages_fragments_and_json_send_a_strict_csp(
    app: Flask, web: Dashboard, mtasks: t.Any, db: t.Any
) -> None:
    run = mtasks.run("WebHostileErrorTask")
    drain(app)
    active = add_run(db.engine, "ListTask", "paused")

    responses = [
        web.get("/"),
        web.get("/tasks/WebHostileErrorTask"),
        web.get("/tasks/ListTask", htmx=True),
        web.get(f"/runs/{run.id}.json"),
        web.get("/tasks/Missing"),
        web.post(f"/tasks/ListTask/runs/{active}/pause", token=None),
    ]

    for response in responses:
        policy = response.headers["Content-Security-Policy"]
        assert policy == CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'self'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    for response in responses[:3] + responses[4:]:
        finder = _InlineFinder()
        finder.feed(text(response))
        assert finder.problems == [], response.request.path


def test_htmx_is_configured_without_eval_or_injected_styles(web: Dashboard) -> None:
    page = text(web.get("/"))

    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", page)
    assert config
    settings = json.loads(config.group(1))
    assert settings["allowEval"] is False
    assert settings["includeIndicatorStyles"] is False
    assert settings["historyCacheSize"] == 0


def test_the_vendored_htmx_is_2_0_11_unchanged(web: Dashboard) -> None:
    shipped = STATIC / "maintenance_tasks/htmx.min.js"

    served = web.get("/static/maintenance_tasks/htmx.min.js")

    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == HTMX_SHA256
    assert hashlib.sha256(served.data).hexdigest() == HTMX_SHA256
    assert HTMX_SHA256 in (VENDOR / "README.md").read_text()
    served.close()


@pytest.mark.parametrize(
    "path", ["README.md", "htmx.LICENSE", "../vendor/htmx.LICENSE", "../../vendor/README.md"]
)
def test_the_notes_and_licences_beside_the_static_files_are_not_served(
    web: Dashboard, path: str
) -> None:
    response = web.get(f"/static/maintenance_tasks/{path}")

    assert response.status_code == 404
    response.close()


def test_the_htmx_licence_is_kept_beside_the_static_files_not_among_them() -> None:
    notice = (VENDOR / "htmx.LICENSE").read_text()

    assert notice.startswith("BSD 2-Clause License\n\nCopyright (c) 2020, Big Sky Software\n")
    assert sorted(p.name for p in (STATIC / "maintenance_tasks").iterdir()) == [
        "dashboard.css",
        "dashboard.js",
        "htmx.min.js",
        "pygments.css",
    ]


def test_the_code_stylesheet_is_the_generated_one() -> None:
    from flask_maintenance_tasks.web.source import stylesheet

    shipped = (STATIC / "maintenance_tasks/pygments.css").read_text()

    assert shipped == stylesheet()
    assert "@media (prefers-color-scheme: dark)" in shipped


def test_without_a_secret_key_the_dashboard_says_it_needs_one(app: Flask) -> None:
    app.config["SECRET_KEY"] = None
    app.secret_key = None

    response = app.test_client().get("/maintenance_tasks/")

    assert response.status_code == 500
    assert "SECRET_KEY" in text(response)


# -- masking ------------------------------------------------------------------


def test_masked_parameters_never_appear_in_clear(app: Flask, web: Dashboard, mtasks: t.Any) -> None:
    run = mtasks.run(
        "ParamsTask", {"content": "visible", "api_token": "tok-123", "password": "pw-456"}
    )
    kinds = mtasks.run(
        "WebFormKindsTask",
        {"note": "n", "credentials": {"user": "ada", "key": "nested-key-789"}},
    )

    outputs = [
        text(web.get("/")),
        text(web.get("/tasks/ParamsTask")),
        text(web.get("/tasks/ParamsTask", htmx=True)),
        text(web.get(f"/runs/{run.id}.json")),
        text(web.get("/tasks/WebFormKindsTask")),
        text(web.get(f"/runs/{kinds.id}.json")),
    ]
    drain(app)
    outputs.append(text(web.get("/tasks/ParamsTask")))

    for output in outputs:
        for secret in ("tok-123", "pw-456", "nested-key-789"):
            assert secret not in output
    assert "visible" in outputs[1] and "[FILTERED]" in outputs[1]
    assert "ada" in outputs[4]


NESTED = {
    "note": "visible-note",
    "options": {"db": {"password": "pw-nested-1"}, "depth": 2},
    "servers": [{"host": "a.example", "api_token": "tok-nested-2"}],
    "accounts": {"main": {"user": "ada", "key": "key-nested-3"}},
}
NESTED_SECRETS = ("pw-nested-1", "tok-nested-2", "key-nested-3")


def run_again_link(page: str) -> str:
    found = re.search(r'href="([^"]*#new-run)"', page)
    assert found, "no run again link"
    return html.unescape(found.group(1))


def test_run_again_leaves_out_every_argument_holding_a_secret_and_asks_for_it(
    app: Flask, web: Dashboard, mtasks: t.Any
) -> None:
    run = mtasks.run("WebNestedSecretsTask", NESTED)

    page = text(web.get("/tasks/WebNestedSecretsTask"))
    link = run_again_link(page)
    again = text(web.client.get(link))
    as_json = text(web.get(f"/runs/{run.id}.json"))

    for output in (page, link, again, as_json):
        for secret in NESTED_SECRETS:
            assert secret not in output
    query = parse_qs(urlsplit(link).query)
    assert query["note"] == ["visible-note"]
    assert query["_withheld"] == ["options", "servers"]  # accounts: a secret field, never sent
    assert "options" not in query and "servers" not in query and "accounts" not in query
    assert 'value="visible-note"' in field_tag(again, "note")
    assert re.search(r'name="options"[^>]*></textarea>', again)
    assert 'id="withheld-message"' in again and 'id="param-options-withheld"' in again
    assert 'id="param-servers-withheld"' in again and 'id="param-note-withheld"' not in again
    assert "[FILTERED]" in as_json and "a.example" in as_json


def test_a_query_string_or_a_refused_form_never_writes_a_nested_secret_back(
    web: Dashboard, db: t.Any
) -> None:
    prefilled = text(
        web.get(
            "/tasks/WebNestedSecretsTask",
            query_string={"options": '{"x": {"Password": "leak-q1"}}', "note": "n"},
        )
    )
    refused = web.post(
        "/tasks/WebNestedSecretsTask/runs",
        {
            "options": '{"secret_key": "leak-p1"}',
            "servers": '[{"token": "leak-p2"',  # not JSON, but it names a masked name
            "note": "kept",
        },
    )

    assert "leak-q1" not in prefilled and 'id="param-options-withheld"' in prefilled
    assert 'value="n"' in field_tag(prefilled, "note")
    assert refused.status_code == 422
    page = text(refused)
    assert "leak-p1" not in page and "leak-p2" not in page
    assert 'id="param-options-withheld"' in page and 'id="param-servers-withheld"' in page
    assert 'value="kept"' in field_tag(page, "note")
    db.session.remove()
    assert db.session.scalars(sa.select(Run)).all() == []
