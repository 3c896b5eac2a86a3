"""The seam of job sources: the protocol the worker runs them by, their status, and the backoff and pause they
wait with. What masters pulled from share beyond that (claiming, reporting) is `hatchway.sources.pulled`'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from hatchway.service import JobService

log = logging.getLogger(__name__)

BACKOFF_STEP_S = 5.0
BACKOFF_MAX_S = 30.0


class SourceStatus(BaseModel):
    """One source as `GET /sources` and `/health` show it."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    url: str
    last_poll_at: datetime | None = Field(description="When the master was last asked for work.")
    polls: int = Field(default=0, description="Requests to the master for work since start-up.")
    claims: int = Field(description="Items taken from the master since start-up.")
    reports_sent: int
    report_failures: int = Field(default=0, description="Reports the master did not accept (each is retried).")
    reports_pending: int = Field(description="Results stored and not yet accepted by the master.")
    errors: int = Field(description="Failed requests to the master since start-up.")
    backoff_s: float = Field(description="How long the source waits before it asks again after failures (0: none).")
    last_error: str | None


class JobSource(Protocol):
    """A source of work the worker pulls from. It talks to the job service facade only."""

    name: str

    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        """Claim work while there are free slots and report every result, until `stop`; then send what reports
        it can and return."""
        ...

    def status(self) -> SourceStatus:
        """Where it stands now."""
        ...


@dataclass
class Backoff:
    """5, 10, 15 ... up to 30 s between attempts, with jitter; a failure is logged once per step."""

    what: str
    failures: int = 0
    logged: set[float] = field(default_factory=set)

    @property
    def delay_s(self) -> float:
        return min(BACKOFF_STEP_S * self.failures, BACKOFF_MAX_S) if self.failures else 0.0

    def failed(self, error: str, **fields: object) -> float:
        """Count a failure and return how long to wait (jittered by up to 20 %)."""
        self.failures += 1
        step = self.delay_s
        if step not in self.logged:
            self.logged.add(step)
            log.warning(
                "%s failed: %s; trying again in %.0f s",
                self.what,
                error,
                step,
                extra={"event": "source_backoff", **fields},
            )
        return step * random.uniform(0.8, 1.0)

    def succeeded(self) -> None:
        self.failures = 0
        self.logged.clear()


async def pause(stop: asyncio.Event | None, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Wait `seconds`, or less if `stop` (or `wake`) is set first."""
    events = [event for event in (stop, wake) if event is not None]
    if not events:  # asyncio.wait refuses an empty set
        await asyncio.sleep(seconds)
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
