"""A grading's custom checker: compiled once, then run per test in a sandbox of its own, with the input, the
expected and the program's output as files; its exit code, first line and `points=` decide the test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from hatchway.engines.base import Handle, Mount, Role
from hatchway.grading.sandboxes import IO, Sandboxes
from hatchway.grading.workspace import GradeTest, Workspace, read_file, show, write_owned
from hatchway.judge.checkers import parse_custom
from hatchway.judge.profiles import Profile
from hatchway.judge.request import CustomChecker, GradeSpec
from hatchway.judge.verdicts import CheckOutcome
from hatchway.sandbox.protocol import RunRequest, RunStatus

MIB = 1024 * 1024
CHECK = "/check"
_CHECKER_CPU_S = 10.0
_CHECKER_WALL_S = 20.0
_CHECKER_MEMORY_MB = 512
_CHECKER_PROCESSES = 32
_CHECKER_OUTPUT_BYTES = 64 * 1024


class CheckerBroken(Exception):
    """The custom checker itself is broken (it does not compile): every test would be IE."""


class CustomCheckerSandbox:
    """The compiled custom checker in its own sandbox: it reads the input, expected and actual output as files."""

    def __init__(
        self, *, sandboxes: Sandboxes, handle: Handle, profile: Profile, workspace: Workspace, uid: int, gid: int
    ) -> None:
        self._sandboxes = sandboxes
        self._handle = handle
        self._profile = profile
        self._workspace = workspace
        self._uid, self._gid = uid, gid
        self._env = sandboxes.environment(handle, profile.env)

    async def check(self, test: GradeTest, output: Path) -> CheckOutcome:
        shown = {"input": test.input_path, "expected": test.expected_path, "output": output}
        await asyncio.to_thread(show, self._workspace.check, shown)
        run = await self._sandboxes.run(
            self._handle,
            RunRequest(
                id=f"check-{test.name}",
                argv=(*self._profile.run_argv(), *(f"{CHECK}/{name}" for name in shown)),
                env=self._env,
                uid=self._uid,
                gid=self._gid,
                cpu_time_s=_CHECKER_CPU_S,
                wall_time_s=_CHECKER_WALL_S,
                memory_bytes=self._profile.memory_limit_mb(_CHECKER_MEMORY_MB) * MIB,
                processes=_CHECKER_PROCESSES,
                file_size_bytes=_CHECKER_OUTPUT_BYTES,
                stdout_path=f"{IO}/out",
                stderr_path=f"{IO}/err",
                scratch=True,
            ),
        )
        if run.status in (RunStatus.EXEC_FAILED, RunStatus.SETUP_FAILED):
            return CheckOutcome.failed(f"the checker could not run: {run.error}")
        if run.oom_killed:
            return CheckOutcome.failed("the checker ran out of memory")
        said = await read_file(self._workspace.checker_io / "out", _CHECKER_OUTPUT_BYTES)
        return parse_custom(run.exit_code, run.signal, run.cpu_exceeded or run.wall_exceeded, said)


async def open_custom_checker(
    spec: GradeSpec,
    sandboxes: Sandboxes,
    workspace: Workspace,
    *,
    uid: int,
    gid: int,
    on_build_output: Callable[[bytes], None],
) -> CustomCheckerSandbox | None:
    """Compile the grading's custom checker and open its sandbox; None if it has none. Raises CheckerBroken."""
    if not isinstance(spec.checker, CustomChecker):
        return None
    assert spec.checker_profile is not None
    profile = spec.checker_profile
    source = workspace.checker_box / profile.source_name
    await asyncio.to_thread(write_owned, source, spec.checker.code, uid, gid)
    compiled = await sandboxes.compile(
        role=Role.CHECKER,
        profile=profile,
        disk=workspace.checker_compile_disk,
        main=profile.source_name,
        uid=uid,
        gid=gid,
        timeout_s=spec.limits.compile_timeout_s,
        memory_mb=spec.limits.compile_memory_mb,
        processes=spec.limits.processes,
    )
    if compiled is not None:
        on_build_output(compiled.output.encode())
    if compiled is not None and compiled.exit_code != 0:
        raise CheckerBroken(f"the custom checker did not compile (exit {compiled.exit_code}): {compiled.output}")
    handle = await sandboxes.open(
        role=Role.CHECKER,
        image=profile.image,
        memory_mb=profile.memory_limit_mb(_CHECKER_MEMORY_MB),
        processes=_CHECKER_PROCESSES,
        mounts=(
            Mount(workspace.checker_box, "/box"),
            Mount(workspace.check, CHECK),
            Mount(workspace.checker_io, IO, read_only=False),
        ),
    )
    return CustomCheckerSandbox(
        sandboxes=sandboxes,
        handle=handle,
        profile=profile,
        workspace=workspace,
        uid=uid,
        gid=gid,
    )
