"""The test run's own fallback: with no server at the configured URL it starts one, or says what to install."""

from __future__ import annotations

import os
import subprocess
import sys

CLOSED = "127.0.0.1:9"  # nothing listens on the discard port


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_a_local_redis_is_started_when_none_answers() -> None:
    result = run(
        "import redis; from tests.services import redis_url; url = redis_url(); "
        "print(url, redis.Redis.from_url(url).ping())",
        GRPO_TEST_REDIS_URL=f"redis://{CLOSED}/0",
    )
    assert result.returncode == 0, result.stderr
    url, pong = result.stdout.split()
    assert CLOSED not in url and pong == "True"


def test_without_a_reachable_postgres_one_is_started_or_the_run_says_what_to_do() -> None:
    result = run(
        "from tests.services import postgres_admin_url; print(postgres_admin_url())",
        GRPO_TEST_POSTGRES_URL=f"postgresql+psycopg://postgres@{CLOSED}/postgres",
    )
    if os.geteuid() == 0:  # initdb refuses to run as root: the run must stop and say so
        assert result.returncode != 0
        assert "PostgreSQL is not reachable, and a local one cannot be started as root" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert CLOSED not in result.stdout
