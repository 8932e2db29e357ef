"""The operator dashboard: a blueprint of server-rendered pages refreshed by htmx.

The blueprint is thin: its views (:mod:`.views`) read runs, ask the runner to
act, and render what :mod:`flask_maintenance_tasks.formatting` says about a
run; :mod:`.pages` builds what a page shows; :mod:`.metrics` is the
Prometheus endpoint; :mod:`.api` the JSON API (its routes described in
:mod:`.openapi`); :mod:`.guards` holds the blueprint and what every
request passes through. This module mounts it.
"""

from __future__ import annotations

import typing as t
import weakref

from . import api, metrics, views
from .guards import CONTENT_SECURITY_POLICY, blueprint, log_access_at_start_up

if t.TYPE_CHECKING:
    from flask import Blueprint, Flask

    from ..state import State

#: Where the dashboard was nested into each parent blueprint (its URL prefix).
_nested: weakref.WeakKeyDictionary[Blueprint, str] = weakref.WeakKeyDictionary()


def register_dashboard(app: Flask, state: State, *, warn: bool = True) -> None:
    """Mount the dashboard on ``app``, or nest it under ``state.parent``.

    Nested under a parent blueprint, every ``before_request`` hook of the
    parent guards every dashboard route, and the URL is the parent's prefix
    followed by ``MAINTENANCE_TASKS_URL_PREFIX``. The parent must not be
    registered on an app yet: Flask freezes a blueprint once registered.
    With ``warn``, a warning says when the dashboard is closed, or opened by
    debug or testing only.
    """
    _mount(app, state)
    if warn:
        log_access_at_start_up(state, app)


def _mount(app: Flask, state: State) -> None:
    prefix = state.settings.url_prefix.rstrip("/") or None
    parent = state.parent
    if parent is None:
        app.register_blueprint(blueprint, url_prefix=prefix)
        return
    if parent in _nested:
        if _nested[parent] != (prefix or ""):
            raise RuntimeError(
                f"The dashboard is already nested under blueprint {parent.name!r} at "
                f"{_nested[parent]!r}; one parent serves one URL prefix."
            )
        return
    try:
        parent.register_blueprint(blueprint, url_prefix=prefix)
    except AssertionError:
        raise RuntimeError(
            f"Blueprint {parent.name!r} is already registered on an app, so the dashboard "
            "cannot be nested under it any more: call mtasks.init_app(app, parent=...) before "
            "app.register_blueprint(parent)."
        ) from None
    _nested[parent] = prefix or ""


__all__ = [
    "CONTENT_SECURITY_POLICY",
    "api",
    "blueprint",
    "metrics",
    "register_dashboard",
    "views",
]
