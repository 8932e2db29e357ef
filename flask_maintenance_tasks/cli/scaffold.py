"""``flask mtasks new``: write a task module and its test from the templates.

The templates are package data, in ``flask_maintenance_tasks/scaffold/``:
``<template>.py.tmpl`` for the task and ``test_<template>.py.tmpl`` for its
test, filled with :meth:`str.format`.
"""

from __future__ import annotations

import importlib
import keyword
import re
from pathlib import Path

import click
from flask.cli import with_appcontext

from ..i18n import gettext as _
from ..i18n import lazy_gettext
from ..state import State, get_state
from .errors import catch_errors
from .paths import shown
from .terminal import visible
from .translated import CommandError, command, option

#: Where the templates live.
TEMPLATES_DIR = Path(__file__).parent.parent / "scaffold"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TEMPLATES = {"csv": "csv_task", "no_collection": "no_collection_task", None: "task"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"_+", name) if part)


@command(
    "new",
    help=lazy_gettext(
        "Write a task module named NAME (e.g. backfill_posts or billing/fix_invoices) "
        "and its test.\n\n"
        "--csv and --no-collection choose the kind of task; give one of them at most."
    ),
)
@click.argument("name")
@option("--csv", "csv", is_flag=True, help=lazy_gettext("A CSV import task."))
@option(
    "--no-collection", "no_collection", is_flag=True, help=lazy_gettext("A task that runs once.")
)
@option(
    "--tests-dir",
    default="tests/maintenance",
    show_default=True,
    help=lazy_gettext("Where the test goes."),
)
@with_appcontext
@catch_errors
def new_command(name: str, csv: bool, no_collection: bool, tests_dir: str) -> None:
    if csv and no_collection:
        raise click.UsageError(
            _(
                "--csv and --no-collection contradict each other: a CSV task reads the rows of "
                "a file, a task without a collection runs once. Give one of them, or neither."
            )
        )
    kind = "csv" if csv else "no_collection" if no_collection else None
    state = get_state()
    parts = [p for p in re.split(r"[/.]", name) if p]
    if not parts or not all(_NAME.match(p) and not keyword.iskeyword(p) for p in parts):
        raise CommandError(
            _(
                "%(name)s is not a valid task name: use letters, digits and _ (not starting "
                "with a digit), with / between sub-packages.",
                name=repr(name),
            )
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
            raise CommandError(_("%(path)s already exists; not overwriting it.", path=shown(path)))

    template = _TEMPLATES[kind]
    task_name = ".".join([*namespaces, class_name])
    values = {
        "class_name": class_name,
        "module": module,
        "task_name": task_name,
        "function_name": f"{base}_task",
    }
    target_dir.mkdir(parents=True, exist_ok=True)
    for directory in [package_dir.joinpath(*namespaces[:i]) for i in range(len(namespaces) + 1)]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    module_path.write_text((TEMPLATES_DIR / f"{template}.py.tmpl").read_text().format(**values))
    test_path.parent.mkdir(parents=True, exist_ok=True)
    test_path.write_text((TEMPLATES_DIR / f"test_{template}.py.tmpl").read_text().format(**values))
    # The import system caches directory listings: without this, a package
    # created a moment ago may not be found in this process.
    importlib.invalidate_caches()
    state.registry.reload()
    click.echo(_("Created %(path)s", path=shown(module_path)))
    click.echo(_("Created %(path)s", path=shown(test_path)))
    click.echo(_("Start it with: flask mtasks run %(task)s", task=task_name))


def _tasks_dir(state: State) -> Path:
    paths = state.registry.package_paths()
    if paths:
        return Path(paths[0])
    # The package does not exist yet: create it beside the app's package.
    app = state.app
    package = state.registry.package
    root_package = app.import_name.split(".")[0]
    if not package.startswith(root_package + "."):
        raise CommandError(
            _(
                "The tasks package %(package)s does not exist; create it first.",
                package=visible(package),
            )
        )
    relative = package[len(root_package) + 1 :].split(".")
    return Path(app.root_path).joinpath(*relative)
