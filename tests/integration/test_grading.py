"""Grading real programs on the real engine: every verdict, every checker, groups, problem archives, isolation
between tests, every shipped language, gVisor, and kills.

Most gradings here run many tests whose input picks what the program does, so one compile and one sandbox cover
many cases; independent gradings run concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hatchway.errors import InvalidRequest
from hatchway.grading.service import GradeResult
from hatchway.judge.report import TestResult
from hatchway.judge.request import GradeRequest
from hatchway.judge.verdicts import Verdict
from hatchway.models import JobState, Stream
from hatchway.settings import Settings
from hatchway.worker.worker import Worker
from tests.integration.conftest import make_settings, wait_for_state

pytestmark = pytest.mark.docker

MIB = 1024 * 1024
FINAL_S = 240

# One C program, many behaviours: the first word of its input says what to do.
C_MODES = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void litter(const char *path) { FILE *f = fopen(path, "w"); if (f) { fputs("left behind\n", f); fclose(f); } }

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    char mode[64] = "";
    if (scanf("%63s", mode) != 1) return 2;
    if (!strcmp(mode, "sum")) {
        long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 2;
        printf("%ld\n", a + b); return 0;
    }
    if (!strcmp(mode, "wrong")) { puts("42"); return 0; }
    if (!strcmp(mode, "spin")) { volatile unsigned long n = 0; for (;;) n++; }
    if (!strcmp(mode, "burn")) {  /* a fixed amount of CPU time, then an answer */
        double seconds; if (scanf("%lf", &seconds) != 1) return 2;
        volatile unsigned long n = 0; while (cpu_seconds() < seconds) n++;
        puts("burnt"); return 0;
    }
    if (!strcmp(mode, "sleep")) { sleep(60); return 0; }
    if (!strcmp(mode, "hog")) {  /* allocate and touch this many MiB */
        size_t mb; if (scanf("%zu", &mb) != 1) return 2;
        for (size_t i = 0; i < mb; i++) { char *p = malloc(1 << 20); if (!p) return 4; memset(p, 1, 1 << 20); }
        puts("survived"); return 0;
    }
    if (!strcmp(mode, "flood")) { static char line[1024]; memset(line, 'x', sizeof line - 1); for (;;) puts(line); }
    if (!strcmp(mode, "exit3")) return 3;
    if (!strcmp(mode, "segv")) { raise(SIGSEGV); return 0; }
    if (!strcmp(mode, "null")) { volatile int *p = NULL; return *p; }
    if (!strcmp(mode, "forkbomb")) { for (;;) fork(); }
    if (!strcmp(mode, "daemon")) {  /* double fork and setsid: the grandchild spins on, detached */
        if (fork() == 0) { setsid(); if (fork() == 0) { volatile unsigned long n = 0; for (;;) n++; } _exit(0); }
        puts("detached"); return 0;
    }
    if (!strcmp(mode, "litter")) { litter("mark"); litter("/tmp/mark"); puts("written"); return 0; }
    if (!strcmp(mode, "look")) {  /* what an earlier run left: files, and processes besides PID 1 and me */
        int others = 0; DIR *d = opendir("/proc"); struct dirent *e; pid_t me = getpid();
        while (d && (e = readdir(d))) { int pid = atoi(e->d_name); if (pid > 1 && pid != me) others++; }
        if (d) closedir(d);
        printf("cwd:%s tmp:%s others:%d\n", access("mark", F_OK) ? "clean" : "dirty",
               access("/tmp/mark", F_OK) ? "clean" : "dirty", others);
        return 0;
    }
    return 9;
}
"""

PY_MODES = r"""
import os, signal, sys, time
words = sys.stdin.read().split()
mode = words[0]
if mode == "sum":
    print(int(words[1]) + int(words[2]))
elif mode == "wrong":
    print(42)
elif mode == "spin":
    while True:
        pass
elif mode == "sleep":
    time.sleep(60)
elif mode == "hog":
    chunks = [b"x" * (1 << 20) for _ in range(int(words[1]))]
    print("survived")
elif mode == "flood":
    line = "x" * 1023 + "\n"
    while True:
        sys.stdout.write(line)
elif mode == "exit3":
    sys.exit(3)
elif mode == "kill9":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "abort":
    os.abort()
else:
    sys.exit(9)
"""

PY_SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
PY_ECHO = "import sys\nsys.stdout.write(sys.stdin.read())\n"
PY_SLOW = "import time\ntime.sleep(float(input()))\nprint('done')\n"

SUMS: dict[str, str] = {
    "python": PY_SUM,
    "c": '#include <stdio.h>\nint main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\\n", a + b); }\n',
    "cpp": "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n",
    "javascript": (
        'const [a, b] = require("fs").readFileSync(0, "utf8").trim().split(/\\s+/).map(Number);\nconsole.log(a + b);\n'
    ),
    "rust": (
        "use std::io::Read;\n"
        "fn main() {\n"
        "    let mut s = String::new();\n"
        "    std::io::stdin().read_to_string(&mut s).unwrap();\n"
        "    let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();\n"
        '    println!("{}", v[0] + v[1]);\n'
        "}\n"
    ),
    "java": (
        "import java.util.Scanner;\n"
        "public class Main {\n"
        "    public static void main(String[] args) {\n"
        "        Scanner in = new Scanner(System.in);\n"
        "        System.out.println(in.nextLong() + in.nextLong());\n"
        "    }\n"
        "}\n"
    ),
    "go": (
        'package main\n\nimport "fmt"\n\nfunc main() {\n\tvar a, b int64\n\tfmt.Scan(&a, &b)\n\tfmt.Println(a + b)\n}\n'
    ),
}

# Reads argv[1..3] = input, expected, output. Accepts an echo of the input when the expected output says
# "echoed"; "half" earns half the points; "broken" exits 3 (the checker's own failure).
PY_CHECKER = r"""
import sys
test_input, expected, output = (open(path).read() for path in sys.argv[1:4])
word = test_input.split()[0]
if word == "half":
    print("half marks")
    print("points=0.5")
elif word == "broken":
    sys.exit(3)
elif output == test_input and expected == "echoed\n":
    print(f"echoed {len(output)} bytes")
else:
    print(f"not an echo of {test_input!r} (expected says {expected!r})")
    sys.exit(1)
"""

C_CHECKER = r"""
#include <stdio.h>
#include <string.h>
static size_t slurp(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "rb"); if (!f) return (size_t)-1;
    size_t n = fread(buf, 1, size, f); fclose(f); return n;
}
int main(int argc, char **argv) {
    static char expected[4096], output[4096];
    if (argc != 4) return 2;
    size_t e = slurp(argv[2], expected, sizeof expected), o = slurp(argv[3], output, sizeof output);
    if (e == (size_t)-1 || o == (size_t)-1) return 2;
    if (e == o && !memcmp(expected, output, e)) { puts("same bytes"); return 0; }
    puts("different bytes");
    return 1;
}
"""


def case(name: str, test_input: str, expected: str = "", **fields: Any) -> dict[str, Any]:
    return {"name": name, "input": test_input, "expected_output": expected, **fields}


@pytest.fixture
def worker_settings(tmp_path: Path, worker_id: str, request: pytest.FixtureRequest) -> Settings:
    """Four gradings at once, and problem archives from this test's directory; a test may add more settings."""
    values: dict[str, Any] = {"max_concurrent_jobs": 4, "bundle_allowed_urls": [f"file://{tmp_path}/*"]}
    values.update(getattr(request, "param", {}))
    return make_settings(tmp_path, worker_id, **values)


async def grade(worker: Worker, **fields: Any) -> GradeResult:
    """Submit a grading and return it once it has ended."""
    submitted, created = await worker.parts.grades.submit(GradeRequest.model_validate(fields))
    assert created
    final = await worker.parts.grades.wait_final(submitted.id, FINAL_S)
    assert final.state.is_final, f"the grading did not end: {final}"
    return final


def by_name(result: GradeResult) -> dict[str, TestResult]:
    return {test.name: test for test in result.tests}


def verdicts(result: GradeResult) -> dict[str, Verdict]:
    return {test.name: test.verdict for test in result.tests}


def seconds(test: TestResult) -> tuple[float, float]:
    assert test.time_s is not None and test.wall_s is not None, test
    return test.time_s, test.wall_s


def peak(test: TestResult) -> int:
    assert test.memory_bytes is not None, test
    return test.memory_bytes


def write_problem(path: Path, files: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return f"file://{path}"


# Verdicts

# CPU limit 0.5 s with a wide wall limit, so a busy loop is stopped by CPU time even on a loaded machine.
VERDICT_LIMITS = {"time_limit_s": 0.5, "wall_limit_s": 10, "memory_mb": 64, "output_bytes": 10_000}
SIGNALS = {"c": {"segv": 11, "null": 11}, "python": {"kill9": 9, "abort": 6}}


@pytest.mark.parametrize("language", ["c", "python"])
async def test_every_verdict_from_a_real_program(worker: Worker, language: str) -> None:
    code = C_MODES if language == "c" else PY_MODES
    signalled = SIGNALS[language]
    tests = [
        case("ac", "sum 2 3\n", "5\n"),
        case("wa", "wrong\n", "5\n"),
        case("cpu", "spin\n"),
        # CPU time to spare, so that memory is the one limit it can reach, however slow its page faults are.
        case("memory", "hog 512\n", time_limit_s=5),
        case("output", "flood\n"),
        case("exit", "exit3\n"),
        *(case(name, f"{name}\n") for name in signalled),
    ]
    broken = "int main(void) { return 0 }\n" if language == "c" else "def broken(:\n    pass\n"
    result, sleeper, syntax = await asyncio.gather(
        grade(worker, language=language, code=code, tests=tests, limits=VERDICT_LIMITS),
        grade(
            worker,
            language=language,
            code=code,
            tests=[case("sleep", "sleep\n")],
            limits={"time_limit_s": 0.5, "wall_limit_s": 1},
        ),
        grade(worker, language=language, code=broken, tests=[case("1", "", "x\n"), case("2", "", "y\n")]),
    )

    assert result.state is JobState.SUCCEEDED, result
    assert verdicts(result) == {
        "ac": Verdict.AC,
        "wa": Verdict.WA,
        "cpu": Verdict.TLE,
        "memory": Verdict.MLE,
        "output": Verdict.OLE,
        "exit": Verdict.RE,
        **dict.fromkeys(signalled, Verdict.RE),
    }
    assert (result.verdict, result.score, result.max_score, result.passed, result.total) == (
        Verdict.TLE,
        1,
        len(tests),
        1,
        len(tests),
    )
    tests_run = by_name(result)
    ac = tests_run["ac"]
    assert (ac.points, ac.output, ac.exit_code) == (1.0, "5\n", 0)
    assert seconds(ac)[0] < 0.5 and 0 < peak(ac) < 64 * MIB
    assert tests_run["wa"].checker_message == "line 1: expected '5', got '42'"
    cpu_s, _ = seconds(tests_run["cpu"])
    assert cpu_s >= 0.5, "stopped for CPU time only once it had used the limit"
    assert "CPU time" in (tests_run["cpu"].checker_message or "")
    memory = tests_run["memory"]
    assert 56 * MIB <= peak(memory) <= 66 * MIB, f"the peak is near the 64 MiB limit: {peak(memory) / MIB:.1f} MiB"
    assert "memory" in (memory.checker_message or "")
    assert tests_run["output"].output.startswith("x" * 100)
    assert (tests_run["exit"].exit_code, tests_run["exit"].signal) == (3, None)
    for name, number in signalled.items():
        assert (tests_run[name].signal, tests_run[name].exit_code) == (number, None), tests_run[name]
        assert f"signal {number}" in (tests_run[name].checker_message or "")

    slept = sleeper.tests[0]
    assert (sleeper.verdict, slept.verdict) == (Verdict.TLE, Verdict.TLE)
    cpu_s, wall_s = seconds(slept)
    assert 1.0 <= wall_s < 5 and cpu_s < 0.5, slept
    assert "wall time" in (slept.checker_message or "")

    # A build error (for Python, a syntax error found by compiling to bytecode) is CE: the submission never ran,
    # so every test is skipped.
    assert (syntax.state, syntax.verdict, syntax.score, syntax.passed) == (JobState.SUCCEEDED, Verdict.CE, 0, 0)
    assert syntax.compile is not None and syntax.compile.exit_code != 0
    assert ("error" if language == "c" else "SyntaxError") in syntax.compile.output
    assert [test.verdict for test in syntax.tests] == [Verdict.SK, Verdict.SK]


# Checkers


async def test_every_checker(worker: Worker) -> None:
    def echoes(checker: dict[str, Any], *tests: dict[str, Any]) -> Any:
        return grade(worker, language="python", code=PY_ECHO, checker=checker, tests=list(tests))

    exact, lines, tokens, floats, unordered, custom, custom_c = await asyncio.gather(
        echoes(
            {"type": "exact"},
            case("same", "1 2\n", "1 2\n"),
            case("no-newline", "1 2", "1 2\n"),
            case("trailing-space", "1 2 \n", "1 2\n"),
        ),
        echoes(
            {"type": "lines"},
            case("same", "a b\nc\n", "a b\nc\n"),
            case("trailing-space", "a b  \nc\t\n", "a b\nc\n"),
            case("trailing-lines", "a b\nc\n\n\n", "a b\nc"),
            case("crlf", "a b\r\nc\r\n", "a b\nc\n"),
            case("inner-space", "a  b\nc\n", "a b\nc\n"),
            case("missing-line", "a b\n", "a b\nc\n"),
        ),
        echoes(
            {"type": "tokens"},
            case("spacing", "1   2\n\n3 ", "1 2 3\n"),
            case("other-token", "1 2 4\n", "1 2 3\n"),
            case("extra-token", "1 2 3 4\n", "1 2 3\n"),
        ),
        echoes(
            {"type": "float", "abs_tol": 0.01, "rel_tol": 0.001},
            case("within-abs", "3.14159\n", "3.14\n"),
            case("within-rel", "1000.5\n", "1000\n"),
            case("outside-both", "3.2\n", "3.14\n"),
            case("not-a-number", "pi\n", "3.14\n"),
        ),
        echoes(
            {"type": "unordered"},
            case("permuted", "c\na\nb\n", "a\nb\nc\n"),
            case("missing", "a\nb\n", "a\nb\nc\n"),
            case("counts-differ", "a\na\nb\n", "a\nb\nb\n"),
        ),
        echoes(
            {"type": "custom", "language": "python", "code": PY_CHECKER},
            case("accepted", "hello\n", "echoed\n"),
            case("refused", "hello\n", "something else\n"),
            case("half", "half\n", "echoed\n", points=2),
            case("broken", "broken\n", "echoed\n"),
        ),
        echoes(
            {"type": "custom", "language": "c", "code": C_CHECKER},
            case("same", "x\n", "x\n"),
            case("different", "x\n", "y\n"),
        ),
    )

    assert verdicts(exact) == {"same": Verdict.AC, "no-newline": Verdict.WA, "trailing-space": Verdict.WA}
    assert verdicts(lines) == {
        "same": Verdict.AC,
        "trailing-space": Verdict.AC,
        "trailing-lines": Verdict.AC,
        "crlf": Verdict.AC,
        "inner-space": Verdict.WA,
        "missing-line": Verdict.WA,
    }
    assert verdicts(tokens) == {"spacing": Verdict.AC, "other-token": Verdict.WA, "extra-token": Verdict.WA}
    assert verdicts(floats) == {
        "within-abs": Verdict.AC,
        "within-rel": Verdict.AC,
        "outside-both": Verdict.WA,
        "not-a-number": Verdict.WA,
    }
    assert "tolerance" in (by_name(floats)["outside-both"].checker_message or "")
    assert verdicts(unordered) == {"permuted": Verdict.AC, "missing": Verdict.WA, "counts-differ": Verdict.WA}
    assert "missing line 'c'" in (by_name(unordered)["missing"].checker_message or "")

    assert verdicts(custom) == {
        "accepted": Verdict.AC,
        "refused": Verdict.WA,
        "half": Verdict.WA,
        "broken": Verdict.IE,
    }
    checked = by_name(custom)
    assert checked["accepted"].checker_message == "echoed 6 bytes", "argv[1] is the input, argv[3] the output"
    assert checked["refused"].checker_message == "not an echo of 'hello\\n' (expected says 'something else\\n')"
    assert (checked["half"].checker_message, checked["half"].points) == ("half marks", 1.0)
    assert "exited 3" in (checked["broken"].checker_message or "")
    assert (custom.state, custom.verdict, custom.score, custom.max_score) == (JobState.SUCCEEDED, Verdict.IE, 2, 5)

    assert verdicts(custom_c) == {"same": Verdict.AC, "different": Verdict.WA}
    assert [test.checker_message for test in custom_c.tests] == ["same bytes", "different bytes"]


# Scoring


async def test_a_failed_group_skips_the_groups_that_depend_on_it(worker: Worker) -> None:
    tests = [
        case("1", "1 1\n", "2\n"),
        case("2", "2 2\n", "4\n"),
        case("3", "3 3\n", "7\n"),  # wrong expected output: group "b" fails
        case("4", "4 4\n", "8\n"),
        case("5", "5 5\n", "10\n"),
    ]
    groups = [
        {"name": "a", "tests": ["1", "2"], "points": 20},
        {"name": "b", "tests": ["3"], "points": 30},
        {"name": "c", "tests": ["4"], "points": 40, "depends_on": ["b"]},
        {"name": "d", "tests": ["5"], "points": 10, "depends_on": ["a"]},
    ]
    result = await grade(worker, language="python", code=PY_SUM, tests=tests, groups=groups)
    assert result.state is JobState.SUCCEEDED
    assert [(group.name, group.verdict, group.score) for group in result.groups] == [
        ("a", Verdict.AC, 20),
        ("b", Verdict.WA, 0),
        ("c", Verdict.SK, 0),
        ("d", Verdict.AC, 10),
    ]
    assert (result.score, result.max_score, result.verdict) == (30, 100, Verdict.WA)
    assert verdicts(result)["3"] is Verdict.WA


async def test_stop_on_first_failure_skips_the_remaining_tests(worker: Worker) -> None:
    tests = [case("1", "1 1\n", "2\n"), case("2", "2 2\n", "5\n"), case("3", "3 3\n", "6\n"), case("4", "0 0\n", "0\n")]
    stopped, all_run = await asyncio.gather(
        grade(worker, language="python", code=PY_SUM, tests=tests, stop_on_first_failure=True),
        grade(worker, language="python", code=PY_SUM, tests=tests),
    )
    assert [test.verdict for test in stopped.tests] == [Verdict.AC, Verdict.WA, Verdict.SK, Verdict.SK]
    assert stopped.tests[2].time_s is None, "a skipped test never ran"
    assert (stopped.verdict, stopped.score, stopped.max_score, stopped.passed, stopped.total) == (
        Verdict.WA,
        1,
        4,
        1,
        4,
    )
    assert [test.verdict for test in all_run.tests] == [Verdict.AC, Verdict.WA, Verdict.AC, Verdict.AC]
    assert (all_run.score, all_run.passed) == (3, 3)


# Problem archives and the grader pool's shape


async def test_a_problem_archive_is_graded_in_natural_order(worker: Worker, tmp_path: Path) -> None:
    files = {"statement.md": "Add two numbers.\n"}
    for i in range(1, 11):
        files[f"in/{i}.in"] = f"{i} {i * 10}\n"
        files[f"out/{i}.out"] = f"{i * 11}\n"
    url = write_problem(tmp_path / "problem.zip", files)
    result = await grade(worker, language="python", code=PY_SUM, problem_url=url)
    assert (result.state, result.verdict, result.score, result.max_score) == (JobState.SUCCEEDED, Verdict.AC, 10, 10)
    assert [test.name for test in result.tests] == [str(i) for i in range(1, 11)]
    assert [test.output for test in result.tests] == [f"{i * 11}\n" for i in range(1, 11)]


async def test_a_problem_archive_without_matching_pairs_is_refused_naming_the_files(
    worker: Worker, tmp_path: Path
) -> None:
    url = write_problem(
        tmp_path / "broken.zip", {"in/1.in": "1 1\n", "in/2.in": "2 2\n", "out/1.out": "2\n", "out/3.out": "6\n"}
    )
    with pytest.raises(InvalidRequest) as refused:
        await worker.parts.grades.submit(GradeRequest(language="python", code=PY_SUM, problem_url=url))
    assert "in/2.in" in str(refused.value) and "out/3.out" in str(refused.value)


@pytest.mark.parametrize("worker_settings", [{"max_concurrent_jobs": 1}], indirect=True)
async def test_an_archive_changed_after_submission_is_graded_as_it_was_checked(worker: Worker, tmp_path: Path) -> None:
    # One grading at a time: the archive is checked at submission, then broken while its grading waits in line. The
    # grading runs with what was checked (pinned by its sha256, from the cache), without fetching the URL again.
    blocker, _ = await worker.parts.grades.submit(
        GradeRequest(language="python", code=PY_SLOW, tests=[case("1", "60\n", "done\n")], limits={"wall_limit_s": 90})
    )
    await wait_for_state(worker, blocker.id, JobState.RUNNING)
    archive = tmp_path / "problem.zip"
    url = write_problem(archive, {"in/1.in": "1 1\n", "out/1.out": "2\n"})
    checked = hashlib.sha256(archive.read_bytes()).hexdigest()
    queued, _ = await worker.parts.grades.submit(GradeRequest(language="python", code=PY_SUM, problem_url=url))
    assert queued.state is JobState.QUEUED
    write_problem(archive, {"in/1.in": "1 1\n", "in/2.in": "2 2\n", "out/1.out": "2\n", "out/3.out": "6\n"})
    assert (await worker.parts.grades.kill(blocker.id, 0)).state is JobState.KILLED

    graded = await worker.parts.grades.wait_final(queued.id, FINAL_S)
    assert (graded.state, graded.verdict) == (JobState.SUCCEEDED, Verdict.AC)
    assert [test.name for test in graded.tests] == ["1"]
    job = await worker.jobs.get(queued.id)
    assert job.spec.grade is not None and job.spec.grade.problem_sha256 == checked
    assert job.run.bundle_cached is True, "taken from the cache, not fetched again"


async def test_the_grader_pools_request_shape(worker: Worker) -> None:
    request = GradeRequest.model_validate(
        {
            "challengeId": "c-1",
            "language": "python",
            "code": PY_SUM,
            "testCases": [{"input": "1 2\n", "expectedOutput": "3\n"}, {"input": "5 5\n", "expectedOutput": "10\n"}],
        }
    )
    submitted, _ = await worker.parts.grades.submit(request)
    result = await worker.parts.grades.wait_final(submitted.id, FINAL_S)
    assert (result.state, result.verdict, result.passed, result.total) == (JobState.SUCCEEDED, Verdict.AC, 2, 2)
    assert [test.name for test in result.tests] == ["1", "2"]
    assert (await worker.jobs.get(submitted.id)).labels == {"challenge": "c-1"}


# Isolation between tests in the one sandbox

CLEAN = "cwd:clean tmp:clean others:0\n"
# A bomb is stopped by whichever of its limits it reaches first, which the machine's load decides: a fork bomb
# spins through its CPU time and fills its memory with processes; a hog on gVisor, whose page faults are slow,
# can run out of CPU time before it reaches its memory. Either is a right verdict.
STOPPED_BY_A_LIMIT = {Verdict.TLE, Verdict.MLE}


@pytest.mark.parametrize("runtime", ["docker", "gvisor"])
async def test_what_one_test_does_does_not_reach_the_next(worker: Worker, runtime: str) -> None:
    tests = [
        case("forkbomb", "forkbomb\n"),
        case("after-forkbomb", "look\n", CLEAN),
        case("memory-bomb", "hog 1024\n"),
        case("after-memory-bomb", "look\n", CLEAN),
        case("daemon", "daemon\n", "detached\n"),
        case("after-daemon", "look\n", CLEAN),
        case("litter", "litter\n", "written\n"),
        case("after-litter", "look\n", CLEAN),
    ]
    result = await grade(
        worker,
        language="c",
        code=C_MODES,
        tests=tests,
        limits={"time_limit_s": 0.5, "wall_limit_s": 3, "memory_mb": 64},
        runtime=runtime,
    )
    assert result.state is JobState.SUCCEEDED, f"{result.state}: {result.message}"
    assert (await worker.jobs.get(result.id)).engine == runtime
    # What the test is about: each test after one that misbehaved is AC, fast and clean. The misbehaving ones
    # are stopped by a limit (which one, the load decides) or, leaving a daemon or litter, end normally.
    seen = verdicts(result)
    bombs = {name: seen.pop(name) for name in ("forkbomb", "memory-bomb")}
    assert all(verdict in STOPPED_BY_A_LIMIT for verdict in bombs.values()), bombs
    assert seen == {
        "after-forkbomb": Verdict.AC,
        "after-memory-bomb": Verdict.AC,
        "daemon": Verdict.AC,
        "after-daemon": Verdict.AC,
        "litter": Verdict.AC,
        "after-litter": Verdict.AC,
    }, [(test.name, test.verdict, test.checker_message, test.output) for test in result.tests]
    for test in result.tests:
        if test.name.startswith("after-"):
            cpu_s, wall_s = seconds(test)
            assert cpu_s < 0.5 and wall_s < 0.5, f"{test.name} was slowed by what came before: {test}"
            assert peak(test) < 16 * MIB, test


# Languages and runtimes


@pytest.mark.parametrize("language", sorted(SUMS))
async def test_every_shipped_language_grades_a_plus_b(worker: Worker, language: str) -> None:
    tests = [case("1", "1 2\n", "3\n"), case("2", "40 2\n", "42\n"), case("3", "-5 5\n", "0\n")]
    result = await grade(worker, language=language, code=SUMS[language], tests=tests)
    assert (result.state, result.verdict, result.passed) == (JobState.SUCCEEDED, Verdict.AC, 3), result
    compiled = worker.parts.grades.profiles[language].compile is not None
    assert (result.compile is not None) == compiled
    if result.compile is not None:
        assert result.compile.exit_code == 0, result.compile.output


async def test_grading_on_gvisor_keeps_its_verdicts_and_limits(worker: Worker) -> None:
    limits = {"time_limit_s": 0.5, "wall_limit_s": 10, "memory_mb": 64}
    # gVisor's page faults are slow and its memory is sampled, not enforced by a cgroup: the hog gets CPU time
    # enough to reach its limit, or a loaded machine makes it TLE first.
    tests = [case("ac", "sum 2 3\n", "5\n"), case("cpu", "spin\n"), case("memory", "hog 512\n", time_limit_s=5)]
    results = await asyncio.gather(
        *(
            grade(worker, language=language, code=code, tests=tests, limits=limits, runtime="gvisor")
            for language, code in (("c", C_MODES), ("python", PY_MODES))
        )
    )
    for result in results:
        assert result.state is JobState.SUCCEEDED, result
        assert verdicts(result) == {"ac": Verdict.AC, "cpu": Verdict.TLE, "memory": Verdict.MLE}, result
        assert (await worker.jobs.get(result.id)).engine == "gvisor"
        tests_run = by_name(result)
        assert seconds(tests_run["cpu"])[0] >= 0.5
        # gVisor has no per-run cgroup: memory is sampled, so a fast allocation passes the limit before the kill
        # (up to 155 MiB of 64 seen on a loaded machine); the sandbox's host limit still bounds it.
        assert 48 * MIB <= peak(tests_run["memory"]) <= 64 * MIB + 512 * MIB, tests_run["memory"]


# Kills


async def test_killing_a_grading_mid_test_stops_it(worker: Worker) -> None:
    tests = [case("quick", "0\n", "done\n"), case("slow", "60\n", "done\n"), case("slower", "60\n", "done\n")]
    submitted, _ = await worker.parts.grades.submit(
        GradeRequest(language="python", code=PY_SLOW, tests=tests, limits={"wall_limit_s": 90})
    )
    await wait_for_state(worker, submitted.id, JobState.RUNNING)
    # Wait for the first test's result line: the second, sleeping test is then under way.
    capture = worker.jobs.capture(submitted.id)
    assert capture is not None
    async with asyncio.timeout(60):
        while True:
            changed = capture.next_change()
            if "test quick: AC" in capture.text(Stream.STDOUT):
                break
            await changed.wait()
    began = asyncio.get_running_loop().time()
    killed = await worker.parts.grades.kill(submitted.id, 0)
    assert killed.state is JobState.KILLED
    assert asyncio.get_running_loop().time() - began < 15, "the sleeping test was stopped, not waited for"
    assert [(test.name, test.verdict) for test in killed.tests] == [("quick", Verdict.AC)]
    assert killed.verdict is None


# Per-test limits and multi-file submissions


async def test_a_tests_own_limits_replace_the_requests(worker: Worker) -> None:
    tests = [
        case("more-time", "burn 1\n", "burnt\n", time_limit_s=3),
        case("request-time", "burn 1\n", "burnt\n"),
        case("more-memory", "hog 100\n", "survived\n", memory_mb=200),
        # The request's memory, with CPU time to spare: memory is the one limit it can reach.
        case("request-memory", "hog 100\n", "survived\n", time_limit_s=5),
    ]
    result = await grade(worker, language="c", code=C_MODES, tests=tests, limits={"time_limit_s": 0.5, "memory_mb": 64})
    assert verdicts(result) == {
        "more-time": Verdict.AC,
        "request-time": Verdict.TLE,
        "more-memory": Verdict.AC,
        "request-memory": Verdict.MLE,
    }, result
    tests_run = by_name(result)
    assert seconds(tests_run["more-time"])[0] >= 1.0
    assert peak(tests_run["more-memory"]) >= 100 * MIB


async def test_a_submission_of_several_files_runs_its_main(worker: Worker) -> None:
    tests = [case("1", "1 2\n", "3\n"), case("2", "20 22\n", "42\n")]
    python, c = await asyncio.gather(
        grade(
            worker,
            language="python",
            files={
                "app.py": "from pkg.helper import add\na, b = map(int, input().split())\nprint(add(a, b))\n",
                "pkg/helper.py": "def add(a, b):\n    return a + b\n",
                "main.py": "raise SystemExit('not the entry point')\n",
            },
            main="app.py",
            tests=tests,
        ),
        grade(
            worker,
            language="c",
            files={
                "src/prog.c": '#include <stdio.h>\n#include "lib/add.h"\n'
                'int main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\\n", add(a, b)); }\n',
                "src/lib/add.h": "static long add(long a, long b) { return a + b; }\n",
            },
            main="src/prog.c",
            tests=tests,
        ),
    )
    for result in (python, c):
        assert (result.state, result.verdict, result.passed) == (JobState.SUCCEEDED, Verdict.AC, 2), result
