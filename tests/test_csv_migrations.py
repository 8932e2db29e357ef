"""``flask mtasks migrations install`` in a Flask-Migrate app, upgraded on a real database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from flask_maintenance_tasks.models import Base
from tests.support import ROOT

# Both databases: migrations create the tables on each database.
pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

APP = """
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from flask_maintenance_tasks import MaintenanceTasks

db = SQLAlchemy()


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["MIGRATIONS_TEST_DATABASE_URL"]
    db.init_app(app)
    Migrate(app, db)
    MaintenanceTasks().init_app(app, db=db, tasks_package="no_tasks_here")
    return app
"""


class Project:
    """A throwaway app folder, driven by ``flask`` in subprocesses."""

    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        (directory / "migapp.py").write_text(textwrap.dedent(APP))
        self.env = {
            **os.environ,
            "MIGRATIONS_TEST_DATABASE_URL": database_url,
            "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)]),
        }

    def flask(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "migapp:create_app", *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def revision(self, message: str) -> str:
        output = self.flask("db", "revision", "-m", message)
        found = re.search(r"versions/(\w+?)_\w+\.py", output)
        assert found, output
        return found.group(1)

    def down_revision(self, file_name: str) -> str | None:
        text = (self.directory / "migrations" / "versions" / file_name).read_text()
        found = re.search(r"^down_revision = (.*)$", text, re.MULTILINE)
        assert found
        literal = found.group(1)
        return None if literal == "None" else literal.strip("'\"")


def differences(database_url: str) -> list[t.Any]:
    """What Alembic's autogenerate finds between our models and the upgraded database."""
    engine = sa.create_engine(database_url)
    ours = set(Base.metadata.tables)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, kind, parent: kind != "table" or name in ours,
                },
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def _no_alembic_version_left(database_url: str) -> t.Iterator[None]:
    yield
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


def tables(database_url: str) -> set[str]:
    engine = sa.create_engine(database_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_install_chains_every_revision_after_the_apps_head_and_upgrades_to_our_models(
    tmp_path, database_url
):
    project = Project(tmp_path, database_url)
    project.flask("db", "init")
    first = project.revision("the app's first")

    output = project.flask("mtasks", "migrations", "install")
    assert "mtasks_0001_create_runs.py" in output and "mtasks_0002_create_csv_files.py" in output
    assert project.down_revision("mtasks_0001_create_runs.py") == first
    assert project.down_revision("mtasks_0002_create_csv_files.py") == "mtasks_0001"
    assert "already installed" in project.flask("mtasks", "migrations", "install")

    project.flask("db", "upgrade")
    try:
        assert {"maintenance_tasks_runs", "maintenance_tasks_csv_files"} <= tables(database_url)
        assert differences(database_url) == []
    finally:
        project.flask("db", "downgrade", "base")
    assert not {name for name in tables(database_url) if name.startswith("maintenance_tasks")}


def test_install_after_an_older_install_adds_the_new_revision_after_the_apps_latest(
    tmp_path, database_url
):
    project = Project(tmp_path, database_url)
    project.flask("db", "init")
    project.flask("mtasks", "migrations", "install")
    # An install from before the CSV tables: every revision after the runs table goes.
    for newer in (tmp_path / "migrations" / "versions").glob("mtasks_*.py"):
        if not newer.name.startswith("mtasks_0001"):
            newer.unlink()
    later = project.revision("the app's own, after the runs table")

    output = project.flask("mtasks", "migrations", "install")
    assert "mtasks_0002_create_csv_files.py" in output and "mtasks_0001" not in output
    assert project.down_revision("mtasks_0002_create_csv_files.py") == later
    assert project.down_revision("mtasks_0003_dashboard_indexes.py") == "mtasks_0002"

    project.flask("db", "upgrade")
    try:
        assert differences(database_url) == []
    finally:
        project.flask("db", "downgrade", "base")
