"""Fluster's RunJob carries a pickle, and unpickling runs whatever code the pickle names. The real Fluster worker
loads it on its host (docs/fluster-plan.md, quirk 3); hatchway must load it only inside the job's container. A
pickle that runs a shell command when loaded proves where it was loaded: the command touches a file at a path of
the host's and says whether it sees the container's marker file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.fluster.proto import cluster_pb2 as pb
from tests.acceptance.conftest import ServerFactory
from tests.acceptance.fluster_worker import final, fluster_settings, register
from tests.fakes.fluster_controller import FlusterController, fluster_controller


class _RunsOnLoad:
    """Unpickled, it runs `command` in a shell (its reduction is os.system)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.fixture
def controller() -> Iterator[FlusterController]:
    with fluster_controller() as running:
        yield running


def test_an_entrypoint_pickle_is_loaded_only_in_the_jobs_container(
    start_server: ServerFactory, controller: FlusterController, tmp_path: Path
) -> None:
    import pickle

    marker = tmp_path / "loaded-on-the-host"
    command = f"touch {marker}; if [ -f /.dockerenv ]; then echo loaded-in-a-container; else echo loaded-elsewhere; fi"
    server = start_server(**fluster_settings(controller))
    register(controller, server)
    controller.launch("hostile", pickle.dumps(_RunsOnLoad(command)))
    answer = controller.dispatch("hostile")
    assert isinstance(answer, pb.Worker.RunJobResponse), answer

    done = final(controller, "hostile")
    # The loaded object is os.system's exit status, not an Entrypoint: the runner fails on it after loading.
    assert done.state == pb.JOB_STATE_FAILED
    stdout = [entry.data for entry in controller.fetch_logs("hostile") if entry.source == "stdout"]
    assert stdout == ["loaded-in-a-container"], "the pickle ran, and ran in the job's container"
    assert not marker.exists(), "the pickle was loaded on the host"
    listed = controller.list_jobs(server.worker_id).jobs
    assert [job.job_id for job in listed] == ["hostile"]
