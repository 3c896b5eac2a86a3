"""Callbacks: a job's final state POSTed to the `callback_url` its client gave, signed, and retried until the
receiver has it.

The pending delivery is part of the job from its submission on (`Job.callback`, state `pending`), so it is due the
moment the store records the job's final state, in that same write: no crash can fall between the two, and after a
restart every delivery still pending is found in the store and sent. Each attempt is recorded on the job, and
exactly one records the delivery as `delivered` (or, given up, `failed`). On the wire it is at least once: the
worker may die after the receiver answered and before the answer was recorded, so every attempt of one delivery
carries the same `X-Hatchway-Delivery` id for the receiver to deduplicate by.

In a fleet every worker sends the callbacks of every job (any worker's) that are due; each attempt is held in the
store for the one sender making it (`due_callbacks(hold_until=)`), so two workers never send one at once, and a
lost worker's pending callbacks are sent by a survivor, once its hold has run out.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import hashlib
import hmac
import logging
import random
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import SecretStr

from hatchway import __version__
from hatchway.egress import AddressPolicy, GuardedTransport, Refused, shown
from hatchway.errors import may_pass
from hatchway.grading.service import result_of
from hatchway.models import CallbackState, CallbackStatus, Job, utcnow
from hatchway.sources.base import pause
from hatchway.store.base import JobStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hatchway-Signature"
DELIVERY_HEADER = "X-Hatchway-Delivery"
EVENT_HEADER = "X-Hatchway-Event"
USER_AGENT = f"hatchway/{__version__}"
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0
MAX_RETRY_AFTER_S = 3600.0
"""The longest wait a receiver's Retry-After is followed for (the delivery window, `callback_retry_s`, still
ends it)."""
_RESULTS = {CallbackState.DELIVERED: "delivered", CallbackState.PENDING: "retry", CallbackState.FAILED: "failed"}
_PARALLEL = 8  # attempts under way at once, so that one slow receiver does not hold up the others
_RESCAN_S = 30.0  # a safety net: a job that ends wakes the sender
_DRAIN_S = 10.0
_DRAIN_MAX = 1000  # deliveries given a last try at shutdown
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
_HOLD_MARGIN_S = 10.0
"""How long, beyond two timeouts, a sender holds the deliveries it is trying: one whose worker died is tried
again by another once the hold is over."""
UNREACHABLE = "the receiver could not be reached (refused or failed; the worker's log says why)"
"""What a delivery that got no answer records, whatever the cause: its address refused by policy, unresolvable,
closed, or silent. Told apart, they would let a client map the worker's networks; the log tells them apart."""


def sign(body: bytes, secret: str) -> str:
    """The `X-Hatchway-Signature` of `body`: `sha256=` and the hex HMAC-SHA256 of its exact bytes under `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay_s(attempts: int, *, first_s: float = FIRST_RETRY_S, max_s: float = MAX_RETRY_S) -> float:
    """How long to wait after `attempts` failed attempts: 1, 2, 4 ... up to 60 s, less up to 20 % of jitter, so
    that many deliveries failing together (a receiver down) do not all come back at the same instant."""
    step: float = min(first_s * 2.0 ** min(max(attempts - 1, 0), 32), max_s)
    return step * random.uniform(0.8, 1.0)


def retry_after_s(value: str | None, *, now: datetime) -> float | None:
    """The wait a `Retry-After` header asks for (seconds, or an HTTP date), at most `MAX_RETRY_AFTER_S`; None for
    no header or one that cannot be read."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def verdict(status: int) -> CallbackState:
    """What an answer with HTTP `status` means for a delivery: `delivered` (2xx), `pending` (try again: 408, 429
    and 5xx) or `failed` (the receiver refuses it: any other status, redirects included, which are not followed
    since their target never passed the URL policy)."""
    if 200 <= status < 300:
        return CallbackState.DELIVERED
    if may_pass(status):
        return CallbackState.PENDING
    return CallbackState.FAILED


def payload(job: Job) -> tuple[str, bytes]:
    """The event a final job's callback announces, and its body: the job as `GET /jobs/{id}` shows it (a grading
    as `GET /grade/{id}` does) without `callback`, which describes this very delivery. It is made from the stored
    job alone, so every attempt, before and after a restart, sends the same bytes."""
    if job.spec.kind == "grade":
        return "grade.finished", result_of(job).model_dump_json(exclude={"callback"}).encode()
    return "job.finished", job.model_dump_json(exclude={"callback"}).encode()


class CallbackSender:
    """Delivers the callbacks of jobs that have ended, in the background; `ended` listens to `JobSignals`."""

    def __init__(
        self,
        *,
        store: JobStore,
        secret: SecretStr | None,
        retry_s: float,
        timeout_s: float,
        worker_id: str,
        first_retry_s: float = FIRST_RETRY_S,
        max_retry_s: float = MAX_RETRY_S,
        addresses: AddressPolicy | None = None,
    ) -> None:
        self._store = store
        self._addresses = addresses or AddressPolicy()
        self._secret = secret
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._worker_id = worker_id
        self._first_retry_s = first_retry_s
        self._max_retry_s = max_retry_s
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._under_way: dict[str, asyncio.Task[None]] = {}
        self._broken: BaseException | None = None
        self._warned_unsigned = False
        self.attempts: collections.Counter[str] = collections.Counter()
        """Attempts since start-up by result: delivered, retry (to be tried again), failed (given up)."""

    def ended(self, job: Job) -> None:
        """A job has been stored in its final state (a `JobSignals` end listener): its callback is due now."""
        if job.callback is not None:
            self._wake.set()

    def next_change(self) -> asyncio.Event:
        """An event set when an attempt is next recorded; take it *before* looking at the job."""
        return self._changed

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; then try each pending delivery once more, briefly, and leave what is still
        pending in the store for the next start."""
        async with httpx.AsyncClient(
            timeout=self._timeout_s,
            headers={"User-Agent": USER_AGENT},
            transport=GuardedTransport(self._addresses),
            trust_env=False,
        ) as http:
            try:
                while not stop.is_set():
                    self._wake.clear()
                    wait_s = await self._start_due(http, everything=False)
                    await pause(stop, wait_s, wake=self._wake)
                    if self._broken is not None:
                        raise self._broken
                await self._start_due(http, everything=True)
                if self._under_way:
                    await asyncio.wait(list(self._under_way.values()), timeout=min(self._timeout_s, _DRAIN_S))
            finally:
                attempts = list(self._under_way.values())
                for attempt in attempts:
                    attempt.cancel()
                await asyncio.gather(*attempts, return_exceptions=True)

    async def _start_due(self, http: httpx.AsyncClient, *, everything: bool) -> float:
        """Start an attempt for each pending delivery that is due, up to `_PARALLEL` under way (with
        `everything`: for each one, due or not); return how long until the next one is due. When an attempt is
        next due is kept on the job, so a restart does not cut a receiver's backoff short."""
        now = utcnow()
        due_by, room = (_FAR_FUTURE, _DRAIN_MAX) if everything else (now, _PARALLEL - len(self._under_way))
        if room > 0:
            # Held for this sender while it tries them: no other worker of a fleet picks them meanwhile, and those
            # under way here are not handed out again.
            hold_until = now + timedelta(seconds=self._timeout_s * 2 + _HOLD_MARGIN_S)
            for job in await self._store.due_callbacks(due_by, limit=room, hold_until=hold_until):
                if job.id not in self._under_way:
                    self._under_way[job.id] = asyncio.create_task(self._deliver(http, job), name=f"callback-{job.id}")
        next_at = await self._store.next_callback_at(now)
        return _RESCAN_S if next_at is None else min(max((next_at - now).total_seconds(), 0.0), _RESCAN_S)

    async def _deliver(self, http: httpx.AsyncClient, job: Job) -> None:
        """Make one attempt and record it. What goes wrong besides the HTTP (the store) stops the sender, and
        with it the worker, rather than let it try again and again."""
        try:
            await self._store.record_callback(job.id, await self._attempt(http, job))
        except Exception as exc:
            self._broken = exc
        finally:
            del self._under_way[job.id]
            self._wake.set()
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _attempt(self, http: httpx.AsyncClient, job: Job) -> CallbackStatus:
        """POST the job's callback once; what the delivery looks like after it."""
        callback = job.callback
        assert callback is not None, "only jobs with a pending callback are delivered"
        event, body = payload(job)
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: callback.delivery_id, EVENT_HEADER: event}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._secret.get_secret_value())
        elif not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning(
                "callback_secret is not set: callbacks go unsigned, and receivers cannot tell them from forgeries",
                extra={"event": "callback_unsigned", "worker_id": self._worker_id},
            )
        attempts = callback.attempts + 1
        attempted_at = utcnow()
        status: int | None = None
        asked_wait_s: float | None = None
        error: str | None
        try:
            answer = await http.post(callback.url, content=body, headers=headers)
        except (Refused, httpx.HTTPError) as exc:
            # Refused by policy too is tried again, as a receiver that did not answer is: were it given up at once,
            # the delivery's state would tell which names resolve to the worker's own networks.
            state, error = CallbackState.PENDING, UNREACHABLE
            log.warning(
                "callback to %s got no answer: %s",
                shown(callback.url),
                exc if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}",
                extra={"event": "callback_unreachable", "job_id": job.id, "worker_id": self._worker_id},
            )
        else:
            status = answer.status_code
            state = verdict(status)
            asked_wait_s = retry_after_s(answer.headers.get("retry-after"), now=utcnow())
            error = None if state == CallbackState.DELIVERED else f"the receiver answered {status}"
            if answer.is_redirect:
                error = f"{error}; redirects are not followed"
        done = utcnow()
        next_attempt_at = None
        if state == CallbackState.PENDING:
            delay_s = retry_delay_s(attempts, first_s=self._first_retry_s, max_s=self._max_retry_s)
            if asked_wait_s is not None:  # the receiver said when to come back (429, 503): not sooner
                delay_s = max(delay_s, asked_wait_s)
            next_attempt_at = done + timedelta(seconds=delay_s)
            # The window runs from the job's end; a delivery that was pending across a restart gets one try more.
            if next_attempt_at > (job.finished_at or attempted_at) + timedelta(seconds=self._retry_s):
                state, next_attempt_at = CallbackState.FAILED, None
                error = f"{error}; given up after {attempts} attempts (callback_retry_s is {self._retry_s:g})"
        updated = callback.model_copy(
            update={
                "state": state,
                "attempts": attempts,
                "last_status": status,
                "last_error": error,
                "last_attempt_at": attempted_at,
                "next_attempt_at": next_attempt_at,
                "delivered_at": done if state == CallbackState.DELIVERED else None,
            }
        )
        self._log(job.id, updated)
        self.attempts[_RESULTS[state]] += 1
        return updated

    def _log(self, job_id: str, callback: CallbackStatus) -> None:
        fields = {
            "job_id": job_id,
            "worker_id": self._worker_id,
            "attempts": callback.attempts,
            "status": callback.last_status,
        }
        if callback.state == CallbackState.DELIVERED:
            log.info("callback delivered", extra={"event": "callback_delivered", **fields})
        elif callback.state == CallbackState.FAILED:
            log.warning(
                "callback failed for good: %s", callback.last_error, extra={"event": "callback_failed", **fields}
            )
        else:
            wait_s = 0.0 if callback.next_attempt_at is None else (callback.next_attempt_at - utcnow()).total_seconds()
            log.warning(
                "callback attempt %d failed: %s; trying again in %.0f s",
                callback.attempts,
                callback.last_error,
                wait_s,
                extra={"event": "callback_retry", **fields},
            )
