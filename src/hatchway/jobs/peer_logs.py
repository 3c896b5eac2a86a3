"""A running job's live output, read from the worker of the fleet that runs it.

A job's output is written on the worker that runs it; the fleet's store has it only once the job ends. A part of
another worker that follows a job as it runs (a pulled task's events, published by the worker that took the task)
reads it from there, over that worker's own HTTP API (`GET /jobs/{id}/logs?follow=true`), at the address it
registered, with a token of this worker's: the workers of a fleet share their API tokens (docs/fleet.md).

A request from one worker to another carries `FORWARDED_BY`; a worker never passes such a request on again, so
two workers that disagree about who runs a job (a lease just expired) answer from what they have.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from hatchway.errors import WorkerUnreachable
from hatchway.models import Job

FORWARDED_BY = "X-Hatchway-Forwarded-By"
_CONNECT_TIMEOUT_S = 5.0

AddressOf = Callable[[str], Awaitable[str | None]]
"""The address (`http://host:port`) a worker of the fleet registered, by its id; None if it is not known."""


class PeerLogs:
    """Follows the output of jobs other workers of the fleet run."""

    def __init__(self, worker_id: str, address_of: AddressOf, token: str | None) -> None:
        self._worker_id = worker_id
        self._address_of = address_of
        self._headers = {FORWARDED_BY: worker_id}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(_CONNECT_TIMEOUT_S, read=None))

    def elsewhere(self, job: Job) -> bool:
        """Whether another worker runs `job` (so its output is there, not here)."""
        return job.worker_id is not None and job.worker_id != self._worker_id and not job.state.is_final

    async def follow(self, job: Job) -> AsyncIterator[str]:
        """`job`'s stdout and stderr as the worker running it reads them out, live, until the job ends there.
        Raises WorkerUnreachable if that worker is not known, does not answer or refuses (before any text), or
        goes away halfway (after the text it sent)."""
        assert job.worker_id is not None
        address = await self._address_of(job.worker_id)
        if address is None:
            raise WorkerUnreachable(f"worker {job.worker_id} runs job {job.id}, and it is not in the fleet's register")
        url = f"{address.rstrip('/')}/jobs/{job.id}/logs"
        params = {"follow": "true", "stream": "both"}
        try:
            async with self._client.stream("GET", url, params=params, headers=self._headers) as answer:
                if answer.status_code != httpx.codes.OK:
                    detail = (await answer.aread()).decode("utf-8", "replace")[:200]
                    raise WorkerUnreachable(
                        f"worker {job.worker_id} at {address} answered {answer.status_code} for job {job.id}'s "
                        f"output: {detail}"
                    )
                async for text in answer.aiter_text():
                    yield text
        except httpx.HTTPError as exc:
            raise WorkerUnreachable(
                f"worker {job.worker_id} runs job {job.id}, and it does not answer at {address}: {exc}"
            ) from exc

    async def close(self) -> None:
        await self._client.aclose()
