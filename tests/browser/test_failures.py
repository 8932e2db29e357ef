"""Failed items in Chromium: a skip run's card, its failures page, and "Retry failed items"."""

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


def set_titles(db: t.Any, title: str, *ids: int) -> None:
    db.session.execute(sa.update(Item).where(Item.id.in_(ids)).values(title=title))
    db.session.commit()


@pytest.mark.usefixtures("worker")
def test_a_skip_run_shows_its_failed_items_and_retries_them(
    live: LiveServer, page: Page, console: list[str], db: t.Any
) -> None:
    seed_items(12)
    set_titles(db, "bad", 4, 8)
    page.goto(f"{live.url}/tasks/SkipBadItemsTask")
    page.get_by_label("token").fill("browser-secret")
    page.get_by_role("button", name="Run", exact=True).click()

    run_id = newest_run_id(page)
    card = page.locator(f"#run-{run_id}")
    expect(card).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT)
    expect(card.locator(".failures-box")).to_contain_text("Failed items: 2")
    expect(card.locator(".failure-list li")).to_have_count(2)
    expect(card.locator(".failure-list").first).to_contain_text("item 8 is bad [FILTERED]")

    card.get_by_role("link", name="All 2 failures").click()
    expect(page.get_by_role("heading", name=f"Failed items of run #{run_id}")).to_be_visible()
    expect(page.locator("article.failure")).to_have_count(2)
    page.locator("article.failure").first.get_by_text("Backtrace").click()
    expect(page.locator("article.failure").first.locator(".backtrace pre")).to_be_visible()

    set_titles(db, "fixed", 4, 8)
    page.get_by_role("button", name="Retry failed items").click()

    expect(page.get_by_role("status").filter(has_text="retries the failed items")).to_be_visible()
    retry_id = newest_run_id(page)
    retry = page.locator(f"#run-{retry_id}")
    assert retry_id > run_id
    expect(retry).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT)
    expect(retry.locator(".retry-of")).to_have_text(f"#{run_id}")
    page.reload()
    expect(page.locator(f"#run-{run_id} .retried-in")).to_contain_text(f"#{retry_id}")
    assert "browser-secret" not in page.content()
    assert console == []
