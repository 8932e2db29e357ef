"""What the JSON API reads from a request: a JSON body, a start's form, query parameters.

Each is checked here, before any view acts: a body that is not a JSON object,
a field of the wrong type, a query parameter out of range is a 400
(``bad_request``) with the messages by field, and JSON that no column could
store (NaN, Infinity, a NUL character) is refused alike, saying which. Text
with a lone surrogate (``"\\ud800"``) is JSON and passes: the runner refuses
it in a start's or a preview's arguments (422 ``invalid_arguments``), and the
other fields' messages quote it escaped.
"""

from __future__ import annotations

import json
import typing as t

from flask import request

from .. import store
from .api_errors import Refusal

#: The most events and failures one response holds.
MAX_LIMIT = 1000

#: The schemas of the query parameters: a run's or a failure's id, a page's size, a filter.
CURSOR: dict[str, t.Any] = {"type": "integer", "minimum": 1, "maximum": store.MAX_RUN_ID}
LIMIT: dict[str, t.Any] = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
#: The longest filter (the columns' size).
FILTER_LENGTH = 255
FILTER: dict[str, t.Any] = {"type": "string", "maxLength": FILTER_LENGTH}

#: The fields of a start's body, and the JSON types each accepts.
START_FIELDS: dict[str, tuple[type, ...]] = {
    "arguments": (dict,),
    "dry_run": (bool,),
    "partitions": (int, type(None)),
    "error_policy": (str, type(None)),
    "max_failures": (int, type(None)),
    "max_failure_rate": (int, float, str, type(None)),
    "at": (str, type(None)),
}


def bad_request(message: str, errors: dict[str, list[str]] | None = None) -> t.NoReturn:
    """Refuse the request as malformed: 400 ``bad_request``, with the errors by field."""
    raise Refusal(400, "bad_request", message, errors)


def json_body() -> dict[str, t.Any]:
    """The body as a JSON object: ``{}`` when empty, 400 when not JSON or not an object."""
    data = request.get_data(cache=True)
    if not data.strip():
        return {}
    try:
        body = loads(data)
    except HoldsNul:
        bad_request(NUL_MESSAGE)
    except (ValueError, RecursionError):
        bad_request("The body is not JSON.")
    if not isinstance(body, dict):
        bad_request("The body must be a JSON object.")
    return body


def loads(data: str | bytes) -> t.Any:
    """JSON as the standard allows it: no NaN nor Infinity, no NUL character in any text.

    PostgreSQL refuses NaN and Infinity in a JSON column. Its ``json`` columns
    keep a ``\\u0000`` escape, but none of its text columns (a run's error
    policy, say) nor the task's own queries take a NUL character: refused as
    the dashboard's forms refuse it."""
    value = json.loads(data, parse_constant=_no_constant)
    if holds_nul(value):
        raise HoldsNul("a NUL character")
    return value


class HoldsNul(ValueError):
    """JSON with a NUL character (``\\u0000``) in some text: valid, refused (see :func:`loads`)."""


#: What a body with a NUL character is told.
NUL_MESSAGE = (
    "Text in the body may not hold a NUL character (\\u0000): PostgreSQL keeps none in text."
)


def _no_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not JSON")


def holds_nul(value: t.Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


def body() -> dict[str, t.Any]:
    """A POST's body: JSON, or nothing (415 for any other kind)."""
    if request.mimetype not in ("", "application/json"):
        raise Refusal(
            415,
            "unsupported_media_type",
            f"The body must be JSON (application/json), not {request.mimetype}.",
        )
    return json_body()


def only(given: dict[str, t.Any], types: dict[str, tuple[type, ...]]) -> dict[str, t.Any]:
    """``given`` (a body) checked against the fields ``types`` allows; 400 with errors by field."""
    errors: dict[str, list[str]] = {}
    for key, value in given.items():
        allowed = types.get(key)
        if allowed is None:
            errors[key] = [f"Unknown field: the fields are {', '.join(types)}."]
        elif not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = ", ".join(_JSON_TYPES.get(kind, kind.__name__) for kind in allowed)
            errors[key] = [f"Must be {names}."]
    if errors:
        bad_request("The body has invalid fields.", errors)
    return given


_JSON_TYPES = {
    dict: "an object",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "null",
}


def start_form() -> dict[str, t.Any]:
    """A start sent as a multipart form (with a CSV file): its fields as the JSON body's."""
    form = request.form
    files = len(request.files.getlist("csv_file"))
    if files > 1:
        bad_request(
            f"Send one csv_file: the form has {files}.",
            {"csv_file": [f"Send one file, not {files}."]},
        )
    body: dict[str, t.Any] = {}
    errors: dict[str, list[str]] = {}
    for key in form:
        if key not in START_FIELDS:
            name = str(key or "")  # a part whose name werkzeug cannot read has the name None
            errors[name] = [f"Unknown field: the fields are {', '.join(START_FIELDS)}, csv_file."]
    text = form.get("arguments", "").strip()
    if text:
        try:
            body["arguments"] = loads(text)
        except HoldsNul:
            errors["arguments"] = ["Must not hold a NUL character."]
        except (ValueError, RecursionError):
            errors["arguments"] = ["Must be a JSON object."]
    flag = form.get("dry_run", "").strip().lower()
    if flag:
        if flag not in ("true", "false", "1", "0"):
            errors["dry_run"] = ["Must be true or false."]
        body["dry_run"] = flag in ("true", "1")
    for key in ("partitions", "max_failures"):
        count = form.get(key, "").strip()
        if not count:
            continue
        if not (count.isascii() and count.isdigit() and len(count) < 10):
            errors[key] = ["Must be a whole number."]
        else:
            body[key] = int(count)
    for key in ("error_policy", "max_failure_rate", "at"):
        value = form.get(key, "").strip()
        if "\x00" in value:
            errors[key] = ["Must not hold a NUL character."]
        elif value:
            body[key] = value
    if errors:
        bad_request("The form has invalid fields.", errors)
    return body


def whole_number(name: str, pattern: dict[str, t.Any]) -> int | None:
    """A whole-number query parameter in the range of ``pattern``; 400 otherwise."""
    text = request.args.get(name, "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 20):
        bad_request(f"{name} must be a whole number.")
    value = int(text)
    if not pattern["minimum"] <= value <= pattern["maximum"]:
        bad_request(f"{name} must be from {pattern['minimum']} to {pattern['maximum']}.")
    return value


def text_filter(name: str) -> str | None:
    """A text query parameter (a filter), as long as a column holds; ``None`` when empty."""
    value = request.args.get(name, "").strip()
    if len(value) > FILTER_LENGTH or "\x00" in value:
        bad_request(f"The {name} filter is too long, or holds a NUL character.")
    return value or None
