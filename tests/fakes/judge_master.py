"""A fake submission judge's master (`kind: submissions`): hands out submissions, serves their archives (built in
the test), and records every result it gets."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes import FakeMaster, JsonHandler, serving


def make_zip(files: Mapping[str, str | bytes]) -> bytes:
    """A zip holding `files` under exactly the names given (a name with `..` included, for hostile archives)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass
class JudgeMaster(FakeMaster):
    """State of the fake: submissions to hand out, archives to serve, results received, and faults to inject.

    Faults (`fail_every`, `garbage`, `refuse_reports`) apply to the master's API; `downloads_failing` and
    `downloads_refused` to the archive downloads."""

    submissions: list[dict[str, Any]] = field(default_factory=list)
    archives: dict[str, bytes] = field(default_factory=dict)
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(id, body) of each result, in the order they arrived and were accepted."""
    garbage: int = 0
    """Answer this many next requests for work with a body that is not JSON."""
    downloads_failing: int = 0
    """Answer this many next archive downloads with 503."""
    downloads_refused: int = 0
    """Answer this many next archive downloads with 403."""
    archives_need_key: bool = False
    """Serve archives only to requests carrying the API key, as the master's API does."""
    downloads: list[tuple[str, bool]] = field(default_factory=list)
    """(path, whether it carried the key) of every archive download asked for."""
    claimed: int = 0
    changed: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def archive(self, name: str, files: Mapping[str, str | bytes]) -> str:
        """Serve a zip of `files` as `name`; returns its URL."""
        with self.lock:
            self.archives[name] = make_zip(files)
        return f"{self.url}/archives/{name}.zip"

    def add(
        self,
        submission_id: str | int,
        lang: str | None,
        sources: Mapping[str, str | bytes],
        tests: Mapping[str, tuple[str, str]],
        mainfile: str | None = None,
        **fields: Any,
    ) -> None:
        """Queue a submission: `sources` go under src/, `tests` are name -> (input, expected output)."""
        task = {f"in/{name}.in": given for name, (given, _) in tests.items()}
        task |= {f"out/{name}.out": expected for name, (_, expected) in tests.items()}
        item = {
            "id": submission_id,
            "task_url": self.archive(f"task-{submission_id}", task),
            "submissions_url": self.archive(
                f"submission-{submission_id}", {f"src/{path}": text for path, text in sources.items()}
            ),
            "lang": lang,
            "mainfile": mainfile or next(iter(sources)),
            "problem_specification": {},
        }
        self.put({**item, **fields})

    def put(self, item: dict[str, Any]) -> None:
        """Queue an item exactly as given."""
        with self.lock:
            self.submissions.append(item)

    def wait_results(self, count: int, timeout_s: float = 120) -> dict[str, dict[str, Any]]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.results) >= count, timeout_s):
                raise AssertionError(f"only {len(self.results)} of {count} results arrived: {self.results}")
            return dict(self.results)

    def wait_claimed(self, count: int, timeout_s: float = 30) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.claimed >= count, timeout_s):
                raise AssertionError(f"only {self.claimed} of {count} submissions were taken")

    def reported_ids(self) -> list[str]:
        with self.lock:
            return sorted(submission_id for submission_id, _ in self.results)


def _handler(master: JudgeMaster) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            name = self.path.removeprefix("/archives/").removesuffix(".zip")
            with master.lock:
                master.downloads.append((self.path, self.headers.get("X-API-Key") == master.api_key))
                data = master.archives.get(name)
                if master.archives_need_key and self.headers.get("X-API-Key") != master.api_key:
                    return self.answer(401, {"error": "bad key"})
                status = 503 if master.downloads_failing else 403 if master.downloads_refused else 200
                master.downloads_failing -= int(status == 503)
                master.downloads_refused -= int(status == 403)
            if status != 200:
                return self.answer(status, {"error": "injected"})
            if not self.path.startswith("/archives/") or data is None:
                return self.answer(404)
            return self.answer(200, raw=data)

        def do_POST(self) -> None:
            if master.turned_away(self):
                return None
            if self.path != "/worker/submission":
                return self.answer(404)
            with master.changed:
                if master.garbage:
                    master.garbage -= 1
                    return self.answer(200, raw=b"<html>oh!")
                if not master.submissions:
                    return self.answer(404, {"detail": "no submissions"})
                item = master.submissions.pop(0)
                master.claimed += 1
                master.changed.notify_all()
            return self.answer(200, item)

        def do_PUT(self) -> None:
            if master.turned_away(self, report=True):
                return None
            body = self.json_body()
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[:2] != ["worker", "submissions"] or parts[3] != "result":
                return self.answer(404)
            with master.changed:
                master.results.append((parts[2], body))
                master.changed.notify_all()
            return self.answer(200, {"ok": True})

    return Handler


@contextmanager
def judge_master(**fields: Any) -> Iterator[JudgeMaster]:
    """A fake judge's master on 127.0.0.1 for the duration of the block."""
    master = JudgeMaster(**fields)
    with serving(_handler(master)) as url:
        master.url = url
        yield master
