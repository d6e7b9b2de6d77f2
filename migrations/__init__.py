"""Alembic migrations: the only thing that creates or changes the database schema (`grpo migrate`)."""
