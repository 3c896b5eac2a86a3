"""`hatchway grade`: judge local source files against a folder or archive of tests on a running worker, and
print a verdict table. Exits 0 only when the verdict is AC."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hatchway.bundles import unpack
from hatchway.cli.client import ClientError, call, remote
from hatchway.errors import BadBundle, ProblemError
from hatchway.grading.models import GradeRequest
from hatchway.grading.problem import load_problem

_MAX_UNPACKED_BYTES = 1024**3
_MAX_FILES = 100_000
EXIT_NOT_ACCEPTED = 1


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
    parser.set_defaults(handler=_grade)


def _grade(args: argparse.Namespace) -> int:
    body = request_body(args)
    result = call("POST", remote(args), "/grade", json=body, params={"wait": "true"})
    print_table(result)
    return 0 if result.get("verdict") == "AC" else EXIT_NOT_ACCEPTED


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /grade body for the command line's files and tests."""
    for path in args.files:
        if not path.is_file():
            raise ClientError(f"{path} is not a file")
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
        raise ClientError(f"invalid grading: {problems}") from exc


def read_tests(path: Path) -> list[dict[str, str]]:
    """The tests of a problem folder or archive, in natural name order, as inline tests."""
    try:
        if path.is_dir():
            return _inline(path)
        if not path.is_file():
            raise ClientError(f"{path} is neither a folder nor an archive of tests")
        with tempfile.TemporaryDirectory(prefix="hatchway-tests-") as scratch:
            root = Path(scratch) / "problem"
            unpack(path, root, max_total_bytes=_MAX_UNPACKED_BYTES, max_files=_MAX_FILES)
            return _inline(root)
    except (ProblemError, BadBundle) as exc:
        raise ClientError(f"{path}: {exc}") from exc


def _inline(root: Path) -> list[dict[str, str]]:
    return [
        {"name": test.name, "input": test.input_path.read_text(), "expected_output": test.expected_path.read_text()}
        for test in load_problem(root)
    ]


def print_table(result: dict[str, Any], out: Any = sys.stdout) -> None:
    """The verdict of every test, then the overall verdict and score."""
    compiled = result.get("compile")
    if result.get("verdict") == "CE" and compiled:
        out.write(f"compilation failed (exit {compiled.get('exit_code')}):\n{compiled.get('output', '')}\n")
    rows = [("TEST", "VERDICT", "TIME", "MEMORY", "POINTS", "MESSAGE")]
    for test in result.get("tests", []):
        memory = test.get("memory_bytes")
        rows.append(
            (
                test["name"],
                test["verdict"],
                "" if test.get("time_s") is None else f"{test['time_s']:.3f}s",
                "" if memory is None else f"{memory / 2**20:.1f}MiB",
                f"{test.get('points', 0):g}",
                (test.get("checker_message") or "").splitlines()[0] if test.get("checker_message") else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for *cells, message in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + f"  {message}\n")
    for group in result.get("groups", []):
        out.write(f"group {group['name']}: {group['verdict']} {group['score']:g}\n")
    verdict = result.get("verdict") or result.get("state")
    out.write(
        f"{verdict}  score {result.get('score', 0):g}/{result.get('max_score', 0):g}"
        f"  passed {result.get('passed', 0)}/{result.get('total', 0)}"
        + (f"  ({result['message']})" if result.get("message") else "")
        + "\n"
    )
