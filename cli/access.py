"""`grpo projects`, `grpo keys` and `grpo audit`: the operator's commands for who may use the service, and who
changed what.

They work on the configured database directly (GRPO_DATABASE_URL), with the service running or not; each change is
noted in the audit log as made by `cli:<user>`, in the same transaction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from cli.database import fail, prepare_database
from shared.access.audit import cli_actor, list_audit
from shared.access.keys import KeyRefused, Role, authenticate, create_key, has_active_key, list_keys, revoke_key
from shared.access.projects import (
    DEFAULT_PROJECT,
    LIMIT_NAMES,
    ProjectLimits,
    ProjectRefused,
    create_project,
    ensure_project,
    list_projects,
)
from shared.access.projects import update_project as change_project
from shared.settings import Settings, load_settings
from shared.store.db import Database

projects = typer.Typer(help="Projects: a team's own jobs and files, and their limits.", no_args_is_help=True)
keys = typer.Typer(help="API keys: made, listed by prefix, revoked.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

NO_LIMIT = "none"
LimitOption = Annotated[str | None, typer.Option(help=f"A number, or '{NO_LIMIT}' for no limit.")]


def ensure_local_key(settings: Settings) -> str:
    """The key of `grpo up`'s single user: the one in <data dir>/api-key while it still signs in, else a new admin
    key of the default project, written there (mode 0600) as Jupyter keeps its token."""
    path = settings.api_key_file
    database = Database.from_settings(settings)
    try:
        with database.session() as session:
            if path.exists():
                kept = path.read_text().strip()
                if authenticate(session, kept) is not None:
                    return kept
            ensure_project(session, DEFAULT_PROJECT, by=cli_actor())
            _, key = create_key(session, DEFAULT_PROJECT, Role.ADMIN, "grpo up", by=cli_actor())
    finally:
        database.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # before the key is written: the file may have been there with wider permissions
    with os.fdopen(descriptor, "w") as out:
        out.write(key + "\n")
    return key


def require_a_key(settings: Settings) -> None:
    """`grpo serve` runs open only when told (GRPO_AUTH=off); with keys on, there must be a key to sign in with."""
    if settings.auth == "off":
        err_console.print(
            "[yellow]warning:[/yellow] GRPO_AUTH=off: the API runs open, every request acts as an admin (not for a "
            "network others reach)",
            highlight=False,
        )
        return
    database = Database.from_settings(settings)
    try:
        with database.session() as session:
            if has_active_key(session):
                return
    finally:
        database.dispose()
    raise fail(
        "no API key exists, so nobody could use this API: make one with `grpo projects create NAME` and "
        "`grpo keys create --project NAME --role admin`, or set GRPO_AUTH=off to run it open (trusted machine only)"
    )


@contextmanager
def _session() -> Iterator[Session]:
    """A session on the configured database (migrated first where it is the embedded one); refusals said plainly."""
    settings = load_settings()
    prepare_database(settings)
    database = Database.from_settings(settings)
    try:
        with database.session() as session:
            yield session
    except (ProjectRefused, KeyRefused) as refused:
        raise fail(str(refused)) from None
    finally:
        database.dispose()


def _limit(name: str, value: str) -> int | None:
    if value.strip().lower() == NO_LIMIT:
        return None
    try:
        return int(value)
    except ValueError:
        raise fail(f"--{name.replace('_', '-')} takes a number or '{NO_LIMIT}', not {value!r}") from None


def _limits(**given: str | None) -> dict[str, int | None]:
    return {name: _limit(name, value) for name, value in given.items() if value is not None}


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


@projects.command("create")
def create(
    name: str,
    max_running_jobs: LimitOption = None,
    max_queued_jobs: LimitOption = None,
    max_gpus: LimitOption = None,
    max_steps: LimitOption = None,
) -> None:
    """Create a project, with limits on what it may use at once (none by default)."""
    limits = _limits(
        max_running_jobs=max_running_jobs, max_queued_jobs=max_queued_jobs, max_gpus=max_gpus, max_steps=max_steps
    )
    with _session() as session:
        create_project(session, name, ProjectLimits(**limits), by=cli_actor())
    err_console.print(f"project {name} created", highlight=False)


@projects.command("update")
def update(
    name: str,
    max_running_jobs: LimitOption = None,
    max_queued_jobs: LimitOption = None,
    max_gpus: LimitOption = None,
    max_steps: LimitOption = None,
) -> None:
    """Change a project's limits; those not given stay as they are."""
    changes = _limits(
        max_running_jobs=max_running_jobs, max_queued_jobs=max_queued_jobs, max_gpus=max_gpus, max_steps=max_steps
    )
    if not changes:
        options = ", ".join("--" + limit.replace("_", "-") for limit in LIMIT_NAMES)
        raise fail(f"nothing to change: give one or more of {options}")
    with _session() as session:
        change_project(session, name, changes, by=cli_actor())
    err_console.print(f"project {name} updated", highlight=False)


@projects.command("list")
def list_all_projects() -> None:
    """Every project and its limits."""
    table = Table("project", *(name.replace("_", " ") for name in LIMIT_NAMES), "created")
    with _session() as session:
        for project in list_projects(session):
            limits = [getattr(project, name) for name in LIMIT_NAMES]
            table.add_row(project.name, *("-" if v is None else str(v) for v in limits), _when(project.created_at))
    console.print(table)


@keys.command("create")
def create_api_key(
    project: Annotated[str, typer.Option(help="The project the key acts for.")],
    role: Annotated[Role, typer.Option(help="admin: everything; member: its project's jobs and files; viewer: read.")],
    name: Annotated[str | None, typer.Option(help="A label, to tell keys apart in `grpo keys list`.")] = None,
) -> None:
    """Make a key and print it alone on standard output (KEY=$(grpo keys create ...)): it is shown this once."""
    with _session() as session:
        row, key = create_key(session, project, role, name, by=cli_actor())
    typer.echo(key)
    err_console.print(
        f"key {row.prefix}... ({role.value} of project {project}) created: it is shown only now", highlight=False
    )


@keys.command("list")
def list_api_keys(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
) -> None:
    """Every key by its prefix (never the key itself), newest first."""
    table = Table("prefix", "project", "role", "name", "created", "last used", "revoked")
    with _session() as session:
        for row in list_keys(session, project):
            table.add_row(
                row.prefix,
                row.project,
                row.role,
                row.name or "-",
                _when(row.created_at),
                _when(row.last_used_at),
                _when(row.revoked_at),
            )
    console.print(table)


@keys.command("revoke")
def revoke(prefix: str) -> None:
    """Revoke the key with this prefix: from now on it authenticates nothing."""
    with _session() as session:
        revoke_key(session, prefix, by=cli_actor())
    err_console.print(f"key {prefix} revoked", highlight=False)


def _details(data: dict[str, Any] | None) -> str:
    """An audit entry's data on one line: `max_gpus 2 -> 4` for a limit changed, `role=member` otherwise."""
    parts = []
    for name, value in (data or {}).items():
        if isinstance(value, dict) and set(value) == {"old", "new"}:
            parts.append(f"{name} {_shown(value['old'])} -> {_shown(value['new'])}")
        else:
            parts.append(f"{name}={_shown(value)}")
    return ", ".join(parts) or "-"


def _shown(value: Any) -> str:
    return NO_LIMIT if value is None else str(value)


def show_audit(
    project: Annotated[str | None, typer.Option(help="Only changes to this project.")] = None,
    after: Annotated[int, typer.Option(help="Entries after this id (the last one a page showed).")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Entries to show.")] = 100,
) -> None:
    """Who changed keys, projects and their limits, secrets and files, oldest first: the key (by prefix) or
    cli:<user>. (A job's own changes are its events: `grpo events JOB_ID`.)"""
    table = Table("id", "when", "actor", "action", "project", "target", "details")
    with _session() as session:
        page = list_audit(session, project, after=after, limit=limit)
        for row in page.items:
            table.add_row(
                str(row.id),
                _when(row.created_at),
                row.actor,
                row.action,
                row.project or "-",
                row.target or "-",
                _details(row.data),
            )
    console.print(table if page.items else "no audit entries", highlight=False)
    if page.has_more:
        err_console.print(f"more: grpo audit --after {page.items[-1].id}", highlight=False)
