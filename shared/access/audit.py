"""The audit log: who changed what outside a job's own events (keys, projects and their limits, secrets, files).

A job's own changes (submit, cancel, pause, resume) are events of that job naming the key; everything else a person
changes is a row here. The actor is a key by its prefix, or `cli:<user>` for a change made with the `grpo`
command straight against the database. No secret value and no key is ever written here.

Each change is written by the function that makes it, in the same transaction (so no door to it can forget the row):
`key.create` and `key.revoke` (target: the key's prefix; data: its role and name), `project.create` (data: the limits
it was given) and `project.update` (data: each limit changed, `{"old": ..., "new": ...}`), `file.upload` and
`file.delete` (target: the file id; data: its filename and bytes), `secret.set` and `secret.delete`.
"""

from __future__ import annotations

import getpass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.store.json_sql import json_safe
from shared.store.models import AuditEvent, utcnow
from shared.store.reads import Page


def cli_actor() -> str:
    """How the audit log names a change made with the `grpo` command on this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        user = "unknown"
    return f"cli:{user}"[:64]


def record(
    session: Session,
    actor: str | None,
    action: str,
    *,
    project: str | None = None,
    target: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Note that `actor` did `action` ("key.create", "project.update", ...) to `target`, in `project` (the caller
    commits, with the change itself). An actor of None is the service itself (no person named one)."""
    session.add(
        AuditEvent(
            created_at=utcnow(),
            actor=(actor or "service")[:64],
            action=action,
            project=project,
            target=target,
            data=json_safe(data),
        )
    )


def list_audit(session: Session, project: str | None = None, after: int = 0, limit: int = 100) -> Page[AuditEvent]:
    """The audit log in order (oldest first), from the entry after the id `after`; of one project when `project` is
    given. `has_more` says another page is there now (read it with `after` = the last id of this one)."""
    statement = select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(limit + 1)
    if project is not None:
        statement = statement.where(AuditEvent.project == project)
    rows = list(session.scalars(statement))
    return Page(rows[:limit], len(rows) > limit)
