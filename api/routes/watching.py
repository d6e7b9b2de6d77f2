"""What the dashboard and exports read of a job: samples of its completions, its metrics as chart series, and its
metrics as CSV or JSON Lines downloads."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.auth import Reader, require_visible_job, scope
from api.deps import Services, ServicesDep
from api.errors import ApiError, not_found
from api.routes.jobs import ERRORS, MAX_INT32
from api.schemas import SamplePage, SeriesOut
from api.views import JSONText, render_page
from shared.store import samples
from shared.store.reads import Page, metric_rows, read_job
from shared.watching import series

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
EXPORT_BATCH = 2000


@router.get("/{job_id}/samples", response_model=SamplePage, responses=ERRORS)
def get_samples(
    job_id: str,
    svc: ServicesDep,
    caller: Reader,
    step: Annotated[int | None, Query(ge=0, le=MAX_INT32, description="Only this step's samples.")] = None,
    latest: Annotated[bool, Query(description="Only the newest sampled step's samples.")] = False,
    after_step: Annotated[int, Query(ge=-1, le=MAX_INT32, description="Samples of the steps after this one.")] = -1,
    limit: Annotated[int, Query(ge=1, le=samples.MAX_PAGE)] = 100,
) -> JSONText:
    """Completions the trainer generated at logged steps: prompt, completion, each reward's score and the
    advantage, as TRL gathered them (a job keeps its newest steps' samples: GRPO_SAMPLE_STEPS_KEPT)."""
    with svc.database.reading() as connection:
        require_visible_job(connection, job_id, caller)
        if latest and step is None:
            step = samples.latest_sampled_step(connection, job_id)
            if step is None:
                return render_page(Page([], False))
        items, has_more = samples.read_samples(connection, job_id, step=step, after_step=after_step, limit=limit)
    return render_page(Page(items, has_more))


@router.get("/{job_id}/series", response_model=SeriesOut, responses=ERRORS)
def get_series(
    job_id: str,
    svc: ServicesDep,
    caller: Reader,
    keys: Annotated[
        str | None,
        Query(description="Comma-separated metric keys (default: the charted ones the job logs: reward, kl, ...)."),
    ] = None,
    max_points: Annotated[int, Query(ge=2, le=10_000, description="Most points per key to return.")] = 1000,
    from_step: Annotated[int | None, Query(ge=0, le=MAX_INT32)] = None,
    to_step: Annotated[int | None, Query(ge=0, le=MAX_INT32)] = None,
) -> SeriesOut:
    """A job's metrics as chart series between two steps: at full resolution where the range holds at most
    `max_points` steps, else averaged over equal buckets of steps by the database (a job of 100,000 steps is one
    query of a thousand rows)."""
    if from_step is not None and to_step is not None and from_step > to_step:
        raise ApiError(422, "invalid_request", f"from_step ({from_step}) is after to_step ({to_step}): swap them")
    wanted = [k for k in (keys or "").split(",") if k.strip()]
    if len(wanted) > series.MAX_KEYS:
        raise ApiError(422, "invalid_request", f"{len(wanted)} keys asked for: at most {series.MAX_KEYS} at once")
    with svc.database.reading() as connection:
        job = read_job(connection, job_id, scope(caller))
        if job is None:
            raise not_found(f"job {job_id}")
        if not wanted:
            wanted = series.chart_keys(json.loads(job).get("latest_metrics"))
        found = series.read_series(
            connection, job_id, wanted, max_points=max_points, from_step=from_step, to_step=to_step
        )
    return SeriesOut.model_validate(found, from_attributes=True)


def _metric_batches(svc: Services, job_id: str) -> Iterator[list[dict[str, Any]]]:
    after = -1
    while True:
        with svc.database.reading() as connection:
            page = metric_rows(connection, job_id, after_step=after, limit=EXPORT_BATCH)
        if page.items:
            after = page.items[-1][0]
            yield [json.loads(item) for _, item in page.items]
        if not page.has_more:
            return


def _jsonl(svc: Services, job_id: str) -> Iterator[str]:
    for batch in _metric_batches(svc, job_id):
        yield "".join(json.dumps(point, separators=(",", ":")) + "\n" for point in batch)


def _csv(svc: Services, job_id: str) -> Iterator[str]:
    # The header needs every key any step logged: one pass to learn them, one to write the rows.
    keys: dict[str, None] = {}
    for batch in _metric_batches(svc, job_id):
        for point in batch:
            keys.update(dict.fromkeys(point["metrics"]))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", "epoch", "logged_at", *keys])
    for batch in _metric_batches(svc, job_id):
        for point in batch:
            metrics: dict[str, Any] = point["metrics"]
            writer.writerow([point["step"], point["epoch"], point["logged_at"], *(metrics.get(k) for k in keys)])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


@router.get(
    "/{job_id}/metrics/export",
    responses={**ERRORS, 200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
    response_class=StreamingResponse,
)
def export_metrics(
    job_id: str, svc: ServicesDep, caller: Reader, format: Annotated[Literal["csv", "jsonl"], Query()] = "csv"
) -> StreamingResponse:
    """Every metric point of a job as a download: CSV (a column per key TRL logged) or JSON Lines (as the metrics
    endpoint's points)."""
    with svc.database.reading() as connection:
        require_visible_job(connection, job_id, caller)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    body = _csv(svc, job_id) if format == "csv" else _jsonl(svc, job_id)
    headers = {"Content-Disposition": f'attachment; filename="{job_id}-metrics.{format}"'}
    return StreamingResponse(body, media_type=media, headers=headers)
