"""A double of a master of the worker-agent system (ProcessingCluster), as its protocol and its worker have one
behave. The system's repository holds its worker and its dashboard but no master: this is the master its
documents describe (protocol/JOB_PROTOCOL.md, protocol/WORKER_HTTP_API.md, docs/WORKER_LIFECYCLE.md), talking to
the worker as its worker's code (worker-agent/node/src/api.js) expects.

- It builds jobs as Job Protocol v1 has them, like examples/jobs/sample-job.json: `protocol_version` 1, a
  `job_id` of its own, a `task` `{type, payload}` and a `runtime` `{mode: "image", image, cmd, env, limits:
  {memory_mb, max_runtime_seconds}}`.
- It posts each to the worker's `/jobs` as `application/json`, written as a person writes a job file (indented:
  the worker reads the JSON, it does not keep the text), and takes 202 `{accepted: true}` as taken, 400 or 409
  `{accepted: false, state: "rejected", error: {code, message}}` as refused.
- It polls `GET /jobs/{job_id}` until `state` is `finished` or `failed` (the lifecycle's "Result Retrieval"),
  riding out a worker that does not answer for a while (a restart) until its deadline, and keeps every answer.
- It cancels with `DELETE /jobs/{job_id}`.

For the tests, it records what it saw: every answer to every poll of each job, and the polls that got none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

PROTOCOL_VERSION = 1
ENDED = ("finished", "failed")


@dataclass
class AgentMaster:
    """A master pointed at one worker (`worker_url`, as it would be `http://<ip>:9000`)."""

    worker_url: str
    poll_interval_s: float = 0.1
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Every answer to a poll of each job, in order."""
    unanswered: dict[str, int] = field(default_factory=dict)
    """Polls of each job that got no answer: the worker was not there."""
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.worker_url, timeout=10)

    @staticmethod
    def job(
        job_id: str,
        image: str,
        *,
        cmd: list[str] | None = None,
        env: dict[str, str] | None = None,
        memory_mb: int | None = 256,
        max_runtime_seconds: float | None = 10,
        task_type: str = "debug_echo",
        payload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A job as the protocol has it (`None` leaves a limit out)."""
        limits = {"memory_mb": memory_mb, "max_runtime_seconds": max_runtime_seconds}
        return {
            "protocol_version": PROTOCOL_VERSION,
            "job_id": job_id,
            "task": {"type": task_type, "payload": payload or {"message": "Hello from ProcessorCluster!"}},
            "runtime": {
                "mode": "image",
                "image": image,
                "cmd": cmd or [],
                "env": env or {},
                "limits": {name: value for name, value in limits.items() if value is not None},
            },
        }

    def submit(self, job: Any) -> httpx.Response:
        """POST the job to the worker's /jobs, as a job file's text."""
        text = json.dumps(job, indent=2, ensure_ascii=False)
        return self.client.post("/jobs", content=text.encode(), headers={"Content-Type": "application/json"})

    def poll(self, job_id: str, *, timeout_s: float = 60) -> dict[str, Any]:
        """Its record once it is finished or failed; fails the test if that takes longer than `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.look(job_id)
            if answer is not None and answer.get("state") in ENDED:
                return answer
            assert time.monotonic() < deadline, f"job {job_id} did not end within {timeout_s} s: {self.states(job_id)}"
            time.sleep(self.poll_interval_s)  # a master's poll interval: nothing tells it that a job ended

    def look(self, job_id: str) -> dict[str, Any] | None:
        """One poll: the worker's answer (also kept), or None if the worker did not answer."""
        try:
            response = self.client.get(f"/jobs/{job_id}")
        except httpx.TransportError:
            self.unanswered[job_id] = self.unanswered.get(job_id, 0) + 1
            return None
        answer: dict[str, Any] = response.json()
        answer.setdefault("state", f"HTTP {response.status_code}")
        self.answers.setdefault(job_id, []).append(answer)
        return answer

    def cancel(self, job_id: str) -> httpx.Response:
        return self.client.delete(f"/jobs/{job_id}")

    def states(self, job_id: str) -> list[str]:
        """The states it saw the job in, each run of polls in one state counted once."""
        seen: list[str] = []
        for answer in self.answers.get(job_id, []):
            if not seen or seen[-1] != answer["state"]:
                seen.append(answer["state"])
        return seen

    def close(self) -> None:
        self.client.close()


@contextmanager
def agent_master(worker_url: str, **fields: Any) -> Iterator[AgentMaster]:
    master = AgentMaster(worker_url, **fields)
    try:
        yield master
    finally:
        master.close()
