"""The grading session's decisions, on the in-memory engine: how each way a run can end becomes a verdict, what it
asks the sandbox for, compile failures, stop_on_first_failure, groups, the custom checker, kills, and that every
sandbox it made goes.

The fake engine answers every run of a program with the same scripted `RunResult`; what a run printed is whatever
the test put in the grading's io/out file (nothing: empty output).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.engines.base import Handle, Role
from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.errors import EngineError
from hatchway.grading.custom_checker import CheckerBroken
from hatchway.grading.sandboxes import GradingKilled, Sandboxes
from hatchway.grading.session import GradingSession
from hatchway.grading.workspace import CompileDisk, Workspace, write_tests
from hatchway.jobs.control import RunControl
from hatchway.judge.limits import GradeLimits
from hatchway.judge.profiles import Profile
from hatchway.judge.report import GradeReport, TestResult
from hatchway.judge.request import CustomChecker, GradeSpec, Group, LinesChecker, TestSpec
from hatchway.judge.verdicts import Verdict
from hatchway.sandbox.protocol import RunRequest, RunResult, RunStatus

MIB = 1024 * 1024
OWNER = "grade-1"
LIMITS = GradeLimits(time_limit_s=1, wall_limit_s=3, memory_mb=64, output_bytes=100)
MAXIMUMS = GradeLimits(time_limit_s=10, wall_limit_s=20, memory_mb=1024, output_bytes=10_000)
INTERPRETED = Profile(name="fake", image="fake-image", source_name="main.x", run=("prog", "/box/{main}"))
COMPILED = Profile(
    name="fakec", image="fakec-image", source_name="main.x", compile=("cc", "{main}"), run=("/box/main",)
)
JUDGE = Profile(name="judge", image="judge-image", source_name="check.x", run=("checker",))


def ran(**fields: Any) -> RunResult:
    """A supervised run's result: a clean, quick exit unless `fields` say otherwise."""
    values: dict[str, Any] = {
        "id": "1",
        "status": RunStatus.EXITED,
        "exit_code": 0,
        "signal": None,
        "cpu_s": 0.01,
        "wall_s": 0.02,
        "memory_bytes": 4 * MIB,
        "oom_killed": False,
        "cpu_exceeded": False,
        "wall_exceeded": False,
        "output_exceeded": False,
        "error": None,
    }
    values.update(fields)
    return RunResult(**values)


def killed_by(signal: int, **fields: Any) -> RunResult:
    return ran(status=RunStatus.SIGNALED, exit_code=None, signal=signal, **fields)


class RecordingEngine(FakeEngine):
    """The fake engine, keeping every run request it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RunRequest] = []

    async def run(self, handle: Handle, request: RunRequest) -> RunResult:
        self.requests.append(request)
        return await super().run(handle, request)

    def count(self, what: str, role: Role | None = None) -> int:
        return sum(1 for event, _, used in self.events if event == what and role in (None, Role(used)))


class Harness:
    """One grading's engine, sandboxes and workspace, the way the grade runner sets them up."""

    def __init__(self, root: Path) -> None:
        self.engine = RecordingEngine()
        self.control = RunControl(OWNER)
        self.sandboxes = Sandboxes(engine=self.engine, control=self.control, owner=OWNER, user="1000:1000")
        self.workspace = Workspace(root=root, inputs=root / "inputs")
        for folder in ("box", "io", "compile-io", "checker-box", "checker-io", "check", "inputs", "expected"):
            (root / folder).mkdir(parents=True)
        self.build_output: list[bytes] = []
        self.lines: list[str] = []
        self.session: GradingSession | None = None

    def prints(self, output: str | bytes) -> None:
        """What every run of the program "printed"."""
        data = output.encode() if isinstance(output, str) else output
        (self.workspace.io / "out").write_bytes(data)

    def checker_prints(self, output: str) -> None:
        (self.workspace.checker_io / "out").write_text(output)

    async def grade(self, tests: list[TestSpec], *, profile: Profile = INTERPRETED, **spec_fields: Any) -> GradeReport:
        """Run a session over `tests`; the sandboxes stay until `close`, so a test can look at them."""
        spec = GradeSpec(
            profile=profile,
            files={profile.source_name: "source"},
            main=profile.source_name,
            tests=tests,
            checker=spec_fields.pop("checker", LinesChecker()),
            limits=spec_fields.pop("limits", LIMITS),
            max_limits=MAXIMUMS,
            **spec_fields,
        )
        grade_tests = write_tests(self.workspace, tests)
        owner = self.workspace.root.stat()
        self.session = GradingSession(
            spec=spec,
            sandboxes=self.sandboxes,
            workspace=self.workspace,
            # The workspace's owner, as the runner's numeric run_as_user; never root, which runs may not be.
            uid=owner.st_uid or 1000,
            gid=owner.st_gid or 1000,
            on_build_output=self.build_output.append,
            on_result=self.lines.append,
        )
        return await self.session.run(grade_tests)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(tmp_path / "grading")
    yield made
    await made.sandboxes.close()
    assert made.engine.sandboxes == {}, "every sandbox the grading made is removed"


def cases(*names: str, expected: str = "", **fields: Any) -> list[TestSpec]:
    return [TestSpec(name=name, expected_output=expected, **fields) for name in names]


def only(report: GradeReport) -> TestResult:
    assert len(report.tests) == 1, report
    return report.tests[0]


# How a run's result becomes a verdict


@pytest.mark.parametrize(
    ("result", "verdict", "message"),
    [
        pytest.param(ran(), Verdict.AC, None, id="clean-exit"),
        pytest.param(ran(exit_code=3), Verdict.RE, "exited with code 3", id="non-zero-exit"),
        pytest.param(killed_by(11), Verdict.RE, "signal 11 (SIGSEGV)", id="signal"),
        pytest.param(
            killed_by(9, cpu_exceeded=True, cpu_s=1.0), Verdict.TLE, "CPU time went past the limit of 1 s", id="cpu"
        ),
        pytest.param(ran(cpu_s=1.2), Verdict.TLE, "CPU time", id="cpu-over-unflagged"),
        pytest.param(
            killed_by(9, wall_exceeded=True, wall_s=3.0), Verdict.TLE, "wall time went past the limit of 3 s", id="wall"
        ),
        pytest.param(
            killed_by(9, oom_killed=True, memory_bytes=64 * MIB), Verdict.MLE, "(peak 64.0 MiB)", id="out-of-memory"
        ),
        pytest.param(killed_by(25, output_exceeded=True), Verdict.OLE, "output limit", id="output-sigxfsz"),
        pytest.param(ran(exit_code=1, output_exceeded=True), Verdict.OLE, "output limit", id="output-write-error"),
        pytest.param(killed_by(9, cpu_exceeded=True, oom_killed=True), Verdict.TLE, "CPU time", id="tle-beats-mle"),
        pytest.param(killed_by(9, oom_killed=True, output_exceeded=True), Verdict.MLE, "memory", id="mle-beats-ole"),
        pytest.param(
            ran(status=RunStatus.EXEC_FAILED, exit_code=127, error="/box/main: not found"),
            Verdict.IE,
            "the profile's run command could not start: /box/main: not found",
            id="exec-failed",
        ),
        pytest.param(
            ran(status=RunStatus.SETUP_FAILED, exit_code=None, error="cannot open stdout"),
            Verdict.IE,
            "the sandbox could not prepare the run: cannot open stdout",
            id="setup-failed",
        ),
        pytest.param(ran(exit_code=None), Verdict.IE, "neither an exit code nor a signal", id="no-exit-code"),
    ],
)
async def test_a_runs_result_decides_the_verdict(
    harness: Harness, result: RunResult, verdict: Verdict, message: str | None
) -> None:
    harness.engine.programs["prog"] = FakeProgram(result=result)
    report = await harness.grade(cases("1"))
    test = only(report)
    assert (test.verdict, report.verdict) == (verdict, verdict)
    if message is None:
        assert test.checker_message is None
    else:
        assert test.checker_message is not None and message in test.checker_message, test.checker_message
    assert (test.exit_code, test.signal, test.time_s, test.wall_s, test.memory_bytes) == (
        result.exit_code,
        result.signal,
        result.cpu_s,
        result.wall_s,
        result.memory_bytes,
    )
    assert (report.score, report.passed) == ((1, 1) if verdict is Verdict.AC else (0, 0))
    assert len(harness.lines) == 1 and harness.lines[0].startswith(f"test 1: {verdict.value} ")


async def test_a_program_the_sandbox_cannot_find_is_an_internal_error(harness: Harness) -> None:
    report = await harness.grade(cases("1"))  # nothing scripted for "prog": the fake cannot exec it
    assert (only(report).verdict, only(report).exit_code) == (Verdict.IE, 127)
    assert "could not start" in (only(report).checker_message or "")


async def test_the_output_is_checked_only_after_a_clean_run(harness: Harness) -> None:
    harness.prints("3\n")
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    right = await harness.grade(cases("1", expected="3\n"))
    assert (only(right).verdict, only(right).output) == (Verdict.AC, "3\n")

    wrong = await harness.grade(cases("1", expected="4\n"))
    assert (only(wrong).verdict, only(wrong).checker_message) == (Verdict.WA, "line 1: expected '4', got '3'")

    harness.engine.programs["prog"] = FakeProgram(result=ran(exit_code=2))
    crashed = await harness.grade(cases("1", expected="3\n"))
    assert (only(crashed).verdict, only(crashed).output) == (Verdict.RE, "3\n"), "what it printed is still shown"


async def test_output_past_the_limit_is_ole_even_when_the_supervisor_did_not_flag_it(harness: Harness) -> None:
    harness.prints("x" * (LIMITS.output_bytes + 1))
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    assert only(await harness.grade(cases("1"))).verdict is Verdict.OLE
    harness.prints("x" * LIMITS.output_bytes)
    exactly = await harness.grade(cases("1", expected="x" * LIMITS.output_bytes))
    assert only(exactly).verdict is Verdict.AC


# What the session asks the sandbox for


async def test_each_run_gets_its_tests_limits_scaled_by_the_profile(harness: Harness) -> None:
    slow = INTERPRETED.model_copy(update={"time_factor": 2.0, "extra_memory_mb": 32, "env": {"HOME": "/tmp"}})
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    tests = [TestSpec(name="plain"), TestSpec(name="own", time_limit_s=4, memory_mb=200)]
    report = await harness.grade(tests, profile=slow)
    assert [test.verdict for test in report.tests] == [Verdict.AC, Verdict.AC]

    plain, own = harness.engine.requests
    assert plain.argv == ("prog", "/box/main.x")
    assert dict(plain.env) == {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, "the image's env, the profile's over it"
    assert (plain.cpu_time_s, plain.wall_time_s, plain.memory_bytes) == (2.0, 6.0, (64 + 32) * MIB)
    assert (plain.stdin_path, plain.stdout_path, plain.scratch) == ("/.hatchway/tests/1.in", "/.hatchway/io/out", True)
    assert (plain.file_size_bytes, plain.processes) == (LIMITS.output_bytes, LIMITS.processes)
    assert plain.uid != 0 and plain.gid != 0
    # Its own CPU limit widens its wall limit to 3 x CPU + 1 (13 s), before scaling.
    assert (own.cpu_time_s, own.wall_time_s, own.memory_bytes) == (8.0, 26.0, (200 + 32) * MIB)
    assert own.stdin_path == "/.hatchway/tests/2.in"

    (run_box,) = [box for box in harness.engine.sandboxes.values() if box.spec.role is Role.RUN]
    assert run_box.spec.memory_mb >= 200 + 32, "the sandbox holds the largest run"
    assert run_box.spec.image == "fake-image"


# Compiling


async def test_a_failed_compile_is_ce_and_skips_every_test(harness: Harness) -> None:
    harness.engine.programs["cc"] = FakeProgram(exit_code=1, stderr=b"main.x:1: error: expected ';'\n")
    harness.engine.programs["/box/main"] = FakeProgram(result=ran())
    report = await harness.grade(cases("1", "2", "3"), profile=COMPILED)
    assert (report.verdict, report.score, report.max_score, report.passed, report.total) == (Verdict.CE, 0, 3, 0, 3)
    assert [test.verdict for test in report.tests] == [Verdict.SK] * 3
    assert report.compile is not None and report.compile.exit_code == 1
    assert "expected ';'" in report.compile.output
    assert b"".join(harness.build_output) == b"main.x:1: error: expected ';'\n"
    assert [request.id for request in harness.engine.requests] == ["compile"], "no test ran"


async def test_a_compiler_that_cannot_start_is_ce(harness: Harness) -> None:
    report = await harness.grade(cases("1"), profile=COMPILED)  # no "cc" scripted
    assert report.verdict is Verdict.CE
    assert report.compile is not None and report.compile.exit_code == 127
    assert "not found" in report.compile.output


async def test_a_compile_past_its_timeout_is_stopped_and_ce(harness: Harness) -> None:
    harness.engine.programs["cc"] = FakeProgram(result=killed_by(9, wall_exceeded=True, cpu_s=0.01, wall_s=0.05))
    limits = LIMITS.model_copy(update={"compile_timeout_s": 0.05})
    report = await harness.grade(cases("1"), profile=COMPILED, limits=limits)
    assert report.verdict is Verdict.CE
    assert report.compile is not None and report.compile.exit_code == 137
    assert "took longer than 0.05 s" in report.compile.output
    compile_request = harness.engine.requests[0]
    assert (compile_request.cpu_time_s, compile_request.wall_time_s, compile_request.cwd) == (0.05, 0.05, "/box")


async def test_a_compile_that_filled_its_disk_says_so(harness: Harness) -> None:
    harness.engine.programs["cc"] = FakeProgram(exit_code=1, stderr=b"ld: final link failed: No space left\n")
    root = harness.workspace.root
    full = CompileDisk(box=root / "box", io=root / "compile-io", disk_mb=64, full=lambda: True)
    harness.workspace = dataclasses.replace(harness.workspace, disk=full)
    report = await harness.grade(cases("1"), profile=COMPILED)
    assert report.verdict is Verdict.CE and report.compile is not None
    assert report.compile.output.endswith("the compile step filled its disk (limits.compile_disk_mb = 64)\n")


async def test_a_compiled_submission_runs_its_tests_after_one_compile(harness: Harness) -> None:
    harness.engine.programs["cc"] = FakeProgram(stdout=b"built\n")
    harness.engine.programs["/box/main"] = FakeProgram(result=ran())
    report = await harness.grade(cases("1", "2"), profile=COMPILED)
    assert (report.verdict, report.passed) == (Verdict.AC, 2)
    assert report.compile is not None and (report.compile.exit_code, report.compile.output) == (0, "built\n")
    assert harness.engine.count("open", Role.COMPILE) == 1 and harness.engine.count("run", Role.COMPILE) == 1
    assert harness.engine.count("open", Role.RUN) == 1 and harness.engine.count("run", Role.RUN) == 2
    assert report.compile.time_s == 0.001, "the compiler's CPU time, as the supervisor measured it"


# Skipping and scoring


async def test_stop_on_first_failure_skips_every_test_after_the_first_failure(harness: Harness) -> None:
    harness.prints("3\n")
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    tests = [
        TestSpec(name=name, expected_output=expected)
        for name, expected in zip("abcd", ["3\n", "4\n", "3\n", "3\n"], strict=True)
    ]
    stopped = await harness.grade(tests, stop_on_first_failure=True)
    assert [test.verdict for test in stopped.tests] == [Verdict.AC, Verdict.WA, Verdict.SK, Verdict.SK]
    assert (stopped.verdict, stopped.score, stopped.max_score, stopped.passed, stopped.total) == (
        Verdict.WA,
        1,
        4,
        1,
        4,
    )
    assert len(harness.engine.requests) == 2, "skipped tests do not run"
    assert len(harness.lines) == 2

    everything = await harness.grade(tests)
    assert [test.verdict for test in everything.tests] == [Verdict.AC, Verdict.WA, Verdict.AC, Verdict.AC]
    assert len(harness.engine.requests) == 2 + 4


async def test_a_group_whose_dependency_failed_is_skipped_and_earns_nothing(harness: Harness) -> None:
    harness.prints("3\n")
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    tests = [
        TestSpec(name="1", expected_output="3\n"),
        TestSpec(name="2", expected_output="4\n"),
        TestSpec(name="3", expected_output="3\n"),
        TestSpec(name="4", expected_output="3\n"),
    ]
    groups = [
        Group(name="easy", tests=["1"], points=10),
        Group(name="hard", tests=["2"], points=20),
        Group(name="harder", tests=["3"], points=30, depends_on=["hard"]),
        Group(name="easier", tests=["4"], points=40, depends_on=["easy"]),
    ]
    report = await harness.grade(tests, groups=groups)
    assert [(group.name, group.verdict, group.score) for group in report.groups] == [
        ("easy", Verdict.AC, 10),
        ("hard", Verdict.WA, 0),
        ("harder", Verdict.SK, 0),
        ("easier", Verdict.AC, 40),
    ]
    assert (report.score, report.max_score, report.verdict) == (50, 100, Verdict.WA)
    assert [test.verdict for test in report.tests] == [Verdict.AC, Verdict.WA, Verdict.SK, Verdict.AC]
    assert len(harness.engine.requests) == 3, "a test whose every group is already lost does not run"


# The custom checker


def custom(code: str = "judge") -> CustomChecker:
    return CustomChecker(language="judge", code=code)


async def test_a_custom_checkers_answer_decides_the_verdict_message_and_points(harness: Harness) -> None:
    harness.prints("3\n")
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    harness.engine.programs["checker"] = FakeProgram(result=ran())
    harness.checker_prints("close enough\npoints=0.25\n")
    tests = [TestSpec(name="1", input="1 2\n", expected_output="3\n", points=4)]
    report = await harness.grade(tests, checker=custom(), checker_profile=JUDGE)
    test = only(report)
    assert (test.verdict, test.points, test.checker_message) == (Verdict.WA, 1.0, "close enough")
    assert (report.score, report.max_score) == (1, 4)

    # The checker ran in a sandbox of its own, given the input, expected and actual output as files.
    program, checker = harness.engine.requests
    assert program.argv == ("prog", "/box/main.x")
    assert checker.argv == ("checker", "/check/input", "/check/expected", "/check/output")
    shown = harness.workspace.check
    assert [(shown / name).read_text() for name in ("input", "expected", "output")] == ["1 2\n", "3\n", "3\n"]
    assert harness.engine.count("open", Role.CHECKER) == 1


@pytest.mark.parametrize(
    ("result", "verdict", "message"),
    [
        pytest.param(ran(), Verdict.AC, "fine", id="exit-0"),
        pytest.param(ran(exit_code=1), Verdict.WA, "fine", id="exit-1"),
        pytest.param(ran(exit_code=2), Verdict.IE, "checker exited 2", id="exit-2"),
        pytest.param(killed_by(9, cpu_exceeded=True), Verdict.IE, "checker timed out", id="timed-out"),
        pytest.param(killed_by(9, oom_killed=True), Verdict.IE, "the checker ran out of memory", id="out-of-memory"),
        pytest.param(
            ran(status=RunStatus.EXEC_FAILED, exit_code=127, error="checker: not found"),
            Verdict.IE,
            "the checker could not run",
            id="exec-failed",
        ),
    ],
)
async def test_how_the_custom_checker_ended_decides_the_verdict(
    harness: Harness, result: RunResult, verdict: Verdict, message: str
) -> None:
    harness.prints("3\n")
    harness.checker_prints("fine\n")
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    harness.engine.programs["checker"] = FakeProgram(result=result)
    report = await harness.grade(cases("1"), checker=custom(), checker_profile=JUDGE)
    assert only(report).verdict is verdict
    assert message in (only(report).checker_message or "")


async def test_the_custom_checker_is_not_consulted_after_a_failed_run(harness: Harness) -> None:
    harness.engine.programs["prog"] = FakeProgram(result=killed_by(11))
    harness.engine.programs["checker"] = FakeProgram(result=ran())
    report = await harness.grade(cases("1"), checker=custom(), checker_profile=JUDGE)
    assert only(report).verdict is Verdict.RE
    assert [request.argv[0] for request in harness.engine.requests] == ["prog"]


async def test_a_custom_checker_that_does_not_compile_breaks_the_grading(harness: Harness) -> None:
    compiled_judge = JUDGE.model_copy(update={"compile": ("judgecc", "{main}")})
    harness.engine.programs["judgecc"] = FakeProgram(exit_code=1, stderr=b"check.x: syntax error\n")
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    with pytest.raises(CheckerBroken, match="syntax error"):
        await harness.grade(cases("1"), checker=custom(), checker_profile=compiled_judge)
    assert [request.id for request in harness.engine.requests] == ["compile"], "only the checker's compile ran"
    assert (harness.workspace.checker_box / "check.x").read_text() == "judge", "the checker's source is written"


# Kills and failures: every sandbox still goes (the fixture checks after closing)


async def test_a_kill_before_a_test_runs_stops_the_grading(harness: Harness) -> None:
    harness.engine.programs["prog"] = FakeProgram(result=ran())
    harness.control.kill(0)
    with pytest.raises(GradingKilled):
        await harness.grade(cases("1", "2"))
    assert harness.engine.requests == []
    assert harness.session is not None and harness.session.results == []


async def test_a_kill_while_compiling_stops_the_compiler(harness: Harness) -> None:
    harness.engine.programs["cc"] = FakeProgram(runs_until_stopped=True)
    grading = asyncio.ensure_future(harness.grade(cases("1"), profile=COMPILED))
    await asyncio.wait_for(harness.engine.started(OWNER), 5)
    harness.control.kill(0)
    with pytest.raises(GradingKilled):
        await asyncio.wait_for(grading, 5)
    assert harness.engine.count("stop", Role.COMPILE) == 1
    assert [request.id for request in harness.engine.requests] == ["compile"]


async def test_an_engine_failure_while_compiling_still_leaves_the_run_sandbox_to_be_removed(
    harness: Harness,
) -> None:
    harness.engine.programs["cc"] = FakeProgram()
    harness.engine.fail_next = EngineError("the daemon fell over")
    with pytest.raises(EngineError, match="fell over"):
        await harness.grade(cases("1"), profile=COMPILED)
    assert harness.engine.count("open", Role.RUN) == 1, "the run sandbox opened meanwhile"
    assert len(harness.sandboxes.handles) == 1, "and the grading knows it, to remove it"


async def test_every_sandbox_of_a_grading_is_removed_on_close(harness: Harness) -> None:
    compiled_judge = JUDGE.model_copy(update={"compile": ("judgecc", "{main}")})
    for program in ("cc", "judgecc"):
        harness.engine.programs[program] = FakeProgram()
    harness.engine.programs["/box/main"] = FakeProgram(result=ran())
    harness.engine.programs["checker"] = FakeProgram(result=ran())
    harness.prints("")
    report = await harness.grade(cases("1", "2"), profile=COMPILED, checker=custom(), checker_profile=compiled_judge)
    assert report.verdict is Verdict.AC
    assert harness.engine.count("create") == 4, "compile, run, checker compile, checker"
    await harness.sandboxes.close()
    assert harness.engine.sandboxes == {}
    assert harness.engine.count("remove") == 4
