"""A fake of the submission judge's master (Stos, `kind: submissions`), faithful to its worker API:

- `POST /worker/submission`: the oldest PENDING submission, now RUNNING, as `{id, task_url, submission_url, lang,
  mainfile, problem_specification}`; 404 `{"detail": "No pending submissions."}` when there is none;
- `PUT /worker/submissions/{id}/result`: the body validated as the master's schema does (422 otherwise); 404 for an
  unknown id, 400 for one not RUNNING; else stored, the submission COMPLETED, and 204;
- every request without the right `X-API-Key` gets 403.

Archives are built in the test: served over http (`/archives/NAME.zip`, which the real master does not serve; its
archives are on a shared volume) or, with `shared_dir`, written there and handed out as `file://` URLs, as the real
deployment does. Faults: `fail_every` (500), `garbage` (a claim answered with something not JSON), and for the http
archives `downloads_failing` (503), `downloads_refused` (403), `fail_downloads_every` (500)."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import EllipsisType
from typing import Any

from pydantic import BaseModel, ValidationError

from tests.fakes import FakeMaster, JsonHandler, serving

MIB = 1024 * 1024


class Status(Enum):
    """The master's SubmissionStatus (REPORTED is set by the master's other clients, never by a worker)."""

    PENDING = 1
    RUNNING = 2
    COMPLETED = 3


class TestResultBody(BaseModel):
    test_name: str = ""
    grade: bool = False
    ret_code: int = 0
    time: float = 0
    memory: float = 0
    info: str = ""


class ResultBody(BaseModel):
    """What the master accepts as a result (its own types, with pydantic's lax conversions)."""

    points: int = 0
    info: str | None = None
    test_results: list[TestResultBody] = []


def make_zip(files: Mapping[str, str | bytes]) -> bytes:
    """A zip holding `files` under exactly the names given, in that order (a name with `..` included, for hostile
    archives)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def specified(name: str, **given: Any) -> dict[str, Any]:
    """One test of a problem_specification as the master stores it: every field, defaults filled in."""
    return {"test_name": name, "time_limit": 2, "total_memory_limit": 256 * MIB, "stack_size_limit": None} | given


@dataclass
class JudgeMaster(FakeMaster):
    """State of the fake: submissions and their status, archives to serve, results received, faults to inject."""

    shared_dir: Path | None = None
    """Write archives here and hand them out as file:// URLs (None: serve them over http)."""
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every submission by id, as the worker is handed it, in the order submitted."""
    status: dict[str, Status] = field(default_factory=dict)
    archives: dict[str, bytes] = field(default_factory=dict)
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(id, body) of each result accepted (204), in the order they arrived."""
    answers: list[tuple[str, int]] = field(default_factory=list)
    """(id, status) of every result request that passed the key and the faults, accepted or not."""
    garbage: int = 0
    """Answer this many next requests for work with a body that is not JSON."""
    downloads_failing: int = 0
    """Answer this many next archive downloads with 503."""
    downloads_refused: int = 0
    """Answer this many next archive downloads with 403."""
    fail_downloads_every: int = 0
    """Answer every n-th archive download with 500 (0: never)."""
    archives_need_key: bool = False
    """Serve archives only to requests carrying the API key."""
    downloads: list[tuple[str, bool]] = field(default_factory=list)
    """(path, whether it carried the key) of every archive download asked for."""
    claimed: int = 0
    changed: threading.Condition = field(init=False)
    url: str = ""

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def archive(self, name: str, files: Mapping[str, str | bytes]) -> str:
        """A zip of `files` as `name`; returns its URL (file:// in `shared_dir`, else http)."""
        data = make_zip(files)
        with self.lock:
            self.archives[name] = data
        if self.shared_dir is not None:
            path = self.shared_dir / f"{name}.zip"
            path.write_bytes(data)
            return path.as_uri()
        return f"{self.url}/archives/{name}.zip"

    def add(
        self,
        submission_id: str | int,
        lang: str,
        sources: Mapping[str, str | bytes],
        tests: Mapping[str, tuple[str, str]],
        *,
        mainfile: str | EllipsisType | None = ...,
        specification: list[dict[str, Any]] | None = None,
        folders: bool = False,
        **fields: Any,
    ) -> None:
        """Submit: `tests` are name -> (input, expected output), zipped flat as the master's adapter does (with
        `folders`, in hatchway's in/ out/ and src/ layout). `mainfile` defaults to the first source, as the adapter
        sets it; `specification` is problem_specification's tests (see `specified`)."""
        task = {f"{'in/' if folders else ''}{name}.in": given for name, (given, _) in tests.items()}
        task |= {f"{'out/' if folders else ''}{name}.out": expected for name, (_, expected) in tests.items()}
        src = {f"{'src/' if folders else ''}{path}": text for path, text in sources.items()}
        item = {
            "id": str(submission_id),
            "task_url": self.archive(f"task-{submission_id}", task),
            "submission_url": self.archive(f"submission-{submission_id}", src),
            "lang": lang,
            "mainfile": next(iter(sources)) if mainfile is ... else mainfile,
            "problem_specification": None
            if specification is None
            else {"id": f"problem-{submission_id}", "tests": specification},
        }
        self.put({**item, **fields})

    def put(self, item: dict[str, Any]) -> None:
        """Submit an item exactly as given (PENDING)."""
        with self.lock:
            self.submissions[str(item.get("id"))] = item
            self.status[str(item.get("id"))] = Status.PENDING

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

    def pending(self) -> list[str]:
        with self.lock:
            return [sid for sid, status in self.status.items() if status is Status.PENDING]


def _handler(master: JudgeMaster) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def keyed(self) -> bool:
            """Whether the request carries the key; if not, it is answered 403 as the master does."""
            if self.headers.get("X-API-Key") == master.api_key:
                return True
            with master.lock:
                master.unkeyed.append(self.path)
            self.answer(403, {"detail": "Invalid or missing API Key"})
            return False

        def do_GET(self) -> None:
            name = self.path.removeprefix("/archives/").removesuffix(".zip")
            with master.lock:
                master.downloads.append((self.path, self.headers.get("X-API-Key") == master.api_key))
                data = master.archives.get(name)
                if master.archives_need_key and self.headers.get("X-API-Key") != master.api_key:
                    return self.answer(403, {"detail": "Invalid or missing API Key"})
                every = master.fail_downloads_every
                status = 503 if master.downloads_failing else 403 if master.downloads_refused else 200
                if status == 200 and every and len(master.downloads) % every == 0:
                    status = 500
                master.downloads_failing -= int(status == 503)
                master.downloads_refused -= int(status == 403)
            if status != 200:
                return self.answer(status, {"detail": "injected"})
            if not self.path.startswith("/archives/") or data is None:
                return self.answer(404, {"detail": "Not Found"})
            return self.answer(200, raw=data, content_type="application/zip")

        def do_POST(self) -> None:
            if self.path != "/worker/submission":
                return self.answer(404, {"detail": "Not Found"})
            if not self.keyed() or master.turned_away(self, check_key=False):
                return None
            with master.changed:
                if master.garbage:
                    master.garbage -= 1
                    return self.answer(200, raw=b"<html>oh!")
                pending = [sid for sid, status in master.status.items() if status is Status.PENDING]
                if not pending:
                    return self.answer(404, {"detail": "No pending submissions."})
                master.status[pending[0]] = Status.RUNNING
                master.claimed += 1
                master.changed.notify_all()
                item = master.submissions[pending[0]]
            return self.answer(200, item)

        def do_PUT(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[:2] != ["worker", "submissions"] or parts[3] != "result":
                return self.answer(404, {"detail": "Not Found"})
            if not self.keyed() or master.turned_away(self, report=True, check_key=False):
                return None
            try:
                body = ResultBody.model_validate(self.json_body()).model_dump()
            except (ValidationError, ValueError) as exc:
                return self.answer(422, {"detail": str(exc)})
            submission_id = parts[2]
            with master.changed:
                status = master.status.get(submission_id)
                code = 404 if status is None else 400 if status is not Status.RUNNING else 204
                master.answers.append((submission_id, code))
                if code == 204:
                    master.status[submission_id] = Status.COMPLETED
                    master.results.append((submission_id, body))
                master.changed.notify_all()
            if code == 404:
                return self.answer(404, {"detail": "Submission not found."})
            if code == 400:
                return self.answer(400, {"detail": "Submission is not in running state."})
            self.send_response(204)
            self.end_headers()
            return None

    return Handler


@contextmanager
def judge_master(**fields: Any) -> Iterator[JudgeMaster]:
    """A fake judge's master on 127.0.0.1 for the duration of the block."""
    master = JudgeMaster(**fields)
    with serving(_handler(master)) as url:
        master.url = url
        yield master
