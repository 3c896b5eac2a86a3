"""Grading over HTTP, as a judge's users drive it: POST /grade, GET /grade/{id}, kill, restart, bad input, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import containers_of

pytestmark = pytest.mark.docker

IMAGES = "hatchway-test/*,hatchway-profile/*"
C_SUM = r"""#include <stdio.h>
int main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\n", a + b); return 0; }
"""
PY_SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
# Sleeps as long as its input says, then answers: a grading that takes a while, for kills and restarts.
PY_SLOW = "import time\nseconds = float(input())\ntime.sleep(seconds)\nprint('done')\n"


def sums(count: int) -> list[dict[str, Any]]:
    return [{"input": f"{i} {i * 3}\n", "expected_output": f"{i * 4}\n"} for i in range(count)]


def wait_grade(server: Server, grade_id: str, *states: str, timeout_s: float = 120) -> dict[str, Any]:
    """Poll over HTTP, as a client would, until the grading is in one of `states`."""
    deadline = time.monotonic() + timeout_s
    while True:
        grade: dict[str, Any] = server.client.get(f"/grade/{grade_id}").json()
        if grade["state"] in states:
            return grade
        assert time.monotonic() < deadline, f"grading stuck in {grade['state']}, wanted {states}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def grader(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Any:
    worker_id = f"grader-{os.getpid()}"
    running = Server(
        tmp_path_factory.mktemp("grader"),
        worker_id,
        max_concurrent_jobs=2,
        allowed_images=IMAGES,
        bundle_allowed_urls="file:///*",
    ).start()
    yield running
    assert running.stop() == 0
    running.client.close()
    assert containers_of(docker_client, worker_id) == []


def test_the_readme_example_grades_and_shows_as_a_job(grader: Server) -> None:
    answer = grader.client.post(
        "/grade", params={"wait": "true"}, json={"language": "python", "code": PY_SUM, "tests": sums(3)}
    )
    assert answer.status_code == 201, answer.text
    grade = answer.json()
    assert (grade["state"], grade["verdict"], grade["score"], grade["max_score"]) == ("succeeded", "AC", 3, 3)
    assert [test["verdict"] for test in grade["tests"]] == ["AC"] * 3
    assert grader.client.get(f"/grade/{grade['id']}").json() == grade
    job = grader.client.get(f"/jobs/{grade['id']}").json()
    assert job["kind"] == "grade" and job["grade"]["verdict"] == "AC"
    listed = grader.client.get("/jobs", params={"limit": 50}).json()["jobs"]
    assert any(item["id"] == grade["id"] and item["kind"] == "grade" for item in listed)
    logs = grader.client.get(f"/jobs/{grade['id']}/logs").text
    assert "test 1: AC" in logs


def test_a_grader_pools_request_shape_is_accepted(grader: Server) -> None:
    body = {
        "challengeId": "challenge-123",
        "language": "c",
        "code": C_SUM,
        "testCases": [{"input": "2 3\n", "expectedOutput": "5\n"}, {"input": "1 1\n", "expectedOutput": "3\n"}],
    }
    grade = grader.client.post("/grade", params={"wait": "true"}, json=body).json()
    assert (grade["verdict"], grade["passed"], grade["total"]) == ("WA", 1, 2)
    job = grader.client.get(f"/jobs/{grade['id']}").json()
    assert job["labels"] == {"challenge": "challenge-123"}


def test_a_problem_archive_is_graded_in_natural_order(grader: Server, tmp_path: Path) -> None:
    archive = tmp_path / "problem.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for i in (1, 2, 10):
            zipped.writestr(f"in/{i}.in", f"{i} {i}\n")
            zipped.writestr(f"out/{i}.out", f"{2 * i}\n")
    body = {"language": "python", "code": PY_SUM, "problem_url": f"file://{archive}"}
    grade = grader.client.post("/grade", params={"wait": "true"}, json=body).json()
    assert grade["verdict"] == "AC", grade
    assert [test["name"] for test in grade["tests"]] == ["1", "2", "10"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"language": "cobol", "code": "x", "tests": sums(1)}, 422, "cobol"),
        ({"tool": "foundry", "code": "x", "tests": sums(1)}, 422, "foundry"),
        ({"language": "python", "code": "x", "tests": []}, 422, "at least one test"),
        ({"language": "python", "code": "x", "tests": [{"name": "a"}, {"name": "a"}]}, 422, "'a'"),
        (
            {
                "language": "python",
                "code": "x",
                "tests": sums(1),
                "groups": [{"name": "g", "tests": ["9"], "points": 1}],
            },
            422,
            "9",
        ),
        (
            {
                "language": "python",
                "code": "x",
                "tests": sums(2),
                "groups": [
                    {"name": "a", "tests": ["1"], "points": 1, "depends_on": ["b"]},
                    {"name": "b", "tests": ["2"], "points": 1, "depends_on": ["a"]},
                ],
            },
            422,
            "cycle",
        ),
        ({"language": "python", "code": "x", "tests": sums(1), "limits": {"time_limit_s": 1000}}, 422, "time_limit_s"),
        ({"language": "python", "code": "x", "tests": sums(1), "limits": {"memory_mb": 999999}}, 422, "memory_mb"),
        ({"language": "python", "code": "x", "tests": sums(1), "checker": {"type": "magic"}}, 422, "checker"),
        ({"language": "python", "tests": sums(1)}, 422, "code"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(grader: Server, body: dict[str, Any], status: int, words: str) -> None:
    answer = grader.client.post("/grade", json=body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]


def test_a_problem_archive_without_matching_pairs_is_refused(grader: Server, tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("in/1.in", "1 1\n")
        zipped.writestr("in/2.in", "2 2\n")
        zipped.writestr("out/1.out", "2\n")
    answer = grader.client.post(
        "/grade", json={"language": "python", "code": PY_SUM, "problem_url": f"file://{archive}"}
    )
    assert answer.status_code == 422, answer.text
    assert "2.in" in answer.json()["error"]["message"]


def test_resubmitting_an_id_returns_the_same_grading(grader: Server) -> None:
    body = {"id": f"grade-{os.getpid()}", "language": "python", "code": PY_SUM, "tests": sums(2)}
    first = grader.client.post("/grade", json=body)
    again = grader.client.post("/grade", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = grader.client.post("/grade", json={**body, "code": PY_SUM + "# changed\n"})
    assert other.status_code == 409, other.text
    assert wait_grade(grader, body["id"], "succeeded")["verdict"] == "AC"


def test_a_plain_job_is_not_a_grading(grader: Server) -> None:
    job = grader.post_job(image="hatchway-test/busybox", command=["true"]).json()
    answer = grader.client.get(f"/grade/{job['id']}")
    assert answer.status_code == 404 and "not a grading" in answer.json()["error"]["message"]


def test_profiles_list_the_languages_and_their_images(grader: Server) -> None:
    profiles = {item["profile"]["name"]: item for item in grader.client.get("/profiles").json()}
    assert set(profiles) >= {"python", "c", "cpp", "javascript", "rust", "java", "go"}
    assert profiles["c"]["image_present"] is True and "gcc" in profiles["c"]["tools"]
    assert profiles["rust"]["tools"] == ["cargo", "rustc"]


def test_killing_a_running_grading_stops_it(grader: Server, docker_client: docker.DockerClient) -> None:
    body = {"language": "python", "code": PY_SLOW, "tests": [{"input": "30\n", "expected_output": "done\n"}] * 1}
    grade = grader.client.post("/grade", json=body).json()
    wait_grade(grader, grade["id"], "running")
    killed = grader.client.delete(f"/grade/{grade['id']}", params={"grace_s": 0}).json()
    assert (killed["state"], killed["verdict"]) == ("killed", None)
    again = grader.client.delete(f"/grade/{grade['id']}")
    assert again.status_code == 409


def test_a_grading_cut_off_by_kill_9_is_graded_again_from_scratch(
    start_server: ServerFactory, docker_client: docker.DockerClient
) -> None:
    server = start_server(allowed_images=IMAGES)
    tests = [{"input": "0.5\n", "expected_output": "done\n"} for _ in range(8)]
    grade = server.client.post("/grade", json={"language": "python", "code": PY_SLOW, "tests": tests}).json()
    wait_grade(server, grade["id"], "running")
    # Some tests are graded (their result lines are in its log), not all: the restart really cuts it off mid-way.
    deadline = time.monotonic() + 60
    while ": AC " not in (log := server.client.get(f"/jobs/{grade['id']}/logs").text):
        assert time.monotonic() < deadline, "no test of the grading was ever graded"
        time.sleep(0.05)
    server.kill9()
    assert log.count(": AC ") < len(tests), f"the grading was over before the restart: {log}"
    assert containers_of(docker_client, server.worker_id), "the cut-off grading's sandboxes outlive the worker"

    server.start()
    done = wait_grade(server, grade["id"], "succeeded", "failed", "killed")
    assert (done["state"], done["verdict"], done["passed"], done["total"]) == ("succeeded", "AC", 8, 8)


def test_the_cli_prints_a_verdict_table_and_exits_zero_only_on_ac(grader: Server, tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    for i in (1, 2):
        (tests / "in").mkdir(parents=True, exist_ok=True)
        (tests / "out").mkdir(exist_ok=True)
        (tests / "in" / f"{i}.in").write_text(f"{i} {i}\n")
        (tests / "out" / f"{i}.out").write_text(f"{2 * i}\n")
    right, wrong = tmp_path / "right.c", tmp_path / "wrong.c"
    right.write_text(C_SUM)
    wrong.write_text(C_SUM.replace("a + b", "a * b"))
    command = [sys.executable, "-m", "hatchway.cli.main", "grade", "--url", grader.url, "--language", "c", "--tests"]
    passed = subprocess.run([*command, str(tests), str(right)], capture_output=True, text=True, timeout=120)
    assert passed.returncode == 0, passed.stderr
    assert "TEST" in passed.stdout and passed.stdout.splitlines()[-1].startswith("AC  2/2 tests passed, score 2/2, ")
    archive = tmp_path / "tests.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(tests.rglob("*.*")):
            zipped.write(path, path.relative_to(tests).as_posix())
    failed = subprocess.run([*command, str(archive), str(wrong)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1, failed.stderr
    assert "WA" in failed.stdout and "line 1: expected '2', got '1'" in failed.stdout
