"""Our tables in an app's own migrations: ``flask mtasks migrations install``,
then Flask-Migrate's ``flask db upgrade`` / ``migrate`` / ``downgrade``, on SQLite
and PostgreSQL; and ``db.create_all()`` for apps without Flask-Migrate.

Flask-Migrate runs in processes of its own, as a user runs it: its ``env.py``
reconfigures logging, which must not leak into the rest of the suite. Each
command costs time, so the folders ``flask db init`` and a first install
write, the same for every test, are made once per module and copied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import typing as t
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_maintenance_tasks
from flask_maintenance_tasks import MaintenanceTasks
from flask_maintenance_tasks.models import Base, events_table, runs_table
from tests.support.processes import run_flask
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

    def copy_migrations(self, folder: Path) -> None:
        """Start from a ``migrations/`` folder made earlier (by ``db init``, by an install)."""
        shutil.copytree(folder, self.directory / "migrations")

    def flask(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_flask(
            ["--app", "migapp:create_app", *args],
            env={**self.env, **env},
            cwd=self.directory,
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

    def our_tables(self) -> set[str]:
        engine = sa.create_engine(self.database_url)
        try:
            return set(sa.inspect(engine).get_table_names()) & set(Base.metadata.tables)
        finally:
            engine.dispose()

    def differences(self) -> list[t.Any]:
        """What Alembic's autogenerate finds between our models and the database."""
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(
                    connection,
                    opts={
                        "compare_type": True,
                        "include_name": lambda name, kind, parent: (
                            kind != "table" or name in Base.metadata.tables
                        ),
                    },
                )
                return list(compare_metadata(context, Base.metadata))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``migrations/`` as ``flask db init`` writes it."""
    directory = tmp_path_factory.mktemp("initialized")
    Project(directory, f"sqlite:///{directory / 'unused.db'}").ok("db", "init")
    return directory / "migrations"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, initialized: Path) -> Path:
    """``migrations/`` after ``flask mtasks migrations install`` into a fresh one."""
    directory = tmp_path_factory.mktemp("installed")
    project = Project(directory, f"sqlite:///{directory / 'unused.db'}")
    project.copy_migrations(initialized)
    project.ok("mtasks", "migrations", "install")
    return directory / "migrations"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    return Project(tmp_path, database_url)


@pytest.fixture
def upgraded(project: Project, installed: Path) -> Project:
    """The project after ``flask db init``, ``mtasks migrations install`` and ``db upgrade``."""
    project.copy_migrations(installed)
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
    project: Project, initialized: Path
) -> None:
    project.copy_migrations(initialized)
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


def test_install_into_an_empty_folder_makes_the_first_revision(installed: Path) -> None:
    assert "down_revision = None" in (installed / "versions" / REVISION_FILE).read_text()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_with_several_heads_asks_to_merge_them_and_writes_nothing(
    project: Project, initialized: Path
) -> None:
    project.copy_migrations(initialized)
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


def test_upgrade_creates_our_tables_as_the_models_define_them_and_downgrade_drops_them(
    upgraded: Project,
) -> None:
    schema = upgraded.inspect()
    differences = upgraded.differences()
    upgraded.ok("db", "downgrade", "base")

    assert differences == []
    assert schema is not None
    assert set(schema["columns"]) == set(runs_table.c.keys())
    for column in runs_table.c:
        assert schema["columns"][column.name]["nullable"] == column.nullable, column.name
    assert schema["primary_key"]["constrained_columns"] == ["id"]
    [index] = [i for i in schema["indexes"] if i["name"] == INDEX]
    assert index["column_names"] == ["task_name", "status", "created_at"]
    assert [u["column_names"] for u in schema["unique"]] == [["exclusive_key"]]
    assert upgraded.our_tables() == set()


def test_autogenerate_after_upgrade_proposes_no_change_to_our_tables(
    upgraded: Project,
) -> None:
    output = upgraded.ok("db", "migrate", "-m", "after install")

    proposed = {
        path.name: path.read_text()
        for path in upgraded.versions.glob("*.py")
        if path.name not in OURS
    }
    assert not any(name in text for text in proposed.values() for name in Base.metadata.tables), (
        proposed
    )
    assert "No changes in schema detected." in output


def test_autogenerate_without_install_makes_a_revision_that_upgrades(
    project: Project, initialized: Path
) -> None:
    project.copy_migrations(initialized)

    project.ok("db", "migrate", "-m", "first")
    [revision] = [path.read_text() for path in project.versions.glob("*.py")]
    project.ok("db", "upgrade")
    differences = project.differences()
    again = project.ok("db", "migrate", "-m", "again")
    # A timestamp goes through the models' UTCDateTime and comes back UTC-aware.
    engine = sa.create_engine(project.database_url)
    written = datetime(2026, 11, 30, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    try:
        with engine.begin() as connection:
            connection.execute(
                events_table.insert().values(
                    task_name="T", action="started", origin="python", created_at=written
                )
            )
            read = connection.execute(sa.select(events_table.c.created_at)).scalar_one()
    finally:
        engine.dispose()
    project.ok("db", "downgrade", "base")

    assert "flask_maintenance_tasks" not in revision
    assert "sa.DateTime(timezone=True)" in revision
    assert project.our_tables() == set()
    assert differences == []
    assert "No changes in schema detected." in again
    assert read == written
    assert read.tzinfo == timezone.utc


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_after_autogenerate_says_what_to_do_and_writes_nothing(
    project: Project, initialized: Path
) -> None:
    project.copy_migrations(initialized)
    project.ok("db", "migrate", "-m", "first")
    [autogenerated] = list(project.versions.glob("*.py"))

    result = project.flask("mtasks", "migrations", "install")

    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert (
        "Error: The app's own revisions already create the extension's tables: "
        f"migrations/versions/{autogenerated.name} (maintenance_tasks_csv_chunks, "
        "maintenance_tasks_csv_files, maintenance_tasks_events, maintenance_tasks_failures, "
        "maintenance_tasks_runs), "
        "most likely from `flask db migrate`." in message
    )
    assert "table already exists" in message
    assert "keep autogenerating" in message
    assert "delete those revisions" in message
    assert [path.name for path in project.versions.glob("*.py")] == [autogenerated.name]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_when_the_database_already_has_the_tables_says_what_to_do(
    project: Project, initialized: Path
) -> None:
    project.copy_migrations(initialized)
    engine = sa.create_engine(project.database_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()

    refused = project.flask("mtasks", "migrations", "install")
    written = [path.name for path in project.versions.glob("*.py")]
    forced = project.ok("mtasks", "migrations", "install", "--ignore-database")

    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert (
        "Error: The database already has the extension's tables (maintenance_tasks_csv_chunks, "
        in message
    )
    assert "`db.create_all()`" in message
    assert "--ignore-database" in message
    assert written == []
    assert f"Created migrations/versions/{REVISION_FILE}" in forced
    assert "`flask db stamp head`" in forced


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_without_a_database_file_does_not_create_one(
    project: Project, initialized: Path
) -> None:
    project.copy_migrations(initialized)

    project.ok("mtasks", "migrations", "install")

    assert not (project.directory / "app.db").exists()
    assert (project.versions / REVISION_FILE).exists()


# Which database runs the revisions makes no difference to where they are chained.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_install_after_an_older_install_adds_the_new_revisions_after_the_apps_latest(
    project: Project, installed: Path
) -> None:
    project.copy_migrations(installed)
    # An install from before the CSV tables: every revision after the runs table goes.
    for newer in project.versions.glob("mtasks_*.py"):
        if not newer.name.startswith("mtasks_0001"):
            newer.unlink()
    write_revision(project.versions, "ccc333", "mtasks_0001")

    output = project.ok("mtasks", "migrations", "install")
    project.ok("db", "upgrade")
    differences = project.differences()
    project.ok("db", "downgrade", "base")

    assert CSV_REVISION_FILE in output and "mtasks_0001" not in output
    assert "down_revision = 'ccc333'" in (project.versions / CSV_REVISION_FILE).read_text()
    assert (
        "down_revision = 'mtasks_0002'"
        in (project.versions / "mtasks_0003_dashboard_indexes.py").read_text()
    )
    assert differences == []
    assert project.our_tables() == set()


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
