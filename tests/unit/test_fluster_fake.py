"""The Fluster controller's test double (tests/fakes/fluster_controller.py) against the Connect codec, with no
hatchway worker: it serves RegisterWorker and ReportJobState in both encodings as the real controller does
(heartbeats, reports it ignores, retries), refuses and goes down when told, dispatches RunJob as the real one builds
it, and calls a worker's other methods; a stub WorkerService made of the codec stands in for the worker."""

from __future__ import annotations

import io
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from hatchway.fluster import connect, methods
from hatchway.fluster.connect import Code, ConnectError, Encoding
from hatchway.fluster.proto import cluster_pb2 as pb
from tests.fakes import serving
from tests.fakes.fluster_controller import FlusterController, fluster_controller
from tests.fakes.fluster_jobs import serialized_entrypoint


class StubWorker:
    """A WorkerService that answers from `answers` (method name -> function of the request) and keeps every
    request with the content type it came in."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, Any]] = []
        self.answers: dict[str, Callable[[Any], Any]] = {}
        self.lock = threading.Lock()
        self.address = ""


@contextmanager
def stub_worker() -> Iterator[StubWorker]:
    stub = StubWorker()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            method = methods.WORKER_METHODS[self.path]
            request, encoding = connect.read_request(
                method, http_method="POST", content_type=self.headers["Content-Type"], body=body
            )
            with stub.lock:
                stub.received.append((method.name, self.headers["Content-Type"], request))
            try:
                reply = connect.message_reply(stub.answers[method.name](request), encoding)
            except ConnectError as error:
                reply = connect.error_reply(error)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    with serving(Handler) as url:
        stub.address = url.removeprefix("http://")
        yield stub


def register(
    controller: FlusterController, worker_id: str, address: str, encoding: Encoding = Encoding.PROTO, cpu: int = 2
) -> pb.Controller.RegisterWorkerResponse:
    request = pb.Controller.RegisterWorkerRequest(
        worker_id=worker_id,
        address=address,
        resources=pb.ResourceSpec(cpu=cpu, memory="4g"),
        metadata=pb.WorkerMetadata(hostname="box", cpu_count=cpu),
    )
    with httpx.Client() as client:
        return connect.call(client, controller.url, methods.REGISTER_WORKER, request, encoding=encoding)


def report(controller: FlusterController, encoding: Encoding = Encoding.PROTO, **fields: Any) -> None:
    with httpx.Client() as client:
        answer = connect.call(
            client, controller.url, methods.REPORT_JOB_STATE, pb.Controller.ReportJobStateRequest(**fields),
            encoding=encoding,
        )  # fmt: skip
    assert answer == pb.Controller.ReportJobStateResponse()


@pytest.fixture
def controller() -> Iterator[FlusterController]:
    with fluster_controller() as running:
        yield running


@pytest.mark.parametrize("encoding", list(Encoding))
def test_registration_is_accepted_and_a_second_one_is_a_heartbeat_that_keeps_the_address(
    controller: FlusterController, encoding: Encoding
) -> None:
    assert register(controller, "w1", "127.0.0.1:9001", encoding).accepted
    first = controller.workers["w1"].last_heartbeat_ms
    assert register(controller, "w1", "127.0.0.1:9999", encoding, cpu=4).accepted
    worker = controller.workers["w1"]
    assert worker.address == "127.0.0.1:9001"  # the real controller never updates it
    assert worker.resources.cpu == 4 and worker.healthy and worker.last_heartbeat_ms >= first
    assert [r.address for r in controller.registrations()] == ["127.0.0.1:9001", "127.0.0.1:9999"]
    assert {c.encoding for c in controller.calls} == {encoding}


def test_refused_calls_are_errors_and_only_served_ones_count(controller: FlusterController) -> None:
    controller.refuse_next(2, method=methods.REGISTER_WORKER)
    for _ in range(2):
        with pytest.raises(ConnectError) as raised:
            register(controller, "w1", "127.0.0.1:1")
        assert (raised.value.code, raised.value.http_status) == (Code.UNAVAILABLE, 503)
    report(controller, worker_id="w1", job_id="nobody")  # another method is not refused
    assert register(controller, "w1", "127.0.0.1:1").accepted
    assert len(controller.registrations()) == 1
    assert [c.status for c in controller.calls] == [503, 503, 200, 200]


def test_down_refuses_connections_until_up_on_the_same_port(controller: FlusterController) -> None:
    port = controller.port
    with controller.outage():
        with pytest.raises(ConnectError) as raised:
            register(controller, "w1", "127.0.0.1:1")
        assert raised.value.code is Code.UNAVAILABLE
    assert controller.port == port
    assert register(controller, "w1", "127.0.0.1:1").accepted


def test_what_is_not_a_connect_call_gets_a_bare_status(controller: FlusterController) -> None:
    path = methods.REGISTER_WORKER.path
    with httpx.Client(base_url=controller.url) as client:
        assert client.post("/fluster.cluster.ControllerService/LaunchJob", content=b"{}").status_code == 404
        refused = client.post(path, content=b"{}", headers={"Content-Type": "text/plain"})
        assert refused.status_code == 415
        assert refused.headers["Accept-Post"] == "application/json, application/proto"
        assert client.get(path).status_code == 405
        bad = client.post(path, content=b"{oops", headers={"Content-Type": "application/json"})
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_argument")
    assert controller.registrations() == []


@pytest.mark.parametrize("encoding", list(Encoding))
def test_dispatch_sends_run_job_as_the_real_controller_builds_it(
    controller: FlusterController, encoding: Encoding
) -> None:
    with stub_worker() as worker:
        worker.answers["RunJob"] = lambda r: pb.Worker.RunJobResponse(job_id=r.job_id, state=pb.JOB_STATE_PENDING)
        register(controller, "w1", worker.address)
        job = controller.launch(
            "exp/train",
            serialized_entrypoint(print, "hello"),
            bundle_gcs_path="file:///tmp/b.zip",
            environment=pb.EnvironmentConfig(pip_packages=["numpy"], env_vars={"K": "v"}, extras=["gpu"]),
            resources=pb.ResourceSpec(cpu=1, memory="256m", disk="1g"),
            ports=["actor"],
        )
        answer = controller.dispatch("exp/train", encoding=encoding)
    assert answer == pb.Worker.RunJobResponse(job_id="exp/train", state=pb.JOB_STATE_PENDING)
    ((name, content_type, sent),) = worker.received
    assert (name, content_type) == ("RunJob", encoding.content_type)
    assert sent == pb.Worker.RunJobRequest(
        job_id="exp/train",
        attempt_id=0,
        serialized_entrypoint=job.serialized_entrypoint,
        environment=pb.EnvironmentConfig(workspace="", env_vars={"K": "v"}),  # no pip_packages, no extras
        bundle_gcs_path="file:///tmp/b.zip",
        resources=pb.ResourceSpec(cpu=1, memory="256m"),  # no disk
        ports=["actor"],
    )
    assert not sent.HasField("timeout_seconds")
    assert (job.state, job.worker_id) == (pb.JOB_STATE_RUNNING, "w1")
    assert controller.workers["w1"].running_jobs == {"exp/train"}


def test_a_failed_dispatch_puts_the_job_back_and_the_worker_out_until_its_next_heartbeat(
    controller: FlusterController,
) -> None:
    with stub_worker() as worker:

        def broken(request: Any) -> Any:
            raise ConnectError(Code.INTERNAL, "Error running job: disk full")

        worker.answers["RunJob"] = broken
        register(controller, "w1", worker.address)
        controller.launch("j", b"x")
        error = controller.dispatch("j")
    assert isinstance(error, ConnectError) and error.code is Code.INTERNAL
    job, w1 = controller.jobs["j"], controller.workers["w1"]
    assert (job.state, job.worker_id, job.started_at_ms) == (pb.JOB_STATE_PENDING, None, None)
    assert not w1.healthy and w1.running_jobs == set()
    register(controller, "w1", worker.address)
    assert controller.workers["w1"].healthy


def dispatched(controller: FlusterController, worker: StubWorker, job_id: str = "j") -> None:
    worker.answers["RunJob"] = lambda r: pb.Worker.RunJobResponse(job_id=r.job_id, state=pb.JOB_STATE_PENDING)
    if "w1" not in controller.workers:
        register(controller, "w1", worker.address)
    if job_id not in controller.jobs:
        controller.launch(job_id, b"x")
    assert isinstance(controller.dispatch(job_id), pb.Worker.RunJobResponse)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_reports_move_the_job_and_ones_the_real_controller_drops_are_ignored(
    controller: FlusterController, encoding: Encoding
) -> None:
    with stub_worker() as worker:
        dispatched(controller, worker)
    report(controller, encoding, worker_id="w1", job_id="j", state=pb.JOB_STATE_BUILDING)
    report(controller, encoding, worker_id="w1", job_id="j", state=pb.JOB_STATE_RUNNING)
    report(controller, encoding, worker_id="w2", job_id="j", state=pb.JOB_STATE_FAILED)  # not its worker
    report(controller, encoding, worker_id="w1", job_id="j", state=pb.JOB_STATE_FAILED, attempt_id=3)  # stale
    report(controller, encoding, worker_id="w1", job_id="other", state=pb.JOB_STATE_FAILED)  # unknown
    report(controller, encoding, worker_id="w1", job_id="j", state=pb.JOB_STATE_SUCCEEDED, finished_at_ms=1234)
    job = controller.wait_state("j", pb.JOB_STATE_SUCCEEDED)
    assert job.history == [
        pb.JOB_STATE_RUNNING, pb.JOB_STATE_BUILDING, pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED
    ]  # fmt: skip
    assert (job.exit_code, job.finished_at_ms) == (0, 1234)
    assert [why for _, why in controller.ignored_reports] == [
        "from another worker than the job's",
        "for another attempt than the current one",
        "unknown job",
    ]
    assert len(controller.reports("j")) == 5 and controller.workers["w1"].running_jobs == set()


def test_a_failure_is_final_and_a_silent_worker_fails_its_job_into_a_new_attempt(controller: FlusterController) -> None:
    with stub_worker() as worker:
        dispatched(controller, worker, "fails")
        report(controller, worker_id="w1", job_id="fails", state=pb.JOB_STATE_FAILED, exit_code=3, error="Exit code: 3")
        failed = controller.jobs["fails"]
        assert (failed.state, failed.exit_code, failed.error) == (pb.JOB_STATE_FAILED, 3, "Exit code: 3")

        dispatched(controller, worker, "lost")
        heard = controller.workers["w1"].last_heartbeat_ms
        assert controller.check_worker_timeouts(at_ms=heard + 59_000) == []
        assert controller.check_worker_timeouts(at_ms=heard + 61_000) == ["w1"]
        lost = controller.jobs["lost"]
        assert (lost.state, lost.current_attempt_id, lost.preemption_count) == (pb.JOB_STATE_PENDING, 1, 1)
        assert [a.attempt_id for a in lost.attempts] == [0]

        register(controller, "w1", worker.address)  # back: healthy again, the job goes out as attempt 1
        dispatched(controller, worker, "lost")
    assert worker.received[-1][2].attempt_id == 1
    report(controller, worker_id="w1", job_id="lost", state=pb.JOB_STATE_SUCCEEDED, attempt_id=0)  # the old attempt
    assert controller.jobs["lost"].state == pb.JOB_STATE_RUNNING
    report(controller, worker_id="w1", job_id="lost", state=pb.JOB_STATE_SUCCEEDED, attempt_id=1)
    assert controller.jobs["lost"].state == pb.JOB_STATE_SUCCEEDED


@pytest.mark.parametrize("encoding", list(Encoding))
def test_the_worker_calls_carry_their_fields_and_errors_come_back(
    controller: FlusterController, encoding: Encoding
) -> None:
    with stub_worker() as worker:
        dispatched(controller, worker)
        worker.answers.update(
            GetJobStatus=lambda r: pb.JobStatus(job_id=r.job_id, state=pb.JOB_STATE_RUNNING, ports={"actor": 30001}),
            ListJobs=lambda r: pb.Worker.ListJobsResponse(jobs=[pb.JobStatus(job_id="j")]),
            FetchLogs=lambda r: pb.Worker.FetchLogsResponse(
                logs=[pb.Worker.LogEntry(timestamp_ms=5, source="stdout", data="hi")]
            ),
            KillJob=lambda r: pb.Empty(),
            HealthCheck=lambda r: pb.Worker.HealthResponse(healthy=True, uptime_ms=10, running_jobs=1),
        )
        assert controller.get_job_status("j", include_result=True, encoding=encoding).ports == {"actor": 30001}
        assert [s.job_id for s in controller.list_jobs("w1", encoding=encoding).jobs] == ["j"]
        logs = controller.fetch_logs(
            "j", encoding=encoding, regex="h.", start_line=-10, start_ms=1, end_ms=9, max_lines=2
        )
        assert [(e.timestamp_ms, e.source, e.data) for e in logs] == [(5, "stdout", "hi")]
        controller.kill_job("j", term_timeout_ms=1500, encoding=encoding)
        assert controller.health_check("w1", encoding=encoding).running_jobs == 1

        def missing(request: Any) -> Any:
            raise ConnectError(Code.NOT_FOUND, f"Job {request.job_id} not found")

        worker.answers["GetJobStatus"] = missing
        with pytest.raises(ConnectError) as raised:
            controller.get_job_status("j", encoding=encoding)
    assert raised.value.code is Code.NOT_FOUND
    sent = {name: (content_type, request) for name, content_type, request in worker.received}
    assert {content_type for name, (content_type, _) in sent.items() if name != "RunJob"} == {encoding.content_type}
    assert sent["FetchLogs"][1].filter == pb.Worker.FetchLogsFilter(
        regex="h.", start_line=-10, start_ms=1, end_ms=9, max_lines=2
    )
    assert sent["KillJob"][1] == pb.Worker.KillJobRequest(job_id="j", term_timeout_ms=1500)
    outgoing = [c for c in controller.calls if not c.inbound]
    assert [c.path.rsplit("/", 1)[1] for c in outgoing] == [
        "RunJob", "GetJobStatus", "ListJobs", "FetchLogs", "KillJob", "HealthCheck", "GetJobStatus"
    ]  # fmt: skip
    assert outgoing[-1].error is not None and outgoing[-1].status == 404


def test_an_entrypoint_is_pickled_by_reference_to_flusters_class() -> None:
    data = serialized_entrypoint(divmod, 17, 5)
    assert b"fluster.cluster.types" in data and b"Entrypoint" in data
    assert not [name for name in sys.modules if name == "fluster" or name.startswith("fluster.")]

    class StandIn:
        callable: Callable[..., Any]
        args: tuple[Any, ...]
        kwargs: dict[str, Any]

    class Loader(pickle.Unpickler):
        """What a runner without fluster installed does: it gives the class another body."""

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("fluster.cluster.types", "Entrypoint"):
                return StandIn
            return super().find_class(module, name)

    entrypoint = Loader(io.BytesIO(data)).load()
    assert entrypoint.callable(*entrypoint.args, **entrypoint.kwargs) == (3, 2)
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(data)
