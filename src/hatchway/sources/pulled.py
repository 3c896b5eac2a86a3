"""What every master the worker pulls items from shares, whatever its dialect: the claim loop's rhythm, the
outbox report loop, and the status bookkeeping.

A dialect (one module per kind of master) says how to ask for an item, how to turn one into a job or a grade,
and what the master is told of a job that has ended. Everything else is here, once:

- claiming: one item per free slot, held while the item is asked for and queued; at once again while items come
  and slots are free, `poll_interval_s` when there is none, a backoff when the master cannot be reached;
- reporting: a job's stored final state is its report, sent until the master answers 2xx, then marked reported,
  so a report survives any restart and is sent exactly once; the reporter holds the job while it sends it
  (`JobService.hold_report`), so of the workers of a fleet that pull from one master, one sends each report, and
  a survivor sends those of a worker that died;
- taking up: an item taken from the master is recorded (the claim journal) until it is stored as a job; a worker
  takes up the items recorded for it and never stored (after a crash, or handed over from a worker that died);
- an item that cannot run is kept as a refused job, so its report is stored and sent like any other; one whose
  files could not be downloaded for a reason that may pass (unreachable, 5xx) is tried again a few times first.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import httpx

from hatchway.errors import DOWNLOAD_RETRY_S, HatchwayError, ShuttingDown, download_may_pass
from hatchway.jobs.service import JobService
from hatchway.models import Job, utcnow
from hatchway.settings import SourceConfig
from hatchway.sources.base import Backoff, SourceStatus, pause

log = logging.getLogger(__name__)

_RESCAN_S = 5.0
_EXTERNAL_ID_CHARS = 200  # what a label value may hold
_NOT_JSON = object()  # what an answer that is not JSON reads as (None is JSON's null)
MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The most a master's answer to a claim may hold: an item, with the files it carries inline."""
MAX_ID_CHARS = 256
"""The longest item id a source takes (the id goes into the item's job id, labels and report URL)."""


class MasterError(Exception):
    """The master could not be reached, or answered with an error (retried with a backoff)."""


class ItemRefused(Exception):
    """An item that cannot run here (a malformed item, an unknown language, a policy refusal); the message says
    why, and goes to the master as the item's result."""


@dataclass(frozen=True)
class Report:
    """What the master is told of one item: the request that carries its result."""

    method: str
    path: str
    body: dict[str, Any]


class PulledSource(abc.ABC):
    """A master the worker pulls items from, each reported exactly once. Subclasses speak one master's dialect."""

    kind: ClassVar[str]
    pushes = False
    claim_method: ClassVar[str]
    claim_path: ClassVar[str]
    item_name: ClassVar[str] = "item"
    """What the master calls an item, for logs."""
    gone: ClassVar[tuple[int, ...]] = (404, 409, 410)
    """Answers to a report that mean the master wants no result for the item (it does not know it, or has its
    result): the report is dropped, not sent again."""

    def __init__(self, config: SourceConfig, *, worker_id: str) -> None:
        self.name = config.name
        self._config = config
        self._worker_id = worker_id
        self._headers = {} if config.api_key is None else {"X-API-Key": config.api_key.get_secret_value()}
        self._claim_backoff = Backoff(f"asking {config.name} for work")
        self._report_backoff = Backoff(f"reporting to {config.name}")
        self._ended = asyncio.Event()
        self._done_claiming = asyncio.Event()
        self._last_poll_at: datetime | None = None
        self._claims = self._sent = self._errors = self._pending = self._polls = self._report_failures = 0
        self._last_error: str | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._seen_ended: set[str] = set()

    # The dialect

    @abc.abstractmethod
    def _external_id(self, item: dict[str, Any]) -> str | None:
        """The item's id, which its report names; None if it has none (it cannot be reported, so is not taken)."""

    @abc.abstractmethod
    async def _take(self, jobs: JobService, external_id: str, item: dict[str, Any]) -> str:
        """Queue the item's job (a job or a grade, its origin `self.name` and `external_id`, labelled by
        `_labels`) and return its id; raises ItemRefused, or a HatchwayError, when it cannot run."""

    @abc.abstractmethod
    def _report(self, job: Job) -> Report:
        """What the master is told of an ended job of this source (a refused one included)."""

    def _refused_image(self) -> str | None:
        """The image a refused item's job names, for the reader of GET /jobs; None when none applies."""
        return None

    def _job_ended(self, job: Job) -> None:
        """Called once per run of the worker for each ended job of this source whose report it is about to send
        (also those found so after a restart, and those of a worker that died), before it goes, by the worker that
        holds the report: in a fleet, one worker. It must not wait. Nothing by default."""
        return None

    # What every source does

    def status(self) -> SourceStatus:
        backoff = max(self._claim_backoff.delay_s, self._report_backoff.delay_s)
        return SourceStatus(
            name=self.name,
            kind=self.kind,
            url=self._config.url,
            last_poll_at=self._last_poll_at,
            polls=self._polls,
            claims=self._claims,
            reports_sent=self._sent,
            report_failures=self._report_failures,
            reports_pending=self._pending,
            errors=self._errors,
            backoff_s=backoff,
            last_error=self._last_error,
        )

    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        await self._resume(jobs, stop)
        async with httpx.AsyncClient(base_url=self._config.url, timeout=self._config.request_timeout_s) as http:
            reporter = asyncio.create_task(self._report_loop(jobs, http), name=f"source-{self.name}-reports")
            claimer = asyncio.create_task(self._claim_loop(jobs, http, stop), name=f"source-{self.name}-claims")
            try:
                # The report loop ends only once claiming is done: if it ends first, what stopped it must not go
                # unseen (the worker's supervisor logs it and stops), or reports would pile up unsent.
                await asyncio.wait((claimer, reporter), return_when=asyncio.FIRST_COMPLETED)
                if reporter.done():
                    reporter.result()
                    raise RuntimeError(f"source {self.name}: the report loop ended while claiming went on")
                claimer.result()
                self._done_claiming.set()
                await reporter
            finally:
                for task in (claimer, reporter, *self._watchers):
                    task.cancel()

    def _labels(self, external_id: str) -> dict[str, str]:
        return {"source": self.name, "external_id": external_id[:_EXTERNAL_ID_CHARS]}

    def _note_error(self, error: str) -> None:
        self._errors += 1
        self._last_error = error

    # Claiming

    async def _resume(self, jobs: JobService, stop: asyncio.Event) -> None:
        """Take up the items recorded for this worker and never stored: taken by an earlier run that died before
        storing them, or by a worker that died, whose claims were handed to this one. The master will not hand
        them out again (storing is idempotent: one stored already is found)."""
        for external_id, recorded in await jobs.claims(self.name):
            if stop.is_set():
                return
            log.info(
                "%s %s was claimed and never stored: taking it up",
                self.item_name,
                external_id,
                extra={"event": "source_claim_resumed", "source": self.name},
            )
            await self._take_up(jobs, external_id, json.loads(recorded), stop)

    async def _claim_loop(self, jobs: JobService, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Between two items none of this loop's is half taken: any recorded for this worker were handed to it.
            await self._resume(jobs, stop)
            got_work = False
            async with jobs.slot(stop) as free:
                if not free:
                    return
                try:
                    item = await self._next(http)
                except MasterError as exc:
                    self._note_error(str(exc))
                    wait_s = self._claim_backoff.failed(str(exc), source=self.name)
                else:
                    self._claim_backoff.succeeded()
                    wait_s = 0.0
                    if item is not None:
                        got_work = True
                        await self._claim(jobs, item, stop)
            if wait_s:
                await pause(stop, wait_s)
            elif not got_work:
                await pause(stop, self._config.poll_interval_s)

    async def _next(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        """The next item, or None when the master has none (204, 404, an empty body or JSON `null`) or handed out
        something that is not an item."""
        self._last_poll_at = utcnow()
        self._polls += 1
        asked = f"{self.claim_method} {self.claim_path}"
        status, body = await self._ask(http, asked)
        if status in (204, 404) or (status == 200 and not body.strip()):
            return None
        if status in (401, 403):
            raise MasterError(f"{self._config.url} refused the API key ({status}): check api_key")
        if status != 200:
            raise MasterError(f"{self._config.url} answered {status} to {asked}")
        try:
            item = json.loads(body)
        # Whatever a master sends costs at most its one answer: not JSON, nested past the parser's depth, a number
        # of more digits than Python converts.
        except (ValueError, UnicodeDecodeError, RecursionError):
            item = _NOT_JSON
        if item is None:  # JSON `null`: how the queue-pull worker's queue service says it has nothing
            return None
        if not isinstance(item, dict):
            self._bad_item(f"{self._config.url} answered {asked} with something that is not a JSON object")
            return None
        return item

    async def _ask(self, http: httpx.AsyncClient, asked: str) -> tuple[int, bytes]:
        """The master's answer to a claim: its status and body, read within `request_timeout_s` in all (a body
        that trickles in does not hold the source up for longer) and up to `MAX_ANSWER_BYTES`."""
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                async with http.stream(self.claim_method, self.claim_path, headers=self._headers) as answer:
                    body = bytearray()
                    async for chunk in answer.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_ANSWER_BYTES:
                            raise MasterError(f"{self._config.url} answered {asked} with over {MAX_ANSWER_BYTES} bytes")
                    return answer.status_code, bytes(body)
        except httpx.HTTPError as exc:
            raise MasterError(f"{self._config.url} cannot be reached: {exc!r}") from exc
        except TimeoutError as exc:
            raise MasterError(
                f"{self._config.url} took over {self._config.request_timeout_s:g} s to answer {asked}"
            ) from exc

    def _bad_item(self, error: str) -> None:
        self._note_error(error)
        log.warning("%s", error, extra={"event": "source_bad_item", "source": self.name})

    async def _claim(self, jobs: JobService, item: dict[str, Any], stop: asyncio.Event) -> None:
        external_id = self._external_id(item)
        if external_id is None or len(external_id) > MAX_ID_CHARS or not external_id.isprintable():
            shown = repr(item)[:200] if external_id is None else repr(external_id[:100])
            self._bad_item(f"a {self.item_name} without a usable id cannot be reported: {shown}")
            return
        self._claims += 1
        await jobs.record_claim(self.name, external_id, json.dumps(item))
        await self._take_up(jobs, external_id, item, stop)

    async def _take_up(self, jobs: JobService, external_id: str, item: dict[str, Any], stop: asyncio.Event) -> None:
        """Store a claimed item as a job, or refused as one; then its claim record can go. A download that failed
        for a reason that may pass is tried again a few times before the item is refused for it."""
        retries = iter(DOWNLOAD_RETRY_S)
        while True:
            try:
                job_id = await self._take(jobs, external_id, item)
                break
            except ShuttingDown:
                return  # its claim stays: the next start takes it up
            except (ItemRefused, HatchwayError, ValueError, TypeError, LookupError, RecursionError) as exc:
                # Malformed, not allowed here, too large, of types the dialect did not expect: the one item is
                # refused, and the source goes on.
                if not isinstance(exc, ItemRefused | HatchwayError):
                    log.warning(
                        "%s %s could not be read",
                        self.item_name,
                        external_id,
                        exc_info=exc,
                        extra={"event": "source_bad_item", "source": self.name},
                    )
                    exc = ItemRefused(f"the {self.item_name} could not be read: {str(exc)[:500]}")
                wait_s = next(retries, None) if download_may_pass(exc) else None
                if wait_s is None:
                    await self._refuse(jobs, external_id, str(exc))
                    await jobs.forget_claim(self.name, external_id)
                    return
                self._note_error(str(exc))
                log.warning(
                    "%s %s: %s; trying again in %.0f s",
                    self.item_name,
                    external_id,
                    exc,
                    wait_s,
                    extra={"event": "source_download_retry", "source": self.name},
                )
                await pause(stop, wait_s)
                if stop.is_set():
                    return  # its claim stays: the next start takes it up
        await jobs.forget_claim(self.name, external_id)
        watcher = asyncio.create_task(self._watch(jobs, job_id), name=f"source-{self.name}-watch")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, jobs: JobService, job_id: str) -> None:
        while not (await jobs.wait_final(job_id, 3600)).state.is_final:
            pass
        self._ended.set()

    async def _refuse(self, jobs: JobService, external_id: str, error: str) -> None:
        """Keep the item as a refused job: its report is stored and sent like any other."""
        log.warning(
            "%s %s refused: %s",
            self.item_name,
            external_id,
            error,
            extra={"event": "source_item_refused", "source": self.name},
        )
        await jobs.refuse(self.name, external_id, error, labels=self._labels(external_id), image=self._refused_image())
        self._ended.set()

    # Reporting

    async def _report_loop(self, jobs: JobService, http: httpx.AsyncClient) -> None:
        while True:
            self._ended.clear()
            self._pending = len(await jobs.unreported(self.name))
            failed = not await self._report_all(jobs, http)
            if self._done_claiming.is_set() and not self._pending and not self._watchers:
                return
            # Reports another worker holds are looked at again after a while, once it has sent them or died.
            wait_s = self._report_backoff.delay_s if failed else _RESCAN_S
            await pause(None, wait_s, wake=None if failed else self._ended)

    async def _report_all(self, jobs: JobService, http: httpx.AsyncClient) -> bool:
        """Send the outbox's reports, oldest first, each held while it goes; False once the master refuses one."""
        while True:
            async with jobs.hold_report(self.name) as held:
                if held is None:
                    return True
                job = held.job
                if job.id not in self._seen_ended:  # the reporter publishes its end: one worker, once per run
                    self._seen_ended.add(job.id)
                    self._job_ended(job)
                if not await self._send(http, self._report(job)):
                    self._report_failures += 1
                    return False
                await held.reported(utcnow())
            self._seen_ended.discard(job.id)
            self._sent += 1
            self._pending = max(self._pending - 1, 0)

    async def _send(self, http: httpx.AsyncClient, report: Report) -> bool:
        """Send one report; True once the master has it."""
        asked = f"{report.method} {report.path}"
        try:
            answer = await http.request(report.method, report.path, json=report.body, headers=self._headers)
        except httpx.HTTPError as exc:
            self._note_error(f"{self._config.url} cannot be reached: {exc!r}")
            self._report_backoff.failed(self._last_error or "", source=self.name)
            return False
        if answer.is_success or answer.status_code in self.gone:
            if not answer.is_success or _not_found(answer):
                log.warning(
                    "the master answered %s %s to %s: it does not know the item; the report is dropped",
                    answer.status_code,
                    answer.text[:200],
                    asked,
                    extra={"event": "source_report_dropped", "source": self.name},
                )
            self._report_backoff.succeeded()
            return True
        if answer.status_code in (401, 403):
            self._note_error(f"{self._config.url} refused the API key ({answer.status_code}) to {asked}: check api_key")
        else:
            self._note_error(f"{self._config.url} answered {answer.status_code} to {asked}")
        self._report_backoff.failed(self._last_error or "", source=self.name)
        return False


def _not_found(answer: httpx.Response) -> bool:
    """Whether a 2xx answer to a report says `{"status": "not_found"}`: how the queue-pull worker's queue service
    answers a failure for a task it does not know (it is done, or was never handed out): nothing more to send."""
    try:
        said = answer.json()
    except (ValueError, RecursionError):
        return False
    return isinstance(said, dict) and said.get("status") == "not_found"
