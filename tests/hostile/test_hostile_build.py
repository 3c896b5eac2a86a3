"""A job's image build runs its Dockerfile's RUN steps: code its submitter wrote, and so as untrusted as the job.
Docker's builder ran those steps as root with the engine's default capabilities, on runc whatever runtime the job
asked for (so a gVisor-only worker ran untrusted root code on runc), and without the job's limits: a fork bomb took
the host's pids, a memory bomb its memory, `head -c 100G /dev/zero > /x` the engine's disk, for up to
`build_timeout_s` (600 s). A build step must run as the job would: the job's runtime, no capabilities, no new
privileges, no network, the job's memory, pids and disk, and the job's timeout (or `build_timeout_s` if shorter)
for the whole build. Each attack here ends as `build_failed` within those limits, and the worker goes on."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory

pytestmark = pytest.mark.docker

BUSYBOX = "hatchway-test/busybox:latest"
MIB = 1024 * 1024
EXT4_OVERHEAD_MB = 16
"""What a job's disk adds to `disk_mb` for ext4's own tables (`volumes`), with room to spare."""


@pytest.fixture(params=["docker", "gvisor"])
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def serve(start_server: ServerFactory, runtime: str) -> Server:
    """A worker that offers `runtime` alone: a gVisor-only worker must never run a build step on runc."""
    return start_server(allowed_runtimes=runtime, default_runtime=runtime)


def build(server: Server, runtime: str, dockerfile: str, *, deadline_s: float = 240, **limits: Any) -> dict[str, Any]:
    """Submit a job built from `dockerfile` and return it once it has ended."""
    body = {"build": {"dockerfile": dockerfile}, "command": ["true"], "runtime": runtime, "limits": limits}
    created = server.post_job(**body)
    assert created.status_code == 201, created.text
    return server.wait_state(created.json()["id"], "succeeded", "failed", timeout_s=deadline_s)


def build_text(server: Server, job: dict[str, Any]) -> str:
    """The job's `build` log stream."""
    return str(server.client.get(f"/jobs/{job['id']}/logs", params={"stream": "build"}).text)


def serves_the_next_job(server: Server) -> None:
    job = server.post_job(wait=True, image=BUSYBOX, command=["echo", "still serving"]).json()
    assert (job["state"], job["stdout"]) == ("succeeded", "still serving\n"), job


def discard_image(client: docker.DockerClient, job: dict[str, Any]) -> None:
    """Remove what a build that should have failed made (on the old code, it did not fail)."""
    image = (job.get("run") or {}).get("image")
    if image:
        client.images.remove(image, force=True)


def test_a_build_step_sees_what_the_job_would(
    start_server: ServerFactory, runtime: str, docker_client: docker.DockerClient
) -> None:
    server = serve(start_server, runtime)
    nonce = uuid.uuid4().hex[:12]
    dockerfile = (
        f"FROM {BUSYBOX}\n"
        f"RUN echo {nonce}; id; grep CapEff /proc/self/status; uname -r;"
        " cat /sys/fs/cgroup/pids/pids.max || echo no-pids-cgroup\n"
    )
    job = build(server, runtime, dockerfile, pids=48)
    discard_image(docker_client, job)
    text = build_text(server, job)
    assert "CapEff:\t0000000000000000" in text, f"no capabilities: {text}"
    assert job["state"] == "succeeded", text
    log = text.splitlines()
    assert "uid=0(root) gid=0(root) groups=0(root)" in log, "the image's user: root without capabilities"
    if runtime == "docker":
        assert os.uname().release in log and "48" in log, f"the host's kernel and the job's pids limit: {log}"
    else:
        assert os.uname().release not in log, f"gVisor's kernel, not the host's: {log}"
        assert "no-pids-cgroup" in log, log
    # The pids limit holds whatever the runtime shows: more processes than it allows end the step.
    forks = (
        f"FROM {BUSYBOX}\nRUN echo {nonce}; i=0; while [ $i -lt 400 ]; do sleep 60 & i=$((i+1)); done; echo all-400\n"
    )
    job = build(server, runtime, forks, pids=48)
    discard_image(docker_client, job)
    assert (job["state"], job["reason"]) == ("failed", "build_failed"), job
    assert "all-400" not in build_text(server, job).splitlines()
    serves_the_next_job(server)
    assert server.stop() == 0


def test_a_fork_bomb_in_a_build_ends_within_the_job_s_limits(
    start_server: ServerFactory, runtime: str, docker_client: docker.DockerClient
) -> None:
    server = serve(start_server, runtime)
    nonce = uuid.uuid4().hex[:12]
    # What the old code lets through (400 processes, no more) before a real bomb is let loose on the new.
    bounded = f"FROM {BUSYBOX}\nRUN echo {nonce}; i=0; while [ $i -lt 400 ]; do sleep 60 & i=$((i+1)); done\n"
    job = build(server, runtime, bounded, pids=64)
    discard_image(docker_client, job)
    assert (job["state"], job["reason"]) == ("failed", "build_failed"), "400 processes with a pids limit of 64"
    bomb = f"FROM {BUSYBOX}\nRUN echo {nonce}; f(){{ f|f& }}; f; while :; do :; done\n"
    pids_limits = watch_steps(docker_client, server, lambda info: info["HostConfig"].get("PidsLimit"))
    started = time.monotonic()
    job = build(server, runtime, bomb, pids=64, memory_mb=128, timeout_s=8)
    pids_limits.stop()
    assert (job["state"], job["reason"]) == ("failed", "build_failed"), job
    assert time.monotonic() - started < 8 + 90, "ended by the job's timeout (a generous deadline)"
    host_limit = 64 if runtime == "docker" else 64 + 1024  # gVisor's own threads count on the host too
    assert pids_limits.values and set(pids_limits.values) == {host_limit}, pids_limits.values
    serves_the_next_job(server)
    assert server.stop() == 0


def test_a_disk_filler_in_a_build_stays_within_the_job_s_disk(
    start_server: ServerFactory, runtime: str, docker_client: docker.DockerClient
) -> None:
    server = serve(start_server, runtime)
    nonce = uuid.uuid4().hex[:12]
    # 400 MB into a 32 MB disk; the failing step lingers a moment so its layer can be looked at from the host.
    filler = f"FROM {BUSYBOX}\nRUN echo {nonce}; dd if=/dev/zero of=/filler bs=1M count=400 || (sleep 3; exit 1)\n"
    layers = watch_steps(docker_client, server, layer_usage)
    job = build(server, runtime, filler, disk_mb=32)
    layers.stop()
    discard_image(docker_client, job)
    assert (job["state"], job["reason"]) == ("failed", "build_failed"), job
    assert "the build's disk of 32 MB is full" in (job["message"] or ""), job["message"]
    assert layers.values, "the step's writable layer was seen from the host"
    for layer, used, size in layers.values:
        assert size <= (32 + EXT4_OVERHEAD_MB) * MIB and used <= size, (layer, used, size)
        assert not os.path.ismount(layer), "the layer's disk is unmounted after the step"
    assert max(used for _, used, _ in layers.values) > 16 * MIB, "it did write, up to its limit"
    serves_the_next_job(server)
    assert server.stop() == 0


def test_a_build_is_held_to_the_job_s_memory_and_time(
    start_server: ServerFactory, runtime: str, docker_client: docker.DockerClient
) -> None:
    server = serve(start_server, runtime)
    nonce = uuid.uuid4().hex[:12]
    # One buffer of 200 MB, filled at once: over the job's 96 MB the step is killed (in a blink, even on gVisor,
    # where filling memory a shell string at a time took a minute).
    hog = f"FROM {BUSYBOX}\nRUN echo {nonce}; dd if=/dev/zero of=/dev/null bs=200M count=1\n"
    job = build(server, runtime, hog, memory_mb=96)
    discard_image(docker_client, job)
    assert (job["state"], job["reason"]) == ("failed", "build_failed"), job
    assert "records out" not in build_text(server, job), "the 200 MB buffer was never filled"
    started = time.monotonic()
    job = build(server, runtime, f"FROM {BUSYBOX}\nRUN echo {nonce}; sleep 600\n", timeout_s=5, deadline_s=90)
    discard_image(docker_client, job)
    assert (job["state"], job["reason"]) == ("failed", "build_failed"), job
    assert "timed out after 5 s" in (job["message"] or "") and time.monotonic() - started < 90
    serves_the_next_job(server)
    assert server.stop() == 0


class watch_steps:
    """Samples `measure(inspect)` of the worker's build steps' containers from the host until stopped."""

    def __init__(self, client: docker.DockerClient, server: Server, measure: Any) -> None:
        self.values: list[Any] = []
        self._client = client
        self._server = server
        self._measure = measure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        filters = {"label": [f"hatchway.worker_id={self._server.worker_id}", "hatchway.role=build"]}
        while not self._stop.wait(0.05):  # sampling a state nothing signals
            for summary in self._client.api.containers(all=True, filters=filters):
                try:
                    value = self._measure(self._client.api.inspect_container(summary["Id"]))
                except (docker.errors.NotFound, FileNotFoundError):
                    continue  # gone in between
                if value is not None and value not in self.values:
                    self.values.append(value)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def layer_usage(info: dict[str, Any]) -> tuple[str, int, int] | None:
    """(layer directory, bytes used, size) of the filesystem a running step's writable layer is on."""
    if not info["State"].get("Running"):
        return None
    layer = Path(info["GraphDriver"]["Data"]["UpperDir"]).parent
    stat = os.statvfs(layer / "diff")
    used = sum(path.stat().st_size for path in (layer / "diff").rglob("*") if path.is_file())
    return str(layer), used, stat.f_blocks * stat.f_frsize
