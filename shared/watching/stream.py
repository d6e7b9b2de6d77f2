"""What a live stream of a job sends: each metric point as it is stored, status changes and events, in order.

A stream is a loop of `poll`s, each reading what is new since a `Cursor`: the attempt the client last saw, the
last step and the last event id. The cursor travels as every message's SSE `id`, so a client that reconnects
with `Last-Event-ID` continues exactly after what it saw: no gap, no duplicate. A resumed job (a new attempt)
logs the steps past its checkpoint again: the stream says `rewind` and sends them again from there, as the
polling endpoint's `resumed_from_step` lets a polling client do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from shared.store.models import Job
from shared.store.reads import event_rows, metric_rows, read_job
from shared.store.states import TERMINAL, JobStatus

# Rows one poll reads at most of each kind; a client far behind catches up over several polls.
BATCH = 500
CURSOR = re.compile(r"^(\d+)\.(-?\d+)\.(\d+)$")


class BadCursor(ValueError):
    """A Last-Event-ID this service did not write."""


@dataclass
class Cursor:
    """Where a client is: the attempt it saw, the last step and the last event id (-1 / 0: nothing yet)."""

    attempt: int | None = None
    step: int = -1
    event: int = 0

    def __str__(self) -> str:
        return f"{self.attempt or 0}.{self.step}.{self.event}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """A cursor from a Last-Event-ID (`attempt.step.event`); a fresh one for None or empty."""
        if not text:
            return cls()
        match = CURSOR.match(text.strip())
        if match is None:
            raise BadCursor(
                f"Last-Event-ID {text!r} is not a cursor of this stream (attempt.step.event, e.g. 1.42.97): "
                "send the id of the last message you received, or none to start from the beginning"
            )
        attempt, step, event = (int(part) for part in match.groups())
        return cls(attempt or None, step, event)


@dataclass
class Message:
    """One server-sent event: its name, its JSON data, and the cursor after it (its id)."""

    event: str
    data: str
    id: str


# What a `status` message reports a change of: status, attempt, resume point, pending request, error.
JobState = tuple[str, int, int | None, str | None, str | None]


@dataclass
class Poll:
    """What one poll found; the job's state it saw (give it to the next poll); whether the stream is over (the job
    ended and everything was sent)."""

    messages: list[Message] = field(default_factory=list)
    state: JobState | None = None
    ended: bool = False


def _job_state(connection: Connection, job_id: str) -> JobState | None:
    columns = (Job.status, Job.attempt, Job.resumed_from_step, Job.requested_action, Job.error)
    row = connection.execute(select(*columns).where(Job.id == job_id)).first()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


def poll(connection: Connection, job_id: str, cursor: Cursor, last_state: JobState | None) -> Poll:
    """What is new for the client at `cursor` (advanced in place); `last_state` is the previous poll's `state`
    (None: the client was told nothing of the job yet, so it is told now). Raises LookupError for an unknown job."""
    state = _job_state(connection, job_id)
    if state is None:
        raise LookupError(job_id)
    status, attempt, resumed_from, _, _ = state
    result = Poll(state=state)
    new_attempt = cursor.attempt is not None and attempt != cursor.attempt
    if new_attempt and resumed_from is not None and resumed_from < cursor.step:
        cursor.step = resumed_from
        data = f'{{"step":{resumed_from},"attempt":{attempt}}}'
        result.messages.append(Message("rewind", data, str(Cursor(attempt, cursor.step, cursor.event))))
    cursor.attempt = attempt or None
    if state != last_state:
        job_json = read_job(connection, job_id) or "null"
        result.messages.append(Message("status", job_json, str(cursor)))
    events = event_rows(connection, job_id, after_id=cursor.event, limit=BATCH)
    for event_id, item in events.items:
        cursor.event = event_id
        result.messages.append(Message("event", item, str(cursor)))
    metrics = metric_rows(connection, job_id, after_step=cursor.step, limit=BATCH)
    for step, item in metrics.items:
        cursor.step = step
        result.messages.append(Message("metric", item, str(cursor)))
    drained = not events.has_more and not metrics.has_more
    result.ended = JobStatus(status) in TERMINAL and drained
    return result
