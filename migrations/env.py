"""Alembic environment: runs the migrations against the URL `shared.db.migrate` (or alembic.ini) gives."""

from alembic import context

from shared.store.db import make_engine
from shared.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "no database URL: set sqlalchemy.url or use `grpo migrate`"
    engine = make_engine(url)
    with engine.connect() as connection:
        # SQLite cannot ALTER most things: batch mode rebuilds tables for later migrations.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
