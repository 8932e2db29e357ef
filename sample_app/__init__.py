"""A small blog that uses flask-maintenance-tasks: ``flask --app sample_app ...``.

Configuration comes from the environment so that the web process, the CLI
and the workers agree:

- ``SAMPLE_APP_DATABASE_URL`` (default: ``sqlite:///<instance>/sample.db``);
- ``MAINTENANCE_TASKS_REDIS_URL`` (default: none, the in-process executor).
"""

from __future__ import annotations

import os

import click
from flask import Flask

from flask_maintenance_tasks import MaintenanceTasks

from .models import Post, db

mtasks = MaintenanceTasks()


def create_app(test_config: dict[str, object] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("SAMPLE_APP_SECRET_KEY", "sample-app-only-not-secret"),
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "SAMPLE_APP_DATABASE_URL", f"sqlite:///{os.path.join(app.instance_path, 'sample.db')}"
        ),
        MAINTENANCE_TASKS_REDIS_URL=os.environ.get("MAINTENANCE_TASKS_REDIS_URL"),
    )
    if test_config:
        app.config.from_mapping(test_config)
    db.init_app(app)
    # The tasks live in sample_app.maintenance, the default package for this app.
    mtasks.init_app(app, db=db)
    app.cli.add_command(seed_command)
    return app


@click.command("seed")
@click.option("--posts", default=5000, show_default=True, help="How many posts to create.")
def seed_command(posts: int) -> None:
    """Create the tables and (re)fill them with sample posts."""
    from .models import seed

    db.create_all()
    seed(posts)
    click.echo(f"Created {posts:,} posts.")


__all__ = ["Post", "create_app", "db", "mtasks"]
