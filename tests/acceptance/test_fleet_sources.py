"""A pulled source in a fleet (issue 18): two real `hatchway serve` workers on one PostgreSQL store pull from one
master (the double of the queue-pull platform's queue service); every item runs once and its report reaches the
master once, counted there, however the two workers' reporters overlap, and a worker killed with reports unsent
has them sent by the other; a task another worker runs has its output published live by the one that took it."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.acceptance.conftest import Server, ServerFactory, all_reported
from tests.fakes.tasks_master import TasksMaster, tasks_master
from tests.redis_bus import REDIS_URL, kinds, lines, subscribed

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

IMAGES = "hatchway-test/*,hatchway-profile/*"


def sources(master: TasksMaster, **more: Any) -> str:
    return json.dumps(
        [
            {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.2}
            | more
        ]
    )


def ended_jobs(server: Server, count: int, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The source's jobs, polled over HTTP until `count` of them have ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs: list[dict[str, Any]] = server.client.get("/jobs", params={"label": "source:queue"}).json()["jobs"]
        if len(jobs) == count and all(job["state"] in ("succeeded", "failed", "killed") for job in jobs):
            return jobs
        assert time.monotonic() < deadline, f"not all {count} jobs ended: {[(j['id'], j['state']) for j in jobs]}"
        time.sleep(0.2)


def reports_sent(server: Server) -> int:
    sent: int = next(s["reports_sent"] for s in server.client.get("/sources").json() if s["name"] == "queue")
    return sent


def test_two_workers_pulling_from_one_master_run_and_report_each_item_once(start_fleet: ServerFactory) -> None:
    count = 10
    # A slow master: each worker's reporter is still going through the shared outbox when the other's, woken by
    # the end of a job of its own, goes through it too.
    with tasks_master(report_delay_s=0.3) as master:
        for i in range(count):
            master.add(f"t{i}", f"import time\ntime.sleep(0.5)\nprint({i})")
        settings = {"sources": sources(master), "allowed_images": IMAGES, "max_concurrent_jobs": 3}
        a, b = start_fleet(**settings), start_fleet(**settings)
        reports = master.wait_reports(count, timeout_s=180)
        jobs = all_reported(a, "queue", timeout_s=60)
        sent = reports_sent(a) + reports_sent(b)
        assert a.stop() == 0 and b.stop() == 0  # drained: nothing more is sent
    assert master.unknown_reports == [], "a report reached the master twice"
    assert sorted(eval_id for eval_id, _, _ in reports) == sorted(f"t{i}" for i in range(count)) and sent == count
    assert master.claimed == count and len(jobs) == count, "each item taken once, one job each"
    for eval_id, verb, body in reports:
        said = body["output"]
        assert (verb, said["status"], said["output"]) == ("complete", "completed", f"{eval_id[1:]}\n"), body
    assert {job["worker_id"] for job in jobs} <= {a.worker_id, b.worker_id}


def test_a_killed_worker_s_unsent_reports_are_sent_once_by_another(start_fleet: ServerFactory) -> None:
    with tasks_master(refuse_reports=True) as master:
        for i in range(3):
            master.add(f"t{i}", f"print({i})")
        settings = {"sources": sources(master), "allowed_images": IMAGES}
        dying = start_fleet(**settings)
        ended = ended_jobs(dying, 3)
        assert {job["reported_at"] for job in ended} == {None}, "the master has refused every report so far"
        dying.kill9()  # its reports unsent, one perhaps held while the master refused it
        with master.lock:
            master.refuse_reports = False
        survivor = start_fleet(**settings)
        master.wait_reports(3)
        all_reported(survivor, "queue")
        assert reports_sent(survivor) == 3
        assert survivor.stop() == 0
        dying.start()  # back, it tidies up what the kill left (its spare disks) and finds nothing to report
        assert dying.stop() == 0
    assert master.unknown_reports == [] and sorted(r[0] for r in master.reports) == ["t0", "t1", "t2"], master.reports
    assert {job["worker_id"] for job in ended} == {dying.worker_id}, "the dead worker ran them all"


def test_a_task_another_worker_runs_has_its_output_published_live(start_fleet: ServerFactory) -> None:
    """The worker that took a task publishes its events; when another worker of the fleet runs its job, the lines
    are read from that one as they come (with the token the fleet's workers share), not only once it ends."""
    token = secrets.token_urlsafe(24)
    auth = {"api_tokens": json.dumps([{"token": token, "role": "admin", "name": "fleet"}])}
    with tasks_master() as master, subscribed() as bus:
        # a takes tasks, and its one slot is busy: the fleet's free slot is b's, so b runs what a takes.
        a = start_fleet(
            labels=json.dumps({"side": "a"}),
            max_concurrent_jobs=1,
            allowed_images=IMAGES,
            **auth,
            sources=sources(master, redis_url=REDIS_URL),
        )
        b = start_fleet(allowed_images=IMAGES, **auth)
        for server in (a, b):
            server.client.headers["Authorization"] = f"Bearer {token}"
        busy = a.post_job(image="hatchway-test/busybox", command=["sleep", "600"], placement={"side": "a"}).json()
        a.wait_state(busy["id"], "running")
        master.add("remote", "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')", timeout=60)

        bus.wait(lambda got: ("evaluation:remote:logs", "first") in [(c, d.get("content")) for c, d in got], "first")
        job = next(job for job in a.client.get("/jobs", params={"label": "source:queue"}).json()["jobs"])
        assert (job["state"], job["worker_id"]) == ("running", b.worker_id), "published while b still ran it"
        messages = bus.wait_end("remote")
        master.wait_reports(1)
        assert a.client.delete(f"/jobs/{busy['id']}", params={"grace_s": 0}).status_code == 200
    assert kinds(messages) == ["evaluation:running", "logs", "logs", "logs-final", "evaluation:completed"], messages
    assert lines(messages) == "first\nsecond" and messages[-2][1]["content"] == "first\nsecond\n"
    assert {data["executor_id"] for _, data in messages if "executor_id" in data} == {a.worker_id}
