"""Connections to the job database, and the Alembic migrations that create its schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class SchemaNotReady(RuntimeError):
    """The database is missing migrations: the user must run `grpo migrate`."""


# Connections kept for reads: one per thread of the API's thread pool (anyio runs 40), so none is opened per request.
READ_POOL_SIZE = 40
# Claims and transitions are `UPDATE ... RETURNING`, which SQLite has since 3.35.
MIN_SQLITE = (3, 35, 0)


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so the API can read while a worker writes."""
    if not url.startswith("sqlite"):
        return create_engine(url, **{"pool_pre_ping": True, **options})
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise RuntimeError(
            f"this Python links SQLite {sqlite3.sqlite_version}, and the embedded database needs 3.35 or newer: "
            "use a newer Python build, or set GRPO_DATABASE_URL to a PostgreSQL database"
        )
    options.pop("pool_size", None)
    options.pop("max_overflow", None)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **options)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


class Database:
    """The engines for one database URL (one per process): sessions for writes, plain connections for reads."""

    def __init__(self, url: str, idle_transaction_seconds: float | None = None) -> None:
        """`idle_transaction_seconds` (Postgres): a session that sits inside a transaction this long is ended by
        the server, and its locks released. A worker frozen mid-write (SIGSTOP, a VM paused) would otherwise hold
        its job's row lock for as long as it is frozen, and the sweep that takes its job over would wait on it."""
        self.url = url
        write_options: dict[str, Any] = {}
        if idle_transaction_seconds is not None and url.startswith("postgresql"):
            timeout_ms = int(idle_transaction_seconds * 1000)
            write_options["connect_args"] = {"options": f"-c idle_in_transaction_session_timeout={timeout_ms}"}
        self.engine = make_engine(url, **write_options)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads run in autocommit, without a liveness ping on checkout: a read then costs one round trip, not
        # four (ping, BEGIN, SELECT, COMMIT). A dropped connection fails one read, and the pool replaces it.
        self._reader = make_engine(
            url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_size=READ_POOL_SIZE, max_overflow=10
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The database the settings name, creating the data dir the embedded SQLite file lives in."""
        settings.ensure_data_dir()
        # A frozen writer loses its transaction when it would have lost its lease anyway.
        return cls(settings.effective_database_url, idle_transaction_seconds=max(settings.lease_seconds, 5.0))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends cleanly and rolls back when it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads that need no transaction (each statement sees committed data)."""
        with self._reader.connect() as connection:
            yield connection

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        self._reader.dispose()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # `%` would be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> str:
    """Bring the schema at `url` to the newest migration; returns the revision it is at."""
    from alembic import command

    command.upgrade(_alembic_config(url), "head")
    return current_revision(url) or ""


def head_revision() -> str:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None, "migrations/versions holds no migration"
    return head


def current_revision(url: str) -> str | None:
    """The migration the database at `url` is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def require_schema(url: str) -> None:
    """Raise SchemaNotReady, saying what to run, unless the database is at the newest migration."""
    current, head = current_revision(url), head_revision()
    if current != head:
        raise SchemaNotReady(
            f"the database schema is at {current or 'nothing (empty database)'}, this code needs {head}: "
            "run `grpo migrate` with the same GRPO_DATABASE_URL first"
        )
