"""2. Dispatch latency: submit -> running with an idle warm worker, and the gap between back-to-back jobs, beside
the floor of a bare Celery no-op task on the same broker."""

from __future__ import annotations

import itertools
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Sizes,
    bench_job,
    embedded_service,
    parse_time,
    production_service,
    summary_ms,
    tiny_model,
    wait_finished,
)
from bench.noop_celery import noop_app
from tests.processes import Service


def _wait_for(path: Path, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no-op task never ran: {path}")
        time.sleep(0.001)
    return float(path.read_text())


def measure_noop(broker_url: str, work: Path, count: int, back_to_back: int, pool: str = "solo") -> dict[str, Any]:
    """Publish -> start of a no-op task, one at a time on an idle worker, then several at once."""
    stamps = work / f"noop-{secrets.token_hex(3)}"
    stamps.mkdir(parents=True)
    queue = f"noop-{secrets.token_hex(3)}"
    app = noop_app(broker_url, queue, stamps)
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.noop_celery", "worker", broker_url, queue, str(stamps), pool],
        stdout=subprocess.DEVNULL,
        stderr=(work / f"{queue}.log").open("w"),
    )
    try:
        app.send_task("bench.noop", args=["warm"], queue=queue)
        _wait_for(stamps / "warm.start", timeout=120)
        latencies = []
        for index in range(count):
            sent = time.time()
            app.send_task("bench.noop", args=[f"one-{index}"], queue=queue)
            latencies.append(_wait_for(stamps / f"one-{index}.start") - sent)
        for index in range(back_to_back):
            app.send_task("bench.noop", args=[f"burst-{index}"], queue=queue)
        starts = [_wait_for(stamps / f"burst-{index}.start") for index in range(back_to_back)]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    return {"submit_to_start": summary_ms(latencies), "back_to_back_gap": summary_ms(gaps or [0.0])}


def measure_service(service: Service, model: Path, count: int, back_to_back: int) -> dict[str, Any]:
    """POST -> the worker's claim (`started_at`) of one-step jobs on an idle warm worker, then a burst."""
    spec = bench_job(model, steps=1)
    wait_finished(service, service.submit(spec)["id"])  # warms the worker
    latencies = []
    for _ in range(count):
        posted = time.time()
        job = wait_finished(service, service.submit(spec)["id"])
        latencies.append(parse_time(job["started_at"]) - posted)
    burst = [service.submit(spec)["id"] for _ in range(back_to_back)]
    finished = [wait_finished(service, job_id) for job_id in burst]
    gaps = [
        parse_time(later["started_at"]) - parse_time(earlier["finished_at"])
        for earlier, later in itertools.pairwise(finished)
    ]
    return {"submit_to_running": summary_ms(latencies), "back_to_back_gap": summary_ms(gaps or [0.0])}


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    model = tiny_model(work)
    results: dict[str, Any] = {}
    with embedded_service(work / "dispatch-embedded") as service:
        broker = f"sqla+sqlite:///{Path(service.env['GRPO_DATA_DIR']) / 'broker.sqlite'}"
        results["embedded"] = {
            "service": measure_service(service, model, sizes.dispatch_jobs, sizes.back_to_back_jobs),
            "celery_noop_floor": measure_noop(broker, work, sizes.dispatch_jobs, sizes.back_to_back_jobs),
        }
    with production_service(work / "dispatch-production") as service:
        broker = service.env["GRPO_BROKER_URL"]
        results["redis"] = {
            "service": measure_service(service, model, sizes.dispatch_jobs, sizes.back_to_back_jobs),
            "celery_noop_floor": measure_noop(broker, work, sizes.dispatch_jobs, sizes.back_to_back_jobs),
            # Celery's default pool, where issue #4378 reports a ~2 s stall between back-to-back tasks.
            "celery_noop_prefork": measure_noop(
                broker, work, sizes.dispatch_jobs, sizes.back_to_back_jobs, pool="prefork"
            ),
        }
    for broker in results.values():
        broker["p50_ratio_to_floor"] = round(
            broker["service"]["submit_to_running"]["p50_ms"]
            / max(broker["celery_noop_floor"]["submit_to_start"]["p50_ms"], 0.01),
            2,
        )
    return results
