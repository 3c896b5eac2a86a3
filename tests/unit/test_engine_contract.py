"""The `Engine` contract on `FakeEngine`: the fake every runner, recovery, pool and grading unit test stands on."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from hatchway.engines.base import Engine, Process
from hatchway.engines.fake import FakeEngine, FakeProgram
from tests.conftest import BUSYBOX, OWN_COMMAND, PYTHON
from tests.contracts.engine import EngineContract, EngineSubject


class FakeSubject(EngineSubject):
    """Fake engines sharing one host's sandboxes, with the test images on it."""

    runs_code = FakeEngine.runs_code

    def __init__(self) -> None:
        self._host: dict[str, Any] = {}
        self._programs: dict[str, FakeProgram] = {}
        """One set for every engine: what the host's images hold."""
        self._names = itertools.count(1)
        super().__init__(self.engine_of("unit"), "unit")

    def script(
        self, *, stdout: bytes = b"", stderr: bytes = b"", exit_code: int = 0, runs_until_stopped: bool = False
    ) -> Process:
        return self._program(
            FakeProgram(stdout=stdout, stderr=stderr, exit_code=exit_code, runs_until_stopped=runs_until_stopped)
        )

    def memory_hog(self) -> tuple[str, Process]:
        # Scripted: the fake enforces no limit (runs_code is False), it only reports an OOM kill as Docker does.
        return PYTHON, self._program(FakeProgram(exit_code=137, oom_killed=True))

    def own_command(self, stdin: bytes) -> str:
        self._programs[OWN_COMMAND] = FakeProgram(stdout=b"/app\n" + stdin)  # what the image's CMD prints
        return OWN_COMMAND

    def engine_of(self, worker_id: str) -> Engine:
        engine = FakeEngine(images={BUSYBOX, PYTHON, OWN_COMMAND}, worker_id=worker_id, sandboxes=self._host)
        engine.programs = self._programs
        return engine

    def _program(self, program: FakeProgram) -> Process:
        name = f"program-{next(self._names)}"
        self._programs[name] = program
        return Process((name,))


class TestFakeEngine(EngineContract):
    @pytest.fixture
    def subject(self) -> FakeSubject:
        return FakeSubject()
