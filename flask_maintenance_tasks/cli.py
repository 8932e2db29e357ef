"""The ``flask mtasks`` command group."""

from __future__ import annotations

import importlib
import json
import keyword
import re
import sys
import time
import types
import typing as t
from pathlib import Path

import click
import pydantic
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from . import formatting, runner, store
from .csv import storage as csv_storage
from .exceptions import MaintenanceTasksError
from .state import State, get_state
from .models import Run, runs_table
from .transitions import ACTIVE, COMPLETED

mtasks_cli = AppGroup("mtasks", help="Run and control maintenance tasks.")


def _state() -> State:
    try:
        return get_state()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


class _Errors:
    """Turn errors a user can act on into ``Error: ...`` and exit status 1.

    A database error is only translated when the cause is that the runs table
    does not exist, the usual first-time mistake; anything else keeps its
    traceback, which is what one needs to debug it.
    """

    def __init__(self, state: State) -> None:
        self.state = state

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: t.Any, error: BaseException | None, tb: t.Any) -> None:
        if isinstance(error, MaintenanceTasksError):
            raise click.ClickException(str(error)) from None
        if isinstance(error, sa.exc.DBAPIError) and not _runs_table_exists(self.state):
            url = self.state.db.engine.url.render_as_string(hide_password=True)
            raise click.ClickException(
                f"The table {runs_table.name} does not exist in {url}. Create it with "
                "`flask mtasks migrations install` then `flask db upgrade` (Flask-Migrate), "
                "or with `db.create_all()` in an app context."
            ) from None


def _runs_table_exists(state: State) -> bool:
    try:
        return sa.inspect(state.db.engine).has_table(runs_table.name)
    except sa.exc.DBAPIError:
        # The database itself is unreachable: the original error says more.
        return True


def _kinds(annotation: t.Any) -> list[t.Any]:
    """The types a field accepts, with ``Optional``, unions and ``Annotated`` unwrapped."""
    origin = t.get_origin(annotation)
    if origin is t.Annotated:
        return _kinds(t.get_args(annotation)[0])
    if origin is t.Union or origin is types.UnionType:
        return [k for a in t.get_args(annotation) if a is not type(None) for k in _kinds(a)]
    return [origin or annotation]


def _takes_many(annotation: t.Any) -> bool:
    """Whether a ``Parameters`` field holds several values (a list, tuple or set)."""
    return any(kind in (list, tuple, set, frozenset) for kind in _kinds(annotation))


def _takes_json(annotation: t.Any) -> bool:
    """Whether a ``Parameters`` field is a mapping or a model, given on the command line as JSON."""
    return any(
        kind is dict or (isinstance(kind, type) and issubclass(kind, pydantic.BaseModel))
        for kind in _kinds(annotation)
    )


def _many(value: str) -> list[t.Any]:
    """Several values given as a JSON list (``[1, 2]``) or comma-separated (``1,2``)."""
    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    return [v.strip() for v in value.split(",")] if value.strip() else []


def _parse_arguments(task_class: t.Any, pairs: tuple[str, ...]) -> dict[str, t.Any]:
    """``KEY=VALUE`` pairs to raw arguments; ``Parameters`` does the coercion.

    A list, tuple or set field takes a JSON list (``ids=[1,2]``), commas
    (``ids=1,2``) or the key repeated (``ids=1 ids=2``); a dict or model field
    takes JSON. Other values stay strings, which pydantic converts to ints,
    bools, dates, enums and literals.
    """
    given: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE.", param_hint="--arg")
        given.setdefault(key, []).append(value)
    model = getattr(task_class, "Parameters", None)
    fields = model.model_fields if model is not None else {}
    arguments: dict[str, t.Any] = {}
    for key, values in given.items():
        field = fields.get(key)
        if field is not None and _takes_many(field.annotation):
            arguments[key] = [item for value in values for item in _many(value)]
            continue
        if len(values) > 1:
            raise click.BadParameter(
                f"{key} is given {len(values)} times but takes one value.", param_hint="--arg"
            )
        value = values[0]
        if field is not None and _takes_json(field.annotation):
            try:
                arguments[key] = json.loads(value)
                continue
            except ValueError:
                pass  # pydantic reports the field with its expected type
        arguments[key] = value
    return arguments


@mtasks_cli.command("list")
def list_command() -> None:
    """List the tasks with the status of each one's latest run."""
    state = _state()
    with _Errors(state):
        tasks = state.registry.tasks()
        if not tasks:
            click.echo(f"No tasks found in {state.registry.package}.")
            return
        latest = _latest_runs(state, list(tasks))
    width = max(len(name) for name in tasks)
    for name in tasks:
        run = latest.get(name)
        status = f"{run.status} (run #{run.id})" if run else "new"
        click.echo(f"{name:<{width}}  {status}")


def _latest_runs(state: State, names: list[str]) -> dict[str, Run]:
    with store.open_session(state.db) as session:
        newest = (
            sa.select(Run.task_name, sa.func.max(Run.id).label("id"))
            .where(Run.task_name.in_(names))
            .group_by(Run.task_name)
            .subquery()
        )
        runs = session.scalars(sa.select(Run).join(newest, Run.id == newest.c.id))
        return {run.task_name: run for run in runs}


@mtasks_cli.command("run")
@click.argument("name")
@click.option(
    "--arg", "pairs", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable)."
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    metavar="PATH",
    help="A CSV file for a CSV task; - reads stdin.",
)
@click.option("--wait", is_flag=True, help="Follow the run until it ends; fail unless it succeeds.")
def run_command(name: str, pairs: tuple[str, ...], csv_path: str | None, wait: bool) -> None:
    """Start a run of task NAME and print its id."""
    state = _state()
    with _Errors(state):
        arguments = _parse_arguments(state.registry.get(name), pairs)
        csv_file: t.Any = None
        if csv_path == "-":
            csv_file = ("stdin.csv", click.open_file("-", "rb"))
        elif csv_path is not None:
            csv_file = Path(csv_path)
        run = runner.run(state, name, arguments, csv_file=csv_file)
    click.echo(run.id)
    if wait:
        with _Errors(state):
            _follow(state, run.id)


def _follow(state: State, run_id: int) -> None:
    """Draw a progress bar on stderr until the run ends; exit 1 unless it succeeded.

    On a terminal the bar is redrawn in place; otherwise (a log, CI) a line is
    written when the progress changes, at most every two seconds.
    """
    tty = sys.stderr.isatty()
    last_line = ""
    last_print = 0.0
    done = {s.value for s in COMPLETED} | {"paused"}
    try:
        while True:
            run = runner.get_run(state, run_id)
            if run is None:
                raise click.ClickException(f"Run #{run_id} disappeared.")
            line = _bar(run)
            now = time.monotonic()
            if tty:
                click.echo("\r" + line.ljust(len(last_line)), err=True, nl=False)
            elif line != last_line and (now - last_print >= 2 or run.status in done):
                click.echo(line, err=True)
                last_print = now
            last_line = line
            if run.status in done:
                break
            time.sleep(0.25)
    except KeyboardInterrupt:
        raise click.ClickException(
            f"Stopped following run #{run_id}; it carries on (`flask mtasks status {run_id}`)."
        ) from None
    finally:
        if tty:
            click.echo(err=True)
    if run.status != "succeeded":
        detail = f": {run.error_class}: {run.error_message}" if run.error_class else ""
        raise click.ClickException(f"Run #{run.id} ended {run.status}{detail}")


def _bar(run: Run, width: int = 30) -> str:
    pct = formatting.percent(run)
    if pct is None:
        bar = "?" * width if run.tick_count == 0 else "~" * width
    else:
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
    return f"[{bar}] {run.status:<11} {formatting.progress_text(run.tick_count, run.tick_total)}"


@mtasks_cli.command("status")
@click.argument("run_id", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(run_id: int | None, as_json: bool) -> None:
    """Show run RUN_ID, or the active and latest runs."""
    state = _state()
    with _Errors(state):
        if run_id is not None:
            _show_run(state, run_id, as_json)
        else:
            _show_runs(state, as_json)


def _show_run(state: State, run_id: int, as_json: bool) -> None:
    run = runner.get_run(state, run_id)
    if run is None:
        raise click.ClickException(f"Run #{run_id} not found.")
    if as_json:
        click.echo(json.dumps(formatting.run_as_dict(state.app, run), indent=2))
    else:
        _print_run(state, run)


def _show_runs(state: State, as_json: bool) -> None:
    with store.open_session(state.db) as session:
        active = list(
            session.scalars(
                sa.select(Run)
                .where(Run.status.in_([s.value for s in ACTIVE]))
                .order_by(Run.id.desc())
            )
        )
        latest = list(
            session.scalars(
                sa.select(Run)
                .where(Run.status.in_([s.value for s in COMPLETED]))
                .order_by(Run.id.desc())
                .limit(10)
            )
        )
    if as_json:
        data = {
            "active": [formatting.run_as_dict(state.app, r) for r in active],
            "latest": [formatting.run_as_dict(state.app, r) for r in latest],
        }
        click.echo(json.dumps(data, indent=2))
        return
    click.echo("Active runs:" if active else "No active runs.")
    for run in active:
        click.echo(f"  {_summary(run)}")
    if latest:
        click.echo("Latest runs:")
        for run in latest:
            click.echo(f"  {_summary(run)}")


def _summary(run: Run) -> str:
    return (
        f"#{run.id:<6} {run.task_name}  {run.status}  "
        f"{formatting.progress_text(run.tick_count, run.tick_total)}"
    )


def _print_run(state: State, run: Run) -> None:
    data = formatting.run_as_dict(state.app, run)
    click.echo(f"Run #{run.id}  {run.task_name}  {run.status}")
    click.echo(f"  {data['progress']}")
    click.echo(f"  {data['status_text']}")
    if data["arguments"]:
        click.echo(f"  Arguments: {json.dumps(data['arguments'])}")
    if run.metadata_ is not None:
        click.echo(f"  Metadata: {json.dumps(run.metadata_)}")
    csv_file = csv_storage.csv_file_of(_state(), run)
    if csv_file is not None:
        given = f", given as {csv_file.original_filename}" if csv_file.original_filename else ""
        click.echo(f"  CSV file: {csv_file.filename} ({csv_file.size:,} bytes{given})")
    click.echo(f"  Cursor: {json.dumps(run.cursor)}")
    if run.interruption_reason:
        click.echo(f"  Last interruption: {run.interruption_reason.replace('_', ' ')}")
    if run.error_class:
        click.echo(f"  Error: {run.error_class}: {run.error_message}")
        if run.errored_element is not None:
            click.echo(f"  Failing item: {json.dumps(run.errored_element)}")
        if run.backtrace:
            click.echo("  Backtrace:")
            for frame in run.backtrace:
                click.echo(f"    {frame}")


def _control(action: str, run_id: int) -> None:
    state = _state()
    with _Errors(state):
        act: t.Callable[[State, int], Run] = getattr(runner, action)
        run = act(state, run_id)
    click.echo(f"Run #{run.id} is {run.status}.")


@mtasks_cli.command("pause")
@click.argument("run_id", type=int)
def pause_command(run_id: int) -> None:
    """Pause run RUN_ID at its next item (force a stuck one)."""
    _control("pause", run_id)


@mtasks_cli.command("resume")
@click.argument("run_id", type=int)
def resume_command(run_id: int) -> None:
    """Resume paused or errored run RUN_ID from its cursor."""
    _control("resume", run_id)


@mtasks_cli.command("cancel")
@click.argument("run_id", type=int)
def cancel_command(run_id: int) -> None:
    """Cancel run RUN_ID (at once if paused or stuck)."""
    _control("cancel", run_id)


@mtasks_cli.command("worker")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--queue", "queue_name", help="Queue to listen on (default: the configured one).")
@click.option("--no-fork", is_flag=True, help="Run jobs in the worker process (no work horse).")
def worker_command(burst: bool, queue_name: str | None, no_fork: bool) -> None:
    """Run an RQ worker inside the app; SIGTERM stops the running task cleanly."""
    from .executors import RQExecutor
    from .worker import MaintenanceSimpleWorker, MaintenanceWorker, recovering_worker

    state = _state()
    executor = state.executor
    if not isinstance(executor, RQExecutor):
        raise click.ClickException(
            "MAINTENANCE_TASKS_REDIS_URL is not set: there is no queue to work on."
        )
    _log_to_stderr()
    worker = recovering_worker(
        MaintenanceSimpleWorker if no_fork else MaintenanceWorker,
        [executor.queue(queue_name)],
        current_app._get_current_object(),  # type: ignore[attr-defined]
        state.settings.recovery_interval,
        connection=executor.connection,
    )
    worker.work(burst=burst, with_scheduler=True)


def _log_to_stderr() -> None:
    """Show the extension's log lines beside RQ's, unless the app set up logging."""
    import logging

    logger = logging.getLogger("flask_maintenance_tasks")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@mtasks_cli.command("recover")
def recover_command() -> None:
    """Carry on runs whose job vanished, and settle stuck pauses and cancels, once.

    Workers started with `flask mtasks worker` do this on their own every
    MAINTENANCE_TASKS_RECOVERY_INTERVAL seconds.
    """
    from .recovery import recover

    state = _state()
    with _Errors(state):
        recovered = recover(state)
    for recovery in recovered:
        click.echo(str(recovery))
    if not recovered:
        click.echo("Nothing to recover.")


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TEMPLATES = {"csv": "csv_task", "no_collection": "no_collection_task", None: "task"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"_+", name) if part)


@mtasks_cli.command("new")
@click.argument("name")
@click.option("--csv", "kind", flag_value="csv", help="A CSV import task.")
@click.option("--no-collection", "kind", flag_value="no_collection", help="A task that runs once.")
@click.option(
    "--tests-dir", default="tests/maintenance", show_default=True, help="Where the test goes."
)
def new_command(name: str, kind: str | None, tests_dir: str) -> None:
    """Write a task module named NAME (e.g. backfill_posts or billing/fix_invoices) and its test."""
    state = _state()
    parts = [p for p in re.split(r"[/.]", name) if p]
    if not parts or not all(_NAME.match(p) and not keyword.iskeyword(p) for p in parts):
        raise click.ClickException(
            f"{name!r} is not a valid task name: use letters, digits and _ (not starting with a "
            "digit), with / between sub-packages."
        )
    base = _snake(parts[-1])
    base = re.sub(r"_?task$", "", base) or base
    class_name = _camel(base) + "Task"
    namespaces = [_snake(p) for p in parts[:-1]]

    package_dir = _tasks_dir(state)
    target_dir = package_dir.joinpath(*namespaces)
    module_path = target_dir / f"{base}_task.py"
    module = ".".join([state.registry.package, *namespaces, f"{base}_task"])
    test_path = Path(tests_dir).joinpath(*namespaces) / f"test_{base}_task.py"
    for path in (module_path, test_path):
        if path.exists():
            raise click.ClickException(f"{_shown(path)} already exists; not overwriting it.")

    template = _TEMPLATES[kind]
    scaffold = Path(__file__).parent / "scaffold"
    values = {"class_name": class_name, "module": module, "function_name": f"{base}_task"}
    target_dir.mkdir(parents=True, exist_ok=True)
    for directory in [package_dir.joinpath(*namespaces[:i]) for i in range(len(namespaces) + 1)]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    module_path.write_text((scaffold / f"{template}.py.tmpl").read_text().format(**values))
    test_path.parent.mkdir(parents=True, exist_ok=True)
    test_path.write_text((scaffold / f"test_{template}.py.tmpl").read_text().format(**values))
    # The import system caches directory listings: without this, a package
    # created a moment ago may not be found in this process.
    importlib.invalidate_caches()
    state.registry.reload()
    click.echo(f"Created {_shown(module_path)}")
    click.echo(f"Created {_shown(test_path)}")
    task_name = ".".join([*namespaces, class_name])
    click.echo(f"Start it with: flask mtasks run {task_name}")


def _shown(path: Path) -> str:
    """``path`` as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _tasks_dir(state: State) -> Path:
    paths = state.registry.package_paths()
    if paths:
        return Path(paths[0])
    # The package does not exist yet: create it beside the app's package.
    app = state.app
    package = state.registry.package
    root_package = app.import_name.split(".")[0]
    if not package.startswith(root_package + "."):
        raise click.ClickException(f"The tasks package {package} does not exist; create it first.")
    relative = package[len(root_package) + 1 :].split(".")
    return Path(app.root_path).joinpath(*relative)


migrations_cli = AppGroup("migrations", help="The extension's database migrations.")
mtasks_cli.add_command(migrations_cli)

#: Where the extension's revisions live; their file names sort in revision order.
REVISIONS_DIR = Path(__file__).parent / "migrations" / "versions"
_REVISION = re.compile(r'^revision = "([^"]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision = .*$", re.MULTILINE)
_REVISES = re.compile(r"^Revises:.*$", re.MULTILINE)


def _revisions() -> list[tuple[Path, str]]:
    """The extension's revision files with their ids, oldest first."""
    found = []
    for source in sorted(REVISIONS_DIR.glob("mtasks_*.py")):
        match = _REVISION.search(source.read_text())
        if match is None:  # pragma: no cover - a packaging mistake
            raise click.ClickException(f"{source.name} names no revision.")
        found.append((source, match.group(1)))
    return found


@migrations_cli.command("install")
def migrations_install_command() -> None:
    """Copy the extension's migrations into the app's Flask-Migrate folder.

    Each revision not yet installed (by revision id) is copied, in order,
    chained after the folder's head at that moment, so that ``flask db
    upgrade`` applies them after the app's own migrations and the history
    stays one line.
    """
    from alembic.script import ScriptDirectory

    app = current_app
    migrate = app.extensions.get("migrate")
    if migrate is None:
        raise click.ClickException(
            "Flask-Migrate is not set up on this app. Without it, create the tables with "
            "`db.create_all()` in an app context."
        )
    # Flask-Migrate reads its folder relative to the working directory, as we do.
    directory = Path(migrate.directory)
    versions = directory / "versions"
    if not versions.is_dir():
        raise click.ClickException(f"{versions} does not exist; run `flask db init` first.")
    scripts = ScriptDirectory(str(directory))
    installed = {script.revision for script in scripts.walk_revisions()}
    missing = [(source, rev) for source, rev in _revisions() if rev not in installed]
    if not missing:
        click.echo(f"The extension's migrations are already installed in {_shown(versions)}.")
        return
    heads = scripts.get_heads()
    if len(heads) > 1:
        raise click.ClickException(
            f"The migrations have several heads ({', '.join(heads)}); "
            "merge them first with `flask db merge heads`."
        )
    head = heads[0] if heads else None
    for source, revision in missing:
        text = source.read_text()
        text = _DOWN_REVISION.sub(f"down_revision = {head!r}", text, count=1)
        text = _REVISES.sub(f"Revises: {head}" if head else "Revises:", text, count=1)
        target = versions / source.name
        target.write_text(text)
        click.echo(f"Created {_shown(target)}")
        head = revision
    click.echo("Run `flask db upgrade` to create the tables.")
