"""The JSON API under ``<prefix>/api/``: what the dashboard and the CLI do, for programs.

Each view asks the runner, as the dashboard's do, and answers with the same
builders (:func:`.views.run_data` for a run, its links to the API's routes;
:mod:`.formatting` for events and failures), so a run reads the same
everywhere. Its routes are described once in :mod:`.openapi`, which also
gives the document at ``<prefix>/api/openapi.json``.

Who may call it: a session the dashboard's guard lets through, its POSTs
carrying the CSRF token in the ``X-CSRFToken`` header as htmx sends it; or a
program sending ``MAINTENANCE_TASKS_API_TOKEN`` as its bearer token, which
needs no CSRF token (no browser sends it by itself). The token is checked in
a URL value preprocessor, before any ``before_request`` hook (a parent's login
check included), and such a request is answered there, after the checks every
API request passes (:func:`.guards.check_api_request`: ``authorize`` among
them). Every error is JSON with a stable ``code`` (:mod:`.api_errors`).
"""

from __future__ import annotations

import typing as t

from flask import Response, abort, current_app, request, url_for
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from .. import audit, formatting, masking, runner, sources, store
from .. import preview as previews
from ..csv.uploads import csv_file_of
from ..exceptions import (
    CannotRetry,
    CSVFileError,
    CSVFileTooLarge,
    EnqueueError,
    InvalidArguments,
    InvalidTransition,
    MaintenanceTasksError,
    RunBusy,
    RunNotFound,
    TaskAlreadyRunning,
    TaskNotFound,
)
from ..models import FailureStatus, Run, RunStatus
from ..state import State, get_state
from . import pages, views
from .api_errors import Refusal
from .api_requests import (
    CURSOR,
    FILTER,
    LIMIT,
    MAX_LIMIT,
    START_FIELDS,
    bad_request,
    body,
    only,
    start_form,
    text_filter,
    whole_number,
)
from .guards import (
    API_CONTROL_ENDPOINT,
    API_PREFIX,
    API_RETRY_ENDPOINT,
    API_RUN_FOR_REAL_ENDPOINT,
    API_SPEED_ENDPOINT,
    API_START_ENDPOINT,
    SET_SPEED,
    bearer_token_accepted,
    blueprint,
    check_api_request,
    is_allowed,
    is_api,
)
from .openapi import Route, document, query, route

if t.TYPE_CHECKING:
    from ..task import Task

#: The version of the API, in its document.
API_VERSION = "1.0"

# -- the token, and errors ---------------------------------------------------------


@blueprint.url_value_preprocessor
def _answer_with_token(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
    if not is_api():
        return
    state = get_state()
    if not bearer_token_accepted(state.settings.api_token):
        return
    check_api_request(state, csrf=False)
    view = current_app.view_functions[t.cast(str, endpoint)]
    # Answered here, before the hooks: a response raised from a URL value
    # preprocessor ends the request, and the after_request hooks still run.
    abort(current_app.make_response(t.cast(t.Any, view(**(values or {})))))


def _refusal(error: MaintenanceTasksError) -> Refusal:
    """What the runner's refusal is as an answer of the API."""
    if isinstance(error, TaskNotFound):
        return Refusal(404, "task_not_found", str(error))
    if isinstance(error, RunNotFound):
        return Refusal(404, "run_not_found", str(error))
    if isinstance(error, CSVFileTooLarge):
        return Refusal(413, "csv_too_large", str(error))
    if isinstance(error, CSVFileError):
        return Refusal(422, "invalid_csv", str(error), {"csv_file": [str(error)]})
    if isinstance(error, InvalidArguments):
        return Refusal(422, "invalid_arguments", str(error), error.errors)
    if isinstance(error, InvalidTransition):
        return Refusal(409, "invalid_transition", str(error))
    if isinstance(error, TaskAlreadyRunning):
        return Refusal(409, "task_already_running", str(error))
    if isinstance(error, RunBusy):
        return Refusal(409, "run_busy", str(error))
    if isinstance(error, CannotRetry):
        return Refusal(409, "cannot_retry", str(error))
    if isinstance(error, EnqueueError):
        return Refusal(503, "enqueue_failed", str(error))
    return Refusal(409, "refused", str(error))


def _actor(state: State) -> audit.Actor:
    return views.request_actor(state, audit.API)


def _metadata(state: State) -> t.Any:
    return state.settings.metadata() if state.settings.metadata is not None else None


#: What a run's JSON links to: the API's routes.
_LINKS = views.RunLinks(
    failures=".api_run_failures",
    failures_csv=".api_run_failures_csv",
    run_for_real=".api_run_for_real",
    run=".api_run",
)


def _run_data(run: Run) -> dict[str, t.Any]:
    """The run as :func:`.views.run_data` gives it, linked to the API's routes, and to its
    CSV file when it has one (``csv_url``: one more query, which the dashboard's JSON spares)."""
    data = views.run_data(run, _LINKS)
    if csv_file_of(get_state(), run) is not None:
        data["csv_url"] = url_for(".api_run_csv", run_id=run.id)
    return data


def _viewable_run(run_id: int) -> Run:
    run = runner.get_run(get_state(), run_id)
    if run is None or not is_allowed("view", run.task_name, run):
        raise Refusal(404, "run_not_found", f"There is no run #{run_id}.")
    return run


def _task_class(name: str) -> type[Task]:
    try:
        return get_state().registry.get(name)
    except TaskNotFound as error:
        raise Refusal(404, "task_not_found", str(error)) from None


# -- tasks -------------------------------------------------------------------------


def _parameters_schema(task_class: type[Task], masked: tuple[str, ...]) -> dict[str, t.Any] | None:
    """The JSON schema of the task's parameters, each masked one marked and without its
    default (a default may be a secret)."""
    model = task_class.Parameters
    if model is None:
        return None
    try:
        schema = model.model_json_schema()
    except Exception:  # a type pydantic cannot describe: the task still runs
        current_app.logger.warning("No JSON schema for %s", task_class.name, exc_info=True)
        return {"type": "object", "description": "This task's parameters have no JSON schema."}
    _, patterns = masking.masked_names(task_class, masked)
    for name, field in schema.get("properties", {}).items():
        if masking.is_secret_parameter(name, task_class, masked):
            field["x-masked"] = True
            field.pop("default", None)
            field.pop("examples", None)
    _drop_masked_defaults(schema, patterns)
    return schema


def _drop_masked_defaults(node: t.Any, patterns: tuple[str, ...]) -> None:
    """Mark and strip the default of every property, at any depth, whose name is masked."""
    if isinstance(node, dict):
        for name, field in (node.get("properties") or {}).items():
            if isinstance(field, dict) and any(p in str(name).lower() for p in patterns):
                field["x-masked"] = True
                field.pop("default", None)
                field.pop("examples", None)
        for value in node.values():
            _drop_masked_defaults(value, patterns)
    elif isinstance(node, list):
        for value in node:
            _drop_masked_defaults(value, patterns)


def _task_dict(task_class: type[Task]) -> dict[str, t.Any]:
    masked = get_state().settings.masked_parameters
    schema = _parameters_schema(task_class, masked)
    secret = sorted(
        name
        for name in (schema or {}).get("properties", {})
        if masking.is_secret_parameter(name, task_class, masked)
    )
    return {
        "name": task_class.name,
        "description": (task_class.__doc__ or "").strip() or None,
        "needs_csv": sources.needs_file(task_class),
        "allow_concurrent_runs": bool(task_class.allow_concurrent_runs),
        "queue": task_class.queue or get_state().settings.queue,
        "parameters": schema,
        "masked": secret,
        "runs_url": url_for(".api_runs", task=task_class.name),
    }


@route(
    Route(
        "GET",
        "/api/tasks",
        "api_tasks",
        "The tasks of the code.",
        "view",
        200,
        "TaskList",
        query=(
            query(
                "q",
                {"type": "string"},
                "Only the tasks whose name holds this text, case aside (the dashboard's search).",
            ),
        ),
    )
)
def tasks() -> t.Any:
    search = request.args.get("q", "").strip()
    registry = get_state().registry
    found = [registry.get(name) for name in sorted(registry.tasks())]
    return {
        "tasks": [
            _task_dict(each)
            for each in found
            if pages.matches_query(each.name, search) and is_allowed("view", each.name)
        ]
    }


@route(Route("GET", "/api/tasks/{name}", "api_task", "A task.", "view", 200, "Task"))
def task(name: str) -> t.Any:
    task_class = _task_class(name)
    return _task_dict(task_class)


# -- starting runs -----------------------------------------------------------------


@route(
    Route(
        "POST",
        "/api/tasks/{name}/runs",
        API_START_ENDPOINT,
        "Start a run (a dry run with dry_run), with a CSV file as a multipart form.",
        "run",
        201,
        "Run",
        body={"application/json": "StartRun", "multipart/form-data": "StartRunForm"},
        errors=(409, 422),
    )
)
def start_run(name: str) -> t.Any:
    state = get_state()
    _task_class(name)
    csv_file = None
    if request.mimetype == "multipart/form-data":
        options = only(start_form(), START_FIELDS)
        upload = request.files.get("csv_file")
        csv_file = upload if upload is not None and upload.filename else None
    else:
        options = only(body(), START_FIELDS)
    try:
        run = runner.run(
            state,
            name,
            options.get("arguments") or {},
            csv_file=csv_file,
            metadata=_metadata(state),
            actor=_actor(state),
            dry_run=bool(options.get("dry_run", False)),
            partitions=options.get("partitions"),
            error_policy=options.get("error_policy"),
            max_failures=options.get("max_failures"),
            max_failure_rate=options.get("max_failure_rate"),
            at=options.get("at"),
        )
    except MaintenanceTasksError as error:
        raise _refusal(error) from None
    return _created(run)


def _created(run: Run) -> Response:
    response = t.cast(Response, current_app.json.response(_run_data(run)))
    response.status_code = 201
    response.headers["Location"] = url_for(".api_run", run_id=run.id)
    return response


def _start_from(run_id: int, start: t.Callable[..., Run]) -> Response:
    """Start a run from run ``run_id`` (its retry, or its run for real)."""
    body()
    state = get_state()
    try:
        started = start(state, run_id, metadata=_metadata(state), actor=_actor(state))
    except MaintenanceTasksError as error:
        raise _refusal(error) from None
    return _created(started)


@route(
    Route(
        "POST",
        "/api/runs/{run_id}/retry-failures",
        API_RETRY_ENDPOINT,
        "Start a run over the unresolved failed items of the run.",
        "retry_failures",
        201,
        "Run",
        errors=(409,),
    )
)
def retry_failures(run_id: int) -> t.Any:
    return _start_from(run_id, runner.retry_failures)


@route(
    Route(
        "POST",
        "/api/runs/{run_id}/run-for-real",
        API_RUN_FOR_REAL_ENDPOINT,
        "Start a normal run doing what this succeeded dry run did.",
        "run",
        201,
        "Run",
        errors=(409,),
    )
)
def run_for_real(run_id: int) -> t.Any:
    return _start_from(run_id, runner.run_for_real)


# -- controlling runs --------------------------------------------------------------

#: The run buttons, as the runner names them.
_ACTIONS: dict[str, t.Callable[..., Run]] = {
    "pause": runner.pause,
    "resume": runner.resume,
    "cancel": runner.cancel,
}


def _control_route(action: str, summary: str) -> Route:
    return Route(
        "POST",
        f"/api/runs/{{run_id}}/{action}",
        API_CONTROL_ENDPOINT,
        summary,
        action,
        200,
        "Run",
        errors=(409,),
        defaults={"action": action},
    )


@route(
    _control_route(
        "pause", "Pause the run at its next item; a stuck run is forced to paused at once."
    ),
    _control_route("resume", "Resume a paused or interrupted run from its cursor."),
    _control_route(
        "cancel", "Cancel the run at its next item; a paused or stuck run is cancelled at once."
    ),
)
def control(run_id: int, action: str) -> t.Any:
    body()
    state = get_state()
    try:
        run = _ACTIONS[action](state, run_id, actor=_actor(state))
    except MaintenanceTasksError as error:
        raise _refusal(error) from None
    return _run_data(run)


#: The fields of a speed change's body, and the JSON types each accepts.
_SPEED_FIELDS: dict[str, tuple[type, ...]] = {
    "rate": (int, float, type(None)),
    "batch_size": (int, type(None)),
    "ticker_delay": (int, float, type(None)),
}


@route(
    Route(
        "POST",
        "/api/runs/{run_id}/speed",
        API_SPEED_ENDPOINT,
        "Cap the active run's speed, or change its batch size or ticker delay, without "
        "pausing it; its job takes them at its next status reload.",
        SET_SPEED,
        200,
        "Run",
        body={"application/json": "SetSpeed"},
        errors=(409, 422),
    )
)
def set_speed(run_id: int) -> t.Any:
    given = only(body(), _SPEED_FIELDS)
    state = get_state()
    try:
        run = runner.set_speed(
            state,
            run_id,
            **{name: value for name, value in given.items() if value is not None},
            reset=[name for name, value in given.items() if value is None],
            actor=_actor(state),
        )
    except MaintenanceTasksError as error:
        raise _refusal(error) from None
    return _run_data(run)


# -- reading runs ------------------------------------------------------------------


@route(
    Route(
        "GET",
        "/api/runs",
        "api_runs",
        "Every task's runs, newest first, a page at a time.",
        "view",
        200,
        "RunList",
        query=(
            query("task", FILTER, "Only this task's runs."),
            query("status", {"type": "string", "enum": [s.value for s in RunStatus]}, "Status."),
            query("who", FILTER, "Only runs started by this operator."),
            query("cursor", CURSOR, "The next_cursor of the previous page."),
        ),
    )
)
def runs() -> t.Any:
    status = text_filter("status")
    if status is not None and status not in RunStatus._value2member_map_:
        bad_request(f"There is no status {status!r}.", {"status": ["Unknown status."]})
    filters = pages.RunFilters(task=text_filter("task"), status=status, who=text_filter("who"))
    page = pages.runs_page(get_state(), filters, whole_number("cursor", CURSOR))
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return {
        "runs": [formatting.run_as_dict(app, run) for run in page.runs],
        "next_cursor": page.next_cursor,
    }


@route(Route("GET", "/api/runs/{run_id}", "api_run", "A run.", "view", 200, "Run"))
def run(run_id: int) -> t.Any:
    return _run_data(_viewable_run(run_id))


@route(
    Route(
        "GET",
        "/api/runs/{run_id}/csv",
        "api_run_csv",
        "The run's CSV file, as it was given (a partition's is its run's).",
        "view",
        200,
        "CSVFile",
        media_type="text/csv",
    )
)
def run_csv(run_id: int) -> t.Any:
    found = _viewable_run(run_id)
    response = views.csv_file_response(found, audit.API)
    if response is None:
        raise Refusal(404, "csv_not_found", f"Run #{run_id} has no CSV file.")
    return response


@route(
    Route(
        "GET",
        "/api/runs/{run_id}/events",
        "api_run_events",
        "The latest events of the run's audit trail, oldest first.",
        "view",
        200,
        "EventList",
        query=(query("limit", LIMIT, f"How many (200 by default, {MAX_LIMIT} at most)."),),
    )
)
def run_events(run_id: int) -> t.Any:
    limit = whole_number("limit", LIMIT) or views.JSON_EVENTS
    found = _viewable_run(run_id)
    with store.open_session(get_state().db) as session:
        timeline = audit.timeline(session, found.id, limit)
    return {
        "run_id": found.id,
        "events": [formatting.event_as_dict(event) for event in timeline.events],
        "events_omitted": timeline.omitted,
    }


#: The filters of a run's failures, as JSON and as CSV.
_FAILURE_QUERY = (
    query("class", FILTER, "Only failures of this error class."),
    query(
        "status",
        {"type": "string", "enum": [s.value for s in FailureStatus]},
        "Only failures in this status.",
    ),
)


def _failure_filters() -> pages.FailureFilters:
    """The ``class``, ``status`` and ``after`` of a run's failures; 400 for a bad one."""
    status = text_filter("status")
    if status is not None and status not in FailureStatus._value2member_map_:
        bad_request(f"There is no failure status {status!r}.", {"status": ["Unknown status."]})
    return pages.FailureFilters(
        error_class=text_filter("class"), status=status, after=whole_number("after", CURSOR)
    )


@route(
    Route(
        "GET",
        "/api/runs/{run_id}/failures",
        "api_run_failures",
        "The run's failed items, in the order they were met, a page at a time.",
        "view",
        200,
        "FailureList",
        query=(
            *_FAILURE_QUERY,
            query("after", CURSOR, "The next_after of the previous page."),
            query("limit", LIMIT, "How many (100 by default)."),
        ),
    )
)
def run_failures(run_id: int) -> t.Any:
    filters = _failure_filters()
    limit = whole_number("limit", LIMIT) or 100
    found = _viewable_run(run_id)
    failures = runner.failures(
        get_state(),
        found.id,
        error_class=filters.error_class,
        status=filters.status,
        after=filters.after,
        limit=limit + 1,
    )
    return {
        "run_id": found.id,
        "failures": [formatting.failure_as_dict(each) for each in failures[:limit]],
        "next_after": failures[limit - 1].id if len(failures) > limit else None,
    }


@route(
    Route(
        "GET",
        "/api/runs/{run_id}/failures.csv",
        "api_run_failures_csv",
        "Every failed item of the run that the filters keep, as CSV, in the order they were met.",
        "view",
        200,
        "CSVFile",
        media_type="text/csv",
        query=(
            *_FAILURE_QUERY,
            query("after", CURSOR, "Only failures after this one (its id)."),
        ),
    )
)
def run_failures_csv(run_id: int) -> t.Any:
    filters = _failure_filters()
    return views.failures_csv_response(_viewable_run(run_id), filters)


# -- previews ----------------------------------------------------------------------


@route(
    Route(
        "POST",
        "/api/tasks/{name}/preview",
        "api_preview",
        "What a run with these arguments would walk; writes nothing.",
        "view",
        200,
        "Preview",
        body={"application/json": "Arguments"},
        errors=(422,),
    )
)
def preview(name: str) -> t.Any:
    """A POST, so that secret arguments never travel in a URL; it changes nothing."""
    options = only(body(), {"arguments": (dict,)})
    state = get_state()
    _task_class(name)
    try:
        found = previews.preview(state, name, options.get("arguments") or {})
    except MaintenanceTasksError as error:
        raise _refusal(error) from None
    except Exception as error:  # the task's collection or count, on any arguments
        current_app.logger.warning("The preview of %s failed", name, exc_info=True)
        found = previews.Preview(name, {})
        found.notes.append(f"The preview failed: {type(error).__name__}.")
    if found.errors:
        raise Refusal(422, "invalid_arguments", "The arguments are invalid.", found.errors)
    return found.as_dict()


# -- the document, and what no route matches ------------------------------------------


@route(
    Route(
        "GET",
        "/api/openapi.json",
        "api_openapi",
        "This OpenAPI document.",
        "view",
        200,
        "Document",
    )
)
def openapi() -> t.Any:
    server = url_for(".index").rstrip("/")
    return document(server, version=API_VERSION)


#: The endpoint of every other URL under ``/api/``: a JSON 404 or 405.
_UNMATCHED = API_PREFIX + "unmatched"


def _unmatched(rest: str) -> t.NoReturn:
    """No route of the API takes this URL with this method: 405 when another method would do."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        try:
            endpoint, _ = adapter.match(method=method)
        except (NotFound, MethodNotAllowed, RequestRedirect):
            continue
        if not str(endpoint).endswith("." + _UNMATCHED):
            allowed.append(method)
    if allowed:
        raise MethodNotAllowed(valid_methods=allowed, description="The method is not allowed here.")
    raise Refusal(404, "not_found", f"There is no route {request.path} in the API.")


blueprint.add_url_rule(
    "/api/<path:rest>",
    _UNMATCHED,
    _unmatched,
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
)
