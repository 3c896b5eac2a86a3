"""A plain web server on 127.0.0.1 that answers each path as told and keeps every request: an archive server, a
redirector, a port that answers 403, or a callback receiver, for tests of what the worker may reach."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.fakes import JsonHandler, serving


@dataclass(frozen=True)
class Answer:
    """What a path answers, to any method."""

    status: int = 200
    body: bytes = b""
    location: str | None = None
    """Sent as Location (a redirect)."""


@dataclass
class Site:
    routes: dict[str, Answer]
    hits: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every request, answered or not."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def requests(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.hits)


@contextmanager
def site(routes: Mapping[str, Answer]) -> Iterator[Site]:
    """Serve `routes` (any other path: 404) on a free port of 127.0.0.1 for the duration of the block."""
    state = Site(dict(routes))

    class Handler(JsonHandler):
        def _serve(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.hits.append((self.command, self.path))
            answer = state.routes.get(self.path, Answer(404, b"not here"))
            self.send_response(answer.status)
            if answer.location is not None:
                self.send_header("Location", answer.location)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = _serve

    with serving(Handler) as url:
        state.url = url
        yield state
