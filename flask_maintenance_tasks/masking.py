"""Masking: which argument values are secret, and replacing them for display.

A value is masked when its name contains one of the masked names
(``MAINTENANCE_TASKS_MASKED_PARAMETERS`` and the task's own
``masked_parameters``), ignoring case, or when it is a ``SecretStr`` /
``SecretBytes`` field of the task's ``Parameters``, at any depth. Every place
that shows arguments (pages, JSON, CLI, signals, logs) goes through here, and
so does every place that writes a value back where it can be read: a "run
again" link or a form filled in advance leaves out a whole argument when
:func:`secret_arguments` finds a masked value anywhere inside it.
"""

from __future__ import annotations

import typing as t

from .exceptions import MaintenanceTasksError
from .state import get_state

if t.TYPE_CHECKING:
    from flask import Flask

    from .models import Run
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


def is_secret_parameter(name: str, task: type[Task] | None, masked: t.Iterable[str]) -> bool:
    """Whether every value of the parameter ``name`` is, or holds, a secret.

    So it is when its name is masked, or its type is or contains a
    ``SecretStr`` / ``SecretBytes`` (a nested model with such a field).
    """
    secrets, patterns = masked_names(task, masked)
    return bool(_node(name, secrets, patterns))


def secret_arguments(
    arguments: t.Any, task: type[Task] | None, masked: t.Iterable[str]
) -> frozenset[str]:
    """The names of ``arguments`` whose values :func:`mask` hides, in whole or in part.

    A value that holds a masked value at any depth (``{"password": ...}`` in a
    JSON parameter) must never be shown, nor put in a link, nor written back
    into a form.
    """
    if not isinstance(arguments, dict):
        return frozenset()
    secrets, patterns = masked_names(task, masked)
    return frozenset(
        str(name) for name, value in arguments.items() if _holds({name: value}, secrets, patterns)
    )


def mentions_masked_name(text: str, task: type[Task] | None, masked: t.Iterable[str]) -> bool:
    """Whether ``text`` contains a masked name: what is known of text that cannot be parsed."""
    _, patterns = masked_names(task, masked)
    lowered = text.lower()
    return any(p in lowered for p in patterns)


def _node(key: t.Any, secrets: dict[str, t.Any], patterns: tuple[str, ...]) -> t.Any:
    """``True`` when the value under ``key`` is masked whole, else the secrets inside it."""
    node = secrets.get(key, secrets.get("*"))
    if node is True or any(p in str(key).lower() for p in patterns):
        return True
    return node if isinstance(node, dict) else {}


def _mask(value: t.Any, secrets: dict[str, t.Any], patterns: tuple[str, ...]) -> t.Any:
    if isinstance(value, list):
        return [_mask(v, secrets, patterns) for v in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        node = _node(key, secrets, patterns)
        result[key] = MASK if node is True else _mask(item, node, patterns)
    return result


def _holds(value: t.Any, secrets: dict[str, t.Any], patterns: tuple[str, ...]) -> bool:
    """Whether :func:`_mask` would hide anything in ``value``."""
    if isinstance(value, list):
        return any(_holds(v, secrets, patterns) for v in value)
    if not isinstance(value, dict):
        return False
    for key, item in value.items():
        node = _node(key, secrets, patterns)
        if node is True or _holds(item, node, patterns):
            return True
    return False


#: Secret values shorter than this are not looked for in text (they would match anywhere).
SHORTEST_SECRET = 4


def secret_values(arguments: t.Any, task: type[Task] | None, masked: t.Iterable[str]) -> list[str]:
    """Every value :func:`mask` hides in ``arguments``, as text, longest first."""
    secrets, patterns = masked_names(task, masked)
    found: set[str] = set()
    _collect(arguments, secrets, patterns, found, hidden=False)
    return sorted((v for v in found if len(v) >= SHORTEST_SECRET), key=len, reverse=True)


def _collect(
    value: t.Any,
    secrets: dict[str, t.Any],
    patterns: tuple[str, ...],
    found: set[str],
    *,
    hidden: bool,
) -> None:
    if isinstance(value, list):
        for item in value:
            _collect(item, secrets, patterns, found, hidden=hidden)
    elif isinstance(value, dict):
        for key, item in value.items():
            node = True if hidden else _node(key, secrets, patterns)
            inner = node if isinstance(node, dict) else {}
            _collect(item, inner, patterns, found, hidden=node is True)
    elif hidden and value is not None and not isinstance(value, bool):
        found.add(str(value))


def scrub(text: str, values: t.Iterable[str]) -> str:
    """``text`` with each of the secret ``values`` replaced by ``[FILTERED]``.

    An error raised by a task may quote an argument (``ValueError(f"bad key
    {key}")``); its message is stored, shown and logged only scrubbed.
    """
    for value in values:
        text = text.replace(value, MASK)
    return text


def scrub_tree(value: t.Any, values: t.Sequence[str]) -> t.Any:
    """A JSON value with :func:`scrub` applied to every string in it, keys included."""
    if not values:
        return value
    if isinstance(value, str):
        return scrub(value, values)
    if isinstance(value, list):
        return [scrub_tree(item, values) for item in value]
    if isinstance(value, dict):
        return {scrub_tree(k, values): scrub_tree(v, values) for k, v in value.items()}
    return value


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


def masked_published(app: Flask, run: Run) -> t.Any:
    """What the run's task published (``self.status``), masked as its arguments are.

    A key with a masked name is filtered whole, and a secret argument's value is
    scrubbed from every string, so a task cannot show a secret by publishing it.
    """
    if run.published is None:
        return None
    state = get_state(app)
    try:
        task: type[Task] | None = state.registry.get(run.task_name)
    except MaintenanceTasksError:
        task = None
    masked = state.settings.masked_parameters
    secrets = secret_values(run.arguments, task, masked)
    return scrub_tree(mask(run.published, task, masked), secrets)
