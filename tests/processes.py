"""Running the real `grpo` processes (API, worker, both) for tests, and talking to them over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.services import free_port

TERMINAL = {"succeeded", "failed", "cancelled"}


class GrpoProcess:
    """One `grpo <verb>` process, its output in a log file."""

    def __init__(self, verb: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *verb], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM), without waiting."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if not self.alive():
                raise AssertionError(f"process exited ({self.process.returncode}) before {text!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log()}")
            time.sleep(0.1)


class Service:
    """A running service (API, and workers unless told otherwise) and an HTTP client for it."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[GrpoProcess] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        # The admin key the test acts with (None while the API runs open, GRPO_AUTH=off).
        self.key: str | None = None

    def use_key(self, key: str) -> None:
        """Act with `key` from now on: the HTTP client, and every `grpo` command started with `self.env`."""
        self.key = key
        self.http.headers["Authorization"] = f"Bearer {key}"
        self.env["GRPO_API_KEY"] = key

    def make_key(self, project: str = "default", role: str = "admin") -> str:
        """A new key of `project` (created when missing), made in the service's database as an operator would."""
        from shared.access.keys import Role, create_key
        from shared.access.projects import ensure_project
        from shared.settings import Settings
        from shared.store.db import Database, migrate

        settings = Settings(data_dir=Path(self.env["GRPO_DATA_DIR"]), database_url=self.env.get("GRPO_DATABASE_URL"))
        settings.ensure_data_dir()
        migrate(settings.effective_database_url)
        database = Database.from_settings(settings)
        try:
            with database.session() as session:
                ensure_project(session, project)
                _, key = create_key(session, project, Role(role), "tests")
        finally:
            database.dispose()
        return key

    def start(self, verb: list[str], name: str) -> GrpoProcess:
        process = GrpoProcess(verb, self.env, self.log_dir / f"{name}.log")
        self.processes.append(process)
        return process

    def start_api(self, verb: str = "serve") -> GrpoProcess:
        """Start `grpo up` or `grpo serve` and wait until it answers; the test then acts with an admin key (`up`
        writes its own; for `serve`, one is made first, as an operator would, unless the API runs open)."""
        auth_on = self.env.get("GRPO_AUTH", "on") != "off"
        if verb == "serve" and auth_on and self.key is None:
            self.use_key(self.make_key())
        process = self._start_and_wait(verb)
        if verb == "up" and auth_on and self.key is None:
            self.use_key((Path(self.env["GRPO_DATA_DIR"]) / "api-key").read_text().strip())
        return process

    def _start_and_wait(self, verb: str) -> GrpoProcess:
        process = self.start([verb, "--port", str(self.port)], verb)
        deadline = time.monotonic() + 90
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            if not process.alive():
                raise AssertionError(f"`grpo {verb}` exited ({process.process.returncode}):\n{process.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"`grpo {verb}` did not answer within 90s:\n{process.log()}")
            time.sleep(0.2)

    def start_worker(self, name: str = "worker", wait: bool = True) -> GrpoProcess:
        """Start `grpo worker`; with `wait`, return once it takes jobs (otherwise `wait_for_log("ready.")` later:
        a worker's imports take seconds of CPU that can overlap the API's start)."""
        process = self.start(["worker"], name)
        if wait:
            process.wait_for_log("ready.")
        return process

    def stop(self) -> None:
        """Stop every process: all are asked at once (each takes seconds to wind down), then each is waited for."""
        self.http.close()
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()}" for p in self.processes)

    # --- the API, as a test uses it ---

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_until(self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s\n{self.logs()}")
            time.sleep(0.2)

    def wait_finished(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_until(job_id, lambda job: job["status"] in TERMINAL, timeout)

    def all_metrics(self, job_id: str, page_size: int = 7) -> list[dict[str, Any]]:
        """Every metric point, read through the cursor in small pages (so paging itself is exercised)."""
        points: list[dict[str, Any]] = []
        after_step = -1
        while True:
            response = self.http.get(
                f"/v1/jobs/{job_id}/metrics", params={"after_step": after_step, "limit": page_size}
            )
            assert response.status_code == 200, response.text
            page = response.json()
            points += page["data"]
            if not page["has_more"]:
                return points
            after_step = page["data"][-1]["step"]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000})
        assert response.status_code == 200, response.text
        return list(response.json()["data"])


# Where the tests' local paths lie: the models and datasets they build in pytest's temporary folders, and
# /models/..., the model of specs that are stored but never trained.
TEST_PATH_ROOTS = os.pathsep.join([tempfile.gettempdir(), "/models"])


def base_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a test's service processes: offline, its own data dir, local paths under the tests'
    folders (TEST_PATH_ROOTS), the given GRPO_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPO_")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GRPO_DATA_DIR": str(data_dir)})
    env.update({"GRPO_MODEL_ROOTS": TEST_PATH_ROOTS, "GRPO_DATASET_ROOTS": TEST_PATH_ROOTS})
    env.update({f"GRPO_{k.upper()}": v for k, v in settings.items()})
    return env
