"""The seam of job sources: the protocol the worker runs them by, their status, and the backoff and pause they
wait with. What masters pulled from share beyond that (claiming, reporting) is `hatchway.sources.pulled`'s; the
HTTP API, the source clients push to, is `hatchway.api.server`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from hatchway.jobs.service import JobService

log = logging.getLogger(__name__)

BACKOFF_STEP_S = 5.0
BACKOFF_MAX_S = 30.0


class EventsStatus(BaseModel):
    """Where a source's event bus stands: a tasks source's Redis (see docs/sources.md)."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="The Redis it publishes to (without its password).")
    published: int = Field(description="Events Redis accepted since start-up.")
    dropped: int = Field(description="Events lost since start-up: Redis down, slow, or too far behind.")
    connected: bool = Field(description="False while the last attempt to publish failed.")


class SourceStatus(BaseModel):
    """One source as `GET /sources` and `/health` show it."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    url: str
    pushes: bool = Field(
        default=False,
        description="True for the HTTP API, which clients push work to: it polls nothing and sends no reports "
        "(its clients ask for their results).",
    )
    last_poll_at: datetime | None = Field(description="When the master was last asked for work (null: never).")
    polls: int = Field(default=0, description="Requests to the master for work since start-up.")
    claims: int = Field(
        description="Jobs and gradings it brought in since start-up: items taken from a master, or created over "
        "the HTTP API."
    )
    reports_sent: int
    report_failures: int = Field(default=0, description="Reports the master did not accept (each is retried).")
    reports_pending: int = Field(description="Results stored and not yet accepted by the master.")
    errors: int = Field(description="Failed requests to the master since start-up.")
    backoff_s: float = Field(description="How long the source waits before it asks again after failures (0: none).")
    last_error: str | None
    events: EventsStatus | None = Field(
        default=None, description="A tasks source's event bus, if it publishes its tasks' events (null: none)."
    )


class JobSource(Protocol):
    """A source of jobs. It talks to the job service facade only.

    Its lifecycle depends on which way the work comes. A source clients push work to (`pushes`: the HTTP API)
    starts with the worker, before the last run is recovered, and is told to stop only once the drain is over,
    every job final and every report sent, so that its clients see their jobs end. A source the worker pulls
    from starts once recovery is done (what it claims can run at once) and is told to stop as the drain begins;
    then it sends what reports it can and returns."""

    name: str
    pushes: bool

    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        """Take work until `stop`, then return: a pulled source claims while there are free slots and reports
        every result; a pushed one serves its clients."""
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
