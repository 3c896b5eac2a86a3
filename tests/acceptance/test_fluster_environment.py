"""A Fluster job's environment (issue 19): pip_packages, and what its bundle's pyproject.toml declares, installed
into an image built on fluster.base_image, from a wheel the test serves itself (no index, no internet), with the
build network the operator allows; against a real `hatchway serve` and the controller's test double."""

from __future__ import annotations

import io
import sys
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from hatchway.fluster import methods
from hatchway.fluster.proto import cluster_pb2 as pb
from tests.acceptance.conftest import ServerFactory
from tests.acceptance.fluster_worker import final, fluster_settings, register
from tests.fakes import serving
from tests.fakes.fluster_controller import FlusterController, fluster_controller
from tests.fakes.fluster_jobs import serialized_entrypoint

# The entrypoints below travel by value, as a client's own functions do (the container cannot import this module).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def controller() -> Any:
    with fluster_controller() as running:
        yield running


def use_installed() -> str:
    import fluster_extra  # installed from pip_packages into the environment's image

    return str(fluster_extra.VALUE)


def _wheel() -> bytes:
    """A pure-Python wheel of `fluster-extra` 1.0, made by hand (no index, no network)."""
    buffer = io.BytesIO()
    info = "fluster_extra-1.0.dist-info"
    files = {
        "fluster_extra/__init__.py": 'VALUE = "installed by pip"\n',
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: fluster-extra\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_pip_packages_are_installed_with_the_build_network(
    start_server: ServerFactory, controller: FlusterController, index: str
) -> None:
    settings = fluster_settings(controller, fluster__base_image="hatchway-test/fluster-pip:latest")
    server = start_server(**settings, fluster__build_network="true")
    register(controller, server)
    request = pb.Worker.RunJobRequest(
        job_id="with-packages",
        serialized_entrypoint=serialized_entrypoint(use_installed),
        environment=pb.EnvironmentConfig(pip_packages=[index]),
    )
    address = f"127.0.0.1:{server.port}"
    assert controller.call_worker(address, methods.RUN_JOB, request).state == pb.JOB_STATE_PENDING
    controller.launch("with-packages", b"").worker_id = server.worker_id
    done = final(controller, "with-packages", include_result=True)
    assert done.state == pb.JOB_STATE_SUCCEEDED, (done, controller.fetch_logs("with-packages"))
    assert cloudpickle.loads(done.serialized_result) == "installed by pip"
    built = [entry.data for entry in controller.fetch_logs("with-packages", regex="Successfully installed")]
    assert built == ["Successfully installed fluster-extra-1.0"]
    assert [e.source for e in controller.fetch_logs("with-packages", regex="Successfully installed")] == ["build"]


def _bundle_declaring(path: Path, requirement: str) -> str:
    """A bundle whose project depends on `requirement` (and an extra that the job does not ask for)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "pyproject.toml",
            f'[project]\nname = "job"\nversion = "0"\ndependencies = [{requirement!r}]\n'
            '[project.optional-dependencies]\nunused = ["not-on-any-index"]\n',
        )
        archive.writestr("job.py", f"# {path.name}\n")
    return path.as_uri()


@pytest.fixture
def index() -> Any:
    """An HTTP server of the one wheel, and the PEP 508 requirement of it (a direct URL: pip needs no index)."""
    wheel = _wheel()

    class Index(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(wheel)))
            self.end_headers()
            self.wfile.write(wheel)

    with serving(Index) as base:
        yield f"fluster-extra @ {base}/fluster_extra-1.0-py3-none-any.whl"


def test_the_bundles_declared_dependencies_are_installed_once_per_environment(
    start_server: ServerFactory, controller: FlusterController, tmp_path: Path, index: str
) -> None:
    settings = fluster_settings(controller, fluster__base_image="hatchway-test/fluster-pip:latest")
    server = start_server(**settings, fluster__build_network="true", bundle_allowed_urls=f"file://{tmp_path}/*")
    register(controller, server)
    entry = serialized_entrypoint(use_installed)
    # Two bundles with other code and the same declarations: one environment.
    for job_id in ("first", "second"):
        controller.launch(job_id, entry, bundle_gcs_path=_bundle_declaring(tmp_path / f"{job_id}.zip", index))
        controller.dispatch(job_id)
        done = final(controller, job_id, include_result=True)
        assert done.state == pb.JOB_STATE_SUCCEEDED, (done, controller.fetch_logs(job_id))
        assert cloudpickle.loads(done.serialized_result) == "installed by pip"
    first, second = (controller.get_job_status(job_id) for job_id in ("first", "second"))
    assert first.build_metrics.image_tag == second.build_metrics.image_tag != ""
    assert (first.build_metrics.from_cache, second.build_metrics.from_cache) == (False, True)
    installed = [entry.data for entry in controller.fetch_logs("first", regex="Successfully installed")]
    assert installed == ["Successfully installed fluster-extra-1.0"]
    assert controller.fetch_logs("second", regex="Successfully installed") == [], "the second built nothing"


def test_without_the_build_network_a_bundle_with_dependencies_fails_naming_them(
    start_server: ServerFactory, controller: FlusterController, tmp_path: Path, index: str
) -> None:
    server = start_server(**fluster_settings(controller), bundle_allowed_urls=f"file://{tmp_path}/*")
    register(controller, server)
    controller.launch(
        "offline",
        serialized_entrypoint(use_installed),
        bundle_gcs_path=_bundle_declaring(tmp_path / "bundle.zip", index),
    )
    answer = controller.dispatch("offline")
    assert isinstance(answer, pb.Worker.RunJobResponse) and answer.state == pb.JOB_STATE_FAILED, answer
    error = controller.get_job_status("offline").error
    assert f"project dependencies: {index}), which this worker cannot install" in error, error
    assert "fluster.build_network" in error
