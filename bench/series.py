"""8. The dashboard's chart data for a long run: `GET /v1/jobs/{id}/series` (every charted key, a thousand buckets)
of one job of 100,000 metric points in Postgres, and a zoom to 500 steps at full resolution, one request at a time
as a browser opening the page sends them, beside the floor: `/healthz` on the same server in the same run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import Sizes, postgres_database, summary_ms
from bench.populate import populate
from shared.store.db import migrate
from tests.processes import Service, base_env
from tests.services import redis_url

KEYS = "reward,reward_std,kl,rewards/reward_len/mean,completions/mean_length,loss,learning_rate"


def _timed(service: Service, path: str, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        response = service.http.get(path)
        seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text}")
    return seconds


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    points = sizes.series_points
    count = max(3, sizes.dispatch_jobs // 2)
    work.mkdir(parents=True, exist_ok=True)
    with postgres_database() as database_url:
        migrate(database_url)
        (job_id,) = populate(database_url, 1, points)
        service = Service(base_env(work / "data", database_url=database_url, broker_url=redis_url()), work)
        try:
            service.start_api("serve")
            overview = f"/v1/jobs/{job_id}/series?keys={KEYS}&max_points=1000"
            middle = points // 2
            zoom = f"/v1/jobs/{job_id}/series?keys=reward&max_points=1000&from_step={middle}&to_step={middle + 499}"
            _timed(service, overview, 2)  # warm the pools and the statement cache
            healthz = summary_ms(_timed(service, "/healthz", count))
            overview_ms = summary_ms(_timed(service, overview, count))
            zoom_ms = summary_ms(_timed(service, zoom, count))
            sample = service.http.get(overview).json()
        finally:
            service.stop()
    return {
        "points": points,
        "overview_points_returned": len(sample["steps"]),
        "overview": overview_ms,
        "zoom_500_steps": zoom_ms,
        "healthz_floor": healthz,
    }
