"""The dashboard as a person uses it, in headless Chromium against a real worker: the live job table, a job's
output followed live, the kill button, a grading's verdict table, the system panel and its charts, and signing
in with a token. Every wait is Playwright's own (an expectation that retries until it holds)."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.acceptance.conftest import Server, free_port
from tests.browser.conftest import screenshot
from tests.conftest import BUSYBOX, containers_of

pytestmark = pytest.mark.docker

PY_SUM = "a, b = map(int, input().split())\nprint(a + b)\n"


def run_label() -> dict[str, str]:
    """A label no other test's jobs have, so a filtered table shows this test's jobs only."""
    return {"run": uuid.uuid4().hex[:10]}


def row(page: Page, job_id: str) -> Locator:
    return page.locator(f'#jobs tr[data-job-id="{job_id}"]')


def test_the_table_shows_a_submitted_job_and_its_state_changes_live(server: Server, page: Page) -> None:
    labels = run_label()
    page.goto(f"{server.url}/#/?label=run:{labels['run']}")
    expect(page.locator("#jobs tbody td.empty")).to_have_text("No jobs match.")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    job = server.post_job(image=BUSYBOX, command="sleep 4; echo done", labels={**labels, "team": "<b>web</b>"}).json()
    shown = row(page, job["id"])
    expect(shown.locator("[data-state]")).to_have_text("running")
    expect(shown.locator("[data-state]")).to_have_text("succeeded")
    expect(shown.locator(".chip", has_text="team=<b>web</b>")).to_be_visible()  # shown as text, not markup
    assert page.locator("#jobs b").count() == 0
    assert page.evaluate("window.loadedOnce") is True, "the page reloaded"

    failing = server.post_job(wait=True, image=BUSYBOX, command="exit 3", labels=labels).json()
    expect(row(page, failing["id"]).locator("[data-state]")).to_have_text("failed")
    ids = page.locator("#jobs tr[data-job-id]").evaluate_all("rows => rows.map(row => row.dataset.jobId)")
    assert ids == [failing["id"], job["id"]], "newest first"
    screenshot(page, "jobs")

    page.select_option("#filter-state", "failed")
    expect(page.locator("#jobs tr[data-job-id]")).to_have_count(1)
    expect(row(page, failing["id"])).to_be_visible()
    page.select_option("#filter-kind", "grade")
    expect(page.locator("#jobs tbody td.empty")).to_be_visible()
    assert "state=failed" in page.url and "kind=grade" in page.url


def test_the_job_page_follows_the_output_live(server: Server, page: Page) -> None:
    # It prints a line every 0.3 s and never ends on its own: whatever the page shows arrived while it ran.
    script = (
        'i=0; while true; do i=$((i+1)); echo "line $i"; [ $((i % 4)) = 0 ] && echo "warning $i" >&2; sleep 0.3; done'
    )
    job = server.post_job(image=BUSYBOX, command=script, labels=run_label()).json()
    try:
        page.goto(f"{server.url}/#/jobs/{job['id']}")
        output = page.locator("#output")
        expect(output).to_contain_text("line 2")
        expect(page.locator("h1 [data-state]")).to_have_text("running")
        expect(output).to_contain_text("line 8")  # more lines came, with no reload
        expect(output.locator("span.stderr").first).to_contain_text("warning 4")
        assert "warning" not in output.locator("span.stdout").all_inner_texts()[0]
        expect(page.locator("#output-status")).to_have_text("following live…")
        screenshot(page, "job")
    finally:
        server.client.delete(f"/jobs/{job['id']}")
    expect(page.locator("#output-status")).to_have_text("complete: the job has ended")
    expect(page.locator("h1 [data-state]")).to_have_text("killed")


def test_kill_works_from_the_button(server: Server, page: Page) -> None:
    job = server.post_job(image=BUSYBOX, command="echo started; sleep 300", labels=run_label()).json()
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(page.locator("#output")).to_contain_text("started")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#kill")
    expect(page.locator("#kill-result")).to_have_text("Killed: it ended killed (killed).")
    assert asked and job["id"] in asked[0]
    expect(page.locator("h1 [data-state]")).to_have_text("killed")
    expect(page.locator("#kill")).to_be_hidden()
    ended = server.client.get(f"/jobs/{job['id']}").json()
    assert (ended["state"], ended["reason"]) == ("killed", "killed")
    screenshot(page, "job-killed")


def test_the_grade_page_shows_the_verdict_table(server: Server, page: Page) -> None:
    tests = [
        {"name": "small", "input": "1 2\n", "expected_output": "3\n"},
        {"name": "wrong", "input": "2 2\n", "expected_output": "5\n"},
        {"name": "large", "input": "1000000 1\n", "expected_output": "1000001\n"},
    ]
    body = {"language": "python", "code": PY_SUM, "tests": tests, "labels": run_label()}
    grade = server.client.post("/grade", params={"wait": "true"}, json=body).json()
    assert grade["verdict"] == "WA", grade
    page.goto(f"{server.url}/#/grade/{grade['id']}")
    table = page.locator("#tests")
    expect(table.locator("tr[data-test]")).to_have_count(3)
    verdicts = table.locator("tr[data-test] [data-verdict]").all_inner_texts()
    assert verdicts == ["AC", "WA", "AC"]
    expect(table.locator('tr[data-test="wrong"]')).to_contain_text("expected")  # the checker's message
    expect(page.locator("h1 [data-verdict]")).to_have_text("WA")
    expect(page.locator(".card", has_text="Score")).to_contain_text("2 / 3")
    expect(page.locator("#compile-output")).to_be_visible()
    screenshot(page, "grade")

    page.goto(f"{server.url}/#/?kind=grade&label=run:{body['labels']['run']}")
    expect(row(page, grade["id"]).locator("[data-verdict]")).to_have_text("WA")
    row(page, grade["id"]).locator("a").click()
    expect(page.locator("#tests tr[data-test]")).to_have_count(3)


def test_the_system_panel_and_charts_show_the_worker(server: Server, page: Page) -> None:
    for command in ("true", "exit 1"):
        server.post_job(wait=True, image=BUSYBOX, command=command, labels=run_label())
    page.goto(f"{server.url}/#/system")
    cards = page.locator("#system-cards")
    expect(cards.locator('[data-card="cpu"]')).to_contain_text("%")
    expect(cards.locator('[data-card="memory"]')).to_contain_text("of")
    expect(cards.locator('[data-card="temperature"]')).to_be_visible()
    expect(page.locator('#engines [data-engine="docker"]')).to_contain_text("works")
    expect(page.locator("#pools table")).to_be_visible()
    api = page.locator('#sources tr[data-source="api"]')  # the HTTP API is a job source too, and the only one here
    expect(api).to_contain_text(server.url)
    expect(api.locator("td").nth(1)).to_have_text("http")
    expect(page.locator("#sources tr[data-source]")).to_have_count(1)
    expect(page.locator("svg[data-chart=throughput] rect.bar.s1").first).to_be_visible()
    expect(page.locator("svg[data-chart=throughput] rect.bar.s2").first).to_be_visible()
    expect(page.locator("svg[data-chart=latency] circle.dot").first).to_be_visible()
    expect(page.locator("svg[data-chart=queue-wait] circle.dot").first).to_be_visible()
    screenshot(page, "system")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "system-dark")


TOKENS = {role: f"{role}-{secrets.token_urlsafe(18)}" for role in ("read", "admin")}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Server]:
    """A worker with API tokens on: one that may read, one that may do anything."""
    worker_id = f"browser-auth-{os.getpid()}-{free_port()}"
    tokens = [{"token": token, "role": role, "name": f"{role}-holder"} for role, token in TOKENS.items()]
    running = Server(tmp_path_factory.mktemp("browser-auth"), worker_id, api_tokens=json.dumps(tokens))
    running.client.headers["Authorization"] = f"Bearer {TOKENS['admin']}"
    running.start()
    yield running
    assert running.stop() == 0
    running.client.close()
    assert containers_of(docker_client, worker_id) == []


def sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login button[type=submit]")


def test_signing_in_with_a_token(guarded: Server, page: Page) -> None:
    job = guarded.post_job(image=BUSYBOX, command="echo hi; sleep 300", labels=run_label()).json()
    page.goto(f"{guarded.url}/")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#view")).to_be_hidden()
    screenshot(page, "login")

    sign_in(page, "not-one-of-the-tokens")
    expect(page.locator("#login-error")).to_have_text("That token was not accepted by this worker.")
    sign_in(page, TOKENS["read"])
    expect(row(page, job["id"])).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('hatchway.token')") == TOKENS["read"]
    assert TOKENS["read"] not in page.url

    page.reload()  # the session keeps the token
    expect(row(page, job["id"])).to_be_visible()
    row(page, job["id"]).locator("a").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#kill")  # a read token may look, not kill
    expect(page.locator("#kill-result")).to_contain_text("Not allowed")
    expect(page.locator("#kill-result")).to_contain_text("role admin")
    assert guarded.client.get(f"/jobs/{job['id']}").json()["state"] in ("queued", "building", "running")

    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('hatchway.token')") is None
    sign_in(page, TOKENS["admin"])
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#kill")
    expect(page.locator("#kill-result")).to_have_text("Killed: it ended killed (killed).")
    assert TOKENS["admin"] not in Path(guarded.log_path).read_text()
