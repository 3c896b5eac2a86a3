"""Verdicts: deciding one test's verdict from how its run went, and scoring tests and groups.

Priority, used both when several verdicts apply to one run and for the overall verdict of a submission::

    IE > CE > TLE > MLE > OLE > RE > WA > AC

SK (skipped) is not something the program did wrong: a test is skipped because it never ran (a failed group
dependency, `stop_on_first_failure`), so SK never outranks a verdict of a test that did run.

Partial credit: a custom checker may award a fraction of a test's points, a number in [0, 1]. The verdict is AC only
when the fraction is 1; any smaller fraction is WA, and the test earns `fraction x points`. Built-in checkers award
all (AC, fraction 1) or nothing (WA, fraction 0).
"""

from __future__ import annotations

import math
import signal as signals
from collections import Counter
from collections.abc import Collection, Iterable, Sequence, Sized
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict


class Verdict(StrEnum):
    """What happened to one test, or to a whole submission."""

    AC = "AC"
    """Accepted: the output is right."""
    WA = "WA"
    """Wrong answer: the program ran cleanly but the checker refused its output (or gave partial credit)."""
    TLE = "TLE"
    """Time limit exceeded: CPU time or wall time went past its limit."""
    MLE = "MLE"
    """Memory limit exceeded: the kernel killed the program for using more memory than allowed."""
    OLE = "OLE"
    """Output limit exceeded: the program printed more than allowed."""
    RE = "RE"
    """Runtime error: the program exited with a non-zero code or was killed by a signal."""
    CE = "CE"
    """Compilation error: the submission did not build, so no test ran."""
    IE = "IE"
    """Internal error: the judge (or a custom checker) failed; the verdict says nothing about the program."""
    SK = "SK"
    """Skipped: the test did not run (an earlier failure with `stop_on_first_failure`, or a failed dependency)."""


# Highest priority first; SK is last because a skipped test says nothing about the program.
_PRIORITY: tuple[Verdict, ...] = (
    Verdict.IE,
    Verdict.CE,
    Verdict.TLE,
    Verdict.MLE,
    Verdict.OLE,
    Verdict.RE,
    Verdict.WA,
    Verdict.AC,
    Verdict.SK,
)
_RANK = {verdict: rank for rank, verdict in enumerate(_PRIORITY)}


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The highest-priority verdict among tests that ran (SK is ignored); None if none ran."""
    ran = [verdict for verdict in verdicts if verdict is not Verdict.SK]
    return min(ran, key=_RANK.__getitem__) if ran else None


def overall_verdict(test_verdicts: Iterable[Verdict], *, compile_failed: bool = False) -> Verdict:
    """The verdict of a whole submission.

    CE if compiling failed; otherwise the highest-priority verdict among the tests that ran, so AC means every test
    that ran was accepted. Tests are only ever skipped after a failure (stop_on_first_failure, a failed group
    dependency), so a skipped test never hides behind an AC. SK when no test ran at all.
    """
    if compile_failed:
        return Verdict.CE
    return worst(test_verdicts) or Verdict.SK


@dataclass(frozen=True)
class CheckOutcome:
    """What a checker said about one output: AC (fraction 1), WA (fraction below 1), or IE (the checker failed)."""

    verdict: Verdict
    fraction: float = 1.0
    message: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in (Verdict.AC, Verdict.WA, Verdict.IE):
            raise ValueError(f"a checker answers AC, WA or IE, not {self.verdict}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"a checker's fraction must be in [0, 1], not {self.fraction}")
        if (self.verdict is Verdict.AC) != (self.fraction == 1.0) and self.verdict is not Verdict.IE:
            raise ValueError("a checker's verdict is AC exactly when its fraction is 1")
        if self.verdict is Verdict.IE and self.fraction != 0.0:
            raise ValueError("a failed checker awards nothing (fraction 0)")

    @classmethod
    def accepted(cls, message: str | None = None) -> CheckOutcome:
        """The output is right: full points."""
        return cls(Verdict.AC, 1.0, message)

    @classmethod
    def wrong(cls, message: str | None = None, fraction: float = 0.0) -> CheckOutcome:
        """The output is wrong, earning `fraction` (below 1) of the test's points."""
        return cls(Verdict.WA, fraction, message)

    @classmethod
    def failed(cls, message: str) -> CheckOutcome:
        """The checker itself failed: an internal error, not the program's fault."""
        return cls(Verdict.IE, 0.0, message)


@dataclass(frozen=True, kw_only=True)
class Measured:
    """How one run of the program went, as the sandbox measured it.

    Deliberately independent of the sandbox module: whoever runs the test fills this in. The `*_exceeded` flags
    and `oom_killed` say the sandbox enforced a limit; `internal_error` says the run itself failed (not the
    program) and why. `exit_code` is None when the process was killed by `signal`.
    """

    exit_code: int | None = 0
    signal: int | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    memory_bytes: int | None = None
    oom_killed: bool = False
    cpu_exceeded: bool = False
    wall_exceeded: bool = False
    output_exceeded: bool = False
    internal_error: str | None = None


class Decision(NamedTuple):
    """A test's verdict, the fraction of its points it earns, and a short message saying why (or None).

    A named tuple so that `verdict, fraction, message = decide(...)` reads naturally.
    """

    verdict: Verdict
    fraction: float
    message: str | None


def decide(measured: Measured, time_limit_s: float, wall_limit_s: float, checker: CheckOutcome | None) -> Decision:
    """The verdict of one test from its run and, if the run was clean, the checker's outcome.

    In priority order: IE if the run failed internally; TLE if CPU or wall time went past its limit; MLE if the
    kernel killed it for memory; OLE if it printed too much; RE if it was killed by a signal or exited non-zero;
    otherwise the checker decides (AC, WA with a fraction, or IE). `checker` may be None when the run failed,
    since the output of a failed run is not checked; None after a clean run is an internal error.
    """
    if measured.internal_error is not None:
        return Decision(Verdict.IE, 0.0, measured.internal_error)
    if measured.cpu_exceeded or measured.cpu_s > time_limit_s:
        return Decision(Verdict.TLE, 0.0, f"CPU time went past the limit of {time_limit_s:g} s")
    if measured.wall_exceeded or measured.wall_s > wall_limit_s:
        return Decision(
            Verdict.TLE,
            0.0,
            f"wall time went past the limit of {wall_limit_s:g} s (is the program waiting for input or sleeping?)",
        )
    if measured.oom_killed:
        peak = "" if measured.memory_bytes is None else f" (peak {measured.memory_bytes / 2**20:.1f} MiB)"
        return Decision(Verdict.MLE, 0.0, f"killed for using more memory than the limit{peak}")
    if measured.output_exceeded:
        return Decision(Verdict.OLE, 0.0, "the program printed more than the output limit")
    if measured.signal is not None:
        return Decision(Verdict.RE, 0.0, f"killed by signal {_signal_name(measured.signal)}")
    if measured.exit_code is None:
        return Decision(Verdict.IE, 0.0, "the run reported neither an exit code nor a signal")
    if measured.exit_code != 0:
        return Decision(Verdict.RE, 0.0, f"exited with code {measured.exit_code}")
    if checker is None:
        return Decision(Verdict.IE, 0.0, "the output of a clean run was not checked")
    return Decision(checker.verdict, checker.fraction, checker.message)


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signals.Signals(number).name})"
    except ValueError:
        return str(number)


@dataclass(frozen=True)
class TestScore:
    """One test as scoring sees it: its verdict, the points it is worth, and the fraction of them it earned."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    name: str
    verdict: Verdict
    points: float
    fraction: float

    @property
    def earned(self) -> float:
        """Points this test earns on its own: `fraction x points` for AC and WA, nothing otherwise."""
        if self.verdict in (Verdict.AC, Verdict.WA):
            return self.points * self.fraction
        return 0.0


def skipped_result(name: str, points: float) -> TestScore:
    """A test that did not run.

    The runner marks every remaining test SK once a test fails under `stop_on_first_failure`, and every test of a
    group whose dependency failed; both go to `score` through this.
    """
    return TestScore(name, Verdict.SK, points, 0.0)


class GroupSpec(Protocol):
    """What scoring needs of a group of tests (the request's `Group` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def tests(self) -> Sequence[str]: ...

    @property
    def points(self) -> float: ...

    @property
    def depends_on(self) -> Sequence[str]: ...


class GroupResult(BaseModel):
    """How a group of tests did: AC and its points, SK (a dependency failed, or none of its tests ran), or the
    worst verdict among its tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    verdict: Verdict
    score: float


@dataclass(frozen=True)
class Scoring:
    """The score of a submission, the most it could have scored, and how each group did (empty without groups)."""

    score: float
    max_score: float
    groups: list[GroupResult]


def check_groups(test_names: Collection[str] | None, groups: Sequence[GroupSpec]) -> list[str]:
    """The group names in an order where every group comes after its dependencies; ValueError if none exists.

    Refuses duplicate group names, a group without tests, a group naming a test not in `test_names` (unchecked
    when None, e.g. before a problem archive is loaded), a dependency on an unknown group, and dependency cycles,
    naming the cycle. Groups keep the order they were given where their dependencies allow.
    """
    counts = Counter(group.name for group in groups)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"group names must be unique; repeated: {_names(duplicates)}")
    by_name = {group.name: group for group in groups}
    for group in groups:
        if not group.tests:
            raise ValueError(f"group {group.name!r} has no tests")
        if test_names is not None:
            unknown = [test for test in group.tests if test not in test_names]
            if unknown:
                raise ValueError(f"group {group.name!r} names unknown test{_s(unknown)} {_names(unknown)}")
        missing = [dependency for dependency in group.depends_on if dependency not in by_name]
        if missing:
            raise ValueError(f"group {group.name!r} depends on unknown group{_s(missing)} {_names(missing)}")
    cycle = _find_cycle(groups, by_name)
    if cycle:
        raise ValueError(f"groups depend on each other in a cycle: {' -> '.join(cycle)}")
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(groups):  # at most len(groups) passes, each placing at least one group
        for group in groups:
            if group.name not in placed and all(dependency in placed for dependency in group.depends_on):
                order.append(group.name)
                placed.add(group.name)
    return order


def _find_cycle(groups: Sequence[GroupSpec], by_name: dict[str, GroupSpec]) -> list[str] | None:
    """One dependency cycle, as the names along it with the first repeated at the end; None without cycles."""
    done: set[str] = set()
    for start in groups:
        if start.name in done:
            continue
        path: list[str] = [start.name]
        on_path = {start.name: 0}
        stack = [iter(start.depends_on)]
        while stack:
            dependency = next(stack[-1], None)
            if dependency is None:
                stack.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
            elif dependency in on_path:
                return [*path[on_path[dependency] :], dependency]
            elif dependency not in done:
                on_path[dependency] = len(path)
                path.append(dependency)
                stack.append(iter(by_name[dependency].depends_on))
    return None


def score(tests: Sequence[TestScore], groups: Sequence[GroupSpec] = ()) -> Scoring:
    """The score of a submission.

    Without groups, every test earns `fraction x points` (see `TestScore.earned`) and the most is the sum of the
    tests' points. With groups, the tests' own points are ignored: a group earns its `points` only if every one of
    its tests is AC, and the most is the sum of the groups' points. A group whose dependency is not AC is SK and
    earns nothing; so is a group none of whose tests failed but some of which were skipped. Otherwise a group that
    is not AC takes the worst verdict among its tests. Tests in no group earn nothing (e.g. worked examples).
    Scores are rounded to 6 decimals so that sums of fractions read cleanly.
    """
    by_name = {test.name: test for test in tests}
    if len(by_name) != len(tests):
        repeated = sorted(name for name, count in Counter(test.name for test in tests).items() if count > 1)
        raise ValueError(f"test names must be unique; repeated: {_names(repeated)}")
    if not groups:
        return Scoring(
            score=_rounded(math.fsum(test.earned for test in tests)),
            max_score=_rounded(math.fsum(test.points for test in tests)),
            groups=[],
        )
    groups_by_name = {group.name: group for group in groups}
    verdicts: dict[str, Verdict] = {}
    results: dict[str, GroupResult] = {}
    for name in check_groups(by_name.keys(), groups):
        group = groups_by_name[name]
        if any(verdicts[dependency] is not Verdict.AC for dependency in group.depends_on):
            verdict = Verdict.SK
        else:
            verdict = _group_verdict([by_name[test].verdict for test in group.tests])
        verdicts[name] = verdict
        results[name] = GroupResult(name=name, verdict=verdict, score=group.points if verdict is Verdict.AC else 0.0)
    return Scoring(
        score=_rounded(math.fsum(result.score for result in results.values())),
        max_score=_rounded(math.fsum(group.points for group in groups)),
        groups=[results[group.name] for group in groups],
    )


def _group_verdict(verdicts: list[Verdict]) -> Verdict:
    if all(verdict is Verdict.AC for verdict in verdicts):
        return Verdict.AC
    failed = worst(verdict for verdict in verdicts if verdict is not Verdict.AC)
    return failed or Verdict.SK


def _rounded(value: float) -> float:
    return round(value, 6)


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _s(items: Sized) -> str:
    return "" if len(items) == 1 else "s"
