"""Reading a running job's output from the worker of the fleet that runs it (jobs/peer_logs.py), against a real HTTP
peer: the request it makes (the logs endpoint, live, both streams, the shared token, marked as a worker's), the
text as it comes, and each way the peer can fail it, said clearly."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from hatchway.errors import WorkerUnreachable
from hatchway.jobs.peer_logs import FORWARDED_BY, PeerLogs
from hatchway.models import Job, JobState
from tests.fakes import serving
from tests.unit.test_pools import make_job


class Peer(BaseHTTPRequestHandler):
    """Another worker: answers its logs endpoint with `status`, two chunks of output, recording each request."""

    status: ClassVar[int] = 200
    requests: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        Peer.requests.append((self.path, dict(self.headers)))
        if Peer.status != 200:
            self.send_response(Peer.status)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"forbidden")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in (b"first\n", b"second\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[str]:
    Peer.status, Peer.requests = 200, []
    with serving(Peer) as url:
        yield url


def running_on(worker_id: str | None) -> Job:
    return make_job().model_copy(update={"id": "j1", "state": JobState.RUNNING, "worker_id": worker_id})


async def read(logs: PeerLogs, job: Job) -> str:
    try:
        return "".join([text async for text in logs.follow(job)])
    finally:
        await logs.close()


async def addresses(known: dict[str, str], worker_id: str) -> str | None:
    return known.get(worker_id)


async def test_it_reads_the_live_output_of_both_streams_with_the_fleet_s_token(peer: str) -> None:
    logs = PeerLogs("a", lambda worker_id: addresses({"b": peer}, worker_id), "s3cret")
    job = running_on("b")
    assert logs.elsewhere(job) and not logs.elsewhere(running_on("a")) and not logs.elsewhere(running_on(None))
    assert await read(logs, job) == "first\nsecond\n"
    [(path, headers)] = Peer.requests
    assert path == "/jobs/j1/logs?follow=true&stream=both"
    assert headers["Authorization"] == "Bearer s3cret" and headers[FORWARDED_BY] == "a"


async def test_an_open_api_gets_no_token(peer: str) -> None:
    assert await read(PeerLogs("a", lambda w: addresses({"b": peer}, w), None), running_on("b")) == "first\nsecond\n"
    assert "Authorization" not in Peer.requests[0][1]


async def test_a_refusal_an_unknown_worker_and_one_that_does_not_answer_are_said(peer: str) -> None:
    Peer.status = 401
    with pytest.raises(WorkerUnreachable, match="answered 401 for job j1's output: forbidden"):
        await read(PeerLogs("a", lambda w: addresses({"b": peer}, w), "wrong"), running_on("b"))
    with pytest.raises(WorkerUnreachable, match="worker c runs job j1, and it is not in the fleet's register"):
        await read(PeerLogs("a", lambda w: addresses({"b": peer}, w), None), running_on("c"))
    with serving(Peer) as gone:
        pass  # a port nothing listens on any more
    with pytest.raises(WorkerUnreachable, match="does not answer at"):
        await read(PeerLogs("a", lambda w: addresses({"b": gone}, w), None), running_on("b"))
