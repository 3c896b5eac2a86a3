"""The engine's side of one image build (`builder`): each step's container, made as a job's would be (the job's
runtime, memory without swap, CPU, pids; no capabilities but those the operator grants builds, no new privileges,
no network unless the build's sandbox has the host's) but with a writable root on the build's disk
(`build_disk`); run with its output streamed and a deadline; committed; and removed on every path. Files go into a
container and come out of one as tar archives; the final image is written with exactly the configuration the
Dockerfile gave it.

Every container carries the job's, the worker's and the role `build` labels, and so does every image committed
from one, so that what a worker that died mid-build left is found and removed (`Recovery`, `ImageManager.evict`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import json
import logging
import math
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, cast

import docker
import docker.errors
from docker.utils.socket import frames_iter

from hatchway.engines import docker_streams as streams
from hatchway.engines.base import ENGINE_LABEL, JOB_LABEL, ROLE_LABEL, WORKER_LABEL, BuildSandbox, Role, SandboxSpec
from hatchway.engines.build_disk import BuildDisk, release
from hatchway.engines.docker_config import container_config
from hatchway.engines.docker_host import FOREIGN_ERRORS, explain
from hatchway.engines.offline_etc import OfflineEtc
from hatchway.engines.volumes import Volumes
from hatchway.errors import BuildFailed

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_LINE_BYTES = 64 * 1024
_SPOOL_BYTES = 8 * MIB
_STOP_WAIT_S = 30
_DIRECTORY_BIT = 1 << 31  # Go's os.ModeDir, in the engine's stat of a path
_STOPPED = "the build was stopped: its job was killed, or the worker is stopping"


class BuildSteps:
    """The containers and images of one build. Blocking: it runs in one of the engine's threads."""

    def __init__(
        self,
        api: docker.APIClient,
        *,
        sandbox: BuildSandbox,
        runtime: str | None,
        worker_id: str,
        capabilities: Sequence[str],
        offline_etc: Callable[[], OfflineEtc],
        volumes: Volumes,
        disk_unlimited: bool,
        deadline: float,
        limit_s: float,
        on_output: Callable[[str], None],
        stop: threading.Event | None = None,
    ) -> None:
        self.api = api
        self._stop = stop or threading.Event()
        self.sandbox = sandbox
        self._runtime = runtime
        self._capabilities = list(capabilities)
        self._offline_etc = offline_etc
        self._deadline = deadline
        self._limit_s = limit_s
        self._on_output = on_output
        self.labels = {
            JOB_LABEL: sandbox.owner,
            WORKER_LABEL: worker_id,
            ENGINE_LABEL: sandbox.runtime,
            ROLE_LABEL: Role.BUILD.value,
        }
        self.disk = BuildDisk(
            volumes, disk_mb=sandbox.disk_mb, unlimited=disk_unlimited, stat=self.stat, on_output=on_output
        )
        self._containers: list[str] = []
        self._images: list[str] = []

    def create(
        self, image: str, command: list[str], *, user: str, workdir: str, env: Mapping[str, str], writable: bool
    ) -> str:
        """A container of `image` for one step; `writable`: the step writes, on the build's disk."""
        spec = SandboxSpec(
            owner=self.sandbox.owner,
            role=Role.BUILD,
            image=image,
            user=user,
            memory_mb=self.sandbox.memory_mb,
            cpus=self.sandbox.cpus,
            pids=self.sandbox.pids,
            log_bytes=MIB,
            network=self.sandbox.network,
            workdir=workdir or "/",
        )
        config = container_config(
            self.api,
            spec,
            command,
            env,
            labels=self.labels,
            runtime=self._runtime,
            offline_etc=self._offline_etc,
            stdin=False,
            read_only=False,
            cap_add=self._capabilities or None,
        )
        config["entrypoint"] = []  # a step runs its command as written, not through the image's entrypoint
        container_id: str = self._call("creating a build step's container", self.api.create_container, **config)["Id"]
        self._containers.append(container_id)
        if writable:
            self.disk.bind(self.api, container_id)
        return container_id

    def run(self, container_id: str, describe: str) -> None:
        """Start the step's container, pass its output on line by line, and wait for it to exit; raises BuildFailed
        if it does not exit 0 before the build's deadline."""
        api = self.api
        sock = self._call(
            "attaching to a build step", api.attach_socket, container_id, {"stdout": 1, "stderr": 1, "stream": 1}
        )
        lines = _Lines(self._on_output)
        try:
            streams.raw(sock).settimeout(None)
            try:
                api.start(container_id)
            except docker.errors.APIError as exc:
                raise BuildFailed(f"The command {describe!r} could not be started: {explain(exc)}") from exc
            frames = streams.within(lambda: frames_iter(sock, tty=False), self.remaining(), self._stop)  # type: ignore[no-untyped-call]
            for _, data in frames:
                lines.write(data)
            lines.flush()
            result = api.wait(container_id, timeout=max(math.ceil(self.remaining()), 1))
        except InterruptedError as exc:
            lines.flush()
            self._kill(container_id)
            raise BuildFailed(_STOPPED) from exc
        except (TimeoutError, *FOREIGN_ERRORS) as exc:
            lines.flush()
            if self.remaining() > 0 and not isinstance(exc, TimeoutError):
                raise BuildFailed(f"running a build step failed: {explain(exc)}") from exc
            self._kill(container_id)
            raise BuildFailed(f"building the image timed out after {self._limit_s:g} s") from exc
        finally:
            streams.close(sock)
        code = int(result["StatusCode"])
        if code == 0:
            return
        state = self._call("inspecting a build step", api.inspect_container, container_id)["State"]
        if state.get("OOMKilled"):
            raise BuildFailed(
                f"The command {describe!r} ran out of memory (the job's limit is {self.sandbox.memory_mb} MB)"
            )
        full = f" (the build's disk of {self.sandbox.disk_mb} MB is full)" if self.disk.full() else ""
        raise BuildFailed(f"The command {describe!r} returned a non-zero code: {code}{full}")

    def commit(self, container_id: str) -> str:
        """The image of the step's container: what it wrote on top of its image (labelled as its container is)."""
        image_id: str = self._call("committing a build step", self.api.commit, container_id)["Id"]
        self._images.append(image_id)
        self.remove(container_id)
        return image_id

    def remove(self, container_id: str) -> None:
        """Stop and remove a step's container, its layer released from the build's disk first."""
        self._kill(container_id)
        release(self.api, container_id)
        with contextlib.suppress(docker.errors.NotFound):
            self._call("removing a build step's container", self.api.remove_container, container_id, force=True)
        if container_id in self._containers:
            self._containers.remove(container_id)

    def stat(self, container_id: str, path: str) -> dict[str, Any] | None:
        """The engine's stat of `path` in the container's file system, or None if there is nothing there."""
        url = self.api._url("/containers/{0}/archive", container_id)  # type: ignore[attr-defined]
        response = self._call("looking at a path in a build step", self.api.head, url, params={"path": path})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BuildFailed(f"looking at {path!r} in a build step failed: HTTP {response.status_code}")
        header = response.headers.get("X-Docker-Container-Path-Stat", "")
        return cast(dict[str, Any], json.loads(base64.b64decode(header)))

    def is_directory(self, container_id: str, path: str) -> bool:
        found = self.stat(container_id, path)
        return found is not None and bool(int(found.get("mode", 0)) & _DIRECTORY_BIT)

    def put(self, container_id: str, archive: IO[bytes], what: str) -> None:
        """Extract a tar archive into the container's root (paths in it are relative to `/`)."""
        archive.seek(0)
        try:
            self.api.put_archive(container_id, "/", archive)
        except FOREIGN_ERRORS as exc:
            full = f" (the build's disk of {self.sandbox.disk_mb} MB is full)" if self.disk.full() else ""
            raise BuildFailed(f"{what} failed: {explain(exc)}{full}") from exc

    def get(self, container_id: str, path: str, limit_bytes: int, what: str) -> tuple[IO[bytes], dict[str, Any]]:
        """`path` in the container as a tar archive (at most `limit_bytes` of it), and the engine's stat of it."""
        try:
            chunks, stat = self.api.get_archive(container_id, path)
            spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (the caller closes it)
            for chunk in cast(Iterator[bytes], chunks):
                spool.write(chunk)
                if spool.tell() > limit_bytes:
                    spool.close()
                    raise BuildFailed(f"{what}: {path} is larger than the job's disk ({self.sandbox.disk_mb} MB)")
        except docker.errors.NotFound as exc:
            raise BuildFailed(f"{what}: {path} does not exist") from exc
        except FOREIGN_ERRORS as exc:
            raise BuildFailed(f"{what} failed: {explain(exc)}") from exc
        spool.seek(0)
        return spool, cast(dict[str, Any], stat or {})

    def scratch_image(self, name: str) -> str:
        """The id of image `name`, holding nothing (made by importing an empty archive the first time)."""
        with contextlib.suppress(docker.errors.ImageNotFound):
            return str(self.api.inspect_image(name)["Id"])  # type: ignore[no-untyped-call]
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        repository, _, tag = name.partition(":")
        self._call("making the empty image", self.api.import_image_from_data, empty.getvalue(), repository, tag)
        return str(self.inspect_image(name)["Id"])

    def inspect_image(self, image: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call(f"inspecting image {image!r}", self.api.inspect_image, image))

    def write_image(self, top: str, config: dict[str, Any], tag: str) -> str:
        """Image `tag`: the layers of image `top` under exactly `config` (a commit would mix its container's
        command, environment and labels in). Written as an image archive holding no layers, which the engine
        takes from those it has."""
        info = self.inspect_image(top)
        document = {
            "architecture": info.get("Architecture"),
            "os": info.get("Os"),
            **({"variant": info["Variant"]} if info.get("Variant") else {}),
            "created": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": list(info["RootFS"]["Layers"])},
        }
        layers = [f"{index}/layer.tar" for index in range(len(document["rootfs"]["diff_ids"]))]  # never read
        manifest = [{"Config": "config.json", "RepoTags": [tag], "Layers": layers}]
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name, value in (("config.json", document), ("manifest.json", manifest)):
                data = json.dumps(value).encode()
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        answer = self._call("writing the built image", self.api.load_image, archive.getvalue())
        for item in answer or ():
            if isinstance(item, dict) and item.get("error"):
                raise BuildFailed(f"writing the built image failed: {item['error']}")
        return str(self.inspect_image(tag)["Id"])

    def remaining(self) -> float:
        """Seconds left before the build's deadline (at least 0)."""
        return max(self._deadline - time.monotonic(), 0.0)

    def check_deadline(self) -> None:
        """Raise BuildFailed if the build's time is up, or it was stopped."""
        if self._stop.is_set():
            raise BuildFailed(_STOPPED)
        if self.remaining() <= 0:
            raise BuildFailed(f"building the image timed out after {self._limit_s:g} s")

    def close(self) -> None:
        """Remove every container and intermediate image the build made, and its disk; never raises."""
        for container_id in list(self._containers):
            try:
                self.remove(container_id)
            except BuildFailed as exc:
                log.warning("a build step's container stays: %s", exc, extra={"event": "build_cleanup_failed"})
        for image_id in reversed(self._images):
            remove_image(self.api, image_id)
        self._images.clear()
        try:
            self.disk.close()
        except BuildFailed as exc:
            log.warning("a build's disk stays: %s", exc, extra={"event": "build_cleanup_failed"})

    def _kill(self, container_id: str) -> None:
        with contextlib.suppress(*FOREIGN_ERRORS):
            if self.api.inspect_container(container_id)["State"].get("Running"):
                self.api.kill(container_id)
                self.api.wait(container_id, timeout=_STOP_WAIT_S)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise BuildFailed(f"{what} failed: the image is gone ({explain(exc)})") from exc
        except FOREIGN_ERRORS as exc:
            raise BuildFailed(f"{what} failed: {explain(exc)}") from exc


def remove_image(api: docker.APIClient, image_id: str) -> None:
    """Remove an image a build committed (and its parents no other image needs); one gone or still needed stays
    without complaint."""
    try:
        api.remove_image(image_id)
    except docker.errors.NotFound:
        return
    except FOREIGN_ERRORS as exc:
        log.info("a build's image stays: %s", explain(exc), extra={"event": "build_image_kept", "image": image_id})


class _Lines:
    """Passes a stream of bytes on as lines of text, without their newline; a line too long to hold is passed on
    in pieces."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._pending = b""

    def write(self, data: bytes) -> None:
        self._pending += data
        *complete, self._pending = self._pending.split(b"\n")
        for line in complete:
            self._on_line(line.rstrip(b"\r").decode(errors="replace"))
        while len(self._pending) > _LINE_BYTES:
            self._on_line(self._pending[:_LINE_BYTES].decode(errors="replace"))
            self._pending = self._pending[_LINE_BYTES:]

    def flush(self) -> None:
        if self._pending:
            self._on_line(self._pending.decode(errors="replace"))
            self._pending = b""
