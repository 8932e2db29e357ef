"""The runs table in an app's own migrations: ``flask mtasks migrations install``,
then Flask-Migrate's ``flask db upgrade`` / ``migrate`` / ``downgrade``, on SQLite
and PostgreSQL; and ``db.create_all()`` for apps without Flask-Migrate.

Flask-Migrate runs in subprocesses, as a user runs it: its ``env.py``
reconfigures logging, which must not leak into the rest of the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_maintenance_tasks
from flask_maintenance_tasks import MaintenanceTasks
from flask_maintenance_tasks.models import runs_table
from tests.support.services import postgresql_database

# Both databases: migrations create the tables on each database.
pytestmark = pytest.mark.both_databases

REVISION_FILE = "mtasks_0001_create_runs.py"
CSV_REVISION_FILE = "mtasks_0002_create_csv_files.py"
#: Every revision the extension ships, and the newest one's id.
OURS = {
    path.name
    for path in (Path(flask_maintenance_tasks.__file__).parent / "migrations" / "versions").glob(
        "mtasks_*.py"
    )
}
LATEST = "_".join(max(OURS).split("_")[:2])
INDEX = "ix_maintenance_tasks_runs_task_status_created"

APP = """
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from flask_maintenance_tasks import MaintenanceTasks

db = SQLAlchemy()
mtasks = MaintenanceTasks()


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["MIGAPP_DATABASE_URL"]
    app.config["TESTING"] = True
    db.init_app(app)
    if not os.environ.get("MIGAPP_WITHOUT_MIGRATE"):
        Migrate(app, db)
    mtasks.init_app(app, db=db)
    return app
"""


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[str]:
    """An empty database of the test's own: a SQLite file, or a new PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    server = request.getfixturevalue("postgresql_url")
    with postgresql_database(server, prefix=f"{sa.make_url(server).database}_mig") as url:
        yield url


class Project:
    """A tiny app with Flask-SQLAlchemy, Flask-Migrate and the extension, in a tmp directory."""

    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        self.database_url = database_url
        (directory / "migapp.py").write_text(APP)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLASK_")},
            "MIGAPP_DATABASE_URL": database_url,
        }

    @property
    def versions(self) -> Path:
        return self.directory / "migrations" / "versions"

    def flask(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "migapp:create_app", *args],
            cwd=self.directory,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str) -> str:
        """Run ``flask ARGS``, fail the test unless it succeeds, and return its output."""
        result = self.flask(*args)
        assert result.returncode == 0, f"flask {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    def inspect(self) -> t.Any:
        engine = sa.create_engine(self.database_url)
        try:
            inspector = sa.inspect(engine)
            if not inspector.has_table(runs_table.name):
                return None
            return {
                "columns": {c["name"]: c for c in inspector.get_columns(runs_table.name)},
                "indexes": inspector.get_indexes(runs_table.name),
                "unique": inspector.get_unique_constraints(runs_table.name),
                "primary_key": inspector.get_pk_constraint(runs_table.name),
            }
        finally:
            engine.dispose()


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    return Project(tmp_path, database_url)


@pytest.fixture
def upgraded(project: Project) -> Project:
    """The project after ``flask db init``, ``mtasks migrations install`` and ``db upgrade``."""
    project.ok("db", "init")
    project.ok("mtasks", "migrations", "install")
    project.ok("db", "upgrade")
    return project


def write_revision(versions: Path, revision: str, down: str | None) -> None:
    versions.joinpath(f"{revision}_app.py").write_text(
        f'"""app revision {revision}"""\n\n'
        f"revision = {revision!r}\ndown_revision = {down!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )


# -- install ------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_chains_the_revision_after_the_apps_head_and_only_once(
    project: Project,
) -> None:
    project.ok("db", "init")
    write_revision(project.versions, "aaa111", None)
    write_revision(project.versions, "bbb222", "aaa111")

    first = project.ok("mtasks", "migrations", "install")
    installed = (project.versions / REVISION_FILE).read_text()
    second = project.ok("mtasks", "migrations", "install")

    assert f"Created migrations/versions/{REVISION_FILE}\n" in first
    assert f"Created migrations/versions/{CSV_REVISION_FILE}\n" in first
    assert "Run `flask db upgrade` to create the tables." in first
    assert "down_revision = 'bbb222'" in installed
    assert "Revises: bbb222\n" in installed
    assert "down_revision = 'mtasks_0001'" in (project.versions / CSV_REVISION_FILE).read_text()
    assert "The extension's migrations are already installed in migrations/versions." in second
    assert (project.versions / REVISION_FILE).read_text() == installed
    assert project.ok("db", "heads").split()[0] == LATEST


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_into_an_empty_folder_makes_the_first_revision(project: Project) -> None:
    project.ok("db", "init")

    project.ok("mtasks", "migrations", "install")

    assert "down_revision = None" in (project.versions / REVISION_FILE).read_text()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_with_several_heads_asks_to_merge_them_and_writes_nothing(
    project: Project,
) -> None:
    project.ok("db", "init")
    write_revision(project.versions, "aaa111", None)
    write_revision(project.versions, "ccc333", None)

    result = project.flask("mtasks", "migrations", "install")

    assert result.returncode == 1
    assert "Error: The migrations have several heads" in result.stderr
    assert "`flask db merge heads`" in result.stderr
    assert not (project.versions / REVISION_FILE).exists()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_before_db_init_says_to_run_it(project: Project) -> None:
    result = project.flask("mtasks", "migrations", "install")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: migrations/versions does not exist; run `flask db init` first."
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_without_flask_migrate_says_to_use_create_all(project: Project) -> None:
    result = project.flask("mtasks", "migrations", "install", MIGAPP_WITHOUT_MIGRATE="1")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Flask-Migrate is not set up on this app. Without it, create the tables with "
        "`db.create_all()` in an app context."
    )


# -- upgrade, autogenerate, downgrade -------------------------------------------


def test_upgrade_creates_the_runs_table_and_downgrade_drops_it(upgraded: Project) -> None:
    schema = upgraded.inspect()
    upgraded.ok("db", "downgrade", "base")

    assert schema is not None
    assert set(schema["columns"]) == set(runs_table.c.keys())
    for column in runs_table.c:
        assert schema["columns"][column.name]["nullable"] == column.nullable, column.name
    assert schema["primary_key"]["constrained_columns"] == ["id"]
    [index] = [i for i in schema["indexes"] if i["name"] == INDEX]
    assert index["column_names"] == ["task_name", "status", "created_at"]
    assert [u["column_names"] for u in schema["unique"]] == [["exclusive_key"]]
    assert upgraded.inspect() is None


def test_autogenerate_after_upgrade_proposes_no_change_to_the_runs_table(
    upgraded: Project,
) -> None:
    output = upgraded.ok("db", "migrate", "-m", "after install")

    proposed = {
        path.name: path.read_text()
        for path in upgraded.versions.glob("*.py")
        if path.name not in OURS
    }
    assert not any(runs_table.name in text for text in proposed.values()), proposed
    assert "No changes in schema detected." in output


# -- without Flask-Migrate ----------------------------------------------------


def test_db_create_all_creates_the_runs_table(database_url: str) -> None:
    db = SQLAlchemy()
    app = Flask("create_all_app")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["TESTING"] = True
    db.init_app(app)
    MaintenanceTasks().init_app(app, db=db)

    with app.app_context():
        db.create_all()
        inspector = sa.inspect(db.engine)
        columns = {c["name"] for c in inspector.get_columns(runs_table.name)}
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(runs_table.name)}
        db.engine.dispose()

    assert columns == set(runs_table.c.keys())
    assert indexes[INDEX] == ["task_name", "status", "created_at"]
