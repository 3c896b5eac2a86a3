"""Preparing a job's environment before its container starts: workspace, bundle, files, image, ports, env.

The workspace is the `work` directory of the job's volume (its size-limited disk, see `volumes`), made fresh for a
job on the cold path or wiped and handed over with a pooled sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hatchway.bundles import BundleCache, unpack
from hatchway.engines.base import BuildSandbox, ImageService, Mount, Process, Role, SandboxSpec
from hatchway.engines.volumes import Volume, numeric_owner, room_for_files
from hatchway.errors import BadBundle, BuildFailed, HatchwayError
from hatchway.jobs.ports import PortAllocator
from hatchway.models import RESERVED_ENV_PREFIX, Job, RunInfo


@dataclass(frozen=True)
class BundleLimits:
    """How much a bundle may unpack to, and how much of it a build may take as its context (which the image
    service holds in memory, twice: the files, then the tar of them)."""

    max_unpacked_bytes: int
    max_files: int
    max_build_context_bytes: int = 128 * 1024 * 1024


@dataclass(frozen=True)
class Prepared:
    """A job ready to start: its sandbox, its process, and how it was prepared."""

    sandbox: SandboxSpec
    process: Process
    run: RunInfo


class Preparer:
    """Makes each job's workspace and image ready; the runner starts the container after."""

    def __init__(
        self,
        *,
        images: ImageService,
        bundles: BundleCache,
        ports: PortAllocator,
        bundle_limits: BundleLimits,
        worker_id: str,
        controller_url: str | None,
        run_as_user: str,
    ) -> None:
        self._images = images
        self._bundles = bundles
        self._ports = ports
        self._bundle_limits = bundle_limits
        self._worker_id = worker_id
        self._controller_url = controller_url
        self.user = run_as_user
        self._owner = numeric_owner(run_as_user)
        self._held_images: dict[str, str] = {}

    async def prepare(
        self,
        job: Job,
        *,
        volume: Volume,
        engine: str,
        warnings: list[str],
        on_build_output: Callable[[str], None],
        image_present: bool = False,
        stop: asyncio.Event | None = None,
    ) -> Prepared:
        """Fill the empty `volume` and make the image ready (`image_present`: a pooled container runs it already);
        `stop` (the job is killed) stops its build. Raises BadBundle, ImageNotFound, ImagePullFailed, BuildFailed,
        PortsExhausted or EngineError."""
        began = time.monotonic()
        spec = job.spec
        workspace = volume.work
        bundle_cached: bool | None = None
        bundle_sha256 = ""
        if spec.bundle_url is not None:
            # A source's item may use its master's origin and credentials, and its archives are its own.
            fetched = await self._bundles.fetch(spec.bundle_url, spec.bundle_sha256, source=job.origin)
            bundle_cached, bundle_sha256 = fetched.cached, fetched.sha256
            building_on_it = spec.build is not None and spec.build_context == "bundle"
            limit_bytes, limit_name = self._unpack_limit(spec.limits.disk_mb, building=building_on_it)
            await asyncio.to_thread(
                unpack,
                fetched.path,
                workspace,
                max_total_bytes=limit_bytes,
                max_files=self._bundle_limits.max_files,
                limit_name=limit_name,
            )
        # Each image is held before it is pulled or built, so eviction can never take it from under the job.
        if spec.build is not None:
            limit = self._bundle_limits.max_build_context_bytes
            with_bundle = spec.bundle_url is not None and spec.build_context == "bundle"
            context = await asyncio.to_thread(_read_tree, workspace, limit) if with_bundle else {}
            context.update({path: text.encode() for path, text in spec.build.files.items()})
            inputs = bundle_sha256 if with_bundle else ""  # the cache key: what the build is made of, no more
            self._hold(job.id, self._images.build_name(spec.build.dockerfile, context, inputs, engine))
            building = self._images.build(
                spec.build.dockerfile, context, on_build_output, inputs, _build_sandbox(job, engine)
            )
            image, image_cached = await _unless_stopped(building, stop)
        else:
            assert spec.image is not None, "a spec has an image or a build"
            image = self._hold(job.id, spec.image)
            image_cached = True if image_present else await self._images.ensure(image)
        if spec.files or spec.bundle_url is not None:  # an empty workspace is the job user's already
            await asyncio.to_thread(self._fill, workspace, spec.files)
        ports = self._ports.allocate(job.id, spec.ports, origin=job.origin)
        limits = spec.limits
        return Prepared(
            sandbox=SandboxSpec(
                owner=job.id,
                role=Role.JOB,
                image=image,
                user=self.user,
                memory_mb=limits.memory_mb,
                cpus=limits.cpus,
                pids=limits.pids,
                log_bytes=limits.output_bytes,
                network=spec.network,
                workdir=None if spec.image_defaults else spec.workdir,
                mounts=(Mount(workspace, spec.workdir, read_only=False), Mount(volume.tmp, "/tmp", read_only=False)),
            ),
            process=Process(
                argv=tuple(spec.command),
                env=self.environment(job, ports),
                stdin=None if spec.stdin is None else spec.stdin.encode(),
            ),
            run=RunInfo(
                engine=engine,
                image=image,
                image_cached=image_cached,
                bundle_cached=bundle_cached,
                prepare_s=round(time.monotonic() - began, 3),
                ports=ports,
                warnings=warnings,
            ),
        )

    def environment(self, job: Job, ports: dict[str, int]) -> dict[str, str]:
        """The job's env plus what the worker injects; a job cannot set HATCHWAY_* names itself."""
        env = {key: value for key, value in job.spec.env.items() if not key.startswith(RESERVED_ENV_PREFIX)}
        env["HATCHWAY_JOB_ID"] = job.id
        env["HATCHWAY_WORKER_ID"] = self._worker_id
        if self._controller_url:
            env["HATCHWAY_CONTROLLER_URL"] = self._controller_url
        for name, port in ports.items():
            env[f"HATCHWAY_PORT_{name.upper()}"] = str(port)
        return env

    def _unpack_limit(self, disk_mb: int, *, building: bool) -> tuple[int, str]:
        """The most a job's bundle may unpack to, and that limit's name for messages: the job's disk, the bundle
        limit, and for a build (whose context is read into memory) the build context limit, whichever is least."""
        limits = self._bundle_limits
        candidates = [
            (room_for_files(disk_mb), f"job's disk limit ({disk_mb} MB)"),
            (limits.max_unpacked_bytes, "unpacked-size limit"),
        ]
        if building:
            candidates.append((limits.max_build_context_bytes, "build context limit (build_context_max_bytes)"))
        return min(candidates, key=lambda candidate: candidate[0])

    def release(self, job_id: str) -> None:
        """Give back what the job held: its image and its ports."""
        image = self._held_images.pop(job_id, None)
        if image is not None:
            self._images.release(image)
        self._ports.release(job_id)

    def _hold(self, job_id: str, image: str) -> str:
        self._images.acquire(image)
        self._held_images[job_id] = image
        return image

    def _fill(self, workspace: Path, files: dict[str, str]) -> None:
        _write_files(workspace, files)  # inline files win over the bundle's
        self._hand_over(workspace)

    def _hand_over(self, workspace: Path) -> None:
        """Make the workspace writable by the non-root user the job runs as."""
        for path in [workspace, *workspace.rglob("*")]:
            if self._owner is not None:
                os.chown(path, *self._owner, follow_symlinks=False)
            elif not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o777 if path.is_dir() else 0o666))  # keep executable bits


def _build_sandbox(job: Job, engine: str) -> BuildSandbox:
    """A job's build runs as the job: on its runtime, with its limits."""
    limits = job.spec.limits
    return BuildSandbox(
        owner=job.id,
        runtime=engine,
        memory_mb=limits.memory_mb,
        cpus=limits.cpus,
        pids=limits.pids,
        disk_mb=limits.disk_mb,
        timeout_s=limits.timeout_s,
        network=job.spec.build_network,
    )


async def _unless_stopped(building: Awaitable[tuple[str, bool]], stop: asyncio.Event | None) -> tuple[str, bool]:
    """The build's result; if `stop` is set first, the build is cancelled (which stops its step) and BuildFailed
    raised."""
    task = asyncio.ensure_future(building)
    if stop is None:
        return await task
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, HatchwayError):
            await task
        raise BuildFailed("the build was stopped: its job was killed")
    return task.result()


def _write_files(workspace: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        target = workspace / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and not target.is_symlink():
            raise BadBundle(f"inline file {relative!r} would replace a directory of the bundle")
        if target.is_symlink() or target.is_file():
            target.unlink()  # never write through a link the bundle left there
        target.write_text(text)


def _read_tree(root: Path, limit: int) -> dict[str, bytes]:
    """The regular files under `root`, for a build context; BadBundle if they hold more than `limit` bytes (the
    unpacker keeps a bundle for a build within it: this only makes sure nothing else is read into memory)."""
    files = [path for path in sorted(root.rglob("*")) if path.is_file() and not path.is_symlink()]
    total = sum(path.stat().st_size for path in files)
    if total > limit:
        raise BadBundle(f"the build context holds {total} bytes, past the build context limit of {limit} bytes")
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in files}
