"""An in-memory image service: the fake beside `FakeEngine` (`engines/fake.py`), for unit tests. It keeps the
contract the real image service keeps (`tests/contracts/images.py`); where it cannot (it runs no build, evicts
nothing), a capability flag on its class says so."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from hatchway.engines.base import BuildSandbox, ImageSource, ManagedImage, image_name
from hatchway.engines.build_copy import check_context
from hatchway.engines.dockerfile import parse
from hatchway.engines.images import build_tag
from hatchway.errors import EngineError, ImageNotFound, ImagePullFailed, NotAllowed


class FakeImages:
    """An `ImageService` in memory: it has every image, or those in `present`; pulls those in `registry` (a
    registry whose host is in `unreachable` fails the pull, any other does not have the image); builds and imports
    without running anything, refusing what the Docker one refuses; and manages what it pulled, built or imported."""

    runs_builds: ClassVar[bool] = False
    """A build runs nothing: its Dockerfile is read and checked as the Docker one does (so what that refuses
    before running, this refuses too), but no instruction runs, so none fails."""
    evicts: ClassVar[bool] = False
    """It has no cache budget: `evict` removes nothing."""

    def __init__(
        self,
        present: set[str] | None = None,
        *,
        registry: set[str] | None = None,
        unreachable: set[str] | None = None,
        image_allowed: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self.present_images = None if present is None else {image_name(image) for image in present}
        self.registry = {image_name(image) for image in registry or ()}
        self.unreachable = unreachable or set()
        self.image_allowed = image_allowed
        self.held: dict[str, int] = {}
        self._managed: dict[str, tuple[ImageSource, int, float]] = {}
        self._clock = itertools.count(1)

    async def present(self, image: str) -> bool:
        return self.present_images is None or image_name(image) in self.present_images

    async def ensure(self, image: str) -> bool:
        name = image_name(image)
        if await self.present(name):
            return True
        if name.split("/")[0] in self.unreachable:
            raise ImagePullFailed(f"pulling image {name!r} failed: its registry does not answer")
        if name not in self.registry:
            raise ImageNotFound(f"image {name!r} does not exist in its registry: manifest unknown")
        self._add(name, "pulled")
        return False

    async def build(
        self,
        dockerfile: str,
        files: dict[str, bytes],
        on_output: Callable[[str], None],
        extra_inputs: str,
        sandbox: BuildSandbox,
    ) -> tuple[str, bool]:
        plan = parse(dockerfile)
        check_context(files)
        for base in plan.bases:
            if not self.image_allowed(base):
                raise NotAllowed(f"the Dockerfile's base image {base!r} is not in the worker's allowed images")
        tag = self.build_name(dockerfile, files, extra_inputs, sandbox.runtime)
        if tag in self._managed:
            return tag, True
        for base in plan.bases:
            await self.ensure(base)
        lines = [*(i.text for i in plan.global_args)]
        for stage in plan.stages:
            lines += [f"FROM {stage.base}", *(instruction.text for instruction in stage.instructions)]
        for number, line in enumerate(lines, start=1):
            on_output(f"Step {number}/{len(lines)} : {line}")  # lines as the real builder's: no newline
        on_output(f"Successfully tagged {tag}")
        self._add(tag, "built")
        return tag, False

    def build_name(self, dockerfile: str, files: dict[str, bytes], extra_inputs: str, runtime: str) -> str:
        return build_tag(dockerfile, files, extra_inputs, runtime)

    def acquire(self, image: str) -> None:
        name = image_name(image)
        self.held[name] = self.held.get(name, 0) + 1
        if name in self._managed:
            source, size, _ = self._managed[name]
            self._managed[name] = (source, size, next(self._clock))

    def release(self, image: str) -> None:
        name = image_name(image)
        if self.held.get(name, 0) <= 1:
            self.held.pop(name, None)
        else:
            self.held[name] -= 1

    async def import_rootfs(self, name: str, tarball: Path) -> ManagedImage:
        name = image_name(name)
        size = await asyncio.to_thread(_file_size, tarball)
        if size is None:
            raise EngineError(f"cannot import image {name!r}: {tarball} is not a file")
        self._add(name, "imported", size)
        return self._as_managed(name)

    async def managed(self) -> list[ManagedImage]:
        return [self._as_managed(name) for name in sorted(self._managed, key=lambda name: self._managed[name][2])]

    async def evict(self) -> list[str]:
        return []

    async def sweep(self) -> list[str]:
        return []  # its builds run nothing, so leave nothing

    def _add(self, name: str, source: ImageSource, size_bytes: int = 1024) -> None:
        if self.present_images is not None:
            self.present_images.add(name)
        self._managed[name] = (source, size_bytes, next(self._clock))

    def _as_managed(self, name: str) -> ManagedImage:
        source, size, used = self._managed[name]
        return ManagedImage(name=name, source=source, size_bytes=size, last_used=used, in_use=self.held.get(name, 0))


def _file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None
