"""The worker-agent system's dashboard, in headless Chromium, reading a real `hatchway serve` on port 9000 as it
reads that system's workers: its double (tests/fakes/agent_dashboard) is served from another origin,
127.0.0.1:10000, and scans 127.0.0.1-3 from the browser. A worker whose `cors_origins` names the page's origin is
listed with its fields and its load kept current; one that does not is not listed, and the browser says why."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.acceptance.conftest import Server, free_port
from tests.browser.conftest import IMAGES, screenshot
from tests.conftest import BUSYBOX, containers_of
from tests.fakes.agent_dashboard import PORT, agent_dashboard

pytestmark = pytest.mark.docker

WORKER_PORT = 9000  # the page reads http://<ip>:9000, whatever the worker
ORIGIN = f"http://127.0.0.1:{PORT}"


@contextmanager
def worker(tmp_path: Path, docker_client: docker.DockerClient, **settings: Any) -> Iterator[Server]:
    worker_id = f"agent-dash-{os.getpid()}-{free_port()}"
    running = Server(
        tmp_path / "worker", worker_id, port=WORKER_PORT, allowed_images=IMAGES, max_concurrent_jobs=3, **settings
    )
    running.start()
    try:
        yield running
    finally:
        assert running.stop() == 0
        running.client.close()
        assert containers_of(docker_client, worker_id) == []


SETTINGS = {"ipPrefix": "127.0.0.", "ipStart": 1, "ipEnd": 3, "probeTimeoutMs": 1000, "pollIntervalMs": 500}
"""As the page keeps them: it starts scanning as it loads, so a first visit would scan its default range,
192.168.1.1-254, a private range no test may reach; the tests talk to 127.0.0.1 only."""


def scan(page: Page, url: str) -> None:
    """Open the page as someone who used it before (its settings kept in the browser), then set the range to
    127.0.0.1-3 in the form and press Start, as a person does."""
    page.add_init_script(f"localStorage.setItem('pcdash.settings', {json.dumps(json.dumps(SETTINGS))})")
    page.goto(url)
    for field, value in {
        "#ipPrefix": "127.0.0.",
        "#ipStart": "1",
        "#ipEnd": "3",
        "#probeTimeout": "1000",
        "#discoveryInterval": "10000",
        "#pollInterval": "500",
    }.items():
        page.fill(field, value)
    page.click("#startBtn")
    expect(page.locator("#uiStatus")).to_have_text("Running (scanning 127.0.0.1..3)")


def test_a_worker_that_allows_the_dashboard_s_origin_is_listed_with_its_fields(
    tmp_path: Path, docker_client: docker.DockerClient, page: Page
) -> None:
    labels = {"rack": "b2", "site": "lab"}
    with (
        worker(tmp_path, docker_client, cors_origins=ORIGIN, worker_labels=json.dumps(labels)) as server,
        agent_dashboard() as url,
    ):
        info = server.client.get("/info").json()
        scan(page, url)
        card = page.locator("#worker-127-0-0-1")
        expect(card.locator(".worker-name")).to_have_text(server.worker_id)
        shown = {
            "worker-hostname": socket.gethostname(),
            "worker-os": info["os"],
            "worker-arch": info["os_architecture"],
            "worker-protocol": "1",
            "worker-cpu-model": info["cpu_model"] or "N/A",
            "worker-cpu": f"{info['cpu_cores'] or 'N/A'} cores / {info['cpu_threads']} threads",
            "worker-ram": f"{info['memory_mb']} MB",
            "worker-status": "ok",
            "worker-max": "3",
            "worker-health-proto": "N/A",  # the page never reads it
            "worker-reserved": f"0 / {info['cpu_threads']}",
            "worker-jobs-disk": "N/A",
            "worker-docker-disk": "N/A",
            "worker-labels": "rack=b2, site=lab",
        }
        for name, text in shown.items():
            expect(card.locator(f".{name}")).to_have_text(text)
        expect(card.locator(".worker-mem")).to_have_text(re.compile(r"^\d+ MB used / \d+ MB total \(avail \d+ MB\)$"))
        expect(card.locator(".worker-load")).to_have_text(re.compile(r"^\d+\.\d\d / \d+\.\d\d / \d+\.\d\d$"))
        expect(card.locator(".worker-uptime")).to_have_text(re.compile(r"^(\d+[dhm] )*\d+[dhms]$"))
        expect(card.locator(".worker-temp")).to_have_text(re.compile(r"^(N/A|[\d.]+ °C)$"))

        # Its polls keep the card current: a job running, then none.
        job = server.post_job(image=BUSYBOX, command=["sleep", "60"]).json()
        expect(card.locator(".worker-running")).to_have_text("1")
        server.client.delete(f"/jobs/{job['id']}", params={"grace_s": 0})
        expect(card.locator(".worker-running")).to_have_text("0")
        expect(page.locator(".worker-card")).to_have_count(1)  # nothing answers at 127.0.0.2 or .3
        screenshot(page, "agent-dashboard")


def test_a_worker_that_does_not_allow_the_origin_is_not_listed(
    tmp_path: Path, docker_client: docker.DockerClient, browser: Browser
) -> None:
    """No `cors_origins`: the worker answers, but the browser keeps the page from reading it."""
    context = browser.new_context()
    page = context.new_page()
    refusals: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if "blocked by CORS policy" in message.text and f":{WORKER_PORT}/" in message.text:
            refusals.append(message.text)

    page.on("console", console)
    try:
        with worker(tmp_path, docker_client) as server, agent_dashboard() as url:
            assert server.client.get("/info", headers={"Origin": ORIGIN}).status_code == 200
            with page.expect_console_message(lambda message: "blocked by CORS policy" in message.text):
                scan(page, url)
            # The probe of 127.0.0.1 is over (a refusal rejects it), and it listed nothing.
            expect(page.locator(".worker-card")).to_have_count(0)
            assert any(f"127.0.0.1:{WORKER_PORT}/info" in text or "/health" in text for text in refusals), refusals
    finally:
        context.close()
