"""The grading facade job sources talk to: submit a grading, read its result, list the language profiles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from hatchway.errors import BadBundle, InvalidRequest, JobNotFound
from hatchway.grading.admission import GradeAdmission
from hatchway.grading.archive import ProblemArchives
from hatchway.jobs.service import JobService, source_job_id
from hatchway.judge.profiles import Profile
from hatchway.judge.report import GradeReport
from hatchway.judge.request import Dialect, GradeRequest
from hatchway.models import CallbackStatus, Job, JobState


class GradeResult(GradeReport):
    """A grading as GET /grade/{id} returns it: its job's id and state, and its report."""

    id: str
    state: JobState
    callback: CallbackStatus | None = Field(
        default=None, description="The delivery of its result to `callback_url`, if it has one."
    )


class GradeService:
    """Gradings are jobs (same store, queue, kill and logs); this adds what is particular to them."""

    def __init__(
        self, *, jobs: JobService, admission: GradeAdmission, problems: ProblemArchives, scratch: Path
    ) -> None:
        self._jobs = jobs
        self._admission = admission
        self._problems = problems
        self._scratch = scratch

    @property
    def profiles(self) -> Mapping[str, Profile]:
        return self._admission.profiles

    async def submit(
        self,
        request: GradeRequest,
        *,
        origin: str | None = None,
        external_id: str | None = None,
        dialect: Dialect = "hatchway",
    ) -> tuple[GradeResult, bool]:
        """Queue a grading; with a known `id` and the same request, return the existing one and False. A job
        source gives its name and the item's id (`origin`, `external_id`) instead of an `id`, as for a job.
        `dialect` records whose answers its client reads (see GradeSpec)."""
        spec, warnings = self._admission.admit(request, source=origin)
        if spec.grade is not None and dialect != spec.grade.dialect:
            spec = spec.model_copy(update={"grade": spec.grade.model_copy(update={"dialect": dialect})})
        if request.problem_url is not None and spec.grade is not None:
            checked = await self._problems.check(
                request.problem_url, request.problem_sha256, request.groups, self._scratch, source=origin
            )
            # The grading runs with the archive checked here, from the cache, whatever the URL serves by then (and
            # without asking it again: a master having a bad moment then does not fail the grading).
            spec = spec.model_copy(update={"grade": spec.grade.model_copy(update={"problem_sha256": checked})})
        job_id = request.id if origin is None else source_job_id(origin, external_id or "")
        job, created = await self._jobs.enqueue(job_id, spec, warnings, origin=origin, external_id=external_id)
        return result_of(job), created

    async def source_files(self, url: str, folder: str, field: str, *, source: str) -> dict[str, str]:
        """A submission's files from the archive at `url` (its `folder`), for an item of job source `source`,
        fetched and unpacked as bundles are: the same URL policy (the source's master's own origin aside), size
        limits and refusal of anything that would land outside. Raises InvalidRequest, its message starting with
        `field`."""
        try:
            return await self._problems.source_files(url, folder, self._scratch, source=source)
        except BadBundle as exc:
            raise InvalidRequest(f"{field}: {exc}") from exc

    async def get(self, job_id: str) -> GradeResult:
        return result_of(await self._grade_job(job_id))

    async def job(self, job_id: str) -> Job:
        """The grading's job, whole (its spec, times and report); JobNotFound if it is no grading."""
        return await self._grade_job(job_id)

    async def wait_final(self, job_id: str, timeout_s: float) -> GradeResult:
        await self._grade_job(job_id)
        return result_of(await self._jobs.wait_final(job_id, timeout_s))

    async def kill(self, job_id: str, grace_s: float) -> GradeResult:
        await self._grade_job(job_id)
        return result_of(await self._jobs.kill(job_id, grace_s))

    async def _grade_job(self, job_id: str) -> Job:
        job = await self._jobs.get(job_id)
        if job.spec.kind != "grade":
            raise JobNotFound(f"job {job_id!r} is not a grading (see /jobs/{job_id})")
        return job


def result_of(job: Job) -> GradeResult:
    """A grade job as GET /grade/{id} shows it: before it ends, its tests are counted but not judged."""
    report = job.grade
    if report is None:
        spec = job.spec.grade
        report = GradeReport(total=len(spec.tests) if spec is not None and spec.tests is not None else 0)
    return GradeResult(id=job.id, state=job.state, callback=job.callback, **report.model_dump())
