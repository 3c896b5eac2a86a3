"""The image manager against the real Docker engine, and a real registry on 127.0.0.1:5000 for pulls."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import docker
import pytest

from hatchway.engines.base import BuildSandbox
from hatchway.engines.images import ImageManager, build_tag
from hatchway.errors import BuildFailed, ImageNotFound, ImagePullFailed, NotAllowed
from tests.conftest import BUSYBOX, ROOT, build_host, build_leftovers

pytestmark = pytest.mark.docker

REGISTRY = "127.0.0.1:5000"
MakeManager = Callable[..., ImageManager]


@pytest.fixture
def prefix() -> str:
    """Unique per test, so that no test's images (or build tags) meet another's, or a leftover's."""
    return f"hw-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sandbox(prefix: str) -> BuildSandbox:
    """What the test's builds run under: a job (named by the test's prefix) with modest limits, on runc."""
    return BuildSandbox(owner=prefix, runtime="docker", memory_mb=128, cpus=1.0, pids=64, disk_mb=64, timeout_s=60)


@pytest.fixture
def doomed(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Names of images to remove after the test, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_image(name, force=True)


@pytest.fixture
def make_manager(tmp_path: Path, docker_client: docker.DockerClient, doomed: list[str]) -> Iterator[MakeManager]:
    """Factory of managers sharing one state file; every image any of them manages is removed afterwards."""
    made: list[ImageManager] = []

    def make(
        *, budget: int = 10**12, allowed: Callable[[str], bool] = lambda _: True, **timeouts: float
    ) -> ImageManager:
        manager = ImageManager(
            lambda: docker_client.api,
            state_path=tmp_path / "state" / "images.json",
            pull_timeout_s=timeouts.get("pull_timeout_s", 60.0),
            build_timeout_s=timeouts.get("build_timeout_s", 60.0),
            cache_budget_bytes=budget,
            image_allowed=allowed,
            builds=build_host(tmp_path / "volumes"),
        )
        made.append(manager)
        return manager

    yield make
    doomed.extend(image.name for manager in made for image in manager.managed())


@pytest.fixture
def pulls(docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every repository the engine is asked to pull during the test (the real pull still happens)."""
    seen: list[str] = []
    real_pull = docker_client.api.pull

    def spy(repository: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(repository)
        return real_pull(repository, *args, **kwargs)

    monkeypatch.setattr(docker_client.api, "pull", spy)
    return seen


@pytest.fixture(scope="session")
def registry() -> str:
    """A real registry on 127.0.0.1:5000, started (and installed) by the script if it is not up."""
    subprocess.run([str(ROOT / "scripts" / "test-registry.sh")], check=True)
    return REGISTRY


def discard(_line: str) -> None:
    """Build output nobody reads."""


def exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def run(client: docker.DockerClient, image: str, command: str) -> str:
    output: bytes = client.containers.run(image, ["/bin/sh", "-c", command], remove=True, network_mode="none")
    return output.decode()


def export_rootfs(client: docker.DockerClient, path: Path) -> Path:
    """A root filesystem tarball: busybox's, as `docker export` writes it."""
    container = client.containers.create(BUSYBOX, ["true"], network_mode="none")
    try:
        with path.open("wb") as out:
            for chunk in cast(Iterator[bytes], container.export()):
                out.write(chunk)
    finally:
        container.remove(force=True)
    return path


def test_ensure_present_image_is_cached_without_pulling(make_manager: MakeManager, pulls: list[str]) -> None:
    manager = make_manager()
    assert manager.ensure(BUSYBOX) is True
    assert manager.ensure("hatchway-test/busybox") is True  # the default tag is `latest`
    assert pulls == []
    assert manager.managed() == [], "an image hatchway did not pull is not hatchway's to manage"


def test_ensure_missing_image_fails_fast_when_no_registry_answers(make_manager: MakeManager, prefix: str) -> None:
    image = f"docker.io/hatchway-test/{prefix}:1"
    started = time.monotonic()
    with pytest.raises(ImagePullFailed, match=re.escape(image)):
        make_manager().ensure(image)
    assert time.monotonic() - started < 10
    with pytest.raises(ImageNotFound, match="not a valid image name"):
        make_manager().ensure("Upper/Case:1")


def test_ensure_pulls_from_a_registry(
    registry: str, make_manager: MakeManager, docker_client: docker.DockerClient, doomed: list[str], pulls: list[str]
) -> None:
    repository, name = f"{registry}/hatchway-test/busybox", f"{registry}/hatchway-test/busybox:pull-test"
    doomed.append(name)
    docker_client.api.tag(BUSYBOX, repository, "pull-test")
    pushed = list(docker_client.api.push(repository, tag="pull-test", stream=True, decode=True))
    assert not [line for line in pushed if "error" in line], pushed
    docker_client.api.remove_image(name)
    manager = make_manager()

    assert manager.ensure(name) is False
    assert pulls == [repository]
    assert exists(docker_client, name)
    assert run(docker_client, name, "echo pulled") == "pulled\n"
    assert [(image.name, image.source) for image in manager.managed()] == [(name, "pulled")]
    assert manager.ensure(name) is True
    assert pulls == [repository]


def test_ensure_of_an_image_the_registry_does_not_have(registry: str, make_manager: MakeManager) -> None:
    with pytest.raises(ImageNotFound, match=re.escape(f"{registry}/hatchway-test/nope:1")) as raised:
        make_manager().ensure(f"{registry}/hatchway-test/nope:1")
    assert "manifest unknown" in str(raised.value)


def test_build_streams_output_caches_and_follows_its_inputs(
    make_manager: MakeManager, docker_client: docker.DockerClient, prefix: str, sandbox: BuildSandbox
) -> None:
    manager = make_manager()
    dockerfile = f"FROM {BUSYBOX}\nCOPY data/greeting.txt /greeting.txt\nRUN cat /greeting.txt && echo built-{prefix}\n"
    files = {"data/greeting.txt": b"hello from the context\n"}
    first: list[str] = []
    tag, cached = manager.build(dockerfile, files, first.append, prefix, sandbox)
    assert re.fullmatch(r"hatchway-build:[0-9a-f]{24}", tag) and cached is False
    assert {"hello from the context", f"built-{prefix}"} <= set(first), first
    assert run(docker_client, tag, "cat /greeting.txt") == "hello from the context\n"
    assert docker_client.images.get(tag).labels["hatchway.managed"] == "built"

    again: list[str] = []
    assert manager.build(dockerfile, files, again.append, prefix, sandbox) == (tag, True)
    assert again == []

    changed_tag, changed_cached = manager.build(
        dockerfile, {"data/greeting.txt": b"changed\n"}, discard, prefix, sandbox
    )
    assert changed_tag != tag and changed_cached is False
    assert run(docker_client, changed_tag, "cat /greeting.txt") == "changed\n"
    assert build_tag(dockerfile, files, "other bundle") != tag
    assert build_leftovers(docker_client, prefix) == []
    assert {(image.name, image.source) for image in manager.managed()} == {(tag, "built"), (changed_tag, "built")}


def test_disallowed_base_is_refused_and_nothing_built(
    make_manager: MakeManager, docker_client: docker.DockerClient, prefix: str, sandbox: BuildSandbox
) -> None:
    manager = make_manager(allowed=lambda image: image.startswith("hatchway-test/"))
    output: list[str] = []
    for dockerfile, base in [
        (f"FROM {BUSYBOX} AS tools\nFROM evil/{prefix}:1\nCOPY --from=tools /bin/sh /sh\n", f"evil/{prefix}:1"),
        (f"FROM {BUSYBOX}\nCOPY --from=evil/{prefix} /x /x\n", f"evil/{prefix}"),
        # The engine joins continued lines with nothing in between: this is `FROM evil/...`.
        (f"FROM {BUSYBOX}\nFR\\\nOM evil/{prefix}:2\n", f"evil/{prefix}:2"),
    ]:
        with pytest.raises(NotAllowed, match=re.escape(repr(base))) as raised:
            manager.build(dockerfile, {}, output.append, prefix, sandbox)
        assert raised.value.status == 403
        assert not exists(docker_client, manager.build_name(dockerfile, {}, prefix, "docker"))
    assert output == []
    # A stage named like an earlier alias is no image; this builds.
    staged = f"FROM {BUSYBOX} AS tools\nFROM tools\nRUN echo {prefix}\n"
    assert manager.build(staged, {}, output.append, prefix, sandbox)[1] is False


def test_variables_in_from_add_from_url_and_control_characters_are_refused(
    make_manager: MakeManager, prefix: str, sandbox: BuildSandbox
) -> None:
    manager = make_manager()
    for dockerfile, reason in (
        ("ARG BASE=hatchway-test/busybox\nFROM $BASE\n", "variable"),
        ("ARG TAG=latest\nFROM hatchway-test/busybox:${TAG}\n", "variable"),
        (f"FROM {BUSYBOX}\nADD http://127.0.0.1:9/x /x\n", "URL"),
        (f"FROM {BUSYBOX}\x0b\n", "control characters"),
    ):
        with pytest.raises(NotAllowed, match=reason):
            manager.build(dockerfile, {}, discard, prefix, sandbox)
    assert manager.managed() == []


def test_failing_run_raises_build_failed_with_the_error(
    make_manager: MakeManager, docker_client: docker.DockerClient, prefix: str, sandbox: BuildSandbox
) -> None:
    dockerfile = f"FROM {BUSYBOX}\nRUN echo doomed-{prefix}; exit 3\n"
    output: list[str] = []
    manager = make_manager()
    with pytest.raises(BuildFailed, match="returned a non-zero code: 3"):
        manager.build(dockerfile, {}, output.append, prefix, sandbox)
    assert f"doomed-{prefix}" in output
    assert not exists(docker_client, manager.build_name(dockerfile, {}, prefix, "docker"))
    assert build_leftovers(docker_client, prefix) == []


def test_build_timeout_gives_up_on_time_and_removes_the_step(
    make_manager: MakeManager, docker_client: docker.DockerClient, prefix: str, sandbox: BuildSandbox
) -> None:
    dockerfile = f"FROM {BUSYBOX}\nRUN sleep 60 # {prefix}\n"
    started = time.monotonic()
    with pytest.raises(BuildFailed, match="timed out after 2 s"):
        make_manager(build_timeout_s=2).build(dockerfile, {}, discard, prefix, sandbox)
    assert time.monotonic() - started < 15, "a generous deadline: the step is killed at 2 s"
    assert build_leftovers(docker_client, prefix) == [], "the step's container is removed when the build gives up"


def test_concurrent_builds_of_the_same_inputs_build_once(
    make_manager: MakeManager, prefix: str, sandbox: BuildSandbox
) -> None:
    manager = make_manager()
    dockerfile = f"FROM {BUSYBOX}\nRUN sleep 1 && echo once-{prefix}\n"
    barrier = threading.Barrier(2)
    results: list[tuple[tuple[str, bool], list[str]]] = []

    def build() -> None:
        output: list[str] = []
        barrier.wait()
        results.append((manager.build(dockerfile, {}, output.append, prefix, sandbox), output))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2
    assert {tag for (tag, _), _ in results} == {manager.build_name(dockerfile, {}, prefix, "docker")}
    assert sorted(cached for (_, cached), _ in results) == [False, True]
    assert sorted(output.count(f"once-{prefix}") for _, output in results) == [0, 1]


def test_import_rootfs_makes_a_runnable_image(
    make_manager: MakeManager, docker_client: docker.DockerClient, prefix: str, tmp_path: Path
) -> None:
    image = make_manager().import_rootfs(f"{prefix}/rootfs:1", export_rootfs(docker_client, tmp_path / "root.tar"))
    assert (image.name, image.source, image.in_use) == (f"{prefix}/rootfs:1", "imported", 0)
    assert image.size_bytes > 0
    assert run(docker_client, image.name, "echo imported-ok") == "imported-ok\n"


def test_evict_removes_least_recently_used_idle_images_until_under_budget(
    make_manager: MakeManager, docker_client: docker.DockerClient, prefix: str, tmp_path: Path, sandbox: BuildSandbox
) -> None:
    base_size = int(docker_client.images.get(BUSYBOX).attrs["Size"])
    # Each image built here is busybox plus a few bytes: two fit, three do not.
    manager = make_manager(budget=2 * base_size + 100_000)
    tags = [
        manager.build(f"FROM {BUSYBOX}\nCOPY f /f\n", {"f": name.encode()}, discard, prefix, sandbox)[0]
        for name in ("a", "b", "c")
    ]
    imported = manager.import_rootfs(f"{prefix}/kept:1", export_rootfs(docker_client, tmp_path / "root.tar"))
    a, b, c = tags
    manager.acquire(a)  # in use, and then made the least recently used of the three
    for tag in (b, c):
        manager.acquire(tag)
        manager.release(tag)

    assert manager.evict() == [b]
    assert [exists(docker_client, tag) for tag in tags] == [True, False, True]
    assert exists(docker_client, imported.name)
    assert manager.evict() == []
    assert [(image.name, image.in_use) for image in manager.managed()] == [(imported.name, 0), (a, 1), (c, 0)]
    manager.release(a)
    restarted = {image.name: image.source for image in make_manager().managed()}
    assert restarted == {a: "built", c: "built", imported.name: "imported"}, "the state file outlives the manager"
