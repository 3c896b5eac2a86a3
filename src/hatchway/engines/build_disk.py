"""The disk an image build writes on: at most the job's `limits.disk_mb`, for all its steps together.

A step's container writes into its writable layer, which overlay2 keeps in the layer's directory on the engine's
host (`GraphDriver.Data.UpperDir` is its `diff`, beside its `work`; overlayfs wants both on one mount). Before a
step's container first mounts its root filesystem (it is created, not started), that directory is copied onto the
build's own volume (a size-limited ext4 file, as a job's disk: `volumes`) and the copy is bind-mounted over it, so
whatever the step writes lands on the volume and a write past the limit fails with ENOSPC. Each step keeps its
directory on the volume until the build ends, so the steps share the one limit. After the step is committed, the
bind is undone (`release`) before the container is removed, as the engine cannot remove a directory that is a
mount point.

This needs the engine's overlay2 directories on the worker's own filesystem and mount namespace (a worker on the
engine's host, or in a container that mounts the engine's data root at the same path, shared). Each bind is
checked through the engine itself: a marker file put on the volume must be what the engine sees in the container.
A worker where any of this fails refuses builds, saying why, unless `build_disk_unlimited` accepts builds whose
disk is bounded by nothing but the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors

from hatchway.engines.docker_host import FOREIGN_ERRORS, explain
from hatchway.engines.volumes import Volume, Volumes, run_tool, unmount
from hatchway.errors import BuildFailed, DiskUnavailable

log = logging.getLogger(__name__)

_UNMOUNTED_WAIT_S = 10.0
_MARKER = ".hatchway-build-disk-"


class BuildDisk:
    """The volume of one build and the binds of its steps' layers onto it; blocking, one build's thread."""

    def __init__(
        self,
        volumes: Volumes,
        *,
        disk_mb: int,
        unlimited: bool,
        stat: Callable[[str, str], dict[str, Any] | None],
        on_output: Callable[[str], None],
    ) -> None:
        self._volumes = volumes
        self._disk_mb = disk_mb
        self._unlimited = unlimited
        self._stat = stat
        self._on_output = on_output
        self._volume: Volume | None = None
        self._steps = 0
        self._warned = False

    def bind(self, api: docker.APIClient, container_id: str) -> None:
        """Put the writable layer of the created (not started) container `container_id` on the build's volume.
        Raises BuildFailed if it cannot, unless the worker accepts unlimited build disks."""
        layer, reason = _layer_dir(api, container_id)
        if layer is None:
            return self._cannot(reason)
        volume = self._volume or self._make_volume()
        self._steps += 1
        target = volume.root / "layers" / str(self._steps)
        marker = f"{_MARKER}{uuid.uuid4().hex}"
        try:
            target.mkdir(parents=True)
            run_tool("cp", "-a", f"{layer}/.", str(target))
            run_tool("mount", "--bind", str(target), str(layer))
        except (OSError, DiskUnavailable) as exc:
            return self._cannot(f"binding the step's layer onto the build's disk failed: {exc}")
        try:
            (target / "diff" / marker).touch()
            seen = self._stat(container_id, f"/{marker}") is not None
            (target / "diff" / marker).unlink()
        except OSError as exc:
            seen, reason = False, str(exc)
        if not seen:
            with contextlib.suppress(DiskUnavailable):
                unmount(layer)
            return self._cannot("the engine does not see the build's disk bound over its layer: it runs in another"
                                " mount namespace, or the data root is not shared with the worker")  # fmt: skip
        return None

    def full(self) -> bool:
        """Whether the steps have used up the build's disk."""
        return self._volume is not None and self._volumes.full(self._volume)

    def close(self) -> None:
        """Remove the volume; every step's layer must have been released first."""
        if self._volume is not None:
            self._volumes.remove(self._volume)
            self._volume = None

    def _make_volume(self) -> Volume:
        try:
            self._volume = self._volumes.create(f"build-{uuid.uuid4().hex[:16]}", self._disk_mb)
        except DiskUnavailable as exc:
            raise BuildFailed(f"could not make the build's {self._disk_mb} MB disk: {exc}") from exc
        return self._volume

    def _cannot(self, reason: str) -> None:
        if not self._unlimited:
            raise BuildFailed(
                f"this worker cannot limit a build's disk ({reason}), so it builds no images; its operator may set"
                " build_disk_unlimited to build without that limit"
            )
        if not self._warned:
            self._warned = True
            self._on_output(f"(the build's disk is not limited on this worker, build_disk_unlimited: {reason})")
            log.warning("build disk not limited: %s", reason, extra={"event": "build_disk_unlimited"})


def release(api: docker.APIClient, container_id: str) -> None:
    """Undo `BuildDisk.bind` for the container (stopped, or killed just before), if it was bound; never raises for
    a container that is gone. Called before removing a build step's container, also by recovery after a crash."""
    layer, _ = _layer_dir(api, container_id)
    if layer is None or not os.path.ismount(layer):
        return
    # The engine unmounts the container's root filesystem once it has stopped; an unmount before then would
    # only detach the bind, leaving the engine's mount beneath it for ever.
    deadline = time.monotonic() + _UNMOUNTED_WAIT_S
    while os.path.ismount(layer / "merged") and time.monotonic() < deadline:
        time.sleep(0.05)  # the engine's own unmount: nothing signals it
    try:
        unmount(layer)
    except DiskUnavailable as exc:
        log.warning("a build step's layer stays bound: %s", exc, extra={"event": "build_disk_release_failed"})


def _layer_dir(api: docker.APIClient, container_id: str) -> tuple[Path | None, str]:
    """The overlay2 directory of the container's writable layer, or None and why it cannot be used."""
    try:
        info = api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None, "the container is gone"
    except FOREIGN_ERRORS as exc:
        raise BuildFailed(f"inspecting a build step's container failed: {explain(exc)}") from exc
    driver = info.get("GraphDriver") or {}
    if driver.get("Name") != "overlay2":
        return None, f"the engine's storage driver is {driver.get('Name')!r}, not overlay2"
    upper = (driver.get("Data") or {}).get("UpperDir") or ""
    layer = Path(upper).parent
    if not upper or not Path(upper).is_dir():
        return None, f"the engine's layer directory {upper or '(none)'} is not reachable from the worker"
    if os.geteuid() != 0:
        return None, "the worker does not run as root"
    return layer, ""
