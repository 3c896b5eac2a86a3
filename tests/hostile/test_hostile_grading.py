"""A grading runs all its tests in one sandbox, one after another; a test that leaves System V shared memory,
semaphores or message queues, a POSIX message queue or a /dev/shm file would hand them (and the memory they pin) to
the next test. The supervisor empties all of them after every test, on runc and on gVisor."""

from __future__ import annotations

import json

import pytest

from tests.acceptance.conftest import ServerFactory
from tests.hostile.sandboxes import IPC, RUNTIMES, left_behind

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_test_leaves_no_ipc_object_nor_shared_memory_file_to_the_next(
    start_server: ServerFactory, runtime: str
) -> None:
    server = start_server(allowed_images="hatchway-test/*,hatchway-profile/*", allowed_runtimes="docker,gvisor")
    tests = [
        {"name": "leave", "input": "leave", "expected_output": json.dumps(left_behind(runtime))},
        {"name": "list", "input": "list", "expected_output": json.dumps({"found": []})},
    ]
    answer = server.client.post(
        "/grade", params={"wait": "true"}, json={"language": "python", "code": IPC, "runtime": runtime, "tests": tests}
    )
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert [(test["name"], test["verdict"]) for test in report["tests"]] == [("leave", "AC"), ("list", "AC")], report
