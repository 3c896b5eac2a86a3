"""The dashboard in a real headless Chromium (Debian's, driven by Playwright: no browser is downloaded), against
a real `hatchway serve`. Each page's screenshot is saved for a person to look at: `test-output/screenshots/` at
the repository's root, or `HATCHWAY_SCREENSHOTS` (printed at the end of the run)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from tests.acceptance.conftest import Server, free_port
from tests.conftest import ROOT, containers_of

SCREENSHOTS = Path(os.environ.get("HATCHWAY_SCREENSHOTS", ROOT / "test-output" / "screenshots"))
IMAGES = "hatchway-test/*,hatchway-profile/*"

# The page polls every 1.5 s and a job's container takes a moment to start on a loaded machine: each expectation
# waits (for the condition, not a fixed time) up to this long.
expect.set_options(timeout=30_000)


def chromium_path() -> str:
    """Debian's chromium (scripts/setup.sh --dev installs it). Missing, the browser tests fail: they never skip."""
    found = os.environ.get("HATCHWAY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no chromium on this machine: run scripts/setup.sh --dev (or apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module-scoped, not session: Playwright's sync API keeps an asyncio loop marked running in this thread while
    # it is started, and the async tests that run after these (pytest-asyncio) need it gone.
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own session storage); fails the test on a script error or a Content-Security-Policy
    refusal in it."""
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:  # a 401/403 is expected
            problems.append(f"console error: {message.text}")

    opened.on("console", console)
    yield opened
    context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Server]:
    """One worker for a module's tests, allowed the test and profile images."""
    worker_id = f"browser-{os.getpid()}-{free_port()}"
    running = Server(tmp_path_factory.mktemp("browser"), worker_id, max_concurrent_jobs=3, allowed_images=IMAGES)
    running.start()
    yield running
    assert running.stop() == 0
    running.client.close()
    assert containers_of(docker_client, worker_id) == []


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as SCREENSHOTS/name.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.glob("*.png")):
        terminalreporter.write_line(f"dashboard screenshots: {SCREENSHOTS}")
