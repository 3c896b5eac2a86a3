"""A supervised sandbox on Docker: how its container is laid out around hatchway's supervisor, how the worker
connects to the supervisor, and how one run travels over that connection.

The container's first process is the static supervisor, bind-mounted read-only, as root with only the
capabilities it needs; on runc the sandbox's host cgroups are mounted in for it. hatchway talks to it over the
container's attached stdin and stdout (`docker_channel`). After every run the supervisor empties what a run can
leave for the next beyond its own files: `/dev/shm`, `/dev/mqueue` and the IPC namespace's System V objects.
"""

from __future__ import annotations

import io
import logging
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors

from hatchway.engines import cgroups
from hatchway.engines.base import SCRATCH, Mount, SandboxSpec
from hatchway.engines.cgroups import SandboxCgroup
from hatchway.engines.docker_channel import SupervisorChannel
from hatchway.errors import EngineError, RunNeverStarted
from hatchway.sandbox.protocol import (
    ProtocolError,
    RunRequest,
    RunResult,
    encode_ping,
    parse_pong,
    parse_ready,
    parse_result,
)

log = logging.getLogger(__name__)

SUPERVISOR_PATH = "/.hatchway/supervisor"
SUPERVISOR_CGROUP = "/.hatchway/cgroup"
# What the supervisor needs and nothing more: become the job's user, kill what a run left, make and remove a
# run's scratch directory whatever the run did to its permissions. Runs themselves get none of these.
SUPERVISOR_CAPABILITIES = ["SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER"]
SHARED_DIRS = ("/dev/shm", "/dev/mqueue")
"""Where every run may leave files for the next (POSIX shared memory, semaphores and message queues): emptied after
each run, with the System V objects of the container's IPC namespace."""
_START_S = 60.0
_MARGIN_S = 30.0
_PING_S = 5.0
_GVISOR_MEMORY_MB = 512
_GVISOR_PIDS = 32768


@dataclass(frozen=True)
class Layout:
    """What to create: the container's spec, its command, and host options beyond the spec's."""

    spec: SandboxSpec
    command: list[str]
    host_options: dict[str, Any]


def layout(spec: SandboxSpec, *, binary: Path, cgroup: SandboxCgroup | None, gvisor: bool) -> Layout:
    """The container of a supervised sandbox for `spec`: the supervisor as PID 1, and on runc its cgroups."""
    mounts = [*spec.mounts, Mount(binary, SUPERVISOR_PATH)]
    command = [SUPERVISOR_PATH]
    # The supervisor is PID 1: orphans of a run come back to it, and it reaps them.
    options: dict[str, Any] = {"init": False, "cap_add": SUPERVISOR_CAPABILITIES}
    if cgroup is not None:
        mounts += [
            Mount(cgroup.path(name), f"{SUPERVISOR_CGROUP}/{name}", read_only=False) for name in cgroups.CONTROLLERS
        ]
        command += ["--cgroup", SUPERVISOR_CGROUP]
        options["cgroup_parent"] = cgroup.parent
    command += [arg for path in (*spec.tmpfs, *SHARED_DIRS) for arg in ("--wipe", path)]
    # The container's IPC namespace is its own (Docker's default): nothing in it is another sandbox's.
    command += ["--wipe-ipc"]
    if SCRATCH in spec.tmpfs:
        command += ["--scratch", SCRATCH]
    if gvisor:
        command += ["--sandbox-meminfo"]
    supervised = replace(spec, mounts=tuple(mounts), user="0:0")
    if gvisor:
        # gVisor's sentry runs in the host limits too, and a run's processes cost it threads and memory of its
        # own; inside, the supervisor holds each run to its limits, so the host limits only need to keep a
        # runaway sandbox from the host.
        supervised = replace(supervised, memory_mb=spec.memory_mb + _GVISOR_MEMORY_MB, pids=spec.pids + _GVISOR_PIDS)
    return Layout(spec=supervised, command=command, host_options=options)


def connect(api: docker.APIClient, container_id: str) -> tuple[SupervisorChannel, dict[str, str], str]:
    """Attach to a created supervised container, start it, and wait for its supervisor to be ready. Returns the
    channel, the environment the image defines and the image's id. The caller removes the container if this raises."""
    sock = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    channel = SupervisorChannel(sock)
    try:
        api.start(container_id)
        ready = parse_ready(channel.read_line(_START_S))
        info = api.inspect_container(container_id)
        variables = info["Config"].get("Env") or []
    except BaseException:
        channel.close()
        raise
    log.debug("supervisor ready in %s mode", ready.mode.value, extra={"event": "sandbox_opened"})
    return channel, dict(item.partition("=")[::2] for item in variables), str(info["Image"])


def process_environment(
    api: docker.APIClient,
    container_id: str,
    image: tuple[str, dict[str, str]],
    user: str,
    homes: dict[str, str],
) -> dict[str, str]:
    """What Docker adds to a container's process environment beyond the image's: HOSTNAME, and HOME as the image's
    /etc/passwd has it for the job's user ("/" if it has none), so that a run sees what a fresh container would.
    `image` is the image's id and environment; `homes` caches HOME by image id and user (reading it costs a
    request to the engine)."""
    image_id, image_env = image
    env = {"HOSTNAME": container_id[:12], **image_env}
    if "HOME" not in env:
        key = f"{image_id}/{user}"
        if key not in homes:
            homes[key] = _home_of(api, container_id, user.partition(":")[0])
        env["HOME"] = homes[key]
    return env


def _home_of(api: docker.APIClient, container_id: str, uid: str) -> str:
    try:
        text = _passwd(api, container_id)
    except (docker.errors.APIError, tarfile.TarError):
        text = None
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and (fields[2] == uid or fields[0] == uid):
            return fields[5] or "/"
    return "/"


_PASSWD = "/etc/passwd"
_PASSWD_MAX_BYTES = 1 << 20
_MAX_LINKS = 8


def _passwd(api: docker.APIClient, container_id: str) -> str | None:
    """The text of the container's /etc/passwd, through symlinks (the engine's archive holds a link itself, and
    tarfile cannot open a link whose target is not in the archive: it raised KeyError); None where Docker itself
    finds no passwd: a link that leads nowhere, a link loop, or something else than a file."""
    path = _PASSWD
    for _ in range(_MAX_LINKS):
        stream, stat = api.get_archive(container_id, path)
        archived = b"".join(stream)  # read whole: it frees the engine's connection (a link's archive is tiny)
        link = (stat or {}).get("linkTarget") or ""
        if link:
            path = link  # the engine resolves it, relative links included, within the container
            continue
        with tarfile.open(fileobj=io.BytesIO(archived)) as archive:
            member = archive.next()
            data = archive.extractfile(member) if member is not None and member.isreg() else None
            return data.read(_PASSWD_MAX_BYTES).decode(errors="replace") if data is not None else None
    return None


def reattach(api: docker.APIClient, container_id: str, run_id: str) -> tuple[SupervisorChannel, RunResult]:
    """Attach to a supervised container again and return the channel and the answer to run `run_id`.

    Attached first, then the container's state and log are read: an answer written before the attach is in the
    log, one written after it comes on the channel; it cannot fall between the two. A container that had ended
    before the attach sends nothing more (Docker's attach to it would wait for ever), so its log is final: without
    the answer there, the run never got one. Raises RunNeverStarted if the supervisor ended normally without it
    (it runs every request it reads to the end and answers before it reads the next), EngineError otherwise.
    """
    sock = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    channel = SupervisorChannel(sock)
    try:
        state = api.inspect_container(container_id)["State"]
        for line in api.logs(container_id, stdout=True, stderr=False).splitlines():
            found = _answer_to(line, run_id)
            if found is not None:
                return channel, found
        if not state.get("Running"):
            exit_code = state.get("ExitCode")
            if exit_code == 0:
                raise RunNeverStarted(
                    "the worker stopped before the job's command reached its sandbox, which then ended; "
                    "the command never ran"
                )
            raise EngineError(f"the job's sandbox ended (exit code {exit_code}) without answering for its run")
        while True:
            found = _answer_to(channel.read_line(None), run_id)
            if found is not None:
                return channel, found
    except BaseException:
        channel.close()
        raise


def _answer_to(line: bytes, run_id: str) -> RunResult | None:
    try:
        result = parse_result(line)
    except ProtocolError:
        return None  # the ready line, a pong, another run's answer
    return result if result.id == run_id else None


def ping(channel: SupervisorChannel) -> bool:
    """Whether the supervisor answers a ping at once."""
    try:
        parse_pong(channel.request(encode_ping(), _PING_S))
    except (EngineError, ProtocolError, OSError):
        return False
    return True


def run(channel: SupervisorChannel, request: RunRequest) -> RunResult:
    """Send one run and read its result; raises EngineError if the supervisor or its container fails."""
    # The supervisor enforces the wall limit itself; the margin only catches a supervisor that hangs.
    timeout_s = None if request.wall_time_s is None else request.wall_time_s + _MARGIN_S
    line = channel.request(request.encode(), timeout_s)
    try:
        return parse_result(line)
    except ProtocolError as exc:
        raise EngineError(str(exc)) from exc
