"""Where a later attempt resumes, on SQLite and Postgres: the newest registered checkpoint; when its files are not
on this worker's disk, the job is not quietly started over: the attempt stops, naming the checkpoint and the fix."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from shared.store.checkpoints import record_checkpoint
from shared.store.db import Database
from shared.store.models import Job, utcnow
from shared.store.reads import read_events
from shared.store.states import claim
from tests.store import LEASE_SECONDS, running_job
from worker.execute import _finish
from worker.protocol import Outcome
from worker.resume import CheckpointOutOfReach, resume_point


def _second_attempt(database: Database, tmp_path: Path, on_disk: dict[str, bool]) -> tuple[str, int]:
    """A job whose first attempt registered these checkpoints (name: whether its files are on this disk), then
    lost its lease; claimed again."""
    job_id, first = running_job(database, "worker-a")
    with database.session() as session:
        for step, (name, present) in enumerate(on_disk.items(), start=1):
            path = tmp_path / "worker-a" / name
            if present:
                path.mkdir(parents=True)
            record_checkpoint(session, job_id, first, name=name, step=step * 10, path=str(path), size_bytes=1)
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
        second = claim(session, job_id, "worker-b", LEASE_SECONDS)
    assert second == first + 1
    return job_id, second


def _events(database: Database, job_id: str) -> list[dict[str, str]]:
    with database.reading() as connection:
        return [json.loads(e) for e in read_events(connection, job_id, after_id=0, limit=100).items]


def test_a_later_attempt_resumes_from_the_newest_checkpoint(database: Database, tmp_path: Path) -> None:
    job_id, attempt = _second_attempt(database, tmp_path, {"checkpoint-10": True, "checkpoint-20": True})
    assert resume_point(database, job_id, attempt) == str(tmp_path / "worker-a" / "checkpoint-20")
    assert "resumes from checkpoint-20 (saved by attempt 1)" in _events(database, job_id)[-1]["message"]


def test_a_newest_checkpoint_out_of_reach_is_named_with_the_fix_not_started_over(
    database: Database, tmp_path: Path
) -> None:
    # An older checkpoint is here; the newest is on worker A's own disk: resuming from the older would lose steps.
    job_id, attempt = _second_attempt(database, tmp_path, {"checkpoint-10": True, "checkpoint-20": False})
    with pytest.raises(CheckpointOutOfReach) as raised:
        resume_point(database, job_id, attempt)
    message = str(raised.value)
    assert message.startswith("checkpoint-20 (step 20, saved by attempt 1) is registered but its files are not on")
    assert "do not share GRPO_DATA_DIR" in message and "`grpo resume`" in message
    last = _events(database, job_id)[-1]
    assert last["kind"] == "error" and last["message"] == message
    assert not any("resumes from" in e["message"] for e in _events(database, job_id))


def test_an_attempt_stopped_for_a_checkpoint_out_of_reach_pauses_the_job_saying_why(database: Database) -> None:
    job_id, attempt = running_job(database)
    why = "checkpoint-20 (step 20, saved by attempt 1) is registered but its files are not on this worker"
    _finish(database, job_id, attempt, Outcome(False, why, pause_because=why))
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.status, job.status_reason) == ("paused", why)
    assert _events(database, job_id)[-1]["message"] == f"job paused: {why}"
