"""The PostgreSQL and Redis servers the integration tests talk to.

They use the servers at GRPO_TEST_POSTGRES_URL / GRPO_TEST_REDIS_URL (defaults: the ones on 127.0.0.1 that our
machines and CI run). Where nothing listens there, a local server is started from installed binaries; where
there are none, the test run stops with a message naming what to install. Tests are never skipped for want of
a server.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

INSTALL_HINT = {
    "postgres": "install PostgreSQL (Debian/Ubuntu: apt install postgresql; macOS: brew install postgresql) "
    "or point GRPO_TEST_POSTGRES_URL at a server whose user may create databases",
    "redis": "install Redis (Debian/Ubuntu: apt install redis-server; macOS: brew install redis) "
    "or point GRPO_TEST_REDIS_URL at a server",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def libpq_url(sqlalchemy_url: str) -> str:
    """`postgresql+psycopg://...` as psycopg itself takes it."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=3) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


def _find_binary(name: str, extra_globs: list[str]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_globs:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    return None


def _launch(command: list[str], answers: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Start a server for the rest of the test run (stopped at exit) and wait until it answers."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()

    atexit.register(stop)
    deadline = time.monotonic() + timeout
    while not answers():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.exit(f"{what} did not start ({command[0]} exited or took over {timeout:.0f}s)", 3)
        time.sleep(0.2)


def _start_postgres() -> str:
    initdb = _find_binary("initdb", ["/usr/lib/postgresql/*/bin/initdb", "/opt/homebrew/opt/postgresql*/bin/initdb"])
    postgres = _find_binary("postgres", ["/usr/lib/postgresql/*/bin/postgres"])
    if initdb is None or postgres is None:
        pytest.exit(f"PostgreSQL is not reachable and no PostgreSQL binaries were found: {INSTALL_HINT['postgres']}", 3)
    if os.geteuid() == 0:
        pytest.exit(
            "PostgreSQL is not reachable, and a local one cannot be started as root (initdb refuses): start the "
            f"server (pg_ctlcluster <version> main start) or {INSTALL_HINT['postgres']}",
            3,
        )
    data = Path(tempfile.mkdtemp(prefix="grpo-test-pg-"))
    subprocess.run(
        [initdb, "-D", str(data / "db"), "-U", "postgres", "--auth=trust"], check=True, stdout=subprocess.DEVNULL
    )
    port = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    _launch(
        [postgres, "-D", str(data / "db"), "-p", str(port), "-k", str(data), "-c", "listen_addresses=127.0.0.1"],
        lambda: _postgres_answers(url),
        "the local PostgreSQL server",
    )
    return url


def _start_redis() -> str:
    binary = _find_binary("redis-server", [])
    if binary is None:
        pytest.exit(f"Redis is not reachable and redis-server is not installed: {INSTALL_HINT['redis']}", 3)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    _launch(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        lambda: _redis_answers(url),
        "the local Redis server",
    )
    return url


def postgres_admin_url() -> str:
    """A URL of a PostgreSQL server where the tests may create databases."""
    url = os.environ.get("GRPO_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    return url if _postgres_answers(url) else _start_postgres()


def redis_url() -> str:
    """A URL of a Redis server."""
    url = os.environ.get("GRPO_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    return url if _redis_answers(url) else _start_redis()


class OwnPostgres:
    """A PostgreSQL cluster of one test's own, which it may stop and start (the shared server must stay up). Run as
    the `postgres` user when the tests run as root (initdb refuses root)."""

    def __init__(self) -> None:
        self.bin = Path(_find_binary("pg_ctl", ["/usr/lib/postgresql/*/bin/pg_ctl"]) or "pg_ctl").parent
        self.root = Path(tempfile.mkdtemp(prefix="grpo-test-own-pg-"))
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.root / "db"), "-U", "postgres", "--auth=trust"])

    def _as_postgres(self, command: list[str]) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(prefix + command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.root / "db"), "-o", options, "-l", log, "-w", "start"]
        )

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, as in a restart or a failover."""
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.root / "db"), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        if (self.root / "db" / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
