"""Two real workers on one PostgreSQL store, as a client meets them: a job submitted to a busy worker runs on the
idle one at once, the busy one's event stream shows the other's events as they happen, and a DELETE sent to it
stops the job the other runs. Their safety-net poll is a minute: only a wake-up (NOTIFY) is within the
deadlines."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.acceptance.conftest import ServerFactory
from tests.acceptance.test_events_and_logs import _messages, lifecycle
from tests.conftest import BUSYBOX
from tests.postgres_db import fresh_schema_sync

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.timeout(240)]

DEADLINE_S = 20.0
"""Generous, and far below the safety nets' minute."""


def test_a_busy_worker_s_job_runs_on_the_idle_one_which_its_events_and_deletes_reach(
    start_server: ServerFactory,
) -> None:
    with fresh_schema_sync() as url:
        fleet = {"store_url": url, "max_concurrent_jobs": 1, "poll_interval_s": 60}
        a = start_server(**fleet)
        busy = a.post_job(image=BUSYBOX, command=["sleep", "600"]).json()
        a.wait_state(busy["id"], "running")
        b = start_server(**fleet)

        job = a.post_job(image=BUSYBOX, command=["sleep", "600"]).json()
        running = a.wait_state(job["id"], "running", timeout_s=DEADLINE_S)
        assert running["worker_id"] == b.worker_id, "a is full: b took it"

        with httpx.stream(
            "GET", f"{a.url}/events", params={"last_event_id": "0", "job_id": job["id"]}, timeout=90
        ) as response:
            lines = response.iter_lines()
            assert next(lines) == "retry: 3000"
            messages = _messages(lines)
            so_far = [next(messages) for _ in range(3)]
            assert lifecycle(so_far) == [(event, job["id"]) for event in ("job_queued", "job_building", "job_running")]
            assert [m["data"]["worker_id"] for m in so_far[1:]] == [b.worker_id, b.worker_id]

            asked = time.monotonic()
            deleted = a.client.delete(f"/jobs/{job['id']}")  # answers once the job has ended, as on one worker
            assert deleted.status_code == 200, deleted.text
            ended = deleted.json()
            assert (ended["state"], ended["reason"], ended["worker_id"]) == ("killed", "killed", b.worker_id)
            finished = next(messages)  # a's stream, live: b's event
            assert time.monotonic() - asked < DEADLINE_S, "the end came with a safety net, not a wake-up"
        assert (finished["event"], finished["data"]["worker_id"], finished["data"]["state"]) == (
            "job_finished",
            b.worker_id,
            "killed",
        )
        assert b.client.get(f"/jobs/{busy['id']}").json()["state"] == "running", "b answers for a's job too"
        assert a.stop() == 0
        assert b.stop() == 0
