"""What the rest of the worker holds of an active job: its `RunControl` (kill it, see its live figures), and the
`Running` protocol of whatever runs it once started (an engine's own sandbox, or a pooled container)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from hatchway.engines.base import ExitStatus, Handle, OutputSink
from hatchway.engines.volumes import Volume
from hatchway.models import Reason, Resources
from hatchway.output.capture import OutputCapture
from hatchway.pools.slot import Slot


class Running(Protocol):
    """What the runner needs of whatever runs a started job: an engine's own sandbox, or a pooled container."""

    async def wait(self, handle: Handle, sink: OutputSink) -> ExitStatus: ...

    async def stop(self, handle: Handle, grace_s: float) -> None: ...

    def resources(self, handle: Handle) -> Resources: ...

    async def remove(self, handle: Handle) -> None: ...


@dataclass
class RunControl:
    """How the rest of the worker steers one active job, and what it can see of it."""

    job_id: str
    kill_requested: asyncio.Event = field(default_factory=asyncio.Event)
    kill_grace_s: float = 0.0
    kill_reason: Reason = Reason.KILLED
    output_limit: asyncio.Event = field(default_factory=asyncio.Event)
    capture: OutputCapture | None = None
    engine: Running | None = None
    handle: Handle | None = None
    volume: Volume | None = None
    slot: Slot | None = None
    """The pooled container serving the job, if one does (its volume is then the container's)."""

    def kill(self, grace_s: float, reason: Reason = Reason.KILLED) -> None:
        if not self.kill_requested.is_set():
            self.kill_grace_s = grace_s
            self.kill_reason = reason
            self.kill_requested.set()

    def resources(self) -> Resources | None:
        """Live figures of the running container, if there is one."""
        if self.engine is None or self.handle is None:
            return None
        return self.engine.resources(self.handle)
