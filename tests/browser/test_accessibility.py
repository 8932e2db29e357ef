"""Accessibility of the dashboard, measured: axe-core audits every page and state in light
and dark colour schemes at a phone's and a desktop's width, and every audited state must
have no violation. The counts are printed in the terminal summary of the run.

axe-core comes inside axe-playwright-python (its ``axe.min.js``): nothing is downloaded.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from flask_maintenance_tasks.models import failures_table, runs_table
from tests.support.browser import LiveServer
from tests.support.dashboard import add_run
from tests.testapp.maintenance.web_tasks import HOSTILE

pytestmark = pytest.mark.browser

#: (colour scheme, viewport width) combinations every state is audited in.
COMBINATIONS = [(scheme, width) for scheme in ("light", "dark") for width in (360, 1280)]
#: The user property a test records its counts in, read by the terminal summary.
AXE_PROPERTY = "axe_violations"

_AXE = Axe()


@pytest.fixture
def settings(settings: dict[str, t.Any]) -> dict[str, t.Any]:
    # small pages, so that the "Older runs" pages exist with a handful of runs
    return {**settings, "runs_per_page": 3}


def now(seconds_ago: float = 0) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)


def describe(violations: list[dict[str, t.Any]]) -> str:
    lines = []
    for violation in violations:
        for node in violation["nodes"]:
            lines.append(f"  {violation['id']}: {node['target']} - {violation['help']}")
    return "\n".join(lines)


def audit(page: Page, state: str, record_property: t.Callable[[str, t.Any], None]) -> None:
    """Audit the page as it is in every scheme and width, re-using the loaded page.

    Records the violation count of each combination for the terminal summary, and fails
    with every violation's rule, target and help when there is any.
    """
    # axe skips what is hidden: every collapsed box (run cards, backtraces, the source,
    # samples) is opened, so that what they hold is audited too
    page.evaluate("() => document.querySelectorAll('details').forEach(box => { box.open = true; })")
    counts: dict[str, int] = {}
    found: list[str] = []
    for scheme, width in COMBINATIONS:
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        page.set_viewport_size({"width": width, "height": 800})
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            page.evaluate(_AXE.axe_script)
        results = page.evaluate(
            "() => axe.run(document, {resultTypes: ['violations']})"
            ".then(r => r.violations.map(v => ({id: v.id, help: v.help,"
            " nodes: v.nodes.map(n => ({target: n.target}))})))"
        )
        combination = f"{scheme} {width}px"
        counts[combination] = sum(len(v["nodes"]) for v in results)
        if results:
            found.append(f"{state}, {combination}:\n{describe(results)}")
    record_property(AXE_PROPERTY, {state: counts})
    assert not found, "axe-core found violations:\n" + "\n".join(found)


def hold_still(page: Page) -> None:
    """Turn live refresh off (with the keyboard-free switch), so that no region is swapped
    while axe reads it: a swap in the middle of an audit leaves it reading detached nodes."""
    switch = page.locator("#live-refresh")
    if switch.count() and switch.is_checked():
        switch.uncheck()


def ledger(engine: sa.Engine, run_id: int, count: int) -> None:
    rows = [
        {
            "run_id": run_id,
            "item_key": n,
            "item": {"id": n, "title": "bad"},
            "error_class": "BadItem" if n % 2 else "OtherError",
            "message": f"item {n} is bad <b>{n}</b>",
            "backtrace": ['File "failing.py", line 40, in process', "    raise BadItem(item)"],
            "attempt": 1,
            "status": "unresolved",
            "created_at": now(),
        }
        for n in range(1, count + 1)
    ]
    with engine.begin() as connection:
        connection.execute(failures_table.insert(), rows)
        connection.execute(
            runs_table.update().where(runs_table.c.id == run_id).values(failure_count=count)
        )


def test_the_index_has_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any
) -> None:
    add_run(
        db.engine,
        "CountItemsTask",
        "running",
        tick_count=40,
        tick_total=70,
        time_running=20.0,
        started_at=now(20),
    )
    add_run(db.engine, "ListTask", "succeeded", tick_count=5, tick_total=5, ended_at=now())
    add_run(db.engine, "WebHostileErrorTask", "errored", error_class="ValueError", ended_at=now())
    add_run(db.engine, "GoneTask", "succeeded", ended_at=now())
    page.goto(f"{live.url}/")
    hold_still(page)
    audit(page, "index", record_property)


def test_a_task_page_with_form_errors_has_no_violation(
    live: LiveServer, page: Page, record_property: t.Any
) -> None:
    page.goto(f"{live.url}/tasks/ParamsTask")
    page.get_by_label("ids").fill("1, zz")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("alert").first).to_contain_text("The run was not started")
    expect(page.locator("#preview-invalid")).to_be_visible()
    audit(page, "task page, form errors", record_property)


#: A run's pace with every kind of stretch: steady, throttled, after an interruption.
PACE = {
    "v": 1,
    "t0": 1_764_590_400,
    "p": [[1, 1, 20, 0], [2, 1, 18, 1], [3, 1, 19, 1], [9, 1, 21, 2], [10, 1, 20, 0]],
}


def test_a_task_page_with_a_running_run_has_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any
) -> None:
    add_run(
        db.engine,
        "CountItemsTask",
        "running",
        tick_count=400,
        tick_total=700,
        time_running=20.0,
        started_at=now(20),
        arguments={"sleep": 0.0, "fail_on": None},
        metadata={"operator": "ada@example.com"},
        pace=PACE,
    )
    page.goto(f"{live.url}/tasks/CountItemsTask")
    hold_still(page)
    expect(page.locator("#preview-count")).to_be_visible()
    audit(page, "task page, running run", record_property)


#: A description with every block the task page shows, and a literal line too long for 360 px.
DESCRIPTION = """Walks *five* letters with ``process``: see `the docs <https://example.com/>`_.

    Run it with::

        flask mtasks run ListTask --arg this-line-is-long-enough-to-scroll-sideways-on-a-phone=1

    - one item
    - another **item**
    """


def test_a_task_page_with_a_paused_run_has_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any, monkeypatch: t.Any
) -> None:
    from tests.testapp.maintenance.kinds import ListTask

    monkeypatch.setattr(ListTask, "__doc__", DESCRIPTION)
    add_run(db.engine, "ListTask", "paused", tick_count=2, tick_total=3, started_at=now(5))
    page.goto(f"{live.url}/tasks/ListTask")
    hold_still(page)
    expect(page.locator(".task-doc pre")).to_be_visible()
    audit(page, "task page, paused run, described task", record_property)


def test_an_errored_run_with_its_backtrace_open_has_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any
) -> None:
    run_id = add_run(
        db.engine,
        "WebHostileErrorTask",
        "errored",
        tick_count=1,
        tick_total=2,
        started_at=now(3),
        ended_at=now(),
        error_class="ValueError",
        error_message=HOSTILE,
        errored_element=2,
        backtrace=['File "web_tasks.py", line 51, in process', "    raise ValueError(...)"],
        arguments={"message": HOSTILE},
    )
    page.goto(f"{live.url}/tasks/WebHostileErrorTask")
    card = page.locator(f"#run-{run_id}")
    card.locator(".backtrace summary").click()
    expect(card.locator(".backtrace pre")).to_be_visible()
    page.locator("details.source summary").click()
    audit(page, "task page, errored run, backtrace open", record_property)


def test_the_failures_page_has_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any
) -> None:
    run_id = add_run(
        db.engine,
        "SkipBadItemsTask",
        "succeeded",
        tick_count=12,
        tick_total=12,
        error_policy="skip",
        started_at=now(5),
        ended_at=now(),
    )
    ledger(db.engine, run_id, 5)
    page.goto(f"{live.url}/runs/{run_id}/failures")
    page.locator("article.failure .backtrace summary").first.click()
    audit(page, "failures page", record_property)


def test_the_runs_pages_have_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any
) -> None:
    for n in range(5):
        add_run(db.engine, "ListTask", "succeeded", tick_count=n, tick_total=5, ended_at=now())
    add_run(db.engine, "ListTask", "cancelled", dry_run=True, started_by="ada@example.com")
    page.goto(f"{live.url}/runs")
    audit(page, "all runs", record_property)
    page.get_by_role("link", name="Older runs").click()
    expect(page.get_by_role("link", name="Newest runs")).to_be_visible()
    audit(page, "all runs, older page", record_property)
    page.goto(f"{live.url}/tasks/ListTask")
    page.get_by_role("link", name="Older runs").click()
    expect(page.get_by_role("link", name="Newest runs")).to_be_visible()
    audit(page, "task page, older runs", record_property)


def test_a_dry_run_card_has_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any
) -> None:
    changes = {
        "tables": {"items": {"inserted": 0, "updated": 3, "deleted": 1, "columns": ["counter"]}},
        "sample": [
            {"table": "items", "key": n, "column": "counter", "before": 0, "after": 1}
            for n in range(3)
        ],
    }
    run_id = add_run(
        db.engine,
        "DryRunMixedTask",
        "succeeded",
        dry_run=True,
        changes=changes,
        tick_count=4,
        tick_total=4,
        started_at=now(2),
        ended_at=now(),
    )
    page.goto(f"{live.url}/tasks/DryRunMixedTask")
    page.locator(f"#run-{run_id}-changes summary").click()
    audit(page, "task page, dry run card", record_property)


def test_a_partitioned_run_card_has_no_violation(
    live: LiveServer, page: Page, db: t.Any, record_property: t.Any
) -> None:
    parent = add_run(
        db.engine,
        "PartitionedCountTask",
        "running",
        partitions=3,
        bounds=[{}, {}, {}],
        tick_count=14,
        tick_total=36,
        started_at=now(10),
    )
    for index, status in enumerate(["succeeded", "running", "errored"]):
        add_run(
            db.engine,
            "PartitionedCountTask",
            status,
            parent_id=parent,
            partition=index,
            partitions=1,
            bounds={"of": 3},
            tick_count=(12, 2, 0)[index],
            tick_total=12,
            started_at=now(10),
            pace=PACE,
        )
    page.goto(f"{live.url}/tasks/PartitionedCountTask")
    hold_still(page)
    expect(page.locator(f"#run-{parent} .partition-list > li")).to_have_count(3)
    audit(page, "task page, partitioned run card", record_property)


def test_a_task_page_with_a_message_after_an_action_has_no_violation(
    live: LiveServer, page: Page, record_property: t.Any
) -> None:
    page.goto(f"{live.url}/tasks/ListTask")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="is enqueued")).to_be_visible()
    hold_still(page)
    audit(page, "task page, message after starting a run", record_property)


# -- the keyboard alone ------------------------------------------------------------------

#: How many Tab presses may separate two controls before the test gives up.
MOST_TABS = 80

FOCUS_INDICATOR = """() => {
    const element = document.activeElement;
    if (!element || element === document.body) return null;
    const style = getComputedStyle(element);
    const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
    const shadow = style.boxShadow !== "none";
    return {outline, shadow, tag: element.tagName, id: element.id,
            text: (element.textContent || "").trim().slice(0, 40)};
}"""


def tab_to(page: Page, selector: str, *, backwards: bool = False) -> None:
    """Press Tab (or Shift+Tab) until ``selector`` has the focus, asserting at every stop
    that the focused control shows a focus indicator (an outline or a box shadow)."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(MOST_TABS):
        page.keyboard.press(key)
        focused = page.evaluate(FOCUS_INDICATOR)
        if focused is None:
            continue
        assert focused["outline"] or focused["shadow"], f"no visible focus on {focused}"
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} not reached in {MOST_TABS} presses of {key}")


def watch_announcer(page: Page) -> None:
    page.evaluate(
        """() => {
        window.announcerChanges = [];
        const announcer = document.getElementById("announcer");
        new MutationObserver(() => window.announcerChanges.push(announcer.textContent))
            .observe(announcer, {childList: true, characterData: true, subtree: true});
    }"""
    )


def announcer_changes(page: Page) -> list[str]:
    return t.cast(list[str], page.evaluate("() => window.announcerChanges"))


def wait_for_polls(page: Page, polls: t.Callable[[], int], count: int) -> None:
    """Wait for ``count`` polls; Playwright reports requests only while it waits itself."""
    for _ in range(200):
        if polls() >= count:
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"only {polls()} polls in 10 s")


def poll_count(page: Page) -> t.Callable[[], int]:
    seen: list[str] = []
    page.on(
        "request",
        lambda r: seen.append(r.url) if r.headers.get("hx-request") and r.method == "GET" else None,
    )
    return lambda: len(seen)


@pytest.mark.usefixtures("worker")
def test_a_run_is_started_paused_resumed_and_cancelled_with_the_keyboard_alone(
    live: LiveServer, page: Page, db: t.Any, console: list[str]
) -> None:
    from tests.support.records import seed_items

    seed_items(40)
    errored = add_run(
        db.engine,
        "CountItemsTask",
        "errored",
        started_at=now(9),
        ended_at=now(8),
        error_class="ValueError",
        error_message="item 3 is bad",
        backtrace=['File "counting.py", line 29, in process', "    raise ValueError(item)"],
    )
    page.goto(f"{live.url}/tasks/CountItemsTask")

    # Start: the "sleep" field, typed in, then the Run button.
    tab_to(page, "#param-sleep")
    page.keyboard.press("Control+A")
    page.keyboard.type("0.25")
    tab_to(page, "#run-submit")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="is enqueued")).to_be_visible()
    run_id = int(page.locator("#task-runs article.run").first.get_attribute("data-run-id") or 0)
    card = page.locator(f"#run-{run_id}")
    expect(card).to_have_attribute("data-status", "running", timeout=20_000)

    # Pause: announced once through the polite live region.
    tab_to(page, f"#run-{run_id}-pause")
    page.keyboard.press("Enter")
    # The pressed button is gone with the answer: the focus stays on the card, and leaves
    # the runs region (a focused control there holds its refresh) for the source box.
    expect(card.locator("summary").first).to_be_focused()
    tab_to(page, "details.source > summary", backwards=True)
    expect(card).to_have_attribute("data-status", "paused", timeout=20_000)
    announcer = page.locator("#announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    expect(announcer).to_contain_text(f"Run #{run_id}: paused")

    # Nothing changes while it is paused: the polls go on, the live region stays quiet.
    polls = poll_count(page)
    watch_announcer(page)
    wait_for_polls(page, polls, 4)
    assert announcer_changes(page) == []
    expect(announcer).to_contain_text(f"Run #{run_id}: paused")

    # Resume, then cancel.
    tab_to(page, f"#run-{run_id}-resume")
    page.keyboard.press("Enter")
    expect(card.locator("summary").first).to_be_focused()
    tab_to(page, "details.source > summary", backwards=True)
    expect(card).to_have_attribute("data-status", "running", timeout=20_000)
    expect(announcer).to_contain_text(f"Run #{run_id}: running")
    tab_to(page, f"#run-{run_id}-cancel")
    page.keyboard.press("Enter")
    expect(card.locator("summary").first).to_be_focused()
    tab_to(page, "details.source > summary", backwards=True)
    expect(card).to_have_attribute("data-status", "cancelled", timeout=20_000)
    expect(announcer).to_contain_text(f"Run #{run_id}: cancelled")

    # The errored run's backtrace opens from its summary, with Space.
    backtrace = page.locator(f"#run-{errored} .backtrace")
    if not page.locator(f"#run-{errored}-details").evaluate("box => box.open"):
        tab_to(page, f"#run-{errored}-details > summary")
        page.keyboard.press("Enter")
    tab_to(page, f"#run-{errored} .backtrace > summary")
    page.keyboard.press("Space")
    expect(backtrace.locator("pre")).to_be_visible()
    expect(backtrace.locator("pre")).to_contain_text("raise ValueError(item)")
    tab_to(page, f"#run-{errored} .backtrace > pre")  # it scrolls: the keyboard reaches it
    assert fresh_status(run_id) == "cancelled"
    assert console == []


def fresh_status(run_id: int) -> str:
    from tests.support.records import fresh_run

    return str(fresh_run(run_id).status)
