"""A double of Fluster's cluster controller (marin lib/fluster, controller/{controller,service,state,job}.py at
commit 867e702553371959fa5357301e929dd2b96937ae; docs/fluster-plan.md has the facts), speaking Connect RPC on
127.0.0.1 with hatchway's codec.

As a server it answers the ControllerService methods a worker calls, in binary or JSON as asked:

- `RegisterWorker` is always accepted. A new worker id is added with its address, resources and metadata; a known
  one is a heartbeat: its time, health, resources and metadata are renewed, its address is not.
- `ReportJobState` for a job the controller does not know, from a worker the job is not assigned to, or for
  another attempt than the current one, is logged by the real controller and answered with an empty success:
  here it is recorded and ignored the same way. Otherwise the job takes the state (fluster_jobs.ControllerJob).

As a client it dispatches as the real one does (`dispatch`: RunJob built from the launch, the job marked RUNNING
before the call and put back if the call fails, the worker then marked unhealthy), and calls the worker's other
methods the way the controller's clients do (GetJobStatus, ListJobs, FetchLogs, KillJob, HealthCheck), each in the
encoding asked for (binary by default, as connect-python's clients send). Workers that stop heartbeating are
failed by `check_worker_timeouts`, as the real controller's loop does every half second.

For the tests it records every call both ways (`calls`), can answer the next calls with an error
(`refuse_next`), and can be down (`down`/`up`: the listener closed, connections refused, then back on the same
port).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from google.protobuf.message import Message

from hatchway.fluster import connect, methods
from hatchway.fluster.connect import Code, ConnectError, Encoding, Method, NotConnect, Req, Res
from hatchway.fluster.proto import cluster_pb2 as pb
from tests.fakes.fluster_jobs import ControllerJob, ControllerWorker

DISPATCH_TIMEOUT_S = 10.0
"""The real controller's worker stubs: `timeout_ms=10000`."""
WORKER_TIMEOUT_S = 60.0
"""A worker with no RegisterWorker for this long is failed with its jobs (ControllerConfig.worker_timeout_seconds)."""


@dataclass(frozen=True)
class Call:
    """One Connect call the controller answered (`inbound`) or made, with what came back."""

    inbound: bool
    path: str
    encoding: Encoding | None
    request: Message | None
    answer: Message | None = None
    error: ConnectError | None = None
    status: int = 200
    """The HTTP status of the answer (for a call made: the one the error came with)."""
    at: float = field(default_factory=time.time)


def now_ms() -> int:
    return int(time.time() * 1000)


class FlusterController:
    """The controller's state, its Connect server (`url`, `address`) and its calls to workers."""

    def __init__(self) -> None:
        self.workers: dict[str, ControllerWorker] = {}
        self.jobs: dict[str, ControllerJob] = {}
        self.calls: list[Call] = []
        self.ignored_reports: list[tuple[pb.Controller.ReportJobStateRequest, str]] = []
        """Reports the real controller would log and drop, with why."""
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._refusals: list[tuple[str | None, Code]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.client = httpx.Client()

    # --- the server ---

    @property
    def address(self) -> str:
        """host:port, as a worker is told the controller's address (FLUSTER_CONTROLLER_ADDRESS is a URL)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        assert self._server is None, "already up"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused until `up`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @contextmanager
    def outage(self) -> Iterator[None]:
        self.down()
        try:
            yield
        finally:
            self.up()

    def refuse_next(self, count: int, *, method: Method[Any, Any] | None = None, code: Code = Code.UNAVAILABLE) -> None:
        """Answer the next `count` calls (of `method` only, if given) with `code` instead of serving them."""
        with self.lock:
            self._refusals.extend([(method.path if method else None, code)] * count)

    def _refusal(self, path: str) -> Code | None:
        with self.lock:
            for index, (only, code) in enumerate(self._refusals):
                if only in (None, path):
                    del self._refusals[index]
                    return code
        return None

    def serve(self, method: Method[Any, Any], request: Message) -> Message:
        """Answer one call of a ControllerService method (the server thread calls this)."""
        if isinstance(request, pb.Controller.RegisterWorkerRequest):
            return self._register(request)
        if isinstance(request, pb.Controller.ReportJobStateRequest):
            return self._report(request)
        raise ConnectError(Code.UNIMPLEMENTED, f"{method.path} is not served")

    def _register(self, request: pb.Controller.RegisterWorkerRequest) -> pb.Controller.RegisterWorkerResponse:
        with self.changed:
            worker = self.workers.get(request.worker_id)
            if worker is not None:
                worker.last_heartbeat_ms, worker.healthy = now_ms(), True
                worker.resources, worker.metadata = request.resources, request.metadata
            else:
                self.workers[request.worker_id] = ControllerWorker(
                    request.worker_id, request.address, request.resources, request.metadata, now_ms()
                )
        return pb.Controller.RegisterWorkerResponse(accepted=True)

    def _report(self, request: pb.Controller.ReportJobStateRequest) -> pb.Controller.ReportJobStateResponse:
        with self.changed:
            job = self.jobs.get(request.job_id)
            why = (
                "unknown job"
                if job is None
                else "from another worker than the job's"
                if job.worker_id != request.worker_id
                else "for another attempt than the current one"
                if request.attempt_id != job.current_attempt_id
                else ""
            )
            if job is None or why:
                self.ignored_reports.append((request, why))
            else:
                requeued = job.transition(
                    request.state,
                    request.finished_at_ms or now_ms(),
                    error=request.error or None,
                    exit_code=request.exit_code,
                )
                worker = self.workers.get(request.worker_id)
                if worker is not None and (requeued or job.finished):
                    worker.running_jobs.discard(job.job_id)
        return pb.Controller.ReportJobStateResponse()

    def record(self, call: Call) -> None:
        with self.changed:
            self.calls.append(call)
            self.changed.notify_all()

    # --- what it saw ---

    def received(self, method: Method[Any, Any]) -> list[Any]:
        """The requests of `method` it served (refused ones left out), in order."""
        with self.lock:
            return [c.request for c in self.calls if c.inbound and c.path == method.path and c.status == 200]

    def registrations(self) -> list[pb.Controller.RegisterWorkerRequest]:
        return self.received(methods.REGISTER_WORKER)

    def reports(self, job_id: str | None = None) -> list[pb.Controller.ReportJobStateRequest]:
        return [r for r in self.received(methods.REPORT_JOB_STATE) if job_id is None or r.job_id == job_id]

    def wait_for(self, what: Callable[[], Any], timeout_s: float = 30, message: str = "") -> Any:
        """Wait until `what()` is truthy (checked whenever a call is recorded); its value."""
        with self.changed:
            found = self.changed.wait_for(what, timeout_s)
            if not found:
                raise AssertionError(message or f"not within {timeout_s} s; calls: {[c.path for c in self.calls]}")
            return found

    def wait_registered(self, count: int = 1, timeout_s: float = 30) -> list[pb.Controller.RegisterWorkerRequest]:
        return list(self.wait_for(lambda: len(self.registrations()) >= count and self.registrations(), timeout_s))

    def wait_state(self, job_id: str, state: int, timeout_s: float = 60) -> ControllerJob:
        """Wait until a report has put the job in `state`."""
        self.wait_for(
            lambda: state in self.jobs[job_id].history,
            timeout_s,
            f"job {job_id} never reached {pb.JobState.Name(state)}: {self.reports(job_id)}",
        )
        return self.jobs[job_id]

    # --- jobs and dispatch ---

    def launch(
        self,
        job_id: str,
        serialized_entrypoint: bytes,
        *,
        bundle_gcs_path: str = "",
        environment: pb.EnvironmentConfig | None = None,
        resources: pb.ResourceSpec | None = None,
        ports: list[str] | tuple[str, ...] = (),
    ) -> ControllerJob:
        """Take a job, as LaunchJob does (its name is its id), PENDING until dispatched."""
        with self.lock:
            assert job_id not in self.jobs, f"job {job_id} already exists"
            job = ControllerJob(
                job_id,
                serialized_entrypoint,
                bundle_gcs_path,
                environment or pb.EnvironmentConfig(),
                resources or pb.ResourceSpec(),
                list(ports),
            )
            self.jobs[job_id] = job
            return job

    def dispatch(
        self, job_id: str, worker_id: str | None = None, *, encoding: Encoding = Encoding.PROTO
    ) -> pb.Worker.RunJobResponse | ConnectError:
        """Send the job to `worker_id` (or the first healthy worker) as the real controller does; the worker's
        answer, or the error that made the controller put the job back and mark the worker unhealthy."""
        with self.lock:
            job = self.jobs[job_id]
            assert job.state == pb.JOB_STATE_PENDING, f"job {job_id} is {pb.JobState.Name(job.state)}"
            worker = self.workers[worker_id] if worker_id else next(w for w in self.workers.values() if w.healthy)
            job.mark_dispatched(worker.worker_id, now_ms())
            worker.running_jobs.add(job_id)
            request = job.run_job_request()
        try:
            return self.call_worker(worker.address, methods.RUN_JOB, request, encoding=encoding)
        except ConnectError as error:
            with self.lock:
                job.revert_dispatch()
                worker.running_jobs.discard(job_id)
                worker.healthy = False
            return error

    def check_worker_timeouts(self, timeout_s: float = WORKER_TIMEOUT_S, *, at_ms: int | None = None) -> list[str]:
        """Fail the healthy workers not heard from in `timeout_s`, and their jobs as WORKER_FAILED (retried: a new
        attempt, PENDING), as the controller's loop does; the ids of the workers failed."""
        failed = []
        with self.changed:
            moment = now_ms() if at_ms is None else at_ms
            for worker in self.workers.values():
                if worker.healthy and moment - worker.last_heartbeat_ms > timeout_s * 1000:
                    worker.healthy = False
                    failed.append(worker.worker_id)
                    for job_id in list(worker.running_jobs):
                        self.jobs[job_id].transition(
                            pb.JOB_STATE_WORKER_FAILED,
                            moment,
                            is_worker_failure=True,
                            error=f"Worker {worker.worker_id} timed out",
                        )
                        worker.running_jobs.discard(job_id)
            self.changed.notify_all()
        return failed

    # --- calls to a worker ---

    def call_worker(
        self,
        address: str,
        method: Method[Req, Res],
        request: Req,
        *,
        encoding: Encoding = Encoding.PROTO,
        timeout_s: float = DISPATCH_TIMEOUT_S,
    ) -> Res:
        """Call a WorkerService method at `address` (host:port); its answer, or ConnectError. Recorded either way."""
        try:
            answer = connect.call(
                self.client, f"http://{address}", method, request, encoding=encoding, timeout_s=timeout_s
            )
        except ConnectError as error:
            self.record(Call(False, method.path, encoding, request, error=error, status=error.http_status))
            raise
        self.record(Call(False, method.path, encoding, request, answer))
        return answer

    def worker_address(self, job_or_worker: str) -> str:
        with self.lock:
            worker_id = self.jobs[job_or_worker].worker_id if job_or_worker in self.jobs else job_or_worker
            assert worker_id, f"job {job_or_worker} is on no worker"
            return self.workers[worker_id].address

    def get_job_status(self, job_id: str, *, include_result: bool = False, **how: Any) -> pb.JobStatus:
        request = pb.Worker.GetJobStatusRequest(job_id=job_id, include_result=include_result)
        return self.call_worker(self.worker_address(job_id), methods.GET_JOB_STATUS, request, **how)

    def list_jobs(self, worker_id: str, **how: Any) -> pb.Worker.ListJobsResponse:
        request = pb.Worker.ListJobsRequest()
        return self.call_worker(self.worker_address(worker_id), methods.LIST_JOBS, request, **how)

    def fetch_logs(self, job_id: str, *, encoding: Encoding = Encoding.PROTO, **filter: Any) -> list[Any]:
        """The job's log entries, filtered by FetchLogsFilter's fields given as keywords (regex, start_line,
        start_ms, end_ms, max_lines)."""
        request = pb.Worker.FetchLogsRequest(job_id=job_id, filter=pb.Worker.FetchLogsFilter(**filter))
        answer = self.call_worker(self.worker_address(job_id), methods.FETCH_LOGS, request, encoding=encoding)
        return list(answer.logs)

    def kill_job(self, job_id: str, term_timeout_ms: int = 0, **how: Any) -> pb.Empty:
        request = pb.Worker.KillJobRequest(job_id=job_id, term_timeout_ms=term_timeout_ms)
        return self.call_worker(self.worker_address(job_id), methods.KILL_JOB, request, **how)

    def health_check(self, worker_id: str, **how: Any) -> pb.Worker.HealthResponse:
        return self.call_worker(self.worker_address(worker_id), methods.HEALTH_CHECK, pb.Empty(), **how)

    def close(self) -> None:
        self.down()
        self.client.close()


def _handler(controller: FlusterController) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real server (uvicorn) allows

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self._serve("POST")

        def do_GET(self) -> None:
            self._serve("GET")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def _serve(self, http_method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if controller._server is not self.server:
                # Down (or up again on a new listener): a connection kept alive from before is cut, unanswered, as
                # a controller that went away cuts it.
                self.close_connection = True
                return
            method = methods.CONTROLLER_METHODS.get(self.path.partition("?")[0])
            encoding = request = None
            try:
                if method is None:
                    raise NotConnect(404, f"no method at {self.path}")
                request, encoding = connect.read_request(
                    method,
                    http_method=http_method,
                    content_type=self.headers.get("Content-Type"),
                    body=body,
                    content_encoding=self.headers.get("Content-Encoding"),
                    protocol_version=self.headers.get("Connect-Protocol-Version"),
                )
                refused = controller._refusal(method.path)
                if refused is not None:
                    raise ConnectError(refused, "the controller refuses this call (injected)")
                answer = controller.serve(method, request)
                reply = connect.message_reply(answer, encoding)
                controller.record(Call(True, method.path, encoding, request, answer))
            except ConnectError as error:
                reply = connect.error_reply(error)
                controller.record(Call(True, self.path, encoding, request, error=error, status=reply.status))
            except NotConnect as refusal:
                reply = connect.refusal_reply(refusal)
                controller.record(Call(True, self.path, None, None, status=reply.status))
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

    return Handler


@contextmanager
def fluster_controller() -> Iterator[FlusterController]:
    """A controller listening on a free port of 127.0.0.1 for the `with` block."""
    controller = FlusterController()
    controller.up()
    try:
        yield controller
    finally:
        controller.close()
