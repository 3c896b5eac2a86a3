"""A Fluster job's environment (issue 19): pip_packages, and what its bundle's pyproject.toml declares, installed
into an image built on fluster.base_image, from a wheel the test serves itself (no index, no internet), with the
build network the operator allows; against a real `hatchway serve` and the controller's test double."""

from __future__ import annotations

import io
import sys
import zipfile
from http.server import BaseHTTPRequestHandler
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
    start_server: ServerFactory, controller: FlusterController
) -> None:
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
        package = f"fluster-extra @ {base}/fluster_extra-1.0-py3-none-any.whl"
        settings = fluster_settings(controller, fluster__base_image="hatchway-test/fluster-pip:latest")
        server = start_server(**settings, fluster__build_network="true")
        register(controller, server)
        request = pb.Worker.RunJobRequest(
            job_id="with-packages",
            serialized_entrypoint=serialized_entrypoint(use_installed),
            environment=pb.EnvironmentConfig(pip_packages=[package]),
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
