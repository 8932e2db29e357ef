"""Finds the tasks defined in the app's tasks package and names them."""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
import threading
import typing as t

from .exceptions import ConfigurationError, TaskNotFound
from .i18n import lazy_gettext, lazy_pgettext
from .task import Task

logger = logging.getLogger("flask_maintenance_tasks")


class Registry:
    """The tasks of one app, discovered on first use.

    A task's name is its class name, prefixed by its sub-package path below
    the tasks package (``billing.BackfillInvoicesTask``) unless the class sets
    ``name`` itself. Classes whose name starts with ``_``, or that set
    ``abstract = True`` in their own body, are skipped.
    """

    def __init__(self, package: str) -> None:
        self.package = package
        self._tasks: dict[str, type[Task]] | None = None
        self._lock = threading.Lock()

    def tasks(self) -> dict[str, type[Task]]:
        """Every task by name, sorted by name."""
        if self._tasks is None:
            with self._lock:
                if self._tasks is None:
                    self._tasks = self._discover()
        return self._tasks

    def get(self, name: str) -> type[Task]:
        """The task named ``name``; :class:`TaskNotFound` if there is none."""
        tasks = self.tasks()
        if name not in tasks:
            # A task added since the tasks were imported (a worker imports
            # them before it starts): look once more.
            tasks = self._rediscovered(tasks)
        try:
            return tasks[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(tasks), n=3, cutoff=0.6)
            if close:
                detail = lazy_gettext(
                    "Did you mean %(names)s? Known tasks are listed by `flask mtasks list` "
                    "(package %(package)s).",
                    names=_Either(list(map(repr, close))),
                    package=self.package,
                )
            else:
                detail = lazy_gettext(
                    "Known tasks are listed by `flask mtasks list` (package %(package)s).",
                    package=self.package,
                )
            raise TaskNotFound(name, detail) from None

    def queue_of(self, name: str) -> str | None:
        """The queue of task ``name``'s jobs (:attr:`Task.queue`); ``None``: the app's.

        A task gone from the code has no queue of its own: its run's jobs go to the
        app's queue, where they error the run as any job of an unknown task does.
        """
        try:
            return self.get(name).queue
        except TaskNotFound:
            return None

    def _rediscovered(self, known: dict[str, type[Task]]) -> dict[str, type[Task]]:
        """The tasks found again, or ``known`` when the package no longer imports.

        A module added since, that fails to import, is the developer's bug:
        it is logged, and the tasks known so far stay known, so that neither
        the dashboard nor the other tasks' jobs fail for it.
        """
        importlib.invalidate_caches()  # files added within the same second too
        try:
            found = self._discover()
        except Exception:
            logger.exception("The tasks package %s could not be imported again", self.package)
            return known
        with self._lock:
            self._tasks = found
        return found

    def reload(self) -> None:
        """Forget what was discovered; the next lookup imports the package again."""
        with self._lock:
            self._tasks = None

    def package_paths(self) -> list[str]:
        package = self._import_package()
        return [] if package is None else list(getattr(package, "__path__", []))

    def _import_package(self) -> t.Any:
        """The tasks package, or ``None`` if it (or a parent package) does not exist."""
        try:
            return importlib.import_module(self.package)
        except ModuleNotFoundError as exc:
            # A missing tasks package means "no tasks yet"; an import error
            # inside it is the developer's bug and must surface. Compare whole
            # dotted segments: a missing ``app.maint`` imported by the package
            # ``app.maintenance`` is such a bug.
            missing = exc.name or ""
            if missing and (self.package == missing or self.package.startswith(missing + ".")):
                return None
            raise

    def _discover(self) -> dict[str, type[Task]]:
        package = self._import_package()
        if package is None:
            return {}
        modules = [package]
        for info in pkgutil.walk_packages(
            getattr(package, "__path__", []), prefix=f"{self.package}."
        ):
            modules.append(importlib.import_module(info.name))

        found: dict[str, type[Task]] = {}
        origin: dict[str, str] = {}
        for module in modules:
            for attr, value in vars(module).items():
                if not (isinstance(value, type) and issubclass(value, Task) and value is not Task):
                    continue
                if value.__module__ != module.__name__:
                    continue
                if attr.startswith("_") or value.__name__.startswith("_"):
                    continue
                if vars(value).get("abstract", False):
                    continue
                name = value.name if value._explicit_name else self._name_for(value, module)
                qualified = f"{value.__module__}.{value.__qualname__}"
                if name in found and found[name] is not value:
                    raise ConfigurationError(
                        f"Two tasks are named {name!r}: {origin[name]} and {qualified}. "
                        "Rename one, or set a distinct `name` on it."
                    )
                value.name = name
                found[name] = value
                origin[name] = qualified
        return dict(sorted(found.items()))

    def _name_for(self, cls: type[Task], module: t.Any) -> str:
        relative = module.__name__[len(self.package) :].lstrip(".")
        parts = relative.split(".") if relative else []
        is_package = hasattr(module, "__path__")
        # Modules contribute their package path, not their own file name.
        prefix = parts if is_package else parts[:-1]
        return ".".join([*prefix, cls.__name__])


class _Either:
    """``'a' or 'b'``: names joined as the language of the moment lists alternatives."""

    __slots__ = ("names",)

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def __str__(self) -> str:
        return str(lazy_pgettext("alternatives", " or ")).join(self.names)
