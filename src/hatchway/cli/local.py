"""`hatchway run` without a running worker (or with `--local`): one job on the local engine, in this process;
its output streams here and its exit code is ours. With a worker running, `attached` sends it there instead.

A one-shot run should cost about what `docker run` costs, so it does only what one job needs: an in-memory
store, the one engine the job asks for and no probe of it (the job's own start is the probe: an engine that
does not work fails the job with `engine_error`, exit 125), no pools, and the worker's modules are imported
only once the command line is known to be right.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hatchway.cli import output
from hatchway.cli.exits import CommandError, Exit, job_ending
from hatchway.cli.jobspec import add_job_options, job_request

RUN_DIR_PREFIX = "hatchway-run-"
"""A one-shot run's data directory, in the system's temporary directory, is named this, its process id and a dash."""

if TYPE_CHECKING:
    from hatchway.models import Job, JobRequest, Stream
    from hatchway.settings import Settings
    from hatchway.worker.worker import Worker


def add_run_command(commands: Any, remote_options: argparse.ArgumentParser) -> None:
    """Register `run` on the top-level parser's subcommands."""
    run_cmd = commands.add_parser(
        "run",
        parents=[remote_options],
        help="run one job like docker run: through the worker running at --url, else in-process",
        description=(
            "Streams the job's stdout and stderr here and exits with its exit code. With a worker running at "
            "--url (or $HATCHWAY_URL) the job goes to it, as docker run goes to dockerd, and a pooled container "
            "answers in milliseconds; with none, or with --local, the job runs in this process on the local engine."
        ),
    )
    run_cmd.add_argument("--local", action="store_true", help="run in this process even if a worker is running")
    run_cmd.add_argument("--config", type=Path, help="YAML settings file for --local runs (or $HATCHWAY_CONFIG)")
    add_job_options(run_cmd)
    run_cmd.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from hatchway.cli.attached import run_attached, worker_for

    worker = worker_for(args)
    if worker is not None:
        return run_attached(worker, args)

    from hatchway.cli import logconfig
    from hatchway.settings import load_settings

    request = job_request(args)
    settings = load_settings(args.config)
    logconfig.configure("WARNING")
    import asyncio  # here, not above: a run through a worker never needs it (it costs ~50 ms to import)

    return asyncio.run(run_locally(settings, request, as_json=args.json))


def run_worker_id(settings: Settings, pid: int) -> str:
    """The worker id of the one-shot worker of `hatchway run` process `pid`: its containers carry it."""
    return f"{settings.worker_id}-run-{pid}"


def reap_dead_runs(settings: Settings, temp_dir: Path) -> None:
    """Remove what `hatchway run`s killed before their own clean-up (kill -9) left: their containers, then their
    data directories with the job's disk still mounted. A run is known by its process id, in its worker id and
    its directory's name; only runs whose process is gone are touched. Best effort: never fails this run."""
    import re
    import shutil

    from hatchway.engines.base import WORKER_LABEL
    from hatchway.engines.docker_host import FOREIGN_ERRORS, DockerHost
    from hatchway.engines.volumes import LoopVolumes
    from hatchway.errors import HatchwayError

    dirs: dict[int, list[Path]] = {}
    for path in temp_dir.glob(f"{RUN_DIR_PREFIX}*"):
        found = re.fullmatch(rf"{RUN_DIR_PREFIX}(\d+)-.*", path.name)
        if found and path.is_dir():
            dirs.setdefault(int(found.group(1)), []).append(path)
    host = DockerHost(docker_url=settings.docker_url, max_concurrent_jobs=1)
    try:
        own = re.compile(rf"{re.escape(settings.worker_id)}-run-(\d+)")  # as `run_worker_id` makes them
        containers: dict[int, list[str]] = {}
        for summary in host.api().containers(all=True, filters={"label": WORKER_LABEL}):
            found = own.fullmatch(summary["Labels"].get(WORKER_LABEL, ""))
            if found:
                containers.setdefault(int(found.group(1)), []).append(summary["Id"])
        for pid in sorted(dirs.keys() | containers.keys()):
            if _alive(pid):
                continue
            for container_id in containers.get(pid, []):  # first: they hold the disks' mounts
                host.api().remove_container(container_id, force=True)
            for path in dirs.get(pid, []):
                LoopVolumes(path / "volumes", owner=None).sweep(set())
                shutil.rmtree(path, ignore_errors=True)
    except (HatchwayError, OSError, *FOREIGN_ERRORS):
        pass  # the next run tries again
    finally:
        host.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def one_shot_settings(settings: Settings, request: JobRequest, data_dir: Path) -> Settings:
    """`settings` for a worker that runs `request` and nothing else."""
    needed = settings.default_runtime if request.runtime == "auto" else request.runtime
    runtimes = list(settings.allowed_runtimes)
    # Only the engine the job needs, unless it may fall back to another (or is not allowed: policy says so).
    if needed in runtimes and not (needed == "gvisor" and settings.gvisor_fallback):
        runtimes = [needed]
    return settings.model_copy(
        update={
            "worker_id": run_worker_id(settings, os.getpid()),
            "data_dir": data_dir,
            "max_concurrent_jobs": 1,
            "allowed_runtimes": runtimes,
            # One job, then gone: a pool would only start containers nobody uses.
            "pools": [],
            "pool_warm_total": 0,
            "sources": [],
            "controller_url": None,
        }
    )


async def run_locally(settings: Settings, request: JobRequest, *, as_json: bool = False) -> int:
    """Run `request` to its end with an in-memory store and return the exit code to leave with."""
    import asyncio
    import tempfile

    from hatchway.errors import RequestError
    from hatchway.models import Stream
    from hatchway.store.memory import MemoryStore
    from hatchway.worker.bootstrap import build_worker

    # Named for this process: a run killed before its clean-up is known by it (see `reap_dead_runs`).
    with tempfile.TemporaryDirectory(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-") as data_dir:
        local = one_shot_settings(settings, request, Path(data_dir))
        worker = build_worker(local, store=MemoryStore())
        await worker.start(probe=len(local.allowed_runtimes) > 1)
        reaping = asyncio.ensure_future(asyncio.to_thread(reap_dead_runs, settings, Path(data_dir).parent))
        job: Job | None = None
        try:
            try:
                job, _ = await worker.jobs.submit(request)
            except RequestError as exc:  # not allowed here, over a limit: it cannot run, as docker run's 125
                raise CommandError(f"the job cannot run: {exc}", Exit.NOT_RUN) from exc
            if not as_json:
                status = output.StatusLine("preparing the job")
                await asyncio.gather(
                    _show_progress(worker, job.id, status),
                    _copy(worker, job.id, Stream.STDOUT, sys.stdout, status),
                    _copy(worker, job.id, Stream.STDERR, sys.stderr, status),
                )
            final = await worker.jobs.wait_final(job.id, local.max_wait_s)
        except asyncio.CancelledError:  # Ctrl-C: the worker's shutdown stops the job and records it
            if job is None:
                raise
            final = await worker.jobs.get(job.id)
        finally:
            await worker.shutdown()
            await reaping
    document = final.model_dump(mode="json")
    if as_json:
        output.print_json(document)
    ending = job_ending(document)
    if ending.message and not as_json:
        output.say(ending.message)
    return ending.code if final.state.is_final else Exit.INTERRUPTED


async def _copy(worker: Worker, job_id: str, stream: Stream, out: IO[str], status: output.StatusLine) -> None:
    from hatchway.jobs.logs import job_logs

    async for text in job_logs(worker.jobs, job_id, [stream], tail=None, follow=True):
        status.stop()
        out.write(text)
        out.flush()


async def _show_progress(worker: Worker, job_id: str, status: output.StatusLine) -> None:
    """While the job is prepared (image pulled or built, bundle downloaded), say so on stderr's status line."""
    if not output.is_terminal(sys.stderr):
        return
    while True:
        with worker.jobs.signals.watching(job_id) as changed:
            job = await worker.jobs.get(job_id)
            if job.state.value not in ("queued", "building"):
                status.stop()
                return
            status.update(f"{job.state.value}: {job.message or 'preparing its image, bundle and workspace'}")
            await worker.jobs.signals.wait(changed, 1.0)
