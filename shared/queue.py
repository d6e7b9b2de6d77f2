"""The Celery app both sides share: the API sends "run job X" on it (`dispatch`), workers consume it.

The broker only carries job ids; the database says what a job is and who owns it. The embedded deployment uses
kombu's SQLAlchemy transport on a SQLite file (`sqla+sqlite:///...`), which needs no server process.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
from celery import Celery
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import Engine, create_engine, event

from shared.settings import Settings
from shared.spec.resources import queue_for
from shared.store import jobs
from shared.store.db import Database

RUN_JOB_TASK = "grpo.run_job"


# Transport options kombu reads itself; every other option is a create_engine() argument.
_KOMBU_OPTIONS = frozenset(
    {
        "polling_interval",
        "queue_tablename",
        "message_tablename",
        "callback",
        "errback",
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "retry_errors",
    }
)


class _EmbeddedChannel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel, made fit for a SQLite file shared by the API and the workers."""

    def _engine_from_config(self) -> Engine:
        # kombu's own version hands `polling_interval` to create_engine(), which refuses it.
        client = self.connection.client
        options = {k: v for k, v in client.transport_options.items() if k not in _KOMBU_OPTIONS}
        engine = create_engine(client.hostname, **options)
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
                dbapi_connection.execute("PRAGMA busy_timeout=30000")

        return engine


class EmbeddedTransport(kombu_sqla.Transport):
    """The `sqla+` transport with `_EmbeddedChannel`."""

    Channel = _EmbeddedChannel


# Registered under kombu's own `sqla` alias so the broker URL stays the documented `sqla+sqlite:///...`.
kombu.transport.TRANSPORT_ALIASES["sqla"] = f"{__name__}:EmbeddedTransport"


def make_celery(settings: Settings) -> Celery:
    """The Celery app for these settings: late acks, one job at a time, no result backend (the DB is the truth)."""
    if settings.is_embedded_broker:
        settings.ensure_data_dir()
    app = Celery("grpo", broker=settings.effective_broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue,
        # Acknowledge after the task ran, so that Redis redelivers a message whose worker died (after its visibility
        # timeout). Recovery does not rely on it: a lost worker's job is requeued when its lease expires, and a
        # lost message is sent again by an idle worker's sweep (worker/reconcile.py); duplicates are harmless, as
        # the database claim decides who runs a job.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # Task events are what Flower's task pages show; off unless an operator asks (each costs a message).
        worker_send_task_events=settings.celery_task_events,
        task_send_sent_event=settings.celery_task_events,
        # A publish to an unreachable broker fails after a few seconds instead of hanging the API request.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        broker_transport_options=(
            {"polling_interval": settings.broker_polling_interval, "connect_args": {"timeout": 30}}
            if settings.is_embedded_broker
            else {}
        ),
    )
    return app


def send_run_job(app: Celery, settings: Settings, job_id: str, gpus_needed: int = 0) -> None:
    """Ask a worker that can hold it (see shared/spec/resources.py) to run `job_id` (raises when the broker cannot be
    reached)."""
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue_for(settings.queue, gpus_needed))


def dispatch(database: Database, celery_app: Celery, settings: Settings, job_id: str) -> None:
    """Send "run job X" to the workers that can hold it and note when (raises when the broker cannot be reached)."""
    with database.session() as session:
        gpus_needed = jobs.gpus_needed(session, job_id)
    send_run_job(celery_app, settings, job_id, gpus_needed)
    with database.session() as session:
        jobs.mark_dispatched(session, job_id)
