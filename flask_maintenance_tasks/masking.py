"""Masking: which argument values are secret, and replacing them for display.

A value is masked when its name contains one of the masked names
(``MAINTENANCE_TASKS_MASKED_PARAMETERS`` and the task's own
``masked_parameters``), ignoring case, or when it is a ``SecretStr`` /
``SecretBytes`` field of the task's ``Parameters``, at any depth. Every place
that shows arguments (pages, JSON, CLI, signals, logs) goes through here.
"""

from __future__ import annotations

import typing as t

from .exceptions import MaintenanceTasksError
from .state import get_state

if t.TYPE_CHECKING:
    from flask import Flask

    from .task import Task

#: What a masked value is replaced with.
MASK = "[FILTERED]"


def masked_names(
    task: type[Task] | None, masked: t.Iterable[str]
) -> tuple[dict[str, t.Any], tuple[str, ...]]:
    """The task's secret fields (see :meth:`Task.secret_fields`) and the masked name patterns."""
    secrets = task.secret_fields() if task is not None else {}
    patterns = tuple(m.lower() for m in masked) + tuple(
        n.lower() for n in (task.masked_parameters if task is not None else ())
    )
    return secrets, patterns


def mask(arguments: t.Any, task: type[Task] | None, masked: t.Iterable[str]) -> t.Any:
    """``arguments`` with every secret or masked-name value replaced by ``[FILTERED]``.

    A name is masked when it contains one of the masked names, ignoring case,
    or is a ``SecretStr`` field of the task's ``Parameters``, at any depth of
    nested models, dicts and lists.
    """
    secrets, patterns = masked_names(task, masked)
    return _mask(arguments, secrets, patterns)


def _mask(value: t.Any, secrets: dict[str, t.Any], patterns: tuple[str, ...]) -> t.Any:
    if isinstance(value, list):
        return [_mask(v, secrets, patterns) for v in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        node = secrets.get(key, secrets.get("*"))
        if node is True or any(p in str(key).lower() for p in patterns):
            result[key] = MASK
        else:
            result[key] = _mask(item, node if isinstance(node, dict) else {}, patterns)
    return result


def masked_arguments(app: Flask, task_name: str, arguments: t.Any) -> t.Any:
    """Mask ``arguments`` of a run of ``task_name`` with the app's settings."""
    state = get_state(app)
    try:
        task: type[Task] | None = state.registry.get(task_name)
    except MaintenanceTasksError:
        task = None
    return mask(arguments, task, state.settings.masked_parameters)


def masked_metadata(app: Flask, metadata: t.Any) -> t.Any:
    """A run's metadata with every masked name filtered, as every place shows it."""
    return mask(metadata, None, get_state(app).settings.masked_parameters)
