"""The ``flask mtasks`` command group."""

from __future__ import annotations

import json
import re
import time
import typing as t
from pathlib import Path

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from . import formatting, runner, store
from .exceptions import MaintenanceTasksError
from .extension import State, get_state
from .models import Run
from .transitions import ACTIVE, COMPLETED

mtasks_cli = AppGroup("mtasks", help="Run and control maintenance tasks.")


def _state() -> State:
    try:
        return get_state()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


class _Errors:
    """Turn our errors into ``Error: ...`` and exit status 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: t.Any, error: BaseException | None, tb: t.Any) -> None:
        if isinstance(error, MaintenanceTasksError):
            raise click.ClickException(str(error)) from None
        if isinstance(error, store.LostRace):
            raise click.ClickException(str(error)) from None


def _parse_arguments(task_class: t.Any, pairs: tuple[str, ...]) -> dict[str, t.Any]:
    """``KEY=VALUE`` pairs to raw arguments; ``Parameters`` does the coercion.

    A key given twice becomes a list; a value for a list, tuple, set or dict
    field may be JSON (``ids=[1,2]``) or comma-separated (``ids=1,2``).
    """
    arguments: dict[str, t.Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE.", param_hint="--arg")
        if key in arguments:
            previous = arguments[key]
            arguments[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            arguments[key] = value
    model = getattr(task_class, "Parameters", None)
    if model is None:
        return arguments
    for key, value in list(arguments.items()):
        field = model.model_fields.get(key)
        if field is None or not isinstance(value, str):
            continue
        origin = t.get_origin(field.annotation) or field.annotation
        if origin in (list, tuple, set, frozenset, dict):
            try:
                arguments[key] = json.loads(value)
            except ValueError:
                arguments[key] = [v.strip() for v in value.split(",")] if value else []
    return arguments


@mtasks_cli.command("list")
def list_command() -> None:
    """List the tasks with the status of each one's latest run."""
    state = _state()
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
@click.option("--arg", "pairs", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable).")
@click.option("--csv", "csv_path", metavar="PATH", help="A CSV file for a CSV task; - reads stdin.")
@click.option("--wait", is_flag=True, help="Follow the run until it ends; fail unless it succeeds.")
def run_command(name: str, pairs: tuple[str, ...], csv_path: str | None, wait: bool) -> None:
    """Start a run of task NAME and print its id."""
    state = _state()
    with _Errors():
        task_class = state.registry.get(name)
        arguments = _parse_arguments(task_class, pairs)
        csv_file: t.Any = None
        if csv_path == "-":
            csv_file = ("stdin.csv", click.get_binary_stream("stdin"))
        elif csv_path is not None:
            path = Path(csv_path)
            if not path.is_file():
                raise click.ClickException(f"CSV file not found: {csv_path}")
            csv_file = path
        run = runner.run(state, name, arguments, csv_file=csv_file)
    click.echo(run.id)
    if wait:
        _follow(state, run.id)


def _follow(state: State, run_id: int) -> None:
    """Draw a progress bar on stderr until the run ends; exit 1 unless it succeeded."""
    err = click.get_text_stream("stderr")
    tty = err.isatty()
    last_line = ""
    last_print = 0.0
    done = {s.value for s in COMPLETED} | {"paused"}
    while True:
        run = runner.get_run(state, run_id)
        if run is None:
            raise click.ClickException(f"Run #{run_id} disappeared.")
        line = _bar(run)
        now = time.monotonic()
        if tty:
            err.write("\r" + line.ljust(len(last_line)))
            err.flush()
        elif line != last_line and (now - last_print >= 2 or run.status in done):
            err.write(line + "\n")
            err.flush()
            last_print = now
        last_line = line
        if run.status in done:
            break
        time.sleep(0.25)
    if tty:
        err.write("\n")
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
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if run_id is not None:
        run = runner.get_run(state, run_id)
        if run is None:
            raise click.ClickException(f"Run #{run_id} not found.")
        if as_json:
            click.echo(json.dumps(formatting.run_as_dict(app, run), indent=2))
        else:
            _print_run(app, run)
        return
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
        click.echo(
            json.dumps(
                {
                    "active": [formatting.run_as_dict(app, r) for r in active],
                    "latest": [formatting.run_as_dict(app, r) for r in latest],
                },
                indent=2,
            )
        )
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


def _print_run(app: t.Any, run: Run) -> None:
    data = formatting.run_as_dict(app, run)
    click.echo(f"Run #{run.id}  {run.task_name}  {run.status}")
    click.echo(f"  {data['progress']}")
    click.echo(f"  {data['status_text']}")
    if data["arguments"]:
        click.echo(f"  Arguments: {json.dumps(data['arguments'])}")
    if run.metadata_ is not None:
        click.echo(f"  Metadata: {json.dumps(run.metadata_)}")
    click.echo(f"  Cursor: {json.dumps(run.cursor)}")
    if run.interruption_reason:
        click.echo(f"  Last interruption: {run.interruption_reason.replace('_', ' ')}")
    if run.error_class:
        click.echo(f"  Error: {run.error_class}: {run.error_message}")
        if run.errored_element is not None:
            click.echo(f"  Failing item: {json.dumps(run.errored_element)}")
        for frame in run.backtrace or []:
            click.echo(f"    {frame}")


def _control(action: str, run_id: int) -> None:
    state = _state()
    with _Errors():
        run = getattr(runner, action)(state, run_id)
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
    with _Errors():
        recovered = recover(state)
    for recovery in recovered:
        click.echo(str(recovery))
    if not recovered:
        click.echo("Nothing to recover.")


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"_+", name) if part)


@mtasks_cli.command("new")
@click.argument("name")
@click.option("--csv", "kind", flag_value="csv", help="A CSV import task.")
@click.option("--no-collection", "kind", flag_value="no_collection", help="A task that runs once.")
@click.option("--tests-dir", default="tests/maintenance", show_default=True, help="Where the test goes.")
def new_command(name: str, kind: str | None, tests_dir: str) -> None:
    """Write a task module named NAME (e.g. backfill_posts or billing/fix_invoices) and its test."""
    state = _state()
    parts = [p for p in re.split(r"[/.]", name) if p]
    if not parts or not all(_NAME.match(p) for p in parts):
        raise click.ClickException(f"{name!r} is not a valid task name: use letters, digits and _.")
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
            raise click.ClickException(f"{path} already exists; not overwriting it.")

    template = {"csv": "csv_task", "no_collection": "no_collection_task"}.get(kind or "", "task")
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
    state.registry.reload()
    click.echo(f"Created {module_path}")
    click.echo(f"Created {test_path}")


def _tasks_dir(state: State) -> Path:
    paths = state.registry.package_paths()
    if paths:
        return Path(paths[0])
    # The package does not exist yet: create it beside the app's package.
    app = current_app
    package = state.registry.package
    root_package = app.import_name.split(".")[0]
    if not package.startswith(root_package + "."):
        raise click.ClickException(
            f"The tasks package {package} does not exist; create it first."
        )
    relative = package[len(root_package) + 1 :].split(".")
    return Path(app.root_path).joinpath(*relative)


migrations_cli = AppGroup("migrations", help="The extension's database migrations.")
mtasks_cli.add_command(migrations_cli)

REVISION_FILE = "mtasks_0001_create_runs.py"


@migrations_cli.command("install")
def migrations_install_command() -> None:
    """Copy the runs-table migration into the app's Flask-Migrate folder."""
    app = current_app
    migrate = app.extensions.get("migrate")
    if migrate is None:
        raise click.ClickException(
            "Flask-Migrate is not set up on this app. Without it, create the table with "
            "`db.create_all()` in an app context."
        )
    # Flask-Migrate reads its folder relative to the working directory.
    directory = Path(migrate.directory)
    versions = directory / "versions"
    if not versions.is_dir():
        raise click.ClickException(f"{versions} does not exist; run `flask db init` first.")
    target = versions / REVISION_FILE
    if target.exists():
        click.echo(f"{target} is already installed.")
        return

    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(directory)).get_heads()
    if len(heads) > 1:
        raise click.ClickException(
            f"The migrations have several heads ({', '.join(heads)}); merge them first."
        )
    source = (Path(__file__).parent / "migrations" / "versions" / REVISION_FILE).read_text()
    down = repr(heads[0]) if heads else "None"
    source = source.replace("down_revision = None", f"down_revision = {down}", 1)
    source = source.replace("Revises:\n", f"Revises: {heads[0] if heads else ''}\n", 1)
    target.write_text(source)
    click.echo(f"Created {target}; run `flask db upgrade` to create the table.")

