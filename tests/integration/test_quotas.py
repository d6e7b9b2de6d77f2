"""Projects held to their limits, on the real database (a SQLite file, then Postgres): what a submit is refused,
which queued job waits and why, in what order held jobs start, and that two claims cannot both take the last slot.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from shared import quotas
from shared.access.projects import ProjectLimits, create_project
from shared.spec.job import JobSpec
from shared.spec.problems import SpecError
from shared.store import jobs
from shared.store.db import Database
from shared.store.models import Job, JobEvent
from shared.store.states import JobStatus, claim, transition
from tests.specs import job_spec

LEASE = 60.0


def _project(database: Database, name: str, **limits: int) -> None:
    with database.session() as session:
        create_project(session, name, ProjectLimits(**limits))


def _job(database: Database, project: str, **args: int) -> str:
    spec = job_spec("m")
    spec["args"].update(args)
    with database.session() as session:
        return jobs.create_job(session, JobSpec.model_validate(spec), project=project).id


def _try_start(database: Database, job_id: str, worker: str = "w", worker_gpus: int = 0) -> str | None:
    """What a worker does with the job's message: hold it (returns the reason) or claim it (returns None)."""
    with database.session() as session:
        reason = quotas.hold_reason(session, job_id, worker_gpus)
        if reason is not None:
            quotas.hold(session, job_id, reason)
            return reason
        job = session.get(Job, job_id)
        assert job is not None
        assert claim(session, job_id, worker, LEASE, quotas.gpus_on(job, worker_gpus)) is not None
        return None


def _row(database: Database, job_id: str) -> Job:
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _finish(database: Database, job_id: str) -> None:
    with database.session() as session:
        assert transition(session, job_id, JobStatus.SUCCEEDED)


def test_a_job_past_the_running_limit_waits_with_its_reason_and_starts_when_the_slot_frees(database: Database) -> None:
    _project(database, "research", max_running_jobs=1)
    first, second = _job(database, "research"), _job(database, "research")
    assert _try_start(database, first) is None

    reason = _try_start(database, second)
    assert reason == "project research: 1 of 1 running jobs"
    held = _row(database, second)
    assert held.status == "queued" and held.status_reason == reason and held.held_since is not None
    # A second refusal for the same reason says nothing new.
    assert _try_start(database, second) == reason
    with database.session() as session:
        waits = session.scalars(select(JobEvent.message).where(JobEvent.job_id == second)).all()
    assert waits.count(f"waiting: {reason}") == 1

    with database.session() as session:
        assert quotas._releasable(session, "research", None) == []  # the slot is still taken
    _finish(database, first)
    with database.session() as session:
        assert quotas._releasable(session, "research", None) == [second]
    assert _try_start(database, second) is None
    started = _row(database, second)
    assert started.status == "running" and started.status_reason is None and started.held_since is None


def test_jobs_of_a_project_start_in_submit_order(database: Database) -> None:
    _project(database, "research", max_running_jobs=1)
    older, newer = _job(database, "research"), _job(database, "research")
    # The newer job's message arrives first: it waits for the older one, which then starts.
    assert _try_start(database, newer) == "project research: 0 of 1 running jobs, 1 submitted before it waiting"
    assert _try_start(database, older) is None


def test_held_jobs_are_released_oldest_first_and_only_as_many_as_fit(database: Database) -> None:
    _project(database, "research", max_running_jobs=2)
    running = [_job(database, "research") for _ in range(2)]
    waiting = [_job(database, "research") for _ in range(3)]
    for job_id in running:
        assert _try_start(database, job_id) is None
    for job_id in waiting:
        assert _try_start(database, job_id) is not None
    _finish(database, running[0])
    with database.session() as session:
        assert quotas._releasable(session, "research", None) == waiting[:1]
    _finish(database, running[1])
    with database.session() as session:
        assert quotas._releasable(session, "research", None) == waiting[:2]


def test_another_projects_jobs_are_not_held_back(database: Database) -> None:
    _project(database, "research", max_running_jobs=1)
    _project(database, "product")
    assert _try_start(database, _job(database, "research")) is None
    assert _try_start(database, _job(database, "research")) is not None
    assert _try_start(database, _job(database, "product")) is None


def test_the_gpu_limit_counts_the_gpus_of_running_jobs(database: Database) -> None:
    _project(database, "research", max_gpus=2)
    big = JobSpec.model_validate({**job_spec("m"), "resources": {"gpus": 2}})
    small = JobSpec.model_validate({**job_spec("m"), "resources": {"gpus": 1}})
    with database.session() as session:
        first = jobs.create_job(session, big, project="research").id
        second = jobs.create_job(session, small, project="research").id
    assert _try_start(database, first, worker_gpus=8) is None
    assert _try_start(database, second, worker_gpus=8) == "project research: 2 of 2 GPUs in use, and the job needs 1"


def test_a_job_that_names_no_gpus_counts_the_one_it_takes_on_a_gpu_worker(database: Database) -> None:
    _project(database, "research", max_gpus=1)
    first, second = _job(database, "research"), _job(database, "research")
    assert _try_start(database, first, worker_gpus=8) is None
    assert _row(database, first).gpus_held == 1
    assert _try_start(database, second, worker_gpus=8) == "project research: 1 of 1 GPUs in use, and the job needs 1"
    # On a CPU worker it takes none.
    assert _try_start(database, second, worker_gpus=0) is None


def test_a_job_no_worker_can_hold_does_not_hold_back_the_later_ones(database: Database) -> None:
    _project(database, "research", max_running_jobs=1)
    stuck = _job(database, "research")
    with database.session() as session:
        job = session.get(Job, stuck)
        assert job is not None
        job.status_reason = "needs a worker with 8 GPU(s), and no worker is running"
    assert _try_start(database, _job(database, "research")) is None


def test_a_submit_over_the_queue_or_step_limit_is_refused_naming_the_limit(database: Database) -> None:
    _project(database, "research", max_queued_jobs=1, max_steps=8, max_gpus=1)
    spec = JobSpec.model_validate(job_spec("m"))
    with database.session() as session:
        quotas.check_submit(session, "research", spec)  # 8 steps, nothing queued: fits
    _job(database, "research")
    with database.session() as session, pytest.raises(quotas.QuotaExceeded) as full:
        quotas.check_submit(session, "research", spec)
    assert "1 of 1 queued jobs (max_queued_jobs)" in str(full.value)
    assert "grpo projects update research --max-queued-jobs" in str(full.value)

    too_long = JobSpec.model_validate(job_spec("m", args={**job_spec("m")["args"], "max_steps": 9}))
    by_epochs = JobSpec.model_validate(job_spec("m", args={"num_generations": 4, "per_device_train_batch_size": 4}))
    too_big = JobSpec.model_validate({**job_spec("m"), "resources": {"gpus": 2}})
    for refused, field, words in [
        (too_long, "args.max_steps", "at most 8 steps per job (max_steps), and this job asks for 9"),
        (by_epochs, "args.max_steps", "runs by epochs"),
        (too_big, "resources", "may use 1 at most (max_gpus)"),
    ]:
        with database.session() as session, pytest.raises(SpecError) as error:
            quotas.check_submit(session, "research", refused)
        assert [problem.field for problem in error.value.problems] == [field]
        assert words in error.value.problems[0].message


def test_two_claims_cannot_both_take_the_last_slot(database: Database) -> None:
    """The first claim holds the project's slots while it decides; the second, arriving meanwhile, waits for it and
    then sees the slot taken (without the lock both would see 0 running jobs and both start)."""
    _project(database, "research", max_running_jobs=1)
    first, second = _job(database, "research"), _job(database, "research")
    deciding = threading.Event()
    outcome: dict[str, str | None] = {}

    def slow_claim() -> None:
        with database.session() as session:
            assert quotas.hold_reason(session, first) is None
            deciding.set()
            time.sleep(0.5)
            assert claim(session, first, "w1", LEASE) is not None

    thread = threading.Thread(target=slow_claim)
    thread.start()
    assert deciding.wait(10)
    outcome["second"] = _try_start(database, second, "w2")
    thread.join()
    assert outcome["second"] == "project research: 1 of 1 running jobs"
    assert _row(database, first).status == "running" and _row(database, second).status == "queued"


def test_a_held_job_is_not_resent_as_a_lost_message(database: Database) -> None:
    _project(database, "research", max_running_jobs=0)
    job_id = _job(database, "research")
    assert _try_start(database, job_id) == "project research: 0 of 0 running jobs"
    with database.session() as session:
        far_future = _row(database, job_id).created_at.replace(year=2100)
        assert job_id not in jobs.undispatched_jobs(session, far_future, 0)
