"""The status page at `/` in a real headless browser (Debian's chromium, driven by playwright).

The page renders from the daemon alone (no request leaves loopback), shows a provider's cut
after reported 429s, and updates without a reload. Needs `chromium` (`make deps` installs
it): a missing browser fails the test, it is never skipped. playwright drives the system
chromium; it never downloads one.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, sync_playwright

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from daemons import DaemonFactory, RunningDaemon

CONFIG = """
[providers.api]
rate = "10/second"
burst = 10

[providers.other]
rate = "600/minute"
burst = 5
"""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make deps` installs it (or `apt-get install chromium`)")
    return path


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    # Never the playwright browser download: the system chromium, a fresh profile.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 900},
        )
        try:
            outside: list[str] = []
            context.on(
                "request",
                lambda r: None if r.url.startswith("http://127.0.0.1:") else outside.append(r.url),
            )
            yield context.pages[0] if context.pages else context.new_page()
            assert not outside, f"the page fetched from elsewhere: {outside}"
        finally:
            context.close()


def row_text(page: Page, key: str, column: str) -> str:
    return page.locator(f'tr[data-key="{key}"] td.{column}').inner_text()


def cut_by_429s(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        for _ in range(3):
            permit = client.request("acquire", provider="api", timeout=0)["permit"]
            client.request("report", provider="api", status=429, permit=permit)


@pytest.mark.timeout(90)
def test_the_page_renders_shows_a_cut_and_updates(
    daemon_factory: DaemonFactory, page: Page, tmp_path: Path
) -> None:
    daemon = daemon_factory(CONFIG, http=True, env={"RATELIMITD_FEATURE_LEARNING": "1"})
    base = f"http://127.0.0.1:{daemon.http_port}"
    with urllib.request.urlopen(f"{base}/", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert b'<script src="static/status.js">' in response.read()

    page.goto(f"{base}/")
    page.wait_for_selector('tr[data-key="api/default"]', timeout=15_000)
    assert page.locator("#daemon").inner_text() == "ready"
    assert row_text(page, "api/default", "rate") == "10/s"
    assert row_text(page, "other/default", "rate") == "600/min"
    assert page.locator('tr[data-key="api/default"] canvas.chart').count() == 1

    cut_by_429s(daemon)
    # Without a reload: the next poll shows the cut, its reason and the 429s.
    rate = """document.querySelector('tr[data-key="api/default"] td.rate').textContent"""
    page.wait_for_function(f"() => {rate} === '9/s / 10/s'", timeout=15_000)
    assert row_text(page, "api/default", "n429") == "3"
    assert row_text(page, "api/default", "why").startswith("429s ")
    assert row_text(page, "api/default", "last429").endswith(" ago")
    assert page.locator('tr[data-key="api/default"]').get_attribute("data-state") == "cooling_down"
    assert "api/default: 429s" in page.locator("#events").inner_text()
    polls = int(page.locator("body").get_attribute("data-polls") or 0)
    page.wait_for_function(f"() => Number(document.body.dataset.polls) > {polls}", timeout=15_000)
    page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)

    # A daemon that stops answering is shown as such, not as a frozen page.
    daemon.stop()
    page.wait_for_function("() => document.querySelector('#daemon').dataset.state === 'down'", timeout=15_000)


def test_only_the_shipped_files_are_served(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG, http=True)
    base = f"http://127.0.0.1:{daemon.http_port}"
    for path, content_type in (("static/status.js", "text/javascript"), ("static/status.css", "text/css")):
        with urllib.request.urlopen(f"{base}/{path}", timeout=5) as response:
            assert response.headers["Content-Type"].startswith(content_type)
    for path in ("static/../status_page.py", "static/status.py", "static/"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/{path}", timeout=5)
        info.value.close()  # the error holds the response: close its socket
        assert info.value.code == 404
