"""A partitioned run in Chromium: started from the form's "Partitions" field, walked by real
workers, one small bar per partition under the run's bar, until the run succeeded."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from tests.support.browser import LiveServer
from tests.support.records import seed_items
from tests.support.workers import WorkerProcesses
from tests.testapp import Item

pytestmark = pytest.mark.browser

TIMEOUT = 30_000  # ms, for expectations that wait on the workers


def test_a_partitioned_run_shows_a_bar_per_partition_until_it_succeeds(
    live: LiveServer, page: Page, console: list[str], db: t.Any, workers: WorkerProcesses
) -> None:
    seed_items(36)
    workers.start()
    workers.start()
    page.goto(f"{live.url}/tasks/PartitionedCountTask")
    field = page.locator("#run-partitions")
    expect(field).to_have_value("4")

    field.fill("0")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#run-partitions-error")).to_contain_text("Must be at least 1, not 0.")
    expect(page.locator("#task-runs article.run")).to_have_count(0)

    page.locator("#run-partitions").fill("3")
    page.get_by_label("sleep").fill("0.05")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="is enqueued")).to_be_visible()
    card = page.locator("#task-runs article.run").first
    bars = card.locator(".partition-list > li.partition")
    expect(bars).to_have_count(3, timeout=TIMEOUT)  # cut once a worker starts it
    expect(card).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT)
    for index in range(3):
        bar = card.locator(f"li.partition[data-partition='{index}']")
        expect(bar).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT)
        expect(bar.locator(".partition-text")).to_contain_text("12 / 12")
        expect(bar.locator("progress")).to_have_attribute("value", "12")
    expect(card.locator(".progress-text").first).to_contain_text("36 out of 36")
    with db.engine.connect() as connection:
        assert set(connection.scalars(sa.select(Item.counter)).all()) == {1}
    # Chromium logs the refused form's answer (422, by design); nothing else, no CSP violation.
    assert [m for m in console if "status of 422" not in m] == []
