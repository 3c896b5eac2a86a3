"""How hatchway's containers are made on Docker: locked down (no capabilities, no new privileges, a read-only
root, no host-wide /proc file writable), limited (memory without swap, CPU, pids, a bounded log), and without
Docker's network setup when they have no network (`offline_etc`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import docker
from docker.types import LogConfig

from hatchway.engines.base import SandboxSpec
from hatchway.engines.offline_etc import OfflineEtc

MIB = 1024 * 1024
GVISOR_PIDS_HEADROOM = 1024
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/proc/pressure")
"""Paths of /proc a container sees read-only: Docker's own list (which this replaces, so it is repeated here) and
`/proc/pressure`, whose files anyone may open for writing on Linux 6.5 and later to set triggers on the pressure of
the whole host. (gVisor has no /proc/pressure; the path is then skipped.)"""


def container_config(
    api: docker.APIClient,
    spec: SandboxSpec,
    command: list[str],
    env: Mapping[str, str],
    *,
    labels: dict[str, str],
    runtime: str | None,
    offline_etc: Callable[[], OfflineEtc],
    stdin: bool,
    **host_options: Any,
) -> dict[str, Any]:
    """The create request of a container for `spec` running `command` with `env`, on `runtime` (None: runc);
    `host_options` add to or override the host config (a supervised sandbox's capabilities and cgroups, a build
    step's writable root)."""
    binds: dict[str, Mapping[str, str]] = {
        str(mount.source): {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"} for mount in spec.mounts
    }
    offline = spec.network == "none"
    if offline:
        # Its network disabled, the container skips Docker's network hook (`offline_etc` says why); it gets
        # the /etc files that hook would have written from hatchway instead.
        etc = offline_etc()
        binds[str(etc.hosts)] = {"bind": "/etc/hosts", "mode": "ro"}
        binds[str(etc.resolv_conf)] = {"bind": "/etc/resolv.conf", "mode": "ro"}
    tmpfs = {path: f"rw,nosuid,nodev,size={size_mb}m,mode=1777" for path, size_mb in spec.tmpfs.items()}
    taken = {*tmpfs, *(mount.target for mount in spec.mounts)}
    for path in declared_volumes(api, spec.image):
        if path not in taken:
            # Docker would give each a volume of its own on the host's disk, outside every limit of the job's;
            # a tmpfs here is memory, charged to the container and so bounded by its memory limit.
            tmpfs[path] = f"rw,nosuid,nodev,size={spec.memory_mb}m,mode=1777"
    host_config = api.create_host_config(
        network_mode=spec.network,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        tmpfs=tmpfs,
        binds=binds,
        mem_limit=spec.memory_mb * MIB,
        memswap_limit=spec.memory_mb * MIB,
        nano_cpus=int(spec.cpus * 1e9),
        # gVisor's host processes (the sentry's threads) count against the host limit too; inside, the
        # supervisor limits each run itself.
        pids_limit=spec.pids if runtime is None else spec.pids + GVISOR_PIDS_HEADROOM,
        # Docker's copy of the output is only read after a worker restart; keep it bounded.
        log_config=LogConfig(
            type="local",
            config={"max-size": str(max(2 * spec.log_bytes, MIB)), "max-file": "1", "compress": "false"},
        ),
        runtime=runtime,
        # By default a real PID 1 forwards SIGTERM and reaps zombies, and the root file system is read-only.
        **{"init": True, "read_only": True, **host_options},
    )
    host_config["ReadonlyPaths"] = list(READONLY_PATHS)
    return {
        "image": spec.image,
        "command": command,
        "user": spec.user,
        "environment": [f"{key}={value}" for key, value in env.items()],
        "working_dir": spec.workdir,
        "labels": labels,
        "stdin_open": stdin,
        "network_disabled": offline,
        "host_config": host_config,
    }


def declared_volumes(api: docker.APIClient, image: str) -> list[str]:
    """The paths `image` declares as volumes (`VOLUME` in its Dockerfile). Docker would create an anonymous volume
    for each, on the host's disk and outside the job's disk limit; hatchway mounts a bounded tmpfs there instead
    (empty: what the image holds at that path is not copied in)."""
    try:
        config = api.inspect_image(image).get("Config") or {}  # type: ignore[no-untyped-call]
    except docker.errors.NotFound:
        return []  # creating the container will say so
    return sorted(config.get("Volumes") or {})
