"""Callers of a running service as the access tests make them: keys of a project and role, revoked keys, and HTTP
requests that carry exactly one caller's key (never a cookie a previous answer set)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from shared.access.keys import PREFIX_LENGTH, revoke_key
from shared.settings import Settings
from shared.store.db import Database
from tests.processes import Service, base_env

PROMPTS_JSONL = b'{"prompt": "What is 2+2?"}\n{"prompt": "Say hi."}\n'


@contextlib.contextmanager
def serve_for_module(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Service]:
    """`grpo serve` on the embedded default with no worker (as the `api_only` fixture), for a whole module; with a
    key of secrets, so that /v1/secrets works."""
    folder = tmp_path_factory.mktemp(name)
    service = Service(base_env(folder / "data", secret_key=Fernet.generate_key().decode()), folder)
    try:
        service.start_api("serve")
        yield service
    finally:
        service.stop()


def prefix(key: str) -> str:
    """How events, lists and messages name a key."""
    return key[:PREFIX_LENGTH]


def revoke(service: Service, key: str) -> None:
    """Revoke `key` in the service's database, as `grpo keys revoke` does."""
    settings = Settings(data_dir=Path(service.env["GRPO_DATA_DIR"]), database_url=service.env.get("GRPO_DATABASE_URL"))
    database = Database.from_settings(settings)
    try:
        with database.session() as session:
            revoke_key(session, prefix(key))
    finally:
        database.dispose()


def wrong_key(key: str) -> str:
    """A key with `key`'s prefix (a row exists) and another secret part."""
    return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")


class Caller:
    """One caller of the API: its key (None: none sent), over a client of its own that keeps no cookies."""

    def __init__(self, service: Service, name: str, key: str | None) -> None:
        self.name = name
        self.key = key
        self.http = httpx.Client(base_url=service.url, timeout=60)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        sent = {"Authorization": f"Bearer {self.key}"} if self.key is not None else {}
        return {**sent, **(extra or {})}

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        self.http.cookies.clear()  # only the key speaks for the caller: not the session a /login answer set
        return self.http.request(method, path, headers=self.headers(options.pop("headers", None)), **options)

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self.request("POST", path, **options)

    def delete(self, path: str, **options: Any) -> httpx.Response:
        return self.request("DELETE", path, **options)

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    def upload(self, content: bytes = PROMPTS_JSONL, filename: str = "prompts.jsonl") -> str:
        response = self.post("/v1/files", files={"file": (filename, content)})
        assert response.status_code == 201, response.text
        file_id: str = response.json()["id"]
        return file_id

    def ids(self, path: str) -> set[str]:
        """The ids a list route shows this caller."""
        response = self.get(path, params={"limit": 100} if path == "/v1/jobs" else None)
        assert response.status_code == 200, f"{self.name} GET {path}: {response.status_code} {response.text}"
        return {item["id"] for item in response.json()["data"]}

    def close(self) -> None:
        self.http.close()
