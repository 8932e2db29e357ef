"""``flask mtasks migrations install``: the extension's revisions into the app's migrations."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from ..i18n import gettext as _
from ..i18n import lazy_gettext
from .paths import shown
from .terminal import visible
from .translated import CommandError, option

if t.TYPE_CHECKING:
    from alembic.script import Script

migrations_cli = AppGroup(
    "migrations", help=t.cast(str, lazy_gettext("The extension's database migrations."))
)

#: Where the extension's revisions live; their file names sort in revision order.
REVISIONS_DIR = Path(__file__).parent.parent / "migrations" / "versions"
_REVISION = re.compile(r'^revision = "([^"]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision = .*$", re.MULTILINE)
_REVISES = re.compile(r"^Revises:.*$", re.MULTILINE)
#: ``op.create_table("name"``, as we and autogenerate write it.
_CREATES = re.compile(r"""create_table\(\s*['"]([\w.]+)['"]""")


def _revisions() -> list[tuple[Path, str]]:
    """The extension's revision files with their ids, oldest first."""
    found = []
    for source in sorted(REVISIONS_DIR.glob("mtasks_*.py")):
        match = _REVISION.search(source.read_text())
        if match is None:  # pragma: no cover - a packaging mistake
            raise CommandError(_("%(file)s names no revision.", file=visible(source.name)))
        found.append((source, match.group(1)))
    return found


def _created(text: str) -> list[str]:
    """The tables a revision's text creates."""
    return _CREATES.findall(text)


def _created_by_the_app(scripts: list[Script], tables: set[str]) -> dict[str, list[str]]:
    """Which of ``tables`` the app's own revisions create, by file."""
    found = {}
    for script in scripts:
        if script.path is None:  # pragma: no cover - every script has a file
            continue
        path = Path(script.path)
        created = [name for name in _created(path.read_text()) if name in tables]
        if created:
            found[path.name] = created
    return found


def _in_the_database(engine: sa.Engine, tables: set[str]) -> list[str]:
    """Which of ``tables`` the database has; none when it cannot be read.

    A SQLite file that does not exist yet is not created for the question.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            return []
    try:
        names = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError:
        # No database to look at (a development machine, a build step): the
        # revisions are about the project, not about this database.
        return []
    return sorted(tables & names)


@migrations_cli.command(
    "install",
    help=t.cast(
        str,
        lazy_gettext(
            "Copy the extension's migrations into the app's Flask-Migrate folder.\n\n"
            "Each revision not yet installed (by revision id) is copied, in order, "
            "chained after the folder's head at that moment, so that ``flask db "
            "upgrade`` applies them after the app's own migrations and the history "
            "stays one line.\n\n"
            "Nothing is written when the app's own revisions already create the "
            "extension's tables (an earlier ``flask db migrate``), or when the database "
            "already has them without these revisions (``db.create_all()``): ``flask db "
            'upgrade`` would fail with "table already exists". The error says what to '
            "do instead."
        ),
    ),
)
@option(
    "--ignore-database",
    is_flag=True,
    help=lazy_gettext(
        "Write the revisions even though the database already has the tables; "
        "mark them as applied with `flask db stamp` instead of upgrading."
    ),
)
def migrations_install_command(ignore_database: bool) -> None:
    migrate = current_app.extensions.get("migrate")
    if migrate is None:
        raise CommandError(
            _(
                "Flask-Migrate is not set up on this app. Without it, create the tables with "
                "`db.create_all()` in an app context."
            )
        )
    # Flask-Migrate reads its folder relative to the working directory, as we do.
    directory = Path(migrate.directory)
    versions = directory / "versions"
    if not versions.is_dir():
        raise CommandError(
            _("%(folder)s does not exist; run `flask db init` first.", folder=shown(versions))
        )
    # Imported here: Alembic costs every `flask` command and worker start a tenth of a
    # second or more, and only this command reads revisions.
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(directory))
    installed = {script.revision for script in scripts.walk_revisions()}
    missing = [(source, rev) for source, rev in _revisions() if rev not in installed]
    if not missing:
        click.echo(
            _(
                "The extension's migrations are already installed in %(folder)s.",
                folder=shown(versions),
            )
        )
        return
    heads = scripts.get_heads()
    if len(heads) > 1:
        raise CommandError(
            _(
                "The migrations have several heads (%(heads)s); "
                "merge them first with `flask db merge heads`.",
                heads=visible(", ".join(heads)),
            )
        )
    ours = {revision for _source, revision in _revisions()}
    tables = {name for source, _revision in missing for name in _created(source.read_text())}
    theirs = [script for script in scripts.walk_revisions() if script.revision not in ours]
    autogenerated = _created_by_the_app(theirs, tables)
    if autogenerated:
        files = "; ".join(
            f"{shown(versions / name)} ({', '.join(sorted(created))})"
            for name, created in sorted(autogenerated.items())
        )
        raise CommandError(
            _(
                "The app's own revisions already create the extension's tables: %(files)s, "
                "most likely from `flask db migrate`. Installing the extension's revisions as "
                'well would make `flask db upgrade` fail with "table already exists", so '
                "nothing was written. Either keep those revisions and keep autogenerating "
                "(`flask db migrate` then also writes the changes of later versions of the "
                "extension), or delete those revisions (after `flask db downgrade` where they "
                "are applied) and run `flask mtasks migrations install` again.",
                files=files,
            )
        )
    existing = [] if ignore_database else _in_the_database(migrate.db.engine, tables)
    if existing:
        raise CommandError(
            _(
                "The database already has the extension's tables (%(tables)s) "
                "without its revisions, most likely from `db.create_all()`; `flask db upgrade` "
                'would fail with "table already exists". Nothing was written. Either drop '
                "those tables (their runs are lost) and run this command again, then `flask db "
                "upgrade`; or, if they are as the current version of the extension makes them, "
                "run `flask mtasks migrations install --ignore-database` and mark the revisions "
                "as applied with `flask db stamp head` instead of upgrading.",
                tables=", ".join(existing),
            )
        )
    head = heads[0] if heads else None
    for source, revision in missing:
        text = source.read_text()
        text = _DOWN_REVISION.sub(f"down_revision = {head!r}", text, count=1)
        text = _REVISES.sub(f"Revises: {head}" if head else "Revises:", text, count=1)
        target = versions / source.name
        target.write_text(text)
        click.echo(_("Created %(path)s", path=shown(target)))
        head = revision
    if ignore_database:
        click.echo(
            _(
                "Run `flask db upgrade` to create the tables, or, where the database already "
                "has them, `flask db stamp head` once the app's own revisions are applied."
            )
        )
    else:
        click.echo(_("Run `flask db upgrade` to create the tables."))
