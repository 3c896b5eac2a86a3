"""Running a grade job: its images and tests made ready, the grading session, and a final, stored state
whatever happens. A grade that completed has state `succeeded` whatever its verdict (the program's failures are
verdicts); the judge's own failures are `failed` with the reason, and a report whose verdict is IE."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from hatchway.engines.base import Engine, ImageService
from hatchway.engines.health import EngineHealth
from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import Volume, numeric_owner
from hatchway.errors import (
    DOWNLOAD_RETRY_S,
    BadBundle,
    EngineError,
    HatchwayError,
    ImageNotFound,
    ImagePullFailed,
    download_may_pass,
)
from hatchway.grading.archive import ProblemArchives
from hatchway.grading.custom_checker import CheckerBroken
from hatchway.grading.sandboxes import GradingKilled, Sandboxes
from hatchway.grading.session import GradingSession
from hatchway.grading.workspace import CompileDisk, GradeTest, Workspace, write_tests
from hatchway.jobs.control import RunControl
from hatchway.jobs.lifecycle import JobLifecycle
from hatchway.jobs.notify import JobSignals
from hatchway.judge.report import GradeReport
from hatchway.judge.request import CustomChecker, GradeSpec
from hatchway.judge.verdicts import Verdict
from hatchway.models import Job, JobState, Outcome, Reason, RunInfo, Stream, utcnow
from hatchway.output.capture import OutputCapture
from hatchway.store.base import JobStore

log = logging.getLogger(__name__)

_FAILURES: tuple[tuple[type[HatchwayError], Reason], ...] = (
    (BadBundle, Reason.BAD_BUNDLE),
    (ImageNotFound, Reason.IMAGE_NOT_FOUND),
    (ImagePullFailed, Reason.IMAGE_PULL_FAILED),
)


class GradeRunner:
    """Takes a claimed grade job to a final, stored state."""

    def __init__(
        self,
        *,
        store: JobStore,
        engines: Mapping[str, Engine],
        images: ImageService,
        volumes: VolumeStock,
        problems: ProblemArchives,
        lifecycle: JobLifecycle,
        signals: JobSignals,
        work_dir: Path,
        run_as_user: str,
        worker_id: str,
        choose_runtime: Callable[[str], tuple[str, list[str]]],
        health: EngineHealth,
    ) -> None:
        self._store = store
        self._engines = engines
        self._images = images
        self._volumes = volumes
        self._problems = problems
        self._lifecycle = lifecycle
        self._signals = signals
        self._work_dir = work_dir
        self._user = run_as_user
        self._owner = numeric_owner(run_as_user)
        self._worker_id = worker_id
        self._choose_runtime = choose_runtime
        self._health = health

    async def run(self, job: Job, control: RunControl) -> Job:
        """Grade a job this worker has claimed (state `building`)."""
        capture = self._lifecycle.capture(job, control)
        workspace = self._workspace(job.id)
        held: list[str] = []
        sandboxes: list[Sandboxes] = []
        disks: list[tuple[Volume, int]] = []
        try:
            ended = await self._grade(
                job, control, capture=capture, workspace=workspace, held=held, sandboxes=sandboxes, disks=disks
            )
            if isinstance(ended, Job):
                return ended
            return await self._lifecycle.finish(
                job, ended.model_copy(update={"stdout": capture.text(Stream.STDOUT)}), capture
            )
        finally:
            capture.finish()
            self._signals.notify(job.id)
            # Removing containers takes a while and changes nothing the client sees: the job is stored and its
            # waiters woken first. What a crash here leaves, restart recovery reaps.
            removed = True
            for opened in sandboxes:
                removed = await opened.close() and removed
            for volume, disk_mb in disks:
                await self._give_back(job.id, volume, disk_mb, removed=removed)
            for image in held:
                self._images.release(image)
            await asyncio.to_thread(shutil.rmtree, workspace.root, ignore_errors=True)

    async def _grade(
        self,
        job: Job,
        control: RunControl,
        *,
        capture: OutputCapture,
        workspace: Workspace,
        held: list[str],
        sandboxes: list[Sandboxes],
        disks: list[tuple[Volume, int]],
    ) -> Outcome | Job:
        """How the grading ended, or the job itself if it ended before anything ran."""
        spec = job.spec.grade
        assert spec is not None, "a grade job carries its grade spec"
        session: GradingSession | None = None
        try:
            if control.kill_requested.is_set():
                return await self._lifecycle.stop_before_start(job, control)
            if self._owner is None or 0 in self._owner:
                raise HatchwayError(f"grading needs run_as_user as a numeric, non-root uid:gid, not {self._user!r}")
            uid, gid = self._owner
            began = time.monotonic()
            runtime, warnings = self._choose_runtime(job.spec.runtime)
            engine = self._engines[runtime]
            image_cached = await self._hold_images(spec, held)
            await asyncio.to_thread(_make_workspace, workspace)
            workspace = await self._take_disks(job.id, spec, workspace, disks)
            tests, bundle_cached = await self._tests(spec, workspace, job, control)
            await asyncio.to_thread(_write_submission, workspace.box, spec.files, uid, gid)
            if control.kill_requested.is_set():
                return await self._lifecycle.stop_before_start(job, control)
            run = RunInfo(
                engine=runtime,
                image=spec.profile.image,
                image_cached=image_cached,
                bundle_cached=bundle_cached,
                prepare_s=round(time.monotonic() - began, 3),
                warnings=[*job.run.warnings, *warnings],
            )
            self._lifecycle.started(job, await self._store.mark_running(job.id, utcnow(), run), control)
            self._signals.notify(job.id)
            self._log("grade_running", job.id, engine=runtime, tests=len(tests))
            sandboxes.append(Sandboxes(engine=engine, control=control, owner=job.id, user=self._user))
            session = GradingSession(
                spec=spec,
                sandboxes=sandboxes[0],
                workspace=workspace,
                uid=uid,
                gid=gid,
                on_build_output=lambda data: capture.write(Stream.BUILD, data),
                on_result=lambda line: capture.write(Stream.STDOUT, line.encode()),
            )
            report = await session.run(tests)
            return Outcome(state=JobState.SUCCEEDED, grade=report, message=_summary(report))
        except GradingKilled:
            partial = GradeReport(
                compile=session.compile if session else None,
                tests=session.results if session else [],
                total=len(session.results) if session else 0,
                message="the grading was killed before it ended",
            )
            return Outcome(state=JobState.KILLED, reason=control.kill_reason, grade=partial)
        except CheckerBroken as exc:
            return _internal_error(JobState.SUCCEEDED, None, str(exc))
        except HatchwayError as exc:
            if await self._lifecycle.outage(exc):
                # Grading has no side effects: started or not, it runs again from scratch once the engine is back.
                return await self._lifecycle.wait_in_queue(job, exc, started_too=True)
            return self._failed(job, exc)
        except OSError as exc:
            log.exception("grade failed on the worker", extra={"event": "grade_error", "job_id": job.id})
            return self._failed(job, EngineError(str(exc)))

    def _failed(self, job: Job, exc: HatchwayError) -> Outcome:
        reason = next((reason for kind, reason in _FAILURES if isinstance(exc, kind)), None)
        if reason is None:
            reason = Reason.ENGINE_ERROR
            log.error("grade failed in the engine: %s", exc, extra={"event": "grade_engine_error", "job_id": job.id})
            self._health.recheck()
        return _internal_error(JobState.FAILED, reason, str(exc))

    def _workspace(self, job_id: str) -> Workspace:
        root = self._work_dir / job_id
        return Workspace(root=root, inputs=root / "inputs")

    async def _take_disks(
        self, job_id: str, spec: GradeSpec, workspace: Workspace, disks: list[tuple[Volume, int]]
    ) -> Workspace:
        """The workspace with a disk of `compile_disk_mb` for each compile step (the submission's, and the custom
        checker's if it has one), so that no compiler can write more to the host than that. Each disk taken is
        added to `disks` at once, for the caller to give back whatever happens. Raises DiskUnavailable."""
        disk_mb = spec.limits.compile_disk_mb
        made: list[CompileDisk] = []
        # '+' is in no job id: these names never meet a job's own volume (named by its id).
        for purpose in ("box", "checker") if isinstance(spec.checker, CustomChecker) else ("box",):
            volume = await asyncio.to_thread(self._volumes.take, f"{job_id}+{purpose}", disk_mb)
            disks.append((volume, disk_mb))
            volumes = self._volumes.volumes
            full = functools.partial(volumes.full, volume)
            made.append(CompileDisk(box=volume.work, io=volume.io, disk_mb=disk_mb, full=full))
        return dataclasses.replace(workspace, disk=made[0], checker_disk=made[1] if len(made) > 1 else None)

    async def _give_back(self, job_id: str, volume: Volume, disk_mb: int, *, removed: bool) -> None:
        """Keep a compile disk as a spare once no sandbox of the grading can write to it; else remove it."""
        try:
            if removed:
                await asyncio.to_thread(self._volumes.give_back, volume, disk_mb)
            else:
                await asyncio.to_thread(self._volumes.volumes.remove, volume)
        except HatchwayError as exc:
            extra = {"event": "volume_remove_failed", "job_id": job_id}
            log.error("a compile disk was not removed: %s", exc, extra=extra)

    async def _hold_images(self, spec: GradeSpec, held: list[str]) -> bool:
        """Hold (against eviction) and make sure of the profile's and the checker's images."""
        images = {spec.profile.image}
        if spec.checker_profile is not None:
            images.add(spec.checker_profile.image)
        cached = True
        for image in sorted(images):
            self._images.acquire(image)
            held.append(image)
            cached = await self._images.ensure(image) and cached
        return cached

    async def _tests(
        self, spec: GradeSpec, workspace: Workspace, job: Job, control: RunControl
    ) -> tuple[list[GradeTest], bool | None]:
        """The tests as files: inline ones written out, or the problem archive fetched and unpacked (for the job's
        source's item, on its shelf)."""
        if spec.tests is not None:
            tests = await asyncio.to_thread(write_tests, workspace, spec.tests)
            return tests, None
        assert spec.problem_url is not None
        retries = iter(DOWNLOAD_RETRY_S)
        while True:
            problem = workspace.root / "problem"
            try:
                found, cached = await self._problems.load(
                    spec.problem_url, spec.problem_sha256, problem, spec.groups, source=job.origin
                )
                break
            except BadBundle as exc:
                # As a source's claim does: a download that may pass (5xx, unreachable) is tried a few times.
                wait_s = next(retries, None) if download_may_pass(exc) else None
                if wait_s is None:
                    raise
                log.warning(
                    "the problem archive could not be fetched: %s; trying again in %.0f s",
                    exc,
                    wait_s,
                    extra={"event": "grade_download_retry", "job_id": job.id},
                )
                await asyncio.to_thread(shutil.rmtree, problem, ignore_errors=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(control.kill_requested.wait(), wait_s)
                if control.kill_requested.is_set():
                    raise GradingKilled from exc
        own = {limits.name: limits for limits in spec.test_limits}
        await asyncio.to_thread(_move_inputs, [test.input_path for test in found], workspace.inputs)
        tests = []
        for test in found:
            limits = own.get(test.name)
            tests.append(
                GradeTest(
                    name=test.name,
                    points=1.0,
                    input_path=workspace.inputs / test.input_path.name,
                    expected_path=test.expected_path,
                    time_limit_s=None if limits is None else limits.time_limit_s,
                    memory_mb=None if limits is None else limits.memory_mb,
                    stack_mb=None if limits is None else limits.stack_mb,
                )
            )
        return tests, cached

    def _log(self, event: str, job_id: str, **fields: object) -> None:
        log.info(
            event.replace("_", " "),
            extra={"event": event, "job_id": job_id, "worker_id": self._worker_id, **fields},
        )


def _internal_error(state: JobState, reason: Reason | None, message: str) -> Outcome:
    return Outcome(state=state, reason=reason, message=message, grade=GradeReport(verdict=Verdict.IE, message=message))


def _summary(report: GradeReport) -> str:
    verdict = report.verdict.value if report.verdict else "?"
    return f"{verdict}: {report.passed}/{report.total} tests passed, score {report.score:g}/{report.max_score:g}"


def _make_workspace(workspace: Workspace) -> None:
    shutil.rmtree(workspace.root, ignore_errors=True)
    workspace.root.mkdir(parents=True, mode=0o700)
    # The runs' own I/O and the tests' inputs are root's: a run sees only the descriptors the supervisor gives it.
    # What compilers write into is on the disks of `_take_disks`; what the custom checker reads, readable by anyone.
    for private in (workspace.io, workspace.checker_io):
        private.mkdir(mode=0o700)
    workspace.check.mkdir(mode=0o755)


def _move_inputs(inputs: list[Path], folder: Path) -> None:
    """Move the tests' inputs, and nothing else, into the folder the runs see: in a flat archive the expected
    outputs lie beside them."""
    folder.mkdir(mode=0o700)
    for path in inputs:
        os.replace(path, folder / path.name)


def _write_submission(box: Path, files: Mapping[str, str], uid: int, gid: int) -> None:
    for relative, text in files.items():
        target = box / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for path in [box, *box.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)
