"""The extension's options: :class:`Settings`, read and validated from a mapping.

Each option is an ``app.config`` key ``MAINTENANCE_TASKS_<NAME>``; the same
name in lower case is accepted as a keyword of ``MaintenanceTasks(...)`` and
``init_app(...)``, and a keyword wins. Every value is checked here, once, so
a bad option is a :class:`~flask_maintenance_tasks.exceptions.ConfigurationError`
at start-up rather than a surprise in a worker.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing as t
from datetime import timedelta

from .exceptions import ConfigurationError

CONFIG_PREFIX = "MAINTENANCE_TASKS_"
#: What a key meant for us starts with, misspelt or not (``MAINTENANCE_TASK_...``).
_OUR_PREFIX = re.compile(r"MAINTENANCE_?TASKS?_")

Seconds = float | int | timedelta


def _seconds(value: t.Any, name: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{CONFIG_PREFIX}{name.upper()} must be a number of seconds or a timedelta, "
            f"not {value!r}."
        )
    if value < 0:
        raise ConfigurationError(f"{CONFIG_PREFIX}{name.upper()} must not be negative.")
    return float(value)


def _positive_int(value: t.Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{CONFIG_PREFIX}{name.upper()} must be a positive integer, not {value!r}."
        )
    return value


def _names(value: t.Any) -> tuple[str, ...]:
    # A lone string is one name: tuple("token") would mask every key holding a "t".
    items = (value,) if isinstance(value, str) else value
    try:
        names = tuple(str(n).lower() for n in items)
    except TypeError:
        names = None
    if names is None or not all(names):
        raise ConfigurationError(
            f"{CONFIG_PREFIX}MASKED_PARAMETERS must be a list of non-empty names, not {value!r}."
        )
    return names


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every option of the extension, resolved for one application.

    Each field is read from ``app.config["MAINTENANCE_TASKS_<FIELD>"]``; a
    keyword of the same (lower-case) name given to ``MaintenanceTasks(...)`` or
    ``init_app(...)`` wins over the config.
    """

    tasks_package: str | None = None
    url_prefix: str = "/maintenance_tasks"
    redis_url: str | None = None
    queue: str = "maintenance_tasks"
    ticker_delay: float = 1.0
    status_reload_frequency: float = 1.0
    max_job_runtime: float = 300.0
    stuck_after: float = 300.0
    recovery_interval: float = 60.0
    poll_interval: float = 2.0
    runs_per_page: int = 20
    masked_parameters: tuple[str, ...] = ("password", "secret", "token")
    error_handler: t.Callable[[BaseException, dict[str, t.Any]], t.Any] | None = None
    metadata: t.Callable[[], t.Any] | None = None
    backtrace_cleaner: t.Callable[[list[str]], list[str]] | None = None
    stale_after: float | None = 30 * 24 * 3600.0
    allow_anonymous: bool = False
    csv_storage: t.Any = "database"
    max_csv_bytes: int = 200 * 1024 * 1024
    max_form_bytes: int = 64 * 1024
    #: Seconds each statement of a preview may take before it gives up.
    preview_timeout: float = 2.0

    _DURATIONS: t.ClassVar[tuple[str, ...]] = (
        "ticker_delay",
        "status_reload_frequency",
        "max_job_runtime",
        "stuck_after",
        "recovery_interval",
        "poll_interval",
        "preview_timeout",
    )

    @classmethod
    def unknown_keys(cls, config: t.Mapping[str, t.Any]) -> list[tuple[str, str | None]]:
        """Keys of ``config`` that look meant for us but are none of ours, each with the closest.

        A key counts when it starts like our prefix (``MAINTENANCE_TASK_REDIS_URL``
        too): a misspelt option would otherwise be ignored without a word.
        """
        names = [f.name.upper() for f in dataclasses.fields(cls)]
        found = []
        for key in sorted(k for k in config if isinstance(k, str)):
            if key.startswith(CONFIG_PREFIX) and key[len(CONFIG_PREFIX) :] in names:
                continue
            ours = _OUR_PREFIX.match(key.upper())
            if ours is None:
                continue
            # Compare what follows the prefix: the prefix alone would make anything close.
            rest = key.upper()[ours.end() :]
            close = difflib.get_close_matches(rest, names, n=1, cutoff=0.7)
            found.append((key, CONFIG_PREFIX + close[0] if close else None))
        return found

    @classmethod
    def resolve(
        cls, config: t.Mapping[str, t.Any], overrides: t.Mapping[str, t.Any], *, import_name: str
    ) -> Settings:
        """Settings from ``config`` (an ``app.config``), with keyword ``overrides`` winning.

        :param import_name: the app's import name, for the default tasks package.
        :raises ConfigurationError: a value of the wrong type or out of range.
        :raises TypeError: an override that is no option.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"Unknown option(s) for MaintenanceTasks: {', '.join(unknown)}")
        values: dict[str, t.Any] = {}
        for name in names:
            key = CONFIG_PREFIX + name.upper()
            if name in overrides:
                values[name] = overrides[name]
            elif key in config:
                values[name] = config[key]
        for name in cls._DURATIONS:
            if name in values:
                values[name] = _seconds(values[name], name)
        if "stale_after" in values and values["stale_after"] not in (None, False):
            values["stale_after"] = _seconds(values["stale_after"], "stale_after")
        elif "stale_after" in values:
            values["stale_after"] = None
        if "masked_parameters" in values:
            values["masked_parameters"] = _names(values["masked_parameters"])
        if values.get("tasks_package") is None:
            values["tasks_package"] = f"{import_name}.maintenance"
        for name in ("runs_per_page", "max_csv_bytes", "max_form_bytes"):
            if name in values:
                values[name] = _positive_int(values[name], name)
        for name in ("error_handler", "metadata", "backtrace_cleaner"):
            if values.get(name) is not None and not callable(values[name]):
                raise ConfigurationError(
                    f"{CONFIG_PREFIX}{name.upper()} must be a callable or None, "
                    f"not {values[name]!r}."
                )
        for name in ("url_prefix", "queue"):
            if name in values and not (isinstance(values[name], str) and values[name]):
                raise ConfigurationError(
                    f"{CONFIG_PREFIX}{name.upper()} must be a non-empty string, "
                    f"not {values[name]!r}."
                )
        if not values.get("url_prefix", "/").startswith("/"):
            raise ConfigurationError(
                f"{CONFIG_PREFIX}URL_PREFIX must start with '/', not {values['url_prefix']!r}."
            )
        if values.get("status_reload_frequency", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}STATUS_RELOAD_FREQUENCY must be positive.")
        if values.get("preview_timeout", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}PREVIEW_TIMEOUT must be positive.")
        if values.get("max_job_runtime", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}MAX_JOB_RUNTIME must be positive.")
        return cls(**values)
