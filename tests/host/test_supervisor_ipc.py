"""The supervisor's --wipe-ipc on this host: started in an IPC namespace of its own (`unshare --ipc`, as a container
has), it removes every System V object a run left before the next run, whoever made it and whatever its mode, and
keeps serving. The namespace is looked at from outside (`nsenter`), as root."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.sandbox.protocol import RunStatus
from tests.host.conftest import require
from tests.host.test_supervisor import NOBODY, PYTHON, Supervisor, supervisor_binary

__all__ = ["supervisor_binary"]  # the fixture, shared with test_supervisor.py

pytestmark = [pytest.mark.host, pytest.mark.timeout(60)]

LEAVE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
made = [libc.shmget(0, 1 << 20, 0o1600), libc.shmget(0, 4096, 0o1000), libc.semget(0, 3, 0o1600),
        libc.semget(0, 1, 0o1000), libc.msgget(0, 0o1600), libc.msgget(0, 0o1000)]
address = libc.shmat(made[0], None, 0)
ctypes.memset(address, 1, 1 << 20)
libc.shmdt(ctypes.c_void_p(address))
assert min(made) >= 0, made
"""


@pytest.fixture
def ipc_supervisor(supervisor_binary: Path) -> Iterator[Supervisor]:
    """A supervisor with --wipe-ipc in an IPC namespace of its own."""
    require("system python")
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if unshare is None or nsenter is None:
        pytest.fail("this host-tier test needs unshare and nsenter (util-linux) on PATH", pytrace=False)
    supervisor = Supervisor(Path(unshare), "--ipc", str(supervisor_binary), "--wipe-ipc")
    yield supervisor
    if supervisor.proc.poll() is None:
        supervisor.close()


def objects(supervisor: Supervisor) -> list[str]:
    """The System V objects in the supervisor's IPC namespace, one line each (the files' headers left out)."""
    listed = []
    for kind in ("shm", "sem", "msg"):
        text = subprocess.run(
            ["nsenter", f"--ipc=/proc/{supervisor.proc.pid}/ns/ipc", "cat", f"/proc/sysvipc/{kind}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        listed += [f"{kind}: {line.split()}" for line in text.splitlines()[1:]]
    return listed


def test_a_run_leaves_no_system_v_object_to_the_next(ipc_supervisor: Supervisor) -> None:
    first = ipc_supervisor.run(PYTHON, "-c", LEAVE)
    # Before the next request is read, however soon it comes: a ping is read only once the clean-up is done.
    ipc_supervisor.sync()
    assert first.status == RunStatus.EXITED and first.exit_code == 0, first
    assert objects(ipc_supervisor) == []
    for uid in (NOBODY, NOBODY - 1, NOBODY):  # each made by another user than the last
        left = ipc_supervisor.run(PYTHON, "-c", LEAVE, uid=uid, gid=uid)
        ipc_supervisor.sync()
        assert left.exit_code == 0 and left.error is None, left
        assert objects(ipc_supervisor) == []


def test_objects_a_run_made_are_there_while_it_runs(ipc_supervisor: Supervisor) -> None:
    """The namespace the test looks into is the runs' (the wipe is not looked for where it could not be)."""
    count = "cat /proc/sysvipc/shm /proc/sysvipc/sem /proc/sysvipc/msg | wc -l"
    run = ipc_supervisor.run("sh", "-c", f'{PYTHON} -c "$1" && test "$({count})" -eq 9', "sh", LEAVE)
    assert run.exit_code == 0, run
    ipc_supervisor.sync()
    assert objects(ipc_supervisor) == []
