"""One grading, start to end: compile once, open one prepared sandbox, run every test in it through the
supervisor, check each output, decide verdicts and score.

Nothing here knows about jobs or the store: it takes the admitted `GradeSpec`, the tests as files on the host,
and the sandboxes to work with, and returns a `GradeReport`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from hatchway.engines.base import Handle, Mount, Role
from hatchway.grading.custom_checker import CustomCheckerSandbox, open_custom_checker
from hatchway.grading.sandboxes import IO, TESTS, Sandboxes
from hatchway.grading.workspace import INLINE_BYTES, GradeTest, Workspace, read_file
from hatchway.judge.checkers import check
from hatchway.judge.limits import limits_for_test
from hatchway.judge.report import CompileResult, GradeReport, TestResult, excerpt
from hatchway.judge.request import CustomChecker, GradeSpec, Group
from hatchway.judge.verdicts import (
    CheckOutcome,
    Measured,
    TestScore,
    Verdict,
    decide,
    overall_verdict,
    score,
    skipped_result,
)
from hatchway.sandbox.protocol import RunRequest, RunResult, RunStatus

MIB = 1024 * 1024


class GradingSession:
    """Runs one admitted grading in its sandboxes."""

    def __init__(
        self,
        *,
        spec: GradeSpec,
        sandboxes: Sandboxes,
        workspace: Workspace,
        uid: int,
        gid: int,
        on_build_output: Callable[[bytes], None],
        on_result: Callable[[str], None],
    ) -> None:
        self._spec = spec
        self._sandboxes = sandboxes
        self._workspace = workspace
        self._uid, self._gid = uid, gid
        self._on_build_output = on_build_output
        self._on_result = on_result
        self.results: list[TestResult] = []
        self.compile: CompileResult | None = None
        self._run_env: dict[str, str] = {}

    async def run(self, tests: list[GradeTest]) -> GradeReport:
        """Grade; raises GradingKilled if killed (`results` then holds the tests that ran)."""
        spec = self._spec
        handle = await self._compile_and_open(tests)
        if handle is None:
            return self._report(tests, [], compile_failed=True)
        checker = await open_custom_checker(
            self._spec,
            self._sandboxes,
            self._workspace,
            uid=self._uid,
            gid=self._gid,
            on_build_output=self._on_build_output,
        )
        scores: list[TestScore] = []
        subtasks = _Subtasks(spec.groups)
        failed = False
        for test in tests:
            if (failed and spec.stop_on_first_failure) or subtasks.doomed(test.name):
                scores.append(skipped_result(test.name, test.points))
                self.results.append(TestResult(name=test.name, verdict=Verdict.SK))
                subtasks.record(test.name, Verdict.SK)
                continue
            result, scored = await self._run_test(handle, test, checker)
            self.results.append(result)
            scores.append(scored)
            subtasks.record(test.name, result.verdict)
            failed = failed or result.verdict is not Verdict.AC
            self._on_result(_line(result))
        return self._report(tests, scores)

    async def _compile_and_open(self, tests: list[GradeTest]) -> Handle | None:
        """Compile, and open the sandbox the tests run in; None (and `compile` says why) if compiling failed."""
        spec, profile = self._spec, self._spec.profile
        memory_mb = max(self._test_limits(test).memory_mb for test in tests)
        # The run sandbox does not need the compiled program to start (it sees /box as it is when a run starts),
        # so it opens while the compiler works, and costs no time of its own.
        compiling = asyncio.ensure_future(
            self._sandboxes.compile(
                role=Role.COMPILE,
                profile=profile,
                disk=self._workspace.compile_disk,
                main=spec.main,
                uid=self._uid,
                gid=self._gid,
                timeout_s=spec.limits.compile_timeout_s,
                memory_mb=spec.limits.compile_memory_mb,
                processes=spec.limits.processes,
            )
        )
        opening = asyncio.ensure_future(
            self._sandboxes.open(
                role=Role.RUN,
                image=profile.image,
                memory_mb=profile.memory_limit_mb(memory_mb),
                processes=spec.limits.processes,
                mounts=(
                    Mount(self._workspace.box, "/box"),
                    Mount(self._workspace.inputs, TESTS),
                    Mount(self._workspace.io, IO, read_only=False),
                ),
            )
        )
        # Both are awaited to their end even if one fails, so every sandbox made is known and removed.
        compiled, opened = await asyncio.gather(compiling, opening, return_exceptions=True)
        for outcome in (compiled, opened):
            if isinstance(outcome, BaseException):
                raise outcome
        assert not isinstance(compiled, BaseException) and not isinstance(opened, BaseException)
        self.compile = compiled
        if compiled is not None:
            self._on_build_output(compiled.output.encode())
            if compiled.exit_code != 0:
                return None
        self._run_env = self._sandboxes.environment(opened, profile.env)
        return opened

    def _report(self, tests: list[GradeTest], scores: list[TestScore], *, compile_failed: bool = False) -> GradeReport:
        if compile_failed:
            scores = [skipped_result(test.name, test.points) for test in tests]
            self.results = [TestResult(name=test.name, verdict=Verdict.SK) for test in tests]
        scoring = score(scores, self._spec.groups)
        return GradeReport(
            verdict=overall_verdict([s.verdict for s in scores], compile_failed=compile_failed),
            score=scoring.score,
            max_score=scoring.max_score,
            passed=sum(result.verdict is Verdict.AC for result in self.results),
            total=len(tests),
            compile=self.compile,
            tests=self.results,
            groups=list(scoring.groups),
        )

    def _test_limits(self, test: GradeTest) -> GradeLimitsView:
        limits = limits_for_test(
            self._spec.limits, self._spec.max_limits, time_limit_s=test.time_limit_s, memory_mb=test.memory_mb
        )
        profile = self._spec.profile
        return GradeLimitsView(
            cpu_s=profile.time_limit_s(limits.time_limit_s),
            wall_s=profile.time_limit_s(limits.wall_limit_s),
            memory_mb=limits.memory_mb,
            output_bytes=limits.output_bytes,
            processes=limits.processes,
        )

    async def _run_test(
        self, handle: Handle, test: GradeTest, checker: CustomCheckerSandbox | None
    ) -> tuple[TestResult, TestScore]:
        limits = self._test_limits(test)
        profile = self._spec.profile
        run = await self._sandboxes.run(
            handle,
            RunRequest(
                id=test.name,
                argv=tuple(profile.run_argv(self._spec.main)),
                env=self._run_env,
                uid=self._uid,
                gid=self._gid,
                cpu_time_s=limits.cpu_s,
                wall_time_s=limits.wall_s,
                memory_bytes=profile.memory_limit_mb(limits.memory_mb) * MIB,
                stack_bytes=None if test.stack_mb is None else test.stack_mb * MIB,
                processes=limits.processes,
                file_size_bytes=max(limits.output_bytes, 1),
                stdin_path=f"{TESTS}/{test.input_path.name}",
                stdout_path=f"{IO}/out",
                stderr_path=f"{IO}/err",
                scratch=True,
            ),
        )
        output = await read_file(self._workspace.io / "out", limits.output_bytes + 1)
        stderr = await read_file(self._workspace.io / "err", 16 * 1024)
        measured = _measured(run, output_over=len(output) > limits.output_bytes)
        outcome = None
        if measured.internal_error is None and run.status is RunStatus.EXITED and run.exit_code == 0:
            outcome = await self._check(test, output, checker)
        decision = decide(measured, limits.cpu_s, limits.wall_s, outcome)
        scored = TestScore(test.name, decision.verdict, test.points, decision.fraction)
        result = TestResult(
            name=test.name,
            verdict=decision.verdict,
            points=round(scored.earned, 6),
            time_s=round(run.cpu_s, 6),
            wall_s=round(run.wall_s, 6),
            memory_bytes=run.memory_bytes,
            exit_code=run.exit_code,
            signal=run.signal,
            checker_message=None if test.hidden else decision.message,
            output="" if test.hidden else excerpt(output),
            stderr="" if test.hidden else excerpt(stderr),
        )
        return result, scored

    async def _check(self, test: GradeTest, output: bytes, checker: CustomCheckerSandbox | None) -> CheckOutcome:
        if checker is not None:
            return await checker.check(test, self._workspace.io / "out")
        expected = await read_file(test.expected_path, None)
        assert not isinstance(self._spec.checker, CustomChecker)
        if len(output) + len(expected) <= INLINE_BYTES:
            return check(self._spec.checker, b"", expected, output)
        return await asyncio.to_thread(check, self._spec.checker, b"", expected, output)


class _Subtasks:
    """Which tests need not run: those whose every group depends on a group that has already failed (such a
    group scores nothing whatever they do). Tests in no group always run."""

    def __init__(self, groups: list[Group]) -> None:
        self._groups = {group.name: group for group in groups}
        self._of_test: dict[str, list[Group]] = {}
        for group in groups:
            for name in group.tests:
                self._of_test.setdefault(name, []).append(group)
        self._verdicts: dict[str, Verdict] = {}

    def record(self, test: str, verdict: Verdict) -> None:
        self._verdicts[test] = verdict

    def doomed(self, test: str) -> bool:
        groups = self._of_test.get(test)
        return bool(groups) and all(
            any(self._failed(self._groups[name]) for name in group.depends_on) for group in groups or ()
        )

    def _failed(self, group: Group) -> bool:
        own = any(self._verdicts.get(name, Verdict.AC) is not Verdict.AC for name in group.tests)
        return own or any(self._failed(self._groups[name]) for name in group.depends_on)


@dataclass(frozen=True)
class GradeLimitsView:
    """One test's limits as the sandbox applies them (times already scaled by the profile)."""

    cpu_s: float
    wall_s: float
    memory_mb: int
    output_bytes: int
    processes: int


def _measured(run: RunResult, *, output_over: bool) -> Measured:
    internal = None
    if run.status is RunStatus.SETUP_FAILED:
        internal = f"the sandbox could not prepare the run: {run.error}"
    elif run.status is RunStatus.EXEC_FAILED:
        internal = f"the profile's run command could not start: {run.error}"
    return Measured(
        exit_code=run.exit_code,
        signal=run.signal,
        cpu_s=run.cpu_s,
        wall_s=run.wall_s,
        memory_bytes=run.memory_bytes,
        oom_killed=run.oom_killed,
        cpu_exceeded=run.cpu_exceeded,
        wall_exceeded=run.wall_exceeded,
        output_exceeded=run.output_exceeded or output_over,
        internal_error=internal,
    )


def _line(result: TestResult) -> str:
    memory = "" if result.memory_bytes is None else f" {result.memory_bytes / MIB:.1f} MiB"
    message = f"  {result.checker_message}" if result.checker_message else ""
    return f"test {result.name}: {result.verdict.value} {result.time_s or 0:.3f} s{memory}{message}\n"
