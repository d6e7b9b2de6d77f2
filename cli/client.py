"""A small HTTP client of the API, for `grpo submit`, `grpo watch` and `grpo demo`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from shared.settings import Settings

TERMINAL_STATUSES = {"succeeded", "failed", "cancelled"}


def sse_messages(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The messages of a `text/event-stream` response (GET /v1/jobs/{id}/stream) as they arrive, each a dict of
    its fields (`event`, `data`, `id`); keep-alive comments are skipped."""
    message: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if message:
                yield message
            message = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            message[name] = message.get(name, "") + value.removeprefix(" ")


class ApiRefused(RuntimeError):
    """The API answered with an error; `errors` lists the field problems of a 422."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        message, errors = error["message"], error.get("errors", [])
    except (ValueError, KeyError, TypeError):
        message, errors = response.text, []
    raise ApiRefused(response.status_code, message, errors)


def key_for(settings: Settings) -> str | None:
    """The key the command line sends: GRPO_API_KEY, else the one `grpo up` wrote to its data dir."""
    if settings.api_key:
        return settings.api_key
    try:
        return settings.api_key_file.read_text().strip() or None
    except OSError:
        return None


class Client:
    """The API at `base_url`."""

    def __init__(self, base_url: str, timeout: float = 30.0, key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        job: dict[str, Any] = _check(self.http.post("/v1/jobs", json=spec))
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = _check(self.http.get(f"/v1/jobs/{job_id}"))
        return job

    def metrics(self, job_id: str, after_step: int, limit: int = 1000) -> dict[str, Any]:
        page: dict[str, Any] = _check(
            self.http.get(f"/v1/jobs/{job_id}/metrics", params={"after_step": after_step, "limit": limit})
        )
        return page

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        """POST /v1/jobs/{id}/{action}: cancel, pause or resume."""
        job: dict[str, Any] = _check(self.http.post(f"/v1/jobs/{job_id}/{action}"))
        return job

    def jobs(
        self, limit: int = 20, status: str | None = None, metadata: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """The newest jobs, filtered by status and `key=value` labels."""
        params: dict[str, Any] = {"limit": limit, "metadata": metadata or []}
        if status:
            params["status"] = status
        page: dict[str, Any] = _check(self.http.get("/v1/jobs", params=params))
        return list(page["data"])

    def latest_sample(self, job_id: str) -> dict[str, Any] | None:
        """The first sample of the job's newest sampled step, or None."""
        page: dict[str, Any] = _check(
            self.http.get(f"/v1/jobs/{job_id}/samples", params={"latest": "true", "limit": 1})
        )
        return page["data"][0] if page["data"] else None

    def events(self, job_id: str) -> list[dict[str, Any]]:
        page: dict[str, Any] = _check(self.http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}))
        return list(page["data"])

    def set_secret(self, name: str, value: str, project: str | None = None) -> tuple[dict[str, Any], bool]:
        """POST /v1/secrets: the secret as listed (never its value), and whether it was new."""
        params = {"project": project} if project else None
        response = self.http.post("/v1/secrets", json={"name": name, "value": value}, params=params)
        secret: dict[str, Any] = _check(response)
        return secret, response.status_code == 201

    def secrets(self, project: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/secrets: the project's secrets by name."""
        page: dict[str, Any] = _check(self.http.get("/v1/secrets", params={"project": project} if project else None))
        return list(page["data"])

    def delete_secret(self, name: str, project: str | None = None) -> None:
        """DELETE /v1/secrets/{name}."""
        _check(self.http.delete(f"/v1/secrets/{name}", params={"project": project} if project else None))

    def follow(
        self, job_id: str, interval: float = 0.5, on_status: Callable[[dict[str, Any]], None] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield each metric point of the job, in step order, until the job has ended and all are read.

        After a resume (a new `attempt`), the steps past the checkpoint it resumed from are logged again: they are
        read again, from `resumed_from_step`.
        """
        after_step = -1
        status = None
        attempt = None
        while True:
            job = self.job(job_id)
            if job["status"] != status:
                status = job["status"]
                if on_status:
                    on_status(job)
            if job["attempt"] != attempt:
                attempt = job["attempt"]
                resumed_from = job.get("resumed_from_step")
                if resumed_from is not None and resumed_from < after_step:
                    after_step = resumed_from
            while True:
                page = self.metrics(job_id, after_step)
                for point in page["data"]:
                    after_step = point["step"]
                    yield point
                if not page["has_more"]:
                    break
            if status in TERMINAL_STATUSES:
                return
            time.sleep(interval)
