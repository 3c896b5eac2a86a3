"""Admitting a grading: a `GradeRequest` checked against this worker's profiles, policy and limits, and turned
into the job spec it is queued with."""

from __future__ import annotations

from collections.abc import Mapping

from hatchway.engines.volumes import room_for_files
from hatchway.errors import InputTooLarge, InvalidRequest
from hatchway.jobs.policy import Policy
from hatchway.judge.limits import GradeLimits, resolve_limits
from hatchway.judge.profiles import Profile, profile_for
from hatchway.judge.request import CustomChecker, GradeRequest, GradeSpec
from hatchway.models import JobSpec, ResolvedLimits

# A queued grading's overall time bound is its parts': the compile, then every test at its wall limit.
_CHECKER_WALL_S = 20.0


class GradeAdmission:
    """Decides what a grading runs with, or says clearly why it cannot run here."""

    def __init__(
        self,
        *,
        policy: Policy,
        profiles: Mapping[str, Profile],
        default_limits: GradeLimits,
        max_limits: GradeLimits,
        max_input_bytes: int,
    ) -> None:
        self._policy = policy
        self.profiles = profiles
        # Plain GradeLimits (not the settings' subclasses): a stored spec must equal a resubmitted one.
        self._defaults = GradeLimits.model_validate(default_limits.model_dump())
        self._maximums = GradeLimits.model_validate(max_limits.model_dump())
        self._max_input_bytes = max_input_bytes

    def admit(self, request: GradeRequest, *, source: str | None = None) -> tuple[JobSpec, list[str]]:
        """The spec and any warnings for `request` (an item of job source `source`, or a client's). Raises
        UnknownProfile, NotAllowed, GradeLimitTooHigh, InputTooLarge, InvalidRequest or RuntimeUnavailable."""
        profile = profile_for(request.language, request.tool, self.profiles)
        self._policy.require_image(profile.image)
        checker_profile = None
        if isinstance(request.checker, CustomChecker):
            checker_profile = profile_for(request.checker.language, None, self.profiles)
            self._policy.require_image(checker_profile.image)
        self._policy.require_placement(request.placement)
        if request.problem_url is not None:
            self._policy.require_url(request.problem_url, "problem_url", source=source)
        if request.callback_url is not None:
            self._policy.require_callback_url(request.callback_url)
        runtime, warnings = self._policy.choose_runtime(request.runtime)
        cases = request.cases
        limits = resolve_limits(
            request.limits, self._defaults, self._maximums, tests=[*(cases or ()), *request.test_limits]
        )
        files, main = _submission(request, profile)
        self._check_size(request, files)
        _check_fits(files, limits.compile_disk_mb)
        tests_bound_s = (
            sum(max(limits.wall_limit_s, 3 * (test.time_limit_s or 0) + 1) for test in cases or ())
            or limits.wall_limit_s * 1000
        )
        spec = JobSpec(
            kind="grade",
            image=profile.image,
            command=list(profile.run),
            env={},
            stdin=None,
            files={},
            workdir="/box",
            limits=ResolvedLimits(
                timeout_s=limits.compile_timeout_s + tests_bound_s * profile.time_factor + _CHECKER_WALL_S,
                memory_mb=limits.memory_mb,
                cpus=1.0,
                pids=limits.processes,
                output_bytes=limits.output_bytes,
            ),
            network="none",
            runtime=runtime,
            priority=request.priority,
            labels=request.labels,
            placement=request.placement,
            callback_url=request.callback_url,
            grade=GradeSpec(
                profile=profile,
                files=files,
                main=main,
                tests=cases,
                problem_url=request.problem_url,
                problem_sha256=request.problem_sha256,
                test_limits=request.test_limits,
                checker=request.checker,
                checker_profile=checker_profile,
                limits=limits,
                max_limits=self._maximums,
                groups=request.groups,
                stop_on_first_failure=request.stop_on_first_failure,
            ),
        )
        return spec, warnings

    def _check_size(self, request: GradeRequest, files: Mapping[str, str]) -> None:
        size = sum(len(text.encode()) for text in files.values())
        size += sum(len(t.input.encode()) + len(t.expected_output.encode()) for t in request.cases or ())
        if isinstance(request.checker, CustomChecker):
            size += len(request.checker.code.encode())
        if size > self._max_input_bytes:
            raise InputTooLarge(
                f"the submission and tests add up to {size} bytes; this worker takes at most {self._max_input_bytes}"
                " (put large tests in a problem archive: problem_url)"
            )


def _check_fits(files: Mapping[str, str], disk_mb: int) -> None:
    """The submission is written to the compile step's disk: it must leave room there."""
    size = sum(len(text.encode()) for text in files.values())
    if size > room_for_files(disk_mb) // 2:
        raise InputTooLarge(
            f"the submission's files take {size} bytes, more than half its compile disk "
            f"(limits.compile_disk_mb = {disk_mb}); ask for a larger compile_disk_mb"
        )


def _submission(request: GradeRequest, profile: Profile) -> tuple[dict[str, str], str]:
    """The files to write into /box, and the main one."""
    if request.code is not None:
        return {profile.source_name: request.code}, profile.source_name
    assert request.files is not None
    if request.main is not None:
        return dict(request.files), request.main
    if profile.source_name in request.files:
        return dict(request.files), profile.source_name
    if len(request.files) == 1:
        return dict(request.files), next(iter(request.files))
    raise InvalidRequest(
        f"name the entry point with `main`: the files hold no {profile.source_name!r} ({profile.name}'s default)"
    )
