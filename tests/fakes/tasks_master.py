"""A fake queue service (`kind: tasks`): hands out queued tasks and records every report it gets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes import FakeMaster, JsonHandler, serving


@dataclass
class TasksMaster(FakeMaster):
    """State of the fake: tasks to hand out, reports received, and faults to inject."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    reports: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """(eval_id, "complete" | "fail", body), in the order they arrived and were accepted."""
    garbage: int = 0
    """Answer this many next GETs for work with a body that is not JSON."""
    hostile: list[bytes] = field(default_factory=list)
    """Bodies to answer the next GETs for work with (200, application/json), one each, before any task."""
    polls: list[float] = field(default_factory=list)
    """When each GET for work arrived (time.monotonic())."""
    claimed: int = 0
    reported: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.reported = threading.Condition(self.lock)

    def add(self, eval_id: str, code: str | None, engine: str | None = "docker") -> None:
        with self.lock:
            self.tasks.append({"eval_id": eval_id, "code": code, "engine": engine})

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


def _handler(master: TasksMaster) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if master.turned_away(self):
                return None
            if self.path != "/tasks/next":
                return self.answer(404)
            with master.lock:
                master.polls.append(time.monotonic())
                if master.garbage:
                    master.garbage -= 1
                    return self.answer(200, raw=b"<html>oh!")
                if master.hostile:
                    return self.answer(200, raw=master.hostile.pop(0))
                if not master.tasks:
                    return self.answer(204)
                task = master.tasks.pop(0)
                master.claimed += 1
                master.reported.notify_all()
            return self.answer(200, task)

        def do_POST(self) -> None:
            if master.turned_away(self, report=True):
                return None
            body = self.json_body()
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "tasks" or parts[2] not in ("complete", "fail"):
                return self.answer(404)
            with master.reported:
                master.reports.append((parts[1], parts[2], body))
                master.reported.notify_all()
            return self.answer(200, {"ok": True})

    return Handler


@contextmanager
def tasks_master(port: int = 0, master: TasksMaster | None = None, **fields: Any) -> Iterator[TasksMaster]:
    """A fake queue service on 127.0.0.1 (a free port unless `port`), for the duration of the block; pass
    `master` to serve the same state again (the master back after an outage)."""
    master = master or TasksMaster(**fields)
    with serving(_handler(master), port) as url:
        master.url = url
        yield master
