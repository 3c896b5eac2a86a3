"""`hatchway run` through a worker that is already running, as `docker run` goes through dockerd: the job is
POSTed, its stdout and stderr stream back as they are written, and its exit code is ours.

A worker keeps started containers ready, so this is the fast way to run one job: the command pays for Python's
start, the standard library's HTTP client and one request, not for the worker's modules, an engine connection
and a container start. It uses only the standard library for that reason (httpx and pydantic alone cost more
than `docker run` takes). The worker validates the job; its answers are the same as for `hatchway submit`.
"""

from __future__ import annotations

import argparse
import codecs
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse
from typing import IO, Any

from hatchway.cli import jobspec
from hatchway.cli.exits import CommandError, Exit, job_ending

_CONNECT_S = 0.25  # how long a worker on this machine may take to accept a connection before we run locally
_FINAL = ("succeeded", "failed", "killed")


class _Worker:
    """A running worker's address and token, reached with http.client."""

    def __init__(self, url: str, token: str | None) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.url = url.rstrip("/")
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if self.https else 80)
        self.base = parsed.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def answers(self) -> bool:
        """Whether something listens at the address (a refused or unanswered connection: no worker runs)."""
        try:
            socket.create_connection((self.host, self.port), timeout=_CONNECT_S).close()
        except OSError:
            return False
        return True

    def connection(self, timeout_s: float | None = 30.0) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=timeout_s)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One JSON request; the status and the decoded answer."""
        connection = self.connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {**self.headers, **({"Content-Type": "application/json"} if data is not None else {})}
            connection.request(method, self.base + path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except OSError as exc:
            raise CommandError(f"cannot reach the worker at {self.url}: {exc}", Exit.UNREACHABLE) from exc
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            return response.status, {"error": {"code": "http_error", "message": raw[:500].decode(errors="replace")}}


def worker_for(args: argparse.Namespace) -> _Worker | None:
    """The worker `hatchway run` should go through, or None to run the job in-process: none with `--local`, and
    none when nothing listens at `--url` (or $HATCHWAY_URL)."""
    if args.local:
        return None
    worker = _Worker(args.url, args.token or None)
    return worker if worker.answers() else None


def run_attached(worker: _Worker, args: argparse.Namespace) -> int:
    """Run the job the command line describes on `worker`; the exit code to leave with."""
    body = {key: value for key, value in jobspec.job_fields(args).items() if value is not None}
    status, job = worker.request("POST", "/jobs?wait=true" if args.json else "/jobs", body)
    if status >= 400:
        error = job.get("error", {}) if isinstance(job, dict) else {}
        message = f"the job cannot run: {error.get('message') or status}"
        raise CommandError(message, Exit.FAILED if status in (401, 404) else Exit.NOT_RUN)
    try:
        if not args.json:
            copies = [
                _follow(worker, job["id"], "stdout", sys.stdout),
                _follow(worker, job["id"], "stderr", sys.stderr),
            ]
            for copy in copies:
                copy.join()
        job = _final(worker, job)
    except KeyboardInterrupt:  # as when the job runs in-process: Ctrl-C stops it
        worker.request("DELETE", f"/jobs/{job['id']}")
        job = _final(worker, job)
    if args.json:
        print(json.dumps(job, indent=2))
    ending = job_ending(job)
    if ending.message and not args.json:
        print(f"hatchway: {ending.message}", file=sys.stderr)
    return ending.code


def _follow(worker: _Worker, job_id: str, stream: str, out: IO[str]) -> threading.Thread:
    """Copy the job's `stream` to `out` as the worker sends it, until the job ends, in a thread of its own."""

    def copy() -> None:
        connection = worker.connection(timeout_s=None)  # a quiet job may print nothing for long
        try:
            path = f"{worker.base}/jobs/{job_id}/logs?stream={stream}&follow=true"
            connection.request("GET", path, headers=worker.headers)
            response = connection.getresponse()
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two chunks
            while chunk := response.read1(65536):
                out.write(text.decode(chunk))
                out.flush()
        except OSError:
            pass  # the final state, read next, says how it ended
        finally:
            connection.close()

    thread = threading.Thread(target=copy, name=f"follow-{stream}", daemon=True)
    thread.start()
    return thread


def _final(worker: _Worker, job: dict[str, Any]) -> dict[str, Any]:
    """The job once it has ended (its output streams end only once it has: a poll or two at most)."""
    pause_s = 0.01
    while job.get("state") not in _FINAL:
        time.sleep(pause_s)  # a client has no event to wait on
        pause_s = min(pause_s * 2, 0.5)
        status, job = worker.request("GET", f"/jobs/{job['id']}")
        if status >= 400:
            raise CommandError(f"the worker lost the job: {job}", Exit.NOT_RUN)
    return job
