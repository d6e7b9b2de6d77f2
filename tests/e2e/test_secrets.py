"""A secret on its way into a real job (Postgres, Redis, `grpo serve`, a `grpo worker`, the tiny model): the training
process has it, the reward sandbox does not, and its value is nowhere else: no API answer, event, log, file of the
data dir or database column holds it in plaintext, while the secrets table holds its ciphertext."""

from __future__ import annotations

import hashlib
import json
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from cryptography.fernet import Fernet

from shared.access.secrets import job_environment
from shared.queue import dispatch, make_celery
from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.store import jobs
from shared.store.db import Database
from tests.callers import Caller
from tests.conftest import production
from tests.processes import Service
from tests.services import libpq_url
from tests.specs import job_spec, python_reward

PLACEHOLDER = "<sha256 of the value>"
# Runs in the reward sandbox: 1.0 if the secret is there under its own name, or its value under any name.
SANDBOX_LOOKS = """
import hashlib
import os

DIGEST = "<sha256 of the value>"

def sandbox_env(completions, **kwargs):
    values = [hashlib.sha256(v.encode()).hexdigest() for v in os.environ.values()]
    seen = "HF_TOKEN" in os.environ or DIGEST in values
    kwargs["log_metric"]("sandbox_sees_secret", 1.0 if seen else 0.0)
    return [-abs(8 - len(c)) for c in completions]
"""


@pytest.fixture
def secret_service(tmp_path: Path, postgres_url: str, redis_server: str, redis_queue: str) -> Iterator[Service]:
    """Production's processes (`grpo migrate`, `serve`, `worker` on Postgres and Redis), with a key of secrets."""
    yield from production(tmp_path, postgres_url, redis_server, redis_queue, secret_key=Fernet.generate_key().decode())


def answers_of_every_get_route(service: Service, caller: Caller, job_id: str) -> list[str]:
    """What every GET route of the OpenAPI document answers about the job (the admin's view), and the caller's
    secrets and the job's live stream (to its end)."""
    schema = service.http.get("/openapi.json").json()
    params = {"/v1/jobs": {"limit": 100}, "/v1/jobs/{job_id}/events": {"limit": 1000}}
    texts = []
    for path, item in schema["paths"].items():
        if "get" not in item or path.endswith("/stream"):
            continue
        url = path.format(job_id=job_id, name="final", file_id="file-none", prefix="none")
        for extra in ({}, {"format": "jsonl"}) if path.endswith("/export") else ({},):
            answer = service.http.get(url, params={**params.get(path, {}), **extra})
            assert answer.status_code < 500, f"GET {url}: {answer.status_code} {answer.text[:300]}"
            texts.append(answer.text if "tar" not in answer.headers.get("content-type", "") else repr(answer.content))
    with service.http.stream("GET", f"/v1/jobs/{job_id}/stream", timeout=30) as stream:
        texts.append(stream.read().decode(errors="replace"))
    texts += [caller.get("/v1/secrets").text, caller.get(f"/v1/jobs/{job_id}").text]
    return texts


def database_rows(postgres_url: str) -> list[str]:
    """Every row of every table of the service's database, as text (every column, JSON and bytes included)."""
    with psycopg.connect(libpq_url(postgres_url)) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        ]
        assert {"jobs", "job_events", "metric_points", "secrets", "audit_events"} <= set(tables), tables
        return [str(row[0]) for table in tables for row in connection.execute(f'SELECT t::text FROM "{table}" t')]


def data_dir_files(data_dir: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in data_dir.rglob("*") if path.is_file()}


def test_a_secret_reaches_the_training_process_not_the_reward_sandbox_and_its_value_is_nowhere_else(
    secret_service: Service, tiny_model: Path, postgres_url: str
) -> None:
    service = secret_service
    value = "hf_" + secrets.token_urlsafe(24)
    alpha = Caller(service, "alpha member", service.make_key("alpha", "member"))
    beta = Caller(service, "beta member", service.make_key("beta", "member"))
    try:
        stored = alpha.post("/v1/secrets", json={"name": "HF_TOKEN", "value": value})
        assert stored.status_code == 201, stored.text
        reward = SANDBOX_LOOKS.replace(PLACEHOLDER, hashlib.sha256(value.encode()).hexdigest())
        spec = job_spec(tiny_model, reward_funcs=[python_reward(reward)], secrets=["HF_TOKEN"])
        spec["args"].update(max_steps=2)

        # Another project's secret of the same name is no secret of beta's.
        refused = beta.post("/v1/jobs", json=spec)
        assert refused.status_code == 422 and "project beta has no secret HF_TOKEN" in refused.text, refused.text

        job_id = alpha.submit(spec)
        final = service.wait_finished(job_id, timeout=300)
        assert final["status"] == "succeeded", final["error"]

        # The training process reports, by name, what it found in its own environment.
        events = service.events(job_id)
        noted = [e for e in events if e["message"].startswith("secrets in the training process's environment")]
        assert [(e["message"], e["data"]) for e in noted] == [
            (
                "secrets in the training process's environment (not the reward sandbox's): HF_TOKEN",
                {"secrets": ["HF_TOKEN"], "missing_secrets": []},
            )
        ]
        # The reward function, in the sandbox, saw neither the name nor the value at any step.
        looked = [
            p["metrics"]["sandbox_sees_secret"]
            for p in service.all_metrics(job_id)
            if "sandbox_sees_secret" in p["metrics"]
        ]
        assert looked and set(looked) == {0.0}, looked

        texts = answers_of_every_get_route(service, alpha, job_id)
        leaks = [text[:200] for text in texts if value in text]
        assert not leaks, f"API answers hold the secret's value: {leaks}"
        assert value not in service.logs(), "a service log holds the secret's value"
        # The worker's own environment has the key to every project's secrets; no process it starts does.
        worker = psutil.Process(next(p for p in service.processes if p.log_path.name == "worker.log").process.pid)
        assert "GRPO_SECRET_KEY" in worker.environ()
        started = worker.children(recursive=True)
        assert any("forkserver" in " ".join(child.cmdline()) for child in started), started
        assert [child.pid for child in started if "GRPO_SECRET_KEY" in child.environ()] == []
        files = data_dir_files(Path(service.env["GRPO_DATA_DIR"]))
        assert any(name.endswith(f"{job_id}/train.log") for name in files), sorted(files)
        assert [name for name, content in files.items() if value.encode() in content] == []
        rows = database_rows(postgres_url)
        assert [row[:200] for row in rows if value in row or value.encode().hex() in row] == []

        # What the database does hold: the ciphertext, which the service's key opens as this secret of alpha's.
        with psycopg.connect(libpq_url(postgres_url)) as connection:
            (ciphertext,) = connection.execute(
                "SELECT ciphertext FROM secrets WHERE project = 'alpha' AND name = 'HF_TOKEN'"
            ).fetchone() or (None,)
        assert ciphertext and value not in ciphertext
        opened = json.loads(Fernet(service.env["GRPO_SECRET_KEY"].encode()).decrypt(ciphertext.encode()))
        assert opened == {"project": "alpha", "name": "HF_TOKEN", "value": value}
    finally:
        alpha.close()
        beta.close()


def test_a_secret_deleted_after_submit_fails_the_job_naming_it(
    secret_service: Service, tiny_model: Path, postgres_url: str
) -> None:
    service = secret_service
    alpha = Caller(service, "alpha member", service.make_key("alpha", "member"))
    try:
        assert (
            alpha.post("/v1/secrets", json={"name": "WANDB_API_KEY", "value": secrets.token_hex(16)}).status_code == 201
        )
        spec = JobSpec.model_validate(job_spec(tiny_model, secrets=["WANDB_API_KEY"]))
        database = Database(postgres_url)
        try:
            with database.session() as session:  # submitted (stored, its secret there), not yet sent to a worker
                job_id = jobs.create_job(session, spec, project="alpha").id
            assert alpha.delete("/v1/secrets/WANDB_API_KEY").status_code == 200
            settings = Settings(
                broker_url=service.env["GRPO_BROKER_URL"],
                queue=service.env["GRPO_QUEUE"],
                data_dir=Path(service.env["GRPO_DATA_DIR"]),
            )
            dispatch(database, make_celery(settings), settings, job_id)
        finally:
            database.dispose()
        final = service.wait_finished(job_id, timeout=120)
    finally:
        alpha.close()
    assert final["status"] == "failed"
    assert final["error"] == (
        "the job needs secret(s) WANDB_API_KEY, which project alpha no longer has (deleted after the job was "
        "submitted): set them again (`grpo secrets set NAME`, or POST /v1/secrets) and submit the job again"
    )
    assert not [e for e in service.events(job_id) if e["message"].startswith("training process ")]


def grpo(service: Service, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """A `grpo` command as a user runs it against the service (its key from GRPO_API_KEY), `stdin` piped in."""
    env = {**service.env, "GRPO_API_URL": service.url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def test_grpo_up_keys_its_secrets_and_grpo_secrets_takes_the_value_from_stdin_never_argv(
    embedded_service: Service,
) -> None:
    service = embedded_service
    data_dir = Path(service.env["GRPO_DATA_DIR"])
    assert stat.S_IMODE((data_dir / "secret-key").stat().st_mode) == 0o600
    value = "hf_" + secrets.token_urlsafe(24)

    made = grpo(service, "secrets", "set", "HF_TOKEN", stdin=value + "\n")
    assert made.returncode == 0, made.stderr
    assert "secret HF_TOKEN of project default created" in made.stderr
    replaced = grpo(service, "secrets", "set", "HF_TOKEN", stdin=value + "\n")
    assert replaced.returncode == 0 and "replaced" in replaced.stderr, replaced.stderr
    listed = grpo(service, "secrets", "list")
    assert listed.returncode == 0 and "HF_TOKEN" in listed.stdout and "default" in listed.stdout, listed.stderr
    for answer in (made, replaced, listed):
        assert value not in answer.stdout + answer.stderr

    # Stored as typed (echo's newline left out), under the key `grpo up` made.
    database = Database.from_settings(Settings(data_dir=data_dir))
    try:
        with database.session() as session:
            assert job_environment(session, Settings(data_dir=data_dir), "default", ["HF_TOKEN"]) == {"HF_TOKEN": value}
    finally:
        database.dispose()

    empty = grpo(service, "secrets", "set", "WANDB_API_KEY", stdin="")
    assert empty.returncode == 1 and "no value for WANDB_API_KEY: pipe it in" in empty.stderr, empty.stderr
    refused = grpo(service, "secrets", "set", "LD_PRELOAD", stdin="x")
    assert refused.returncode == 1 and "is refused (names starting with LD_)" in refused.stderr, refused.stderr
    deleted = grpo(service, "secrets", "delete", "HF_TOKEN")
    assert deleted.returncode == 0 and "secret HF_TOKEN deleted" in deleted.stderr, deleted.stderr
    assert "no secrets" in grpo(service, "secrets", "list").stdout
