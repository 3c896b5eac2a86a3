"""The command line's own logic: the exit code and message for every way a job ends, and tables as a script (or a
pipe) sees them: aligned, plain, nothing after the last column."""

from __future__ import annotations

import io
from typing import Any

import pytest

from hatchway.cli import output
from hatchway.cli.exits import Exit, job_ending, short_id
from hatchway.cli.grade import print_table as print_verdicts
from hatchway.cli.main import main
from hatchway.models import Reason

JOB_ID = "3f2a9c1e0b7d4e5fa6b8c9d0e1f2a3b4"
LIMITS = {"timeout_s": 10.0, "memory_mb": 64, "output_bytes": 1000, "disk_mb": 32}


def ended(state: str, reason: str | None, exit_code: int | None = None, message: str | None = None) -> dict[str, Any]:
    return {"id": JOB_ID, "state": state, "reason": reason, "exit_code": exit_code, "message": message,
            "spec": {"limits": LIMITS}}  # fmt: skip


@pytest.mark.parametrize(
    ("job", "code", "message"),
    [
        (ended("succeeded", None, 0), 0, None),
        (ended("failed", "exit_code", 2), 2, None),
        (ended("failed", "exit_code", 127), 127, None),
        (ended("failed", "timeout", 143), 124, "timed out after 10 s"),
        (ended("failed", "memory_limit", 137), 137, "was killed for using more than its 64 MB of memory"),
        (ended("failed", "output_limit", 0), 153, "was stopped for writing more than 1000 bytes to one stream"),
        (ended("failed", "disk_limit", 1), 153, "filled its 32 MB of disk"),
        (ended("killed", "killed", 143), 143, "was killed"),
        (ended("killed", "cancelled"), 143, "was cancelled before it started"),
        (ended("killed", "shutdown", 143), 143, "was stopped: the worker shut down"),
        (ended("failed", "engine_error", None, "socket gone"), 125, "could not run: engine error: socket gone"),
        (ended("failed", "image_not_found"), 125, "could not run: image not found"),
        (ended("failed", "worker_restart"), 125, "was lost: the worker restarted and its container was gone"),
        (ended("failed", "worker_lost"), 125, "was lost: the worker running it stopped answering the fleet"),
    ],
)
def test_every_ending_has_its_exit_code_and_sentence(job: dict[str, Any], code: int, message: str | None) -> None:
    ending = job_ending(job)
    assert ending.code == code
    assert ending.message == (None if message is None else f"job 3f2a9c1e0b7d… {message}")


def test_every_reason_a_job_can_end_with_is_in_the_table() -> None:
    for reason in Reason:
        if reason is not Reason.EXIT_CODE:
            assert "ended failed" not in (job_ending(ended("failed", reason.value)).message or ""), reason


def test_the_codes_of_our_own_stay_clear_of_each_other() -> None:
    assert len({int(code) for code in Exit}) == len(Exit)
    assert (Exit.TIMEOUT, Exit.NOT_RUN, Exit.USAGE) == (124, 125, 2)  # as timeout(1), docker run, argparse


def test_a_chosen_id_is_shown_whole() -> None:
    assert short_id("nightly-build-7") == "nightly-build-7"
    assert short_id(JOB_ID) == "3f2a9c1e0b7d…"


def test_a_table_off_a_terminal_is_plain_and_aligned() -> None:
    out = io.StringIO()
    rows = [("a1", output.state_text("succeeded"), "busybox"), ("b-22", output.state_text("failed", "timeout"), "")]
    output.print_table(("ID", "STATE", "IMAGE"), rows, out)
    assert out.getvalue().splitlines() == [
        "ID    STATE             IMAGE",
        "a1    succeeded         busybox",
        "b-22  failed (timeout)",
    ]


def test_a_long_cell_is_neither_wrapped_nor_cut_off_a_terminal() -> None:
    out = io.StringIO()
    output.print_table(("NAME", "URL"), [("x", "http://" + "long/" * 60)], out)
    assert out.getvalue().splitlines()[1] == "x     http://" + "long/" * 60


def test_fields_are_a_key_value_view() -> None:
    out = io.StringIO()
    output.print_fields([("id", "abc"), ("exit code", None), ("state", output.state_text("killed", "killed"))], out)
    assert out.getvalue().splitlines() == ["id:         abc", "exit code:  -", "state:      killed (killed)"]


def test_the_verdict_table_ends_with_a_summary_line() -> None:
    out = io.StringIO()
    tests = [
        {"name": "1", "verdict": "AC", "time_s": 0.5, "memory_bytes": 2**21, "points": 1},
        {"name": "2", "verdict": "WA", "time_s": 0.25, "points": 0, "checker_message": "line 1: expected '4'\nmore"},
    ]
    result = {"verdict": "WA", "passed": 1, "total": 2, "score": 1, "max_score": 2, "tests": tests}
    print_verdicts(result, out)
    assert out.getvalue().splitlines() == [
        "TEST  VERDICT  TIME    MEMORY  POINTS  MESSAGE",
        "1     AC       0.500s  2.0MiB  1",
        "2     WA       0.250s          0       line 1: expected '4'",
        "WA  1/2 tests passed, score 1/2, 0.75 s CPU",
    ]


def test_a_status_line_off_a_terminal_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with output.StatusLine("building", total=3) as status:
        status.update("testing", advance=1)
    assert capsys.readouterr() == ("", "")


def test_a_wrong_command_line_exits_2_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hatchway-test/busybox", "-e", "NOEQUALS", "--", "true"]) == 2
    assert capsys.readouterr().err == "hatchway: --env takes KEY=VALUE, not 'NOEQUALS'\n"
    assert main(["submit", "hatchway-test/busybox"]) == 2
    assert "give the command after the image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["list", "--limit", "many"])
    assert exited.value.code == 2


def test_options_before_an_actions_name_are_kept() -> None:
    from hatchway.cli.main import _parser

    parsed = _parser().parse_args(["images", "--url", "http://worker:1", "--json", "list"])
    assert (parsed.url, parsed.json, parsed.handler.__name__) == ("http://worker:1", True, "list_images")
    assert _parser().parse_args(["images"]).handler.__name__ == "list_images"  # `images` alone lists
    assert _parser().parse_args(["profiles", "--config", "c.yaml", "list"]).config.name == "c.yaml"
