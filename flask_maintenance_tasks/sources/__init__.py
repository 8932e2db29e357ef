"""What a task's collection is, answered once: one :class:`Source` per kind.

:func:`source_of` turns a task into its source: a keyset walk over a
``Select``, ``in_batches``, a list or tuple, the run's CSV file, a single call
with no collection, or the task's own ``enumerator(cursor)`` (which wins over
``collection``). :func:`csv_spec` answers, from the task class and the
arguments of a run about to start, whether that run needs a CSV file; the
runner, the CLI and the dashboard all ask it.
"""

from __future__ import annotations

import inspect
import typing as t

from sqlalchemy.sql import Select

from ..csv.rows import CSVCollection
from ..exceptions import ConfigurationError, InvalidArguments
from ..i18n import gettext as _
from .base import Cursor, Item, Source
from .csv_file import CSVSource
from .custom import EnumeratorSource
from .keyset import Batch, selects_columns
from .once import NO_ITEM, NoCollection, OnceSource, no_collection
from .records import BatchesSource, InBatches, RecordsSource, RowsSource, in_batches
from .retry import RetrySource
from .sequence import SequenceSource

if t.TYPE_CHECKING:
    from ..task import Task

__all__ = [
    "NO_ITEM",
    "Batch",
    "BatchesSource",
    "CSVSource",
    "Cursor",
    "EnumeratorSource",
    "InBatches",
    "Item",
    "NoCollection",
    "OnceSource",
    "RecordsSource",
    "RetrySource",
    "RowsSource",
    "SequenceSource",
    "Source",
    "csv_spec",
    "in_batches",
    "needs_file",
    "no_collection",
    "resolve",
    "retry_problem",
    "source_of",
]


def resolve(task: Task) -> t.Any:
    """What the task's ``collection`` is: the attribute, or what the method returns."""
    collection = getattr(task, "collection", None)
    if collection is None:
        raise ConfigurationError(
            f"{type(task).name} must define collection (or an enumerator(cursor) method)."
        )
    if inspect.ismethod(collection):
        collection = collection()
    return collection


def retry_problem(task: Task, kinds: t.Collection[str] = ()) -> str | None:
    """Why the failed items of a run of ``task`` cannot be retried, or ``None``.

    ``kinds`` are the kinds of collection the failures were met in: keys of
    another kind than the task's collection has now would find other items.
    """
    source = _own_source(task)
    other = sorted(set(kinds) - {source.kind})
    if other:
        return _(
            "its failed items were met in a collection of kind %(kinds)s, and %(task)s's "
            "collection is now of kind %(kind)s: their keys would find other items.",
            kinds=", ".join(other),
            task=type(task).name,
            kind=source.kind,
        )
    return source.cannot_find()


def has_enumerator(task: Task | type[Task]) -> bool:
    return callable(getattr(task, "enumerator", None))


def source_of(task: Task) -> Source:
    """The source of ``task``'s collection; for a retry run, of its retried failures.

    :raises ConfigurationError: the collection is of no known kind, or is
        misdeclared (a ``Select`` with ORDER BY, of several entities, ...).
    """
    source = _own_source(task)
    run = task.run
    retried = getattr(run, "retry_of_id", None)
    if retried is not None and run is not None:
        return RetrySource(task, source, retried, run.id)
    return source


def _own_source(task: Task) -> Source:
    if has_enumerator(task):
        return EnumeratorSource(task)
    collection = resolve(task)
    if isinstance(collection, CSVCollection):
        return CSVSource(task, collection)
    if isinstance(collection, NoCollection):
        return OnceSource(task)
    if isinstance(collection, (list, tuple)):
        return SequenceSource(task, collection)
    if isinstance(collection, InBatches):
        return BatchesSource(task, collection)
    if isinstance(collection, Select):
        if selects_columns(collection):
            return RowsSource(task, collection)
        return RecordsSource(task, collection)
    raise ConfigurationError(
        f"{type(task).name}#collection must be an SQLAlchemy Select, in_batches(...), a list or "
        f"tuple, csv_collection(...) or no_collection(); got {type(collection).__name__}."
    )


def csv_spec(
    task_class: type[Task], arguments: t.Mapping[str, t.Any] | None = None
) -> CSVCollection | None:
    """The task's ``csv_collection(...)``, or ``None`` when it is not a CSV task.

    A ``collection`` attribute is read as it is. A ``collection()`` method is
    called on an instance built from ``arguments``; without them (the
    dashboard's form, before anything is typed) from the parameters' defaults,
    unvalidated. A method that fails is taken as "not a CSV task": the run
    reports the failure when it starts, as for any other task.
    """
    if has_enumerator(task_class):
        return None
    declared = getattr(task_class, "collection", None)
    if isinstance(declared, CSVCollection):
        return declared
    if declared is None or not callable(declared):
        return None
    try:
        task = task_class(**(arguments or {}))
    except InvalidArguments:
        if arguments is not None:
            return None
        task = _with_defaults(task_class)
    try:
        collection = resolve(task)
    except Exception:
        return None
    return collection if isinstance(collection, CSVCollection) else None


def _with_defaults(task_class: type[Task]) -> Task:
    """An instance whose parameters are the model's defaults, required fields left unset."""
    task = task_class.__new__(task_class)
    model = task_class.Parameters
    task.params = model.model_construct() if model is not None else None
    task.run = None
    task.metadata = None
    task.dry_run = False
    return task


def needs_file(task_class: type[Task], arguments: t.Mapping[str, t.Any] | None = None) -> bool:
    """Whether a run of ``task_class`` with ``arguments`` must be given a CSV file."""
    return csv_spec(task_class, arguments) is not None
