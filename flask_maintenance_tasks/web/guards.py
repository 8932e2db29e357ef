"""The dashboard blueprint and the guards every dashboard request passes through.

In order: the parent blueprint's own hooks (Flask runs them first), "closed by
default", the secret key CSRF needs, ``authorize`` for what the URL asks
(:func:`requested`), the size of the body, and only then the CSRF token of a
POST, the first thing that reads the body. So a request nobody may make, or
one too large, is refused before a byte of its body is read. The Prometheus
endpoint is guarded alike (:func:`_guard_metrics`), and is also opened by the
metrics bearer token (:func:`bearer_token_accepted`), checked before any hook. The
JSON API (:mod:`.api`) passes the same checks, answered as JSON
(:func:`_guard_api`), with the CSRF token in a header; or it is opened by the
API bearer token, checked before any hook too, which needs no CSRF token but
still asks ``authorize`` (:func:`check_api_request`). Every response gets a
strict Content-Security-Policy. :func:`require` is what a view calls to
ask the app's ``authorize`` callable about more than the URL says.

Who opens a dashboard that is closed by default is decided in the request
(:func:`is_closed`): an ``authorize`` callable; ``parent=`` once the parent
blueprint (or one of its ancestors) or the app has a ``before_request`` hook,
since a parent that checks nothing guards nothing; or, for development,
``app.debug`` or ``app.testing`` with a client on this machine that did not
come through a proxy.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import typing as t
import weakref

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request
from flask_wtf.csrf import validate_csrf
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream
from wtforms import ValidationError

from .. import runner, sources
from ..exceptions import TaskNotFound
from ..i18n import current_locale, lazy_gettext, number, pin_request_locale
from ..i18n import gettext as _
from ..state import get_state
from .api_errors import Refusal

if t.TYPE_CHECKING:
    from ..state import State

#: The dashboard blueprint; the same object is registered on every app (or parent).
blueprint = Blueprint(
    "maintenance_tasks",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: No inline script or style anywhere; htmx reads its settings from a meta tag.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'self'",
        "base-uri 'none'",
    ]
)

#: The header htmx sends the CSRF token in (the forms also carry it as a field).
CSRF_HEADER = "X-CSRFToken"
CSRF_FIELD = "csrf_token"

CLOSED = (
    "The maintenance tasks dashboard is closed: pass parent= (a blueprint with a "
    "before_request hook) or authorize= to init_app, or set "
    "MAINTENANCE_TASKS_ALLOW_ANONYMOUS = True on a development machine."
)

#: Twice the chunk werkzeug reads a multipart body in (see :func:`_limit_body`).
_MULTIPART_CHUNKS = 2 * 64 * 1024
#: The bodies werkzeug parses as a form (it leaves any other in the stream).
_FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})

#: Headers a reverse proxy adds. A request carrying one came through a proxy, and
#: a proxy on the same host makes every client look like it is on this machine.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

logger = logging.getLogger("flask_maintenance_tasks")

#: Apps already warned that debug or testing opens their dashboard (once per process).
_warned_open: weakref.WeakSet[Flask] = weakref.WeakSet()
#: Apps already warned that their parent blueprint guards nothing.
_warned_unguarded: weakref.WeakSet[Flask] = weakref.WeakSet()


def is_closed(state: State, app: Flask) -> bool:
    """True when nobody said who may use the dashboard (see "Closed by default").

    Asked in the request: hooks may be added after ``init_app``, and whether the
    client is on this machine is known only then.
    """
    if state.authorize is not None or state.settings.allow_anonymous:
        return False
    if state.parent is not None:
        if _guarded_by_a_hook(app):
            return False
        if app not in _warned_unguarded:
            _warned_unguarded.add(app)
            logger.warning(
                "The maintenance tasks dashboard is nested under blueprint %r, but neither it nor "
                "the app has a before_request hook, so nothing checks who is asking: the "
                "dashboard stays closed until one does, or authorize= is given.",
                state.parent.name,
            )
    if (app.debug or app.testing) and _from_this_machine():
        _warn_open_for_development(app)
        return False
    return True


def _guarded_by_a_hook(app: Flask) -> bool:
    """Whether the app or a blueprint the dashboard is nested in has a ``before_request`` hook.

    ``request.blueprints`` lists the dashboard's own blueprint first (its hook
    is :func:`_guard`, which checks nobody), then each parent outwards.
    """
    hooks = app.before_request_funcs
    return any(hooks.get(name) for name in [None, *request.blueprints[1:]])


def _from_this_machine() -> bool:
    """Whether the client is on a loopback address and no proxy forwarded the request."""
    if any(header in request.headers for header in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False  # a unix socket, or no address at all
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _opened_for_development(state: State, app: Flask) -> bool:
    """Whether only ``app.debug`` or ``app.testing`` opens the dashboard, as init_app sees it."""
    nobody_said = state.parent is None and state.authorize is None
    return nobody_said and not state.settings.allow_anonymous and (app.debug or app.testing)


def _warn_open_for_development(app: Flask) -> None:
    """Say, once per process and app, that debug or testing is what opens the dashboard."""
    if app in _warned_open:
        return
    _warned_open.add(app)
    switch = "app.debug" if app.debug else "app.testing"
    logger.warning(
        "The maintenance tasks dashboard is open without any login to requests from this "
        "machine (loopback, no proxy headers), because %s is on. Never deploy like this: pass "
        "parent= or authorize= to init_app.",
        switch,
    )


def log_access_at_start_up(state: State, app: Flask) -> None:
    """Warn when nothing opens the dashboard, or when only debug or testing does."""
    if _opened_for_development(state, app):
        _warn_open_for_development(app)
    elif state.parent is None and state.authorize is None and not state.settings.allow_anonymous:
        logger.warning(
            "The maintenance tasks dashboard is closed: pass parent= or authorize= to init_app, "
            "or set MAINTENANCE_TASKS_ALLOW_ANONYMOUS = True."
        )


def is_allowed(action: str, task_name: str | None = None, run: t.Any = None) -> bool:
    """What the app's ``authorize`` callable says (everything, when there is none)."""
    authorize = get_state().authorize
    return authorize is None or bool(authorize(action, task_name, run))


def require(action: str, task_name: str | None = None, run: t.Any = None) -> None:
    """Abort with 403 unless ``authorize(action, task_name, run)`` allows it."""
    if not is_allowed(action, task_name, run):
        if task_name:
            # Translators: "action" is the word the app's authorize callable is asked
            # ("view", "run", "pause"...); "task" the name of a task.
            message = _(
                "You are not allowed to %(action)s %(task)s.", action=action, task=task_name
            )
        else:
            message = _("You are not allowed to %(action)s the dashboard.", action=action)
        abort(403, message)


def _is_static() -> bool:
    return request.endpoint is not None and request.endpoint.endswith(".static")


def requested() -> tuple[str, str | None]:
    """What the request's URL asks to do, and to which task: ``(action, task name)``.

    Starting a run, a dry run included, is ``"run"``, and so is running a dry
    run for real; a run's button is its action (``"pause"``, ``"resume"``,
    ``"cancel"``), retrying its failed items is ``"retry_failures"``, changing
    its speed is ``"set_speed"``, and
    every other route reads (the preview of a run included): ``"view"``. The
    task is the ``<name>`` of the URL, which routes by run id do not have (see
    :func:`_require_on_run`). The JSON API's routes ask what the dashboard's
    alike do.
    """
    args = request.view_args or {}
    endpoint = endpoint_name()
    if endpoint in ("start_run", API_START_ENDPOINT):
        action = "run"
    elif endpoint in ("control", API_CONTROL_ENDPOINT):
        action = str(args["action"])
    elif endpoint in (RETRY_ENDPOINT, API_RETRY_ENDPOINT):
        action = RETRY_FAILURES
    elif endpoint in (SPEED_ENDPOINT, API_SPEED_ENDPOINT):
        action = SET_SPEED
    elif endpoint in (RUN_FOR_REAL_ENDPOINT, API_RUN_FOR_REAL_ENDPOINT):
        action = "run"
    else:
        action = "view"
    name = args.get("name")
    return action, None if name is None else str(name)


#: The action, and the view, of the "Retry failed items" button (a POST by run id).
RETRY_FAILURES = "retry_failures"
RETRY_ENDPOINT = "retry_failures"
#: The action, and the view, of a run card's speed form (a POST by run id).
SET_SPEED = "set_speed"
SPEED_ENDPOINT = "set_speed"
#: The view of the "Run for real" button of a succeeded dry run (a POST by run id), which
#: asks ``authorize`` for ``"run"``, as starting the run from the form does.
RUN_FOR_REAL_ENDPOINT = "run_for_real"
#: The view of the Prometheus endpoint (:mod:`.metrics`), which a bearer token opens too.
METRICS_ENDPOINT = "metrics"
#: The views of the JSON API (:mod:`.api`) are named with this prefix.
API_PREFIX = "api_"
#: The API's views that act, as :func:`requested` reads them.
API_START_ENDPOINT = "api_start_run"
API_CONTROL_ENDPOINT = "api_control"
API_RETRY_ENDPOINT = "api_retry_failures"
API_RUN_FOR_REAL_ENDPOINT = "api_run_for_real"
API_SPEED_ENDPOINT = "api_set_speed"
#: The methods that change nothing, so need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_api() -> bool:
    """Whether the request is one of the JSON API's."""
    return endpoint_name().startswith(API_PREFIX)


def endpoint_name() -> str:
    """The request's view, without the names of the blueprints around it."""
    return (request.endpoint or "").rsplit(".", 1)[-1]


def _bearer_token() -> str | None:
    """The bearer token of the request's ``Authorization`` header, if it has one."""
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    return given if scheme.lower() == "bearer" else None


def bearer_token_accepted(expected: str | None) -> bool:
    """Whether the request carries ``expected`` (``MAINTENANCE_TASKS_METRICS_TOKEN``,
    ``MAINTENANCE_TASKS_API_TOKEN``) as its bearer token; never when it is ``None``.

    Compared in constant time, so that how long a refusal takes says nothing
    of how much of a guess was right.
    """
    if not expected:
        return False
    given = _bearer_token()
    if given is None:
        return False
    return hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


def _refuse_metrics(state: State, reason: str) -> Response:
    """A short plain-text refusal of a scrape; a 401 asking for the token when one is configured."""
    if state.settings.metrics_token:
        # Whatever was sent, the answer is the same: nothing about the token is told.
        response = Response(
            "A valid bearer token (MAINTENANCE_TASKS_METRICS_TOKEN) is needed.\n",
            401,
            mimetype="text/plain",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="maintenance tasks metrics"'
        return response
    return Response(reason + "\n", 403, mimetype="text/plain")


def _guard_metrics(state: State, app: Flask) -> Response | None:
    """The dashboard's own guard, for a scrape that came without the right token.

    (A scrape with it was answered before any hook ran: see :mod:`.metrics`.)
    A GET changes nothing, so neither the secret key nor a CSRF token is needed.
    """
    if is_closed(state, app):
        return _refuse_metrics(state, CLOSED)
    if not is_allowed("view"):
        return _refuse_metrics(state, "You are not allowed to view the metrics.")
    _limit_body(state, None)
    return None


#: The POST routes by run id: their run is looked up and checked before the body is read.
_BY_RUN_ID = (
    RETRY_ENDPOINT,
    RUN_FOR_REAL_ENDPOINT,
    SPEED_ENDPOINT,
    API_CONTROL_ENDPOINT,
    API_SPEED_ENDPOINT,
    API_RETRY_ENDPOINT,
    API_RUN_FOR_REAL_ENDPOINT,
)


def _require_on_run(action: str) -> None:
    """For a POST by run id: 404 unless the run exists and this request may view it, then
    403 unless ``authorize(action, task, run)`` allows the action; all before the body is read.

    A run the user may not view answers as a missing one, as the other routes by id do.
    """
    run_id = int((request.view_args or {}).get("run_id", 0))
    run = runner.get_run(get_state(), run_id)
    if run is None or not is_allowed("view", run.task_name, run):
        abort(404, _("There is no run #%(id)s.", id=run_id))
    require(action, run.task_name, run)


def _body_limit(state: State, task_name: str | None) -> int:
    """The largest body this request may have, in bytes.

    ``MAINTENANCE_TASKS_MAX_FORM_BYTES`` for any form, and the CSV file on top
    for the start of a CSV task; never more than the app's ``MAX_CONTENT_LENGTH``.
    """
    limit = state.settings.max_form_bytes
    if endpoint_name() in ("start_run", API_START_ENDPOINT) and task_name:
        try:
            task = state.registry.get(task_name)
        except TaskNotFound:
            task = None
        if task is not None and sources.needs_file(task):
            limit += state.settings.max_csv_bytes
    app_limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return limit if app_limit is None else min(limit, app_limit)


def _too_large(limit: int) -> t.NoReturn:
    abort(
        413,
        _(
            "The request is too large: the dashboard accepts at most %(limit)s bytes here "
            "(MAINTENANCE_TASKS_MAX_FORM_BYTES, with MAINTENANCE_TASKS_MAX_CSV_BYTES on top for "
            "a CSV file). Nothing was changed.",
            limit=number(limit),
        ),
    )


def _limit_body(state: State, task_name: str | None) -> int:
    """Refuse a body above the limit now, and make Flask refuse one that grows past it."""
    limit = _body_limit(state, task_name)
    request.max_content_length = limit
    # werkzeug holds each 64 KiB chunk of a multipart body against this limit
    # too, so below that no file could be uploaded; :func:`_read_form` holds the
    # fields to MAINTENANCE_TASKS_MAX_FORM_BYTES once parsed.
    request.max_form_memory_size = max(state.settings.max_form_bytes, _MULTIPART_CHUNKS)
    if request.content_length is not None and request.content_length > limit:
        _too_large(limit)
    return limit


def _read_form(state: State, limit: int) -> None:
    """Parse the form now, within the limits :func:`_limit_body` set (413 beyond them)."""
    try:
        form = request.form
    except RequestEntityTooLarge:
        _too_large(min(limit, state.settings.max_form_bytes))  # a field above it
    # A body sent without Content-Length is cut at the limit without a word by
    # werkzeug: one that reached it may have been longer, and is refused. A
    # body that is not a form (JSON) is read now for that too, and kept.
    stream = request.stream
    if request.content_length is None and isinstance(stream, LimitedStream):
        if request.mimetype not in _FORM_TYPES:
            request.get_data(cache=True)
        if stream.is_exhausted:
            _too_large(limit)
    # A part whose name werkzeug cannot read has the name None.
    fields = sum(len(key or "") + len(value) for key, value in form.items(multi=True))
    if fields > state.settings.max_form_bytes:
        _too_large(state.settings.max_form_bytes)


#: Flask-WTF's reasons for refusing a CSRF token, as the dashboard's error page says them.
CSRF_REASONS: t.Final[dict[str, t.Any]] = {
    "The CSRF token is missing.": lazy_gettext("The CSRF token is missing."),
    "The CSRF session token is missing.": lazy_gettext("The CSRF session token is missing."),
    "The CSRF token has expired.": lazy_gettext("The CSRF token has expired."),
    "The CSRF token is invalid.": lazy_gettext("The CSRF token is invalid."),
    "The CSRF tokens do not match.": lazy_gettext("The CSRF tokens do not match."),
}


def _check_csrf() -> None:
    token = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    try:
        validate_csrf(token)
    except ValidationError as exc:
        reason = str(exc.args[0]) if exc.args else "The CSRF token is invalid."
        known = CSRF_REASONS.get(reason)
        abort(
            400,
            # Translators: "reason" is a sentence saying what is wrong with the CSRF token.
            _(
                "%(reason)s Reload the page and try again.",
                reason=str(known) if known is not None else reason,
            ),
        )


def check_api_request(state: State, *, csrf: bool) -> None:
    """What every request of the JSON API passes once it may use the dashboard (a session
    the app's hooks let through, or the API token): ``authorize`` for what the URL asks, the
    run of a route by id, the size of the body, and, with ``csrf``, the token of a POST."""
    action, task_name = requested()
    require(action, task_name)
    if endpoint_name() in _BY_RUN_ID:
        _require_on_run(action)
    limit = _limit_body(state, task_name)
    if request.method not in SAFE_METHODS:
        _read_form(state, limit)
        if csrf:
            _check_api_csrf()


def _check_api_csrf() -> None:
    """403 ``csrf_failed`` unless the request carries the session's CSRF token."""
    if not current_app.secret_key:
        raise Refusal(
            403,
            "csrf_failed",
            "This app has no SECRET_KEY, so no CSRF token can be checked: send the API token "
            "(MAINTENANCE_TASKS_API_TOKEN) as a bearer token instead. Nothing was changed.",
        )
    token = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    try:
        validate_csrf(token)
    except ValidationError as exc:
        reason = exc.args[0] if exc.args else "The CSRF token is invalid."
        raise Refusal(
            403,
            "csrf_failed",
            f"{reason} Send the page's CSRF token in the {CSRF_HEADER} header, or the API "
            "token as a bearer token. Nothing was changed.",
        ) from None


def _guard_api(state: State, app: Flask) -> None:
    """The dashboard's guard for a request of the JSON API without the API token.

    (One with it was answered before any hook ran: see :mod:`.api`.)
    """
    if _bearer_token() is not None:
        raise Refusal(
            401,
            "unauthorized",
            "The bearer token is not the API token (MAINTENANCE_TASKS_API_TOKEN).",
        )
    if is_closed(state, app):
        raise Refusal(403, "forbidden", CLOSED)
    check_api_request(state, csrf=True)


def _read_by_programs() -> bool:
    """Whether the request's answer is read by programs: the JSON API, a ``.json`` page,
    the metrics."""
    return is_api() or request.path.endswith(".json") or endpoint_name() == METRICS_ENDPOINT


@blueprint.url_value_preprocessor
def _pin_english(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
    """English, whatever the reader's language, for what programs read.

    A URL value preprocessor, registered before the API's, so that a request of
    the API answered with its bearer token before any hook speaks English too.
    """
    if _read_by_programs():
        pin_request_locale("en")


@blueprint.before_request
def _guard() -> t.Any:
    if _is_static():
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = get_state(app)
    if endpoint_name() == METRICS_ENDPOINT:
        return _guard_metrics(state, app)
    if is_api():
        _guard_api(state, app)
        return None
    if is_closed(state, app):
        if request.path.endswith(".json"):
            return {"error": "Forbidden", "detail": CLOSED}, 403
        parent = state.parent.name if state.parent is not None else None
        return render_template("maintenance_tasks/closed.html", parent=parent), 403
    if not app.secret_key:
        abort(
            500,
            _(
                "The dashboard needs the app's SECRET_KEY: it signs the CSRF tokens of its forms "
                "and the session that carries its messages. Set app.config['SECRET_KEY']."
            ),
        )
    # Before the task or the run is looked up, and before the body is read.
    action, task_name = requested()
    require(action, task_name)
    if endpoint_name() in _BY_RUN_ID:
        _require_on_run(action)
    limit = _limit_body(state, task_name)
    if request.method == "POST":
        _read_form(state, limit)
        _check_csrf()
    return None


@blueprint.after_request
def _secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Referrer-Policy"] = "same-origin"
    if not _is_static():
        # Pages hold CSRF tokens and live data: never from a cache.
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("HX-Request")
        if not is_api() and response.mimetype == "text/html":
            # The page's words follow the reader's language.
            response.vary.add("Accept-Language")
            response.headers["Content-Language"] = current_locale()
    return response
