"""``flask mtasks migrations install``: the extension's revisions into the app's migrations."""

from __future__ import annotations

import re
from pathlib import Path

import click
from alembic.script import ScriptDirectory
from flask import current_app
from flask.cli import AppGroup

from .paths import shown
from .terminal import visible

migrations_cli = AppGroup("migrations", help="The extension's database migrations.")

#: Where the extension's revisions live; their file names sort in revision order.
REVISIONS_DIR = Path(__file__).parent.parent / "migrations" / "versions"
_REVISION = re.compile(r'^revision = "([^"]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision = .*$", re.MULTILINE)
_REVISES = re.compile(r"^Revises:.*$", re.MULTILINE)


def _revisions() -> list[tuple[Path, str]]:
    """The extension's revision files with their ids, oldest first."""
    found = []
    for source in sorted(REVISIONS_DIR.glob("mtasks_*.py")):
        match = _REVISION.search(source.read_text())
        if match is None:  # pragma: no cover - a packaging mistake
            raise click.ClickException(f"{visible(source.name)} names no revision.")
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
    migrate = current_app.extensions.get("migrate")
    if migrate is None:
        raise click.ClickException(
            "Flask-Migrate is not set up on this app. Without it, create the tables with "
            "`db.create_all()` in an app context."
        )
    # Flask-Migrate reads its folder relative to the working directory, as we do.
    directory = Path(migrate.directory)
    versions = directory / "versions"
    if not versions.is_dir():
        raise click.ClickException(f"{shown(versions)} does not exist; run `flask db init` first.")
    scripts = ScriptDirectory(str(directory))
    installed = {script.revision for script in scripts.walk_revisions()}
    missing = [(source, rev) for source, rev in _revisions() if rev not in installed]
    if not missing:
        click.echo(f"The extension's migrations are already installed in {shown(versions)}.")
        return
    heads = scripts.get_heads()
    if len(heads) > 1:
        raise click.ClickException(
            f"The migrations have several heads ({visible(', '.join(heads))}); "
            "merge them first with `flask db merge heads`."
        )
    head = heads[0] if heads else None
    for source, revision in missing:
        text = source.read_text()
        text = _DOWN_REVISION.sub(f"down_revision = {head!r}", text, count=1)
        text = _REVISES.sub(f"Revises: {head}" if head else "Revises:", text, count=1)
        target = versions / source.name
        target.write_text(text)
        click.echo(f"Created {shown(target)}")
        head = revision
    click.echo("Run `flask db upgrade` to create the tables.")
