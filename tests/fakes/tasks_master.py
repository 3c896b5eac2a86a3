"""A double of the queue-pull platform's queue service (`kind: tasks`), faithful to the real one: its paths,
fields, status codes and quirks, as its code has them.

- `POST /tasks` enqueues `{"eval_id", "code", "language" ("python"), "engine" ("docker"), "timeout" (30),
  "priority" (1)}` (422 for a body that does not fit) and answers `{"eval_id", "status": "queued", "position"}`.
  The API key is checked here only (401 "Invalid API key" when one is configured and `X-API-Key` differs): the
  real service checks it nowhere else. The same `eval_id` enqueued twice is queued twice.
- `GET /tasks/next` answers 200 with JSON `null` when the queue is empty, else the next task, `{"eval_id", "code",
  "language", "engine", "timeout"}`, which is now `running`: it is never handed out again.
- `POST /tasks/{eval_id}/complete` and `/fail` take any JSON object (422 otherwise) and forget the task. For a task
  it does not hold, `complete` answers 404 `{"detail": "Task not found"}` and `fail` 200 `{"status":
  "not_found"}`; else `{"status": "completed"}` or `{"status": "failed"}`.
- `GET /tasks/{eval_id}` (404 "Task not found"), `GET /status`, `DELETE /tasks` and `GET /health` as there.

Besides, for the tests: faults to inject (`FakeMaster`'s, and hostile or garbage answers to a claim), and a record
of every request: the reports accepted, those for tasks it did not hold, and the API key each request carried.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes import FakeMaster, JsonHandler, serving

TASK_FIELDS = {"language": ("python", str), "engine": ("docker", str), "timeout": (30, int), "priority": (1, int)}
"""An enqueued task's optional fields: default and type (the real service's request model)."""


@dataclass
class TasksMaster(FakeMaster):
    """State of the double: the queue (ids, in order), the registry of tasks queued or handed out, and what it saw."""

    queue: deque[str] = field(default_factory=deque)
    registry: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """(eval_id, "complete" | "fail", body) of the reports for tasks it held, in the order they arrived."""
    unknown_reports: list[tuple[str, str, int]] = field(default_factory=list)
    """(eval_id, "complete" | "fail", status answered) of the reports for tasks it did not hold."""
    keys: list[str | None] = field(default_factory=list)
    """The X-API-Key of every request for work and every report, in order (None: none sent)."""
    claims_need_key: bool = False
    """Answer 401 to a request for work or a report without the key. The real service checks the key only when a
    task is enqueued; this models a queue that guards its claims too."""
    garbage: int = 0
    """Answer this many next GETs for work with a body that is not JSON."""
    hostile: list[bytes] = field(default_factory=list)
    """Bodies to answer the next GETs for work with (200, application/json), one each, before any task."""
    polls: list[float] = field(default_factory=list)
    """When each GET for work arrived (time.monotonic())."""
    null_answers: int = 0
    """GETs for work answered with `null`: the queue was empty."""
    claimed: int = 0
    reported: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.reported = threading.Condition(self.lock)

    @property
    def tasks(self) -> list[str]:
        """The ids still queued."""
        with self.lock:
            return list(self.queue)

    def add(
        self,
        eval_id: str,
        code: str | None,
        engine: str | None = "docker",
        *,
        language: Any = "python",
        timeout: Any = 30,
    ) -> None:
        """Queue a task as `POST /tasks` would, without its checks (so a test can queue one the real service would
        not take, as another queue might hand out)."""
        with self.lock:
            task = {"eval_id": eval_id, "code": code, "language": language, "engine": engine, "timeout": timeout}
            self._enqueue(task)

    def handed_out(self, eval_id: str, code: str) -> None:
        """A task handed out already (running), as the worker that took it would find it after a crash."""
        with self.lock:
            self._enqueue({"eval_id": eval_id, "code": code, **{name: d for name, (d, _) in TASK_FIELDS.items()}})
            self.queue.remove(eval_id)
            self.registry[eval_id]["status"] = "running"

    def _enqueue(self, task: dict[str, Any]) -> int:
        self.queue.append(task["eval_id"])
        self.registry[task["eval_id"]] = {
            **{name: task.get(name) for name in ("code", "language", "engine", "timeout")},
            "status": "queued",
            "queued_at": datetime.now(UTC).isoformat(),
            "position": len(self.queue),
        }
        return len(self.queue)

    def wait_reports(self, count: int, timeout_s: float = 90) -> list[tuple[str, str, dict[str, Any]]]:
        with self.reported:
            if not self.reported.wait_for(lambda: len(self.reports) >= count, timeout_s):
                raise AssertionError(f"only {len(self.reports)} of {count} reports arrived: {self.reports}")
            return list(self.reports)

    def wait_claimed(self, count: int, timeout_s: float = 30) -> int:
        """Return once `count` tasks have been handed out."""
        with self.reported:
            if not self.reported.wait_for(lambda: self.claimed >= count, timeout_s):
                raise AssertionError(f"only {self.claimed} of {count} tasks were taken")
            return self.claimed

    def by_id(self) -> dict[str, tuple[str, dict[str, Any]]]:
        with self.lock:
            return {eval_id: (verb, body) for eval_id, verb, body in self.reports}

    # The service

    def next_task(self) -> dict[str, Any] | None:
        """`GET /tasks/next`: the next task, now running; None when the queue is empty."""
        with self.reported:
            eval_id = self.queue.popleft() if self.queue else None
            task = None if eval_id is None else self.registry.get(eval_id)
            if eval_id is None or task is None:  # an id whose task was forgotten answers null too
                self.null_answers += 1
                return None
            task["status"] = "running"
            for position, queued in enumerate(self.queue, start=1):
                if queued in self.registry:
                    self.registry[queued]["position"] = position
            self.claimed += 1
            self.reported.notify_all()
            return {"eval_id": eval_id, **{name: task[name] for name in ("code", "language", "engine", "timeout")}}

    def finish(self, eval_id: str, verb: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`POST /tasks/{eval_id}/complete` or `/fail`: the status and body answered."""
        with self.reported:
            if self.registry.pop(eval_id, None) is None:
                if verb == "complete":
                    status, said = 404, {"detail": "Task not found"}
                else:
                    status, said = 200, {"status": "not_found"}
                self.unknown_reports.append((eval_id, verb, status))
                return status, said
            self.reports.append((eval_id, verb, body))
            self.reported.notify_all()
            return 200, {"status": "completed" if verb == "complete" else "failed"}


def _invalid(body: Any) -> str | None:
    """Why `POST /tasks` would refuse `body` (422), or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for name in ("eval_id", "code"):
        if not isinstance(body.get(name), str):
            return f"{name}: a string is required"
    for name, (_, kind) in TASK_FIELDS.items():
        if name in body and (not isinstance(body[name], kind) or isinstance(body[name], bool)):
            return f"{name}: must be {kind.__name__}"
    return None


def _handler(master: TasksMaster) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts == ["tasks", "next"]:
                return self.claim()
            if parts == ["health"]:
                return self.answer(200, {"status": "healthy", "service": "queue", "queue_size": len(master.queue)})
            if parts == ["status"]:
                with master.lock:
                    states = [task["status"] for task in master.registry.values()]
                    queued, running, length = states.count("queued"), states.count("running"), len(master.queue)
                return self.answer(
                    200,
                    {"queued": queued, "processing": running, "queue_length": length, "total_tasks": len(states)},
                )
            if len(parts) == 2 and parts[0] == "tasks":
                with master.lock:
                    task = master.registry.get(parts[1])
                    if task is None:
                        return self.answer(404, {"detail": "Task not found"})
                    fields = {name: task[name] for name in ("status", "position", "queued_at")}
                return self.answer(200, {"eval_id": parts[1], **fields, "message": None})
            return self.answer(404, {"detail": "Not Found"})

        def claim(self) -> None:
            master.keys.append(self.headers.get("X-API-Key"))
            if master.turned_away(self, check_key=master.claims_need_key):
                return None
            with master.lock:
                master.polls.append(time.monotonic())
                if master.garbage:
                    master.garbage -= 1
                    return self.answer(200, raw=b"<html>oh!")
                if master.hostile:
                    return self.answer(200, raw=master.hostile.pop(0), content_type="application/json")
            task = master.next_task()
            if task is None:
                return self.answer(200, raw=b"null", content_type="application/json")
            return self.answer(200, task)

        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts == ["tasks"]:
                return self.enqueue()
            if len(parts) != 3 or parts[0] != "tasks" or parts[2] not in ("complete", "fail"):
                return self.answer(404, {"detail": "Not Found"})
            master.keys.append(self.headers.get("X-API-Key"))
            if master.turned_away(self, report=True, check_key=master.claims_need_key):
                return None
            body = self.json_body()
            if not isinstance(body, dict):
                return self.answer(422, {"detail": [{"loc": ["body"], "msg": "Input should be a valid dictionary"}]})
            status, said = master.finish(parts[1], parts[2], body)
            return self.answer(status, said)

        def enqueue(self) -> None:
            if master.api_key and self.headers.get("X-API-Key") != master.api_key:
                return self.answer(401, {"detail": "Invalid API key"})
            body = self.json_body()
            problem = _invalid(body)
            if problem is not None:
                return self.answer(422, {"detail": [{"loc": ["body"], "msg": problem}]})
            task = {name: body.get(name, default) for name, (default, _) in TASK_FIELDS.items()}
            with master.lock:
                position = master._enqueue({**task, "eval_id": body["eval_id"], "code": body["code"]})
            return self.answer(200, {"eval_id": body["eval_id"], "status": "queued", "position": position})

        def do_DELETE(self) -> None:
            if self.path.strip("/") != "tasks":
                return self.answer(405, {"detail": "Method Not Allowed"})
            with master.lock:
                count = len(master.queue)
                master.queue.clear()
                master.registry.clear()
            return self.answer(200, {"status": "cleared", "tasks_removed": count})

    return Handler


@contextmanager
def tasks_master(port: int = 0, master: TasksMaster | None = None, **fields: Any) -> Iterator[TasksMaster]:
    """The double on 127.0.0.1 (a free port unless `port`), for the duration of the block; pass `master` to serve
    the same state again (the service back after an outage)."""
    master = master or TasksMaster(**fields)
    with serving(_handler(master), port) as url:
        master.url = url
        yield master
