"""The `ImageService` contract on Docker's image service (`DockerImages` over `ImageManager`), pulling from a real
registry on 127.0.0.1:5000: what `FakeImages` stands in for."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import docker
import pytest

from hatchway.engines.docker_host import DockerHost
from hatchway.engines.docker_images import DockerImages
from hatchway.engines.images import ImageManager
from tests.conftest import BUSYBOX, ROOT, build_host, build_leftovers
from tests.contracts.images import DISALLOWED, BuildingImagesContract, ImagesContract, ImagesSubject

pytestmark = pytest.mark.docker


class DockerImagesSubject(ImagesSubject):
    runs_builds = True
    evicts = True

    def __init__(self, host: DockerHost, client: docker.DockerClient, state: Path) -> None:
        self._client = client
        self.manager = ImageManager(
            host.api,
            state_path=state,
            pull_timeout_s=30,
            build_timeout_s=30,
            cache_budget_bytes=0,
            image_allowed=lambda image: not image.startswith(DISALLOWED),
            builds=build_host(state.parent / "volumes"),
        )
        self.published: list[str] = []
        super().__init__(DockerImages(host, self.manager))

    def publish(self, name: str) -> None:
        repository, tag = name.rsplit(":", 1)
        self._client.api.tag(BUSYBOX, repository, tag)
        self.published.append(name)
        pushed = list(self._client.api.push(repository, tag=tag, stream=True, decode=True))
        assert not [line for line in pushed if "error" in line], pushed
        self._client.api.remove_image(name)

    def rootfs(self, path: Path) -> Path:
        container = self._client.containers.create(BUSYBOX, ["true"], network_mode="none")
        try:
            with path.open("wb") as out:
                for chunk in cast(Iterator[bytes], container.export()):
                    out.write(chunk)
        finally:
            container.remove(force=True)
        return path


@pytest.fixture(scope="session")
def registry() -> None:
    """The local registry, started (and installed) by the script if it is not up."""
    subprocess.run([str(ROOT / "scripts" / "test-registry.sh")], check=True)


class TestDockerImages(ImagesContract, BuildingImagesContract):
    @pytest.fixture
    async def subject(
        self, registry: None, docker_client: docker.DockerClient, tmp_path: Path
    ) -> AsyncIterator[DockerImagesSubject]:
        host = DockerHost(docker_url=None, max_concurrent_jobs=2)
        subject = DockerImagesSubject(host, docker_client, tmp_path / "images.json")
        yield subject
        doomed = [image.name for image in await subject.service.managed()] + subject.published
        for name in doomed:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_image(name, force=True)
        host.close()
        assert build_leftovers(docker_client, subject.prefix) == [], "a build left containers or images behind"
