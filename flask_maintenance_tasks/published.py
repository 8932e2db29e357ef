"""What a task says about itself while it runs: ``self.status``, a small JSON mapping.

A task publishes facts next to its progress (``self.status.update(step="re-indexing",
skipped=12)``, ``self.status["result"] = "..."``). The mapping rides on the run's row,
column ``published``, and is written with the next tick's UPDATE: publishing costs no
statement of its own. ``update(..., now=True)`` writes the keys it gives at once, one
statement, onto the mapping the last tick committed.

Values are JSON values: ``None``, booleans, integers, finite floats, strings, lists
(tuples become lists) and objects with string keys. Anything else (a set, a
``datetime``, an object) is refused where it is given, with :class:`InvalidStatus`
naming the key; so is a mapping whose compact UTF-8 JSON would pass the size limit
(``MAINTENANCE_TASKS_MAX_STATUS_BYTES``). Values are copied when given: changing a
list after publishing it does not change what was published.

Three keys describe steps, shown as "Step 2 of 3: re-indexing": ``step`` (its name),
``step_number`` and ``step_total``. Giving a ``step`` different from the current one
without a ``step_number`` numbers it one more than the last (from 1).
"""

from __future__ import annotations

import json
import math
import typing as t
from collections import abc

from .exceptions import InvalidStatus
from .i18n import gettext as _

#: The default of ``MAINTENANCE_TASKS_MAX_STATUS_BYTES``.
DEFAULT_MAX_BYTES = 16 * 1024
#: How deep lists and objects may nest in one value.
MAX_DEPTH = 32

STEP = "step"
STEP_NUMBER = "step_number"
STEP_TOTAL = "step_total"

#: Writes the mapping at once: ``writer(mapping, step_changed)``; ``False`` when it must
#: wait for the transaction under way instead (SQLite, whose one writer is that transaction).
Writer = t.Callable[[dict[str, t.Any], bool], bool]


def _encode(value: t.Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _problem(value: t.Any, depth: int = 0) -> str | None:
    """Why ``value`` is no JSON value, or ``None`` when it is one."""
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    if depth >= MAX_DEPTH:
        return f"it nests deeper than {MAX_DEPTH} levels"
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = _problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"its key {key!r} is not a string"
            problem = _problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return (
        f"a {type(value).__name__} is not a JSON value (give a string, a number, a "
        "boolean, None, a list or a dict; a datetime as .isoformat())"
    )


def _printable(key: t.Any) -> str:
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


class TaskStatus(abc.MutableMapping[str, t.Any]):
    """The mapping a task publishes as ``self.status`` (see :doc:`/task-status`).

    Read it back as any mapping (``self.status["count"]``): a resumed run's task
    starts from what was last committed.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        values: t.Mapping[str, t.Any] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        writer: Writer | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self._writer = writer
        self._values: dict[str, t.Any] = {}
        #: Bytes of each member in the compact JSON: ``"key":value``.
        self._sizes: dict[str, int] = {}
        for key, value in dict(values or {}).items():
            if isinstance(key, str):
                self._values[key] = value
                self._sizes[key] = _size(_encode(key)) + 1 + _size(_encode(value))
        self._dirty = False
        self._written_step = self._values.get(STEP)
        self._committed = (dict(self._values), dict(self._sizes))

    # -- the mapping ------------------------------------------------------

    def __getitem__(self, key: str) -> t.Any:
        return self._values[key]

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setitem__(self, key: str, value: t.Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        del self._sizes[key]
        self._dirty = True

    def __repr__(self) -> str:
        return f"TaskStatus({self._values!r})"

    def update(  # type: ignore[override]
        self,
        values: t.Mapping[str, t.Any] | t.Iterable[tuple[str, t.Any]] = (),
        /,
        *,
        now: bool = False,
        **more: t.Any,
    ) -> None:
        """Publish the given keys and values; with ``now=True``, write them at once.

        ``now=True`` writes only the keys of this update, onto the mapping as last
        committed: the others wait for the tick that commits the items they describe.

        Every value is checked before any is kept: a refused update changes nothing.

        :raises InvalidStatus: a key that is no string, a value that is no JSON
            value, or a mapping past the size limit; the message names the key.
        """
        given = dict(values)
        given.update(more)
        if STEP in given and STEP_NUMBER not in given and given[STEP] != self._values.get(STEP):
            number = self._values.get(STEP_NUMBER)
            given[STEP_NUMBER] = number + 1 if type(number) is int else 1
        encoded: dict[str, tuple[t.Any, int]] = {}
        for key, value in given.items():
            if not isinstance(key, str):
                raise InvalidStatus(
                    _printable(key), f"Status key {_printable(key)!r} is not a string."
                )
            problem = _problem(value)
            if problem is None:
                try:
                    text = _encode(value)
                    size = _size(_encode(key)) + 1 + _size(text)
                except (UnicodeEncodeError, ValueError, RecursionError):
                    problem = "it holds text that is not valid UTF-8 (a lone surrogate)"
            if problem is not None:
                raise InvalidStatus(
                    _printable(key), f"Status key {_printable(key)!r}: {problem}."
                ) from None
            encoded[key] = (json.loads(text), size)
        sizes = {**self._sizes, **{key: size for key, (_, size) in encoded.items()}}
        total = 2 + sum(sizes.values()) + max(len(sizes) - 1, 0)
        if total > self.max_bytes:
            largest = max(encoded, key=lambda key: encoded[key][1]) if encoded else ""
            raise InvalidStatus(
                largest,
                f"Status key {largest!r} takes the published status to {total:,} bytes of "
                f"JSON, past its limit of {self.max_bytes:,} "
                "(MAINTENANCE_TASKS_MAX_STATUS_BYTES).",
            )
        for key, (value, size) in encoded.items():
            self._values[key] = value
            self._sizes[key] = size
        self._dirty = True
        if now and self._writer is not None:
            self._write_now(list(encoded))

    def _write_now(self, keys: list[str]) -> None:
        """Write ``keys`` at once, onto the mapping last committed.

        Only those keys: the others may describe items of the tick in progress, which a
        crash would undo; committed now, a resumed run would count those items twice.
        """
        values, sizes = self._committed
        merged = {**values, **{key: self._values[key] for key in keys}}
        step_changed = merged.get(STEP) != self._written_step
        if not t.cast(Writer, self._writer)(dict(merged), step_changed):
            return  # written with the tick (or the callback) under way
        self._committed = (merged, {**sizes, **{key: self._sizes[key] for key in keys}})
        self._written_step = merged.get(STEP)
        self._dirty = self._values != merged

    # -- what the engine reads --------------------------------------------

    def as_dict(self) -> dict[str, t.Any]:
        """A copy of the mapping, as it would be written."""
        return dict(self._values)

    @property
    def dirty(self) -> bool:
        """Something was published since the last write."""
        return self._dirty

    def pending(self) -> dict[str, t.Any] | None:
        """The mapping to write with the next tick, or ``None`` when nothing changed."""
        return self.as_dict() if self._dirty else None

    @property
    def step_changed(self) -> bool:
        """The step differs from the one last written (an audit event is due)."""
        return self._values.get(STEP) != self._written_step

    def written(self) -> None:
        """The mapping as it stands was committed."""
        self._dirty = False
        self._written_step = self._values.get(STEP)
        self._committed = (dict(self._values), dict(self._sizes))

    def revert(self) -> None:
        """Go back to the mapping last committed: the tick that published the rest was undone."""
        values, sizes = self._committed
        self._values, self._sizes = dict(values), dict(sizes)
        self._dirty = False
        self._written_step = self._values.get(STEP)


def step_line(published: t.Any) -> str | None:
    """ "Step 2 of 3: re-indexing" for a published mapping with a step; ``None`` without."""
    if not isinstance(published, dict) or published.get(STEP) in (None, ""):
        return None
    name = published[STEP]
    name = name if isinstance(name, str) else _encode(name)
    number, total = published.get(STEP_NUMBER), published.get(STEP_TOTAL)
    if type(number) is int and type(total) is int:
        return _("Step %(number)s of %(total)s: %(name)s", number=number, total=total, name=name)
    if type(number) is int:
        return _("Step %(number)s: %(name)s", number=number, name=name)
    return _("Step: %(name)s", name=name)


def facts(published: t.Any) -> dict[str, t.Any]:
    """The published mapping without the step keys (those make the step line)."""
    if not isinstance(published, dict):
        return {}
    if step_line(published) is None:
        return dict(published)
    return {k: v for k, v in published.items() if k not in (STEP, STEP_NUMBER, STEP_TOTAL)}
