"""The dashboard blueprint and the guards every dashboard request passes through.

In order: the parent blueprint's own hooks (Flask runs them first), "closed by
default", the secret key CSRF needs, and the CSRF token of a POST. Every
response gets a strict Content-Security-Policy. :func:`require` is what a view
calls to ask the app's ``authorize`` callable.
"""

from __future__ import annotations

import typing as t

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from ..state import get_state

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
    "The maintenance tasks dashboard is closed: pass parent= or authorize= to init_app, "
    "or set MAINTENANCE_TASKS_ALLOW_ANONYMOUS = True on a development machine."
)


def is_closed(state: State, app: Flask) -> bool:
    """True when nobody said who may use the dashboard (see "Closed by default")."""
    if state.parent is not None or state.authorize is not None:
        return False
    return not (state.settings.allow_anonymous or app.debug or app.testing)


def is_allowed(action: str, task_name: str | None = None, run: t.Any = None) -> bool:
    """What the app's ``authorize`` callable says (everything, when there is none)."""
    authorize = get_state().authorize
    return authorize is None or bool(authorize(action, task_name, run))


def require(action: str, task_name: str | None = None, run: t.Any = None) -> None:
    """Abort with 403 unless ``authorize(action, task_name, run)`` allows it."""
    if not is_allowed(action, task_name, run):
        what = f" {task_name}" if task_name else " the dashboard"
        abort(403, f"You are not allowed to {action}{what}.")


def _is_static() -> bool:
    return request.endpoint is not None and request.endpoint.endswith(".static")


@blueprint.before_request
def _guard() -> t.Any:
    if _is_static():
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = get_state(app)
    if is_closed(state, app):
        if request.path.endswith(".json"):
            return {"error": "Forbidden", "detail": CLOSED}, 403
        return render_template("maintenance_tasks/closed.html"), 403
    if not app.secret_key:
        abort(
            500,
            "The dashboard needs the app's SECRET_KEY: it signs the CSRF tokens of its forms "
            "and the session that carries its messages. Set app.config['SECRET_KEY'].",
        )
    if request.method == "POST":
        token = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        try:
            validate_csrf(token)
        except ValidationError as exc:
            reason = exc.args[0] if exc.args else "The CSRF token is invalid."
            abort(400, f"{reason} Reload the page and try again.")
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
    return response
