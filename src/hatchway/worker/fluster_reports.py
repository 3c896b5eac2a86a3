"""Fluster's `ReportJobState` (issue 19; docs/fluster-plan.md, "As built: registration and reports"): every state
change of a Fluster job this worker took, told to the controller once, in order, durably.

The store's event log already records every state change in the transaction that makes it; the reporter reads it
from its cursor (`JobStore.cursor`, named after the worker id the controller knows), sends a report for each change
the controller wants, and moves the cursor past it once the controller has answered. So a change made before a
`kill -9` is reported after the restart, one reported is not reported again (unless the worker dies between the
answer and the cursor's move, which repeats that one report), and pruning keeps every event after the cursor.

Like the real worker it reports RUNNING and the final state (SUCCEEDED, FAILED, KILLED), never PENDING or BUILDING
(the controller marked the job RUNNING when it dispatched it; a BUILDING report would set it back). A job lost to a
restart ends FAILED, which is a change like any other.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from hatchway.fluster import methods
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.jobs.service import source_id_prefix
from hatchway.models import Job, JobState, utcnow
from hatchway.output.events import JobEvent
from hatchway.settings import Settings
from hatchway.settings.fluster import FlusterConfig
from hatchway.sources.base import pause
from hatchway.sources.fluster_jobs import (
    ORIGIN,
    WORKER_LABEL,
    fluster_error,
    fluster_exit_code,
    fluster_ids,
    fluster_state,
)
from hatchway.store.base import JobStore
from hatchway.worker.fluster_registration import (
    ControllerClient,
    FlusterRegistration,
    FlusterStatus,
    Identity,
    identity,
    register_request,
)

log = logging.getLogger(__name__)

BATCH = 200
REPORTED = frozenset({JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED})
"""The states the controller is told of, as the real worker tells them."""
_PREFIX = source_id_prefix(ORIGIN)


def cursor_name(worker_id: str) -> str:
    """The reporter's cursor in the store, for Fluster worker `worker_id`."""
    return f"fluster-reports:{worker_id}"


class FlusterReporter:
    """Sends the controller the state changes of this worker's Fluster jobs: the named loop `run`."""

    def __init__(
        self,
        *,
        store: JobStore,
        client: ControllerClient,
        worker_id: str,
        owns_unlabeled: bool,
        retry_s: float,
        poll_s: float,
    ) -> None:
        self._store = store
        self._client = client
        self._worker_id = worker_id
        self._owns_unlabeled = owns_unlabeled
        self._retry_s = retry_s
        self._poll_s = poll_s
        self._cursor = cursor_name(worker_id)
        self._wake = asyncio.Event()
        self.sent = 0
        self.position = 0

    def changed(self, job_id: str) -> None:
        """A job of this worker changed state (a `JobSignals` listener): report without waiting for the poll."""
        if job_id.startswith(_PREFIX):
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: report what is pending, then wait for a change (or the poll, the safety net of changes made
        by another worker of a fleet); after a failure, try again every `retry_s`. At `stop`, a last try for the
        changes made meanwhile (the drain's); what it cannot send waits in the store for the next start."""
        async with self._client.http() as http:
            while not stop.is_set():
                self._wake.clear()
                caught_up = await self.report_pending(http)
                await pause(stop, self._poll_s if caught_up else self._retry_s, self._wake if caught_up else None)
            await self.report_pending(http)

    async def report_pending(self, http: httpx.AsyncClient) -> bool:
        """Report every change after the cursor, in order; False if the controller failed one (it is next). The
        cursor moves past each report as soon as it is answered, and past changes passed over with the batch."""
        while True:
            position = self.position = await self._store.cursor(self._cursor)
            batch = await self._store.events_after(position, limit=BATCH)
            if not batch.events:
                return True
            seen = position
            for event in batch.events:
                request = await self.request_for(event)
                if request is None:
                    seen = event.id
                    continue
                if await self._client.call(http, methods.REPORT_JOB_STATE, request) is None:
                    await self._advance(position, seen)
                    return False
                self.sent += 1
                if event.state.is_final:  # its result reached its source, as GET /jobs says of other sources' jobs
                    await self._store.mark_reported(event.job_id, utcnow())
                log.info(
                    "reported %s of fluster job %s attempt %d",
                    pb.JobState.Name(request.state),
                    request.job_id,
                    request.attempt_id,
                    extra={"event": "fluster_reported", "job_id": event.job_id, "worker_id": self._worker_id},
                )
                if not await self._advance(position, event.id):
                    break  # read again from where the cursor stands
                position = seen = event.id
            else:
                await self._advance(position, seen)

    async def _advance(self, position: int, to: int) -> bool:
        if to == position:
            return True
        if await self._store.advance_cursor(self._cursor, position, to):
            self.position = to
            return True
        log.warning(
            "the cursor %s moved under this reporter: another worker reports as Fluster worker %s",
            self._cursor,
            self._worker_id,
            extra={"event": "fluster_cursor_moved", "worker_id": self._worker_id},
        )
        return False

    async def request_for(self, event: JobEvent) -> pb.Controller.ReportJobStateRequest | None:
        """The report of `event`, or None if it is not one the controller is told of by this worker."""
        if not event.job_id.startswith(_PREFIX) or event.state not in REPORTED:
            return None
        owner = event.labels.get(WORKER_LABEL)
        if owner != self._worker_id and not (owner is None and self._owns_unlabeled):
            return None
        job = await self._store.get(event.job_id)
        if job is None or job.origin != ORIGIN or job.external_id is None:
            return None
        return report(job, event.state, self._worker_id)


def report(job: Job, state: JobState, worker_id: str) -> pb.Controller.ReportJobStateRequest:
    """The report of `job` reaching `state`: a final state with its end (exit code, error, time), set only where
    there is one, since the schema's fields have explicit presence."""
    job_id, attempt_id = fluster_ids(job.external_id or "")
    request = pb.Controller.ReportJobStateRequest(
        worker_id=worker_id, job_id=job_id, attempt_id=attempt_id, state=fluster_state(state)
    )
    if state.is_final:
        exit_code = fluster_exit_code(job)
        if exit_code is not None:
            request.exit_code = exit_code
        if state != JobState.SUCCEEDED:
            request.error = fluster_error(job)
        if job.finished_at is not None:
            request.finished_at_ms = int(job.finished_at.timestamp() * 1000)
    return request


@dataclass(frozen=True)
class FlusterLink:
    """The worker's side of Fluster's ControllerService: registration and state reports, two named loops."""

    client: ControllerClient
    who: Identity
    registration: FlusterRegistration
    reporter: FlusterReporter

    def status(self) -> FlusterStatus:
        return FlusterStatus(
            url=self.client.url,
            worker_id=self.who.worker_id,
            address=self.who.address,
            registered=self.registration.registered,
            last_registered_at=self.registration.last_registered_at,
            errors=self.client.errors,
            last_error=self.client.last_error,
            reports_sent=self.reporter.sent,
            reported_event=self.reporter.position,
        )


def fluster_link(settings: Settings, config: FlusterConfig, store: JobStore) -> FlusterLink:
    """The link `config` describes, for this worker and store."""
    client = ControllerClient(config)
    who = identity(settings, config)
    return FlusterLink(
        client=client,
        who=who,
        registration=FlusterRegistration(
            client=client,
            request=lambda: register_request(who, client.url),
            retry_s=config.register_retry_s,
            heartbeat_s=config.heartbeat_s,
        ),
        reporter=FlusterReporter(
            store=store,
            client=client,
            worker_id=who.worker_id,
            owns_unlabeled=settings.store_url is None,
            retry_s=config.register_retry_s,
            poll_s=settings.poll_interval_s,
        ),
    )
