"""A fake callback receiver: answers each POST with the next status it is given, and keeps every request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes import serving


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """State of the fake: the statuses to answer, in order (then `then`), and the requests received."""

    answers: list[int] = field(default_factory=list)
    then: int = 200
    retry_after: str | None = None
    """Sent as Retry-After with every answer but 2xx, when set."""
    received: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Delivery]:
        """The requests, once at least `count` have arrived."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise AssertionError(f"only {len(self.received)} of {count} callbacks arrived: {self.received}")
            return list(self.received)

    def delivered(self) -> list[Delivery]:
        """The requests it answered 2xx."""
        with self.lock:
            return [item for item in self.received if 200 <= item.answered < 300]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.arrived:
                status = receiver.answers.pop(0) if receiver.answers else receiver.then
                headers = {key.lower(): value for key, value in self.headers.items()}
                receiver.received.append(Delivery(self.path, headers, body, status))
                receiver.arrived.notify_all()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            if receiver.retry_after is not None and not 200 <= status < 300:
                self.send_header("Retry-After", receiver.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def receiving(port: int = 0, receiver: Receiver | None = None, **fields: Any) -> Iterator[Receiver]:
    """A fake receiver on 127.0.0.1 (a free port unless `port`) for the duration of the block; pass `receiver` to
    serve the same state again."""
    receiver = receiver or Receiver(**fields)
    with serving(_handler(receiver), port) as url:
        receiver.url = url
        yield receiver
