"""The `ImageService` of a Docker host: the image manager's blocking calls, run in the host's threads."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from pathlib import Path

from hatchway.engines.base import BuildSandbox, ManagedImage
from hatchway.engines.docker_host import DockerHost
from hatchway.engines.images import ImageManager


class DockerImages:
    """Pull, build, import and evict images on a Docker host without blocking the event loop."""

    def __init__(self, host: DockerHost, manager: ImageManager) -> None:
        self._host = host
        self._manager = manager

    async def present(self, image: str) -> bool:
        return await self._host.call(self._manager.present, image)

    async def ensure(self, image: str) -> bool:
        return await self._host.call(self._manager.ensure, image)

    async def build(
        self,
        dockerfile: str,
        files: dict[str, bytes],
        on_output: Callable[[str], None],
        extra_inputs: str,
        sandbox: BuildSandbox,
    ) -> tuple[str, bool]:
        stop = threading.Event()
        try:
            build = functools.partial(self._manager.build, stop=stop)
            return await self._host.call(build, dockerfile, files, on_output, extra_inputs, sandbox)
        except asyncio.CancelledError:
            stop.set()  # the build's thread stops its step and cleans up, rather than run on to its deadline
            raise

    async def import_rootfs(self, name: str, tarball: Path) -> ManagedImage:
        return await self._host.call(self._manager.import_rootfs, name, tarball)

    async def managed(self) -> list[ManagedImage]:
        return await self._host.call(self._manager.managed)

    async def evict(self) -> list[str]:
        return await self._host.call(self._manager.evict)

    async def sweep(self) -> list[str]:
        return await self._host.call(self._manager.sweep)

    def build_name(self, dockerfile: str, files: dict[str, bytes], extra_inputs: str, runtime: str) -> str:
        return self._manager.build_name(dockerfile, files, extra_inputs, runtime)

    def acquire(self, image: str) -> None:
        self._manager.acquire(image)

    def release(self, image: str) -> None:
        self._manager.release(image)
