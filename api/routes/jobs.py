"""/v1/jobs: submit, read, cancel, pause and resume GRPO jobs; their metrics and events. HTTP only: the work is in
`shared`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query
from sqlalchemy import select

from api.auth import Reader, Writer, actor, require_visible_job, scope
from api.deps import Services, ServicesDep
from api.errors import ApiError, not_found
from api.ratelimit import RATE_LIMITED_RESPONSE, Action, rate_limited
from api.schemas import ErrorBody, EventPage, JobList, JobOut, MetricPage
from api.views import JSONText, render_page
from shared import lifecycle, quotas
from shared.lifecycle import ActionRefused, BrokerUnavailable, IdempotencyConflict, submit_job
from shared.quotas import QuotaExceeded
from shared.spec.job import JobSpec, check_spec, file_ids
from shared.spec.policy import SpecPolicy
from shared.spec.problems import SpecError
from shared.store import files
from shared.store.models import Job
from shared.store.reads import read_events, read_job, read_jobs, read_metrics
from shared.store.states import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# The widest values the database columns hold (steps are INTEGER, event ids BIGINT).
MAX_INT32, MAX_INT64 = 2**31 - 1, 2**63 - 1
ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}}

SEED_EXAMPLE = {
    "name": "seed example",
    "model": "./grpo-data/tiny-model",
    "train_dataset": {"rows": [{"prompt": "What is 2+2?", "answers": "4"}, {"prompt": "Say hi", "answers": "hi"}]},
    "reward_funcs": [
        {"type": "builtin", "name": "length", "params": {"ideal_length": 20}},
        {
            "type": "python",
            "source": "def reward_len(completions, **kwargs):\n"
            "    return [-abs(20 - len(completion)) for completion in completions]\n",
        },
    ],
    "args": {
        "max_steps": 20,
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-5,
        "beta": 0.04,
        "logging_steps": 1,
    },
}


def _job_response(svc: Services, job_id: str, status_code: int = 200, project: str | None = None) -> JSONText:
    with svc.database.reading() as connection:
        job = read_job(connection, job_id, project)
    if job is None:
        raise not_found(f"job {job_id}")
    return JSONText(job, status_code=status_code)


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses={**ERRORS, **RATE_LIMITED_RESPONSE, 503: {"model": ErrorBody}},
    dependencies=[rate_limited(Action.SUBMIT)],
)
def create_job(
    spec: Annotated[JobSpec, Body(openapi_examples={"seed": {"value": SEED_EXAMPLE}})],
    svc: ServicesDep,
    caller: Writer,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="Retries with the same key and spec return the first job, not a new one."),
    ] = None,
) -> JSONText:
    """Submit a GRPO job. The spec mirrors `GRPOTrainer`'s arguments; `args` are `GRPOConfig` fields.

    A spec TRL would reject when it runs (unknown field, batch not divisible by `num_generations`, a reward
    function that does not compile, ...) is refused with 422 naming each problem and its fix; nothing is stored.
    With an `Idempotency-Key` header, a retry with the same key and spec returns the job the first request made
    (header `Idempotent-Replayed: true`); the same key with a different spec is a 409.
    """
    with svc.database.session() as session:
        columns = files.file_columns(session, file_ids(spec), project=caller.project)
    problems = check_spec(
        spec,
        device=svc.settings.device,
        file_columns=columns,
        vllm_server_url=svc.settings.vllm_server_url,
        policy=SpecPolicy.from_settings(svc.settings),
    )
    if problems:
        raise SpecError(problems)
    try:
        job, replayed = submit_job(svc.database, svc.celery, svc.settings, spec, idempotency_key, actor(caller))
    except BrokerUnavailable as error:
        raise ApiError(503, "broker_unavailable", str(error)) from error
    except IdempotencyConflict as error:
        raise ApiError(409, "idempotency_conflict", str(error)) from error
    except QuotaExceeded as error:
        raise ApiError(429, "quota_exceeded", str(error)) from error
    response = _job_response(svc, job.id, status_code=201)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _act(svc: Services, job_id: str, action: Callable[[], None]) -> JSONText:
    try:
        action()
    except LookupError:
        raise not_found(f"job {job_id}") from None
    except ActionRefused as error:
        raise ApiError(409, "conflict", str(error)) from error
    except BrokerUnavailable as error:
        raise ApiError(503, "broker_unavailable", str(error)) from error
    except QuotaExceeded as error:
        raise ApiError(429, "quota_exceeded", str(error)) from error
    return _job_response(svc, job_id)


def _queued_in(svc: Services, job_id: str) -> str | None:
    """The project of the job if it is queued now, else None."""
    with svc.database.session() as session:
        return session.scalar(select(Job.project).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value))


def _free_slot(svc: Services, project: str | None) -> None:
    """A queued job that ends or pauses no longer waits before the later jobs of its `project`: let them start. (A
    running one frees its slot when its worker has stopped it: that worker releases the next.)"""
    if project is not None:
        quotas.release_held(svc.database, svc.celery, svc.settings, project)


@router.post("/{job_id}/cancel", response_model=JobOut, responses={**ERRORS, 409: {"model": ErrorBody}})
def cancel_job(job_id: str, svc: ServicesDep, caller: Writer) -> JSONText:
    """Cancel a job. A queued or paused job is cancelled at once; a running one too, and its worker ends the
    training process (and anything it started) within about a second. A finished job is a 409."""
    queued_in = _queued_in(svc, job_id)
    answer = _act(svc, job_id, lambda: lifecycle.cancel_job(svc.database, job_id, actor(caller)))
    _free_slot(svc, queued_in)
    return answer


@router.post("/{job_id}/pause", response_model=JobOut, responses={**ERRORS, 409: {"model": ErrorBody}})
def pause_job(job_id: str, svc: ServicesDep, caller: Writer) -> JSONText:
    """Pause a job. A queued job is paused at once; a running one is asked to (`requested_action: pause`): its
    worker has the trainer save a checkpoint, frees itself and marks the job `paused`."""
    queued_in = _queued_in(svc, job_id)
    answer = _act(svc, job_id, lambda: lifecycle.pause_job(svc.database, job_id, actor(caller)))
    _free_slot(svc, queued_in)
    return answer


@router.post(
    "/{job_id}/resume",
    response_model=JobOut,
    responses={**ERRORS, 409: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
def resume_job(job_id: str, svc: ServicesDep, caller: Writer) -> JSONText:
    """Resume a paused job: it is queued again, and a worker continues it from its latest checkpoint."""
    resume = lifecycle.resume_job
    return _act(svc, job_id, lambda: resume(svc.database, svc.celery, svc.settings, job_id, actor(caller)))


def _labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ApiError(
                422, "invalid_request", f"metadata filter {item!r} is not key=value: use e.g. ?metadata=team=research"
            )
        labels[key] = value
    return labels


@router.get("", response_model=JobList, responses=ERRORS)
def list_jobs(
    svc: ServicesDep,
    caller: Reader,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    after: Annotated[str | None, Query(description="Id of the last job of the previous page.")] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    metadata: Annotated[
        list[str] | None,
        Query(description="Only jobs with this label, as key=value; repeat it to require several."),
    ] = None,
) -> JSONText:
    """Jobs, newest first; filtered by status and labels (`metadata`) when asked."""
    labels = _labels(metadata or [])
    with svc.database.reading() as connection:
        try:
            page = read_jobs(
                connection,
                limit=limit,
                after=after,
                status=status.value if status else None,
                labels=labels,
                project=scope(caller),
            )
        except LookupError:
            raise not_found(f"job {after} (the `after` cursor)") from None
    return render_page(page)


@router.get("/{job_id}", response_model=JobOut, responses=ERRORS)
def get_job(job_id: str, svc: ServicesDep, caller: Reader) -> JSONText:
    """A job: status, timing, error, latest metrics and its spec."""
    return _job_response(svc, job_id, project=scope(caller))


@router.get("/{job_id}/metrics", response_model=MetricPage, responses=ERRORS)
def get_metrics(
    job_id: str,
    svc: ServicesDep,
    caller: Reader,
    after_step: Annotated[
        int, Query(ge=-1, le=MAX_INT32, description="Return steps after this one; -1 from the start.")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=1000, description="Points per page.")] = 100,
) -> JSONText:
    """Everything TRL logged, step by step, in step order, each step once.

    Poll with `after_step` = the last step seen; `has_more` says another page is ready now.
    """
    project = scope(caller)
    with svc.database.reading() as connection:
        # Another project's job gives an empty page (checked in the same query), then the 404 below.
        page = read_metrics(connection, job_id, after_step=after_step, limit=limit, project=project)
        if not page.items:
            require_visible_job(connection, job_id, caller)  # only an empty page needs the extra query
    return render_page(page)


@router.get("/{job_id}/events", response_model=EventPage, responses=ERRORS)
def get_events(
    job_id: str,
    svc: ServicesDep,
    caller: Reader,
    after: Annotated[int, Query(ge=0, le=MAX_INT64, description="Return events after this event id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONText:
    """State changes, errors (with tracebacks) and worker notes, oldest first."""
    project = scope(caller)
    with svc.database.reading() as connection:
        page = read_events(connection, job_id, after_id=after, limit=limit, project=project)
        if not page.items:
            require_visible_job(connection, job_id, caller)
    return render_page(page)
