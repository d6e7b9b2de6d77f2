"""A LoRA job's checkpoints say they are adapters and name their base model, on SQLite and Postgres."""

from __future__ import annotations

import json
from typing import Any

from shared.spec.job import JobSpec
from shared.store.checkpoints import FINAL_MODEL, read_checkpoints, record_checkpoint
from shared.store.db import Database
from shared.store.states import claim
from tests.specs import job_spec
from tests.store import LEASE_SECONDS, new_job


def listed_checkpoints(database: Database, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The checkpoint listing of a job of `spec` that saved checkpoint-2 and its final model."""
    job_id = new_job(database, JobSpec.model_validate(spec))
    with database.session() as session:
        attempt = claim(session, job_id, "test-worker", LEASE_SECONDS)
        assert attempt is not None
        for name, step in (("checkpoint-2", 2), (FINAL_MODEL, 2)):
            record_checkpoint(session, job_id, attempt, name=name, step=step, path="/x", size_bytes=1)
    with database.reading() as connection:
        return [json.loads(item) for item in read_checkpoints(connection, job_id)]


def test_a_lora_jobs_checkpoints_are_adapters_of_its_model(database: Database) -> None:
    spec = job_spec("models/base-lm", peft_config={"r": 8, "lora_alpha": 16, "target_modules": "all-linear"})
    listed = listed_checkpoints(database, spec)
    assert [(c["name"], c["adapter"], c["base_model"]) for c in listed] == [
        ("checkpoint-2", True, "models/base-lm"),
        ("final", True, "models/base-lm"),
    ]


def test_a_full_fine_tuning_jobs_checkpoints_are_whole_models(database: Database) -> None:
    for spec in (job_spec("models/base-lm"), job_spec("models/base-lm", peft_config=None)):
        listed = listed_checkpoints(database, spec)
        assert [(c["name"], c["adapter"], c["base_model"]) for c in listed] == [
            ("checkpoint-2", False, None),
            ("final", False, None),
        ]
