"""Fixtures of the browser tests: a live server, a real worker, Debian's Chromium.

Each browser test runs once, on PostgreSQL when the suite has it and on
SQLite otherwise: what it checks is the page, not the database.
"""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import ConsoleMessage, Page

from tests.support.apps import FAST
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, POLL_INTERVAL, LiveServer
from tests.support.dashboard import SECRET_KEY
from tests.support.services import PG_ENV
from tests.support.workers import Worker, WorkerProcesses


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, t.Any]) -> dict[str, t.Any]:
    """pytest-playwright's launch options, pointed at Debian's Chromium."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (make test installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, t.Any]) -> dict[str, t.Any]:
    """Pages in English unless a test asks for another language (whatever the machine's
    locale): Chromium's Accept-Language would otherwise follow it."""
    return {**browser_context_args, "locale": "en-US"}


@pytest.fixture(scope="session")
def base_url() -> None:
    """No base URL: the tests build theirs from the live server.

    (pytest-playwright's own fallback fixture is a method, which pytest 9 warns about.)
    """
    return None


@pytest.fixture
def database_url(request: pytest.FixtureRequest, database_url: str) -> str:
    if os.environ.get(PG_ENV):
        return t.cast(str, request.getfixturevalue("postgresql_url"))
    return database_url


@pytest.fixture
def settings() -> dict[str, t.Any]:
    return {**FAST, "poll_interval": POLL_INTERVAL}


@pytest.fixture
def live(app: Flask) -> t.Iterator[LiveServer]:
    """The dashboard on a live server."""
    app.config["SECRET_KEY"] = SECRET_KEY
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def worker(live: LiveServer, workers: WorkerProcesses) -> Worker:
    """One ``flask mtasks worker`` for the tests whose runs must move (the others spare its CPU).

    It starts once the app has made its tables and the dashboard is served, as before.
    """
    return workers.start()


#: What htmx logs as errors when an action button aborts the runs region's poll in flight:
#: the buttons say ``hx-sync="#task-runs:replace"`` so that a stale poll never overwrites
#: what the action returns. Whether a poll is in flight at the click is a matter of timing.
DESIGNED_ABORT = ("htmx:sendAbort", "htmx:afterRequest")


@pytest.fixture
def console(page: Page) -> t.Iterator[list[str]]:
    """Every console error and uncaught exception of the page (a CSP violation is one)."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning"):
            return
        if message.text.startswith(DESIGNED_ABORT):
            return
        problems.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    yield problems


def pytest_terminal_summary(terminalreporter: t.Any) -> None:
    """The axe-core violation counts of every audited page and state (tests record them as a
    user property, which pytest-xdist carries back from its workers)."""
    from tests.browser.test_accessibility import AXE_PROPERTY

    rows: list[tuple[str, str, int]] = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name == AXE_PROPERTY:
                    for state, counts in value.items():
                        rows.extend((state, combination, n) for combination, n in counts.items())
    if not rows:
        return
    terminalreporter.section("axe-core violations per page and state")
    for state, combination, count in sorted(rows):
        terminalreporter.write_line(f"{count:4d}  {state} ({combination})")
