"""A pool that reuses its containers hands one container to job after job, of different clients. A job must leave
nothing there for the next: not System V shared memory, semaphores or message queues, POSIX message queues or
/dev/shm files (which would also keep memory pinned in the container).

Each attack runs on a real worker whose pool keeps one container, reused (`run.sandbox` proves the jobs shared it),
on runc and on gVisor."""

from __future__ import annotations

import pytest

from tests.acceptance.conftest import ServerFactory
from tests.hostile.sandboxes import IPC, RUNTIMES, job, left_behind, pool_server, printed

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_job_leaves_no_ipc_object_nor_shared_memory_file_to_the_next(
    start_server: ServerFactory, runtime: str
) -> None:
    server = pool_server(start_server, runtime)
    files = {"ipc.py": IPC}
    left = job(server, runtime, "python3 ipc.py leave", files=files)
    found = job(server, runtime, "python3 ipc.py list", files=files)
    assert printed(left) == left_behind(runtime)
    assert left["run"]["sandbox"] == found["run"]["sandbox"], "the same container served both"
    assert printed(found) == {"found": []}
