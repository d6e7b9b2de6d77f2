"""Jobs put straight into a test's database (no API), queued or claimed."""

from __future__ import annotations

from shared.spec.job import JobSpec
from shared.store import jobs
from shared.store.db import Database
from shared.store.states import claim
from tests.specs import job_spec

LEASE_SECONDS = 60.0


def new_job(database: Database, spec: JobSpec | None = None) -> str:
    """A queued job (of a small default spec); returns its id."""
    with database.session() as session:
        return jobs.create_job(session, spec or JobSpec.model_validate(job_spec("m"))).id


def running_job(database: Database, worker: str = "test-worker") -> tuple[str, int]:
    """A job claimed by `worker`; returns its id and the claim's attempt."""
    job_id = new_job(database)
    with database.session() as session:
        attempt = claim(session, job_id, worker, LEASE_SECONDS)
    assert attempt is not None
    return job_id, attempt
