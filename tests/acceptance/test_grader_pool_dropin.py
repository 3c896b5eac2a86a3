"""A real `hatchway serve` in the grader worker pool's place: its clients' submissions (a correct, a wrong and a
timing-out one, with public and hidden fixtures), polled to the end; a batch; /workers/status; and, with
`grader_pool_worker`, the orchestrator's call to a worker answered with the result. A hidden test's input and
expected output must appear in no answer and no log a submitter can read, even when the submission tries to read
the tests' files from inside its sandbox."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import containers_of
from tests.fakes.grader_pool import Orchestrator, PoolClient

pytestmark = pytest.mark.docker

IMAGES = "hatchway-test/*,hatchway-profile/*"
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
# Wrong, and nosy: prints what it can find of the tests' files before its wrong answer.
NOSY = """import os
for root in ("/.hatchway/tests", "/.hatchway", "/box"):
    try:
        for name in os.listdir(root):
            try:
                print(open(os.path.join(root, name)).read())
            except (OSError, ValueError) as exc:
                print(name, exc)
    except OSError as exc:
        print(root, exc)
a, b = map(int, input().split())
print(a - b)
"""
SPIN = "while True:\n    pass\n"
SECRET_INPUT, SECRET_OUTPUT = "7777 1111", "8888"


def fixtures() -> list[dict[str, Any]]:
    """Two public tests in the fixture shape (fixtures.rs) and in the client's, and one hidden fixture."""
    return [
        {
            "id": "t1",
            "name": "Small",
            "description": "two small numbers",
            "input": "2 3\n",
            "expected_output": "5\n",
            "hidden": False,
            "timeout": 1,
            "gas_limit": 1000000,
        },
        {"input": "10 20\n", "expectedOutput": "30\n"},
        {
            "id": "secret",
            "name": "Hidden",
            "description": "kept from the submitter",
            "input": f"{SECRET_INPUT}\n",
            "expected_output": f"{SECRET_OUTPUT}\n",
            "hidden": True,
            "timeout": 1,
            "gas_limit": 1000000,
        },
    ]


def submission(code: str) -> dict[str, Any]:
    """What the frontend sends through the gateway, unknown fields and all."""
    return {
        "challengeId": "challenge-123",
        "code": code,
        "language": "python",
        "testCases": fixtures(),
        "metadata": {"gasLimit": 1000000, "timeLimit": 1, "enableTracing": True, "checkPlagiarism": False},
        "clientVersion": "2.0.0",
    }


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Server]:
    worker_id = f"pool-{os.getpid()}"
    running = Server(tmp_path_factory.mktemp("pool"), worker_id, max_concurrent_jobs=2, allowed_images=IMAGES)
    running.start()
    yield running
    assert running.stop() == 0
    running.client.close()
    assert containers_of(docker_client, worker_id) == []


def everything_a_submitter_reads(server: Server, job_id: str, client: PoolClient) -> str:
    """Every answer about the job a holder of a `read` token could fetch, as one text."""
    paths = [
        f"/grade/{job_id}",
        f"/submit/{job_id}",
        f"/jobs/{job_id}",
        "/jobs?limit=100",
        f"/jobs/{job_id}/logs?stream=both",
        f"/jobs/{job_id}/logs?stream=build",
    ]
    texts = [server.client.get(path, headers={"Authorization": f"Bearer {client.user_token}"}).text for path in paths]
    return "\n".join(texts)


def test_correct_wrong_and_timing_out_submissions_score_as_the_pools_clients_read_them(pool_server: Server) -> None:
    client = PoolClient(pool_server.url)
    answers = {}
    for name, code, path in (("correct", SUM, "/grade"), ("wrong", NOSY, "/submit"), ("spinning", SPIN, "/grade")):
        answer = client.submit(submission(code), path=path)
        assert answer.status_code == 201, answer.text
        said = answer.json()
        assert said["status"] in ("queued", "processing") and said["message"], said
        assert said["jobId"] == said["id"] and said["submittedAt"], said
        answers[name] = client.wait_done(said["jobId"], path=path)

    correct, wrong, spinning = answers["correct"], answers["wrong"], answers["spinning"]
    assert (correct["status"], correct["score"], correct["passedTests"], correct["totalTests"]) == (
        "completed",
        100,
        3,
        3,
    ), correct
    assert correct["verdict"] == "AC" and correct["language"] == "python" and correct["error"] == ""
    assert correct["output"] == "Public: 2/2, Hidden: 1/1, verdict AC" and correct["timeUsed"] > 0
    assert (wrong["status"], wrong["score"], wrong["passedTests"], wrong["totalTests"]) == ("completed", 0, 0, 3)
    assert [test["verdict"] for test in wrong["tests"]] == ["WA", "WA", "WA"], wrong["tests"][0]
    assert (spinning["status"], spinning["score"], spinning["passedTests"]) == ("completed", 0, 0), spinning
    assert [test["verdict"] for test in spinning["tests"]] == ["TLE", "TLE", "TLE"]
    # metadata.timeLimit (1 s) is each test's CPU limit, not hatchway's default of 2 s. (On a loaded host the wall
    # clock limit may end a spinning test before its CPU second is spent: no lower bound here.)
    assert all(test["time_s"] < 1.8 for test in spinning["tests"]), spinning["tests"]

    # The public tests say what went wrong; the hidden one only its verdict, wherever one looks.
    public = wrong["tests"][0]
    assert public["checker_message"] and "/.hatchway/tests" in public["output"], public
    hidden = wrong["tests"][2]
    assert (hidden["name"], hidden["output"], hidden["stderr"], hidden["checker_message"]) == ("secret", "", "", None)
    for name, answer in answers.items():
        text = everything_a_submitter_reads(pool_server, answer["jobId"], client)
        assert SECRET_INPUT not in text and SECRET_OUTPUT not in text, f"{name}: the hidden test leaked"
    job = pool_server.client.get(f"/jobs/{wrong['jobId']}").json()
    assert job["spec"]["grade"]["tests"][2] | {"hidden": True} == job["spec"]["grade"]["tests"][2]
    assert (job["spec"]["grade"]["tests"][2]["input"], job["labels"]) == ("", {"challenge": "challenge-123"})


def test_a_batch_queues_each_submission_and_says_which_it_refused(pool_server: Server) -> None:
    client = PoolClient(pool_server.url)
    good = {"id": "alice", "code": SUM, "language": "python", "testCases": fixtures()[:2], "userId": "u1"}
    foundry = {"id": "bob", "code": "contract C {}", "language": "solidity", "tool": "foundry", "testCases": []}
    answer = client.batch([good, foundry], tournament_id="spring-cup")
    assert answer.status_code == 200, answer.text
    batch = answer.json()
    assert (batch["total"], batch["successful"], batch["failed"], batch["status"]) == (2, 1, 1, "processing")
    queued, refused = batch["jobs"]
    assert queued["jobId"] == f"{batch['batchJobId']}_alice" and refused["jobId"] is None
    assert "testCases" in refused["error"] or "foundry" in refused["error"], refused
    done = client.wait_done(queued["jobId"], path="/grade")
    assert (done["status"], done["score"], done["passedTests"], done["totalTests"]) == ("completed", 100, 2, 2)
    job = pool_server.client.get(f"/jobs/{queued['jobId']}").json()
    assert job["labels"] == {"batch": batch["batchJobId"], "tournament": "spring-cup", "user": "u1"}


def test_what_hatchway_cannot_grade_is_a_clear_error(pool_server: Server) -> None:
    client = PoolClient(pool_server.url)
    foundry = client.submit({**submission("contract C {}"), "language": "solidity", "tool": "foundry"}, "/grade")
    assert foundry.status_code == 422 and "foundry" in foundry.json()["error"]["message"], foundry.text
    # The challenge service sends no test cases: its worker fetched them by challengeId, which hatchway does not.
    bare = client.submit({"challengeId": "challenge-123", "code": SUM, "language": "python", "userId": "u1"})
    assert bare.status_code == 422 and "testCases" in bare.json()["error"]["message"], bare.text


def test_workers_status_answers_the_pools_fields_beside_hatchways(pool_server: Server) -> None:
    status = PoolClient(pool_server.url).workers_status()
    assert (status["max_workers"], status["healthy"]) == (2, True)
    assert status["stats"]["total"] == 2 and status["stats"]["byType"] == {"grader_rust": 2}
    assert sum(status["stats"]["byStatus"].values()) == 2
    assert [worker["status"] in ("ready", "busy") for worker in status["workers"]] == [True, True]
    assert "python" in status["workers"][0]["capabilities"] and status["workers"][0]["type"] == "grader_rust"
    assert status["config"]["maxWorkers"] == 2 and status["config"]["firecrackerEnabled"] is False


def test_as_a_pool_worker_the_orchestrators_call_is_answered_with_the_result(start_server: ServerFactory) -> None:
    server = start_server(allowed_images=IMAGES, grader_pool_worker="true")
    orchestrator = Orchestrator(server.url)
    payload = {
        "code": SUM,
        "language": "python",
        "testCases": fixtures(),
        "challengeId": "challenge-123",
        "userId": "user-123",
        "metadata": {"timeLimit": 10},
    }
    job = orchestrator.grade("job_1", payload)
    assert job["status"] == "completed", job
    result, raw = job["result"], job["raw"]
    assert (result["score"], result["passedTests"], result["totalTests"]) == (100, 3, 3), raw
    assert (raw["success"], raw["status"], raw["language"], raw["error"]) == (True, "completed", "python", "")
    assert SECRET_INPUT not in str(raw) and SECRET_OUTPUT not in str(raw)

    refused = orchestrator.grade("job_2", {**payload, "language": "move", "tool": "move-cli"})
    assert refused["status"] == "completed" and "move" in refused["result"]["error"], refused  # as its worker says

    # hatchway's own body on the same path is answered as ever.
    own = server.client.post(
        "/grade", json={"language": "python", "code": SUM, "tests": [{"input": "1 2\n", "expected_output": "3\n"}]}
    )
    assert own.status_code == 201 and own.json()["state"] == "queued" and "jobId" not in own.json(), own.text


def test_kill_9_in_the_middle_of_a_submission_gives_its_client_one_complete_result(
    start_server: ServerFactory,
) -> None:
    """The orchestrator kept its jobs in memory: a crash lost them. hatchway grades a submission caught by `kill -9`
    again from scratch after the restart, and the client polling it sees it end once, complete."""
    server = start_server(allowed_images=IMAGES)
    client = PoolClient(server.url)
    slow_sum = "import time\ntime.sleep(0.6)\n" + SUM  # sleeps, so the kill lands while its tests run
    answer = client.submit(submission(slow_sum))
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["jobId"]
    deadline = time.monotonic() + 60
    while client.result(job_id)["status"] != "processing":
        assert time.monotonic() < deadline, client.result(job_id)
        time.sleep(0.05)  # polling the client's view of the job, as the pool's clients do
    server.kill9()
    server.start()
    done = client.wait_done(job_id)
    assert (done["status"], done["score"], done["passedTests"], done["totalTests"]) == ("completed", 100, 3, 3), done
    assert [test["verdict"] for test in done["tests"]] == ["AC", "AC", "AC"], done["tests"]
    assert client.result(job_id) == done, "its result, once complete, does not change"
    listed = server.client.get("/jobs", params={"label": "challenge:challenge-123"}).json()["jobs"]
    assert [job["id"] for job in listed] == [job_id], "one grading, not a second one made by the restart"
    assert server.stop() == 0
