"""hatchway as a worker of Fluster's controller (issue 19): a real `hatchway serve` with the `fluster` block,
dispatched to by the controller's test double over Connect (binary and JSON), running cloudpickled entrypoints in
containers of hatchway-test/fluster-python."""

from __future__ import annotations

import json
import socket
import sys
import time
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from hatchway.fluster import methods
from hatchway.fluster.connect import Code, ConnectError, Encoding
from hatchway.fluster.proto import cluster_pb2 as pb
from tests.acceptance.conftest import ServerFactory
from tests.acceptance.fluster_worker import PORT_RANGE, final, fluster_settings, poll_status, read_port, register
from tests.fakes import serving
from tests.fakes.fluster_controller import FlusterController, fluster_controller
from tests.fakes.fluster_jobs import serialized_entrypoint

# The entrypoints below travel by value, as a client's own functions do (the container cannot import this module).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def serve_actor(greeting: str) -> dict[str, Any]:
    """Serve one connection on FLUSTER_PORT_ACTOR, then return what the job saw."""
    import os

    port = int(os.environ["FLUSTER_PORT_ACTOR"])
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((os.environ["FLUSTER_BIND_HOST"], port))
        listener.listen(1)
        print(f"serving on {port}", flush=True)
        connection, _ = listener.accept()
        with connection:
            connection.sendall(greeting.encode())
    return {"port": port, "env": {k: v for k, v in os.environ.items() if k.startswith("FLUSTER_")}}


def fail(message: str) -> None:
    raise ValueError(message)


def wait_for_sigterm() -> None:
    import signal
    import sys

    def on_term(signum: int, frame: Any) -> None:
        print("got SIGTERM, ignoring it", flush=True)

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while True:
        time.sleep(1)
    sys.exit(0)


def print_lines() -> int:
    import sys

    for number in range(10):
        print(f"line {number}", flush=True)
        if number == 4:
            print("to stderr", file=sys.stderr, flush=True)
        time.sleep(0.02)
    return 10


@pytest.fixture
def controller() -> Any:
    with fluster_controller() as running:
        yield running


@pytest.mark.parametrize("encoding", [Encoding.PROTO, Encoding.JSON])
def test_an_actor_serves_on_its_port_and_returns_a_value(
    start_server: ServerFactory, controller: FlusterController, encoding: Encoding
) -> None:
    server = start_server(**fluster_settings(controller))
    worker_id = register(controller, server)
    controller.launch("actor", serialized_entrypoint(serve_actor, "hello from the actor"), ports=["actor"])
    answer = controller.dispatch("actor", encoding=encoding)
    assert isinstance(answer, pb.Worker.RunJobResponse), answer
    assert answer.job_id == "actor"
    assert answer.state == pb.JOB_STATE_PENDING

    running = poll_status(controller, "actor", lambda s: s.state == pb.JOB_STATE_RUNNING, encoding=encoding)
    port = running.ports["actor"]
    assert PORT_RANGE[0] <= port < PORT_RANGE[1]
    assert running.started_at_ms > 0
    assert read_port(port) == b"hello from the actor"

    done = final(controller, "actor", include_result=True, encoding=encoding)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done
    assert done.exit_code == 0
    assert done.finished_at_ms >= done.started_at_ms
    result = cloudpickle.loads(done.serialized_result)
    assert result["port"] == port
    assert result["env"] == {
        "FLUSTER_JOB_ID": "actor",
        "FLUSTER_ATTEMPT_ID": "0",
        "FLUSTER_WORKER_ID": worker_id,
        "FLUSTER_CONTROLLER_ADDRESS": controller.url,
        "FLUSTER_BIND_HOST": "0.0.0.0",
        "FLUSTER_PORT_ACTOR": str(port),
    }
    assert not controller.get_job_status("actor").serialized_result, "the result only when asked for"

    # The same attempt again is the same job, answered with its state; a retried attempt is a new job.
    request = controller.jobs["actor"].run_job_request()
    again = controller.call_worker(controller.worker_address("actor"), methods.RUN_JOB, request, encoding=encoding)
    assert again.state == pb.JOB_STATE_SUCCEEDED
    listed = controller.list_jobs(worker_id, encoding=encoding).jobs
    assert [(job.job_id, job.state, job.current_attempt_id) for job in listed] == [("actor", pb.JOB_STATE_SUCCEEDED, 0)]


def test_a_failing_entrypoint_fails_its_job_with_the_traceback_on_stderr(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    server = start_server(**fluster_settings(controller))
    register(controller, server)
    controller.launch("fails", serialized_entrypoint(fail, "boom-4711"))
    assert isinstance(controller.dispatch("fails", encoding=Encoding.JSON), pb.Worker.RunJobResponse)

    done = final(controller, "fails")
    assert done.state == pb.JOB_STATE_FAILED
    assert done.exit_code == 1
    assert done.error == "Exit code: 1"
    stderr = [entry.data for entry in controller.fetch_logs("fails") if entry.source == "stderr"]
    assert stderr[0] == "Traceback (most recent call last):"
    assert stderr[-1] == "ValueError: boom-4711"
    assert not controller.get_job_status("fails", include_result=True).serialized_result


def test_kill_mid_run_stops_it_after_the_termination_timeout(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    server = start_server(**fluster_settings(controller))
    worker_id = register(controller, server)
    health = controller.health_check(worker_id)
    assert health.healthy and health.uptime_ms > 0 and health.running_jobs == 0
    controller.launch("stubborn", serialized_entrypoint(wait_for_sigterm))
    controller.dispatch("stubborn")
    poll_status(
        controller,
        "stubborn",
        lambda s: s.state == pb.JOB_STATE_RUNNING and bool(controller.fetch_logs("stubborn", regex="^ready$")),
    )
    assert controller.health_check(worker_id, encoding=Encoding.JSON).running_jobs == 1

    controller.kill_job("stubborn", term_timeout_ms=1500, encoding=Encoding.JSON)
    # KillJob answers once the job has stopped: it ignored SIGTERM, so SIGKILL ended it after the timeout.
    status = controller.get_job_status("stubborn")
    assert status.state == pb.JOB_STATE_KILLED, status
    assert [entry.data for entry in controller.fetch_logs("stubborn", regex="SIGTERM")] == ["got SIGTERM, ignoring it"]
    assert controller.health_check(worker_id).running_jobs == 0

    with pytest.raises(ConnectError) as ended:
        controller.kill_job("stubborn")
    assert ended.value.code == Code.FAILED_PRECONDITION
    assert ended.value.message == "Job stubborn already completed with state JOB_STATE_KILLED"
    controller.launch("ghost", b"")
    controller.jobs["ghost"].worker_id = worker_id
    for call in (lambda: controller.kill_job("ghost"), lambda: controller.get_job_status("ghost")):
        with pytest.raises(ConnectError) as unknown:
            call()
        assert unknown.value.code == Code.NOT_FOUND
    assert controller.fetch_logs("ghost") == [], "the real worker's answer for an unknown job: no lines"


def test_fetch_logs_with_each_filter(start_server: ServerFactory, controller: FlusterController) -> None:
    server = start_server(**fluster_settings(controller))
    register(controller, server)
    controller.launch("lines", serialized_entrypoint(print_lines))
    controller.dispatch("lines")
    assert final(controller, "lines").state == pb.JOB_STATE_SUCCEEDED

    every = controller.fetch_logs("lines", encoding=Encoding.JSON)
    assert [(e.source, e.data) for e in every if e.source == "stdout"] == [("stdout", f"line {n}") for n in range(10)]
    assert [e.data for e in every if e.source == "stderr"] == ["to stderr"]
    stamps = [e.timestamp_ms for e in every]
    assert stamps == sorted(stamps) and stamps[0] > 0

    def data(**filter: Any) -> list[str]:
        return [entry.data for entry in controller.fetch_logs("lines", **filter)]

    everything = [e.data for e in every]
    assert data(regex=r"line [37]$") == ["line 3", "line 7"]
    assert data(start_line=8) == everything[8:]
    assert data(start_line=-3) == everything[-3:]
    assert data(max_lines=4) == everything[:4]
    assert data(regex="line", max_lines=2) == ["line 0", "line 1"]
    middle = every[5].timestamp_ms
    assert data(start_ms=middle) == [e.data for e in every if e.timestamp_ms > middle]
    assert data(end_ms=middle) == [e.data for e in every if e.timestamp_ms <= middle]
    assert data(start_ms=middle, end_ms=middle) == []
    with pytest.raises(ConnectError) as refused:
        data(regex=r"(line)\1")
    assert refused.value.code == Code.INVALID_ARGUMENT
    assert "RE2" in refused.value.message


def test_what_cannot_run_here_fails_its_job_saying_why(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    server = start_server(**fluster_settings(controller))
    register(controller, server)
    entry = serialized_entrypoint(print_lines)
    controller.launch("on-gcs", entry, bundle_gcs_path="gs://bucket/bundle.zip")
    controller.launch("too-big", entry, resources=pb.ResourceSpec(memory="64t"))
    for job_id in ("on-gcs", "too-big"):
        answer = controller.dispatch(job_id)
        assert isinstance(answer, pb.Worker.RunJobResponse) and answer.state == pb.JOB_STATE_FAILED, answer
    assert "fluster.gs_command" in controller.get_job_status("on-gcs").error
    assert "memory_mb" in controller.get_job_status("too-big").error

    # pip_packages never come from the real controller; another client may send them.
    request = pb.Worker.RunJobRequest(
        job_id="needs-numpy",
        serialized_entrypoint=entry,
        environment=pb.EnvironmentConfig(pip_packages=["numpy==2.0"]),
    )
    answer = controller.call_worker(f"127.0.0.1:{server.port}", methods.RUN_JOB, request)
    assert answer.state == pb.JOB_STATE_FAILED
    status = controller.call_worker(
        f"127.0.0.1:{server.port}", methods.GET_JOB_STATUS, pb.Worker.GetJobStatusRequest(job_id="needs-numpy")
    )
    assert "numpy==2.0" in status.error


def use_bundle() -> tuple[str, str, str]:
    import os

    import helper  # the bundle's, on PYTHONPATH

    with open("data.txt") as handle:
        return helper.VALUE, handle.read(), os.getcwd()


def _bundle(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("helper.py", 'VALUE = "from the bundle"\n')
        archive.writestr("data.txt", "read relative to the working directory")
        archive.writestr("pyproject.toml", '[project]\nname = "job"\nversion = "0"\n')
    return path.read_bytes()


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_the_bundle_is_the_jobs_working_directory(
    start_server: ServerFactory, controller: FlusterController, tmp_path: Path, scheme: str
) -> None:
    archive = _bundle(tmp_path / "bundle.zip")

    class Bundles(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive)))
            self.end_headers()
            self.wfile.write(archive)

    with serving(Bundles) as base:
        url = f"file://{tmp_path}/bundle.zip" if scheme == "file" else f"{base}/bundles/abc.zip"
        server = start_server(**fluster_settings(controller), bundle_allowed_urls=f"file://{tmp_path}/*,http://*")
        register(controller, server)
        controller.launch("bundled", serialized_entrypoint(use_bundle), bundle_gcs_path=url)
        controller.dispatch("bundled")
        done = final(controller, "bundled", include_result=True)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done
    assert cloudpickle.loads(done.serialized_result) == (
        "from the bundle",
        "read relative to the working directory",
        "/workdir",
    )


def test_a_gs_bundle_is_copied_by_the_operators_command(
    start_server: ServerFactory, controller: FlusterController, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    _bundle(bucket / "bundle.zip")
    copy = f"import shutil, sys; shutil.copy(sys.argv[1].replace('gs://bucket', {str(bucket)!r}), sys.argv[2])"
    server = start_server(
        **fluster_settings(controller), fluster__gs_command=json.dumps([sys.executable, "-c", copy, "{url}", "{path}"])
    )
    register(controller, server)
    entry = serialized_entrypoint(use_bundle)
    controller.launch("from-gcs", entry, bundle_gcs_path="gs://bucket/bundle.zip")
    controller.launch("missing", entry, bundle_gcs_path="gs://bucket/missing.zip")
    controller.dispatch("from-gcs")
    done = final(controller, "from-gcs", include_result=True)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done
    assert cloudpickle.loads(done.serialized_result)[0] == "from the bundle"

    answer = controller.dispatch("missing")
    assert isinstance(answer, pb.Worker.RunJobResponse) and answer.state == pb.JOB_STATE_FAILED
    error = controller.get_job_status("missing").error
    assert "fluster.gs_command exited 1" in error and "FileNotFoundError" in error, error


def test_timeout_seconds_fails_the_job_as_the_real_worker_does(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    server = start_server(**fluster_settings(controller))
    register(controller, server)
    # The real controller never forwards timeout_seconds; another client may send it.
    request = pb.Worker.RunJobRequest(
        job_id="slow", serialized_entrypoint=serialized_entrypoint(wait_for_sigterm), timeout_seconds=2
    )
    address = f"127.0.0.1:{server.port}"
    assert controller.call_worker(address, methods.RUN_JOB, request).state == pb.JOB_STATE_PENDING
    controller.launch("slow", b"").worker_id = server.worker_id  # known to the controller, for its client calls
    done = final(controller, "slow")
    assert (done.state, done.exit_code, done.error) == (pb.JOB_STATE_FAILED, -1, "Timeout exceeded")
