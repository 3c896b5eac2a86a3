"""A real `hatchway serve` as a worker of the worker-agent system, driven by the double of its master
(tests/fakes/agent_master.py) over its Job Protocol v1, on the real Docker engine: a job runs with the whole job on
its stdin, in the image's own command where it names none; every rejection code; a reused id; cancelling; and a
master polling through `kill -9` and a restart of the worker sees the job end once."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import BUSYBOX, OWN_COMMAND
from tests.fakes.agent_master import ENDED, AgentMaster, agent_master

pytestmark = pytest.mark.docker

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def master(server: Server) -> Iterator[AgentMaster]:
    with agent_master(server.url) as fake:
        yield fake


def stdin_of(job: dict[str, Any]) -> str:
    """The job as the protocol's worker writes it to the container's stdin: JSON.stringify's compact form."""
    return json.dumps(job, ensure_ascii=False, separators=(",", ":"))


def test_a_job_runs_with_the_whole_job_on_its_stdin(master: AgentMaster) -> None:
    job = master.job(
        "echo-1",
        BUSYBOX,
        cmd=["sh", "-c", 'cat; printf "\\n%s\\n" "$EXAMPLE_ENV"'],
        env={"EXAMPLE_ENV": "test123"},
        payload={"message": "héllo ✓", "numbers": [1, 2.5]},
    )
    taken = master.submit(job)
    assert (taken.status_code, taken.json()) == (202, {"accepted": True, "job_id": "echo-1", "state": "queued"})
    done = master.poll("echo-1")
    assert (done["job_id"], done["state"], done["exit_code"], done["error"]) == ("echo-1", "finished", 0, None)
    assert done["stdout"] == stdin_of(job) + "\ntest123\n", "the job JSON on stdin, then its env"
    assert all(TIMESTAMP.match(done[name]) for name in ("created_at", "started_at", "finished_at")), done
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert done["engine"] == "docker" and done["hatchway_id"].startswith("agent.echo-1.")


def test_without_cmd_the_image_s_own_command_runs_in_its_own_workdir(master: AgentMaster) -> None:
    job = master.job("own-1", OWN_COMMAND)  # its CMD: `sh run.sh` in WORKDIR /app (pwd; cat)
    assert master.submit(job).status_code == 202
    done = master.poll("own-1")
    assert (done["state"], done["stdout"]) == ("finished", "/app\n" + stdin_of(job)), done


def test_a_failing_and_a_timed_out_job_say_why(master: AgentMaster) -> None:
    master.submit(master.job("fail-1", BUSYBOX, cmd=["sh", "-c", "echo oops >&2; exit 3"]))
    master.submit(master.job("slow-1", BUSYBOX, cmd=["sleep", "30"], max_runtime_seconds=1))
    failed = master.poll("fail-1")
    assert (failed["state"], failed["exit_code"], failed["stderr"]) == ("failed", 3, "oops\n")
    assert failed["error"] == {"code": "NON_ZERO_EXIT", "message": "Job exited with code 3"}
    slow = master.poll("slow-1")
    assert (slow["state"], slow["exit_code"]) == ("failed", None)
    assert slow["error"] == {"code": "TIMEOUT", "message": "Job exceeded max_runtime_seconds"}


def rejected(**changes: Any) -> dict[str, Any]:
    job = AgentMaster.job("bad-1", BUSYBOX, cmd=["true"])
    for path, value in changes.items():
        *parents, name = path.split("__")
        target = job
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(name)
        else:
            target[name] = value
    return job


@pytest.mark.parametrize(
    ("job", "code"),
    [
        (rejected(protocol_version=2), "UNSUPPORTED_PROTOCOL_VERSION"),
        (rejected(job_id=""), "MISSING_JOB_ID"),
        (rejected(runtime=None), "MISSING_RUNTIME"),
        (rejected(runtime__mode="docker"), "BAD_RUNTIME_MODE"),
        (rejected(runtime__mode="build"), "RUNTIME_NOT_SUPPORTED"),
        (rejected(runtime__image=None), "MISSING_IMAGE"),
        (rejected(runtime__image="alpine:latest"), "IMAGE_NOT_ALLOWED"),
        (rejected(runtime__cmd="echo hi"), "INVALID_RUNTIME"),
    ],
)
def test_each_rejection_has_its_code(master: AgentMaster, job: dict[str, Any], code: str) -> None:
    answer = master.submit(job)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert (body["accepted"], body["job_id"], body["state"], body["error"]["code"]) == (
        False,
        job.get("job_id"),
        "rejected",
        code,
    )
    assert body["error"]["message"]
    assert master.look(job.get("job_id") or "bad-1") == {
        "error": {"code": "job_not_found", "message": "no job has id 'bad-1'"},
        "job_id": "bad-1",
        "state": "not_found",
    }, "a rejected job is not kept"


def test_a_body_not_sent_as_json_is_invalid_body(master: AgentMaster) -> None:
    text = json.dumps(master.job("plain-1", BUSYBOX, cmd=["true"]))
    answer = master.client.post("/jobs", content=text, headers={"Content-Type": "text/plain"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "INVALID_BODY")


def test_a_reused_job_id_is_409(master: AgentMaster) -> None:
    assert master.submit(master.job("twice-1", BUSYBOX, cmd=["true"])).status_code == 202
    again = master.submit(master.job("twice-1", BUSYBOX, cmd=["echo", "other"]))
    assert (again.status_code, again.json()["error"]["code"]) == (409, "JOB_ID_ALREADY_EXISTS")
    assert master.poll("twice-1")["stdout"] == "", "the first job ran, not the second"


def test_delete_cancels_a_queued_job_and_stops_a_running_one(master: AgentMaster, server: Server) -> None:
    # The shared worker runs two jobs at once: two that wait, and a third is queued behind them.
    for job_id in ("hold-1", "hold-2", "queued-1"):
        assert master.submit(master.job(job_id, BUSYBOX, cmd=["sleep", "60"], max_runtime_seconds=120)).is_success
    for job_id in ("hold-1", "hold-2"):
        server.wait_state(master.look(job_id)["hatchway_id"], "running")  # type: ignore[index]
    cancelled = master.cancel("queued-1")
    assert (cancelled.status_code, cancelled.json()) == (
        200,
        {"job_id": "queued-1", "state": "failed", "note": "Job cancelled before start"},
    )
    assert master.poll("queued-1")["error"]["code"] == "CANCELLED"
    for job_id in ("hold-1", "hold-2"):
        stopping = master.cancel(job_id)
        assert (stopping.status_code, stopping.json()["note"]) == (202, "Cancellation requested")
    for job_id in ("hold-1", "hold-2"):
        stopped = master.poll(job_id)
        assert stopped["error"] == {"code": "CANCELLED", "message": "Job was cancelled while it was running"}
    assert master.cancel("hold-1").json()["note"] == "Job has already ended"


def test_a_master_polling_through_kill_9_and_a_restart_sees_the_job_end_once(start_server: ServerFactory) -> None:
    server = start_server(max_concurrent_jobs=1)
    with agent_master(server.url, poll_interval_s=0.05) as master:
        job = master.job("long-1", BUSYBOX, cmd=["sh", "-c", "echo start; sleep 4; echo end"], max_runtime_seconds=60)
        assert master.submit(job).status_code == 202
        server.wait_state(master.look("long-1")["hatchway_id"], "running")  # type: ignore[index]
        ended: list[dict[str, Any]] = []
        polling = threading.Thread(target=lambda: ended.append(master.poll("long-1")), daemon=True)
        polling.start()
        server.kill9()  # the job's program still runs: it sleeps 4 s after its first line
        server.start()
        polling.join(timeout=90)
        assert ended, f"the master never saw the job end: {master.states('long-1')}"
        for _ in range(5):  # and it stays ended, as it was
            master.look("long-1")
    answers = master.answers["long-1"]
    first_end = next(index for index, answer in enumerate(answers) if answer["state"] in ENDED)
    assert master.unanswered.get("long-1", 0) > 0, "the master polled while the worker was down"
    assert master.states("long-1")[-2:] == ["running", "finished"], master.states("long-1")
    assert [answer["state"] for answer in answers if answer["state"] not in ("queued", "running")] == (
        ["finished"] * (len(answers) - first_end)
    ), "one end, seen at every poll after it, and never not_found"
    assert all(answer == answers[first_end] for answer in answers[first_end:]), "the same record each time"
    assert (answers[-1]["stdout"], answers[-1]["exit_code"]) == ("start\nend\n", 0)
