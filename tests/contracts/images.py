"""The `ImageService` contract: what preparing a job, the pools and `GET /images` rely on, whichever service it is."""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

import pytest

from hatchway.engines.base import ImageService
from hatchway.errors import BuildFailed, EngineError, ImageNotFound, ImagePullFailed, NotAllowed
from tests.conftest import BUSYBOX

REGISTRY = "127.0.0.1:5000"
"""The local registry the integration tier pulls from (scripts/test-registry.sh)."""
UNREACHABLE = "127.0.0.1:9"
"""A registry address nothing answers on."""
DISALLOWED = "evil/"
"""Base images whose names start so are not allowed by the subject's policy."""


class ImagesSubject(ABC):
    """An image service under contract: present are the test images; its policy allows any base but `DISALLOWED`."""

    runs_builds: bool
    """Whether a build runs its Dockerfile (so a failing RUN fails it)."""
    evicts: bool
    """Whether it has a cache budget, here 0 bytes: `evict` removes every idle built or pulled image."""

    def __init__(self, service: ImageService) -> None:
        self.service = service
        self.prefix = f"hw-contract-{uuid.uuid4().hex[:10]}"
        """Unique per test: its images and build inputs meet no other test's."""

    @abstractmethod
    def publish(self, name: str) -> None:
        """Put image `name` (busybox) in its registry, and not on the engine."""

    @abstractmethod
    def rootfs(self, path: Path) -> Path:
        """A root filesystem tarball at `path`."""


def discard(_line: str) -> None:
    """Build output nobody reads."""


class ImagesContract:
    """Every image service does this. Subclasses provide the `subject` fixture."""

    async def test_present_says_whether_the_image_is_there_tag_or_no_tag(self, subject: ImagesSubject) -> None:
        service = subject.service
        assert await service.present(BUSYBOX) is True
        assert await service.present("hatchway-test/busybox") is True, "no tag means latest"
        assert await service.present(f"{REGISTRY}/{subject.prefix}/absent:1") is False

    async def test_ensure_of_a_present_image_is_true_and_it_is_not_managed(self, subject: ImagesSubject) -> None:
        service = subject.service
        assert await service.ensure(BUSYBOX) is True
        assert await service.ensure("hatchway-test/busybox") is True
        assert await service.managed() == [], "an image hatchway did not pull is not hatchway's to manage"

    async def test_ensure_pulls_a_missing_image_once_and_manages_it(self, subject: ImagesSubject) -> None:
        service, name = subject.service, f"{REGISTRY}/{subject.prefix}/busybox:1"
        subject.publish(name)
        assert await service.present(name) is False
        assert await service.ensure(name) is False, "it had to be pulled"
        assert await service.present(name) is True
        assert await service.ensure(name) is True
        assert [(image.name, image.source, image.in_use) for image in await service.managed()] == [(name, "pulled", 0)]

    async def test_ensure_of_an_image_no_registry_has_is_image_not_found(self, subject: ImagesSubject) -> None:
        name = f"{REGISTRY}/{subject.prefix}/nope:1"
        with pytest.raises(ImageNotFound, match=re.escape(name)):
            await subject.service.ensure(name)
        assert await subject.service.managed() == []

    async def test_ensure_from_a_registry_that_does_not_answer_is_image_pull_failed(
        self, subject: ImagesSubject
    ) -> None:
        name = f"{UNREACHABLE}/{subject.prefix}/nope:1"
        with pytest.raises(ImagePullFailed, match=re.escape(name)):
            await subject.service.ensure(name)

    async def test_build_names_its_image_by_its_inputs_and_reuses_it(self, subject: ImagesSubject) -> None:
        service, prefix = subject.service, subject.prefix
        dockerfile = f"FROM {BUSYBOX}\nCOPY greeting.txt /greeting.txt\n"
        files = {"greeting.txt": b"hello\n"}
        tag = service.build_name(dockerfile, files, prefix)
        assert re.fullmatch(r"hatchway-build:[0-9a-f]{24}", tag), tag
        assert service.build_name(dockerfile, {"greeting.txt": b"other\n"}, prefix) != tag, "files count"
        assert service.build_name(dockerfile, files, f"{prefix}-other") != tag, "extra inputs count"

        output: list[str] = []
        assert await service.build(dockerfile, files, output.append, prefix) == (tag, False)
        assert output, "a build says what it does"
        assert all("\n" not in line for line in output), "output comes a line at a time, without its newline"
        assert await service.present(tag) is True
        again: list[str] = []
        assert await service.build(dockerfile, files, again.append, prefix) == (tag, True)
        assert again == [], "a cached build has nothing to say"
        assert [(image.name, image.source) for image in await service.managed()] == [(tag, "built")]

    async def test_build_refuses_disallowed_and_unreadable_bases_before_building(self, subject: ImagesSubject) -> None:
        service, prefix = subject.service, subject.prefix
        output: list[str] = []
        for dockerfile, error in (
            (f"FROM {DISALLOWED}{prefix}:1\n", "not in the worker's allowed images"),
            (f"FROM {BUSYBOX} AS tools\nFROM {DISALLOWED}{prefix}:2\n", "not in the worker's allowed images"),
            ("ARG BASE=hatchway-test/busybox\nFROM $BASE\n", "variable"),
            (f"FROM {BUSYBOX}\nADD http://127.0.0.1:9/x /x\n", "URL"),
        ):
            with pytest.raises(NotAllowed, match=error) as raised:
                await service.build(dockerfile, {}, output.append, prefix)
            assert raised.value.status == 403
            assert await service.present(service.build_name(dockerfile, {}, prefix)) is False
        assert output == []
        assert await service.managed() == []

    async def test_build_on_a_base_no_registry_has_is_image_not_found(self, subject: ImagesSubject) -> None:
        base = f"{REGISTRY}/{subject.prefix}/nope:1"
        with pytest.raises(ImageNotFound, match=re.escape(base)):
            await subject.service.build(f"FROM {base}\n", {}, discard, subject.prefix)

    async def test_import_makes_a_managed_image_of_a_root_filesystem(
        self, subject: ImagesSubject, tmp_path: Path
    ) -> None:
        service, name = subject.service, f"{subject.prefix}/rootfs:1"
        image = await service.import_rootfs(name, subject.rootfs(tmp_path / "root.tar"))
        assert (image.name, image.source, image.in_use) == (name, "imported", 0)
        assert image.size_bytes > 0
        assert await service.present(name) is True
        assert [item.name for item in await service.managed()] == [name]
        with pytest.raises(EngineError, match="is not a file"):
            await service.import_rootfs(f"{subject.prefix}/nothing:1", tmp_path / "missing.tar")

    async def test_acquire_and_release_count_uses_of_an_image(self, subject: ImagesSubject) -> None:
        service, name = subject.service, f"{REGISTRY}/{subject.prefix}/busybox:1"
        subject.publish(name)
        await service.ensure(name)
        service.acquire(name)
        service.acquire(name)
        assert [image.in_use for image in await service.managed()] == [2]
        service.release(name)
        assert [image.in_use for image in await service.managed()] == [1]
        service.release(name)
        service.release(name)  # one release too many is harmless
        service.release(f"{subject.prefix}/never-acquired:1")
        assert [image.in_use for image in await service.managed()] == [0]
        service.acquire(f"{subject.prefix}/not-yet-there:1")  # a job may hold a name before its image exists
        service.release(f"{subject.prefix}/not-yet-there:1")

    async def test_evict_removes_idle_images_least_recently_used_first_and_keeps_imports(
        self, subject: ImagesSubject, tmp_path: Path
    ) -> None:
        service, prefix = subject.service, subject.prefix
        tags = [(await service.build(f"FROM {BUSYBOX}\nLABEL n={n}\n", {}, discard, prefix))[0] for n in "abc"]
        imported = await service.import_rootfs(f"{prefix}/kept:1", subject.rootfs(tmp_path / "root.tar"))
        a, b, c = tags
        service.acquire(a)  # in use
        for tag in (c, b):  # c used before b: c is the least recently used
            service.acquire(tag)
            service.release(tag)
        evicted = await service.evict()
        if subject.evicts:
            assert evicted == [c, b]
            assert [await service.present(tag) for tag in tags] == [True, False, False]
        else:
            assert evicted == [], "evicts is False: the fake keeps every image"
            assert [await service.present(tag) for tag in tags] == [True, True, True]
        assert await service.present(imported.name) is True
        service.release(a)


class BuildingImagesContract:
    """What only an image service whose builds run their Dockerfile can show (`runs_builds`): the fake's build
    nothing, so its test class does not take these."""

    async def test_build_whose_instruction_fails_is_build_failed(self, subject: ImagesSubject) -> None:
        dockerfile = f"FROM {BUSYBOX}\nRUN echo doomed-{subject.prefix}; exit 3\n"
        output: list[str] = []
        with pytest.raises(BuildFailed, match="returned a non-zero code: 3"):
            await subject.service.build(dockerfile, {}, output.append, subject.prefix)
        assert f"doomed-{subject.prefix}" in output
        assert await subject.service.managed() == []
