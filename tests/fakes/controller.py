"""A fake controller (the cluster worker's): takes registrations and heartbeats, and can refuse or forget."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes import serving


@dataclass
class Controller:
    refuse_registrations: int = 0
    """Answer 503 to this many registrations first."""
    registrations: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def wait(self, what: str, count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(getattr(self, what)) >= count, timeout_s):
                raise AssertionError(f"only {len(getattr(self, what))} {what} of {count}")
            return list(getattr(self, what))

    def forget(self, worker_id: str) -> None:
        with self.lock:
            self.known.discard(worker_id)


@contextmanager
def controller(**fields: Any) -> Iterator[Controller]:
    state = Controller(**fields)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            parts = self.path.strip("/").split("/")
            with state.changed:
                if parts == ["workers", "register"]:
                    if state.refuse_registrations:
                        state.refuse_registrations -= 1
                        return self._answer(503)
                    state.registrations.append(body)
                    state.known.add(body["worker_id"])
                    state.changed.notify_all()
                    return self._answer(200)
                if len(parts) == 3 and parts[0] == "workers" and parts[2] == "heartbeat":
                    if parts[1] not in state.known:
                        return self._answer(404)
                    state.heartbeats.append(body)
                    state.changed.notify_all()
                    return self._answer(200)
            return self._answer(404)

    with serving(Handler) as url:
        state.url = url
        yield state
