"""Job events: the one place that writes them (state changes, errors, notes from the worker and the API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.store.json_sql import json_safe
from shared.store.models import JobEvent, utcnow


def by_key(prefix: str | None) -> dict[str, str]:
    """What an event says of the key that caused it (by its prefix: the key itself is never written anywhere)."""
    return {"by": prefix} if prefix else {}


def add_event(session: Session, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
    """Record something that happened to a job."""
    session.add(
        JobEvent(job_id=job_id, kind=kind, message=json_safe(message), data=json_safe(data), created_at=utcnow())
    )
