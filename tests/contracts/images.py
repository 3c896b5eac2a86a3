"""The `ImageService` contract: what preparing a job, the pools and `GET /images` rely on, whichever service it is."""

from __future__ import annotations

import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

import pytest

from hatchway.engines.base import BuildSandbox, ImageService
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

    def sandbox(self, runtime: str = "docker", **limits: float) -> BuildSandbox:
        """What a build's steps run under: a job of this test's on `runtime`, with modest limits or `limits`."""
        values = {"memory_mb": 128, "cpus": 1.0, "pids": 64, "disk_mb": 64, "timeout_s": 60.0, **limits}
        return BuildSandbox(
            owner=self.prefix,
            runtime=runtime,
            memory_mb=int(values["memory_mb"]),
            cpus=values["cpus"],
            pids=int(values["pids"]),
            disk_mb=int(values["disk_mb"]),
            timeout_s=values["timeout_s"],
        )

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
        tag = service.build_name(dockerfile, files, prefix, "docker")
        assert re.fullmatch(r"hatchway-build:[0-9a-f]{24}", tag), tag
        assert service.build_name(dockerfile, {"greeting.txt": b"other\n"}, prefix, "docker") != tag, "files count"
        assert service.build_name(dockerfile, files, f"{prefix}-other", "docker") != tag, "extra inputs count"
        assert service.build_name(dockerfile, files, prefix, "gvisor") != tag, "the runtime counts"

        output: list[str] = []
        assert await service.build(dockerfile, files, output.append, prefix, subject.sandbox()) == (tag, False)
        assert output[:2] == [f"Step 1/2 : FROM {BUSYBOX}", "Step 2/2 : COPY greeting.txt /greeting.txt"]
        assert output[-1] == f"Successfully tagged {tag}"
        assert all("\n" not in line for line in output), "output comes a line at a time, without its newline"
        assert await service.present(tag) is True
        again: list[str] = []
        other_limits = subject.sandbox(memory_mb=256, pids=128, disk_mb=128)
        assert await service.build(dockerfile, files, again.append, prefix, other_limits) == (tag, True), (
            "limits bound a build, they do not change what it makes: the image is shared"
        )
        assert again == [], "a cached build has nothing to say"
        assert [(image.name, image.source) for image in await service.managed()] == [(tag, "built")]

    async def test_build_refuses_what_its_builder_does_not_do_naming_it(self, subject: ImagesSubject) -> None:
        service, prefix = subject.service, subject.prefix
        output: list[str] = []
        for line, named in (
            ("VOLUME /data", "VOLUME"),
            ("ONBUILD RUN true", "ONBUILD"),
            ("HEALTHCHECK CMD true", "HEALTHCHECK"),
            ("RUN --mount=type=cache,target=/c true", "RUN --mount"),
            ("COPY --chmod=755 a /a", "COPY --chmod"),
            ("ADD --from=x a /a", "ADD --from"),
            ("RUN <<EOF\necho hi\nEOF", "heredocs"),
            ("FORK everything", "unknown instruction FORK"),
        ):
            dockerfile = f"FROM {BUSYBOX}\n{line}\n"
            with pytest.raises(BuildFailed, match=re.escape(named)):
                await service.build(dockerfile, {"a": b"a"}, output.append, prefix, subject.sandbox())
            assert await service.present(service.build_name(dockerfile, {"a": b"a"}, prefix, "docker")) is False
        with pytest.raises(BuildFailed, match="--platform"):
            await service.build(
                f"FROM --platform=linux/amd64 {BUSYBOX}\n", {}, output.append, prefix, subject.sandbox()
            )
        assert output == [], "refused before anything ran"
        assert await service.managed() == []

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
                await service.build(dockerfile, {}, output.append, prefix, subject.sandbox())
            assert raised.value.status == 403
            assert await service.present(service.build_name(dockerfile, {}, prefix, "docker")) is False
        assert output == []
        assert await service.managed() == []

    async def test_build_on_a_base_no_registry_has_is_image_not_found(self, subject: ImagesSubject) -> None:
        base = f"{REGISTRY}/{subject.prefix}/nope:1"
        with pytest.raises(ImageNotFound, match=re.escape(base)):
            await subject.service.build(f"FROM {base}\n", {}, discard, subject.prefix, subject.sandbox())

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
        tags = [
            (await service.build(f"FROM {BUSYBOX}\nLABEL n={n}\n", {}, discard, prefix, subject.sandbox()))[0]
            for n in "abc"
        ]
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
        assert await service.sweep() == [], "no build of this worker's was cut short"


class BuildingImagesContract:
    """What only an image service whose builds run their Dockerfile can show (`runs_builds`): the fake's build
    nothing, so its test class does not take these. Each runs on runc and on gVisor: a build's steps run as the
    job would, under the job's runtime and limits."""

    @pytest.fixture(params=["docker", "gvisor"])
    def runtime(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    async def test_build_whose_instruction_fails_is_build_failed(self, subject: ImagesSubject, runtime: str) -> None:
        dockerfile = f"FROM {BUSYBOX}\nRUN echo doomed-{subject.prefix}; exit 3\n"
        output: list[str] = []
        with pytest.raises(BuildFailed, match="returned a non-zero code: 3"):
            await subject.service.build(dockerfile, {}, output.append, subject.prefix, subject.sandbox(runtime))
        assert f"doomed-{subject.prefix}" in output
        assert await subject.service.managed() == []

    async def test_build_steps_run_as_the_job_would(self, subject: ImagesSubject, runtime: str) -> None:
        dockerfile = (
            f"FROM {BUSYBOX}\n"
            f"RUN echo {subject.prefix}; grep CapEff /proc/self/status; uname -r; cat /sys/fs/cgroup/pids/pids.max"
            " || echo no-cgroups\n"
        )
        output: list[str] = []
        await subject.service.build(dockerfile, {}, output.append, subject.prefix, subject.sandbox(runtime, pids=48))
        assert "CapEff:\t0000000000000000" in output, output
        host_kernel = os.uname().release
        if runtime == "docker":
            assert host_kernel in output and "48" in output, output
        else:
            assert host_kernel not in output and "no-cgroups" in output, "gVisor's kernel, not the host's"

    async def test_build_writes_at_most_the_job_s_disk(self, subject: ImagesSubject, runtime: str) -> None:
        dockerfile = f"FROM {BUSYBOX}\nRUN echo {subject.prefix}; head -c 100000000 /dev/zero > /filler\n"
        with pytest.raises(BuildFailed, match="the build's disk of 16 MB is full"):
            await subject.service.build(dockerfile, {}, discard, subject.prefix, subject.sandbox(runtime, disk_mb=16))
        assert await subject.service.managed() == []

    async def test_build_ends_at_the_job_s_timeout(self, subject: ImagesSubject, runtime: str) -> None:
        dockerfile = f"FROM {BUSYBOX}\nRUN echo started-{subject.prefix}; sleep 600\n"
        output: list[str] = []
        started = time.monotonic()
        with pytest.raises(BuildFailed, match="timed out after 3 s"):
            sandbox = subject.sandbox(runtime, timeout_s=3)
            await subject.service.build(dockerfile, {}, output.append, subject.prefix, sandbox)
        assert time.monotonic() - started < 30, "a generous deadline: the step is killed at 3 s"
        assert f"started-{subject.prefix}" in output
