"""The sandbox supervisor binary, run directly on this host (as root) in cgroup v1 and proc mode.

Each test starts its own supervisor and speaks the protocol through `hatchway.sandbox.protocol`. Programs run as
uid/gid 65534, so every path they must reach lives in a world-traversable directory under /tmp.

Between requests the supervisor cleans up after the last run and prepares the next one (its cgroups, its scratch
directory, and a zygote: a child that becomes the next run's main process). A test that looks at that state first
pings: the supervisor reads the ping only when that idle work is done.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from hatchway.sandbox.binary import build_supervisor, installed_supervisor, supervisor_path
from hatchway.sandbox.protocol import (
    ProtocolError,
    RunRequest,
    RunResult,
    RunStatus,
    SupervisorMode,
    encode_ping,
    parse_pong,
    parse_ready,
    parse_result,
)
from tests.host.conftest import require

NOBODY = 65534
CONTROLLERS = ("memory", "pids", "cpuacct")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PYTHON = "/usr/bin/python3"  # the system interpreter: readable by nobody, unlike a pyenv or venv one
MB = 1 << 20

pytestmark = [pytest.mark.host, pytest.mark.timeout(60)]


class Supervisor:
    """A supervisor process and the test's side of its protocol."""

    def __init__(self, binary: Path, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ready = parse_ready(self.stdout.readline())
        self._ids = 0
        self.fork_every_run = False

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def send(self, request: bytes) -> bytes:
        """Write one raw request and return the answer line."""
        self.stdin.write(request)
        self.stdin.flush()
        line = self.stdout.readline()
        assert line.endswith(b"\n"), f"the supervisor stopped answering (exit status {self.proc.poll()})"
        return line

    def run(self, *argv: str, **options: Any) -> RunResult:
        """Run argv as nobody with the given RunRequest options; a generous wall limit guards every test.

        With `fork_every_run` set, the zygote is killed first, so that the run takes the fork path."""
        if self.fork_every_run:
            self.kill_zygote()
        self._ids += 1
        options.setdefault("uid", NOBODY)
        options.setdefault("gid", NOBODY)
        options.setdefault("wall_time_s", 20.0)
        options.setdefault("id", f"run-{self._ids}")
        result = parse_result(self.send(RunRequest(argv=argv, **options).encode()))
        assert result.id == options["id"]
        return result

    def sync(self) -> None:
        """Return once the supervisor has finished its idle work (clean-up, the next run's preparation)."""
        parse_pong(self.send(encode_ping()))

    def zygote(self) -> psutil.Process:
        """The process made for the next run: the supervisor's only child, root's, waiting."""
        self.sync()
        children = psutil.Process(self.proc.pid).children(recursive=True)
        assert [(c.uids().real, c.ppid()) for c in children] == [(0, self.proc.pid)]
        # It names itself right after the fork.
        _eventually(lambda: children[0].name() == "hatchway-zygote", f"{children[0]} is not the zygote")
        return children[0]

    def kill_zygote(self) -> int:
        """Kill the zygote as an outsider would, and wait until it is dead (a zombie); returns its pid."""
        zygote = self.zygote()
        zygote.kill()
        deadline = time.monotonic() + 5
        while zygote.is_running() and zygote.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the zygote survived SIGKILL"
            time.sleep(0.001)
        return zygote.pid

    def close(self) -> int:
        """Close stdin, as hatchway does at the end, and return the exit status."""
        with contextlib.suppress(BrokenPipeError):  # it is gone already; its status is what counts
            self.stdin.close()
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.stdout.close()


@pytest.fixture(scope="session")
def supervisor_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("cc")
    return build_supervisor(tmp_path_factory.mktemp("supervisor") / "hatchway-supervisor")


@pytest.fixture
def start_supervisor(supervisor_binary: Path) -> Iterator[Callable[..., Supervisor]]:
    require("system python")  # programs run as nobody: a venv's interpreter may be out of its reach
    started: list[Supervisor] = []

    def start(*args: str) -> Supervisor:
        supervisor = Supervisor(supervisor_binary, *args)
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        if supervisor.proc.poll() is None:
            supervisor.proc.kill()
        supervisor.close()


def _remove_cgroup(path: Path) -> None:
    """Kill what is left in the cgroup and remove it. A killed task keeps it busy until its parent reaps it: the
    zygote of a supervisor killed by the fixture dies with it and is reaped by init a moment later."""
    deadline = time.monotonic() + 30  # under load the kernel can take seconds to release a cgroup
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        except OSError as exc:  # ENODEV: the cgroup is being torn down
            if exc.errno != errno.ENODEV:
                raise
            pids = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
        time.sleep(0.01)
    path.rmdir()


@pytest.fixture
def cgroup_dir(tmp_path: Path) -> Iterator[Path]:
    """A --cgroup DIR: symlinks memory, pids and cpuacct to fresh cgroups, removed (with any leftovers) after."""
    require("cgroup v1")
    name = f"hatchway-unit-{uuid.uuid4().hex[:12]}"
    links = tmp_path / "cgroup"
    links.mkdir()
    made: list[Path] = []
    try:
        for controller in CONTROLLERS:
            real = CGROUP_ROOT / controller / name
            real.mkdir()
            made.append(real)
            (links / controller).symlink_to(real)
        yield links
    finally:
        failures: list[OSError] = []
        for real in made:
            try:
                for child in [p for p in real.iterdir() if p.is_dir()]:
                    _remove_cgroup(child)
                _remove_cgroup(real)
            except OSError as exc:  # clean the other controllers anyway, then tell
                failures.append(exc)
        if failures:
            raise failures[0]


@pytest.fixture
def cgroup_supervisor(cgroup_dir: Path, start_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return start_supervisor("--cgroup", str(cgroup_dir))


@pytest.fixture
def proc_supervisor(start_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return start_supervisor()


@pytest.fixture(params=["cgroup", "proc"])
def any_supervisor(request: pytest.FixtureRequest) -> Supervisor:
    # By name, so that the cgroup fixture is set up first and torn down after the supervisors are gone.
    return request.getfixturevalue(f"{request.param}_supervisor")  # type: ignore[no-any-return]


@pytest.fixture(params=["zygote", "fork"])
def both_paths(request: pytest.FixtureRequest, any_supervisor: Supervisor) -> Supervisor:
    """A supervisor whose runs use its zygote, or fork their child because the zygote was killed."""
    any_supervisor.fork_every_run = request.param == "fork"
    return any_supervisor


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the run's user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="hatchway-sv-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _eventually(check: Callable[[], bool], what: str) -> None:
    """Wait up to 5 s for check() to hold."""
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def _cgroup_of(pid: int, controller: str) -> str:
    """The cgroup v1 path of a process in one controller's hierarchy."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise AssertionError(f"process {pid} is in no {controller} cgroup")


def _wait_for_cgroup(pid: int, controller: str, suffix: str) -> None:
    """Wait until the process is in the cgroup whose path ends with suffix: a zygote joins it after the ping."""
    _eventually(lambda: _cgroup_of(pid, controller).endswith(suffix), f"{pid} never joined {controller}{suffix}")


def _dead(pid: int) -> bool:
    """Whether the process has ended (a zombie not reaped yet, or gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_gone(pid: int) -> None:
    """The process no longer exists (not even as a zombie)."""
    assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived its run"


# ---------------------------------------------------------------- the protocol


def test_ready_line_names_the_mode(any_supervisor: Supervisor) -> None:
    expected = SupervisorMode.CGROUP if "--cgroup" in any_supervisor.args else SupervisorMode.PROC
    assert any_supervisor.ready.mode is expected
    parse_pong(any_supervisor.send(encode_ping()))


def test_a_malformed_request_gets_an_error_and_the_next_one_still_works(proc_supervisor: Supervisor) -> None:
    sv = proc_supervisor
    bad = {
        b"run\0bogus=1\0uid=1\0gid=1\0arg=/bin/true\0\0": "unknown key bogus",
        b"run\0uid=1\0gid=1\0\0": "no program",
        b"run\0uid=0\0gid=0\0arg=/bin/true\0\0": "must not be 0",
        b"run\0arg=/bin/true\0\0": "uid= and gid= are required",
        b"run\0uid=1\0gid=1\0cpu_ms=12x\0arg=/bin/true\0\0": "not a non-negative integer",
        b"run\0uid=1\0gid=1\0uid=2\0arg=/bin/true\0\0": "uid given twice",
        b"run\0uid=1\0gid=1\0scratch=1\0arg=/bin/true\0\0": "without --scratch",
        b"run\0noequals\0\0": "not key=value",
        b"launch\0\0": "unknown verb launch",
        b"\0": "empty request",
    }
    for request, message in bad.items():
        line = sv.send(request)
        assert message in line.decode(), line
    result = sv.run("/bin/sh", "-c", "exit 4")
    assert (result.status, result.exit_code) == (RunStatus.EXITED, 4)


def test_a_request_may_arrive_in_pieces(proc_supervisor: Supervisor) -> None:
    request = RunRequest(argv=("/bin/sh", "-c", "exit 9"), uid=NOBODY, gid=NOBODY, id="pieces").encode()
    # Cut inside a field, right after a field's NUL, and between the last NUL and the closing one. Each piece is
    # read by the supervisor (the pipe is empty again) before the next is written, so each is a read of its own.
    for piece in (request[:7], request[7:20], request[20:-1]):
        proc_supervisor.stdin.write(piece)
        proc_supervisor.stdin.flush()
        _eventually(lambda: _unread(proc_supervisor.stdin) == 0, "the supervisor did not read the piece")
    result = parse_result(proc_supervisor.send(request[-1:]))
    assert (result.id, result.exit_code) == ("pieces", 9)


def _unread(pipe: IO[bytes]) -> int:
    """Bytes written to the pipe and not read yet (FIONREAD works on either end of a Linux pipe)."""
    return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]  # type: ignore[no-any-return]


def test_an_oversized_request_is_refused_and_skipped(proc_supervisor: Supervisor) -> None:
    huge = b"run\0uid=1\0gid=1\0" + b"arg=" + b"x" * (9 * MB) + b"\0\0"
    assert "larger than 8 MiB" in proc_supervisor.send(huge).decode()
    assert proc_supervisor.run("/bin/true").exit_code == 0


def test_any_id_comes_back_as_valid_json(proc_supervisor: Supervisor) -> None:
    result = proc_supervisor.run("/bin/true", id='quote " backslash \\ newline \n tab \t € 😀')
    assert result.exit_code == 0  # run() checks that the id came back unchanged
    # Bytes that are not UTF-8 cannot come from protocol.py, but must not break the line either.
    line = proc_supervisor.send(b"run\0id=a\xff\xc3(b\0uid=65534\0gid=65534\0arg=/bin/true\0\0")
    assert parse_result(line).id == "a\ufffd\ufffd(b"


def test_requests_written_in_one_go_are_answered_in_order(proc_supervisor: Supervisor) -> None:
    sv = proc_supervisor
    requests = [RunRequest(argv=("/bin/sh", "-c", f"exit {n}"), uid=NOBODY, gid=NOBODY, id=str(n)) for n in range(5)]
    sv.stdin.write(encode_ping() + b"".join(r.encode() for r in requests))
    sv.stdin.flush()
    parse_pong(sv.stdout.readline())
    results = [parse_result(sv.stdout.readline()) for _ in requests]
    assert [(r.id, r.exit_code) for r in results] == [(str(n), n) for n in range(5)]


def test_end_of_input_makes_it_exit_zero(any_supervisor: Supervisor) -> None:
    any_supervisor.run("/bin/true")
    zygote = any_supervisor.zygote()
    assert any_supervisor.close() == 0
    assert_gone(zygote.pid)  # ended and reaped before the supervisor exits


def test_it_leaves_no_cgroup_behind(cgroup_supervisor: Supervisor, cgroup_dir: Path) -> None:
    cgroup_supervisor.run("/bin/true")
    cgroup_supervisor.run("/bin/true", memory_bytes=64 * MB, processes=10)
    zygote = cgroup_supervisor.zygote()
    assert cgroup_supervisor.close() == 0
    assert_gone(zygote.pid)
    for controller in CONTROLLERS:
        assert [p for p in (cgroup_dir / controller).iterdir() if p.is_dir()] == []


def test_it_refuses_to_start_on_a_missing_cgroup_dir(supervisor_binary: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(supervisor_binary), "--cgroup", str(tmp_path / "absent")], capture_output=True)
    assert done.returncode == 2
    with pytest.raises(ProtocolError, match="did not start"):
        parse_ready(done.stdout)


# ---------------------------------------------------------------- how a run ends


def test_exit_code(both_paths: Supervisor) -> None:
    result = both_paths.run("sh", "-c", "exit 3")
    assert (result.status, result.exit_code, result.signal) == (RunStatus.EXITED, 3, None)
    assert not (result.cpu_exceeded or result.wall_exceeded or result.oom_killed or result.output_exceeded)
    assert result.error is None
    assert 0 < result.wall_s < 5


def test_stdin_stdout_and_stderr_are_files(both_paths: Supervisor, tmp_path: Path) -> None:
    (tmp_path / "in").write_text("hello\n")
    result = both_paths.run(
        "sh",
        "-c",
        "cat; echo oops >&2",
        stdin_path=str(tmp_path / "in"),
        stdout_path=str(tmp_path / "out"),
        stderr_path=str(tmp_path / "err"),
    )
    assert result.exit_code == 0
    assert (tmp_path / "out").read_text() == "hello\n"
    assert (tmp_path / "err").read_text() == "oops\n"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o600


def test_stdout_and_stderr_to_one_file_share_it(proc_supervisor: Supervisor, tmp_path: Path) -> None:
    both = str(tmp_path / "both")
    proc_supervisor.run("sh", "-c", "echo one; echo two >&2; echo three", stdout_path=both, stderr_path=both)
    assert (tmp_path / "both").read_text() == "one\ntwo\nthree\n"


def test_the_program_gets_exactly_the_requested_environment(proc_supervisor: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = proc_supervisor.run("env", env={"A": "1", "B": "x=y"}, stdout_path=str(out))
    assert result.exit_code == 0
    assert sorted(out.read_text().splitlines()) == ["A=1", "B=x=y"]


def test_the_program_is_found_on_the_requests_path(proc_supervisor: Supervisor, shared_dir: Path) -> None:
    tool = shared_dir / "mytool"
    tool.write_text("#!/bin/sh\nexit 7\n")
    tool.chmod(0o755)
    assert proc_supervisor.run("mytool", env={"PATH": f"/nonexistent:{shared_dir}"}).exit_code == 7


def test_a_signal_is_reported(both_paths: Supervisor) -> None:
    result = both_paths.run("sh", "-c", "kill -SEGV $$")
    assert (result.status, result.signal, result.exit_code) == (RunStatus.SIGNALED, signal.SIGSEGV, None)


def test_a_missing_program_is_exec_failed_127(both_paths: Supervisor) -> None:
    result = both_paths.run("no-such-program-here")
    assert (result.status, result.exit_code) == (RunStatus.EXEC_FAILED, 127)
    assert result.error is not None and "ENOENT" in result.error


def test_a_program_that_is_not_executable_is_exec_failed_126(proc_supervisor: Supervisor, shared_dir: Path) -> None:
    script = shared_dir / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    result = proc_supervisor.run(str(script))
    assert (result.status, result.exit_code) == (RunStatus.EXEC_FAILED, 126)
    assert result.error is not None and "EACCES" in result.error


def test_an_impossible_setup_is_setup_failed(proc_supervisor: Supervisor, tmp_path: Path) -> None:
    result = proc_supervisor.run("/bin/true", stdout_path=str(tmp_path / "no" / "such" / "dir" / "out"))
    assert result.status is RunStatus.SETUP_FAILED
    assert result.error is not None and "stdout" in result.error and "ENOENT" in result.error
    # pytest's tmp_path is root's 0700 directory: nobody may not enter it.
    result = proc_supervisor.run("/bin/true", cwd=str(tmp_path))
    assert result.status is RunStatus.SETUP_FAILED
    assert result.exit_code is None
    assert result.error is not None and "chdir" in result.error and "EACCES" in result.error


# ---------------------------------------------------------------- limits


def test_cpu_limit(both_paths: Supervisor) -> None:
    result = both_paths.run("sh", "-c", "while :; do :; done", cpu_time_s=0.3, wall_time_s=20)
    assert result.cpu_exceeded
    assert not result.wall_exceeded
    assert (result.status, result.signal) == (RunStatus.SIGNALED, signal.SIGKILL)
    assert 0.3 <= result.cpu_s < 1.0


def test_cpu_of_every_process_of_the_run_counts(cgroup_supervisor: Supervisor) -> None:
    # Two busy children and a parent that only waits: the parent's own CPU time is almost nothing.
    result = cgroup_supervisor.run("sh", "-c", "for i in 1 2; do (while :; do :; done) & done; wait", cpu_time_s=0.4)
    assert result.cpu_exceeded
    assert result.cpu_s >= 0.4


def test_wall_limit(both_paths: Supervisor) -> None:
    result = both_paths.run("sleep", "5", wall_time_s=0.3, cpu_time_s=1)
    assert result.wall_exceeded and not result.cpu_exceeded
    assert result.signal == signal.SIGKILL
    assert 0.3 <= result.wall_s < 2
    assert result.cpu_s < 0.2


def _run_handles_sigterm(supervisor: Supervisor) -> bool:
    """Whether a process of the run (nobody's, under the supervisor) catches or ignores SIGTERM."""
    bit = 1 << (signal.SIGTERM - 1)
    for child in psutil.Process(supervisor.proc.pid).children(recursive=True):
        try:
            if child.uids().real != NOBODY:
                continue
            status = dict(line.split(":", 1) for line in Path(f"/proc/{child.pid}/status").read_text().splitlines())
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        if (int(status["SigCgt"], 16) | int(status["SigIgn"], 16)) & bit:
            return True
    return False


def _run_then_signal(supervisor: Supervisor, sig: int, *argv: str) -> RunResult:
    """Start argv, signal the supervisor as hatchway does from outside once the run has begun, and read the answer."""
    supervisor.stdin.write(RunRequest(argv=argv, uid=NOBODY, gid=NOBODY, id="stopped", wall_time_s=20).encode())
    supervisor.stdin.flush()
    # The run has begun and its shell has set its trap: one of its processes catches or ignores SIGTERM.
    _eventually(lambda: _run_handles_sigterm(supervisor), "the run did not start, or never set its trap")
    os.kill(supervisor.proc.pid, sig)
    return parse_result(supervisor.stdout.readline())


def test_sigterm_to_the_supervisor_is_passed_on_to_the_run(both_paths: Supervisor) -> None:
    result = _run_then_signal(both_paths, signal.SIGTERM, "sh", "-c", "trap 'exit 7' TERM; sleep 30 & wait")
    assert (result.status, result.exit_code) == (RunStatus.EXITED, 7)
    assert result.wall_s < 5 and not result.wall_exceeded
    assert both_paths.run("true").exit_code == 0  # the supervisor keeps serving


def test_sigusr1_to_the_supervisor_kills_the_run(both_paths: Supervisor) -> None:
    result = _run_then_signal(both_paths, signal.SIGUSR1, "sh", "-c", "trap '' TERM; sleep 30 & wait")
    assert (result.status, result.signal) == (RunStatus.SIGNALED, signal.SIGKILL)
    assert result.wall_s < 5 and not result.wall_exceeded
    assert both_paths.run("true").exit_code == 0


@pytest.mark.parametrize("path", ["zygote", "fork"])
def test_memory_limit_in_cgroup_mode_is_an_oom_kill(cgroup_supervisor: Supervisor, path: str) -> None:
    cgroup_supervisor.fork_every_run = path == "fork"
    result = cgroup_supervisor.run(PYTHON, "-c", "b = b'x' * (200 << 20)", memory_bytes=50 * MB)
    assert result.oom_killed
    assert (result.status, result.signal) == (RunStatus.SIGNALED, signal.SIGKILL)
    assert result.memory_bytes <= 50 * MB


def test_memory_limit_in_proc_mode(proc_supervisor: Supervisor) -> None:
    code = "import time; b = b'x' * (200 << 20); time.sleep(5)"
    result = proc_supervisor.run(PYTHON, "-c", code, memory_bytes=50 * MB)
    assert result.oom_killed
    assert (result.status, result.signal) == (RunStatus.SIGNALED, signal.SIGKILL)
    assert result.wall_s < 3


def test_peak_memory_is_measured(both_paths: Supervisor) -> None:
    result = both_paths.run(PYTHON, "-c", "b = b'x' * (100 << 20)", memory_bytes=256 * MB)
    assert (result.status, result.exit_code) == (RunStatus.EXITED, 0)
    assert not result.oom_killed
    assert 100 * MB <= result.memory_bytes < 200 * MB


def test_peak_memory_is_the_runs_own(cgroup_supervisor: Supervisor) -> None:
    big = cgroup_supervisor.run(PYTHON, "-c", "b = b'x' * (100 << 20)")
    small = cgroup_supervisor.run("/bin/true")
    assert big.memory_bytes >= 100 * MB
    assert small.memory_bytes < 20 * MB


def test_output_limit(both_paths: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = both_paths.run("yes", stdout_path=str(out), file_size_bytes=1000)
    assert result.output_exceeded
    assert (result.status, result.signal) == (RunStatus.SIGNALED, signal.SIGXFSZ)
    assert out.stat().st_size == 1000
    # Python ignores SIGXFSZ and gets EFBIG instead: the full file still tells.
    result = both_paths.run(PYTHON, "-c", "print('x' * 5000)", stdout_path=str(out), file_size_bytes=1000)
    assert result.output_exceeded
    assert result.status is RunStatus.EXITED and result.exit_code != 0
    result = both_paths.run("echo", "short", stdout_path=str(out), file_size_bytes=1000)
    assert not result.output_exceeded
    assert out.read_text() == "short\n"


FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.001)
"""


@pytest.mark.parametrize("path", ["zygote", "fork"])
def test_a_fork_bomb_ends_and_the_next_run_is_normal(
    cgroup_supervisor: Supervisor, cgroup_dir: Path, path: str
) -> None:
    # The main process exits and leaves behind a bomb that never stops trying to fork: the supervisor must end it.
    cgroup_supervisor.fork_every_run = path == "fork"
    script = f"{PYTHON} -c '{FORK_BOMB}' & exec sleep 0.5"
    result = cgroup_supervisor.run("sh", "-c", script, processes=20, wall_time_s=5)
    assert (result.status, result.exit_code, result.error) == (RunStatus.EXITED, 0, None)
    assert result.wall_s < 3
    started = time.monotonic()
    after = cgroup_supervisor.run("/bin/true")
    assert after.exit_code == 0
    assert after.wall_s < 0.5
    assert time.monotonic() - started < 1
    zygote = cgroup_supervisor.zygote()  # and nothing else
    for controller in CONTROLLERS:
        # Only the next run's cgroup, made in advance, is there, holding the zygote alone: the bomb's is gone.
        assert [p.name for p in (cgroup_dir / controller).iterdir() if p.is_dir()] == ["run-3"]
        _wait_for_cgroup(zygote.pid, controller, "/run-3")
        assert (cgroup_dir / controller / "run-3" / "cgroup.procs").read_text().split() == [str(zygote.pid)]


def test_processes_limit_in_proc_mode(proc_supervisor: Supervisor, tmp_path: Path) -> None:
    err = tmp_path / "err"
    # RLIMIT_NPROC counts every process of the uid on the host: a uid of its own, not nobody's, which others use.
    uid = 40000 + os.getpid() % 20000
    result = proc_supervisor.run(
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
        processes=4,
        stderr_path=str(err),
        uid=uid,
        gid=uid,
    )
    assert (result.status, result.error) == (RunStatus.EXITED, None)
    assert result.wall_s < 1.5, "forks beyond the limit must fail at once"
    assert "fork" in err.read_text().lower()


def test_a_daemon_is_killed_after_its_run(both_paths: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # One background child in the run's process group, one in a session of its own.
    script = "sleep 100 & echo $!; setsid sleep 100 & echo $!; exit 0"
    result = both_paths.run("sh", "-c", script, stdout_path=str(out))
    assert (result.status, result.exit_code) == (RunStatus.EXITED, 0)
    pids = [int(line) for line in out.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert_gone(pid)
    both_paths.zygote()  # asserts that nothing else is left


# ---------------------------------------------------------------- isolation


def test_the_program_runs_as_nobody_without_any_privilege(both_paths: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert both_paths.run("cat", "/proc/self/status", stdout_path=str(out)).exit_code == 0
    status = {key: value.split() for key, value in (line.split(":", 1) for line in out.read_text().splitlines())}
    assert status["Uid"] == [str(NOBODY)] * 4
    assert status["Gid"] == [str(NOBODY)] * 4
    assert status["Groups"] == []
    for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[caps][0], 16) == 0, caps
    assert status["NoNewPrivs"] == ["1"]


def test_the_program_inherits_no_descriptor_but_0_1_2(both_paths: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    assert both_paths.run(PYTHON, "-c", code, stdout_path=str(out)).exit_code == 0
    assert out.read_text().strip() == "[0, 1, 2, 3]"  # 3 is the directory listdir itself opened


def test_the_program_cannot_signal_the_supervisor(proc_supervisor: Supervisor, tmp_path: Path) -> None:
    err = tmp_path / "err"
    result = proc_supervisor.run("kill", "-9", str(proc_supervisor.proc.pid), stderr_path=str(err))
    assert result.status is RunStatus.EXITED and result.exit_code != 0
    assert "not permitted" in err.read_text()
    parse_pong(proc_supervisor.send(encode_ping()))


def test_the_program_cannot_trace_the_supervisor(both_paths: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "attached = libc.ptrace(16, int(sys.argv[1]), None, None)  # PTRACE_ATTACH\n"
        "print(attached, ctypes.get_errno())\n"
    )
    result = both_paths.run(PYTHON, "-c", code, str(both_paths.proc.pid), stdout_path=str(out))
    assert (result.status, result.exit_code) == (RunStatus.EXITED, 0)
    assert out.read_text().split() == ["-1", "1"], "EPERM: a run cannot trace the supervisor"
    parse_pong(both_paths.send(encode_ping()))


def test_scratch_directories_are_private_fresh_and_removed(start_supervisor: Any, shared_dir: Path) -> None:
    scratch = shared_dir / "scratch"
    scratch.mkdir(mode=0o711)
    sv = start_supervisor("--scratch", str(scratch))
    out = shared_dir / "out"
    first = sv.run(
        "sh", "-c", 'pwd; echo "$TMPDIR"; stat -c %u:%a .; echo x > left-behind', scratch=True, stdout_path=str(out)
    )
    assert first.exit_code == 0
    cwd, tmpdir, owner = out.read_text().split()
    assert cwd == tmpdir and Path(cwd).parent == scratch
    assert owner == f"{NOBODY}:700"
    sv.sync()
    # The first run's directory is gone; the next run's is made ahead, root's and empty until the run.
    (ahead,) = scratch.iterdir()
    assert ahead != Path(cwd) and list(ahead.iterdir()) == []
    assert (ahead.stat().st_uid, ahead.stat().st_mode & 0o7777) == (0, 0o700)
    second = sv.run("sh", "-c", "pwd; ls -A", scratch=True, stdout_path=str(out))
    assert second.exit_code == 0
    lines = out.read_text().split()
    assert lines == [str(ahead)]  # a new directory, and ls -A found nothing in it
    assert sv.close() == 0
    assert list(scratch.iterdir()) == []


def test_wipe_empties_the_directory_without_following_links(start_supervisor: Any, shared_dir: Path) -> None:
    wipe = shared_dir / "tmp"
    wipe.mkdir()
    wipe.chmod(0o1777)
    outside = shared_dir / "keep-me"
    outside.mkdir()
    (outside / "precious").write_text("x")
    sv = start_supervisor("--wipe", str(wipe))
    script = (
        'cd "$1" && echo a > file && mkdir -p d/e && echo b > d/e/f && chmod 000 d/e'
        ' && ln -s "$2" link && ln -s "$2/precious" d/link'
        " && i=0; while [ $i -lt 60 ]; do mkdir n && cd n; i=$((i+1)); done"
    )
    result = sv.run("sh", "-c", script, "sh", str(wipe), str(outside))
    assert result.exit_code == 0 and result.error is None
    # The wipe follows the answer, and is done before the next request is read, however soon it comes.
    assert sv.run("sh", "-c", 'test -z "$(ls -A "$1")"', "sh", str(wipe)).exit_code == 0
    sv.sync()
    assert wipe.is_dir() and list(wipe.iterdir()) == []
    assert (outside / "precious").read_text() == "x"


# ---------------------------------------------------------------- the zygote and the work between runs


def test_the_zygote_becomes_the_next_run(any_supervisor: Supervisor, tmp_path: Path) -> None:
    sv = any_supervisor
    out = tmp_path / "out"
    for n in (1, 2):
        zygote = sv.zygote()
        if "--cgroup" in sv.args:
            # It joins the next run's cgroups while the supervisor waits for the request.
            for controller in CONTROLLERS:
                _wait_for_cgroup(zygote.pid, controller, f"/run-{n}")
        result = sv.run("sh", "-c", "echo $$", stdout_path=str(out))
        assert (result.status, result.exit_code, result.error) == (RunStatus.EXITED, 0, None)
        assert int(out.read_text()) == zygote.pid
        assert_gone(zygote.pid)


def test_a_killed_zygote_is_replaced_by_a_fork(any_supervisor: Supervisor, tmp_path: Path) -> None:
    sv = any_supervisor
    out = tmp_path / "out"
    killed = sv.kill_zygote()
    result = sv.run("sh", "-c", "echo $$; exit 5", stdout_path=str(out))
    assert (result.status, result.exit_code, result.error) == (RunStatus.EXITED, 5, None)
    assert int(out.read_text()) != killed
    assert_gone(killed)  # reaped, not left a zombie
    # The next run has a zygote again, and uses it.
    zygote = sv.zygote()
    assert sv.run("sh", "-c", "echo $$", stdout_path=str(out)).exit_code == 0
    assert int(out.read_text()) == zygote.pid


def test_a_zygote_killed_in_its_cgroup_is_replaced(cgroup_supervisor: Supervisor, cgroup_dir: Path) -> None:
    sv = cgroup_supervisor
    assert sv.run("/bin/true").exit_code == 0
    sv.sync()
    # What an operator would find: the one process in the next run's cgroup (once it has joined it).
    procs = cgroup_dir / "pids" / "run-2" / "cgroup.procs"
    _eventually(lambda: procs.read_text() != "", "the zygote never joined the next run's cgroup")
    (pid,) = (int(p) for p in procs.read_text().split())
    os.kill(pid, signal.SIGKILL)
    _eventually(lambda: _dead(pid), "the zygote survived SIGKILL")
    result = sv.run(PYTHON, "-c", "b = b'x' * (20 << 20)", memory_bytes=64 * MB, processes=5)
    assert (result.status, result.exit_code, result.error) == (RunStatus.EXITED, 0, None)
    assert 20 * MB <= result.memory_bytes < 64 * MB
    assert_gone(pid)


@pytest.fixture(params=["cgroup", "proc"])
def mode_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The supervisor's arguments for cgroup or proc mode. Asked for before start_supervisor, so that the
    cgroups are removed after the supervisor has ended (not while it still makes the next run's)."""
    if request.param == "cgroup":
        return ("--cgroup", str(request.getfixturevalue("cgroup_dir")))
    return ()


def test_zygote_and_fork_give_the_same_results(
    mode_args: tuple[str, ...], start_supervisor: Callable[..., Supervisor], shared_dir: Path
) -> None:
    scratch = shared_dir / "scratch"
    scratch.mkdir(mode=0o711)
    sv = start_supervisor(*mode_args, "--scratch", str(scratch))
    out, err = shared_dir / "out", shared_dir / "err"
    (shared_dir / "in").write_text("from stdin\n")
    probe = (
        "import os; print(os.getuid(), os.getgid(), os.getgroups(), sorted(os.listdir('/proc/self/fd')),"
        " sorted(os.environ.items()), open('/proc/self/status').read().split('CapEff:')[1].split()[0], input(),"
        " flush=True); os.kill(os.getpid(), 11)"
    )
    cases: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (("sh", "-c", "exit 3"), {}),
        (("no-such-program",), {}),
        ((PYTHON, "-c", probe), {"stdin_path": str(shared_dir / "in"), "env": {"A": "1", "TMPDIR": "/x"}}),
        (("sh", "-c", "while :; do :; done"), {"cpu_time_s": 0.2}),
        (("sleep", "5"), {"wall_time_s": 0.2}),
        (("yes",), {"file_size_bytes": 1000}),
        (("sh", "-c", 'echo "$TMPDIR"; pwd; ls -A; stat -c %u:%a .; touch mine'), {"scratch": True}),
        (("/bin/true",), {"cwd": str(shared_dir / "missing")}),
    ]
    if mode_args:
        cases.append(((PYTHON, "-c", "b = b'x' * (200 << 20)"), {"memory_bytes": 50 * MB}))

    def outcome(result: RunResult) -> tuple[Any, ...]:
        flags = (result.cpu_exceeded, result.wall_exceeded, result.oom_killed, result.output_exceeded)
        return result.status, result.exit_code, result.signal, flags, result.error, out.read_bytes()[:300]

    for argv, options in cases:
        seen = []
        for fork in (False, True):
            sv.fork_every_run = fork
            out.write_bytes(b"")
            result = sv.run(*argv, stdout_path=str(out), stderr_path=str(err), **options)
            seen.append(outcome(result))
        if options.get("scratch"):  # each run has a directory of its own
            assert seen[0][-1] != seen[1][-1]
            seen = [(*o[:-1], re.sub(rb"run-\d+", b"run-N", o[-1])) for o in seen]
        assert seen[0] == seen[1], argv


LIMITS_PROBE = """
import sys
paths = {}
for line in open('/proc/self/cgroup').read().splitlines():
    _, controllers, path = line.split(':', 2)
    for controller in controllers.split(','):
        paths[controller] = path
for name in sys.argv[1:]:
    controller = name.split('.')[0]
    print(open(f'/sys/fs/cgroup/{controller}{paths[controller]}/{name}').read().strip())
"""


@pytest.mark.parametrize("path", ["zygote", "fork"])
def test_limits_are_right_however_they_change_between_runs(
    cgroup_supervisor: Supervisor, tmp_path: Path, path: str
) -> None:
    # The next run's cgroups get the previous request's limits ahead; a run writes only those that differ.
    sv = cgroup_supervisor
    sv.fork_every_run = path == "fork"
    files = ["memory.limit_in_bytes", "pids.max"]
    if (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists():
        files.append("memory.memsw.limit_in_bytes")
    out = tmp_path / "out"
    for memory, processes in [(64, 10), (64, 10), (128, 5), (None, None), (48, 7), (None, 3), (96, None), (64, 10)]:
        result = sv.run(
            PYTHON,
            "-c",
            LIMITS_PROBE,
            *files,
            stdout_path=str(out),
            memory_bytes=memory and memory * MB,
            processes=processes,
        )
        assert (result.status, result.exit_code, result.error) == (RunStatus.EXITED, 0, None)
        values = dict(zip(files, out.read_text().split(), strict=True))
        memory_values = {v for k, v in values.items() if k.startswith("memory.")}
        assert len(memory_values) == 1, values  # memory+swap follows memory both ways
        if memory is None:
            assert int(memory_values.pop()) > 1 << 60  # "unlimited"
        else:
            assert memory_values == {str(memory * MB)}
        assert values["pids.max"] == (str(processes) if processes else "max")


def test_a_large_request_reaches_the_zygote_whole(proc_supervisor: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {f"V{i}": f"{i:04d}" * 250 for i in range(400)}  # 400 kB: more than a socket buffer holds
    zygote = proc_supervisor.zygote()
    script = 'echo $$; for v in V0 V399; do eval "printf %s \\"\\$$v\\"" | wc -c; done'
    assert proc_supervisor.run("sh", "-c", script, env=env, stdout_path=str(out)).exit_code == 0
    assert out.read_text().split() == [str(zygote.pid), "1000", "1000"]


def test_a_clean_up_failure_is_reported_in_the_next_answer(
    start_supervisor: Callable[..., Supervisor], shared_dir: Path
) -> None:
    wipe = shared_dir / "tmp"
    wipe.mkdir()
    wipe.chmod(0o1777)
    sv = start_supervisor("--wipe", str(wipe))
    # A mount point cannot be removed: the wipe after the first run fails, after its answer.
    require("disk tools")
    mount = wipe / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "hatchway-unit", str(mount)], check=True)
    try:
        first = sv.run("sh", "-c", f"echo x > {wipe}/file")
        assert (first.status, first.exit_code, first.error) == (RunStatus.EXITED, 0, None)
        # The next run retries the clean-up; while it fails, nothing runs: what is left may be another run's.
        second = sv.run("sh", "-c", f"echo y > {wipe}/second")
        assert second.status is RunStatus.SETUP_FAILED
        assert second.error is not None
        assert "clean-up after the previous run failed" in second.error
        assert "wipe" in second.error and "mnt" in second.error
        assert not (wipe / "second").exists()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    # Once it succeeds, the run goes ahead and its answer still tells what happened.
    third = sv.run("sh", "-c", f"test ! -e {wipe}/file")
    assert (third.status, third.exit_code) == (RunStatus.EXITED, 0)
    assert third.error is not None and "succeeded before this run" in third.error
    fourth = sv.run("/bin/true")
    assert (fourth.exit_code, fourth.error) == (0, None)
    sv.sync()
    assert list(wipe.iterdir()) == []


# ---------------------------------------------------------------- the installed copy


def test_sandboxes_mount_a_copy_under_the_data_directory_named_by_its_content(tmp_path: Path) -> None:
    first = installed_supervisor(tmp_path / "bin")
    assert first.parent == tmp_path / "bin" and first.read_bytes() == supervisor_path().read_bytes()
    assert os.access(first, os.X_OK)
    assert installed_supervisor(tmp_path / "bin") == first, "the same build is copied once"
    assert [entry.name for entry in (tmp_path / "bin").iterdir()] == [first.name]
