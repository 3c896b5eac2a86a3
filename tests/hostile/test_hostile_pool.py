"""A pool that reuses its containers hands one container to job after job, of different clients. A job must leave
nothing there for the next: not a workspace it locked or marked (mode, extended attributes, ACLs, inode flags), not
System V shared memory, semaphores or message queues, POSIX message queues or /dev/shm files (which would also keep
memory pinned in the container), and a job's memory limit must be its own, whatever memory it uses it in.

Each attack runs on a real worker whose pool keeps one container, reused (`run.sandbox` proves the jobs shared it),
on runc and on gVisor."""

from __future__ import annotations

import pytest

from tests.acceptance.conftest import ServerFactory
from tests.hostile.sandboxes import HOG, IPC, RUNTIMES, WORKSPACE, job, left_behind, pool_server, printed

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_job_cannot_lock_or_mark_the_workspace_of_the_jobs_after_it(
    start_server: ServerFactory, runtime: str
) -> None:
    server = pool_server(start_server, runtime)
    files = {"workspace.py": WORKSPACE}
    fresh = job(server, runtime, "python3 workspace.py look", files=files)
    runs = [fresh]
    for mode in ("0", "555"):
        spoiled = job(server, runtime, f"python3 workspace.py spoil {mode}", files=files)
        after = job(server, runtime, "python3 workspace.py look", files=files)
        runs += [spoiled, after]
        # Where the filesystem has them (runc), the job did set them all.
        expected = ["user.left", "system.posix_acl_access", "system.posix_acl_default", "flags"]
        assert printed(spoiled)["did"] == (expected if runtime == "docker" else []), spoiled
        assert printed(spoiled)["mode"] == oct(0o40000 | int(mode, 8))
        assert printed(after) == printed(fresh), f"after chmod {mode}: {after}"
    assert len({done["run"]["sandbox"] for done in runs}) == 1, "one container served every job"
    assert printed(fresh)["mode"] == "0o40755" and printed(fresh)["xattrs"] == [] and printed(fresh)["wrote"] == []


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


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("how", ["anon", "sysv"])
def test_a_pooled_job_s_memory_limit_is_its_own(start_server: ServerFactory, runtime: str, how: str) -> None:
    """The pool's containers may hold up to `max_limits.memory_mb` (16 GiB); a job that asks for 64 MiB and uses
    200 MiB ends as it would in a container of its own: killed, `memory_limit`. System V segments touched and
    detached at once are in no process's resident memory, which is all gVisor's supervisor used to count."""
    server = pool_server(start_server, runtime)
    files = {"hog.py": HOG}
    limits = {"memory_mb": 64}
    pooled = job(server, runtime, f"python3 hog.py {how}", files=files, limits=limits)
    cold = job(server, runtime, f"python3 hog.py {how}", files=files, limits=limits, pooled=False, workdir="/cold")
    assert (pooled["state"], pooled["reason"]) == ("failed", "memory_limit"), pooled
    assert (cold["state"], cold["reason"]) == ("failed", "memory_limit"), cold
    after = job(server, runtime, "python3 -c 'print(1)'")
    assert after["run"]["sandbox"] == pooled["run"]["sandbox"] and after["state"] == "succeeded", after
