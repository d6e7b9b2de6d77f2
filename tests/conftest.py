"""Fixtures: the tiny model, a database of each test's own, Redis queues of each test's own, running services."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from shared.store.db import Database, migrate
from tests.processes import Service, base_env
from tests.services import libpq_url, postgres_admin_url, redis_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 model built once for the whole run (what `grpo tiny-model` writes)."""
    from worker.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random 1-label Qwen2 sequence classifier (what `grpo tiny-model --reward-model` writes)."""
    from worker.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-judge", reward_model=True)


@pytest.fixture(scope="session")
def tiny_tool_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3 trained to call the built-in calculator, built once for the whole run (15 to 25 s; what
    `grpo tiny-model --tool-calling` writes)."""
    from worker.tiny_tool_model import build_tiny_tool_model

    return build_tiny_tool_model(tmp_path_factory.mktemp("models") / "tiny-tool").path


@pytest.fixture(scope="session")
def postgres_server() -> str:
    return postgres_admin_url()


@pytest.fixture(scope="session")
def redis_server() -> str:
    return redis_url()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database of this test's own; dropped afterwards."""
    name = f"grpo_test_{secrets.token_hex(6)}"
    with psycopg.connect(libpq_url(postgres_server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(libpq_url(postgres_server), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_queue(redis_server: str) -> Iterator[str]:
    """A queue name of this test's own (so parallel tests never take each other's tasks); its keys are removed."""
    queue = f"grpo-test-{secrets.token_hex(6)}"
    yield queue
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)


# Lease, heartbeat and sweep timings short enough for a test to see a lost worker replaced within seconds.
FAST_LIFECYCLE = {
    "lease_seconds": "3",
    "heartbeat_seconds": "0.5",
    "sweep_seconds": "0.5",
    "resend_after_seconds": "2",
    "stop_grace_seconds": "20",
}


def _embedded(tmp_path: Path, verb: str) -> Iterator[Service]:
    service = Service(base_env(tmp_path / "data", **FAST_LIFECYCLE), tmp_path)
    try:
        service.start_api(verb)
        yield service
    finally:
        service.stop()


@pytest.fixture
def embedded_service(tmp_path: Path) -> Iterator[Service]:
    """`grpo up` on the embedded default (SQLite + SQLite broker) in a data dir of its own."""
    yield from _embedded(tmp_path, "up")


@pytest.fixture
def api_only(tmp_path: Path) -> Iterator[Service]:
    """`grpo serve` on the embedded default, with no worker: submitted jobs stay queued."""
    yield from _embedded(tmp_path, "serve")


def production(
    tmp_path: Path,
    postgres_url: str,
    redis_server: str,
    redis_queue: str,
    workers: int = 1,
    data_dir: Path | None = None,
    **settings: str,
) -> Iterator[Service]:
    """`grpo migrate`, `grpo serve` and `grpo worker` (`worker`, `worker-2`, ...) on Postgres + Redis, as in
    production, with these settings. The workers and the API start at once (their imports overlap)."""
    env = base_env(
        data_dir or tmp_path / "data",
        database_url=postgres_url,
        broker_url=redis_server,
        queue=redis_queue,
        **{**FAST_LIFECYCLE, **settings},
    )
    service = Service(env, tmp_path)
    try:
        migrate = service.start(["migrate"], "migrate")
        assert migrate.process.wait(timeout=60) == 0, migrate.log()
        started = [
            service.start_worker(f"worker-{n}" if n > 1 else "worker", wait=False) for n in range(1, workers + 1)
        ]
        service.start_api("serve")
        for worker in started:
            worker.wait_for_log("ready.")
        yield service
    finally:
        service.stop()


@pytest.fixture
def production_service(tmp_path: Path, postgres_url: str, redis_server: str, redis_queue: str) -> Iterator[Service]:
    """`grpo migrate`, `grpo serve` and `grpo worker` on Postgres + Redis, as in production."""
    yield from production(tmp_path, postgres_url, redis_server, redis_queue)


@pytest.fixture
def two_workers(tmp_path: Path, postgres_url: str, redis_server: str, redis_queue: str) -> Iterator[Service]:
    """`production_service` with two workers, `worker` and `worker-2`."""
    yield from production(tmp_path, postgres_url, redis_server, redis_queue, workers=2)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of this test's own: a SQLite file (the embedded default), then a Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'grpo.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated database (each test's own) and its connection pool."""
    migrate(database_url)
    db = Database(database_url)
    yield db
    db.dispose()
