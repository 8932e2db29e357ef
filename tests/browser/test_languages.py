"""The dashboard read in Japanese and in English, in Chromium, against a live server.

A browser that asks for Japanese (``Accept-Language: ja``) gets every page of the
dashboard in Japanese: the index, a task page with form errors, a run running,
paused, cancelled and errored (its backtrace open), the runs page and a run's
failures page; its buttons work. An English browser reads the same pages in English.

Only the words of the templates and of the page builders are checked here: the
sentences built by ``formatting`` (durations, progress, status lines) and the
views' messages are translated in their own modules.
"""

from __future__ import annotations

import re
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_accessibility import audit, hold_still, ledger
from tests.support.browser import LiveServer
from tests.support.dashboard import add_run
from tests.support.records import seed_items

pytestmark = pytest.mark.browser

TIMEOUT = 20_000  # ms, for expectations that wait on the worker

#: What a run's backtrace says (a list of lines, as the worker stores it).
BACKTRACE = ['File "web_tasks.py", line 51, in process', "    raise ValueError(...)"]


def now(seconds_ago: float = 0) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)


class Runs(t.NamedTuple):
    running: int
    errored: int
    with_failures: int


def seed(engine: t.Any) -> Runs:
    """Runs of every kind the pages show, written as a worker would have left them."""
    running = add_run(
        engine,
        "ListTask",
        "running",
        tick_count=2,
        tick_total=5,
        time_running=20.0,
        started_at=now(20),
        arguments={},
        metadata={"operator": "ada@example.com"},
    )
    errored = add_run(
        engine,
        "WebHostileErrorTask",
        "errored",
        tick_count=1,
        tick_total=2,
        started_at=now(3),
        ended_at=now(),
        error_class="ValueError",
        error_message="no such item",
        errored_element=2,
        backtrace=BACKTRACE,
        arguments={"message": "plain"},
    )
    with_failures = add_run(
        engine,
        "SkipBadItemsTask",
        "succeeded",
        tick_count=12,
        tick_total=12,
        error_policy="skip",
        started_at=now(5),
        ended_at=now(),
        started_by="ada@example.com",
    )
    ledger(engine, with_failures, 3)
    return Runs(running, errored, with_failures)


def visible_text(page: Page) -> str:
    """What the page shows (some headings in capitals: the style sheet draws them so)."""
    return page.locator("body").inner_text()


def reads(page: Page, present: t.Iterable[str], absent: t.Iterable[str] = ()) -> None:
    """The page's visible text holds every one of ``present`` (case aside) and none of
    ``absent`` (as written, or in capitals: the words of a task's docstring may hold
    a label in lower case)."""
    text = visible_text(page)
    missing = [words for words in present if words.casefold() not in text.casefold()]
    assert not missing, f"{page.url} lacks {missing}:\n{text}"
    found = [words for words in absent if words in text or words.upper() in text]
    assert not found, f"{page.url} still shows {found}:\n{text}"


def newest_run_id(page: Page) -> int:
    return int(page.locator("#task-runs article.run").first.get_attribute("data-run-id") or 0)


# -- what each page says, in each language -------------------------------------------------

#: (page, Japanese words it shows, the English words they replace)
INDEX = (
    ["タスク", "タスク名で絞り込む", "絞り込む", "実行中の実行", "新しいタスク", "完了したタスク"],
    ["Filter by task name", "Active runs", "New tasks", "Completed tasks", "Live refresh"],
)
TASK_FORM = (
    [
        "新しい実行",
        "失敗時",
        "エラー方針",
        "最大失敗件数",
        "最大失敗率 (%)",
        "実行のタイミング",
        "開始時刻",
        "ドライラン",
        "プレビュー",
        "このままでは実行を開始できません。次の項目を修正してください。",
        "実行中の実行はありません。",
    ],
    [
        "New run",
        "On failure",
        "Error policy",
        "Max failures",
        "Start at",
        "Dry run",
        "Preview",
        "A run would not start",
        "No active run.",
        "Previous runs",
        "Source code",
    ],
)
ERRORED = (
    [
        "バックトレース",
        "処理中の件:",
        "引数",
        "開始",
        "終了",
        "実行時間",
        "この引数でもう一度実行",
        "再開",
    ],
    [
        "Backtrace",
        "While processing",
        "Arguments",
        "Time running",
        "Run again with these",
        "Resume",
    ],
)
RUNS = (
    [
        "すべての実行",
        "すべてのタスク",
        "すべての状態",
        "開始者",
        "進捗",
        "作成",
        "実行中",
        "エラー",
        "成功",
    ],
    ["Any task", "Any status", "Started by", "Progress", "Created"],
)
FAILURES = (
    [
        "の失敗した件",
        "失敗した件",
        "未解決",
        "エラークラス別",
        "エラークラス",
        "状態:",
        "すべて",
        "失敗した件をダウンロード (CSV)",
        "試行回数",
        "キー",
        "失敗日時",
    ],
    ["Failed items", "Unresolved", "By error class", "Error class", "Download failures", "Attempt"],
)


@pytest.mark.usefixtures("worker")
def test_the_dashboard_reads_in_japanese(
    live: LiveServer, browser: Browser, db: t.Any, record_property: t.Any
) -> None:
    runs = seed(db.engine)
    seed_items(60)
    context = browser.new_context(locale="ja-JP")
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))

        # The index, and its audit.
        page.goto(f"{live.url}/")
        expect(page.locator("html")).to_have_attribute("lang", "ja")
        hold_still(page)
        reads(page, *INDEX)
        audit(page, "index, Japanese", record_property)
        page.locator("#live-refresh").check()  # live refresh on again, for the run below

        # A task page with form errors (and its audit).
        page.goto(f"{live.url}/tasks/ParamsTask")
        page.get_by_label("ids").fill("1, zz")
        page.get_by_role("button", name="実行", exact=True).click()
        expect(page.locator("#preview-invalid")).to_be_visible()
        expect(page.locator("html")).to_have_attribute("lang", "ja")
        reads(page, *TASK_FORM)
        expect(page.locator("#run-form .required").first).to_have_text("(必須)")
        audit(page, "task page, form errors, Japanese", record_property)

        # A run started, paused, resumed and cancelled from the Japanese page.
        page.goto(f"{live.url}/tasks/CountItemsTask")
        page.get_by_label("sleep").fill("0.06")
        page.get_by_role("button", name="実行", exact=True).click()
        run_id = newest_run_id(page)
        card = page.locator(f"#run-{run_id}")
        expect(card).to_have_attribute("data-status", "running", timeout=TIMEOUT)
        expect(card.locator(".run-title")).to_have_text(f"実行 #{run_id}")
        expect(card.locator(".tag-running")).to_have_text("実行中")
        for label in ("速度上限 (件/秒)", "バッチサイズ", "ティッカー間隔 (秒)"):
            expect(card.get_by_label(label)).to_be_visible()
        expect(card.get_by_role("button", name="速度を設定")).to_be_visible()
        expect(card.locator("progress").first).to_have_attribute(
            "aria-label", f"実行 #{run_id} の進捗"
        )
        card.get_by_role("button", name="一時停止").click()
        expect(card).to_have_attribute("data-status", "paused", timeout=TIMEOUT)
        expect(card.locator(".tag-paused")).to_have_text("一時停止")
        expect(page.locator("#announcer")).to_contain_text(f"実行 #{run_id}:一時停止")
        expect(card.get_by_role("button", name="再開")).to_be_visible()
        expect(card.get_by_role("button", name="キャンセル")).to_be_visible()
        assert "Resume" not in card.inner_text()
        card.get_by_role("button", name="再開").click()
        expect(card).to_have_attribute("data-status", "running", timeout=TIMEOUT)
        card.get_by_role("button", name="キャンセル").click()
        expect(card).to_have_attribute("data-status", "cancelled", timeout=TIMEOUT)
        expect(card.locator(".tag-cancelled")).to_have_text("キャンセル済み")
        reads(page, ["過去の実行", "キャンセル済み", "操作履歴"], ["Previous runs", "History"])

        # An errored run, its backtrace open.
        page.goto(f"{live.url}/tasks/WebHostileErrorTask")
        errored = page.locator(f"#run-{runs.errored}")
        errored.locator(".backtrace summary").click()
        expect(errored.locator(".backtrace pre")).to_be_visible()
        expect(errored.locator(".error-box")).to_have_attribute(
            "aria-label", f"実行 #{runs.errored} のエラー"
        )
        expect(errored.locator(".tag-errored")).to_have_text("エラー")
        reads(page, *ERRORED)

        # The runs page, filtered by a status named in Japanese.
        page.get_by_role("link", name="すべての実行").click()
        expect(page.locator("html")).to_have_attribute("lang", "ja")
        reads(page, *RUNS)
        page.get_by_label("状態").select_option(label="キャンセル済み")
        page.get_by_role("button", name="絞り込む").click()
        expect(page.locator(f"#runs-row-{run_id}")).to_contain_text("CountItemsTask")
        expect(page.locator("tbody tr")).to_have_count(1)

        # A run's failures page.
        page.goto(f"{live.url}/runs/{runs.with_failures}/failures")
        page.locator("article.failure .backtrace summary").first.click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            f"実行 #{runs.with_failures} の失敗した件"
        )
        reads(page, *FAILURES)
        page.get_by_role("navigation", name="状態で絞り込む").get_by_role(
            "link", name="未解決"
        ).click()
        expect(page.locator("#failures-heading")).to_have_text("失敗(未解決)")
        assert problems == []
    finally:
        context.close()


def test_the_dashboard_reads_in_english(live: LiveServer, page: Page, db: t.Any) -> None:
    runs = seed(db.engine)
    add_run(db.engine, "CountItemsTask", "paused", tick_count=2, tick_total=5, started_at=now(9))
    add_run(db.engine, "ListTask", "cancelled", tick_count=1, tick_total=5, ended_at=now())
    japanese = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")

    def english(present: t.Iterable[str], absent: t.Iterable[str] = ()) -> None:
        expect(page.locator("html")).to_have_attribute("lang", "en")
        reads(page, present, absent)
        found = japanese.findall(visible_text(page))
        assert not found, f"{page.url} shows Japanese: {found}"

    page.goto(f"{live.url}/")
    hold_still(page)
    english(INDEX[1][:-1], INDEX[0][1:])

    page.goto(f"{live.url}/tasks/ParamsTask")
    page.get_by_label("ids").fill("1, zz")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#preview-invalid")).to_be_visible()
    english(["New run", "On failure", "Error policy", "Max failures", "Start at", "Dry run"])

    page.goto(f"{live.url}/tasks/CountItemsTask")
    hold_still(page)
    english(["Active runs", "Resume", "Cancel", "Paused"])

    page.goto(f"{live.url}/tasks/WebHostileErrorTask")
    errored = page.locator(f"#run-{runs.errored}")
    errored.locator(".backtrace summary").click()
    expect(errored.locator(".backtrace pre")).to_be_visible()
    expect(errored.locator(".error-box")).to_have_attribute(
        "aria-label", f"Error of run #{runs.errored}"
    )
    english(["Backtrace", "While processing:", "Arguments", "Run again with these parameters"])

    page.goto(f"{live.url}/runs")
    english(["All runs", *RUNS[1]])

    page.goto(f"{live.url}/runs/{runs.with_failures}/failures")
    page.locator("article.failure .backtrace summary").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Failed items of run #{runs.with_failures}"
    )
    english(FAILURES[1])
