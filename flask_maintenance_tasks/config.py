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


#: A duration as text: a number followed by ``d``, ``h``, ``m`` or ``s`` (or nothing: seconds).
_DURATION_TEXT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([dhms]?)\s*", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"\s*[0-9]+(?:\.[0-9]+)?\s*")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}
_LONGEST_DURATION = 1000 * 366 * 86400


def parse_duration(value: t.Any) -> float:
    """Seconds in ``value``: a :class:`~datetime.timedelta`, a number of seconds, or text
    such as ``"90d"``, ``"12h"``, ``"30m"``, ``"45s"`` or ``"3600"``.

    :raises ValueError: anything else, or a duration that is not positive; the
        message says what was given and what is accepted.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool) and value > _LONGEST_DURATION:
        # Before float(), which overflows; and such a number is too long to quote.
        shown = repr(value) if value.bit_length() <= 64 else "That number of seconds"
        raise ValueError(f"{shown} is longer than 1,000 years.")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (found := _DURATION_TEXT.fullmatch(value)):
        seconds = float(found[1]) * _UNIT_SECONDS[found[2].lower()]
    else:
        raise ValueError(
            f"{value!r} is not a duration: give a number of seconds, a timedelta, "
            "or a number followed by d, h, m or s (90d, 12h, 30m, 45s)."
        )
    if not seconds > 0:
        raise ValueError(f"{value!r} is not a positive duration.")
    if seconds > _LONGEST_DURATION:
        # Also refuses infinity: a date that far back cannot be computed.
        raise ValueError(f"{value!r} is longer than 1,000 years.")
    return seconds


#: A retention below this is most likely a number of days given as seconds.
SHORT_RETENTION = 3600.0


def short_retention_warning(retention: float | None, given: t.Any) -> str | None:
    """What to say of a retention under an hour, else ``None``.

    Legal, and tests use it, but workers then delete every ended run except
    each task's latest within minutes of its end. When it was ``given`` as a
    bare number (``90``), days were likely meant: the warning suggests ``"90d"``.
    """
    if retention is None or retention >= SHORT_RETENTION:
        return None
    message = (
        f"{CONFIG_PREFIX}RETENTION is {retention:g} seconds: workers will delete every ended "
        "run except each task's latest minutes after it ends."
    )
    bare = isinstance(given, (int, float)) and not isinstance(given, bool)
    if bare or (isinstance(given, str) and _BARE_NUMBER.fullmatch(given)):
        message += f' A bare number is seconds: for {retention:g} days, write "{retention:g}d".'
    return message


def _retention(value: t.Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise ConfigurationError(
            f"{CONFIG_PREFIX}RETENTION: {error} Use None to keep every run."
        ) from None


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


#: The shortest bearer token accepted: a guessable one would open its endpoints to anyone.
MIN_TOKEN_LENGTH = 16
_TOKEN = re.compile(r"[\x21-\x7e]+")


def _token(value: t.Any, key: str) -> str:
    """A bearer token option (``key``, e.g. ``METRICS_TOKEN``), checked.

    The value itself is never put in a message: it is a secret.
    """
    what = f"a {type(value).__name__}" if not isinstance(value, str) else "this string"
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ConfigurationError(
            f"{CONFIG_PREFIX}{key} must be a string of printable ASCII characters "
            f"without spaces (it is sent in an Authorization header), not {what}."
        )
    if len(value) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"{CONFIG_PREFIX}{key} must be at least {MIN_TOKEN_LENGTH} characters long, "
            f"not {len(value)}; make one with: python -c "
            '"import secrets; print(secrets.token_urlsafe(32))"'
        )
    return value


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
    #: The most partitions one run may be cut into.
    max_partitions: int = 16
    #: A bearer token that opens ``<prefix>/metrics`` to a scraper (never shown in a repr).
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    #: Seconds an ended run is kept before pruning may delete it; ``None`` keeps every run.
    retention: float | None = 90 * 24 * 3600.0
    #: Seconds between two prunes by a worker.
    prune_interval: float = 3600.0
    #: A bearer token that opens ``<prefix>/api/`` to a program (never shown in a repr).
    api_token: str | None = dataclasses.field(default=None, repr=False)
    #: Seconds an operator's action or recovery waits for a run's row locked by another
    #: transaction before answering that the run is busy; ``None``: 2 s on PostgreSQL,
    #: 5 s on SQLite (whose ticks take the one write lock in turn).
    lock_timeout: float | None = None
    #: The most bytes of JSON a run's published status mapping may take (``self.status``).
    max_status_bytes: int = 16 * 1024

    _DURATIONS: t.ClassVar[tuple[str, ...]] = (
        "ticker_delay",
        "status_reload_frequency",
        "max_job_runtime",
        "stuck_after",
        "recovery_interval",
        "poll_interval",
        "preview_timeout",
        "prune_interval",
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
        if "retention" in values:
            values["retention"] = _retention(values["retention"])
        if values.get("lock_timeout") is not None:
            values["lock_timeout"] = _seconds(values["lock_timeout"], "lock_timeout")
            if not 0.001 <= values["lock_timeout"] <= 600:
                # (0 would mean "wait for ever" to PostgreSQL.)
                raise ConfigurationError(
                    f"{CONFIG_PREFIX}LOCK_TIMEOUT must be between 0.001 and 600 seconds, "
                    f"not {values['lock_timeout']!r}."
                )
        if "masked_parameters" in values:
            values["masked_parameters"] = _names(values["masked_parameters"])
        if values.get("tasks_package") is None:
            values["tasks_package"] = f"{import_name}.maintenance"
        for name in (
            "runs_per_page",
            "max_csv_bytes",
            "max_form_bytes",
            "max_partitions",
            "max_status_bytes",
        ):
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
        for name in ("metrics_token", "api_token"):
            if values.get(name) is not None:
                values[name] = _token(values[name], name.upper())
        metrics_token, api_token = values.get("metrics_token"), values.get("api_token")
        if metrics_token is not None and metrics_token == api_token:
            # Two settings, not a request's token: no need for compare_digest here.
            raise ConfigurationError(
                f"{CONFIG_PREFIX}METRICS_TOKEN and {CONFIG_PREFIX}API_TOKEN are the same token: "
                "whoever scrapes the metrics could use the API. Give each its own."
            )
        if values.get("status_reload_frequency", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}STATUS_RELOAD_FREQUENCY must be positive.")
        if values.get("preview_timeout", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}PREVIEW_TIMEOUT must be positive.")
        if values.get("prune_interval", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}PRUNE_INTERVAL must be positive.")
        if values.get("max_job_runtime", 1.0) <= 0:
            raise ConfigurationError(f"{CONFIG_PREFIX}MAX_JOB_RUNTIME must be positive.")
        return cls(**values)
