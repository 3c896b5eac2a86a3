"""hatchway as a drop-in worker of the queue-pull platform, end to end: the double of its queue service
(tests/fakes/tasks_master.py), the real Redis as its event bus with a real subscriber, and the real Docker engine.

Each kind of task is reported to the queue as the platform's worker reports it and published on the bus as its
queue worker and executor publish it, field for field; an empty queue's `null` is no error; a Redis that is down
costs events, never a task."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.jobs.service import source_job_id
from hatchway.sources.base import EventsStatus
from hatchway.worker.worker import Worker
from tests.conftest import until
from tests.fakes.tasks_master import TasksMaster, tasks_master
from tests.integration.conftest import source_starter
from tests.redis_bus import REDIS_URL, Message, closed_port, kinds, lines, subscribed

pytestmark = pytest.mark.docker

INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")  # pydantic's JSON for a UTC datetime
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")  # datetime.isoformat() in UTC


@pytest.fixture
def master() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


@pytest.fixture
async def start(tmp_path: Path, worker_id: str, master: TasksMaster) -> AsyncIterator[Any]:
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.1}
    start, started = source_starter(tmp_path, worker_id, source)
    yield start
    for worker in started:
        await worker.shutdown()


def events_of(worker: Worker) -> EventsStatus:
    status = worker.sources[0].status().events
    assert status is not None, "the source has no event bus"
    return status


async def test_each_kind_of_task_is_reported_and_published_as_the_platform_does(
    master: TasksMaster, start: Any
) -> None:
    master.add("ok", "print(6 * 7)")
    master.add("exits", "import sys; print('partial'); sys.exit(3)")
    master.add("slow", "import time\nprint('tick', flush=True)\nwhile True: time.sleep(0.1)", timeout=2)
    master.add("cobol", "DISPLAY 'HI'.", language="cobol")
    master.add("js", "console.log(6 * 7); console.error('to stderr')", language="javascript")
    master.add("no-code", None)
    master.add("odd-engine", "print(1)", engine="vmware")
    with subscribed() as bus:
        worker = await start(source={"limits": {"timeout_s": 60}, "redis_url": REDIS_URL})
        got = {eval_id: (verb, body) for eval_id, verb, body in await asyncio.to_thread(master.wait_reports, 7)}
        events = {eval_id: await asyncio.to_thread(bus.wait_end, eval_id) for eval_id in got}
        await worker.drain()  # after which it sends nothing more: every report it would ever send is in
    assert len(master.reports) == 7 and master.unknown_reports == [], "exactly one report per task"

    await check_reports(worker, got)
    check_events(worker.worker_id, events)
    expected = sum(len(messages) for messages in events.values())
    await until(lambda: events_of(worker).published == expected, "the events were not all counted")
    assert (events_of(worker).dropped, events_of(worker).connected) == (0, True)


async def check_reports(worker: Worker, got: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """What the queue service was told of each task of the test above."""
    me = worker.worker_id
    # The queue service: a completion for every run with a result, as the platform's worker words it.
    verb, body = got["ok"]
    assert verb == "complete" and isinstance(body["output"].pop("duration_s"), float)
    assert body == {
        "output": {
            "id": "ok",
            "status": "completed",
            "output": "42\n",
            "exit_code": 0,
            "stdout": "42\n",
            "stderr": "",
            "engine": "docker",
            "worker_id": me,
            "reason": None,
        }
    }
    exits = got["exits"][1]["output"]
    assert got["exits"][0] == "complete"
    assert (exits["status"], exits["output"], exits["exit_code"], exits["reason"]) == (
        "failed",
        "partial\n",
        3,
        "exit_code",
    )
    slow = got["slow"][1]["output"]
    assert got["slow"][0] == "complete" and "output" not in slow
    assert (slow["status"], slow["error"], slow["stdout"]) == ("timeout", "Timeout after 2 seconds", "tick\n")
    job = await worker.jobs.get(source_job_id("queue", "slow"))
    assert job.spec.limits.timeout_s == 2, "the task's own timeout, not the source's 60 s"
    assert job.duration_s is not None and job.duration_s < 20, job.duration_s
    js = got["js"][1]["output"]
    assert (js["status"], js["output"], js["stderr"]) == ("completed", "42\n", "to stderr\n"), "run by node"
    assert (
        job.labels["language"] == "python"
        and (await worker.jobs.get(source_job_id("queue", "js"))).labels["language"] == "javascript"
    )
    # ... and a failure for a task it could not run at all.
    assert got["cobol"] == ("fail", got["cobol"][1]) and set(got["cobol"][1]) == {"error", "reason", "worker_id"}
    assert "'cobol' has no language profile" in got["cobol"][1]["error"] and got["cobol"][1]["reason"] == "refused"
    assert got["no-code"][0] == "fail" and "code" in got["no-code"][1]["error"]
    assert got["odd-engine"][0] == "fail" and "vmware" in got["odd-engine"][1]["error"]


def check_events(me: str, events: dict[str, list[Message]]) -> None:
    """What the event bus carried of each task of the test above."""
    # The event bus: what the platform's queue worker and executor publish, in their order and fields.
    ok = events["ok"]
    assert kinds(ok) == ["evaluation:running", "logs", "logs-final", "evaluation:completed"], ok
    running, first, final, end = (data for _, data in ok)
    assert set(running) == {"eval_id", "container_id", "executor_id", "timeout"}
    assert re.fullmatch(r"[0-9a-f]{12}", running["container_id"]), running
    assert (running["eval_id"], running["executor_id"], running["timeout"]) == ("ok", me, 30)
    assert ok[1][0] == "evaluation:ok:logs" and TIMESTAMP.match(first.pop("timestamp"))
    assert first == {"eval_id": "ok", "sequence": 1, "content": "42", "executor_id": me}
    assert TIMESTAMP.match(final.pop("timestamp"))
    assert final == {"eval_id": "ok", "sequence": 2, "content": "42\n", "executor_id": me, "is_final": True}
    assert INSTANT.match(end.pop("completed_at")), end
    assert end == {
        "eval_id": "ok",
        "status": "completed",
        "output": "42\n",
        "error": "",
        "exit_code": 0,
        "executor_id": me,
    }

    assert kinds(events["exits"])[0] == "evaluation:running" and kinds(events["exits"])[-1] == "evaluation:failed"
    exits_end = events["exits"][-1][1]
    assert (exits_end["status"], exits_end["exit_code"], exits_end["output"]) == ("failed", 3, "partial\n")
    slow_events = events["slow"]
    assert slow_events[0][1]["timeout"] == 2 and lines(slow_events) == "tick", slow_events
    assert slow_events[-1][0] == "evaluation:completed", "a timeout goes to the completed channel, as there"
    assert (slow_events[-1][1]["status"], slow_events[-1][1]["exit_code"]) == ("timeout", 124)
    assert sorted(lines(events["js"]).splitlines()) == ["42", "to stderr"], "stdout and stderr, as they come"
    assert events["js"][-1][1]["error"] == "to stderr\n"
    for refused in ("cobol", "no-code", "odd-engine"):  # never ran: the queue worker's failure, nothing else
        assert [channel for channel, _ in events[refused]] == ["evaluation:failed"], events[refused]
        assert set(events[refused][0][1]) == {"eval_id", "error"}


async def test_an_empty_queue_s_null_is_no_error(master: TasksMaster, start: Any) -> None:
    """Before, the queue service's 200 `null` counted as an error on 48 of 52 polls, each followed by a backoff."""
    worker = await start(source={"poll_interval_s": 0.02})
    await until(lambda: master.null_answers >= 60, "the worker did not poll the empty queue 60 times", timeout_s=60)
    status = worker.sources[0].status()
    assert (status.errors, status.backoff_s, status.last_error) == (0, 0.0, None), status
    assert status.polls >= 60
    master.add("after", "print('still polling')")
    got = await asyncio.to_thread(master.wait_reports, 1)
    assert got[0][2]["output"]["output"] == "still polling\n"
    assert worker.sources[0].status().errors == 0


async def test_a_redis_that_is_down_costs_events_never_a_task(
    master: TasksMaster, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hatchway.sources.task_events")
    port = closed_port()
    master.add("a", "print('a')")
    master.add("b", "print('b')")
    worker = await start(source={"redis_url": f"redis://:the-secret@127.0.0.1:{port}/0"})
    got = await asyncio.to_thread(master.wait_reports, 2)
    assert {eval_id: body["output"]["status"] for eval_id, _, body in got} == {"a": "completed", "b": "completed"}
    # Each task's events (its start, a line, the final log, its end) were tried, and lost.
    await until(lambda: events_of(worker).dropped >= 8, "the events were not all tried")
    status = events_of(worker)
    assert status is not None and (status.published, status.connected) == (0, False)
    assert status.url == f"redis://:***@127.0.0.1:{port}/0", "its password is never shown"
    down = [record for record in caplog.records if getattr(record, "event", None) == "task_events_unavailable"]
    assert len(down) == 1, "logged once per outage, not once per event"
    assert "the-secret" not in caplog.text

    # Redis comes up there: events flow again, and that is said once.
    server = await asyncio.create_subprocess_exec(
        *("redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
        stdout=subprocess.DEVNULL,
    )
    try:
        with subscribed(f"redis://127.0.0.1:{port}/0", ready_s=10) as bus:
            master.add("c", "print('c')")
            await asyncio.to_thread(master.wait_reports, 3)
            messages = await asyncio.to_thread(bus.wait_end, "c")
        assert kinds(messages) == ["evaluation:running", "logs", "logs-final", "evaluation:completed"]
        back = [record for record in caplog.records if getattr(record, "event", None) == "task_events_back"]
        assert len(back) == 1 and events_of(worker).connected
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
