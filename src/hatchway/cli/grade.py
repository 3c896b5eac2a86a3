"""`hatchway grade`: judge local source files against a folder or archive of tests on a running worker, and
print a verdict table. Exits 0 only when the verdict is AC."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hatchway.cli import output
from hatchway.cli.client import Remote, call, follow, remote
from hatchway.cli.exits import UsageError

_MAX_UNPACKED_BYTES = 1024**3
_MAX_FILES = 100_000
EXIT_NOT_ACCEPTED = 1

if TYPE_CHECKING:
    from rich.text import Text


def add_grade_command(commands: Any, remote_options: argparse.ArgumentParser) -> None:
    """Register `grade` on the top-level parser's subcommands."""
    parser = commands.add_parser(
        "grade",
        parents=[remote_options],
        help="judge source files against tests on a running worker; exit 0 only on AC",
        description="Tests are a folder or a .zip/.tar(.gz) in the judge's layout: in/NAME.in and out/NAME.out.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="the submission's source file(s)")
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--language", "-l", help="a language profile (see `hatchway profiles list`)")
    chosen.add_argument("--tool", help="a build tool mapped to a profile, e.g. cargo")
    parser.add_argument("--tests", "-t", type=Path, required=True, metavar="DIR|ARCHIVE")
    parser.add_argument("--main", help="with several files: the entry point")
    parser.add_argument("--checker", choices=["exact", "lines", "tokens", "float", "unordered"], default="lines")
    parser.add_argument("--time-limit-s", type=float)
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--runtime", choices=["docker", "gvisor", "auto"], default="auto")
    parser.add_argument("--stop-on-first-failure", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the grading as JSON instead of a table")
    parser.set_defaults(handler=_grade)


def _grade(args: argparse.Namespace) -> int:
    worker = remote(args)
    body = request_body(args)
    if output.is_terminal(sys.stderr):
        result = _grade_with_progress(worker, body)
    else:
        result = call("POST", worker, "/grade", json=body, params={"wait": "true"})
        result = _until_final(worker, result)
    if args.json:
        output.print_json(result)
    else:
        print_table(result)
    return 0 if result.get("verdict") == "AC" else EXIT_NOT_ACCEPTED


def _grade_with_progress(worker: Remote, body: dict[str, Any]) -> dict[str, Any]:
    """Submit, and show a bar of the tests run so far (the grading's log has a line per test) until it ends."""
    result = call("POST", worker, "/grade", json=body)
    total = len(body.get("tests") or []) or None
    with output.StatusLine("compiling", total=total) as status:
        pending = ""
        for text in follow(worker, result["id"], "stdout"):
            pending += text
            *lines, pending = pending.split("\n")
            if lines:
                status.update("testing", advance=len(lines))
    return _until_final(worker, result)


def _until_final(worker: Remote, result: dict[str, Any]) -> dict[str, Any]:
    pause_s = 0.05
    while result.get("state") not in ("succeeded", "failed", "killed"):
        time.sleep(pause_s)  # a client has no event to wait on; a waiting POST answers after max_wait_s at most
        pause_s = min(pause_s * 2, 1.0)
        result = call("GET", worker, f"/grade/{result['id']}")
    return result


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /grade body for the command line's files and tests."""
    from pydantic import ValidationError

    from hatchway.judge.request import GradeRequest

    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path} is not a file")
    sources = {path.name: path.read_text() for path in args.files}
    fields: dict[str, Any] = {
        "language": args.language,
        "tool": args.tool,
        "tests": read_tests(args.tests),
        "checker": {"type": args.checker},
        "runtime": args.runtime,
        "stop_on_first_failure": args.stop_on_first_failure,
        "limits": {
            key: value
            for key, value in (("time_limit_s", args.time_limit_s), ("memory_mb", args.memory_mb))
            if value is not None
        },
    }
    if len(sources) == 1 and args.main is None:
        fields["code"] = next(iter(sources.values()))
    else:
        fields["files"] = sources
        fields["main"] = args.main
    try:
        return GradeRequest.model_validate(fields).model_dump(mode="json", exclude_none=True, by_alias=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid grading: {problems}") from exc


def read_tests(path: Path) -> list[dict[str, str]]:
    """The tests of a problem folder or archive, in natural name order, as inline tests."""
    from hatchway.bundles import unpack
    from hatchway.errors import BadBundle, ProblemError

    try:
        if path.is_dir():
            return _inline(path)
        if not path.is_file():
            raise UsageError(f"{path} is neither a folder nor an archive of tests")
        with tempfile.TemporaryDirectory(prefix="hatchway-tests-") as scratch:
            root = Path(scratch) / "problem"
            unpack(path, root, max_total_bytes=_MAX_UNPACKED_BYTES, max_files=_MAX_FILES)
            return _inline(root)
    except (ProblemError, BadBundle) as exc:
        raise UsageError(f"{path}: {exc}") from exc


def _inline(root: Path) -> list[dict[str, str]]:
    from hatchway.judge.problem import load_problem

    return [
        {"name": test.name, "input": test.input_path.read_text(), "expected_output": test.expected_path.read_text()}
        for test in load_problem(root)
    ]


def print_table(result: dict[str, Any], out: IO[str] | None = None) -> None:
    """The verdict of every test (coloured on a terminal), then a summary line: verdict, tests passed, score and
    the CPU time the tests took."""
    stream = sys.stdout if out is None else out
    compiled = result.get("compile")
    if result.get("verdict") == "CE" and compiled:
        stream.write(f"compilation failed (exit {compiled.get('exit_code')}):\n{compiled.get('output', '')}\n")
    tests = result.get("tests", [])
    if tests:
        output.print_table(
            ("TEST", "VERDICT", "TIME", "MEMORY", "POINTS", "MESSAGE"),
            (
                (
                    test["name"],
                    _verdict(test["verdict"]),
                    "" if test.get("time_s") is None else f"{test['time_s']:.3f}s",
                    "" if test.get("memory_bytes") is None else f"{test['memory_bytes'] / 2**20:.1f}MiB",
                    f"{test.get('points', 0):g}",
                    (test.get("checker_message") or "").split("\n")[0],
                )
                for test in tests
            ),
            stream,
        )
    for group in result.get("groups", []):
        stream.write(f"group {group['name']}: {group['verdict']} {group['score']:g}\n")
    output.print_line(summary(result), stream)


def summary(result: dict[str, Any]) -> Text:
    """`WA  7/10 tests passed, score 70/100, 1.23 s CPU`, the verdict coloured."""
    cpu_s = sum(test.get("time_s") or 0 for test in result.get("tests", []))
    line = _verdict(result.get("verdict") or result.get("state") or "?")
    line.append(
        f"  {result.get('passed', 0)}/{result.get('total', 0)} tests passed"
        f", score {result.get('score', 0):g}/{result.get('max_score', 0):g}, {cpu_s:.2f} s CPU"
        + (f" ({result['message']})" if result.get("message") else "")
    )
    return line


def _verdict(verdict: str) -> Text:
    return output.styled(verdict, output.VERDICT_STYLES.get(verdict, "bold red"))
