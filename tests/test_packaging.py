"""The wheel as it is published, and an app built from docs/existing-app.rst that installs it.

The wheel is built by pip from a copy of the sources (so that no build
directory is left in the checkout), with the build backend from the package
index pip is configured with. The end-to-end test installs it into a fresh
virtual environment, with its dependencies from that index, and drives an
application made of the code blocks of docs/existing-app.rst.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.services import RedisServer

ROOT = Path(__file__).resolve().parent.parent
EXISTING_APP = ROOT / "docs" / "existing-app.rst"
SOURCES = ["pyproject.toml", "README.md", "LICENSE.txt", "flask_maintenance_tasks"]


def _pip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source))
    (built,) = out.glob("flask_maintenance_tasks-*.whl")
    return built


def test_the_wheel_ships_our_licence_and_htmx_s_notice(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
        licence = archive.read(f"{dist_info}/licenses/LICENSE.txt").decode()
        htmx = archive.read("flask_maintenance_tasks/web/vendor/htmx.LICENSE").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()

    assert licence == (ROOT / "LICENSE.txt").read_text()
    assert licence.startswith("MIT License")
    assert htmx.startswith("BSD 2-Clause License\n\nCopyright (c) 2020, Big Sky Software\n")
    assert "License-File: LICENSE.txt" in metadata
    assert "flask_maintenance_tasks/web/static/maintenance_tasks/htmx.min.js" in names
    assert "flask_maintenance_tasks/web/vendor/README.md" in names
    # The translations, read from their .po files at run time, and the extra that reads them.
    assert "flask_maintenance_tasks/translations/flask_maintenance_tasks.pot" in names
    assert "flask_maintenance_tasks/translations/ja/LC_MESSAGES/flask_maintenance_tasks.po" in names
    assert "Provides-Extra: i18n" in metadata
    assert 'Requires-Dist: flask-babel>=4.0; extra == "i18n"' in metadata
    # Nothing but the dashboard's own assets is in the folder the blueprint serves.
    static = sorted(n for n in names if "/web/static/" in n)
    assert [n.rsplit("/", 1)[1] for n in static] == [
        "dashboard.css",
        "dashboard.js",
        "htmx.min.js",
        "pygments.css",
    ]


# -- the application of docs/existing-app.rst ---------------------------------

_BLOCK = re.compile(
    r"^\.\. code-block:: (?P<language>\S+)\n    :caption: (?P<caption>\S+)\n\n"
    r"(?P<body>(?:(?:    .*)?\n)+)",
    re.MULTILINE,
)


def docs_files() -> dict[str, str]:
    """The files of the page: each code block with a file name as its caption."""
    text = EXISTING_APP.read_text()
    files = {}
    for match in _BLOCK.finditer(text):
        lines = match["body"].rstrip("\n").split("\n")
        files[match["caption"]] = "\n".join(line[4:] for line in lines) + "\n"
    return files


def test_the_page_names_every_file_of_the_app() -> None:
    assert sorted(docs_files()) == [
        "myapp/__init__.py",
        "myapp/maintenance/__init__.py",
        "myapp/maintenance/backfill_word_count.py",
        "myapp/models.py",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/test_backfill_word_count.py",
    ]


def _commands() -> list[str]:
    return re.findall(r"^    \$ (.+)$", EXISTING_APP.read_text(), re.MULTILINE)


@pytest.mark.slow
def test_an_app_made_from_the_docs_runs_a_task_with_the_installed_wheel(
    wheel: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The package with its dependencies, and pytest, from the configured index.
    _pip("--python", str(python), "install", "--quiet", str(wheel), "pytest")
    project = tmp_path / "project"
    for name, text in docs_files().items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "PYTHON"))},
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "FLASK_SECRET_KEY": "e2e",
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}",
        "FLASK_MAINTENANCE_TASKS_REDIS_URL": redis_server.url,
    }

    def shell(command: str) -> str:
        result = subprocess.run(
            command, shell=True, cwd=project, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    commands = _commands()
    # The tables through Flask-Migrate, as the page says: the extension's revisions, then the app's.
    migrations = [
        c
        for c in commands
        if c.startswith(("flask --app myapp db ", "flask --app myapp mtasks migrations"))
    ]
    assert migrations[1] == "flask --app myapp mtasks migrations install", migrations
    assert "flask --app myapp mtasks worker &" in commands
    assert "flask --app myapp mtasks run BackfillWordCountTask --wait" in commands
    assert "pytest" in commands

    # The installed package, not this checkout.
    where = shell("python -c 'import flask_maintenance_tasks as m; print(m.__file__)'")
    assert where.startswith(str(venv))
    for command in migrations:
        shell(command)
    shell(
        "python -c 'from myapp import create_app, db; from myapp.models import Post; "
        "create_app().app_context().push(); "
        'db.session.add_all([Post(content="a b c"), Post(content="d e")]); db.session.commit()\''
    )
    assert shell("flask --app myapp mtasks run BackfillWordCountTask").split()[0] == "1"
    shell("flask --app myapp mtasks worker --burst")
    status = json.loads(shell("flask --app myapp mtasks status 1 --json"))
    # Without the i18n extra, a Japanese terminal reads English.
    japanese_terminal = shell("LANGUAGE=ja flask --app myapp mtasks status 1")
    counts = shell(
        "python -c 'import sqlalchemy as sa; from myapp import create_app, db; "
        "from myapp.models import Post; create_app().app_context().push(); "
        "print(db.session.scalars(sa.select(Post.word_count).order_by(Post.id)).all())'"
    )
    dashboard = shell(
        "python -c 'from myapp import create_app; client = create_app().test_client(); "
        'print(client.get("/admin/maintenance_tasks/").status_code, '
        'client.get("/maintenance_tasks/").status_code)\''
    )
    tests = shell("pytest -q -p no:cacheprovider")

    assert status["status"] == "succeeded", status
    assert "Succeeded" in japanese_terminal, japanese_terminal
    assert counts.strip() == "[3, 2]"
    assert dashboard.split() == ["403", "404"]
    assert "1 passed" in tests
