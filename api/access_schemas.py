"""The bodies of the operators' routes: projects and keys (`api/routes/access.py`), the audit log
(`api/routes/audit.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.access.keys import Role

Limit = int | None


class ProjectLimitsIn(BaseModel):
    """Limits of a project (null: no limit). On a change, the limits left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    max_running_jobs: Limit = Field(default=None, ge=0)
    max_queued_jobs: Limit = Field(default=None, ge=0)
    max_gpus: Limit = Field(default=None, ge=0)
    max_steps: Limit = Field(default=None, ge=0)


class ProjectIn(ProjectLimitsIn):
    """A new project: its name and limits."""

    name: str = Field(min_length=1, max_length=64)


class ProjectOut(BaseModel):
    """A project and its limits."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    created_at: datetime
    max_running_jobs: Limit
    max_queued_jobs: Limit
    max_gpus: Limit
    max_steps: Limit


class ProjectList(BaseModel):
    data: list[ProjectOut]


class KeyIn(BaseModel):
    """A new key: the project it acts for, its role, a label."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=64)
    role: Role
    name: str | None = Field(default=None, max_length=200)


class KeyOut(BaseModel):
    """A key as it is listed: by its prefix, never the key itself."""

    model_config = ConfigDict(from_attributes=True)

    prefix: str
    project: str
    role: Role
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    """A key just made: `key` is shown this once (the service keeps only its digest)."""

    key: str


class KeyList(BaseModel):
    data: list[KeyOut]


class AuditEventOut(BaseModel):
    """A change a person made that is not a job's own event (those are the job's events): who, what, to what."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    project: str | None = Field(description="The project the change concerns (null: the whole service).")
    actor: str = Field(
        description="The key that made it, by its prefix (never the key), or `cli:<user>` for a change made with "
        "the `grpo` command against the database."
    )
    action: str = Field(
        description="key.create, key.revoke, project.create, project.update, file.upload, file.delete, secret.set, "
        "secret.delete"
    )
    target: str | None = Field(description="What it was done to: a key's prefix, a project, a file id, a secret.")
    data: dict[str, Any] | None = Field(
        description="Details: a key's role and name, a project's limits (on an update each limit's old and new "
        "value), a file's filename and bytes. Never a key or a secret's value."
    )


class AuditPage(BaseModel):
    data: list[AuditEventOut]
    has_more: bool
