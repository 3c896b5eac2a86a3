"""The `ImageService` contract on `FakeImages`: the fake the runner, preparation and pool unit tests stand on."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.engines.fake_images import FakeImages
from tests.conftest import BUSYBOX, PYTHON
from tests.contracts.images import DISALLOWED, UNREACHABLE, ImagesContract, ImagesSubject


class FakeImagesSubject(ImagesSubject):
    runs_builds = FakeImages.runs_builds
    evicts = FakeImages.evicts

    def __init__(self) -> None:
        self.images = FakeImages(
            {BUSYBOX, PYTHON},
            registry=set(),
            unreachable={UNREACHABLE},
            image_allowed=lambda image: not image.startswith(DISALLOWED),
        )
        super().__init__(self.images)

    def publish(self, name: str) -> None:
        self.images.registry.add(name)

    def rootfs(self, path: Path) -> Path:
        path.write_bytes(b"a root filesystem, as far as the fake can tell")
        return path


class TestFakeImages(ImagesContract):
    @pytest.fixture
    def subject(self) -> FakeImagesSubject:
        return FakeImagesSubject()
