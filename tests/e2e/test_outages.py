"""What a service meets on a bad day, each while a job trains on Postgres + Redis:

- the database away: PostgreSQL (a cluster of this test's own) stopped for seconds and started again. Every API
  request meanwhile is a 503 with Retry-After (never a 500), /readyz is red then green, and the worker rides it
  out: the job succeeds with every step stored once;
- a full disk during a checkpoint (the data dir on a small tmpfs the test fills): the job fails saying the disk is
  full and what to do, the half-saved checkpoint is neither registered nor left behind, and the worker runs the
  next job once there is room again."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import production
from tests.processes import Service
from tests.services import OwnPostgres
from tests.specs import job_spec

OUTAGE_SECONDS = 6.0
STEPS = 30


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    cluster = OwnPostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def service(tmp_path: Path, own_postgres: OwnPostgres, redis_server: str) -> Iterator[Service]:
    # A lease that outlasts the outage: a worker that cannot renew keeps training, and the job stays its own.
    yield from production(
        tmp_path, own_postgres.url, redis_server, f"grpo-test-{secrets.token_hex(6)}", lease_seconds="30"
    )


def _during_outage(service: Service, job_id: str) -> list[httpx.Response]:
    """What the API answers while the database is down: a job, its metrics, the job list, a submit, readiness."""
    return [
        service.http.get(f"/v1/jobs/{job_id}"),
        service.http.get(f"/v1/jobs/{job_id}/metrics"),
        service.http.get("/v1/jobs"),
        service.http.post("/v1/jobs", json=job_spec("/models/never-trained")),
        service.http.get("/readyz"),
    ]


def test_postgres_restarted_mid_job_is_503s_meanwhile_and_the_job_loses_no_step(
    service: Service, own_postgres: OwnPostgres, tiny_model: Path
) -> None:
    assert service.http.get("/readyz").json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}
    spec = job_spec(tiny_model)
    spec["args"]["max_steps"] = STEPS
    job = service.submit(spec)
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 3, timeout=120)

    own_postgres.stop()
    answers: list[httpx.Response] = []
    stopped = time.monotonic()
    while time.monotonic() - stopped < OUTAGE_SECONDS:
        answers += _during_outage(service, job["id"])
        time.sleep(0.5)
    own_postgres.start()

    assert answers and all(a.status_code == 503 for a in answers), [(a.request.url, a.status_code) for a in answers]
    assert all(a.headers["Retry-After"] == "5" for a in answers)
    for answer in answers:
        body = answer.json()
        if answer.request.url.path == "/readyz":
            assert body["database"] == "unavailable" and body["broker"] == body["storage"] == "ok", body
        else:
            assert body["error"]["type"] == "database_unavailable"
            assert "retry in 5 s" in body["error"]["message"] and "127.0.0.1" not in body["error"]["message"]

    final = service.wait_finished(job["id"], timeout=180)
    assert final["status"] == "succeeded", final["error"]
    steps = [p["step"] for p in service.all_metrics(job["id"], page_size=100)]
    assert steps == list(range(1, STEPS + 1)), steps
    assert service.http.get("/readyz").status_code == 200
    (api,) = [p for p in service.processes if p.log_path.name == "serve.log"]
    assert "Traceback" not in api.log() and "the database is unavailable" in api.log()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB filesystem of the test's own (tmpfs), for the worker's data dir."""
    if os.geteuid() != 0:
        pytest.skip("mounting the small filesystem needs root (CI runs as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write one file until the disk is full."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 16))
                out.flush()
        except OSError:
            pass
    return filler


def test_a_disk_that_fills_during_a_checkpoint_fails_the_job_cleanly_and_the_worker_goes_on(
    tmp_path: Path, small_disk: Path, postgres_url: str, redis_server: str, redis_queue: str, tiny_model: Path
) -> None:
    started = production(tmp_path, postgres_url, redis_server, redis_queue, data_dir=small_disk / "data")
    service = next(started)
    try:
        spec = job_spec(tiny_model)
        spec["args"].update(max_steps=40, save_strategy="steps", save_steps=3)
        job = service.submit(spec)
        listed = f"/v1/jobs/{job['id']}/checkpoints"
        service.wait_until(job["id"], lambda _: bool(service.http.get(listed).json()["data"]), timeout=120)
        filler = _fill(small_disk)

        final = service.wait_finished(job["id"], timeout=120)
        assert final["status"] == "failed"
        assert "No space left on device" in final["error"] and "the worker's disk is full" in final["error"]
        registered = {c["name"] for c in service.http.get(listed).json()["data"]}
        on_disk = {p.name for p in small_disk.glob("data/**/checkpoint-*")}
        assert registered and on_disk == registered, (registered, on_disk)

        filler.unlink()
        after = service.wait_finished(service.submit(job_spec(tiny_model))["id"], timeout=120)
        assert after["status"] == "succeeded", after["error"]
    finally:
        started.close()
