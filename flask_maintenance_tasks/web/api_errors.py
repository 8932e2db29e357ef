"""The errors of the JSON API: each one JSON, with its HTTP status and a stable ``code``.

A guard or a view of the API raises a :class:`Refusal` with the code it
means; any other HTTP error raised in the API (a 404 of Flask, a 413 of a
body too large) gets the code of its status. The blueprint's error handler
answers them with :func:`refusal_response`.
"""

from __future__ import annotations

import typing as t

from flask import Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed


class Refusal(HTTPException):
    """An error of the JSON API: its HTTP status, its stable ``code``, and field errors."""

    def __init__(
        self,
        status: int,
        code: str,
        description: str,
        errors: t.Mapping[str, t.Any] | None = None,
    ) -> None:
        super().__init__(description)
        self.code = status
        self.api_code = code
        self.errors = dict(errors) if errors is not None else None


#: The ``code`` of an HTTP error of the API that is not a :class:`Refusal`, by status.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_arguments",
    503: "unavailable",
}


def refusal_response(error: HTTPException) -> Response:
    """An HTTP error of the API as JSON: ``{"code", "message"[, "errors"]}``.

    A 404 of a route by run id is ``run_not_found``, of a route by task name
    ``task_not_found``: only the route's guard or view can have raised it.
    """
    status = error.code or 500
    code = getattr(error, "api_code", None)
    if code is None:
        args = request.view_args or {}
        if status == 404 and "run_id" in args:
            code = "run_not_found"
        elif status == 404 and "name" in args:
            code = "task_not_found"
        else:
            code = _CODES.get(status, "error")
    body: dict[str, t.Any] = {"code": code, "message": error.description or error.name}
    errors = getattr(error, "errors", None)
    if errors:
        body["errors"] = errors
    response = t.cast(Response, current_app.json.response(body))
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="maintenance tasks api"'
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    if code == "run_busy":
        response.headers["Retry-After"] = "1"
    return response
