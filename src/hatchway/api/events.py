"""/events: the lifecycle events of every job, as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from hatchway.api.deps import EventsDep
from hatchway.errors import InvalidRequest
from hatchway.jobs.event_feed import EventFilter, EventsMissed, FeedItem
from hatchway.models import JobKind

router = APIRouter(tags=["events"])

KEEP_ALIVE_S = 15.0
_RETRY_MS = 3000  # how long an EventSource waits before it reconnects (after a worker restart, say)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless stream of events."}},
)
async def events(
    feed: EventsDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[
        int | None, Query(ge=0, description="Resume after this event id (for clients that cannot set the header).")
    ] = None,
    job_id: Annotated[str | None, Query(description="Only this job's events.")] = None,
    kind: Annotated[JobKind | None, Query(description="Only events of jobs (`job`) or gradings (`grade`).")] = None,
) -> StreamingResponse:
    """Every change of a job's state as it happens: `job_queued`, `job_building`, `job_running`, `job_requeued`,
    `job_finished`. With `Last-Event-ID` (the header wins over the `last_event_id` parameter), the events after
    that id first; without, only new ones. A comment every 15 s keeps the connection open."""
    after = last_event_id
    if last_event_id_header is not None:
        if not last_event_id_header.strip().isdigit():
            raise InvalidRequest(f"Last-Event-ID {last_event_id_header!r} is not an event id (a whole number)")
        after = int(last_event_id_header)
    followed = feed.follow(after, EventFilter(job_id=job_id, kind=kind), idle_s=KEEP_ALIVE_S)
    return StreamingResponse(
        _sse(followed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(feed: AsyncIterator[FeedItem]) -> AsyncIterator[str]:
    yield f"retry: {_RETRY_MS}\n: hatchway events\n\n"  # sent at once, so the client sees the stream has begun
    async for item in feed:
        if item is None:
            yield ": keep-alive\n\n"
        elif isinstance(item, EventsMissed):
            notice = {"after": item.after, "resumed_after": item.resumed_after, "message": item.message}
            # Its id is where the stream resumes: a client that reconnects now is not told of the same gap again.
            yield f"id: {item.resumed_after}\nevent: events_missed\ndata: {json.dumps(notice)}\n\n"
        else:
            yield f"id: {item.id}\nevent: {item.type.value}\ndata: {item.model_dump_json()}\n\n"
