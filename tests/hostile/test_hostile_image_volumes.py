"""An image may declare volumes (`VOLUME /data` in its Dockerfile). For such an image Docker gives every container
an anonymous volume on the host's disk at that path, outside the read-only root and outside the job's disk limit:
a job could write there until the host's disk under the Docker root is full. A declared volume must be bounded like
every other writable place of a job's."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.acceptance.conftest import ServerFactory
from tests.conftest import BUSYBOX

pytestmark = pytest.mark.docker

REPOSITORY = "hatchway-test/declares-a-volume"
DECLARING = f"{REPOSITORY}:latest"
WRITE_MB = 300


@pytest.fixture
def declaring_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """busybox, with `VOLUME /data` declared and writable by anyone (as an image for some server may have it)."""
    container = docker_client.containers.create(BUSYBOX, command=["sh", "-c", "mkdir /data && chmod 1777 /data"])
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
        container.commit(repository=REPOSITORY, tag="latest", changes=["VOLUME /data"])
    finally:
        container.remove()
    yield DECLARING
    docker_client.images.remove(DECLARING, force=True)


def test_a_volume_an_image_declares_is_bounded_like_the_job_s_own_disk(
    start_server: ServerFactory, declaring_image: str
) -> None:
    server = start_server()
    command = f"dd if=/dev/zero of=/data/x bs=1M count={WRITE_MB} 2>/dev/null; stat -c %s /data/x"
    job = server.post_job(
        wait=True, image=declaring_image, command=command, limits={"memory_mb": 64, "disk_mb": 32}
    ).json()
    written = int(job["stdout"].split()[-1]) if job["stdout"].strip() else 0
    assert job["reason"] == "memory_limit" or written <= 64 * 1024 * 1024, (
        f"the job wrote {written} bytes into the image's volume ({job['state']}, {job['reason']})"
    )
    after = server.post_job(wait=True, image=BUSYBOX, command="echo next").json()
    assert (after["state"], after["stdout"]) == ("succeeded", "next\n"), "the worker serves the next job"
    assert server.stop() == 0
