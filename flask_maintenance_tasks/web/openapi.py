"""The JSON API's routes, described once: Flask's URL rules and the OpenAPI document both come
from the :class:`Route` of each view.

A view of :mod:`.api` is declared with :func:`route`, which records its
:class:`Route` in :data:`ROUTES` and adds its URL rule to the blueprint. The
document at ``<prefix>/api/openapi.json`` (:func:`document`) is built from
:data:`ROUTES` and the :data:`SCHEMAS` of the bodies; a test holds the two
together (every rule under ``/api`` documented, every documented operation
routed).
"""

from __future__ import annotations

import dataclasses
import re
import typing as t

from ..models import FailureStatus, RunStatus
from ..store import MAX_RUN_ID
from .guards import blueprint

#: The OpenAPI version of the document.
OPENAPI_VERSION = "3.1.0"

#: What each error status means in this API, for the document.
ERROR_STATUSES: dict[int, str] = {
    400: "The request is malformed (``bad_request``): a body that is not JSON, a field of "
    "the wrong type, a bad query parameter.",
    401: "A bearer token was sent that is not the API token (``unauthorized``).",
    403: "Closed, refused by ``authorize`` (``forbidden``), or a POST without the CSRF token "
    "or the API token (``csrf_failed``). Nothing was changed.",
    404: "No such task (``task_not_found``), run (``run_not_found``) or route (``not_found``); "
    "for a run's CSV file, a run that has none (``csv_not_found``).",
    409: "The run's status does not allow it (``invalid_transition``), the task already has "
    "an active run (``task_already_running``), a worker held the run's row past the lock "
    "timeout (``run_busy``: nothing was changed, ask again in a moment), or the action was "
    "refused (``refused``).",
    413: "The body, or the CSV file, is too large (``payload_too_large``, ``csv_too_large``).",
    415: "The body is neither JSON nor a multipart form (``unsupported_media_type``).",
    422: "The arguments, error policy or partitions are invalid (``invalid_arguments``, with "
    "``errors`` by field), or the CSV file is (``invalid_csv``).",
}

_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUMBER = {"type": ["number", "null"]}

#: The schemas of the bodies, under ``components/schemas``.
SCHEMAS: dict[str, dict[str, t.Any]] = {
    "Error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable: programs branch on it."},
            "message": {"type": "string", "description": "What was wrong, for people."},
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
                "description": "Messages by field, for ``invalid_arguments`` and ``bad_request``.",
            },
        },
    },
    "Task": {
        "type": "object",
        "required": ["name", "needs_csv", "allow_concurrent_runs", "parameters", "masked"],
        "properties": {
            "name": {"type": "string"},
            "description": _NULLABLE_STR,
            "needs_csv": {"type": "boolean", "description": "A run needs a CSV file."},
            "allow_concurrent_runs": {"type": "boolean"},
            "queue": {
                "type": "string",
                "description": "The RQ queue its runs' jobs go to (Task.queue, else the app's).",
            },
            "parameters": {
                "type": ["object", "null"],
                "description": "The JSON schema of the task's Parameters model, a masked "
                "parameter marked ``x-masked`` and shown without its default.",
            },
            "masked": {"type": "array", "items": {"type": "string"}},
            "runs_url": {"type": "string"},
        },
    },
    "TaskList": {
        "type": "object",
        "required": ["tasks"],
        "properties": {"tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}},
    },
    "Run": {
        "type": "object",
        "description": "A run as the dashboard's ``/runs/<id>.json`` shows it, its links "
        "to the API's routes (in a list, without its events, links and partitions).",
        "required": [
            "id",
            "task_name",
            "status",
            "tick_count",
            "tick_total",
            "percent",
            "progress",
            "status_text",
            "time_running",
            "arguments",
            "created_at",
            "error",
            "error_policy",
            "failure_count",
            "dry_run",
        ],
        "properties": {
            "id": {"type": "integer"},
            "task_name": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in RunStatus]},
            "tick_count": {"type": "integer"},
            "tick_total": _NULLABLE_INT,
            "percent": _NULLABLE_NUMBER,
            "progress": {"type": "string"},
            "status_text": {"type": "string"},
            "time_running": {"type": "number"},
            "throughput": _NULLABLE_NUMBER,
            "eta_seconds": _NULLABLE_NUMBER,
            "cursor": {"description": "Where the run stands in its collection (any JSON)."},
            "arguments": {"description": "Masked: a secret is ``[FILTERED]``."},
            "metadata": {"description": "MAINTENANCE_TASKS_METADATA's answer, masked."},
            "published": {
                "type": ["object", "null"],
                "description": "What the task published with ``self.status`` (JSON values), "
                "as of its last committed tick; masked as the arguments are.",
            },
            "step": {
                **_NULLABLE_STR,
                "description": 'The published step as people read it: "Step 2 of 3: re-indexing".',
            },
            "interruption_reason": _NULLABLE_STR,
            "job_id": _NULLABLE_STR,
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": ["string", "null"], "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "ended_at": {"type": ["string", "null"], "format": "date-time"},
            "error": {
                "type": ["object", "null"],
                "properties": {
                    "class": {"type": "string"},
                    "message": _NULLABLE_STR,
                    "backtrace": {"type": ["array", "null"], "items": {"type": "string"}},
                },
            },
            "started_by": _NULLABLE_STR,
            "error_policy": {
                "type": "object",
                "required": ["policy", "max_failures", "max_failure_rate"],
                "properties": {
                    "policy": {"type": "string"},
                    "max_failures": _NULLABLE_INT,
                    "max_failure_rate": _NULLABLE_NUMBER,
                },
            },
            "failure_count": {"type": "integer"},
            "retry_of": _NULLABLE_INT,
            "dry_run": {"type": "boolean"},
            "changes": {"description": "What a dry run would change (null for a normal run)."},
            "changes_summary": {"type": ["array", "null"], "items": {"type": "string"}},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "events_omitted": {"type": "integer"},
            "failures_url": {"type": "string"},
            "failures_csv_url": {"type": "string"},
            "csv_url": {"type": "string", "description": "Only for a run with a CSV file."},
            "retries": {"type": "array", "items": {"type": "integer"}},
            "run_for_real_url": {"type": "string"},
            "partition_count": _NULLABLE_INT,
            "partitions": {"type": "array", "items": {"type": "object"}},
            "partition": _NULLABLE_INT,
            "parent_id": _NULLABLE_INT,
            "parent_url": {"type": "string"},
            "scheduled_at": {"type": ["string", "null"], "format": "date-time"},
            "pace": {"$ref": "#/components/schemas/Pace"},
            "speed": {
                "type": "object",
                "description": "The operator's speed overrides; null: the task's own.",
                "properties": {
                    "rate": {**_NULLABLE_NUMBER, "description": "Most items per second."},
                    "batch_size": {**_NULLABLE_INT, "description": "Records per query."},
                    "ticker_delay": {**_NULLABLE_NUMBER, "description": "Seconds per tick."},
                },
            },
        },
    },
    "Pace": {
        "type": "object",
        "description": "The run's recent throughput, one point per tick, oldest first: its "
        "last ``max_points`` ticks. A partitioned run's is its partitions' added up by time, "
        "in the run's own JSON (empty in lists of runs).",
        "required": [
            "max_points",
            "latest_rate",
            "average_rate",
            "throttled",
            "interrupted",
            "points",
        ],
        "properties": {
            "max_points": {"type": "integer", "description": "The most points a run keeps."},
            "latest_rate": {**_NULLABLE_NUMBER, "description": "Items per second, last point."},
            "average_rate": {
                **_NULLABLE_NUMBER,
                "description": "All the points' items over all their seconds.",
            },
            "throttled": {"type": "integer", "description": "Stretches of throttled points."},
            "interrupted": {"type": "integer", "description": "Points after an interruption."},
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "seconds", "items", "rate", "throttled", "interrupted"],
                    "properties": {
                        "at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the tick committed (the worker's clock).",
                        },
                        "seconds": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "description": "The seconds of work the point spans.",
                        },
                        "items": {"type": "number", "minimum": 0},
                        "rate": {
                            "type": "number",
                            "minimum": 0,
                            "description": "Items per second: items / seconds.",
                        },
                        "throttled": {
                            "type": "boolean",
                            "description": "The run waited on its speed cap, or on a "
                            "throttle's backoff just before.",
                        },
                        "interrupted": {
                            "type": "boolean",
                            "description": "The first point after the run stopped (pause, "
                            "next slice, crash recovery, retry).",
                        },
                    },
                },
            },
        },
    },
    "RunList": {
        "type": "object",
        "required": ["runs", "next_cursor"],
        "properties": {
            "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
            "next_cursor": {
                **_NULLABLE_INT,
                "description": "Pass as ``cursor`` for the next page; null on the last.",
            },
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "action", "outcome", "origin"],
        "properties": {
            "id": {"type": "integer"},
            "at": _NULLABLE_STR,
            "action": {"type": "string"},
            "outcome": {"type": "string"},
            "detail": _NULLABLE_STR,
            "actor": _NULLABLE_STR,
            "origin": {"type": "string"},
            "address": _NULLABLE_STR,
        },
    },
    "EventList": {
        "type": "object",
        "required": ["run_id", "events", "events_omitted"],
        "properties": {
            "run_id": {"type": "integer"},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "events_omitted": {"type": "integer"},
        },
    },
    "Failure": {
        "type": "object",
        "required": ["id", "run_id", "error_class", "status"],
        "properties": {
            "id": {"type": "integer"},
            "run_id": {"type": "integer"},
            "error_class": {"type": "string"},
            "message": _NULLABLE_STR,
            "status": {"type": "string", "enum": [s.value for s in FailureStatus]},
            "attempt": {"type": "integer"},
        },
    },
    "FailureList": {
        "type": "object",
        "required": ["run_id", "failures", "next_after"],
        "properties": {
            "run_id": {"type": "integer"},
            "failures": {"type": "array", "items": {"$ref": "#/components/schemas/Failure"}},
            "next_after": {
                **_NULLABLE_INT,
                "description": "Pass as ``after`` for the next page; null on the last.",
            },
        },
    },
    "Preview": {
        "type": "object",
        "required": ["task_name", "valid", "errors", "count_kind", "items", "notes"],
        "properties": {
            "task_name": {"type": "string"},
            "arguments": {},
            "valid": {"type": "boolean"},
            "errors": {"type": "object"},
            "count": _NULLABLE_INT,
            "count_kind": {"type": "string", "enum": ["exact", "at_least", "estimate", "unknown"]},
            "count_text": {"type": "string"},
            "items": {"type": "array"},
            "sql": _NULLABLE_STR,
            "notes": {"type": "array", "items": {"type": "string"}},
            "needs_file": {"type": "boolean"},
        },
    },
    "Arguments": {
        "type": "object",
        "properties": {
            "arguments": {
                "type": "object",
                "description": "The task's parameters (see the task's ``parameters`` schema).",
            },
        },
        "additionalProperties": False,
    },
    "StartRun": {
        "type": "object",
        "properties": {
            "arguments": {"type": "object", "description": "The task's parameters."},
            "dry_run": {"type": "boolean", "default": False},
            "partitions": {**_NULLABLE_INT, "description": "Overrides the task's partitions."},
            "error_policy": {
                **_NULLABLE_STR,
                "description": "``stop``, ``skip`` or ``report``; null keeps the task's.",
            },
            "max_failures": _NULLABLE_INT,
            "max_failure_rate": {
                "type": ["number", "string", "null"],
                "description": "A fraction (0.05) or a percentage (``5%``).",
            },
            "at": {
                **_NULLABLE_STR,
                "description": "When to start it: an ISO 8601 time with its offset "
                "(``2026-12-01T02:00:00+00:00``); the run is ``scheduled`` until then.",
            },
        },
        "additionalProperties": False,
    },
    "StartRunForm": {
        "type": "object",
        "description": "The fields of StartRun as text (``arguments`` as a JSON object), "
        "and the CSV file.",
        "properties": {
            "arguments": {"type": "string"},
            "dry_run": {"type": "string", "enum": ["true", "false"]},
            "partitions": {"type": "string"},
            "error_policy": {"type": "string"},
            "max_failures": {"type": "string"},
            "max_failure_rate": {"type": "string"},
            "at": {"type": "string"},
            "csv_file": {"type": "string", "contentMediaType": "application/octet-stream"},
        },
    },
    "SetSpeed": {
        "type": "object",
        "description": "A field left out keeps its value; null gives it back to the task "
        "(a null rate lifts the cap).",
        "properties": {
            "rate": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "description": "The most items per second the run processes.",
            },
            "batch_size": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": 100_000,
                "description": "Records per query, from the job's next slice.",
            },
            "ticker_delay": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "description": "Seconds between two progress commits, at most half of "
                "MAINTENANCE_TASKS_STUCK_AFTER.",
            },
        },
        "additionalProperties": False,
    },
    "Document": {"type": "object", "description": "This OpenAPI document."},
    "CSVFile": {"type": "string", "description": "A CSV file, as a download."},
}

#: Path parameters by name: their OpenAPI description and the URL converter of the rule.
PATH_PARAMETERS: dict[str, tuple[dict[str, t.Any], str]] = {
    "name": ({"type": "string", "minLength": 1}, "<name>"),
    "run_id": ({"type": "integer", "minimum": 1, "maximum": MAX_RUN_ID}, "<int:run_id>"),
}


def query(name: str, schema: dict[str, t.Any], description: str) -> dict[str, t.Any]:
    """An optional query parameter of a route."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


@dataclasses.dataclass(frozen=True)
class Route:
    """One operation of the API: its URL rule, what ``authorize`` is asked, and its document."""

    method: str
    #: The path under the dashboard's prefix, in OpenAPI's form (``/api/runs/{run_id}``).
    path: str
    #: The view's name (every one starts with ``api_``, see :data:`.guards.API_PREFIX`).
    endpoint: str
    summary: str
    #: What ``authorize(action, task, run)`` is asked.
    action: str
    #: The success status and the schema of its body.
    status: int
    schema: str
    #: The media type of the success body (an error is always JSON).
    media_type: str = "application/json"
    query: tuple[dict[str, t.Any], ...] = ()
    #: The schemas of the request body by media type.
    body: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The error statuses it may answer, besides those of every route.
    errors: tuple[int, ...] = ()
    #: Fixed values of the URL rule (``action`` of the three run buttons).
    defaults: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def rule(self) -> str:
        """The Flask URL rule of :attr:`path`."""
        return re.sub(r"\{(\w+)\}", lambda m: PATH_PARAMETERS[m.group(1)][1], self.path)

    @property
    def path_names(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)

    def statuses(self) -> list[int]:
        """Every status it may answer: 400, 401 and 403 always; 404 with a path parameter."""
        found = {400, 401, 403, *self.errors}
        if self.path_names:
            found.add(404)
        if self.method == "POST":
            found.update({413, 415})
        return sorted(found)

    def operation(self) -> dict[str, t.Any]:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name][0]}
            for name in self.path_names
        ]
        responses: dict[str, t.Any] = {
            str(self.status): {
                "description": self.summary,
                "content": {self.media_type: {"schema": _ref(self.schema)}},
            }
        }
        for status in self.statuses():
            responses[str(status)] = {
                "description": ERROR_STATUSES[status],
                "content": {"application/json": {"schema": _ref("Error")}},
            }
        operation: dict[str, t.Any] = {
            "operationId": self.endpoint.removeprefix("api_")
            + ("_" + self.defaults["action"] if "action" in self.defaults else ""),
            "summary": self.summary,
            "description": f"``authorize`` is asked for ``{self.action}``.",
            "parameters": parameters + list(self.query),
            "responses": responses,
        }
        if self.body:
            operation["requestBody"] = {
                "required": False,
                "content": {media: {"schema": _ref(name)} for media, name in self.body.items()},
            }
        return operation


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


#: Every operation of the API, in the order of the document.
ROUTES: list[Route] = []

View = t.TypeVar("View", bound=t.Callable[..., t.Any])


def route(description: Route, *more: Route) -> t.Callable[[View], View]:
    """Declare a view of the API by its :class:`Route` (or several sharing one view)."""

    def register(view: View) -> View:
        for each in (description, *more):
            ROUTES.append(each)
            options: dict[str, t.Any] = {"defaults": each.defaults} if each.defaults else {}
            blueprint.add_url_rule(each.rule, each.endpoint, view, methods=[each.method], **options)
        return view

    return register


def document(server_url: str, *, version: str) -> dict[str, t.Any]:
    """The OpenAPI 3.1 document of the API, its paths relative to ``server_url`` (the
    dashboard's URL)."""
    paths: dict[str, dict[str, t.Any]] = {}
    for each in ROUTES:
        paths.setdefault(each.path, {})[each.method.lower()] = each.operation()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Maintenance tasks",
            "version": version,
            "description": "Run, follow and control maintenance tasks. Send the API token "
            "(MAINTENANCE_TASKS_API_TOKEN) as a bearer token, or, from the dashboard's own "
            "pages, the session's CSRF token in the X-CSRFToken header.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken"},
            },
        },
        "security": [{"bearer": []}, {"csrf": []}],
    }
