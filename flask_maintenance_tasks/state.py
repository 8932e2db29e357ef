"""What the extension keeps for one app, and how every layer finds it.

:func:`get_state` is the one way into an app's extension state; modules below
the extension read it and never import the extension module itself.
"""

from __future__ import annotations

import dataclasses
import typing as t

from flask import Flask, current_app

if t.TYPE_CHECKING:
    from flask import Blueprint
    from flask_sqlalchemy import SQLAlchemy

    from .config import Settings
    from .csv.storage import CSVStorage
    from .executors import Executor
    from .extension import MaintenanceTasks
    from .models import Run
    from .registry import Registry

EXTENSION_KEY = "maintenance_tasks"

Authorize = t.Callable[[str, "str | None", "Run | None"], bool]


@dataclasses.dataclass
class State:
    """What the extension keeps for one app, in ``app.extensions["maintenance_tasks"]``."""

    #: The :class:`~flask_maintenance_tasks.MaintenanceTasks` object that registered it.
    extension: MaintenanceTasks
    app: Flask
    db: SQLAlchemy
    settings: Settings
    registry: Registry
    executor: Executor
    #: Where CSV files of runs are kept, built from ``MAINTENANCE_TASKS_CSV_STORAGE``.
    csv_storage: CSVStorage
    parent: Blueprint | None = None
    authorize: Authorize | None = None


def get_state(app: Flask | None = None) -> State:
    """The extension's state for ``app`` (default: the current app)."""
    if app is None:
        app = t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    try:
        return t.cast(State, app.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError(
            "flask-maintenance-tasks is not registered on this app; call mtasks.init_app(app)."
        ) from None
