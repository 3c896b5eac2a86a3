"""Fake masters the worker pulls work from, and fake receivers of its callbacks, speaking real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], port: int = 0) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 (a free port unless `port`) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class JsonHandler(BaseHTTPRequestHandler):
    """What a fake master's handler shares: silence, JSON (or raw) answers, and a JSON body read."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def answer(self, status: int, body: Any = None, raw: bytes | None = None, content_type: str | None = None) -> None:
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        kind = content_type or ("application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(data)

    def json_body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")


@dataclass
class FakeMaster:
    """What fake masters share: the API key they take, and faults to inject (500 to every n-th request to the
    API, 503 to every report) with the counts that show them."""

    api_key: str = "key-of-the-test"
    fail_every: int = 0
    """Answer 500 to every n-th request for work and every n-th report, counted apart (0: never). Counted apart so
    that a report's retries cannot fall in step with the polls and fail again and again."""
    refuse_reports: bool = False
    """Answer 503 to every report (to leave them pending)."""
    report_delay_s: float = 0.0
    """Take this long to answer each report (a slow master: reports from several workers then overlap)."""
    report_attempts: int = 0
    requests: int = 0
    unkeyed: list[str] = field(default_factory=list)
    """The paths of requests to the API that came without the key (answered 401 where the master checks it)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def turned_away(self, handler: JsonHandler, *, report: bool = False, check_key: bool = True) -> bool:
        """Answer a request the master does not serve (a wrong key, unless `check_key` is False, a refused report,
        an injected fault); True if it was answered so. A request without the key is recorded in `unkeyed` either
        way."""
        if handler.headers.get("X-API-Key") != self.api_key:
            with self.lock:
                self.unkeyed.append(handler.path)
            if check_key:
                handler.answer(401, {"error": "bad key"})
                return True
        if report and self.report_delay_s:
            time.sleep(self.report_delay_s)  # this request's own thread: the master answers others meanwhile
        with self.lock:
            self.report_attempts += int(report)
            self.requests += 1
            refused = report and self.refuse_reports
            counted = self.report_attempts if report else self.requests - self.report_attempts
            faulty = bool(self.fail_every) and counted % self.fail_every == 0
        if refused or faulty:
            handler.answer(503 if refused else 500, {"error": "not now" if refused else "injected"})
            return True
        return False
