"""What operators watch: `/metrics` in Prometheus' text format, and `/v1/workers`."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.auth import Admin, Reader, scope
from api.deps import ServicesDep
from api.schemas import WorkerList
from shared.store import workers
from shared.store.db import Database
from shared.watching import telemetry

router = APIRouter(tags=["operators"])


class ServiceCollector(Collector):
    """Reads the counts from the database at each scrape, so every API process reports the same truth."""

    def __init__(self, database: Database, alive_seconds: float) -> None:
        self.database = database
        self.alive_seconds = alive_seconds

    def collect(self) -> Iterator[Metric]:
        with self.database.reading() as connection:
            counts = telemetry.count_service(connection, self.alive_seconds)
        by_status = GaugeMetricFamily("grpo_jobs", "Jobs by status.", labels=["status"])
        for status, count in counts.jobs_by_status.items():
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily(
            "grpo_queue_depth", "Jobs waiting for a worker (status queued).", value=counts.jobs_by_status["queued"]
        )
        buckets = [
            (str(bound), count) for bound, count in zip(telemetry.QUEUE_BUCKETS, counts.queue_buckets, strict=True)
        ]
        yield HistogramMetricFamily(
            "grpo_submit_to_running_seconds",
            "Seconds from a job's submission to its first worker claiming it.",
            buckets=[*buckets, ("+Inf", counts.queue_count)],
            sum_value=counts.queue_sum,
        )
        yield CounterMetricFamily(
            "grpo_metric_points_ingested",
            "Metric points workers have written (a step logged again after a resume counts again).",
            value=counts.points_ingested,
        )
        yield GaugeMetricFamily(
            "grpo_workers_alive", "Workers with a recent heartbeat that have not stopped.", value=counts.workers_alive
        )


def make_registry(database: Database, alive_seconds: float) -> CollectorRegistry:
    """The registry `/metrics` serves: the service's counts (none of this process's own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(database, alive_seconds))
    return registry


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def prometheus_metrics(svc: ServicesDep, caller: Admin) -> Response:
    """Prometheus metrics (an admin key: a scrape config's `authorization`): jobs by status, queue depth,
    submit-to-running latency, metric points ingested, workers alive. Counts only: no job's name or spec."""
    registry = make_registry(svc.database, svc.settings.worker_alive_seconds)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/workers", response_model=WorkerList)
def list_workers(svc: ServicesDep, caller: Reader) -> WorkerList:
    """Workers seen in the last day: where they run, whether they are alive, the job each runs (when it is the
    caller's project's: workers are shared, their jobs are not)."""
    with svc.database.reading() as connection:
        found = workers.list_workers(connection, svc.settings.worker_alive_seconds, project=scope(caller))
    return WorkerList.model_validate({"data": found})
