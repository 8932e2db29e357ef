"""The dashboard's routes (API.md section 6).

A plain request gets a whole page, and a plain form POST redirects back to the
page (so every action works without JavaScript). An htmx request
(``HX-Request: true``) gets only the region it refreshes, and an action done
through htmx gets that region with its message.

Before any view runs, the blueprint's guard has asked ``authorize(action,
name, None)`` for what the URL says (:func:`.guards.requested`). A view asks
more only before it looks anything up, so that a user refused cannot tell
which tasks and runs exist: ``"view"`` too where its answer shows the task,
then, once the run is found, the action on that run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import typing as t

import sqlalchemy as sa
from flask import (
    Response,
    abort,
    current_app,
    flash,
    get_flashed_messages,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import audit, docstrings, formatting, i18n, ledger, partitions, runner, store
from .. import preview as previews
from ..csv.uploads import csv_download
from ..exceptions import (
    CSVFileError,
    CSVFileTooLarge,
    EnqueueError,
    InvalidArguments,
    MaintenanceTasksError,
    RunBusy,
    TaskAlreadyRunning,
    TaskNotFound,
)
from ..i18n import gettext as _
from ..i18n import lazy_gettext
from ..models import FailureStatus, Run, RunStatus, utcnow
from ..state import State, get_state
from . import forms, pages
from .api_errors import refusal_response
from .guards import CSRF_FIELD, blueprint, is_allowed, is_api, require
from .source import task_source

if t.TYPE_CHECKING:
    from ..task import Task

#: The file field of a CSV task's run form.
CSV_FIELD = "csv_file"
#: The name of the run form's "Dry run" button (a parameter's name cannot start with "_").
DRY_RUN_FIELD = "_dry_run"

Message = tuple[str, str]

#: htmx settings: no eval (the CSP forbids it), no injected styles, no page
#: snapshots (with their CSRF tokens) kept in localStorage.
HTMX_CONFIG = {
    # htmx's own rules, except that our refusals (409, 422) are shown as any answer
    # is: the body says why nothing was done, and the region it brings is up to date.
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "409", "swap": True},
        {"code": "422", "swap": True},
        {"code": "[23]..", "swap": True},
        {"code": "[45]..", "swap": False, "error": True},
    ],
    "allowEval": False,
    "allowScriptTags": False,
    "includeIndicatorStyles": False,
    "historyCacheSize": 0,
    "refreshOnHistoryMiss": True,
    "selfRequestsOnly": True,
}

#: What the run buttons do, by the action of their URL.
_ACTIONS: dict[str, t.Callable[..., Run]] = {
    "pause": runner.pause,
    "resume": runner.resume,
    "cancel": runner.cancel,
}

#: The message of an action, by the action and the status it left the run in (``%(id)s``).
_ACTION_DONE: dict[tuple[str, str], i18n.LazyString] = {
    ("pause", RunStatus.PAUSING): lazy_gettext("Run #%(id)s will pause at its next item."),
    ("pause", RunStatus.PAUSED): lazy_gettext("Run #%(id)s is paused."),
    ("cancel", RunStatus.CANCELLING): lazy_gettext("Run #%(id)s will cancel at its next item."),
    ("cancel", RunStatus.CANCELLED): lazy_gettext("Run #%(id)s is cancelled."),
    ("resume", RunStatus.ENQUEUED): lazy_gettext(
        "Run #%(id)s is resumed: it carries on from where it stopped."
    ),
}

#: The names of the HTTP errors the dashboard answers with, as its error page shows them.
_ERROR_NAMES: dict[int, i18n.LazyString] = {
    400: lazy_gettext("Bad Request"),
    403: lazy_gettext("Forbidden"),
    404: lazy_gettext("Not Found"),
    405: lazy_gettext("Method Not Allowed"),
    413: lazy_gettext("Request Entity Too Large"),
    500: lazy_gettext("Internal Server Error"),
    503: lazy_gettext("Service Unavailable"),
}

#: What werkzeug says of those errors when the dashboard gave no description of its own.
_ERROR_DESCRIPTIONS: dict[int, i18n.LazyString] = {
    400: lazy_gettext(
        "The browser (or proxy) sent a request that this server could not understand."
    ),
    403: lazy_gettext(
        "You don't have the permission to access the requested resource. It is either "
        "read-protected or not readable by the server."
    ),
    404: lazy_gettext(
        "The requested URL was not found on the server. If you entered the URL manually "
        "please check your spelling and try again."
    ),
    405: lazy_gettext("The method is not allowed for the requested URL."),
    413: lazy_gettext("The data value transmitted exceeds the capacity limit."),
    500: lazy_gettext(
        "The server encountered an internal error and was unable to complete your request. "
        "Either the server is overloaded or there is an error in the application."
    ),
}


def _error_words(error: HTTPException) -> tuple[str, str | None]:
    """The name and description of an HTTP error as the error page shows them: werkzeug's
    own words in the reader's language; a description of ours is already in it."""
    code = error.code or 500
    name = _ERROR_NAMES.get(code)
    title = str(name) if name is not None else error.name
    detail = error.description
    known = _ERROR_DESCRIPTIONS.get(code)
    if known is not None and detail == type(error).description:
        with i18n.english():
            ours = str(known)
        detail = str(known) if detail == ours else detail
    return title, detail


#: Events the run's JSON carries (its card shows fewer).
JSON_EVENTS = 200


def request_actor(state: State, origin: str = audit.DASHBOARD) -> audit.Actor:
    """Who acts in this request, for the audit trail: ``MAINTENANCE_TASKS_METADATA``'s answer."""
    metadata = state.settings.metadata
    who = audit.who_of(metadata(), state.settings.masked_parameters) if metadata else None
    return audit.Actor(who, origin, request.remote_addr)


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _csrf_token() -> str:
    # The closed page and the missing-secret-key page render without a token.
    return t.cast(str, generate_csrf()) if current_app.secret_key else ""


def _json_text(value: t.Any) -> str:
    """A JSON value as text for a page (escaped by the template like any text)."""
    return json.dumps(value, ensure_ascii=False, default=str)


@blueprint.context_processor
def _template_globals() -> dict[str, t.Any]:
    settings = get_state().settings
    return {
        **i18n.jinja_helpers(),
        "csrf_token": _csrf_token,
        "stuck_after": settings.stuck_after,
        "queue_name": settings.queue,
        "csrf_field": CSRF_FIELD,
        "htmx_config": HTMX_CONFIG,
        "poll_ms": max(int(settings.poll_interval * 1000), 100),
        "fmt": formatting,
        "to_json": _json_text,
        "doc_blocks": docstrings.blocks,
        "doc_summary": docstrings.summary,
        "flashed_messages": _flashed_messages,
    }


@blueprint.errorhandler(HTTPException)
def _error_page(error: HTTPException) -> t.Any:
    code = error.code or 500
    if is_api():
        return refusal_response(error)
    if request.path.endswith(".json"):
        return jsonify({"error": error.name, "detail": error.description}), code
    title, detail = _error_words(error)
    return (
        render_template("maintenance_tasks/error.html", code=code, title=title, detail=detail),
        code,
    )


@blueprint.errorhandler(sa.exc.DBAPIError)
def _database_error(error: sa.exc.DBAPIError) -> t.Any:
    """The first-time mistake, the tables not created, explained; a busy SQLite file is a 503
    to try again; any other error is a 500."""
    if store.lock_timed_out(error):
        # Partitions on SQLite hold its one write lock in turn: nothing was written.
        title, code = _("The database is busy"), 503
        message = _(
            "Another connection held the database's write lock for longer than its busy "
            "timeout, so nothing was changed. Try again in a moment."
        )
    else:
        found = store.missing_tables_message(get_state().db.engine)
        if found is None:
            raise error
        title, code, message = _("The tables are missing"), 500, found
    if is_api():
        api_code = "database_busy" if code == 503 else "tables_missing"
        response = jsonify({"code": api_code, "message": message})
    elif request.path.endswith(".json"):
        response = jsonify({"error": title, "detail": message})
    else:
        response = make_response(
            render_template("maintenance_tasks/error.html", code=code, title=title, detail=message)
        )
    response.status_code = code
    if code == 503:
        response.headers["Retry-After"] = "1"
    return response


@blueprint.get("/")
def index() -> str:
    query = request.args.get("q", "").strip()
    page = pages.index_page(get_state(), query)
    template = "_index_region.html" if _is_htmx() else "index.html"
    return render_template(f"maintenance_tasks/{template}", page=page, q=query)


def _task_page(name: str, cursor: int | None) -> pages.TaskPage:
    try:
        return pages.task_page(get_state(), name, cursor)
    except pages.NoSuchTask:
        abort(404, _("There is no task named %(name)s, and no run of one.", name=repr(name)))


def _cursor() -> int | None:
    """The ``?cursor=`` of a page of history: the id of a run, else 400."""
    text = request.args.get("cursor", "")
    if not text:
        return None
    if not (
        text.isascii() and text.isdigit() and len(text) < 20 and 0 < int(text) <= store.MAX_RUN_ID
    ):
        abort(400, _("The cursor must be the id of a run, as in the link to older runs."))
    return int(text)


@blueprint.get("/tasks/<name>")
def task(name: str) -> str:
    page = _task_page(name, _cursor())
    if _is_htmx():
        return render_template("maintenance_tasks/_task_region.html", page=page)
    given = {k: v for k, v in request.args.items() if k not in ("cursor", forms.WITHHELD_QUERY)}
    withheld = _withheld(page, given, request.args.getlist(forms.WITHHELD_QUERY))
    values = forms.prefill(page.fields, given or None, withheld=withheld)
    return _render_task(page, values, withheld=withheld, form=request.args)


def _withheld(
    page: pages.TaskPage, given: t.Mapping[str, str], named: t.Iterable[str] = ()
) -> frozenset[str]:
    """The fields left empty because their value held a secret: found in ``given``, or ``named``."""
    if page.task is None:
        return frozenset()
    masked = get_state().settings.masked_parameters
    found = forms.withheld_fields(page.task, masked, page.fields, given)
    return found | (frozenset(named) & {f.name for f in page.fields if not f.secret})


def _render_task(
    page: pages.TaskPage,
    values: dict[str, str],
    errors: dict[str, list[str]] | None = None,
    message: str | None = None,
    withheld: frozenset[str] = frozenset(),
    policy: dict[str, str] | None = None,
    form: t.Mapping[str, str] | None = None,
) -> str:
    """The task page; ``form`` is what was sent (the query string of a "Run again" link, or
    the form), for the fields that are not the task's parameters."""
    if page.task is not None:
        page.source = task_source(page.task)
    return render_template(
        "maintenance_tasks/task.html",
        page=page,
        values=values,
        errors=errors or {},
        form_message=message,
        withheld=withheld,
        policy=policy or {},
        policy_fields=forms.POLICY_FIELDS,
        partitions_field=forms.PARTITIONS_FIELD,
        partitions_value=forms.partitions_value(form, page.task),
        at_field=forms.AT_FIELD,
        at_value=forms.at_value(form),
        title=page.name,
    )


@blueprint.post("/tasks/<name>/runs")
def start_run(name: str) -> t.Any:
    require("view", name)  # its answer may be the task page again, with the task's runs
    state = get_state()
    try:
        task_class = state.registry.get(name)
    except TaskNotFound:
        abort(404, _("There is no task named %(name)s: it cannot be run.", name=repr(name)))
    fields = forms.fields_for(task_class, state.settings.masked_parameters)
    arguments, errors = forms.arguments_from(fields, request.form)
    overrides, policy_errors = forms.policy_from(task_class, request.form)
    count, partition_errors = forms.partitions_from(
        task_class, request.form, state.settings.max_partitions
    )
    policy_errors.update(partition_errors)
    at, at_errors = forms.at_from(task_class, request.form, utcnow())
    policy_errors.update(at_errors)
    message = None
    status = 422
    upload = request.files.get(CSV_FIELD)
    csv_file = upload if upload is not None and upload.filename else None
    dry_run = request.form.get(DRY_RUN_FIELD) == "1"
    if not errors and not policy_errors:
        metadata = state.settings.metadata() if state.settings.metadata is not None else None
        try:
            run = runner.run(
                state,
                name,
                arguments,
                csv_file=csv_file,
                metadata=metadata,
                actor=request_actor(state),
                dry_run=dry_run,
                partitions=count,
                at=at,
                **overrides,
            )
        except CSVFileTooLarge as exc:
            errors = {CSV_FIELD: [str(exc)]}
            message, status = _("The run was not started: the CSV file is too large."), 413
        except CSVFileError as exc:
            errors = {CSV_FIELD: [str(exc)]}
            message = _("The run was not started: the CSV file was refused.")
        except InvalidArguments as exc:
            errors = _start_errors(task_class, arguments, exc)
            message = _("The run was not started: correct the fields below.")
        except (TaskAlreadyRunning, RunBusy) as exc:
            message, status = str(exc), 409
        except EnqueueError as exc:
            flash(str(exc), "error")
            return redirect(url_for(".task", name=name), 303)
        except MaintenanceTasksError as exc:
            message = str(exc)
        else:
            flash(_started(run, name, dry_run), "success")
            return redirect(url_for(".task", name=name, _anchor=f"run-{run.id}"), 303)
    else:
        # Tell every mistake at once: what the model says of the other fields too.
        try:
            task_class.validate_arguments(arguments)
        except InvalidArguments as exc:
            for field, texts in forms.field_errors(exc.errors).items():
                errors.setdefault(field, texts)
        errors.update(policy_errors)
        message = _("The run was not started: correct the fields below.")
    page = _task_page(name, None)
    withheld = _withheld(page, request.form)
    values = forms.prefill(fields, request.form, submitted=True, withheld=withheld)
    policy = forms.policy_values(request.form)
    return _render_task(page, values, errors, message, withheld, policy, request.form), status


def _started(run: Run, name: str, dry_run: bool) -> str:
    """The message of a run started from the task page: enqueued, or scheduled."""
    if run.scheduled_at is not None:
        when = formatting.timestamp(run.scheduled_at)
        if dry_run:
            return _(
                "Dry run #%(id)s of %(task)s is scheduled for %(time)s.",
                id=run.id,
                task=name,
                time=when,
            )
        return _(
            "Run #%(id)s of %(task)s is scheduled for %(time)s.", id=run.id, task=name, time=when
        )
    if dry_run:
        return _("Dry run #%(id)s of %(task)s is enqueued.", id=run.id, task=name)
    return _("Run #%(id)s of %(task)s is enqueued.", id=run.id, task=name)


def _start_errors(
    task_class: type[Task], arguments: t.Mapping[str, t.Any], refusal: InvalidArguments
) -> dict[str, list[str]]:
    """The errors of a start the runner refused, by form field.

    The runner's ``partitions`` and ``at`` keys belong to the "Partitions"
    and "Start at" fields, unless they are the errors of a parameter of that
    name: they are the fields' when the parameters are valid.
    """
    found = dict(refusal.errors)
    model = task_class.Parameters
    ours: dict[str, list[str]] = {}
    for key, field in (("partitions", forms.PARTITIONS_FIELD), ("at", forms.AT_FIELD)):
        texts = found.pop(key, None)
        if texts is not None and model is not None and key in model.model_fields:
            try:
                task_class.validate_arguments(arguments)
            except InvalidArguments:
                found[key] = texts  # the parameter's
                continue
        if texts is not None:
            ours[field] = [forms.sentence(text) for text in texts]
    errors = forms.field_errors(found)
    errors.update(ours)
    return errors


@blueprint.post("/tasks/<name>/runs/<int:run_id>/<any(pause, resume, cancel):action>")
def control(name: str, run_id: int, action: str) -> t.Any:
    require("view", name)  # its answer is the task's region, or a redirect to the task page
    cursor = _cursor() if _is_htmx() else None  # a bad one is refused before acting
    state = get_state()
    run = runner.get_run(state, run_id)
    if run is None or run.task_name != name:
        abort(404, _("There is no run #%(id)s of %(task)s.", id=run_id, task=name))
    require(action, name, run)
    status, busy = 200, False
    try:
        result = _ACTIONS[action](state, run_id, actor=request_actor(state))
    except MaintenanceTasksError as exc:
        message: Message = ("error", str(exc))
        status, busy = _refusal(exc)
    else:
        done = _ACTION_DONE.get((action, result.status))
        if done is not None:
            text = done % {"id": run_id}
        else:
            text = _(
                "Run #%(id)s is %(status)s.",
                id=run_id,
                status=formatting.status_in_sentence(result.status),
            )
        message = ("success", text)
    return _card_answer(name, cursor, message, f"run-{run_id}", status, busy)


def _viewable_run(run_id: int) -> Run:
    """The run, if it exists and ``authorize`` lets this request view it; else 404.

    The guard has asked ``authorize("view", None, None)``. A run the user may
    not view answers exactly as a missing one, so that its id tells nothing.
    """
    run = runner.get_run(get_state(), run_id)
    if run is None or not is_allowed("view", run.task_name, run):
        abort(404, _("There is no run #%(id)s.", id=run_id))
    return run


@blueprint.get("/runs/<int:run_id>/csv")
def run_csv(run_id: int) -> Response:
    """The run's CSV file, streamed as a download."""
    run = _viewable_run(run_id)
    found = csv_file_response(run)
    if found is None:
        abort(404, _("Run #%(id)s has no CSV file.", id=run_id))
    return found


def csv_file_response(run: Run, origin: str = audit.DASHBOARD) -> Response | None:
    """The CSV file of ``run`` (viewable) as a streamed download, or ``None`` when it has none.

    A GET is recorded as a ``csv_downloaded`` event of the request's actor, from
    ``origin``; a HEAD downloads nothing, so records nothing.
    """
    try:
        found = csv_download(run)
    except FileNotFoundError:
        found = None
    if found is None:
        return None
    state = get_state()
    if request.method == "GET":
        with store.open_session(state.db) as session:
            audit.record(
                session,
                run_id=run.id,
                task_name=run.task_name,
                action=audit.CSV_DOWNLOADED,
                actor=request_actor(state, origin),
            )
            session.commit()
    return Response(
        found.chunks,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{found.filename}"',
            "Content-Length": str(found.size),
        },
    )


@blueprint.get("/runs/<int:run_id>.json")
def run_json(run_id: int) -> Response:
    return jsonify(run_data(_viewable_run(run_id)))


@dataclasses.dataclass(frozen=True)
class RunLinks:
    """The endpoints a run's JSON links to: the dashboard's, or the API's."""

    failures: str
    failures_csv: str
    run_for_real: str
    #: The JSON of a run (a partition's ``parent_url``).
    run: str


#: The links of ``/runs/<id>.json``.
DASHBOARD_LINKS = RunLinks(
    failures=".run_failures",
    failures_csv=".run_failures_csv",
    run_for_real=".run_for_real",
    run=".run_json",
)


def run_data(run: Run, links: RunLinks = DASHBOARD_LINKS) -> dict[str, t.Any]:
    """What ``/runs/<id>.json`` and the API's ``/api/runs/<id>`` say of a run (viewable),
    linking to the endpoints of ``links``."""
    retries: list[int] = []
    with store.open_session(get_state().db) as session:
        timeline = audit.timeline(session, run.id, JSON_EVENTS)
        if run.failure_count:  # only a run with failed items can have been retried
            retries = [retry.id for retry in ledger.retries_of(session, run.id)]
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    data = formatting.run_as_dict(app, run, timeline=timeline)
    data["failures_url"] = url_for(links.failures, run_id=run.id)
    data["failures_csv_url"] = url_for(links.failures_csv, run_id=run.id)
    data["retries"] = retries
    if run.dry_run and run.status == RunStatus.SUCCEEDED:
        data["run_for_real_url"] = url_for(links.run_for_real, run_id=run.id)
    data.update(_partitions_json(run, links))
    return data


def _partitions_json(run: Run, links: RunLinks) -> dict[str, t.Any]:
    """:func:`.formatting.partitions_as_dict`, the partitions read only once the run is cut.

    A partition's JSON also links its run's, as ``parent_url``.
    """
    children: list[Run] = []
    if partitions.is_split(run):
        with store.open_session(get_state().db) as session:
            children = store.partitions_of(session, [run.id]).get(run.id, [])
    data = formatting.partitions_as_dict(run, children)
    if run.parent_id is not None:
        data["parent_url"] = url_for(links.run, run_id=run.parent_id)
    return data


@blueprint.get("/runs/<int:run_id>")
def run_page(run_id: int) -> WerkzeugResponse:
    """A run by its id: a redirect to its card on its task's page.

    A partition has no card of its own: its id leads to the card of its run,
    at the partition's bar. Its JSON (``/runs/<id>.json``) shows the partition
    itself.
    """
    run = _viewable_run(run_id)
    if run.parent_id is None:
        return redirect(url_for(".task", name=run.task_name, _anchor=f"run-{run.id}"))
    anchor = f"run-{run.parent_id}-partition-{run.partition or 0}"
    return redirect(url_for(".task", name=run.task_name, _anchor=anchor))


#: The most a filter of the runs page may hold (the columns' size).
_FILTER_LENGTH = 255


def _filter(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    if len(value) > _FILTER_LENGTH:
        abort(
            400,
            _(
                "The %(name)s filter is longer than %(length)s characters.",
                name=name,
                length=_FILTER_LENGTH,
            ),
        )
    if "\x00" in value:
        abort(
            400,
            _(
                "The %(name)s filter holds a NUL character, which no name or status holds.",
                name=name,
            ),
        )
    return value or None


@blueprint.get("/runs")
def runs() -> str:
    """Every task's runs, newest first, filtered by task, status and who started them."""
    require("view")
    filters = pages.RunFilters(task=_filter("task"), status=_filter("status"), who=_filter("who"))
    if filters.status is not None and filters.status not in RunStatus._value2member_map_:
        abort(400, _("There is no status %(status)s.", status=repr(filters.status)))
    page = pages.runs_page(get_state(), filters, _cursor())
    return render_template("maintenance_tasks/runs.html", page=page, title=_("All runs"))


def _flashed_messages() -> list[Message]:
    """Flashed messages, errors first."""
    flashed = t.cast(list[Message], get_flashed_messages(with_categories=True))
    return sorted(flashed, key=lambda m: m[0] != "error")


# -- failed items ------------------------------------------------------------------


def _failure_filters() -> pages.FailureFilters:
    """The ``?class=``, ``?status=`` and ``?after=`` of a failures page, else 400."""
    status = _filter("status")
    if status is not None and status not in FailureStatus._value2member_map_:
        choices = ", ".join(s.value for s in FailureStatus)
        abort(
            400,
            _(
                "There is no failure status %(status)s: choose %(choices)s.",
                status=repr(status),
                choices=choices,
            ),
        )
    text = request.args.get("after", "")
    after = None
    if text:
        if not (
            text.isascii() and text.isdigit() and len(text) < 20 and int(text) <= store.MAX_RUN_ID
        ):
            abort(
                400,
                _("after must be the id of a failure, as in the link to the next failures."),
            )
        after = int(text)
    return pages.FailureFilters(error_class=_filter("class"), status=status, after=after)


@blueprint.get("/runs/<int:run_id>/failures")
def run_failures(run_id: int) -> str:
    """The failed items of a run, oldest first, by error class and status."""
    filters = _failure_filters()
    run = _viewable_run(run_id)
    page = pages.failures_page(get_state(), run, filters)
    title = _("Failures of run #%(id)s", id=run.id)
    return render_template("maintenance_tasks/failures.html", page=page, title=title)


#: Failures read per query while a download streams.
CSV_FAILURES_CHUNK = 500


@blueprint.get("/runs/<int:run_id>/failures.csv")
def run_failures_csv(run_id: int) -> Response:
    """Every failed item of a run (or of one error class) as CSV, streamed a page at a time."""
    filters = _failure_filters()
    return failures_csv_response(_viewable_run(run_id), filters)


def failures_csv_response(run: Run, filters: pages.FailureFilters) -> Response:
    """The failed items of ``run`` (viewable) that ``filters`` keep, as a CSV download
    streamed a page at a time; a HEAD reads nothing."""
    # The rows are read as the body streams, after the request's context is gone.
    engine = store.quiet(get_state().db.engine)

    def rows() -> t.Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(formatting.FAILURE_CSV_COLUMNS)
        after = filters.after
        while True:
            with Session(bind=engine, expire_on_commit=False) as session:
                found = ledger.page(
                    session,
                    run.id,
                    after=after,
                    error_class=filters.error_class,
                    status=filters.status,
                    limit=CSV_FAILURES_CHUNK,
                )
            for failure in found:
                writer.writerow(formatting.failure_csv_row(failure))
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(found) < CSV_FAILURES_CHUNK:
                return
            after = found[-1].id

    body = rows() if request.method == "GET" else iter(())  # a HEAD request reads nothing
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="run-{run.id}-failures.csv"'},
    )


@blueprint.post("/runs/<int:run_id>/retry-failures")
def retry_failures(run_id: int) -> t.Any:
    """Start a run over the unresolved failed items of ``run_id`` (the "Retry" button).

    The guard has found the run, checked that this request may view it and
    that ``authorize("retry_failures", task, run)`` allows it, before the body
    was read. A refusal (no unresolved failure, the run not stopped, the task
    already running) is a message, as a run button's is.
    """
    return _start_from_card(
        run_id,
        runner.retry_failures,
        lazy_gettext("Run #%(new)s retries the failed items of run #%(old)s: it is enqueued."),
    )


@blueprint.post("/runs/<int:run_id>/speed")
def set_speed(run_id: int) -> t.Any:
    """Change an active run's speed from its card's form, without pausing it.

    The guard has found the run and asked ``authorize("set_speed", task,
    run)``. Each field holds the value to set; an empty one gives it back to
    the task (no cap for the rate). A refusal (a value out of range, the run
    ended meanwhile) is a message, as a run button's is, and changes nothing.
    """
    cursor = _cursor() if _is_htmx() else None
    state = get_state()
    run = _viewable_run(run_id)
    given = {field: request.form.get(field, "").strip() for field in runner.SPEED_FIELDS}
    try:
        changed = runner.set_speed(
            state,
            run_id,
            **{field: value for field, value in given.items() if value},
            reset=[field for field, value in given.items() if not value],
            actor=request_actor(state),
        )
    except MaintenanceTasksError as exc:
        message: Message = ("error", str(exc))
        status, busy = _refusal(exc)
    else:
        summary = formatting.speed_text(changed)
        message = (
            "success",
            _(
                "Run #%(id)s: %(summary)s; its job takes it at its next reload.",
                id=run_id,
                summary=summary,
            ),
        )
        status, busy = 200, False
    return _card_answer(run.task_name, cursor, message, f"run-{run_id}", status, busy)


def _start_from_card(run_id: int, start: t.Callable[..., Run], done: i18n.LazyString) -> t.Any:
    """Start a run from a card's button: ``start(state, run_id, metadata=, actor=)``.

    A refusal (:class:`MaintenanceTasksError`) is a message, as a run button's
    is; ``done`` is the message of a start, with ``%(new)s``, ``%(old)s`` and
    ``%(task)s``.
    """
    cursor = _cursor() if _is_htmx() else None
    state = get_state()
    run = _viewable_run(run_id)
    name = run.task_name
    metadata = state.settings.metadata() if state.settings.metadata is not None else None
    anchor = f"run-{run_id}"
    status, busy = 200, False
    try:
        started = start(state, run_id, metadata=metadata, actor=request_actor(state))
    except MaintenanceTasksError as exc:  # CannotRetry, TaskAlreadyRunning, EnqueueError...
        message: Message = ("error", str(exc))
        status, busy = _refusal(exc)
    else:
        text = done % {"new": started.id, "old": run_id, "task": name}
        message, anchor = ("success", text), f"run-{started.id}"
    return _card_answer(name, cursor, message, anchor, status, busy)


def _refusal(error: MaintenanceTasksError) -> tuple[int, bool]:
    """The status of a run button's refusal, which changed nothing, and whether its
    answer says when to ask again (a busy run's does).

    As the JSON API answers: 422 for values that are not valid (a speed field),
    409 Conflict when the run's or the task's state refused the action (the run
    moved on, another run of the task is active, the row is busy, the run cannot
    be retried). A queue that could not be reached is reported on the page as
    usual (200): htmx swaps no 5xx answer, and the operator must read why.
    """
    if isinstance(error, InvalidArguments):
        return 422, False
    if isinstance(error, EnqueueError):
        return 200, False
    return 409, isinstance(error, RunBusy)


def _card_answer(
    name: str,
    cursor: int | None,
    message: Message,
    anchor: str,
    status: int = 200,
    retry_after: bool = False,
) -> t.Any:
    """What a button of a run card found by its id answers: the task's runs region and the
    message through htmx, else the message flashed and a redirect to the task page.

    A refusal (``status`` 409 or 422) is answered with the task page itself,
    not a redirect: the status tells a script that nothing was done. A busy
    run's (``retry_after``) also says when to ask again.
    """
    if _is_htmx():
        page = _task_page(name, cursor)
        region = render_template("maintenance_tasks/_task_region.html", page=page)
        messages = render_template("maintenance_tasks/_messages.html", messages=[message], oob=True)
        return Markup(region) + Markup(messages), status, _retry_headers(retry_after)
    flash(message[1], message[0])
    if status != 200:
        page = _task_page(name, None)
        page_html = _render_task(page, forms.prefill(page.fields, None))
        return page_html, status, _retry_headers(retry_after)
    return redirect(url_for(".task", name=name, _anchor=anchor), 303)


def _retry_headers(retry_after: bool) -> dict[str, str]:
    """A busy run's answer says when to ask again."""
    return {"Retry-After": "1"} if retry_after else {}


# -- dry runs and previews ---------------------------------------------------------


@blueprint.post("/runs/<int:run_id>/run-for-real")
def run_for_real(run_id: int) -> t.Any:
    """Start a normal run with the arguments, policy and file of a succeeded dry run.

    The guard has found the run, checked that this request may view it and
    that ``authorize("run", task, run)`` allows it, before the body was read.
    A refusal (no dry run, not succeeded, the task gone or already running)
    is a message, as a run button's is.
    """
    return _start_from_card(
        run_id,
        runner.run_for_real,
        lazy_gettext(
            "Run #%(new)s of %(task)s does for real what dry run #%(old)s did: it is enqueued."
        ),
    )


#: What a preview's arguments stand in for a required secret the page does not send.
SECRET_STAND_IN = "preview-stand-in"


@blueprint.get("/tasks/<name>/preview")
def task_preview(name: str) -> t.Any:
    """What a run with the form's values would walk (the task page's preview panel).

    A GET that writes nothing: the arguments come from the query string, as
    the run form would send them; the page leaves secret fields out (a URL is
    logged), so a required secret gets a stand-in. Invalid arguments are
    shown in the panel, with the messages of each field.
    """
    state = get_state()
    try:
        task_class = state.registry.get(name)
    except TaskNotFound:
        abort(
            404, _("There is no task named %(name)s: there is nothing to preview.", name=repr(name))
        )
    fields = forms.fields_for(task_class, state.settings.masked_parameters)
    given = request.args
    errors = {
        field.name: [_("A value cannot hold a NUL character.")]
        for field in fields
        if "\x00" in given.get(field.name, "")
    }
    clean = {k: v for k, v in given.items() if k not in errors}
    arguments, parse_errors = forms.arguments_from(fields, clean)
    errors.update(parse_errors)
    stand_ins = [f.name for f in fields if f.secret and f.required and f.name not in arguments]
    arguments.update({name: SECRET_STAND_IN for name in stand_ins})
    found = previews.Preview(task_class.name, {})
    if errors:
        try:
            task_class.validate_arguments(arguments)
        except InvalidArguments as exc:
            for field, texts in forms.field_errors(exc.errors).items():
                errors.setdefault(field, texts)
    else:
        try:
            found = previews.preview(state, name, arguments)
        except Exception as exc:  # the task's collection or count, on any arguments
            current_app.logger.warning("The preview of %s failed", name, exc_info=True)
            found.notes.append(_("The preview failed: %(error)s.", error=type(exc).__name__))
        errors = forms.field_errors(found.errors)
    found.errors = errors
    if stand_ins and not errors:
        found.notes.append(
            _(
                "Secret fields are not sent with the preview (its URL could be logged): it used a "
                "stand-in value for %(fields)s.",
                fields=", ".join(stand_ins),
            )
        )
    template = "_preview.html" if _is_htmx() else "preview.html"
    return render_template(
        f"maintenance_tasks/{template}",
        preview=found,
        preview_errors=errors,
        fields=fields if _is_htmx() else [],
        name=name,
        title=_("Preview of %(task)s", task=name),
    )
