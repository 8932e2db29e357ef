"""What the browser tests share: Debian's Chromium, the live server and screenshots."""

from __future__ import annotations

import threading
from pathlib import Path

from flask import Flask
from playwright.sync_api import Page
from werkzeug.serving import make_server

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
#: The dashboard's poll interval in the browser tests, in seconds.
POLL_INTERVAL = 0.3


class LiveServer:
    """The test app served over HTTP by a threaded werkzeug server on a free port."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/maintenance_tasks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (never in git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
