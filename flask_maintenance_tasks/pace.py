"""A run's pace: a bounded series of its recent throughput, one point per tick.

The job slice that holds a run keeps the series in memory (:class:`Series`),
starting from what the run's row held when the slice began, and writes it
whole with each tick's progress UPDATE: the series costs no statement of its
own. It is stored in ``Run.pace`` as compact JSON::

    {"v": 1, "t0": 1764590400, "p": [[12.5, 1.002, 198, 0], ...]}

``t0`` is a whole number of seconds since the epoch (UTC) which the times of
the points count from. Each point is ``[t, s, n, m]``:

``t``
    when its tick committed, in seconds after ``t0``, to the hundredth (the
    worker's wall clock: two hosts' clocks may disagree a little);
``s``
    the seconds of work it spans, to the thousandth: its tick's, and those of
    the ticks before it in the same slice that processed no item;
``n``
    the items processed in those seconds. The point's rate is ``n / s``;
``m``
    its marks, added up: :data:`THROTTLED` (the run waited on its speed cap
    during these seconds, or the point is the first after a throttle's
    backoff) and :data:`INTERRUPTED` (the point is the first after the run
    stopped: a pause, a hand-over to the next slice, a crash and its
    recovery, a retry after a lost connection).

Only the last :data:`MAX_POINTS` points are kept: a full series is about 7.7 KB of
JSON as SQLAlchemy writes it (a long run's ticks, three days in).
Whatever reads a stored series goes through :func:`points`, which takes what
it can use of anything (a hand-edited column) and leaves the rest out.

A partitioned run has no series of its own: each partition is a run with its
own ticks, and :func:`combined` adds theirs up, by time, when the run is shown.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t
from datetime import datetime, timedelta, timezone

from .i18n import gettext as _
from .i18n import number, pgettext

#: The points a run keeps: its last few minutes at the default ticker delay (1 s).
MAX_POINTS = 300
#: A mark of a point: the run waited on its speed cap, or on a throttle's backoff.
THROTTLED = 1
#: A mark of a point: the first after the run stopped and was taken up again.
INTERRUPTED = 2
#: The version of the stored format.
VERSION = 1

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Bounds of what a stored series may hold; anything outside is left out.
_MAX_T0 = 1e11  # seconds since the epoch: past the year 5000
_MAX_T = 1e10
_MIN_SECONDS = 0.001  # as the recorder rounds them: a rate stays finite
_MAX_SECONDS = 1e9
_MAX_ITEMS = 1e15


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a series, as the dashboard, the JSON and the CLI read it."""

    #: When its stretch ended, in seconds since the epoch.
    at: float
    #: The seconds of work it spans (more than 0).
    seconds: float
    #: The items processed in them (a fraction for a partitioned run's sum).
    items: float
    throttled: bool = False
    interrupted: bool = False

    @property
    def rate(self) -> float:
        """Items per second over the point's seconds."""
        return self.items / self.seconds


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a series says in words: its latest and average rates, and its marks."""

    latest: float
    #: All the items of the series over all its seconds.
    average: float
    #: Stretches of throttled points (consecutive ones count once).
    throttled: int
    #: Points that follow an interruption.
    interrupted: int


def _number(value: t.Any, low: float, high: float) -> float | None:
    """``value`` as a float when it is a finite number within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        return None
    return number


def _stored(stored: t.Any) -> tuple[int, list[list[t.Any]]]:
    """``(t0, points)`` of a stored series, each point checked; ``(0, [])`` for nothing usable."""
    if not isinstance(stored, dict):
        return 0, []
    t0 = _number(stored.get("t0"), 0, _MAX_T0)
    found = stored.get("p")
    if t0 is None or not isinstance(found, list):
        return 0, []
    kept: list[list[t.Any]] = []
    for point in found[-MAX_POINTS:]:
        if not isinstance(point, list) or len(point) != 4:
            continue
        at = _number(point[0], -_MAX_T, _MAX_T)
        seconds = _number(point[1], _MIN_SECONDS, _MAX_SECONDS)
        items = _number(point[2], 0, _MAX_ITEMS)
        marks = point[3]
        if at is None or seconds is None or items is None:
            continue
        if isinstance(marks, bool) or not isinstance(marks, int) or not 0 <= marks <= 3:
            continue
        kept.append([point[0], point[1], point[2], marks])
    return int(t0), kept


def points(stored: t.Any) -> list[Point]:
    """The points of a stored series (``Run.pace``), oldest first; ``[]`` for none.

    A point that is not four finite numbers of the right kinds is left out,
    and so is a series without a usable ``t0``: a hand-edited column is shown
    as far as it makes sense, never as an error.
    """
    t0, found = _stored(stored)
    return [
        Point(
            at=t0 + float(at),
            seconds=float(seconds),
            items=float(items),
            throttled=bool(marks & THROTTLED),
            interrupted=bool(marks & INTERRUPTED),
        )
        for at, seconds, items, marks in found
    ]


class Series:
    """The series of the run a job slice holds, kept in memory and written with each tick.

    :meth:`tick` gives what the tick's UPDATE writes; :meth:`written` takes
    it as the series once the tick is committed (a tick that is not committed
    leaves the series as it was). The iteration loop adds the seconds it
    waited on the speed cap to :attr:`waited`.
    """

    def __init__(self, stored: t.Any = None, *, after: str | None = None) -> None:
        """``stored``: the run's ``pace`` as the slice read it; ``after``: the run's
        ``interruption_reason`` then (``"throttle"`` after a throttle's backoff)."""
        self.t0, self.points = _stored(stored)
        #: Marks of the next point: a series carried on by a new slice follows a stop.
        self.marks = 0
        if self.points:
            self.marks = THROTTLED if after == "throttle" else INTERRUPTED
        #: Seconds of ticks without an item since the last point, added to the next one.
        self.seconds = 0.0
        #: Seconds the loop waited on the speed cap since the last tick.
        self.waited = 0.0
        self._next: tuple[float, int, int, list[list[t.Any]]] | None = None

    def tick(self, now: float, seconds: float, items: int) -> dict[str, t.Any] | None:
        """The series with the point of a tick of ``items`` over ``seconds`` that ends at
        ``now`` (seconds since the epoch), or ``None`` when the tick processed no item:
        its seconds and marks then go to the next point, and the series is not written."""
        span = self.seconds + max(seconds, 0.0)
        marks = self.marks | (THROTTLED if self.waited > 0 else 0)
        if items <= 0:
            self._next = (span, marks, self.t0, self.points)
            return None
        t0 = self.t0 if self.points else int(now)
        point = [round(now - t0, 2), round(max(span, 0.001), 3), int(items), marks]
        found = [*self.points[-(MAX_POINTS - 1) :], point]
        self._next = (0.0, 0, t0, found)
        return {"v": VERSION, "t0": t0, "p": found}

    def written(self) -> None:
        """The last :meth:`tick` was committed: its point is part of the series."""
        if self._next is None:
            return
        self.seconds, self.marks, self.t0, self.points = self._next
        self.waited = 0.0
        self._next = None


def combined(parts: t.Iterable[t.Sequence[Point]]) -> list[Point]:
    """One series of the points of several runs (a run's partitions), added up by time.

    The time they cover is cut into equal buckets, no more than
    :data:`MAX_POINTS` and no shorter than a typical point; each point's items
    are shared among the buckets it overlaps, pro rata. A bucket no point
    covers (no partition was working) is left out, and the next one is marked
    interrupted; each partition's marks show on the bucket where its point
    began. A single series is returned as it is.
    """
    series = [list(part) for part in parts if part]
    if not series:
        return []
    if len(series) == 1:
        return series[0]
    found = [point for part in series for point in part]
    start = min(point.at - point.seconds for point in found)
    end = max(point.at for point in found)
    spans = sorted(point.seconds for point in found)
    width = max(spans[len(spans) // 2], (end - start) / MAX_POINTS, 0.001)
    count = max(1, min(MAX_POINTS, math.ceil((end - start) / width)))
    items = [0.0] * count
    covered = [0] * count
    # The buckets wholly inside a point get their share through running sums,
    # so that a long point costs no more than a short one.
    inner = [0.0] * (count + 1)
    inner_covered = [0] * (count + 1)
    marks = [0] * count
    for point in found:
        begin = point.at - point.seconds
        first = min(count - 1, max(0, math.floor((begin - start) / width)))
        # A point that ends on a bucket's edge does not reach into the next bucket.
        last = min(count - 1, max(first, math.ceil((point.at - start) / width) - 1))
        rate = point.rate
        marks[first] |= (THROTTLED if point.throttled else 0) | (
            INTERRUPTED if point.interrupted else 0
        )
        covered[first] += 1
        if first == last:
            items[first] += point.items
            continue
        items[first] += rate * (start + (first + 1) * width - begin)
        items[last] += rate * (point.at - (start + last * width))
        covered[last] += 1
        inner[first + 1] += rate * width
        inner[last] -= rate * width
        inner_covered[first + 1] += 1
        inner_covered[last] -= 1
    result: list[Point] = []
    running, running_covered, gap = 0.0, 0, False
    for bucket in range(count):
        running += inner[bucket]
        running_covered += inner_covered[bucket]
        if not covered[bucket] and running_covered <= 0:
            gap = bool(result)
            continue
        mark = marks[bucket] | (INTERRUPTED if gap else 0)
        result.append(
            Point(
                at=start + (bucket + 1) * width,
                seconds=width,
                items=max(0.0, items[bucket] + running),
                throttled=bool(mark & THROTTLED),
                interrupted=bool(mark & INTERRUPTED),
            )
        )
        gap = False
    return result


def summary(found: t.Sequence[Point]) -> Summary | None:
    """The :class:`Summary` of a series, ``None`` for an empty one."""
    if not found:
        return None
    seconds = sum(point.seconds for point in found)
    throttled = sum(
        1
        for n, point in enumerate(found)
        if point.throttled and (n == 0 or not found[n - 1].throttled)
    )
    return Summary(
        latest=found[-1].rate,
        average=sum(point.items for point in found) / seconds,
        throttled=throttled,
        interrupted=sum(1 for point in found if point.interrupted),
    )


def rate_text(rate: float) -> str:
    """ "198 items/s", "12.5 items/s", "3.2 items/min": a rate as people read it."""
    if rate <= 0:
        return _("%(rate)s items/s", rate=number(0))
    for per, unit in ((1, "s"), (60, "min"), (3600, "h")):
        value = rate * per
        if value >= 1 or unit == "h":
            shown = number(value, digits=0) if value >= 100 else number(round(value, 1))
            if unit == "s":
                return _("%(rate)s items/s", rate=shown)
            if unit == "min":
                return _("%(rate)s items/min", rate=shown)
            return _("%(rate)s items/h", rate=shown)
    raise AssertionError("unreachable")  # pragma: no cover


def _times(count: int) -> str:
    if count == 1:
        return _("once")
    if count == 2:
        return _("twice")
    return _("%(num)s times", num=number(count))


def describe(found: t.Sequence[Point]) -> str | None:
    """ "Pace: latest 198 items/s, average 201 items/s; throttled twice, interrupted once."

    The text alternative of the sparkline; ``None`` for an empty series.
    """
    said = summary(found)
    if said is None:
        return None
    latest, average = rate_text(said.latest), rate_text(said.average)
    marks = []
    if said.throttled:
        marks.append(_("throttled %(times)s", times=_times(said.throttled)))
    if said.interrupted:
        marks.append(_("interrupted %(times)s", times=_times(said.interrupted)))
    if not marks:
        return _("Pace: latest %(latest)s, average %(average)s.", latest=latest, average=average)
    return _(
        "Pace: latest %(latest)s, average %(average)s; %(marks)s.",
        latest=latest,
        average=average,
        marks=pgettext("list separator", ", ").join(marks),
    )


def as_dict(found: t.Sequence[Point]) -> dict[str, t.Any]:
    """A series as JSON-ready data: the ``pace`` of a run's JSON (see :doc:`/api-json`)."""
    said = summary(found)
    return {
        "max_points": MAX_POINTS,
        "latest_rate": None if said is None else round(said.latest, 3),
        "average_rate": None if said is None else round(said.average, 3),
        "throttled": 0 if said is None else said.throttled,
        "interrupted": 0 if said is None else said.interrupted,
        "points": [
            {
                "at": (_EPOCH + timedelta(seconds=point.at)).isoformat(timespec="milliseconds"),
                "seconds": round(point.seconds, 3),
                "items": round(point.items, 3),
                "rate": round(point.rate, 3),
                "throttled": point.throttled,
                "interrupted": point.interrupted,
            }
            for point in found
        ],
    }
