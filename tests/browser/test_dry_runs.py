"""Dry runs and the preview in Chromium: the preview follows the form, "Dry run" shows what
would change, and "Run for real" does it."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from tests.support.browser import LiveServer
from tests.support.records import seed_items
from tests.testapp import Item

pytestmark = pytest.mark.browser

TIMEOUT = 20_000  # ms, for expectations that wait on the worker


def newest_run_id(page: Page) -> int:
    return int(page.locator("#task-runs article.run").first.get_attribute("data-run-id") or 0)


@pytest.mark.usefixtures("worker")
def test_the_preview_follows_the_form_then_a_dry_run_then_run_for_real(
    live: LiveServer, page: Page, console: list[str], db: t.Any
) -> None:
    seed_items(15)
    page.goto(f"{live.url}/tasks/PreviewItemsTask")
    count = page.locator("#preview-count")
    expect(count).to_have_text("A run would walk 15 items.")
    expect(page.locator(".preview-items li")).to_have_count(10)

    page.get_by_label("prefix").fill("item-1")
    expect(count).to_have_text("A run would walk 7 items.")  # item-1, item-10 to item-15
    page.get_by_label("limit_group").fill("-1")
    expect(page.locator("#preview-invalid")).to_be_visible()
    expect(page.locator('.preview-errors li[data-field="limit_group"]')).to_contain_text(
        "greater than or equal to 0"
    )
    under_field = page.locator("#param-limit_group-preview-error")
    expect(under_field).to_be_visible()
    expect(under_field).to_contain_text("greater than or equal to 0")
    page.get_by_label("limit_group").fill("3")
    expect(count).to_have_text("A run would walk 7 items.")
    expect(under_field).to_be_hidden()
    page.get_by_label("token").fill("browser-dry-secret")

    page.get_by_role("button", name="Dry run", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="is enqueued")).to_be_visible()
    dry_id = newest_run_id(page)
    card = page.locator(f"#run-{dry_id}")
    expect(card.locator(".tag-dry-run")).to_have_text("Dry run")
    expect(card).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT)
    expect(card.locator(".changes-summary")).to_contain_text(
        "Would update 7 rows of items: counter"
    )
    with db.engine.connect() as connection:
        assert connection.scalars(sa.select(Item.counter)).all() == [0] * 15

    card.get_by_text("First changes").click()
    expect(card.locator(".changes-sample tbody tr").first).to_be_visible()
    card.get_by_role("button", name="Run for real").click()
    expect(page.get_by_role("status").filter(has_text="does for real what dry run")).to_be_visible()
    real_id = newest_run_id(page)
    assert real_id > dry_id
    real = page.locator(f"#run-{real_id}")
    expect(real).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT)
    expect(real.locator(".tag-dry-run")).to_have_count(0)
    with db.engine.connect() as connection:
        counters = connection.scalars(sa.select(Item.counter).order_by(Item.id)).all()
    assert sum(counters) == 7
    assert "browser-dry-secret" not in page.content()
    assert console == []
