"""`grpo projects` and `grpo keys` as an operator runs them: on the embedded default and on PostgreSQL, with no
service running; the key alone on standard output, shown once, never listed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.access.keys import authenticate
from shared.store.db import Database


def grpo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "COLUMNS": "200"},
        timeout=120,
    )


@pytest.fixture(params=["embedded", "postgres"])
def operator_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The settings an operator's shell has: the embedded data dir, or a migrated PostgreSQL database."""
    env = {"GRPO_DATA_DIR": str(tmp_path / "data")}
    if request.param == "postgres":
        env["GRPO_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        migrated = grpo(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
    return env


def _database(env: dict[str, str]) -> Database:
    return Database(env.get("GRPO_DATABASE_URL") or f"sqlite:///{env['GRPO_DATA_DIR']}/grpo.sqlite")


def test_an_operator_makes_a_project_and_a_key_lists_and_revokes_it(operator_env: dict[str, str]) -> None:
    created = grpo(operator_env, "projects", "create", "research", "--max-running-jobs", "2", "--max-steps", "500")
    assert created.returncode == 0, created.stderr
    made = grpo(operator_env, "keys", "create", "--project", "research", "--role", "member", "--name", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n" and re.fullmatch(r"grpo_[A-Za-z0-9_-]{43}", key)  # KEY=$(grpo keys create ...)
    prefix = key[:13]
    assert f"key {prefix}" in made.stderr and key not in made.stderr

    listed = grpo(operator_env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert prefix in listed.stdout and key[13:] not in listed.stdout and "member" in listed.stdout
    projects = grpo(operator_env, "projects", "list")
    assert re.search(r"research\s*│\s*2\s*│\s*-\s*│\s*-\s*│\s*500", projects.stdout), projects.stdout

    database = _database(operator_env)
    try:
        with database.session() as session:
            identity = authenticate(session, key)
        assert identity is not None and (identity.project, identity.role) == ("research", "member")
        revoked = grpo(operator_env, "keys", "revoke", prefix)
        assert revoked.returncode == 0, revoked.stderr
        with database.session() as session:
            assert authenticate(session, key) is None
    finally:
        database.dispose()


def test_the_operators_commands_refuse_with_a_reason_and_an_exit_code(operator_env: dict[str, str]) -> None:
    assert grpo(operator_env, "projects", "create", "research").returncode == 0
    refusals = [
        (("projects", "create", "research"), "exists already"),
        (("projects", "create", "not ok"), "is not valid"),
        (("projects", "update", "research"), "nothing to change"),
        (("projects", "update", "research", "--max-gpus", "many"), "takes a number or 'none'"),
        (("projects", "update", "elsewhere", "--max-gpus", "1"), "there is no project 'elsewhere'"),
        (("keys", "create", "--project", "elsewhere", "--role", "viewer"), "there is no project 'elsewhere'"),
        (("keys", "revoke", "grpo_nothing1"), "there is no key"),
    ]
    for args, message in refusals:
        refused = grpo(operator_env, *args)
        assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
        assert message in " ".join(refused.stderr.split()), (args, refused.stderr)
        assert refused.stdout == "", args
    bad_role = grpo(operator_env, "keys", "create", "--project", "research", "--role", "owner")
    assert bad_role.returncode == 2 and "owner" in bad_role.stderr
