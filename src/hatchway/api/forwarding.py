"""Any worker of a fleet answers for any job. Most of a job is in the shared store; two things are not: a running
job's live output (it is written on the worker that runs it) and a job's artifacts (kept where it ran). A request
for them that reaches another worker is forwarded to the one holding them, at the address it registered, with
the client's credentials, and its answer streamed back as it comes.

A forwarded request carries `FORWARDED_BY`; a worker never forwards such a request again, so two workers that
disagree about who holds a job (one lease just expired, say) answer from what they have instead of bouncing it.
"""

from __future__ import annotations

import httpx
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from hatchway.errors import WorkerUnreachable
from hatchway.jobs.peer_logs import FORWARDED_BY, AddressOf
from hatchway.models import Job

_PASSED_ON = ("authorization", "accept", "last-event-id")
_PASSED_BACK = ("content-type", "content-disposition")
_CONNECT_TIMEOUT_S = 5.0


class Peers:
    """Forwards requests about jobs another worker holds to that worker."""

    def __init__(self, worker_id: str, address_of: AddressOf | None) -> None:
        self._worker_id = worker_id
        self._address_of = address_of
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(_CONNECT_TIMEOUT_S, read=None))

    def holder(self, job: Job, request: Request) -> str | None:
        """The id of the other worker that holds `job`'s files, if this request should go there."""
        if self._address_of is None or job.worker_id is None or job.worker_id == self._worker_id:
            return None
        if FORWARDED_BY.lower() in request.headers:
            return None
        return job.worker_id

    async def forward(self, request: Request, worker_id: str) -> StreamingResponse:
        """The answer of worker `worker_id` to this request, streamed; WorkerUnreachable if it does not answer."""
        assert self._address_of is not None
        address = await self._address_of(worker_id)
        if address is None:
            raise WorkerUnreachable(f"worker {worker_id} holds this, and it is not in the fleet's register")
        headers = {name: value for name, value in request.headers.items() if name in _PASSED_ON}
        headers[FORWARDED_BY] = self._worker_id
        outgoing = self._client.build_request(
            request.method, address.rstrip("/") + request.url.path, params=request.query_params, headers=headers
        )
        try:
            answer = await self._client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            raise WorkerUnreachable(
                f"worker {worker_id} holds this, and it does not answer at {address}: {exc}"
            ) from exc
        return StreamingResponse(
            answer.aiter_bytes(),
            status_code=answer.status_code,
            headers={
                key: value for key, value in answer.headers.items() if key in ("content-type", "content-disposition")
            },
            background=BackgroundTask(answer.aclose),
        )

    async def close(self) -> None:
        await self._client.aclose()
