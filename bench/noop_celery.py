"""The floor of dispatch latency: a bare Celery no-op task on the same broker, configured like the service.

Run as a worker: `python -m bench.noop_celery worker BROKER_URL QUEUE STAMP_DIR POOL`: `solo`, as the service's
workers run, or `prefork`, Celery's default, where Celery's issue #4378 reports a ~2 s stall between tasks with
Redis and acks_late. Each task writes the time it
started into STAMP_DIR; the sender compares it with the time it published.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from celery import Celery

from shared.queue import make_celery
from shared.settings import Settings


def noop_app(broker_url: str, queue: str, stamps: Path) -> Celery:
    """A Celery app with the service's own settings (acks_late, prefetch 1) and one no-op task."""
    app = make_celery(Settings(broker_url=broker_url, queue=queue, data_dir=stamps))

    @app.task(name="bench.noop")
    def noop(label: str) -> None:
        (stamps / f"{label}.start").write_text(repr(time.time()))

    return app


def main(argv: list[str]) -> None:
    _, broker_url, queue, stamps, pool = argv
    app = noop_app(broker_url, queue, Path(stamps))
    app.worker_main(
        [
            "worker",
            f"--pool={pool}",
            "--concurrency=1",
            "--prefetch-multiplier=1",
            f"--queues={queue}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=noop-{queue}@%h",
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
