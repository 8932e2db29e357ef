"""A run's pace in Chromium: the sparkline on its card, named by its text alternative, its
throttled and interrupted stretches drawn apart by shape as well as colour, in both colour
schemes and at a phone's width, without a word from the Content-Security-Policy."""

from __future__ import annotations

import typing as t

import pytest
from playwright.sync_api import Page, expect

from flask_maintenance_tasks import pace
from tests.support.browser import LiveServer, screenshot
from tests.support.dashboard import add_run

pytestmark = pytest.mark.browser

#: Ten ticks at about 200 items/s, two of them capped, then a pause and three more.
SERIES = {
    "v": 1,
    "t0": 1_764_590_400,
    "p": [
        *[[n, 1, 200 + n, 0] for n in range(1, 6)],
        [6, 1, 120, pace.THROTTLED],
        [7, 1, 118, pace.THROTTLED],
        [8, 1, 205, 0],
        [40, 1, 190, pace.INTERRUPTED],
        [41, 1, 198, 0],
    ],
}
LABEL = "Pace: latest 198 items/s, average 185 items/s; throttled once, interrupted once."

#: The stroke of each kind of stretch, and whether it is dashed.
STROKES = """(card) => Object.fromEntries(
    [...card.querySelectorAll('svg.sparkline polyline, svg.sparkline rect')].map(shape => {
        const style = getComputedStyle(shape);
        return [shape.getAttribute('class'),
                {stroke: style.stroke, fill: style.fill, dashed: style.strokeDasharray !== 'none'}];
    }))"""


def test_the_card_shows_the_pace_as_an_image_named_by_its_rates(
    live: LiveServer, page: Page, console: list[str], db: t.Any
) -> None:
    run_id = add_run(db.engine, "CountItemsTask", "running", tick_count=1800, pace=SERIES)
    page.goto(f"{live.url}/tasks/CountItemsTask")
    # No refresh swaps the card while its shapes are read (a detached shape has no style).
    page.locator("#live-refresh").uncheck()
    card = page.locator(f"#run-{run_id}")

    image = card.get_by_role("img", name=LABEL)
    expect(image).to_be_visible()
    expect(card.locator(".pace-caption")).to_contain_text(LABEL)
    expect(card.locator(".pace-caption")).to_contain_text("shaded: throttled, dashed: interrupted")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        strokes = card.evaluate(STROKES)
        assert set(strokes) == {"pace-band", "pace-steady", "pace-throttled", "pace-interrupted"}
        assert strokes["pace-interrupted"]["dashed"]
        assert not strokes["pace-steady"]["dashed"] and not strokes["pace-throttled"]["dashed"]
        assert strokes["pace-steady"]["stroke"] != strokes["pace-throttled"]["stroke"]
        assert strokes["pace-band"]["fill"] not in ("none", "rgba(0, 0, 0, 0)")
    page.set_viewport_size({"width": 360, "height": 800})
    box = image.bounding_box()
    assert box is not None and 0 < box["width"] <= 360 - 16 and box["height"] > 20
    screenshot(page, "pace-card-360-dark")
    assert console == []
