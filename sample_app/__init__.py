"""A small blog that uses flask-maintenance-tasks: ``flask --app sample_app ...``.

Configuration comes from the environment so that the web process, the CLI
and the workers agree:

- ``SAMPLE_APP_DATABASE_URL`` (default: ``sqlite:///<instance>/sample.db``);
- ``MAINTENANCE_TASKS_REDIS_URL`` (default: none, the in-process executor);
- ``SAMPLE_APP_DEMO=1`` opens the dashboard to anyone (``make demo`` sets it). Without
  it the dashboard is closed, as in any app that has not said who may use it.
"""

from __future__ import annotations

import os

import click
from flask import Flask, request

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
    if os.environ.get("SAMPLE_APP_DEMO") == "1":
        # Demo only: a real app passes parent= (its admin blueprint) or authorize=.
        app.config["MAINTENANCE_TASKS_ALLOW_ANONYMOUS"] = True
    # Recorded on each run started from the dashboard: who (here, from where) started it.
    app.config["MAINTENANCE_TASKS_METADATA"] = _who_started_it
    if test_config:
        app.config.from_mapping(test_config)
    if str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        # The partitions of a run write in turn on SQLite: let each wait for
        # the others' ticks (a minute) rather than fail after the default 5 s.
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 60}})
    db.init_app(app)
    # The tasks live in sample_app.maintenance, the default package for this app.
    mtasks.init_app(app, db=db)
    app.cli.add_command(seed_command)
    return app


def _who_started_it() -> dict[str, str | None]:
    return {"remote_addr": request.remote_addr, "user_agent": request.user_agent.string or None}


@click.command("seed")
@click.option("--posts", default=5000, show_default=True, help="How many posts to create.")
@click.option("--reset", is_flag=True, help="Drop every table first (runs included): a fresh demo.")
def seed_command(posts: int, reset: bool) -> None:
    """Create the tables and (re)fill them with sample posts."""
    from .models import seed

    if reset:
        # A database left by an older version lacks the newer columns: start afresh.
        db.drop_all()
    db.create_all()
    seed(posts)
    click.echo(f"Created {posts:,} posts.")


__all__ = ["Post", "create_app", "db", "mtasks"]
