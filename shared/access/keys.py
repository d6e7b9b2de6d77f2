"""API keys: made at random, shown once, kept only as a digest, listed by a short prefix, revocable.

A key is `grpo_` and 43 URL-safe characters (32 random bytes). Its first 13 characters are its prefix: unique,
stored in the clear, how it is listed and revoked and how events name it. The rest never leaves the request that
made it: the database holds its SHA-256 (a key is random, so a salted slow hash would add nothing), compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.access.audit import record
from shared.access.projects import get_project
from shared.store.models import ApiKey, utcnow

KEY_START = "grpo_"
PREFIX_LENGTH = len(KEY_START) + 8
# last_used_at is written at most this often per key: a write on every request would cost the hot read paths.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class Role(StrEnum):
    """What a key may do: `admin` everything, in every project; `member` submit and manage its project's jobs and
    files; `viewer` read its project."""

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class KeyRefused(ValueError):
    """A key could not be made or revoked (its project or the key is missing); the message says what to do."""

    reason = "missing"


@dataclass(frozen=True)
class Identity:
    """Who a request acts as: a key (by prefix), its project and its role."""

    key_prefix: str
    project: str
    role: Role


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session, project: str, role: Role, name: str | None = None, *, by: str | None = None
) -> tuple[ApiKey, str]:
    """A new key of `project` with `role`: its row and the key itself (shown to the caller once, stored nowhere).
    The audit log says `by` made it (a key's prefix, or `cli:<user>`)."""
    if get_project(session, project) is None:
        raise KeyRefused(f"there is no project {project!r}: create it first with `grpo projects create {project}`")
    while True:
        key = KEY_START + secrets.token_urlsafe(32)
        if session.get(ApiKey, key[:PREFIX_LENGTH]) is None:  # 48 random bits: a clash is all but impossible
            break
    row = ApiKey(
        prefix=key[:PREFIX_LENGTH],
        digest=_digest(key),
        project=project,
        role=Role(role).value,
        name=name,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    record(session, by, "key.create", project=project, target=row.prefix, data={"role": row.role, "name": name})
    return row, key


def list_keys(session: Session, project: str | None = None) -> list[ApiKey]:
    """Keys (revoked ones too), newest first; of one project when given."""
    statement = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.prefix)
    if project is not None:
        statement = statement.where(ApiKey.project == project)
    return list(session.scalars(statement))


def revoke_key(session: Session, prefix: str, *, by: str | None = None) -> ApiKey:
    """Revoke the key with this prefix (from then on it authenticates nothing); KeyRefused when there is none. The
    audit log says `by` revoked it (a key revoked already stays as it was, and is not noted again)."""
    row = session.get(ApiKey, prefix)
    if row is None:
        raise KeyRefused(f"there is no key {prefix!r}: `grpo keys list` shows each key's prefix")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        record(session, by, "key.revoke", project=row.project, target=prefix, data={"role": row.role, "name": row.name})
    return row


def authenticate(session: Session, presented: str, now: datetime | None = None) -> Identity | None:
    """Who `presented` is, or None for a key that is unknown, wrong or revoked; notes when the key was last used."""
    if not presented.startswith(KEY_START) or len(presented) > 200:
        return None
    row = session.get(ApiKey, presented[:PREFIX_LENGTH])
    if row is None or not hmac.compare_digest(row.digest, _digest(presented)) or row.revoked_at is not None:
        return None
    now = now or utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.prefix == row.prefix).values(last_used_at=now))
    return Identity(row.prefix, row.project, Role(row.role))


def has_active_key(session: Session) -> bool:
    """Whether any key can sign in: an API that enforces keys and has none would refuse everyone."""
    return session.scalar(select(ApiKey.prefix).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None
