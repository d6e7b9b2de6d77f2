"""The Celery app and worker command line: late acks, one message prefetched, one job at a time (the solo pool)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from celery.bin.base import CLIContext
from celery.bin.worker import worker as celery_worker_command
from celery.concurrency.solo import TaskPool as SoloPool

from shared.queue import make_celery
from shared.settings import Settings
from worker.app import worker_argv


@pytest.mark.parametrize("broker_url", [None, "redis://127.0.0.1:6379/0"], ids=["embedded", "redis"])
def test_the_celery_app_acks_late_and_prefetches_one_message(tmp_path: Path, broker_url: str | None) -> None:
    settings = Settings(data_dir=tmp_path / "data", broker_url=broker_url, queue="grpo-jobs")
    app = make_celery(settings)
    # A message is acknowledged only once its job ran, and one whose worker died is not acknowledged either, so
    # the broker delivers it again.
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    # A worker holds one message at a time: a second job waits in the queue for a free worker.
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_concurrency == 1
    assert app.conf.task_default_queue == "grpo-jobs"
    assert app.conf.task_ignore_result is True  # the database is the truth, not a result backend
    assert app.conf.accept_content == ["json"] and app.conf.task_serializer == "json"


def test_the_worker_command_line_runs_the_solo_pool_one_job_at_a_time(tmp_path: Path) -> None:
    """The arguments `grpo worker` (and so `grpo up`) hands to `celery worker`, parsed by Celery's own parser."""
    settings = Settings(data_dir=tmp_path / "data", queue="grpo-jobs")
    app = make_celery(settings)
    argv = worker_argv(settings, "grpo-worker-1@host", "WARNING")
    assert argv[0] == "worker"
    context = celery_worker_command.make_context(
        "worker", argv[1:], obj=CLIContext(app=app, no_color=True, workdir=None)
    )
    options = context.params
    assert options["pool"] is SoloPool  # the task runs in the worker's main thread, one at a time
    assert options["concurrency"] == 1
    assert options["prefetch_multiplier"] == 1
    assert options["queues"] == ["grpo-jobs"]
    assert options["hostname"] == "grpo-worker-1@host"
    assert options["loglevel"] == logging.WARNING
    assert options["without_gossip"] and options["without_mingle"]
