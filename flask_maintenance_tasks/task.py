"""The Task base class: what a developer subclasses to write a maintenance task."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing as t
from collections import abc
from datetime import timedelta

import pydantic

from . import policy
from .exceptions import ConfigurationError, InvalidArguments
from .i18n import gettext as _
from .parameters import MAX_DEPTH, depth_within, unencodable, validation_message
from .published import TaskStatus
from .sources import source_of

if t.TYPE_CHECKING:
    from .models import Run
    from .sources.partitioned import Partition

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
Backoff = float | int | timedelta | t.Callable[[], float | int | timedelta]


@dataclasses.dataclass(frozen=True)
class Throttle:
    """A throttle condition declared with :func:`throttle_on`."""

    method_name: str
    backoff: Backoff
    #: The decorated method itself: ``condition(task)`` is true when the task should back off.
    condition: t.Callable[[t.Any], bool]

    def backoff_seconds(self) -> float:
        value = self.backoff() if callable(self.backoff) else self.backoff
        if isinstance(value, timedelta):
            return max(value.total_seconds(), 0.0)
        return max(float(value), 0.0)


def throttle_on(backoff: Backoff = 30.0) -> t.Callable[[F], F]:
    """Declare a method returning ``True`` when the task should back off.

    When the condition holds, the run stops before its next item, becomes
    ``interrupted`` and carries on after ``backoff`` (seconds, a ``timedelta``
    or a callable returning either). Conditions are checked before the first
    item of each job slice and then once per tick, never per item.

    .. versionadded:: 0.1
    """

    if callable(backoff):
        if _requires_arguments(backoff):
            # ``@throttle_on`` without parentheses hands over the condition itself.
            raise TypeError(
                f"throttle_on got {backoff!r} as its backoff: write @throttle_on() or "
                "@throttle_on(backoff=...), with parentheses."
            )
    elif isinstance(backoff, bool) or not isinstance(backoff, (int, float, timedelta)):
        raise TypeError(
            f"throttle_on(backoff={backoff!r}): the backoff must be seconds, a timedelta, "
            "or a callable returning either."
        )
    elif (backoff.total_seconds() if isinstance(backoff, timedelta) else backoff) < 0:
        raise ValueError(f"throttle_on(backoff={backoff!r}): the backoff must not be negative.")

    def decorate(method: F) -> F:
        method._mtasks_throttle_backoff = backoff  # type: ignore[attr-defined]
        return method

    return decorate


def _requires_arguments(function: t.Callable[..., t.Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in parameters
    )


def _dump(value: t.Any) -> t.Any:
    """JSON-safe dump of a parameters model with secrets in clear (the run row needs them)."""
    if isinstance(value, pydantic.BaseModel):
        return {name: _dump(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_dump(v) for v in value]
    return pydantic.TypeAdapter(type(value)).dump_python(value, mode="json")


def _finite(value: t.Any) -> bool:
    """Whether no float in the JSON value ``value`` is infinite or NaN."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def _field(key: t.Any) -> str:
    """An argument's name as an error's field: a lone surrogate written as its escape."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


_SECRET_TYPES = (pydantic.SecretStr, pydantic.SecretBytes)


def _secret_tree(model: type[pydantic.BaseModel], seen: frozenset[type]) -> dict[str, t.Any]:
    tree: dict[str, t.Any] = {}
    for name, field in model.model_fields.items():
        node = _secret_node(field.annotation, seen | {model})
        if node:
            tree[name] = node
    return tree


def _secret_node(annotation: t.Any, seen: frozenset[type]) -> t.Any:
    """``True`` if a value of this type is a secret, else the secret fields inside it."""
    if isinstance(annotation, type) and issubclass(annotation, _SECRET_TYPES):
        return True
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return {} if annotation in seen else _secret_tree(annotation, seen)
    origin, args = t.get_origin(annotation), t.get_args(annotation)
    if origin is t.Annotated:
        args = args[:1]
    if isinstance(origin, type) and issubclass(origin, abc.Mapping):
        node = _secret_node(args[1], seen) if len(args) == 2 else {}
        return node if node is True or not node else {"*": node}
    merged: dict[str, t.Any] = {}
    for arg in args:
        node = _secret_node(arg, seen)
        if node is True:
            return True
        merged.update(node)
    return merged


class Task:
    """Base class of maintenance tasks.

    Subclass it in the app's tasks package, give it a collection (a
    ``collection()`` method or a ``collection`` class attribute) and a
    ``process`` method. Keyword arguments given to the constructor are the
    task's parameters, validated by its inner ``Parameters`` model::

        UpdatePostsTask(content="x").process(post)

    .. versionadded:: 0.1
    """

    #: Set by the registry (or explicitly by the subclass).
    name: t.ClassVar[str] = ""
    #: Rows fetched per keyset query for a ``Select`` collection.
    batch_size: t.ClassVar[int] = 100
    #: Columns ordering a ``Select`` collection; default: the primary key.
    cursor_columns: t.ClassVar[tuple[t.Any, ...] | None] = None
    #: Exceptions from ``process`` that are reported, recorded in the run's
    #: failure ledger, and skipped.
    report_on: t.ClassVar[tuple[type[BaseException], ...]] = ()
    #: What a failing item does to a run: ``"stop"`` errors the run, ``"skip"``
    #: undoes the item's writes, records it in the ledger and goes on.
    error_policy: t.ClassVar[str] = "stop"
    #: More failed items than this errors the run; ``None``: no limit.
    max_failures: t.ClassVar[int | None] = None
    #: More failed items than this share (0 to 1) of the items processed errors the run.
    max_failure_rate: t.ClassVar[float | None] = None
    #: Partitions a run is cut into, each walked by its own chain of jobs (see
    #: :doc:`/partitions`); a run may ask for another number.
    partitions: t.ClassVar[int] = 1
    #: Seconds between re-reads of the run's status; default: the app's setting.
    status_reload_frequency: t.ClassVar[float | None] = None
    #: Allow more than one active run of this task at a time.
    allow_concurrent_runs: t.ClassVar[bool] = False
    #: The pydantic model of the task's parameters, if it has any.
    Parameters: t.ClassVar[type[pydantic.BaseModel] | None] = None
    #: Names whose values are masked wherever arguments are shown.
    masked_parameters: t.ClassVar[tuple[str, ...]] = ()
    #: The RQ queue every job of this task's runs goes to; ``None``: the app's
    #: ``MAINTENANCE_TASKS_QUEUE``. Only workers listening on it run them.
    queue: t.ClassVar[str | None] = None

    _throttles: t.ClassVar[tuple[Throttle, ...]] = ()
    _explicit_name: t.ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        backoffs: dict[str, Backoff] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                backoff = getattr(value, "_mtasks_throttle_backoff", None)
                if backoff is not None:
                    backoffs[attr] = backoff
        # The condition is the class's own method of that name: an override
        # without the decorator keeps the throttle and replaces the test.
        cls._throttles = tuple(
            Throttle(attr, backoff, getattr(cls, attr)) for attr, backoff in backoffs.items()
        )
        cls._explicit_name = "name" in vars(cls)
        if not cls._explicit_name:
            cls.name = cls.__name__
        problem = policy.check_declaration(cls)
        if problem is not None:
            raise ConfigurationError(f"{cls.name}: {problem}.")
        queue = cls.queue
        if queue is not None and not (isinstance(queue, str) and queue.strip()):
            raise ConfigurationError(
                f"{cls.name}: queue must be a non-empty string (an RQ queue's name) or None, "
                f"not {queue!r}."
            )
        partitions = cls.partitions
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ConfigurationError(
                f"{cls.name}: partitions must be a whole number of at least 1, not {partitions!r}."
            )

    def __init__(self, **arguments: t.Any) -> None:
        self.params: t.Any = self.validate_arguments(arguments)
        #: The run being performed, when the task runs in a job.
        self.run: Run | None = None
        #: The run's metadata (who started it, for example).
        self.metadata: t.Any = None
        #: True in a dry run: the database rolls back every tick, but effects
        #: outside it (mail, HTTP calls) are the task's to skip.
        self.dry_run: bool = False
        #: The part of the collection this job walks, in a partitioned run; ``None`` otherwise.
        self.partition: Partition | None = None
        #: What the task publishes next to its progress (see :doc:`/task-status`): a
        #: mapping of JSON values written with the next tick, read back by a resumed run.
        self.status: TaskStatus = TaskStatus()

    # -- parameters -------------------------------------------------------

    @classmethod
    def validate_arguments(cls, arguments: t.Mapping[str, t.Any]) -> pydantic.BaseModel | None:
        """Validate ``arguments`` against ``Parameters``; raise :class:`InvalidArguments`."""
        model = cls.Parameters
        # First, so that no message quotes text that no page nor terminal can show.
        garbled = [_field(k) for k, v in arguments.items() if unencodable(k) or unencodable(v)]
        if garbled:
            message = _("must be text without lone surrogates (it is not valid UTF-8)")
            raise InvalidArguments(cls.name, {name: [message] for name in garbled})
        if model is None:
            if arguments:
                names = ", ".join(sorted(map(str, arguments)))
                raise InvalidArguments(
                    cls.name,
                    {
                        "__root__": [
                            _(
                                "%(task)s takes no parameters (got %(names)s)",
                                task=cls.name,
                                names=names,
                            )
                        ]
                    },
                )
            return None
        unknown = sorted(str(k) for k in arguments if k not in model.model_fields)
        if unknown:
            raise InvalidArguments(cls.name, {name: [_("unknown parameter")] for name in unknown})
        too_deep = [str(k) for k, v in arguments.items() if not depth_within(v, MAX_DEPTH)]
        if too_deep:
            message = _("nested deeper than %(depth)s levels", depth=MAX_DEPTH)
            raise InvalidArguments(cls.name, {name: [message] for name in too_deep})
        try:
            params = model.model_validate(dict(arguments))
        except pydantic.ValidationError as exc:
            errors: dict[str, list[str]] = {}
            for error in exc.errors():
                field = ".".join(str(p) for p in error["loc"]) or "__root__"
                errors.setdefault(field, []).append(validation_message(error))
            raise InvalidArguments(cls.name, errors) from None
        # JSON has no infinity nor NaN: PostgreSQL would refuse the run's row.
        stored = _dump(params)
        infinite = [name for name, value in stored.items() if not _finite(value)]
        if infinite:
            message = _("must be a finite number (not infinity nor NaN)")
            raise InvalidArguments(cls.name, {name: [message] for name in infinite})
        return params

    @classmethod
    def dump_arguments(cls, params: pydantic.BaseModel | None) -> dict[str, t.Any]:
        """The validated parameters as stored on the run: JSON values, secrets in clear."""
        return {} if params is None else t.cast(dict[str, t.Any], _dump(params))

    @classmethod
    def secret_parameters(cls) -> frozenset[str]:
        """Names of parameters declared as ``SecretStr`` / ``SecretBytes``."""
        return frozenset(name for name, node in cls.secret_fields().items() if node is True)

    @classmethod
    def secret_fields(cls) -> dict[str, t.Any]:
        """Where the secrets of ``Parameters`` are, nested models included.

        Maps a field name to ``True`` when its whole value is secret, or to the
        same kind of mapping for the fields of a nested model (under ``"*"``
        for the values of a dict of models). Lists of models are transparent.
        """
        model = cls.Parameters
        return {} if model is None else _secret_tree(model, frozenset())

    # -- hooks to override ------------------------------------------------

    def process(self, *args: t.Any) -> None:
        """Do the work for one item (or batch, or once for a collection-less task)."""
        raise NotImplementedError(f"{self.name} must implement process().")

    def count(self) -> int | None:
        """How many items the run will process; ``None`` if unknown.

        The default counts the collection once, when the run starts.
        """
        return source_of(self).count()

    def after_start(self) -> None:
        """Called when a job starts the run (also after a resume)."""

    def after_pause(self) -> None:
        """Called once the run is ``paused``."""

    def after_interrupt(self) -> None:
        """Called when a job slice hands the run on (time slice, shutdown, throttle)."""

    def after_cancel(self) -> None:
        """Called once the run is ``cancelled``."""

    def after_complete(self) -> None:
        """Called when the collection is exhausted, before the run is ``succeeded``."""

    def after_error(self, error: BaseException) -> None:
        """Called once the run is ``errored``; exceptions raised here are logged and ignored."""

    @property
    def throttles(self) -> tuple[Throttle, ...]:
        return self._throttles
