"""Projects: a team's own space, and the limits an operator sets on it.

A limit of None is no limit. The limits are stored here; holding jobs to them is the scheduler's part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.access.audit import record
from shared.store.models import Project, utcnow

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The project `grpo up` creates for its single user, and the one jobs of an unscoped deployment belong to.
DEFAULT_PROJECT = "default"


class ProjectRefused(ValueError):
    """A project could not be created or changed; the message says why and what to do, `reason` what kind of
    refusal it is: `invalid` (a name or limit), `exists`, `missing`."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ProjectLimits:
    """What a project may use at once (None: no limit)."""

    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None
    max_gpus: int | None = None
    max_steps: int | None = None


LIMIT_NAMES = tuple(field.name for field in fields(ProjectLimits))


def check_name(name: str) -> str:
    """`name` if it can name a project; ProjectRefused otherwise."""
    if not NAME.fullmatch(name):
        raise ProjectRefused(
            f"project name {name!r} is not valid: use 1 to 64 letters, digits and _.- (starting with a letter or a "
            "digit)"
        )
    return name


def _check_limits(values: dict[str, int | None]) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise ProjectRefused(f"{name} ({value}) must be 0 or more (or none, for no limit)")


def get_project(session: Session, name: str) -> Project | None:
    """The project, or None."""
    return session.get(Project, name)


def create_project(
    session: Session, name: str, limits: ProjectLimits | None = None, *, by: str | None = None
) -> Project:
    """A new project with these limits; ProjectRefused when the name is taken or not valid. The audit log says `by`
    made it, with the limits it was given."""
    check_name(name)
    chosen = limits or ProjectLimits()
    _check_limits({limit: getattr(chosen, limit) for limit in LIMIT_NAMES})
    if get_project(session, name) is not None:
        raise ProjectRefused(
            f"project {name!r} exists already: change its limits with `grpo projects update {name}`", "exists"
        )
    project = Project(name=name, created_at=utcnow(), **{limit: getattr(chosen, limit) for limit in LIMIT_NAMES})
    session.add(project)
    session.flush()
    given = {limit: getattr(chosen, limit) for limit in LIMIT_NAMES if getattr(chosen, limit) is not None}
    record(session, by, "project.create", project=name, target=name, data=given)
    return project


def ensure_project(session: Session, name: str, *, by: str | None = None) -> Project:
    """The project, created with no limits (by `by`, for the audit log) when it does not exist yet."""
    return get_project(session, name) or create_project(session, name, by=by)


def update_project(session: Session, name: str, changes: dict[str, int | None], *, by: str | None = None) -> Project:
    """Set the limits named in `changes` (None removes one); the others stay. ProjectRefused for an unknown
    project or limit. The audit log says `by` changed them, with each limit's old and new value (a change to the
    value a limit has already is no change, and is not noted)."""
    project = get_project(session, name)
    if project is None:
        raise ProjectRefused(f"there is no project {name!r}: create it with `grpo projects create {name}`", "missing")
    unknown = sorted(set(changes) - set(LIMIT_NAMES))
    if unknown:
        raise ProjectRefused(f"unknown limit(s) {', '.join(unknown)}: the limits are {', '.join(LIMIT_NAMES)}")
    _check_limits(changes)
    changed = {
        limit: {"old": getattr(project, limit), "new": value}
        for limit, value in changes.items()
        if getattr(project, limit) != value
    }
    for limit, value in changes.items():
        setattr(project, limit, value)
    session.flush()
    if changed:
        record(session, by, "project.update", project=name, target=name, data=changed)
    return project


def list_projects(session: Session) -> list[Project]:
    """Every project, by name."""
    return list(session.scalars(select(Project).order_by(Project.name)))
