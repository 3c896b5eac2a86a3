"""An image whose /etc/passwd is a symlink, dangling or not, crashed every pooled start of it: the engine's archive
of /etc/passwd holds the link itself, and tarfile raised KeyError opening it. The error
escaped the pool manager, which then counted the start as under way for ever: the pool never filled again and
reported nothing. Now the link is followed as Docker follows it (a dangling one gives HOME=/, as `docker run`
does), and any error a start raises ends that start's count and shows in the pool's `last_error`."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory

pytestmark = pytest.mark.docker

LINKS = {
    # Where the link leads, and the HOME a job of uid 65534 then gets (busybox's passwd says /nonexistent).
    "dangling": ("rm /etc/passwd && ln -s /nonexistent/passwd /etc/passwd", "/"),
    "relative": ("mv /etc/passwd /etc/passwd.real && ln -s passwd.real /etc/passwd", "/nonexistent"),
}


@pytest.fixture(params=sorted(LINKS))
def passwd_link_image(request: pytest.FixtureRequest, docker_client: docker.DockerClient) -> Iterator[tuple[str, str]]:
    """An image whose /etc/passwd is a symlink, and the HOME it gives uid 65534; removed afterwards."""
    command, home = LINKS[request.param]
    tag = f"hatchway-test/passwd-link:{request.param}-{uuid.uuid4().hex[:12]}"
    dockerfile = f"FROM hatchway-test/busybox:latest\nRUN {command}\n".encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, network_mode="none")
    yield tag, home
    docker_client.images.remove(tag, force=True)


def pool_of(server: Server, image: str, timeout_s: float = 60, **wanted: Any) -> dict[str, Any]:
    """The pool of `image` once it shows `wanted`, polled over HTTP within a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [pool for pool in server.client.get("/pools").json() if pool["image"].startswith(image)]
        if found and all(found[0][key] == value for key, value in wanted.items()):
            return found[0]
        assert time.monotonic() < deadline, f"the pool never showed {wanted}: {found}"
        time.sleep(0.1)


def test_a_pooled_image_whose_passwd_is_a_symlink_starts_and_runs(
    start_server: ServerFactory, passwd_link_image: tuple[str, str]
) -> None:
    image, home = passwd_link_image
    server = start_server(pools=json.dumps([{"image": image, "size": 1}]))
    pool = pool_of(server, image, idle=1, starting=0)
    assert pool["last_error"] is None, pool
    job = server.post_job(wait=True, image=image, command='echo "home=$HOME"').json()
    assert (job["state"], job["stdout"]) == ("succeeded", f"home={home}\n"), job
    assert job["run"]["pooled"], "it ran in the pooled container"
    pool_of(server, image, idle=1, starting=0, jobs_served=1)  # and the pool fills again
    assert server.stop() == 0
