"""The dashboard in Chromium, against a live server and a real worker process."""

from __future__ import annotations

import time
import typing as t

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import POLL_INTERVAL, LiveServer, screenshot
from tests.support.dashboard import add_run
from tests.support.records import fresh_run, row_held, seed_items
from tests.support.waiting import wait_until
from tests.testapp.maintenance.web_tasks import HOSTILE

pytestmark = pytest.mark.browser

TIMEOUT = 20_000  # ms, for expectations that wait on the worker


def progress_of(page: Page, run_id: int) -> int:
    return int(page.eval_on_selector(f"#run-{run_id}-progress", "bar => bar.value"))


def poll_requests(page: Page) -> list[str]:
    """URLs of the fragment requests the page sends from now on."""
    seen: list[str] = []
    page.on(
        "request",
        lambda r: seen.append(r.url) if r.headers.get("hx-request") and r.method == "GET" else None,
    )
    return seen


def wait_for_polls(page: Page, requests: list[str], count: int) -> None:
    """Wait until ``requests`` has ``count`` polls (Playwright reports them while it waits)."""
    deadline = time.monotonic() + 10
    while len(requests) < count:
        assert time.monotonic() < deadline, f"only {len(requests)} polls in 10 s"
        page.wait_for_timeout(50)


def newest_run_id(page: Page) -> int:
    return int(page.locator("#task-runs article.run").first.get_attribute("data-run-id") or 0)


@pytest.mark.usefixtures("worker")
def test_start_watch_pause_resume_and_cancel_a_run(
    live: LiveServer, page: Page, console: list[str]
) -> None:
    seed_items(60)
    page.goto(f"{live.url}/tasks/CountItemsTask")
    page.get_by_label("sleep").fill("0.06")
    page.get_by_role("button", name="Run", exact=True).click()

    expect(page.get_by_role("status").filter(has_text="is enqueued")).to_be_visible()
    run_id = newest_run_id(page)
    bar = page.locator(f"#run-{run_id}-progress")
    expect(bar).to_be_visible(timeout=TIMEOUT)
    first = wait_until(lambda: progress_of(page, run_id), 20, "the bar to start")
    wait_until(lambda: progress_of(page, run_id) > first, 20, "the bar to move")
    expect(page.locator(f"#run-{run_id}-progress-text")).to_contain_text("out of 60 items")

    # Typing in the run form while the runs region refreshes keeps what was typed.
    page.get_by_label("fail_on").fill("typed while polling")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(f"#run-{run_id}")).to_have_attribute(
        "data-status", "paused", timeout=TIMEOUT
    )
    expect(page.get_by_text(f"Run #{run_id} will pause at its next item.")).to_be_visible()
    expect(page.locator("#announcer")).to_contain_text(f"Run #{run_id}: paused")
    paused_at = fresh_run(run_id).tick_count
    screenshot(page, "flow-paused")

    page.get_by_role("button", name="Resume").click()
    wait_until(lambda: progress_of(page, run_id) > paused_at, 20, "the bar to move again")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(f"#run-{run_id}")).to_have_attribute(
        "data-status", "cancelled", timeout=TIMEOUT
    )

    # Nothing is active any more: the region stops polling by itself.
    expect(page.locator("[data-poll]")).to_have_count(0)
    requests = poll_requests(page)
    page.wait_for_timeout(POLL_INTERVAL * 4000)
    assert requests == []
    assert page.get_by_label("fail_on").input_value() == "typed while polling"
    assert fresh_run(run_id).status == "cancelled"
    assert 0 < fresh_run(run_id).tick_count < 60

    # The run card's history tells every step, operator's and worker's, in order.
    actions = page.locator(f"#run-{run_id} .timeline li[data-action]")
    recorded = actions.evaluate_all("items => items.map(i => i.dataset.action)")
    assert recorded[:4] == ["started", "began", "pause_requested", "paused"]
    assert recorded[-2:] == ["cancel_requested", "cancelled"]
    assert "resumed" in recorded

    # The runs page finds it among every task's runs, by its status.
    page.get_by_role("link", name="All runs").click()
    page.get_by_label("Status").select_option("cancelled")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f"#runs-row-{run_id}")).to_contain_text("CountItemsTask")
    expect(page.locator("tbody tr")).to_have_count(1)
    assert console == []


def test_a_focused_control_is_never_replaced_by_a_refresh(
    live: LiveServer, page: Page, db: t.Any, console: list[str]
) -> None:
    run_id = add_run(db.engine, "ListTask", "paused")
    page.goto(f"{live.url}/tasks/ListTask")
    requests = poll_requests(page)
    wait_for_polls(page, requests, 2)

    button = page.locator(f"#run-{run_id}-cancel")
    button.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    handle = button.element_handle()
    assert handle is not None
    polled_before = len(requests)
    page.wait_for_timeout(POLL_INTERVAL * 4000)

    assert handle.evaluate("element => element.isConnected && element === document.activeElement")
    assert len(requests) == polled_before  # the refresh waited

    page.keyboard.press("Shift+Tab")  # focus leaves the button for the one before it
    page.locator("h1").click()
    wait_until(lambda: not handle.evaluate("element => element.isConnected"), 10, "a refresh")
    assert console == []


def test_the_live_refresh_switch_stops_polling_and_is_remembered(
    live: LiveServer, page: Page, db: t.Any, console: list[str]
) -> None:
    add_run(db.engine, "ListTask", "paused")
    page.goto(f"{live.url}/tasks/ListTask")
    switch = page.get_by_label("Live refresh")
    expect(switch).to_be_checked()

    switch.uncheck()
    page.reload()
    requests = poll_requests(page)
    page.wait_for_timeout(POLL_INTERVAL * 4000)

    expect(page.get_by_label("Live refresh")).not_to_be_checked()
    assert requests == []
    page.get_by_label("Live refresh").check()
    wait_for_polls(page, requests, 2)
    assert console == []


@pytest.mark.usefixtures("worker")
def test_an_error_is_shown_escaped_and_the_run_can_be_resumed(
    live: LiveServer, page: Page, console: list[str]
) -> None:
    page.goto(f"{live.url}/tasks/WebHostileErrorTask")
    expect(page.get_by_label("message")).to_have_value(HOSTILE)
    page.get_by_role("button", name="Run", exact=True).click()

    run_id = newest_run_id(page)
    card = page.locator(f"#run-{run_id}")
    expect(card).to_have_attribute("data-status", "errored", timeout=TIMEOUT)
    card.locator("summary").first.click() if not card.locator(".error-box").is_visible() else None

    expect(card.locator(".error-box")).to_contain_text("ValueError")
    expect(card.locator(".error-message")).to_have_text(HOSTILE)
    expect(card.get_by_role("button", name="Resume")).to_be_enabled()
    assert page.locator("script:not([src])").count() == 0
    assert console == []


def test_invalid_parameters_keep_what_was_typed(
    live: LiveServer, page: Page, console: list[str]
) -> None:
    page.goto(f"{live.url}/tasks/ParamsTask")
    page.get_by_label("limit").fill("12")
    page.get_by_label("ids").fill("1, zz")
    page.get_by_label("mode").select_option("fast")
    page.get_by_label("enabled").check()
    page.get_by_label("since").fill("2024-03-04")
    page.get_by_label("api_token").fill("do-not-echo")

    page.get_by_role("button", name="Run", exact=True).click()

    expect(page.get_by_role("alert").first).to_contain_text("The run was not started")
    expect(page.get_by_label("content")).to_have_value("")
    expect(page.get_by_label("content")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("limit")).to_have_value("12")
    expect(page.get_by_label("ids")).to_have_value("1, zz")
    expect(page.get_by_label("mode")).to_have_value("fast")
    expect(page.get_by_label("enabled")).to_be_checked()
    expect(page.get_by_label("since")).to_have_value("2024-03-04")
    expect(page.get_by_label("api_token")).to_have_value("")
    assert "do-not-echo" not in page.content()
    # The 422 answer is the one console line Chromium writes for a form that failed.
    assert [c for c in console if "422" not in c] == []


def test_actions_work_with_javascript_off(live: LiveServer, browser: Browser, db: t.Any) -> None:
    run_id = add_run(db.engine, "ListTask", "paused")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live.url}/tasks/ListTask")

    page.get_by_role("button", name="Cancel").click()

    expect(page.get_by_text(f"Run #{run_id} is cancelled.")).to_be_visible()
    expect(page.locator(f"#run-{run_id}")).to_have_attribute("data-status", "cancelled")
    assert page.url.endswith(f"/tasks/ListTask#run-{run_id}")
    assert fresh_run(run_id).status == "cancelled"
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_at_desktop_and_phone_widths(
    live: LiveServer, page: Page, db: t.Any, scheme: str, console: list[str]
) -> None:
    add_run(
        db.engine,
        "CountItemsTask",
        "running",
        tick_count=4000,
        tick_total=7000,
        time_running=200.0,
        started_at=fresh_now(),
        arguments={"sleep": 0.0, "fail_on": None},
        metadata={"operator": "ada@example.com"},
    )
    add_run(
        db.engine,
        "WebHostileErrorTask",
        "errored",
        tick_count=1,
        tick_total=2,
        time_running=0.4,
        started_at=fresh_now(),
        ended_at=fresh_now(),
        error_class="ValueError",
        error_message=HOSTILE,
        errored_element=2,
        backtrace=['File "web_tasks.py", line 51, in process', "    raise ValueError(...)"],
        arguments={"message": HOSTILE},
    )
    add_run(db.engine, "ListTask", "succeeded", tick_count=5, tick_total=5, ended_at=fresh_now())
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]

    for width, height in ((1280, 900), (360, 740)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live.url}/")
        screenshot(page, f"index-{width}-{scheme}")
        page.goto(f"{live.url}/tasks/WebHostileErrorTask")
        page.locator("details.source summary").click()
        screenshot(page, f"task-errored-{width}-{scheme}")
        page.goto(f"{live.url}/tasks/CountItemsTask")
        screenshot(page, f"task-running-{width}-{scheme}")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways at {width}px"

    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    assert console == []


def fresh_now() -> t.Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


@pytest.mark.usefixtures("worker")
def test_a_csv_file_uploaded_in_the_browser_is_imported(
    live: LiveServer, page: Page, console: list[str], tmp_path: t.Any, db: t.Any
) -> None:
    import sqlalchemy as sa

    from tests.testapp import Item

    upload = tmp_path / "items.csv"
    upload.write_text("id,title\n" + "".join(f"{n},row {n}\n" for n in range(1, 41)))
    page.goto(f"{live.url}/tasks/ImportItemsTask")
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Run", exact=True).click()

    run_id = newest_run_id(page)
    card = page.locator(f"#run-{run_id}")
    expect(card).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT)
    expect(card.get_by_role("link", name="Download CSV")).to_be_visible()
    db.session.remove()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Item)) == 40
    assert fresh_run(run_id).tick_count == 40
    assert console == []


@pytest.fixture
def short_lock_timeout(settings: dict[str, t.Any]) -> dict[str, t.Any]:
    # The test app waits 30 s for SQLite's lock; the held row is let go after 10.
    settings["lock_timeout"] = 1
    return settings


def test_a_busy_run_says_so_and_a_second_click_is_done(
    short_lock_timeout: dict[str, t.Any],
    live: LiveServer,
    page: Page,
    console: list[str],
    db: t.Any,
) -> None:
    run_id = add_run(db.engine, "ListTask", "running", job_id="job-of-a-frozen-horse")
    page.goto(f"{live.url}/tasks/ListTask")
    card = page.locator(f"#run-{run_id}")

    with row_held(db.engine, run_id):
        card.get_by_role("button", name="Pause").click()
        # The 409 is swapped in as any answer: the message says why, the card is as it was.
        expect(page.get_by_role("alert").first).to_contain_text(
            f"Run #{run_id} is busy", timeout=TIMEOUT
        )
        expect(card).to_have_attribute("data-status", "running")
    assert fresh_run(run_id).status == "running"

    card.get_by_role("button", name="Pause").click()
    expect(card).to_have_attribute("data-status", "pausing", timeout=TIMEOUT)
    # Chromium reports the 409 itself on the console; nothing else may be there.
    assert [c for c in console if "409" not in c] == []
