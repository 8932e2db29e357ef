"""``flask mtasks new``: a task module and its test, written into a real project."""

from __future__ import annotations

import importlib
import subprocess
import sys
import typing as t
import uuid
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

APP = """
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_maintenance_tasks import MaintenanceTasks

db = SQLAlchemy()
mtasks = MaintenanceTasks()


def create_app(database_url):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["TESTING"] = True
    db.init_app(app)
    mtasks.init_app(app, db=db)
    return app
"""


class Project:
    """A package with an app factory in a tmp directory, the working directory of the test."""

    def __init__(self, directory: Path, package: str, app: Flask) -> None:
        self.directory = directory
        self.package = package
        self.app = app
        self.tasks_dir = directory / package / "maintenance"
        self.tests_dir = directory / "tests" / "maintenance"

    def new(self, *args: str) -> Result:
        return self.app.test_cli_runner().invoke(args=["mtasks", "new", *args])

    def task_names(self) -> list[str]:
        return list(self.app.extensions["maintenance_tasks"].registry.tasks())

    def files(self) -> set[str]:
        return {
            str(p.relative_to(self.directory))
            for p in self.directory.rglob("*.py")
            if "__pycache__" not in p.parts
        }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Project]:
    # A fresh package name per test: modules imported by one test stay in
    # sys.modules, and must not be mistaken for those of the next.
    package = f"scaffold_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(package)
    app = module.create_app(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        yield Project(tmp_path, package, app)
    finally:
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]


def run_pytest(project: Project) -> subprocess.CompletedProcess[str]:
    """The project's generated tests, run as its developer would: ``python -m pytest``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project.directory,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_new_writes_a_task_module_and_its_test(project: Project) -> None:
    result = project.new("backfill_posts")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"Created {project.package}/maintenance/backfill_posts_task.py",
        "Created tests/maintenance/test_backfill_posts_task.py",
        "Start it with: flask mtasks run BackfillPostsTask",
    ]
    assert project.files() == {
        f"{project.package}/__init__.py",
        f"{project.package}/maintenance/__init__.py",
        f"{project.package}/maintenance/backfill_posts_task.py",
        "tests/maintenance/test_backfill_posts_task.py",
    }


def test_a_new_task_is_discovered_by_the_registry(project: Project) -> None:
    assert project.task_names() == []

    project.new("BackfillPosts")

    assert project.task_names() == ["BackfillPostsTask"]
    module = importlib.import_module(f"{project.package}.maintenance.backfill_posts_task")
    assert module.BackfillPostsTask.name == "BackfillPostsTask"


def test_a_new_task_in_a_sub_package_is_named_after_it(project: Project) -> None:
    project.new("one_off")

    result = project.new("billing/fix_invoices")

    assert result.exit_code == 0, result.output
    assert (project.tasks_dir / "billing" / "__init__.py").is_file()
    assert (project.tasks_dir / "billing" / "fix_invoices_task.py").is_file()
    assert (project.tests_dir / "billing" / "test_fix_invoices_task.py").is_file()
    assert project.task_names() == ["OneOffTask", "billing.FixInvoicesTask"]


def test_a_new_no_collection_task_processes_once_without_an_item(project: Project) -> None:
    project.new("send_report", "--no-collection")

    source = (project.tasks_dir / "send_report_task.py").read_text()
    task_class = importlib.import_module(
        f"{project.package}.maintenance.send_report_task"
    ).SendReportTask
    assert "collection = no_collection()" in source
    assert "def process(self):" in source
    assert project.task_names() == ["SendReportTask"]
    assert type(task_class.collection).__name__ == "NoCollection"


CONFTEST = """
import pytest

from {package} import create_app, db


@pytest.fixture
def app(tmp_path):
    app = create_app(f"sqlite:///{{tmp_path / 'test.db'}}")
    with app.app_context():
        db.create_all()
    return app
"""

#: What a developer writes in place of the generated NotImplementedErrors.
WRITTEN = {
    'raise NotImplementedError("return the items to process")': "return [1, 2, 3]",
    'raise NotImplementedError("change one item")': "self.seen.append(item)",
    'raise NotImplementedError("do the work")': "pass",
    'raise NotImplementedError("import one row")': 'assert row["email"] == "ada@example.com"',
}


def write_the_tasks(project: Project) -> None:
    for path in project.tasks_dir.rglob("*_task.py"):
        source = path.read_text()
        for generated, written in WRITTEN.items():
            source = source.replace(generated, written)
        source = source.replace("(Task):\n", "(Task):\n    seen = []\n\n")
        path.write_text(source)


def test_the_generated_tests_fail_until_the_tasks_are_written(project: Project) -> None:
    (project.directory / "tests" / "conftest.py").parent.mkdir(parents=True)
    (project.directory / "tests" / "conftest.py").write_text(
        CONFTEST.format(package=project.package)
    )
    project.new("backfill_posts")
    project.new("send_report", "--no-collection")
    project.new("billing/fix_invoices")
    project.new("import_users", "--csv")

    generated = run_pytest(project)
    write_the_tasks(project)
    written = run_pytest(project)

    assert generated.returncode == 1, generated.stdout + generated.stderr
    assert "4 failed" in generated.stdout
    assert generated.stdout.count("NotImplementedError: ") >= 4
    assert written.returncode == 0, written.stdout + written.stderr
    assert "4 passed" in written.stdout


def test_a_generated_test_shows_how_to_assert_on_the_rows_changed(project: Project) -> None:
    project.new("billing/fix_invoices")

    test_source = (project.tests_dir / "billing" / "test_fix_invoices_task.py").read_text()

    assert 'run = mtasks_run("billing.FixInvoicesTask")' in test_source
    assert 'assert run.status == "succeeded", run.error_message' in test_source
    assert "#   assert run.tick_count == 2" in test_source
    assert "#   assert contents.all() == " in test_source


def test_the_generated_files_pass_the_linter(project: Project) -> None:
    ruff = pytest.importorskip("ruff.__main__")
    project.new("backfill_posts")
    project.new("send_report", "--no-collection")
    project.new("import_users", "--csv")

    result = subprocess.run(
        [
            ruff.find_ruff_bin(),
            *("check", "--isolated", "--select", "B,E,F,I,UP,W"),
            *(str(project.tasks_dir), str(project.tests_dir)),
        ],
        cwd=project.directory,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_new_csv_task_reads_its_rows_from_csv_collection(project: Project) -> None:
    # csv_collection is not part of the package yet: only the files are checked here.
    result = project.new("import_users", "--csv")

    source = (project.tasks_dir / "import_users_task.py").read_text()
    test_source = (project.tests_dir / "test_import_users_task.py").read_text()
    assert result.exit_code == 0, result.output
    assert "from flask_maintenance_tasks import Task, csv_collection" in source
    assert "class ImportUsersTask(Task):" in source
    assert "collection = csv_collection()" in source
    assert "def process(self, row):" in source
    assert 'run = mtasks_run("ImportUsersTask", csv_file=csv_file)' in test_source


@pytest.mark.parametrize("existing", ["module", "test"])
def test_new_refuses_to_overwrite_a_task_or_its_test(project: Project, existing: str) -> None:
    project.new("backfill_posts")
    module = project.tasks_dir / "backfill_posts_task.py"
    test = project.tests_dir / "test_backfill_posts_task.py"
    kept, removed = (module, test) if existing == "module" else (test, module)
    kept.write_text("# my edits\n")
    removed.unlink()

    result = project.new("backfill_posts")

    assert result.exit_code == 1
    shown = kept.relative_to(project.directory)
    assert result.stderr == f"Error: {shown} already exists; not overwriting it.\n"
    assert kept.read_text() == "# my edits\n"
    assert not removed.exists()


@pytest.mark.parametrize("name", ["2fast", "backfill-posts", "billing/class", "posts task", "/"])
def test_new_rejects_a_name_that_is_not_a_python_identifier(project: Project, name: str) -> None:
    result = project.new(name)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {name!r} is not a valid task name")
    assert project.files() == {f"{project.package}/__init__.py"}


def test_new_prints_the_paths_it_writes_with_control_characters_as_escapes(
    project: Project,
) -> None:
    result = project.new("backfill_posts", "--tests-dir", "tests/\x1b[2J\x1b]0;owned\x07")

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "Created tests/\\x1b[2J\\x1b]0;owned\\x07/test_backfill_posts_task.py" in result.stdout


@pytest.mark.parametrize(
    "options",
    [
        ["--csv", "--no-collection"],
        ["--no-collection", "--csv"],
        ["--csv", "--no-collection", "--csv"],
    ],
)
def test_new_refuses_contradictory_kinds_and_writes_nothing(
    project: Project, options: list[str]
) -> None:
    result = project.new("import_users", *options)

    assert result.exit_code == 2
    assert "--csv and --no-collection contradict each other" in result.stderr
    assert project.files() == {f"{project.package}/__init__.py"}
    assert not project.tests_dir.exists()


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        (["--csv", "--tests-dir", "t"], "csv_collection"),
        (["--tests-dir", "t", "--no-collection"], "no_collection"),
    ],
)
def test_new_takes_one_kind_with_a_tests_dir(
    project: Project, options: list[str], kind: str
) -> None:
    result = project.new("import_users", *options)

    assert result.exit_code == 0, result.output
    assert kind in (project.tasks_dir / "import_users_task.py").read_text()
    assert (project.directory / "t" / "test_import_users_task.py").exists()
