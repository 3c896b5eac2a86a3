"""A pulled task's lifecycle on the queue-pull platform's event bus: Redis pub/sub, as its own services publish it.

The platform's services read these channels (its storage worker keeps evaluations and their logs from them), so
hatchway publishes what the platform's queue worker and executor did, field for field:

- `evaluation:running` when the task's program starts: `{"eval_id", "container_id", "executor_id", "timeout"}`;
- `evaluation:{eval_id}:logs` while it runs: `{"eval_id", "sequence", "timestamp", "content", "executor_id"}`,
  one message per batch of output lines as they come (stdout and stderr, `content` the lines without the last
  newline, so that joining contents with newlines gives the output back), `sequence` counting from 1; then one
  with `"is_final": true` and `content` the whole stdout, a newline and the whole stderr (if any);
- `evaluation:completed` (exit code 0, or a timeout) or `evaluation:failed` (any other end) once it has ended:
  `{"eval_id", "status", "output", "error", "exit_code", "executor_id", "completed_at"}` with `status` completed,
  failed or timeout, `output` its stdout and `error` its stderr;
- `evaluation:failed` with `{"eval_id", "error"}` for a task that never ran (refused, or lost by a restart).

`executor_id` is the worker's id. `evaluation:queued` is not published: the platform's API does that when the task
is submitted, before any worker sees it (its storage worker would create the evaluation again).

In a fleet, another worker may run the task's job: its output is then read, live, from that worker
(jobs/peer_logs.py); one that cannot be reached costs the lines as they come, never the final ones.

A task the worker took up again after a restart (its container still running) gets only its final events: its
start and the lines before the restart were published by the run before.

Events are sent in order by one publisher, off the tasks' path: a Redis that is down or slow costs events
(counted, and logged once per outage), never a task or its report. An event is sent at most once, except the
final ones of a job that ended just before a restart of the worker, which are sent again after it (their report
was not sent either): a consumer of `evaluation:completed` sees the same end twice, never a different one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from hatchway.errors import WorkerUnreachable
from hatchway.jobs.logs import job_logs
from hatchway.jobs.peer_logs import PeerLogs
from hatchway.jobs.service import JobService
from hatchway.models import Job, JobState, Stream, utcnow
from hatchway.sources.base import EventsStatus
from hatchway.sources.task_outcome import TaskStatus, error_of, exit_code_of, ran, status_of

log = logging.getLogger(__name__)

RUNNING = "evaluation:running"
COMPLETED = "evaluation:completed"
FAILED = "evaluation:failed"
QUEUE_SIZE = 10_000
"""Events waiting to be sent, at most; past that (Redis slow or down) new ones are dropped."""
_SEND_TIMEOUT_S = 5.0
_CONNECT_TIMEOUT_S = 2.0
_CLOSE_GRACE_S = 5.0
_FOLLOW_GRACE_S = 10.0
"""How long a job's final events wait for its last output lines to be published first."""
_STARTED_CHECK_S = 5.0


def logs_channel(eval_id: str) -> str:
    return f"evaluation:{eval_id}:logs"


def redacted(url: str) -> str:
    """`url` without a password, to be shown and logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class EventBus:
    """Publishes messages on one Redis, in the order given, from a task of its own: `publish` never waits."""

    def __init__(self, url: str, *, source: str) -> None:
        self.url = url
        self._source = source
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_timeout=_SEND_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # one try: a message that cannot go now is counted lost, not held up
        )
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_SIZE)
        self.published = self.dropped = 0
        self._down_since_drops: int | None = None  # dropped when the outage began; None: no outage

    def status(self) -> EventsStatus:
        return EventsStatus(
            url=redacted(self.url),
            published=self.published,
            dropped=self.dropped,
            connected=self._down_since_drops is None,
        )

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((channel, json.dumps(payload)))
        except asyncio.QueueFull:
            self._lost(f"over {QUEUE_SIZE} events wait to be sent")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Send while the block runs; then what is left, within a few seconds."""
        sender = asyncio.create_task(self._send_all(), name=f"source-{self._source}-events")
        try:
            yield
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), _CLOSE_GRACE_S)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self.dropped += self._queue.qsize()
            await self._client.aclose()

    async def _send_all(self) -> None:
        while True:
            channel, message = await self._queue.get()
            try:
                await self._send(channel, message)
            finally:
                self._queue.task_done()

    async def _send(self, channel: str, message: str) -> None:
        try:
            async with asyncio.timeout(_SEND_TIMEOUT_S):
                await self._client.publish(channel, message)
        except (RedisError, OSError, TimeoutError) as exc:
            self._lost(f"{type(exc).__name__}: {exc}")
            return
        self.published += 1
        if self._down_since_drops is not None:
            log.info(
                "the event bus %s answers again; %d events were lost while it did not",
                redacted(self.url),
                self.dropped - self._down_since_drops,
                extra={"event": "task_events_back", "source": self._source},
            )
            self._down_since_drops = None

    def _lost(self, why: str) -> None:
        if self._down_since_drops is None:
            self._down_since_drops = self.dropped
            log.warning(
                "the event bus %s cannot take events (%s): they are dropped until it does; tasks go on",
                redacted(self.url),
                why,
                extra={"event": "task_events_unavailable", "source": self._source},
            )
        self.dropped += 1


class TaskEvents:
    """Publishes each task's lifecycle on an `EventBus`, as the platform's own services do (see the module)."""

    def __init__(self, bus: EventBus, *, executor_id: str, peer_logs: PeerLogs | None = None) -> None:
        """`peer_logs` reads the output of a job another worker of the fleet runs; None: one worker alone."""
        self.bus = bus
        self._executor_id = executor_id
        self._peer_logs = peer_logs
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._sequences: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.bus.running():
            try:
                yield
                if self._tasks:  # final events still being put together: give them a moment
                    await asyncio.wait(set(self._tasks), timeout=_CLOSE_GRACE_S)
            finally:
                for task in list(self._tasks):
                    task.cancel()
                if self._peer_logs is not None:
                    await self._peer_logs.close()

    def taken(self, jobs: JobService, job_id: str, eval_id: str, timeout_s: float) -> None:
        """A task just became job `job_id`: publish its start (with its `timeout_s` as the task gave it) and its
        output as it comes."""
        follower = self._spawn(self._follow(jobs, job_id, eval_id, timeout_s), f"events-{job_id}")
        self._followers[job_id] = follower

    def ended(self, job: Job) -> None:
        """The task's job has ended (or was found ended at start-up): publish how, once its output is out."""
        self._spawn(self._finish(job), f"events-end-{job.id}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(_guarded(work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _follow(self, jobs: JobService, job_id: str, eval_id: str, timeout_s: float) -> None:
        started = await _started(jobs, job_id)
        if started.started_at is None:
            return  # it never ran: its end says so
        container = jobs.container(job_id)
        self.bus.publish(
            RUNNING,
            {
                "eval_id": eval_id,
                "container_id": None if container is None else container[:12],
                "executor_id": self._executor_id,
                "timeout": timeout_s,
            },
        )
        partial = ""
        try:
            async for text in self._output(jobs, started):
                lines, _, partial = (partial + text).rpartition("\n")
                if lines:
                    self._log_line(eval_id, job_id, lines)
        except WorkerUnreachable as exc:
            log.warning(
                "task %s's output cannot be followed; its final output is published when it ends: %s",
                eval_id,
                exc,
                extra={"event": "task_events_output_unreachable", "job_id": job_id},
            )
        if partial:
            self._log_line(eval_id, job_id, partial)

    def _output(self, jobs: JobService, job: Job) -> AsyncIterator[str]:
        """The running job's stdout and stderr as they come, from this worker or the one of the fleet running it."""
        if self._peer_logs is not None and self._peer_logs.elsewhere(job):
            return self._peer_logs.follow(job)
        return job_logs(jobs, job.id, [Stream.STDOUT, Stream.STDERR], tail=None, follow=True)

    def _log_line(self, eval_id: str, job_id: str, content: str, **final: bool) -> None:
        sequence = self._sequences.get(job_id, 0) + 1
        self._sequences[job_id] = sequence
        self.bus.publish(
            logs_channel(eval_id),
            {
                "eval_id": eval_id,
                "sequence": sequence,
                "timestamp": utcnow().isoformat(),
                "content": content,
                "executor_id": self._executor_id,
                **final,
            },
        )

    async def _finish(self, job: Job) -> None:
        eval_id = job.external_id or ""
        follower = self._followers.pop(job.id, None)
        if follower is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(follower), _FOLLOW_GRACE_S)
        try:
            if not ran(job):
                self.bus.publish(FAILED, {"eval_id": eval_id, "error": error_of(job)})
                return
            if job.stdout or job.stderr:
                whole = job.stdout + ("\n" + job.stderr if job.stderr else "")
                self._log_line(eval_id, job.id, whole, is_final=True)
            status = status_of(job)
            said = TaskStatus.FAILED if status == TaskStatus.ERROR else status  # the bus knows no `error`
            self.bus.publish(
                FAILED if said == TaskStatus.FAILED else COMPLETED,
                {
                    "eval_id": eval_id,
                    "status": said.value,
                    "output": job.stdout,
                    "error": _error_text(job, status),
                    "exit_code": exit_code_of(job),
                    "executor_id": self._executor_id,
                    "completed_at": _instant(job.finished_at or utcnow()),
                },
            )
        finally:
            self._sequences.pop(job.id, None)


def _error_text(job: Job, status: TaskStatus) -> str:
    """The event's `error`: the program's stderr, and after it why hatchway stopped it, if it did (a limit, a kill:
    what the platform's executor has no word for)."""
    if status != TaskStatus.ERROR:
        return job.stderr
    separator = "\n" if job.stderr and not job.stderr.endswith("\n") else ""
    return job.stderr + separator + error_of(job)


async def _guarded(work: Coroutine[Any, Any, None]) -> None:
    """Events are best effort: whatever goes wrong putting one together is logged, and costs that task's events."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("a task's events could not be published", extra={"event": "task_events_failed"})


async def _started(jobs: JobService, job_id: str) -> Job:
    """The job once it runs, or has ended."""
    while True:
        with jobs.signals.watching(job_id) as changed:
            job = await jobs.get(job_id)
            if job.state == JobState.RUNNING or job.state.is_final:
                return job
            await jobs.signals.wait(changed, _STARTED_CHECK_S)


def _instant(moment: datetime) -> str:
    """An instant as the platform's event models write it (pydantic's JSON: ISO 8601, UTC as `Z`)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
