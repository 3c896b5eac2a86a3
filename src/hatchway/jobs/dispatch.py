"""Dispatching: each claimed or recovered job runs under its own `RunControl`, on the runner for its kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from hatchway.engines.base import Found
from hatchway.jobs.control import RunControl
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.ports import PortAllocator
from hatchway.jobs.runner import JobRunner
from hatchway.models import Job, JobKind


class KindRunner(Protocol):
    """Runs one job of a kind to its end (a grading's runner, say)."""

    async def run(self, job: Job, control: RunControl) -> Job: ...


class Dispatcher:
    """Starts jobs on their kind's runner and keeps their controls, from the claim to the end: a kill can never
    miss a job that has one. The controls are shared with the job service, which steers jobs through them."""

    def __init__(
        self,
        *,
        runner: JobRunner,
        runners: Mapping[JobKind, KindRunner],
        signals: JobSignals,
        ports: PortAllocator,
        controls: dict[str, RunControl],
    ) -> None:
        self._runner = runner
        self._runners = runners
        self._signals = signals
        self._ports = ports
        self.controls = controls
        self.launch_listeners: list[Callable[[RunControl], None]] = []
        """Told of each claimed job's control as it is made (a stop asked of it before is applied then)."""

    def launch(self, job: Job) -> Awaitable[None]:
        """Run a claimed job: its control exists from now on."""
        control = self.controls[job.id] = RunControl(job.id)
        for listener in self.launch_listeners:
            listener(control)
        self._signals.notify(job.id)  # claimed: it is building now
        runner = self._runners.get(job.spec.kind, self._runner)
        return self._controlled(job.id, runner.run(job, control))

    def resume(self, job: Job, found: Found) -> Awaitable[None]:
        """Take up a job the last run left running, in the container recovery found for it."""
        control = self.controls[job.id] = RunControl(job.id)
        self._ports.claim(job.id, job.run.ports)
        return self._controlled(job.id, self._runner.resume(job, found, control))

    def owned(self) -> set[str]:
        """What active jobs own: their ids, and the names of the pooled containers serving some of them."""
        pooled = {control.slot.name for control in self.controls.values() if control.slot is not None}
        return set(self.controls) | pooled

    async def _controlled(self, job_id: str, work: Awaitable[Job]) -> None:
        try:
            await work
        finally:
            del self.controls[job_id]
