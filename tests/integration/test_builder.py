"""hatchway's own builder against the real engine: what a Dockerfile's instructions make (as Docker's builder would),
the image's exact configuration, and what it leaves behind when a worker dies mid-build or cannot limit a build."""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from hatchway.engines.base import BuildSandbox, Handle, Role
from hatchway.engines.build_steps import BuildSteps
from hatchway.engines.builder import BuildHost
from hatchway.engines.docker import DockerEngine
from hatchway.engines.docker_host import DockerHost
from hatchway.engines.images import ImageManager
from hatchway.engines.offline_etc import temporary_offline_etc
from hatchway.engines.volumes import LoopVolumes
from hatchway.errors import BuildFailed
from tests.conftest import BUSYBOX, build_leftovers

pytestmark = pytest.mark.docker

MakeManager = Callable[..., ImageManager]


@pytest.fixture
def owner() -> str:
    return f"hw-builder-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sandbox(owner: str) -> BuildSandbox:
    return BuildSandbox(owner=owner, runtime="docker", memory_mb=128, cpus=1.0, pids=64, disk_mb=64, timeout_s=60)


@pytest.fixture
def make_manager(tmp_path: Path, docker_client: docker.DockerClient, owner: str) -> Iterator[MakeManager]:
    """Managers whose built images are removed afterwards; `api` replaces the engine's client (to lie about it)."""
    made: list[ImageManager] = []

    def make(api: Any = None, **build_options: Any) -> ImageManager:
        host = BuildHost(
            worker_id=f"{owner}-worker",
            volumes=LoopVolumes(tmp_path / "volumes", owner=None),
            runtimes={"docker": None, "gvisor": "runsc"},
            **build_options,
        )
        client = api or docker_client.api
        manager = ImageManager(
            lambda: client,
            state_path=tmp_path / f"images-{len(made)}.json",
            pull_timeout_s=60,
            build_timeout_s=60,
            cache_budget_bytes=10**12,
            image_allowed=lambda _: True,
            builds=host,
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        for image in manager.managed():
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_image(image.name, force=True)
    assert build_leftovers(docker_client, owner) == []


def run(client: docker.DockerClient, image: str, script: str) -> str:
    output: bytes = client.containers.run(
        image, ["/bin/sh", "-c", script], entrypoint=[], remove=True, network_mode="none", stderr=True
    )
    return output.decode()


def tarball(members: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


DOCKERFILE = """\
# escape=\\
ARG GREETING=hello
FROM {busybox} AS tools
ARG GREETING
RUN mkdir -p /out && echo "$GREETING from $(id -u)" > /out/made.txt \\
    && echo made-in-tools
FROM {busybox}
ARG PLACE="the image"
ENV HOME=/home/app WHERE="in $PLACE"
LABEL org.example.purpose="a test" build="$PLACE"
WORKDIR /srv
WORKDIR app
COPY --from=tools /out/ ./from-tools/
COPY data/*.txt notes/
COPY --chown=1234:nogroup single.txt .
ADD bundle.tar.gz /opt/
USER 1234
RUN ["/bin/sh", "-c", "id -u > /tmp/user && echo $WHERE $PLACE > /tmp/vars"]
EXPOSE 8080 9000-9001/udp
STOPSIGNAL SIGINT
SHELL ["/bin/sh", "-e", "-c"]
ENTRYPOINT exec echo
"""


def test_a_dockerfile_builds_what_docker_s_builder_would(
    make_manager: MakeManager, sandbox: BuildSandbox, docker_client: docker.DockerClient
) -> None:
    files = {
        "data/a.txt": b"A",
        "data/b.txt": b"B",
        "data/skip.md": b"no",
        "single.txt": b"one",
        "bundle.tar.gz": tarball({"pkg/lib.txt": b"unpacked"}),
    }
    output: list[str] = []
    tag, cached = make_manager().build(DOCKERFILE.format(busybox=BUSYBOX), files, output.append, "", sandbox)
    assert not cached and "made-in-tools" in output and output[-1] == f"Successfully tagged {tag}"
    assert output[0] == "Step 1/20 : ARG GREETING=hello"
    listing = run(
        docker_client,
        tag,
        "cd /srv/app && cat from-tools/made.txt notes/a.txt notes/b.txt /tmp/user /tmp/vars; ls notes;"
        " stat -c '%u:%g %a' single.txt notes/a.txt; cat /opt/pkg/lib.txt; echo",
    )
    assert listing.splitlines() == [
        "hello from 0",
        "AB1234",
        "in the image the image",
        "a.txt",
        "b.txt",
        "1234:65534 644",
        "0:0 644",
        "unpacked",
    ]
    config = docker_client.api.inspect_image(tag)["Config"]
    assert config["Env"] == ["PATH=/bin", "HOME=/home/app", "WHERE=in the image"], "ARGs stay out of the image"
    assert config["Labels"] == {"org.example.purpose": "a test", "build": "the image", "hatchway.managed": "built"}
    assert (config["WorkingDir"], config["User"], config["StopSignal"]) == ("/srv/app", "1234", "SIGINT")
    assert config["Entrypoint"] == ["/bin/sh", "-e", "-c", "exec echo"] and not config["Cmd"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9000/udp", "9001/udp"}


def test_copy_into_scratch_and_names_for_chown(
    make_manager: MakeManager, sandbox: BuildSandbox, docker_client: docker.DockerClient
) -> None:
    manager = make_manager()
    tag, _ = manager.build("FROM scratch\nCOPY f /f\n", {"f": b"in scratch"}, lambda _: None, "", sandbox)
    container = docker_client.api.create_container(tag, ["none"])
    try:
        chunks, _ = docker_client.api.get_archive(container["Id"], "/f")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile("f")
            assert member is not None and member.read() == b"in scratch"
    finally:
        docker_client.api.remove_container(container["Id"], force=True)
    chowned = f"FROM {BUSYBOX}\nCOPY --chown=nobody:nogroup f /f\n"
    named, _ = manager.build(chowned, {"f": b"x"}, lambda _: None, "", sandbox)
    assert run(docker_client, named, "stat -c %U:%G /f") == "nobody:nogroup\n"
    for chown, missing in (("nosuchuser", "user 'nosuchuser'"), ("nobody", "group 'nobody'")):  # as Docker has it
        with pytest.raises(BuildFailed, match=f"has no {missing}"):
            manager.build(f"FROM {BUSYBOX}\nCOPY --chown={chown} f /f\n", {"f": b"x"}, lambda _: None, "", sandbox)
    with pytest.raises(BuildFailed, match="'missing' is not in the build context"):
        manager.build(f"FROM {BUSYBOX}\nCOPY missing /m\n", {}, lambda _: None, "", sandbox)
    with pytest.raises(BuildFailed, match=re.escape("hatchway.* are the worker's")):
        # A label the worker's sweeps go by would let a build's image pass for a leftover, or the reverse.
        manager.build(f"FROM {BUSYBOX}\nLABEL hatchway.role=build\n", {}, lambda _: None, "", sandbox)


def test_capabilities_the_operator_grants_builds_are_the_only_ones(
    make_manager: MakeManager, sandbox: BuildSandbox
) -> None:
    dockerfile = f"FROM {BUSYBOX}\nRUN grep CapEff /proc/self/status && chown 1:1 /tmp # {sandbox.owner}\n"
    with pytest.raises(BuildFailed, match="non-zero code"):
        make_manager().build(dockerfile, {}, lambda _: None, "", sandbox)
    output: list[str] = []
    make_manager(capabilities=("CHOWN",)).build(dockerfile, {}, output.append, "", sandbox)
    assert "CapEff:\t0000000000000001" in output, output


def test_a_worker_that_cannot_limit_a_build_s_disk_refuses_unless_told(
    make_manager: MakeManager, sandbox: BuildSandbox, docker_client: docker.DockerClient
) -> None:
    class OtherStorage:
        """The engine, but saying its containers' layers are not overlay2's."""

        def __getattr__(self, name: str) -> Any:
            return getattr(docker_client.api, name)

        def inspect_container(self, container: str) -> dict[str, Any]:
            info: dict[str, Any] = docker_client.api.inspect_container(container)
            return {**info, "GraphDriver": {"Name": "vfs", "Data": {}}}

    dockerfile = f"FROM {BUSYBOX}\nRUN echo {sandbox.owner}\n"
    with pytest.raises(BuildFailed, match=r"storage driver is 'vfs'.*build_disk_unlimited"):
        make_manager(OtherStorage()).build(dockerfile, {}, lambda _: None, "", sandbox)
    output: list[str] = []
    make_manager(OtherStorage(), disk_unlimited=True).build(dockerfile, {}, output.append, "", sandbox)
    assert any("not limited on this worker" in line for line in output) and sandbox.owner in output


def test_a_runtime_that_keeps_writes_in_its_sandbox_is_refused(
    make_manager: MakeManager, sandbox: BuildSandbox, docker_client: docker.DockerClient
) -> None:
    class OverlaidRunsc:
        def __getattr__(self, name: str) -> Any:
            return getattr(docker_client.api, name)

        def info(self) -> dict[str, Any]:
            return {"Runtimes": {"runsc": {"path": "runsc", "runtimeArgs": ["--overlay2=root:self"]}}}

    on_gvisor = BuildSandbox(**{**sandbox.__dict__, "runtime": "gvisor"})
    with pytest.raises(BuildFailed, match="--overlay2=root:self"):
        make_manager(OverlaidRunsc()).build(f"FROM {BUSYBOX}\nRUN true\n", {}, lambda _: None, "", on_gvisor)


async def test_what_a_dead_worker_s_build_left_is_removed(
    tmp_path: Path, sandbox: BuildSandbox, docker_client: docker.DockerClient, owner: str
) -> None:
    """A step bound to the build's disk, and a committed step, as a worker killed mid-build leaves them: the
    engine's removal of a labelled step (recovery's) unbinds it first, and the sweep (recovery's, and the image
    cache's every minute) takes the images."""
    host = DockerHost(docker_url=None, max_concurrent_jobs=1)
    volumes = LoopVolumes(tmp_path / "volumes", owner=None)
    steps = BuildSteps(
        host.api(),
        sandbox=sandbox,
        runtime=None,
        worker_id=f"{owner}-worker",
        capabilities=(),
        offline_etc=temporary_offline_etc,
        volumes=volumes,
        disk_unlimited=False,
        deadline=float("inf"),
        limit_s=60,
        on_output=lambda _: None,
    )
    committed = steps.create(BUSYBOX, ["true"], user="", workdir="/", env={}, writable=True)
    steps.commit(committed)
    left = steps.create(BUSYBOX, ["sleep", "600"], user="", workdir="/", env={}, writable=True)
    docker_client.api.start(left)
    engine = DockerEngine(host, name="docker", worker_id=f"{owner}-worker")
    found = [item for item in await engine.recover() if item.handle.ref == left]
    assert [item.handle.role for item in found] == [Role.BUILD]
    await engine.remove(Handle(job_id=owner, ref=left, role=Role.BUILD))
    manager = ImageManager(
        host.api,
        state_path=tmp_path / "images.json",
        pull_timeout_s=60,
        build_timeout_s=60,
        cache_budget_bytes=10**12,
        image_allowed=lambda _: True,
        builds=BuildHost(worker_id=f"{owner}-worker", volumes=volumes, runtimes={"docker": None}),
    )
    assert len(manager.sweep()) == 1, "the committed step's image"
    assert build_leftovers(docker_client, owner) == []
    assert volumes.sweep(set()) != [], "the build's disk is left for the start-up sweep, which removes it"
    host.close()
