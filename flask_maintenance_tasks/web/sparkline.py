"""The run card's sparkline: a small SVG of the run's pace, drawn on the server.

One point per tick, evenly spaced from left to right (a tick lasts about the
ticker delay, so the spacing is close to time), the height of each its rate
against the highest of the series. A stretch that follows an interruption is
a dashed line; throttled points lie on a shaded band and are drawn in the
warning colour. The SVG holds only shapes with classes: the stylesheet
colours them, so the Content-Security-Policy needs no inline style, and the
light and dark themes both apply.
"""

from __future__ import annotations

import dataclasses
import typing as t

from .. import pace

#: The drawing's own units (its ``viewBox``); the stylesheet sets its size on the page.
WIDTH = 240
HEIGHT = 40
#: Room kept at the edges, so that a stroke at the top or the bottom is not cut.
_PAD = 2.0

STEADY = "steady"
THROTTLED = "throttled"
INTERRUPTED = "interrupted"


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of the line drawn one way: ``kind`` is steady, throttled or interrupted."""

    kind: str
    #: The ``points`` of its ``<polyline>``.
    points: str


@dataclasses.dataclass(frozen=True)
class Band:
    """A shaded band behind throttled points, ``x`` to ``x + width``."""

    x: float
    width: float


@dataclasses.dataclass(frozen=True)
class Sparkline:
    """What the card's ``<svg>`` draws, and the words that say the same."""

    #: The text alternative: latest and average rates, throttles and interruptions.
    label: str
    segments: list[Segment]
    bands: list[Band]
    throttled: bool
    interrupted: bool
    width: int = WIDTH
    height: int = HEIGHT


def _kind(point: pace.Point) -> str:
    if point.interrupted:
        return INTERRUPTED
    return THROTTLED if point.throttled else STEADY


def draw(found: t.Sequence[pace.Point]) -> Sparkline | None:
    """The sparkline of a series, or ``None`` for an empty one."""
    label = pace.describe(found)
    if label is None:
        return None
    top = max(point.rate for point in found) or 1.0
    inner_width, inner_height = WIDTH - 2 * _PAD, HEIGHT - 2 * _PAD
    step = inner_width / (len(found) - 1) if len(found) > 1 else inner_width
    places = [
        (_PAD + n * step, HEIGHT - _PAD - inner_height * point.rate / top)
        for n, point in enumerate(found)
    ]
    if len(found) == 1:
        # A single point: a level line across, which a lone dot would not show.
        places = [(_PAD, places[0][1]), (WIDTH - _PAD, places[0][1])]
        kinds = [THROTTLED if found[0].throttled else STEADY]
    else:
        # Each stretch between two points is drawn as the later point says.
        kinds = [_kind(point) for point in found[1:]]
    segments: list[Segment] = []
    start = 0
    for n in range(1, len(kinds) + 1):
        if n == len(kinds) or kinds[n] != kinds[start]:
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in places[start : n + 1])
            segments.append(Segment(kinds[start], line))
            start = n
    return Sparkline(
        label=label,
        segments=segments,
        bands=_bands(found, step),
        throttled=any(point.throttled for point in found),
        interrupted=any(point.interrupted for point in found),
    )


def _bands(found: t.Sequence[pace.Point], step: float) -> list[Band]:
    """A band over each run of throttled points, half a step wide on either side."""
    if len(found) == 1:
        return [Band(0.0, float(WIDTH))] if found[0].throttled else []
    bands: list[Band] = []
    first: int | None = None
    for n, point in enumerate([*found, None]):
        if point is not None and point.throttled:
            if first is None:
                first = n
            continue
        if first is not None:
            left = max(0.0, _PAD + (first - 0.5) * step)
            right = min(float(WIDTH), _PAD + (n - 0.5) * step)
            bands.append(Band(round(left, 1), round(right - left, 1)))
            first = None
    return bands
