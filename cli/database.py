"""What every command that opens the database does first, and how a command fails: a readable line, an exit code."""

from __future__ import annotations

import typer
from rich.console import Console

from shared.settings import Settings

err_console = Console(stderr=True)


def printable_url(url: str) -> str:
    """A database or broker URL as a log line may show it: its password masked."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def prepare_database(settings: Settings) -> None:
    """Migrate the embedded database on the fly; refuse to start on an unmigrated or unreachable production one."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import DBAPIError

    from shared.store.db import SchemaNotReady, migrate, require_schema

    if settings.database_url is None:
        settings.ensure_data_dir()
        migrate(settings.effective_database_url)
        return
    try:
        require_schema(settings.effective_database_url)
    except SchemaNotReady as error:
        raise fail(str(error)) from None
    except DBAPIError as error:  # unreachable, refused, or a SQLite file whose folder does not exist
        where = make_url(settings.effective_database_url).render_as_string(hide_password=True)
        reason = f"{type(error.orig).__name__}: {error.orig}" if error.orig is not None else str(error)
        raise fail(f"cannot open the database at {where} (GRPO_DATABASE_URL): {reason.strip()}") from None
