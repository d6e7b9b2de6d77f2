"""3. Metric latency: from the trainer's `on_log` to the point being visible on the polling endpoint (a client
polling every 5 ms: the floor of polling), and to its arrival on an open live stream (GET /v1/jobs/{id}/stream)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import Sizes, bench_job, embedded_service, parse_time, production_service, summary_ms, tiny_model
from cli.client import sse_messages
from tests.processes import TERMINAL, Service

POLL_SECONDS = 0.005


def measure(service: Service, model: Path, steps: int) -> dict[str, Any]:
    """Poll a running job's metrics as fast as a client reasonably would; `logged_at` is the on_log time."""
    job = service.submit(bench_job(model, steps))
    latencies: list[float] = []
    after_step = -1
    while True:
        status = service.job(job["id"])["status"]
        page = service.http.get(f"/v1/jobs/{job['id']}/metrics", params={"after_step": after_step}).json()
        seen = time.time()
        for point in page["data"]:
            latencies.append(seen - parse_time(point["logged_at"]))
            after_step = point["step"]
        if status in TERMINAL and not page["has_more"]:
            break
        time.sleep(POLL_SECONDS)
    if len(latencies) != steps:
        raise RuntimeError(f"saw {len(latencies)} of {steps} steps")
    return {"steps": steps, "poll_interval_ms": POLL_SECONDS * 1000, **summary_ms(latencies)}


def measure_stream(service: Service, model: Path, steps: int) -> dict[str, Any]:
    """Follow a job on its live stream from submission; each point's arrival time against its `logged_at`."""
    job = service.submit(bench_job(model, steps))
    latencies: list[float] = []
    with service.http.stream("GET", f"/v1/jobs/{job['id']}/stream", timeout=600) as response:
        for message in sse_messages(response):
            if message["event"] == "metric":
                latencies.append(time.time() - parse_time(json.loads(message["data"])["logged_at"]))
    if len(latencies) != steps:
        raise RuntimeError(f"the stream sent {len(latencies)} of {steps} steps")
    return {"steps": steps, "stream_poll_ms": 50.0, **summary_ms(latencies)}


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    model = tiny_model(work)
    with embedded_service(work / "latency-embedded") as service:
        embedded = measure(service, model, sizes.latency_steps)
        embedded_stream = measure_stream(service, model, sizes.latency_steps)
    with production_service(work / "latency-production") as service:
        production = measure(service, model, sizes.latency_steps)
        production_stream = measure_stream(service, model, sizes.latency_steps)
    return {
        "embedded": embedded,
        "postgres_redis": production,
        "embedded_stream": embedded_stream,
        "postgres_redis_stream": production_stream,
    }
