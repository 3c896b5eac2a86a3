"""Lifecycle events over Server-Sent Events, resumed with Last-Event-ID (across a restart too), and job logs cut
by `grep`, `since` and `until`, as a client meets them."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import BUSYBOX

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


def sse(server: Server, count: int, **request: Any) -> list[dict[str, Any]]:
    """The first `count` messages of GET /events: each `{"id", "event", "data"}` (data parsed)."""
    messages: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{server.url}/events", timeout=60, **request) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in _messages(response.iter_lines()):
            messages.append(message)
            if len(messages) == count:
                break
    return messages


def _messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    message: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "event" in message:
                yield message
            message = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            message[field] = json.loads(value) if field == "data" else value
    return


def lifecycle(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["event"], m["data"]["job_id"]) for m in messages]


def test_events_replay_after_last_event_id_then_follow_live_across_a_restart(start_server: ServerFactory) -> None:
    server = start_server()
    first = server.post_job(wait=True, image=BUSYBOX, command="true", labels={"team": "a"}).json()
    everything = sse(server, 4, params={"last_event_id": "0"})
    assert lifecycle(everything) == [
        ("job_queued", first["id"]),
        ("job_building", first["id"]),
        ("job_running", first["id"]),
        ("job_finished", first["id"]),
    ]
    assert [int(m["id"]) for m in everything] == [1, 2, 3, 4]
    finished = everything[-1]["data"]
    assert {
        "state": "succeeded",
        "reason": None,
        "kind": "job",
        "worker_id": server.worker_id,
    }.items() <= finished.items()
    assert finished["labels"] == {"team": "a"} and finished["id"] == 4
    assert datetime.fromisoformat(finished["time"]) >= datetime.fromisoformat(first["started_at"])

    # Resume after event 2: the header wins over the parameter.
    resumed = sse(server, 2, headers={"Last-Event-ID": "2"}, params={"last_event_id": "0"})
    assert [int(m["id"]) for m in resumed] == [3, 4]

    # Live: a reader connected before a job is submitted sees it go by.
    with httpx.stream("GET", f"{server.url}/events", headers={"Last-Event-ID": "4"}, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines) == "retry: 3000"
        second = server.post_job(image=BUSYBOX, command="true").json()
        live = [message for _, message in zip(range(4), _messages(lines), strict=False)]
    assert lifecycle(live)[0] == ("job_queued", second["id"]) and live[-1]["event"] == "job_finished"
    assert [int(m["id"]) for m in live] == [5, 6, 7, 8]

    # The log outlives the worker; it keeps the newest 3 now, and says so to a client that is further behind.
    assert server.stop() == 0
    server.env["HATCHWAY_EVENTS_KEEP"] = "3"
    server.start()
    assert [int(m["id"]) for m in sse(server, 2, headers={"Last-Event-ID": "6"})] == [7, 8]
    notice, *rest = sse(server, 4, headers={"Last-Event-ID": "3"})
    assert notice["event"] == "events_missed" and notice["id"] == "5"
    assert notice["data"]["after"] == 3 and "4 to 5 are no longer kept" in notice["data"]["message"]
    assert [int(m["id"]) for m in rest] == [6, 7, 8]
    third = server.post_job(wait=True, image=BUSYBOX, command="true").json()
    gap, *only_third = sse(server, 5, params={"last_event_id": "0", "job_id": third["id"]})
    assert gap["event"] == "events_missed" and gap["id"] == "5", "events 1 to 5 were pruned at the restart"
    assert lifecycle(only_third) == [
        (event, third["id"]) for event in ("job_queued", "job_building", "job_running", "job_finished")
    ]
    assert int(only_third[0]["id"]) == 9


def test_a_live_stream_sees_the_jobs_a_drain_stops_then_ends(start_server: ServerFactory) -> None:
    server = start_server(shutdown_grace_s=1, kill_grace_s=1)
    sleeper = server.post_job(image=BUSYBOX, command=["sleep", "60"]).json()
    server.wait_state(sleeper["id"], "running")
    assert server.process is not None
    with httpx.stream(
        "GET", f"{server.url}/events", params={"job_id": sleeper["id"]}, headers={"Last-Event-ID": "3"}, timeout=60
    ) as response:
        lines = response.iter_lines()
        assert next(lines) == "retry: 3000"
        server.process.send_signal(signal.SIGTERM)
        seen = list(_messages(lines))  # to the stream's end, which comes once the drain is over
    assert [(m["event"], m["data"]["state"], m["data"]["reason"]) for m in seen] == [
        ("job_finished", "killed", "shutdown")
    ]
    assert server.process.wait(60) == 0


def test_bad_event_ids_are_refused(server: Server) -> None:
    for request in ({"headers": {"Last-Event-ID": "abc"}}, {"params": {"last_event_id": "-1"}}):
        response = server.client.get("/events", **request)  # type: ignore[arg-type]
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def logs(server: Server, job_id: str, **params: str) -> httpx.Response:
    return server.client.get(f"/jobs/{job_id}/logs", params=params)


def test_grep_with_a_catastrophic_pattern_answers_promptly(server: Server) -> None:
    command = "head -c 100000 /dev/zero | tr '\\0' a; echo b; echo tail"
    job = server.post_job(wait=True, image=BUSYBOX, command=command).json()
    assert job["state"] == "succeeded"
    # A backtracking engine takes exponential time here; RE2 is linear. The test's time limit bounds it.
    assert logs(server, job["id"], grep="(a+)+$").text == ""
    assert logs(server, job["id"], grep="(a+)+b$").text == "a" * 100000 + "b\n"
    assert logs(server, job["id"], grep="^t", stream="stdout").text == "tail\n"


def test_since_and_until_select_the_lines_written_then(server: Server) -> None:
    command = "echo one; echo err-one >&2; sleep 2; echo two; sleep 2; echo three"
    job = server.post_job(wait=True, image=BUSYBOX, command=command).json()
    started = datetime.fromisoformat(job["started_at"])
    mark_1, mark_2 = (started + timedelta(seconds=s) for s in (1.0, 3.0))
    at = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731
    assert logs(server, job["id"], since=at(mark_1)).text == "two\nthree\n"
    assert logs(server, job["id"], until=at(mark_1)).text == "one\nerr-one\n"
    assert logs(server, job["id"], since=at(mark_1), until=at(mark_2)).text == "two\n"
    assert logs(server, job["id"], since=str(mark_2.timestamp()), stream="stdout").text == "three\n"
    assert logs(server, job["id"], since="1h", grep="o$", tail="1").text == "two\n"
    assert logs(server, job["id"], since="1h").text == "one\ntwo\nthree\nerr-one\n"
    assert logs(server, job["id"], until="1h").text == ""
    assert logs(server, job["id"]).text == "one\ntwo\nthree\nerr-one\n", "without a filter, as before"


def test_grep_and_since_apply_to_a_followed_job_live(server: Server) -> None:
    command = "for i in 1 2 3 4 5 6; do echo line$i; echo other$i; sleep 0.3; done; printf 'line7 unfinished'"
    job = server.post_job(image=BUSYBOX, command=command).json()
    server.wait_state(job["id"], "running", "succeeded")
    chunks: list[str] = []
    params = {"follow": "true", "grep": "line[2467]", "since": "5m"}
    with httpx.stream("GET", f"{server.url}/jobs/{job['id']}/logs", params=params, timeout=60) as response:
        assert response.status_code == 200
        chunks.extend(response.iter_text())
    assert "".join(chunks) == "line2\nline4\nline6\nline7 unfinished"
    assert server.client.get(f"/jobs/{job['id']}").json()["state"] == "succeeded"
    stored = logs(server, job["id"], grep="line[2467]").text
    assert stored == "line2\nline4\nline6\nline7 unfinished"


def test_bad_log_filters_are_refused_saying_why(server: Server) -> None:
    job = server.post_job(wait=True, image=BUSYBOX, command="echo hi").json()
    cases = {
        "grep": ("(unclosed", "missing )"),
        "since": ("yesterday", "is not a time"),
        "until": ("2024-05-01T12:00:00", "no time zone"),
    }
    for name, (value, says) in cases.items():
        response = logs(server, job["id"], **{name: value})
        assert response.status_code == 422, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and says in error["message"] and name in error["message"]
    long = logs(server, job["id"], grep="a" * 1001)
    assert long.status_code == 422 and "at most 1000" in long.json()["error"]["message"]
    started = time.monotonic()
    assert logs(server, "no-such-job", grep="x").status_code == 404
    assert time.monotonic() - started < 30


def test_line_times_survive_a_kill_9(start_server: ServerFactory) -> None:
    server = start_server()
    job = server.post_job(image=BUSYBOX, command="echo before; sleep 4; echo after").json()
    server.wait_state(job["id"], "running")
    deadline = time.monotonic() + 30
    while logs(server, job["id"]).text != "before\n":
        assert time.monotonic() < deadline, "the job's first line never came"
        time.sleep(0.1)
    printed_by = time.time()
    server.kill9()
    server.start()
    finished = server.wait_state(job["id"], "succeeded", "failed")
    assert finished["stdout"] == "before\nafter\n"
    # The new worker reads the output again from the engine: "before" keeps the time the first worker saw.
    assert logs(server, job["id"], until=str(printed_by)).text == "before\n"
    assert logs(server, job["id"], since=str(printed_by)).text == "after\n"
