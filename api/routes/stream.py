"""/v1/jobs/{id}/stream: a job's metric points, status changes and events as Server-Sent Events, live."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import REMEMBER_SECONDS, Reader, identify_key, presented_key, require_visible_job
from api.deps import Services, ServicesDep
from api.errors import DATABASE_ERRORS, RETRY_AFTER_SECONDS, ApiError, database_away
from api.schemas import ErrorBody
from shared.store.reads import read_job
from shared.watching.stream import BadCursor, Cursor, JobState, Poll, poll

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
# Seconds between keep-alive comments on a quiet stream (proxies close idle connections).
PING_SECONDS = 15

STREAM_DESCRIPTION = """`text/event-stream` messages, each with an `id` to reconnect from:
- `status`: the job (as `GET /v1/jobs/{id}`), first, and again whenever its status, attempt or error changes;
- `event`: each of its events (as `GET /v1/jobs/{id}/events`), oldest first;
- `metric`: each metric point as it is stored (as `GET /v1/jobs/{id}/metrics`), in step order;
- `rewind`: `{"step": N, "attempt": A}`: a resumed attempt logs the steps after N again, and they follow;
- `end`: the job, once it has ended and everything above was sent; the stream then closes.
"""


@router.get(
    "/{job_id}/stream",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": STREAM_DESCRIPTION},
        404: {"model": ErrorBody},
    },
)
async def stream_job(
    job_id: str,
    request: Request,
    svc: ServicesDep,
    caller: Reader,
    last_event_id: Annotated[
        str | None, Header(description="The `id` of the last message received: continue right after it.")
    ] = None,
    after: Annotated[
        str | None, Query(description="As Last-Event-ID, for clients that cannot set headers.", max_length=64)
    ] = None,
) -> EventSourceResponse:
    """Follow a job live: every metric point as it is stored, status changes and events, until the job ends.

    Reconnecting with `Last-Event-ID` (browsers' EventSource do it themselves) continues after the last message
    received: no gap and no duplicate.
    """
    try:
        cursor = Cursor.parse(last_event_id or after)
    except BadCursor as error:
        raise ApiError(422, "invalid_request", str(error)) from None
    with svc.database.reading() as connection:
        require_visible_job(connection, job_id, caller)
    key, _ = presented_key(request)
    return EventSourceResponse(_messages(svc, job_id, cursor, key), ping=PING_SECONDS)


def _poll(svc: Services, job_id: str, cursor: Cursor, state: JobState | None) -> Poll:
    with svc.database.reading() as connection:
        return poll(connection, job_id, cursor, state)


def _final_job(svc: Services, job_id: str) -> str:
    with svc.database.reading() as connection:
        return read_job(connection, job_id) or "null"


def _still_valid(svc: Services, key: str | None) -> bool:
    """Whether the stream's key still signs in (a stream may stay open for days; a revoked key ends it)."""
    if svc.settings.auth == "off" or key is None:
        return True
    try:
        identify_key(key, svc)
    except ApiError:
        return False
    except DATABASE_ERRORS as error:  # the database is away: the key is checked again once it is back
        if not database_away(error):
            raise
    return True


async def _messages(svc: Services, job_id: str, cursor: Cursor, key: str | None) -> AsyncIterator[Any]:
    state: JobState | None = None
    checked = time.monotonic()
    while True:
        if time.monotonic() - checked > REMEMBER_SECONDS:
            if not await anyio.to_thread.run_sync(_still_valid, svc, key):
                return
            checked = time.monotonic()
        try:
            found = await anyio.to_thread.run_sync(_poll, svc, job_id, cursor, state)
        except LookupError:  # deleted while followed
            return
        except DATABASE_ERRORS as error:  # away for a while: the stream waits and its cursor misses nothing
            if not database_away(error):
                raise
            await anyio.sleep(RETRY_AFTER_SECONDS)
            continue
        for message in found.messages:
            yield ServerSentEvent(data=message.data, event=message.event, id=message.id)
        state = found.state
        if found.ended:
            final = await anyio.to_thread.run_sync(_final_job, svc, job_id)
            yield ServerSentEvent(data=final, event="end", id=str(cursor))
            return
        await anyio.sleep(svc.settings.stream_poll_seconds)
